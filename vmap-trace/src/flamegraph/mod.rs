//! Flamegraphs of a recording's contended kernel stacks.
//!
//! Library first, like inferno itself; the `flamegraph` and `diff` commands only parse
//! arguments and write files.
//! - `fold`: a `Profile` -> folded stacks (`root;...;leaf;[lock] WEIGHT`), weighted by wait
//!   time, wait count or (when recorded) hold time, filtered by lock and lock class.
//! - `svg`: folded stacks -> SVG through `inferno::flamegraph`, titled with the kernel, the
//!   allocator design, the duration, the weight and its unit.
//! - `diff`: two recordings -> normalized differential folded stacks
//!   (`inferno::differential`) and their SVG.
//! - `units`: tooltips in us/ms or waits rather than raw nanoseconds.
pub mod diff;
pub mod error;
pub mod filter;
pub mod fold;
pub mod svg;
pub mod units;
pub mod weight;

use std::io::{self, Write};

pub use diff::{diff, DiffFlamegraph, DiffFolded, DiffOptions, Side};
pub use error::FlamegraphError;
pub use filter::{ClassFilter, LockSelector, StackFilter};
pub use fold::{fold, FoldOptions, Folded};
pub use units::{display_scale, DisplayScale, Quantity};
pub use weight::Weight;

use crate::profile::Profile;
use svg::{Labels, RenderOptions};

/// A recording's flamegraph, ready to write as SVG or folded text.
#[derive(Debug, Clone)]
pub struct Flamegraph {
    pub folded: Folded,
    pub weight: Weight,
    pub render: RenderOptions,
}

/// Fold `profile` and title the result.
pub fn flamegraph(profile: &Profile, opts: &FoldOptions) -> Result<Flamegraph, FlamegraphError> {
    let folded = fold(profile, opts)?;
    let scale = display_scale(opts.weight.quantity(), folded.total());
    let mut subtitle = format!(
        "{} · weight: {} ({})",
        svg::recording_summary(&profile.meta),
        opts.weight.describe(),
        scale.unit
    );
    if !opts.filter.is_empty() {
        subtitle.push_str(" · ");
        subtitle.push_str(&opts.filter.describe());
    }
    subtitle.push_str(&svg::loss_suffix(profile));
    let labels = Labels {
        title: format!(
            "vmap-trace: {} by contended kernel stack",
            opts.weight.describe()
        ),
        subtitle: Some(subtitle),
        notes: format!(
            "{}; weight {}; folded values in {}",
            svg::recording_notes(profile),
            opts.weight.label(),
            raw_unit(opts.weight)
        ),
    };
    Ok(Flamegraph {
        folded,
        weight: opts.weight,
        render: RenderOptions::new(labels, scale),
    })
}

/// A rendered graph that can be written either way: what `flamegraph` and `diff` share.
pub trait Graph {
    fn write_svg_to(&self, writer: &mut dyn Write) -> Result<(), FlamegraphError>;
    fn write_folded_to(&self, writer: &mut dyn Write) -> io::Result<()>;

    /// The SVG, or the folded text when `folded`.
    fn write_as(&self, folded: bool, writer: &mut dyn Write) -> anyhow::Result<()> {
        if folded {
            self.write_folded_to(writer).map_err(Into::into)
        } else {
            self.write_svg_to(writer).map_err(Into::into)
        }
    }
}

impl Graph for Flamegraph {
    fn write_svg_to(&self, writer: &mut dyn Write) -> Result<(), FlamegraphError> {
        self.write_svg(writer)
    }
    fn write_folded_to(&self, writer: &mut dyn Write) -> io::Result<()> {
        self.write_folded(writer)
    }
}

impl Graph for DiffFlamegraph {
    fn write_svg_to(&self, writer: &mut dyn Write) -> Result<(), FlamegraphError> {
        self.write_svg(writer)
    }
    fn write_folded_to(&self, writer: &mut dyn Write) -> io::Result<()> {
        self.write_folded(writer)
    }
}

impl Flamegraph {
    pub fn write_svg<W: Write>(&self, writer: W) -> Result<(), FlamegraphError> {
        let lines = self.folded.lines();
        svg::render(lines.iter().map(String::as_str), &self.render, writer)
    }

    /// The folded text (weights in nanoseconds, or waits for `--weight count`).
    pub fn write_folded<W: Write>(&self, writer: W) -> io::Result<()> {
        self.folded.write_to(writer)
    }
}

/// The unit of the numbers in folded output.
pub fn raw_unit(weight: Weight) -> &'static str {
    match weight.quantity() {
        Quantity::Nanoseconds => "nanoseconds",
        Quantity::Events => "waits",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    fn svg_of(g: &Flamegraph) -> String {
        let mut out = Vec::new();
        g.write_svg(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn title_and_subtitle_say_kernel_design_duration_weight_and_unit() {
        let mut p = sample_profile();
        p.losses.stack_keys_full = 3;
        let opts = FoldOptions {
            filter: StackFilter {
                class: Some(ClassFilter::Vmap),
                ..Default::default()
            },
            ..Default::default()
        };
        let g = flamegraph(&p, &opts).unwrap();
        assert_eq!(
            g.render.labels.title,
            "vmap-trace: lock wait time by contended kernel stack"
        );
        assert_eq!(
            g.render.labels.subtitle.as_deref(),
            Some("6.1.0-test · legacy vmap locks · 2.00 s · weight: lock wait time (us) · class=vmap · 3 events lost")
        );
        let svg = svg_of(&g);
        assert!(svg.contains("6.1.0-test · legacy vmap locks"), "{svg}");
        // 50,000 ns of vmap wait reads as 50 us in the tooltips.
        assert!(
            svg.contains("<title>alloc_vmap_area (50 us, 100.00%)</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>[spinlock vmap_area_lock] (50 us, 100.00%)</title>"),
            "{svg}"
        );
    }

    #[test]
    fn hostile_recordings_render_valid_xml_with_the_names_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE_SHOWN};
        let opts = FoldOptions {
            user_stacks: true,
            ..Default::default()
        };
        let g = flamegraph(&crate::profile::tests::hostile_profile(), &opts).unwrap();
        let svg = svg_of(&g);
        svg::tests::assert_valid_xml(&svg);
        assert_inert(&svg, true);
        let shown = HOSTILE_SHOWN.replace(';', ":");
        assert!(svg.contains(&format!("<title>{shown} (42) (")), "{svg}");
        assert!(svg.contains(&format!("<title>entry{shown} (")), "{svg}");
        assert!(
            svg.contains(&format!("6.1.0{HOSTILE_SHOWN} · legacy")),
            "{svg}"
        );
        assert!(
            svg.contains(&format!("on host{HOSTILE_SHOWN} (4 CPUs)")),
            "{svg}"
        );
    }

    #[test]
    fn count_weight_reads_in_waits() {
        let g = flamegraph(
            &sample_profile(),
            &FoldOptions {
                weight: Weight::Count,
                ..Default::default()
            },
        )
        .unwrap();
        let svg = svg_of(&g);
        assert!(svg.contains("<title>all (14 waits, 100%)</title>"), "{svg}");
        assert!(
            svg.contains("<title>tty_lock (4 waits, 28.57%)</title>"),
            "{svg}"
        );
        assert!(g
            .render
            .labels
            .subtitle
            .unwrap()
            .contains("weight: contended waits (waits)"));
    }
}
