//! SVG rendering with the inferno library, plus the titles that say what a graph shows.
use std::borrow::Cow;
use std::io::Write;

use inferno::flamegraph::{color, from_lines, Options, Palette, TextTruncateDirection};

use crate::escape;
use crate::profile::{AllocatorDesign, Profile, RecordingMeta};

use super::error::FlamegraphError;
use super::units::DisplayScale;

/// Text around the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub title: String,
    pub subtitle: Option<String>,
    /// Kept in the SVG as a comment (inferno's "NOTES"): provenance a reader can check.
    pub notes: String,
}

/// Everything that decides how a graph looks.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    pub labels: Labels,
    pub scale: DisplayScale,
    /// Differential graphs only: the lines are `stack AFTER BEFORE` (widths from the before
    /// side), and colours still mean "more after" (red) / "less after" (blue).
    pub negate_differentials: bool,
}

impl RenderOptions {
    pub fn new(labels: Labels, scale: DisplayScale) -> Self {
        RenderOptions {
            labels,
            scale,
            negate_differentials: false,
        }
    }
}

/// Render folded lines (`stack WEIGHT`, or `stack FIRST SECOND` for a differential graph, drawn
/// with SECOND's widths and coloured by SECOND - FIRST) to SVG. Lines need not be sorted or
/// unique. Whatever they and the labels hold, the SVG is valid XML: XML 1.0 forbids most
/// control characters even as character references, so they are shown escaped
/// (`crate::escape`), as in every view.
pub fn render<'a, I, W>(lines: I, options: &RenderOptions, writer: W) -> Result<(), FlamegraphError>
where
    I: IntoIterator<Item = &'a str>,
    W: Write,
{
    let escaped: Vec<Cow<'a, str>> = lines.into_iter().map(escape::field).collect();
    let lines: Vec<&str> = escaped.iter().map(|l| l.as_ref()).collect();
    // inferno sorts its input unless told it is sorted. `Folded` output usually is (sorted by
    // stack), but line order can differ from stack order when a frame contains a space, so
    // check rather than assume: a linear scan is far cheaper than the sort it saves.
    let sorted = lines.windows(2).all(|w| w[0].trim() <= w[1].trim());
    let (labels, scale) = (&options.labels, options.scale);
    let mut opts = Options::default();
    opts.no_sort = sorted;
    opts.title = escape::field(&labels.title).into_owned();
    opts.subtitle = labels
        .subtitle
        .as_deref()
        .map(|s| escape::field(s).into_owned());
    opts.notes = comment_text(&escape::field(&labels.notes));
    opts.count_name = scale.unit.to_string();
    opts.factor = scale.factor;
    opts.colors = Palette::Basic(color::BasicPalette::Hot);
    // Colour by a hash of the name, not at random: the same function keeps its colour across
    // renders, and the output is reproducible.
    opts.hash = true;
    opts.negate_differentials = options.negate_differentials;
    // Cut long names at the end: `__purge_vmap_are..` is recognizable, `..a_lazy` is not.
    opts.text_truncate_direction = TextTruncateDirection::Right;
    from_lines(&mut opts, lines, writer)?;
    Ok(())
}

/// Text for inside an XML comment (inferno writes the notes in one), where `--` is not
/// allowed, and so not a `-` just before the closing `-->`: a space splits each such pair.
fn comment_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '-' && out.ends_with('-') {
            out.push(' ');
        }
        out.push(c);
    }
    if out.ends_with('-') {
        out.push(' ');
    }
    out
}

/// `node-sharded`: the design in a word, for titles.
pub fn design_short(design: AllocatorDesign) -> &'static str {
    match design {
        AllocatorDesign::Legacy => "legacy vmap locks",
        AllocatorDesign::NodeSharded => "node-sharded vmap",
        AllocatorDesign::Unknown => "vmap design unknown",
    }
}

/// `6.18.4 · node-sharded vmap · 2.04 s`: which recording a graph comes from.
pub fn recording_summary(meta: &RecordingMeta) -> String {
    format!(
        "{} · {} · {:.2} s",
        meta.kernel_release,
        design_short(meta.design),
        meta.duration_s()
    )
}

/// Provenance for the SVG's notes comment.
pub fn recording_notes(profile: &Profile) -> String {
    let m = &profile.meta;
    let mut notes = format!(
        "recorded by vmap-trace {} on {} ({} CPUs), kernel {}, design {}, started at unix time {}, {:.3} s",
        m.tool_version,
        m.hostname,
        m.cpus,
        m.kernel_release,
        m.design.label(),
        m.started_unix_s,
        m.duration_s()
    );
    for loss in profile.losses.describe() {
        notes.push_str("; ");
        notes.push_str(&loss);
    }
    notes
}

