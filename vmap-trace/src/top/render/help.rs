//! The `?` overlay: keys, what the columns mean, and what this session cannot see.
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::locks::hold_note;
use super::theme::Theme;
use crate::profile::Profile;
use crate::top::app::App;
use crate::top::rows::hold_times;

pub const KEYS: [(&str, &str); 11] = [
    ("s", "cycle the sort: wait/s, cont/s, avg, p99, max, name"),
    ("p, space", "pause / resume refreshing"),
    ("r", "reset: counters and maxima start again from now"),
    ("f", "write a flamegraph of everything since the last reset"),
    ("a", "window: last interval / since reset"),
    (
        "v",
        "lock table: all locks / only locks waited for on vmap paths",
    ),
    (
        "tab, S-tab",
        "next / previous view: locks, ops, CPUs, tasks",
    ),
    ("up, down", "scroll (also j, k)"),
    ("PgUp, PgDn", "scroll a page (Home, End: top, bottom)"),
    ("?, h", "this help (any other key closes it)"),
    ("q, Ctrl-C", "quit"),
];

const COLUMNS: [(&str, &str); 8] = [
    ("vmap", "share of the lock's wait on vmap paths"),
    ("cont/s", "contended acquisitions per second"),
    ("wait/s", "time spent waiting per second (all CPUs)"),
    (
        "avg, p99",
        "mean and 99th percentile wait (p99: log2 bucket bound)",
    ),
    (
        "max",
        "longest wait; ≤: a bound (the max did not rise in the window)",
    ),
    (
        "top caller",
        "function taking the lock on its most-waited stack",
    ),
    ("dim rows", "no contention in the shown window"),
    ("highlight", "locks mostly waited for on vmap paths"),
];

pub fn render(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let mut lines: Vec<Line> = Vec::new();
    let key_line = |k: &str, what: &str, theme: Theme| {
        Line::from(vec![
            Span::styled(format!("  {k:<14}"), theme.key()),
            Span::raw(what.to_string()),
        ])
    };
    lines.push(Line::from(Span::styled("Keys", theme.title())));
    for (k, what) in KEYS {
        lines.push(key_line(k, what, theme));
    }
    lines.push(Line::default());
    lines.push(Line::from(Span::styled("Columns", theme.title())));
    for (k, what) in COLUMNS {
        lines.push(key_line(k, what, theme));
    }
    let p = app.latest();
    lines.push(key_line(
        "hold avg, p99",
        hold_note(hold_times(p))
            .unwrap_or("hold: time from acquiring to releasing (vmap locks, --lock-timing)")
            .trim_start_matches("hold: "),
        theme,
    ));
    let width = area.width.min(100);
    let notes = session_notes(p);
    if !notes.is_empty() {
        lines.push(Line::default());
        lines.push(Line::from(Span::styled(
            "About this session",
            theme.title(),
        )));
        // Wrapped here rather than by the widget, so the box's height is known exactly.
        for n in notes {
            for (i, part) in wrap(&n, (width as usize).saturating_sub(6))
                .into_iter()
                .enumerate()
            {
                lines.push(Line::from(format!(
                    "  {} {part}",
                    if i == 0 { "-" } else { " " }
                )));
            }
        }
    }

    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    // Taller than the screen: scrollable with the arrow keys.
    let overflow = (lines.len() + 2).saturating_sub(height as usize);
    app.help_scroll = app.help_scroll.min(overflow);
    let hint = if overflow > 0 {
        " up/down scroll, any other key closes "
    } else {
        " any key closes, q quits "
    };
    frame.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.frame())
        .title(Span::styled(" vmap-trace top: help ", theme.title()))
        .title_bottom(Line::from(hint).right_aligned());
    let text = Paragraph::new(lines)
        .block(block)
        .scroll((app.help_scroll.min(u16::MAX as usize) as u16, 0));
    frame.render_widget(text, popup);
}

/// Greedy word wrap to `width` columns (a word longer than the width gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width.max(1) {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// What the user should know about this session: listed here, counted in the header.
pub(super) fn session_notes(p: &Profile) -> Vec<String> {
    p.meta
        .notes
        .iter()
        .cloned()
        .chain(p.losses.describe())
        .chain(p.stack_sampling.describe())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wraps_at_words() {
        assert_eq!(
            wrap("lock:contention_* only report spinlock waits", 20),
            vec!["lock:contention_*", "only report spinlock", "waits"]
        );
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            vec!["averyveryverylongword", "x"]
        );
    }
}
