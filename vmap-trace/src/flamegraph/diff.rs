//! Differential flamegraphs: what changed between two recordings (before/after a kernel
//! upgrade or a config change).
//!
//! Both recordings are folded the same way, with canonical function names (`.constprop.0`,
//! `_noprof` and friends vary between kernel builds) and hex addresses replaced by `0x...`
//! (KASLR moves everything between boots, so an address only names a lock within one boot).
//! `inferno::differential` then pairs the stacks and, normalized, scales the before side to
//! the after side's total: the colours show where the share of wait moved, not that one
//! recording ran longer or under more load.
use std::io::{self, Write};

use crate::profile::sums::saturating_sum;
use crate::profile::Profile;

use super::error::FlamegraphError;
use super::fold::{fold, FoldOptions, Folded};
use super::svg::{self, Labels, RenderOptions};
use super::units::{display_scale, DisplayScale};
use super::{raw_unit, Weight};

/// How to diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Folding for both sides (`canonical_names` is always on for a diff).
    pub fold: FoldOptions,
    /// Scale the before side to the after side's total (the default).
    pub normalize: bool,
    /// Draw the before side's widths instead of the after side's, so stacks that disappeared
    /// are visible. Colours keep their meaning (red: more after).
    pub negate: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            fold: FoldOptions::default(),
            normalize: true,
            negate: false,
        }
    }
}

/// One recording of a diff and the name to call it by (usually its file name).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub name: &'a str,
    pub profile: &'a Profile,
}

/// One differential line: `stack FIRST SECOND`, inferno's two-column folded format. A graph
/// draws SECOND's widths and colours by SECOND - FIRST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    pub stack: String,
    pub first: u64,
    pub second: u64,
}

/// Differential folded stacks, sorted by stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffFolded {
    pub lines: Vec<DiffLine>,
}

impl DiffFolded {
    pub fn total_first(&self) -> u64 {
        saturating_sum(self.lines.iter().map(|l| l.first))
    }

    pub fn total_second(&self) -> u64 {
        saturating_sum(self.lines.iter().map(|l| l.second))
    }

    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<()> {
        for l in &self.lines {
            writeln!(w, "{} {} {}", l.stack, l.first, l.second)?;
        }
        w.flush()
    }

    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("stacks are strings")
    }
}

/// Pair two folded profiles with `inferno::differential` (addresses stripped, optionally
/// normalized so `first` sums to `second`'s total).
pub fn diff_folded(
    first: &Folded,
    second: &Folded,
    normalize: bool,
) -> Result<DiffFolded, FlamegraphError> {
    if first.is_empty() || second.is_empty() {
        return Err(FlamegraphError::Diff("one side has no stacks".into()));
    }
    let opts = inferno::differential::Options {
        normalize,
        strip_hex: true,
    };
    let mut out = Vec::new();
    inferno::differential::from_readers(
        opts,
        first.to_text().as_bytes(),
        second.to_text().as_bytes(),
        &mut out,
    )?;
    let text = String::from_utf8(out)
        .map_err(|e| FlamegraphError::Diff(format!("inferno produced non-UTF-8 output: {e}")))?;
    let mut lines = Vec::new();
    for line in text.lines() {
        let mut fields = line.rsplitn(3, ' ');
        let parsed = (|| {
            let second = fields.next()?.parse().ok()?;
            let first = fields.next()?.parse().ok()?;
            let stack = fields.next()?.to_string();
            Some(DiffLine {
                stack,
                first,
                second,
            })
        })();
        lines.push(parsed.ok_or_else(|| {
            FlamegraphError::Diff(format!("unexpected differential line `{line}`"))
        })?);
    }
    // inferno emits its hash map's order; sort for stable output.
    lines.sort_by(|a, b| a.stack.cmp(&b.stack));
    Ok(DiffFolded { lines })
}

/// A differential flamegraph, ready to write as SVG or two-column folded text.
#[derive(Debug, Clone)]
pub struct DiffFlamegraph {
    pub folded: DiffFolded,
    pub weight: Weight,
    pub render: RenderOptions,
}

impl DiffFlamegraph {
    /// The SVG. Values are converted to the display unit before rendering instead of through
    /// inferno's `factor`: inferno divides a frame's delta by `total * factor`, so with a factor
    /// the tooltip's change percentage would be off by 1/factor (+22222% for +22%). Values
    /// round to whole units; a non-zero stack stays at least one unit so it does not vanish.
    pub fn write_svg<W: Write>(&self, writer: W) -> Result<(), FlamegraphError> {
        let factor = self.render.scale.factor;
        let lines: Vec<String> = self
            .folded
            .lines
            .iter()
            .map(|l| {
                format!(
                    "{} {} {}",
                    l.stack,
                    to_display_units(l.first, factor),
                    to_display_units(l.second, factor)
                )
            })
            .collect();
        let render = RenderOptions {
            scale: DisplayScale {
                factor: 1.0,
                ..self.render.scale
            },
            ..self.render.clone()
        };
        svg::render(lines.iter().map(String::as_str), &render, writer)
    }