/// `; 4 events lost` when the kernel side dropped anything: a graph must not look complete
/// when it is not.
pub fn loss_suffix(profile: &Profile) -> String {
    let mut s = match profile.losses.total() {
        0 => String::new(),
        n => format!(" · {n} events lost"),
    };
    // Short waits' split between stacks is sampled: say so where the graph is read.
    if profile.stack_sampling.is_sampled() {
        s.push_str(&format!(
            " · stacks sampled: 1 in {:.0} contentions",
            profile.stack_sampling.one_in()
        ));
    }
    // Other locks' contentions timed one in N (--sample-other-locks): their stacks too.
    if profile.meta.other_lock_period > 1 {
        s.push_str(&format!(
            " · other locks 1 in {} contentions",
            profile.meta.other_lock_period
        ));
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flamegraph::units::{display_scale, Quantity};

    #[test]
    fn renders_titles_units_and_escapes() {
        let labels = Labels {
            title: "T <1>".into(),
            subtitle: Some("sub & more".into()),
            notes: "a -- b".into(),
        };
        let mut svg = Vec::new();
        let lines = ["a;b 1500000", "a;c 500000"];
        render(
            lines,
            &RenderOptions::new(labels, display_scale(Quantity::Nanoseconds, 2_000_000)),
            &mut svg,
        )
        .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("T &lt;1&gt;"), "title is escaped");
        assert!(svg.contains("sub &amp; more"));
        assert!(svg.contains("NOTES: a - - b"));
        assert!(svg.contains("<title>all (2,000 us, 100%)</title>"), "{svg}");
        assert!(svg.contains("<title>b (1,500 us, 75.00%)</title>"), "{svg}");
        assert!(
            !svg.contains("samples,"),
            "no raw sample counts in tooltips"
        );
    }

    #[test]
    fn hostile_labels_and_frames_still_make_valid_xml() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        let labels = Labels {
            title: format!("title {HOSTILE}"),
            subtitle: Some(format!("sub {HOSTILE}")),
            notes: format!("notes {HOSTILE} --- -"),
        };
        // U+FFFF: not a control, but not an XML character either.
        let (frame, lock) = (format!("f{HOSTILE}\u{ffff}"), format!("[mutex {HOSTILE}]"));
        let lines = [format!("{frame};{lock} 7"), format!("{frame};g 3")];
        let mut svg = Vec::new();
        render(
            lines.iter().map(String::as_str),
            &RenderOptions::new(labels, display_scale(Quantity::Events, 10)),
            &mut svg,
        )
        .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert_valid_xml(&svg);
        assert_inert(&svg, true);
        assert!(svg.contains(&format!("title {HOSTILE_SHOWN}")), "{svg}");
        assert!(svg.contains(&format!("sub {HOSTILE_SHOWN}")), "{svg}");
        assert!(
            svg.contains(&format!("NOTES: notes {HOSTILE_SHOWN} - - - - ")),
            "{svg}"
        );
    }

    /// Well-formed XML 1.0 (quick-xml, comments checked) whose text, attributes, comments and
    /// character references hold only characters XML 1.0 allows.
    pub(crate) fn assert_valid_xml(svg: &str) {
        use quick_xml::events::Event;
        use quick_xml::{Reader, XmlVersion};
        let xml_char = |c: char| {
            matches!(c, '\t' | '\n' | '\r' | ' '..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
                || c >= '\u{10000}'
        };
        let check = |text: &str, what: &str| {
            if let Some(c) = text.chars().find(|&c| !xml_char(c)) {
                panic!("{c:?} is not an XML 1.0 character, in {what}: {text:?}");
            }
        };
        check(svg, "the document");
        let mut reader = Reader::from_str(svg);
        reader.config_mut().check_comments = true;
        loop {
            match reader.read_event() {
                Ok(Event::Start(e) | Event::Empty(e)) => {
                    for a in e.attributes() {
                        let a = a.expect("well-formed attribute");
                        let value = a.normalized_value(XmlVersion::Implicit1_0).unwrap();
                        check(&value, "an attribute");
                    }
                }
                Ok(Event::GeneralRef(r)) => {
                    if let Some(c) = r.resolve_char_ref().unwrap() {
                        check(&c.to_string(), "a character reference");
                    }
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well-formed at {}: {e}", reader.buffer_position()),
            }
        }
    }

    #[test]
    fn unsorted_and_sorted_input_render_the_same() {
        let labels = Labels {
            title: "t".into(),
            subtitle: None,
            notes: String::new(),
        };
        let opts = RenderOptions::new(labels, display_scale(Quantity::Events, 10));
        let (mut sorted, mut unsorted) = (Vec::new(), Vec::new());
        // "a;b c" sorts before "a;b" as a line ("a;b 4" > "a;b c 2") but after it as a stack.
        render(["a;b 4", "a;b c 2", "x 1"], &opts, &mut unsorted).unwrap();
        render(["a;b c 2", "a;b 4", "x 1"], &opts, &mut sorted).unwrap();
        assert_eq!(
            String::from_utf8(sorted).unwrap(),
            String::from_utf8(unsorted).unwrap()
        );
    }

    #[test]
    fn empty_input_is_an_error_not_a_blank_svg() {
        let labels = Labels {
            title: "t".into(),
            subtitle: None,
            notes: String::new(),
        };
        let err = render(
            std::iter::empty(),
            &RenderOptions::new(labels, display_scale(Quantity::Events, 0)),
            Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(err, FlamegraphError::Render(_)));
    }
}
