//! The BPF verifier's log of a refused program, as the views show it.
//!
//! The kernel's log of a refused program ends with the instruction it refused, the reason and
//! the verifier's statistics; the path that led there comes before, and can run to thousands
//! of lines. So the views show the last lines by default and all of it with `--verbose`. The
//! log is kernel text: every line is shown escaped (`crate::escape`).
use crate::escape::field;

/// Lines shown without `--verbose`: the refusal and the statistics after it, with a few
/// instructions of context before.
pub const DEFAULT_TAIL_LINES: usize = 12;

/// The most of one log kept in a recording: its end, cut at a line start. A refused program's
/// log at the default level is a few hundred lines; a megabyte still holds its end whatever
/// the program.
pub const KEPT_BYTES: usize = 1 << 20;

/// The verifier's log as stored: empty logs are no log, and one longer than `KEPT_BYTES`
/// keeps its end from the first whole line, after a line saying how much was cut.
pub fn keep(log: &str) -> Option<String> {
    let log = log.trim_end_matches(['\n', '\0']);
    if log.trim().is_empty() {
        return None;
    }
    if log.len() <= KEPT_BYTES {
        return Some(log.to_string());
    }
    let mut start = log.len() - KEPT_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    let start = log[start..].find('\n').map_or(start, |i| start + i + 1);
    Some(format!(
        "[first {start} bytes of the verifier's log not kept]\n{}",
        &log[start..]
    ))
}

/// The log's lines to show, each escaped and prefixed with `indent`, after a heading that says
/// how many lines there are and how to see the rest.
pub fn render(log: &str, verbose: bool, indent: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let shown = if verbose {
        &lines[..]
    } else {
        &lines[lines.len().saturating_sub(DEFAULT_TAIL_LINES)..]
    };
    let heading = if shown.len() == lines.len() {
        format!("verifier log ({} lines):", lines.len())
    } else {
        format!(
            "verifier log, last {} of {} lines (--verbose shows all):",
            shown.len(),
            lines.len()
        )
    };
    let mut out = format!("{indent}{heading}\n");
    for line in shown {
        out.push_str(indent);
        out.push_str("  ");
        out.push_str(&field(line));
        out.push('\n');
    }
    out
}

/// Every verifier log among `hooks`' refusals, each under a line naming the hook, the
/// mechanism and the kernel's error: what `record` and `report` print.
pub fn render_refusals(hooks: &[super::HookStatus], verbose: bool, indent: &str) -> String {
    let mut out = String::new();
    for h in hooks {
        for r in &h.rejected {
            let Some(log) = &r.verifier_log else {
                continue;
            };
            out.push_str(&format!(
                "{indent}{} as {}: the verifier refused the program: {}\n",
                field(&h.hook),
                r.mechanism.label(),
                field(&r.reason)
            ));
            out.push_str(&render(log, verbose, &format!("{indent}  ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log Debian's 6.1.0-47 kernel wrote when it refused `tpbtf_contention_begin`,
    /// captured in a vm-test guest (docs/lab/verifier-log-6.1.0-47-2026-12-03.md).
    const REFUSED_6_1_0_47: &str = include_str!("testdata/verifier-6.1.0-47-contention_begin.log");

    #[test]
    fn default_shows_the_last_lines_with_the_refusal() {
        let total = REFUSED_6_1_0_47.lines().count();
        assert!(total > DEFAULT_TAIL_LINES, "fixture has {total} lines");
        let text = render(REFUSED_6_1_0_47, false, "    ");
        assert!(
            text.starts_with(&format!(
                "    verifier log, last {DEFAULT_TAIL_LINES} of {total} lines (--verbose shows all):\n"
            )),
            "{text}"
        );
        assert!(
            text.contains("invalid read from stack R10 off=-56 size=8"),
            "{text}"
        );
        assert_eq!(text.lines().count(), DEFAULT_TAIL_LINES + 1);
        let last = REFUSED_6_1_0_47.lines().last().unwrap();
        assert!(text.ends_with(&format!("      {last}\n")), "{text}");
    }

    #[test]
    fn verbose_shows_every_line() {
        let total = REFUSED_6_1_0_47.lines().count();
        let text = render(REFUSED_6_1_0_47, true, "");
        assert!(text.starts_with(&format!("verifier log ({total} lines):\n")));
        assert_eq!(text.lines().count(), total + 1);
        let first = REFUSED_6_1_0_47.lines().next().unwrap();
        assert_eq!(text.lines().nth(1), Some(format!("  {first}").as_str()));
    }

    #[test]
    fn kernel_text_is_escaped_line_by_line() {
        use crate::escape::tests::{assert_inert, HOSTILE};
        let log = format!("0: (b7) r0 = 0\n{HOSTILE}\nprocessed 1 insns");
        let text = render(&log, true, "");
        assert_inert(&text, false);
        // The log's own line breaks separate lines; everything else unsafe is shown escaped.
        let (before, after) = HOSTILE.split_once('\n').unwrap();
        assert!(
            text.contains(&format!("  {}\n  {}\n", field(before), field(after))),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1 + log.lines().count());
    }

    #[test]
    fn refusals_name_hook_mechanism_and_error_and_skip_other_refusals() {
        use crate::profile::{HookStatus, Mechanism, Rejection};
        let hooks = [
            HookStatus {
                hook: "lock:contention_begin".into(),
                mechanism: None,
                rejected: vec![
                    Rejection {
                        mechanism: Mechanism::TpBtf,
                        reason:
                            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13)"
                                .into(),
                        verifier_log: Some(REFUSED_6_1_0_47.into()),
                    },
                    Rejection::new(Mechanism::Tracepoint, "tracepoint absent"),
                ],
            },
            HookStatus {
                hook: "fn:alloc_vmap_area".into(),
                mechanism: Some(Mechanism::Fentry),
                rejected: vec![],
            },
        ];
        let text = render_refusals(&hooks, false, "");
        assert!(text.starts_with(
            "lock:contention_begin as tp_btf: the verifier refused the program: \
             the BPF_PROG_LOAD syscall returned Permission denied (os error 13)\n  verifier log, last "
        ), "{text}");
        assert!(!text.contains("tracepoint absent"), "{text}");
        assert_eq!(text.lines().count(), 2 + DEFAULT_TAIL_LINES);
        assert_eq!(render_refusals(&hooks[1..], true, ""), "");
    }

    #[test]
    fn kept_logs_drop_empty_ones_and_keep_the_end_of_long_ones() {
        assert_eq!(keep(""), None);
        assert_eq!(keep("\n\0"), None);
        assert_eq!(keep("a\nb\n").as_deref(), Some("a\nb"));
        let line = "0: (79) r6 = *(u64 *)(r10 -56)\n";
        let long = line.repeat(KEPT_BYTES / line.len() + 10) + "invalid read from stack";
        let kept = keep(&long).unwrap();
        assert!(kept.len() <= KEPT_BYTES + 64, "{}", kept.len());
        assert!(kept.ends_with("invalid read from stack"));
        let mut lines = kept.lines();
        assert!(lines.next().unwrap().starts_with("[first "));
        assert_eq!(lines.next(), Some(line.trim_end()), "cut at a line start");
    }
}