    /// `stack FIRST SECOND` lines: inferno-flamegraph and flamegraph.pl draw them directly
    /// (add `--negate` to theirs when this graph was made with `negate`).
    pub fn write_folded<W: Write>(&self, writer: W) -> io::Result<()> {
        self.folded.write_to(writer)
    }

    pub fn scale(&self) -> DisplayScale {
        self.render.scale
    }
}

/// `value` in display units, rounded, never rounding a non-zero value down to nothing.
fn to_display_units(value: u64, factor: f64) -> u64 {
    if value == 0 {
        return 0;
    }
    ((value as f64 * factor).round() as u64).max(1)
}

/// Diff two recordings.
pub fn diff(
    before: Side<'_>,
    after: Side<'_>,
    opts: &DiffOptions,
) -> Result<DiffFlamegraph, FlamegraphError> {
    let fold_opts = FoldOptions {
        canonical_names: true,
        ..opts.fold.clone()
    };
    let fold_side = |side: Side<'_>| {
        fold(side.profile, &fold_opts).map_err(|e| FlamegraphError::InRecording {
            name: side.name.to_string(),
            source: Box::new(e),
        })
    };
    let (b, a) = (fold_side(before)?, fold_side(after)?);
    // Gregg's recipe for the "negated" view: swap the inputs, draw the first one's widths and
    // flip the colours back.
    let folded = if opts.negate {
        diff_folded(&a, &b, opts.normalize)?
    } else {
        diff_folded(&b, &a, opts.normalize)?
    };
    let scale = display_scale(opts.fold.weight.quantity(), folded.total_second());

    let widths = if opts.negate {
        "widths: before"
    } else {
        "widths: after"
    };
    let normalized = if opts.normalize {
        "normalized"
    } else {
        "not normalized"
    };
    let mut subtitle = format!(
        "{} → {} · {}, {normalized}, {widths}",
        svg::recording_summary(&before.profile.meta),
        svg::recording_summary(&after.profile.meta),
        scale.unit,
    );
    if !opts.fold.filter.is_empty() {
        subtitle.push_str(" · ");
        subtitle.push_str(&opts.fold.filter.describe());
    }
    // Each recording's losses fit in a u64 (`profile::sums`); two together need not.
    let lost = before
        .profile
        .losses
        .total()
        .saturating_add(after.profile.losses.total());
    if lost > 0 {
        subtitle.push_str(&format!(" · {lost} events lost"));
    }
    let labels = Labels {
        title: format!(
            "vmap-trace diff: {}, {} → {} (red: more after, blue: less)",
            opts.fold.weight.describe(),
            before.name,
            after.name
        ),
        subtitle: Some(subtitle),
        notes: format!(
            "before: {}; after: {}; weight {}; folded values in {}",
            svg::recording_notes(before.profile),
            svg::recording_notes(after.profile),
            opts.fold.weight.label(),
            raw_unit(opts.fold.weight)
        ),
    };
    let render = RenderOptions {
        labels,
        scale,
        negate_differentials: opts.negate,
    };
    Ok(DiffFlamegraph {
        folded,
        weight: opts.fold.weight,
        render,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    fn folded(text: &str) -> Folded {
        Folded::parse(text).unwrap()
    }

    #[test]
    fn normalization_scales_before_to_after_total() {
        // Before ran longer: its 800 scale to after's 500, keeping before's 1:3 shape.
        let before = folded("a;b 200\na;c 600\n");
        let after = folded("a;b 100\na;c 300\na;d 100\n");
        let d = diff_folded(&before, &after, true).unwrap();
        assert_eq!(
            d.lines,
            vec![
                DiffLine {
                    stack: "a;b".into(),
                    first: 125,
                    second: 100
                },
                DiffLine {
                    stack: "a;c".into(),
                    first: 375,
                    second: 300
                },
                DiffLine {
                    stack: "a;d".into(),
                    first: 0,
                    second: 100
                },
            ]
        );
        assert_eq!(d.total_first(), d.total_second());
        let raw = diff_folded(&before, &after, false).unwrap();
        assert_eq!(raw.total_first(), 800);
        assert_eq!(raw.to_text(), "a;b 200 100\na;c 600 300\na;d 0 100\n");
    }

    #[test]
    fn addresses_are_stripped_so_boots_compare() {
        let before = folded("f;[spinlock 0xffff888100055820] 10\n");
        let after = folded("f;[spinlock 0xffff88810a0b0c00] 30\n");
        let d = diff_folded(&before, &after, true).unwrap();
        assert_eq!(
            d.lines,
            vec![DiffLine {
                stack: "f;[spinlock 0x...]".into(),
                first: 30,
                second: 30
            }]
        );
    }

    #[test]
    fn the_losses_of_two_recordings_add_without_overflow() {
        // Fuzz case 0x77: each side's losses fit in a u64, their sum did not.
        let mut before = sample_profile();
        before.losses.inflight_full = u64::MAX;
        let mut after = sample_profile();
        after.losses.inflight_full = 1;
        let side = |name, profile| Side { name, profile };
        let g = diff(
            side("a.rec", &before),
            side("b.rec", &after),
            &DiffOptions::default(),
        )
        .unwrap();
        let subtitle = g.render.labels.subtitle.unwrap();
        assert!(
            subtitle.ends_with(&format!(" · {} events lost", u64::MAX)),
            "{subtitle}"
        );
    }

    #[test]
    fn diff_of_two_recordings_canonicalizes_and_colours() {
        let before = sample_profile();
        let mut after = sample_profile();
        after.meta.kernel_release = "6.18.0-test".into();
        // The after kernel spends 4x as long on the vmap lock, same on the mutex.
        after.stacks[0].total_ns *= 4;
        let opts = DiffOptions::default();
        let g = diff(
            Side {
                name: "a.rec",
                profile: &before,
            },
            Side {
                name: "b.rec",
                profile: &after,
            },
            &opts,
        )
        .unwrap();
        let text = g.folded.to_text();
        assert!(
            text.contains(
                "__vmalloc_node_range;alloc_vmap_area;_raw_spin_lock;[spinlock vmap_area_lock] "
            ),
            "{text}"
        );
        assert!(
            text.contains("tty_open;tty_lock;__mutex_lock;[mutex 0x...] "),
            "{text}"
        );
        assert_eq!(g.folded.total_second(), 600_000);
        let vmap = g
            .folded
            .lines
            .iter()
            .find(|l| l.stack.ends_with("[spinlock vmap_area_lock]"))
            .unwrap();
        // before normalized: 50,000 * 600,000 / 450,000 = 66,666
        assert_eq!((vmap.first, vmap.second), (66_666, 200_000));
        assert_eq!(
            g.render.labels.title,
            "vmap-trace diff: lock wait time, a.rec → b.rec (red: more after, blue: less)"
        );
        assert_eq!(
            g.render.labels.subtitle.as_deref(),
            Some("6.1.0-test · legacy vmap locks · 2.00 s → 6.18.0-test · legacy vmap locks · 2.00 s · us, normalized, widths: after")
        );

        let mut svg = Vec::new();
        g.write_svg(&mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        // As in Gregg's differential flamegraphs the change is the leaf's (here the lock
        // frame's): in whole us, before 67 -> after 200 is +133 of 600 us, and the mutex's
        // share shrank by as much.
        assert!(
            svg.contains("<title>[spinlock vmap_area_lock] (200 us, 33.33%; +22.17%)</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>[mutex 0x...] (400 us, 66.67%; -22.17%)</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>alloc_vmap_area (200 us, 33.33%; 0.00%)</title>"),
            "{svg}"
        );
        assert_eq!(
            to_display_units(400, 1e-3),
            1,
            "a non-zero stack keeps a width"
        );
        assert_eq!(to_display_units(0, 1e-3), 0);
    }

    #[test]
    fn hostile_file_and_frame_names_render_valid_xml() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        let (before, after) = (sample_profile(), crate::profile::tests::hostile_profile());
        let name = format!("{HOSTILE}.rec");
        let g = diff(
            Side {
                name: &name,
                profile: &before,
            },
            Side {
                name: "b.rec",
                profile: &after,
            },
            &DiffOptions::default(),
        )
        .unwrap();
        let folded = g.folded.to_text();
        assert_inert(&folded, false);
        let mut svg = Vec::new();
        g.write_svg(&mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        crate::flamegraph::svg::tests::assert_valid_xml(&svg);
        assert_inert(&svg, true);
        assert!(
            svg.contains(&format!("lock wait time, {HOSTILE_SHOWN}.rec → b.rec")),
            "{svg}"
        );
    }

    #[test]
    fn negate_draws_before_widths_and_names_the_failing_side() {
        let before = sample_profile();
        let mut after = sample_profile();
        after.stacks.remove(0);
        let opts = DiffOptions {
            negate: true,
            normalize: false,
            ..Default::default()
        };
        let g = diff(
            Side {
                name: "a.rec",
                profile: &before,
            },
            Side {
                name: "b.rec",
                profile: &after,
            },
            &opts,
        )
        .unwrap();
        // Columns swapped: first = after, second = before; the vanished vmap stack has width.
        let vmap = g
            .folded
            .lines
            .iter()
            .find(|l| l.stack.contains("alloc_vmap_area"))
            .unwrap();
        assert_eq!((vmap.first, vmap.second), (0, 50_000));
        assert!(g.render.negate_differentials);

        let mut empty = sample_profile();
        empty.stacks.clear();
        let err = diff(
            Side {
                name: "a.rec",
                profile: &before,
            },
            Side {
                name: "empty.rec",
                profile: &empty,
            },
            &opts,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("empty.rec: this recording has no contended kernel stacks"),
            "{err}"
        );
    }
}
