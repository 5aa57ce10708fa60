//! One rule for text vmap-trace did not write itself on its way to a terminal or a text file:
//! task names (any user sets them with prctl(PR_SET_NAME)), lock and symbol names, the host
//! name and notes of a recording (a file anyone can craft), file names.
//!
//! Control characters and bidirectional overrides are shown escaped (`\x1b`, `\u{202e}`),
//! never passed through: nothing is lost, since the escape names the character, and nothing is
//! interpreted, so no terminal escape sequence runs, no line is faked, no text is reordered
//! and an SVG stays valid XML. Backslashes are left alone: the escaped text is for reading,
//! and the JSON output keeps every string exact.
use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a text file as it is: C0 controls, DEL and C1
/// controls (`char::is_control`, the rule ratatui applies to `top`'s cells, where they are
/// dropped), the bidi embeddings, overrides and isolates that reorder the text around them
/// (U+202A..U+202E, U+2066..U+2069; "Trojan Source", CVE-2021-42574), and the two
/// noncharacters XML forbids (U+FFFE, U+FFFF).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// One field (a name, a frame, a note, a path): every unsafe character escaped, line breaks
/// and tabs too, so the field stays on its line and in its column.
pub fn field(s: &str) -> Cow<'_, str> {
    escape_where(s, is_unsafe)
}

/// A whole message (an error, a report) made of lines: as [`field`], but its own line breaks
/// and tabs are kept.
pub fn message(s: &str) -> Cow<'_, str> {
    escape_where(s, |c| c != '\n' && c != '\t' && is_unsafe(c))
}

/// Serialized JSON: serde_json escapes C0 controls but writes DEL, C1 controls and bidi
/// characters as they are. They can only occur inside strings, where a `\u` escape decodes
/// to the same character, so the JSON says exactly what it said before.
pub fn json(serialized: String) -> String {
    if !serialized.contains(is_unsafe_in_json) {
        return serialized;
    }
    let mut out = String::with_capacity(serialized.len() + 16);
    for c in serialized.chars() {
        if is_unsafe_in_json(c) {
            // Every character of the rule is in the Basic Multilingual Plane: one \u escape.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// The unsafe characters serde_json leaves raw (its own output has no raw C0 but the line
/// breaks of pretty printing, which are whitespace between tokens).
fn is_unsafe_in_json(c: char) -> bool {
    is_unsafe(c) && c as u32 >= 0x7f
}

fn escape_where(s: &str, unsafe_here: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.contains(&unsafe_here) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_here(c) {
            out.push(c);
        } else if c.is_ascii() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What a terminal hijacker would put in a task name: set the window title, ring the
    /// bell, clear the screen, a C1 CSI (U+009B), a right-to-left override, a line break that
    /// fakes a report line, a carriage return, a tab, DEL.
    pub const HOSTILE: &str =
        "\u{1b}]0;X\u{7}\u{1b}[2J\u{9b}31m\u{202e}evil\u{2066}\nLOST: none\r\tx\u{7f}";

    /// `HOSTILE` as every view shows it.
    pub const HOSTILE_SHOWN: &str =
        r"\x1b]0;X\x07\x1b[2J\u{9b}31m\u{202e}evil\u{2066}\x0aLOST: none\x0d\x09x\x7f";

    /// No byte below 0x20 but line breaks (and tabs where `tabs`), no DEL, no C1 control, no
    /// bidi override, anywhere in `text`.
    pub fn assert_inert(text: &str, tabs: bool) {
        for (n, c) in text.chars().enumerate() {
            let allowed = c == '\n' || (tabs && c == '\t');
            if !allowed && is_unsafe(c) {
                let around: String = text.chars().skip(n.saturating_sub(40)).take(80).collect();
                panic!("raw {c:?} at character {n}: {around:?}");
            }
        }
    }

    #[test]
    fn every_control_and_bidi_override_is_shown_escaped() {
        assert_eq!(field(HOSTILE), HOSTILE_SHOWN);
        for c in [
            '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{202a}', '\u{2069}', '\u{ffff}',
        ] {
            assert!(is_unsafe(c), "{c:?}");
        }
        for c in [
            ' ', '~', '\u{a0}', 'é', '\u{2029}', '\u{2070}', '\u{2065}', '·', '→',
        ] {
            assert!(!is_unsafe(c), "{c:?}");
        }
        assert!(
            matches!(field("alloc_vmap_area · µs"), Cow::Borrowed(_)),
            "clean text is not copied"
        );
    }

    #[test]
    fn messages_keep_their_own_lines_and_tabs() {
        assert_eq!(
            message("locks:\n\tvmap\u{1b}[2J\r"),
            "locks:\n\tvmap\\x1b[2J\\x0d"
        );
        assert_eq!(field("a\nb\tc"), r"a\x0ab\x09c");
        assert_inert(&message(HOSTILE), true);
    }

    #[test]
    fn json_escapes_what_serde_leaves_raw_and_still_decodes_to_the_same_string() {
        let serialized = serde_json::to_string_pretty(&[HOSTILE]).unwrap();
        assert!(
            serialized.contains('\u{202e}'),
            "serde_json writes bidi overrides raw"
        );
        let escaped = json(serialized);
        assert_inert(&escaped, false);
        assert!(
            escaped.contains(r"\u202e") && escaped.contains(r"\u009b"),
            "{escaped}"
        );
        let back: Vec<String> = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back, [HOSTILE]);
    }
}
