//! The verdict line and the key hints / status line.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::theme::Theme;
use crate::top::app::App;
use crate::top::verdict::Verdict;

pub fn render_verdict(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let style = match app.verdict() {
        Verdict::Comparison(_) => theme.value(),
        Verdict::Pending | Verdict::Unavailable(_) => theme.dim(),
    };
    let line = crate::top::format::truncate(&app.verdict().line(), area.width as usize);
    frame.render_widget(Paragraph::new(Line::from(Span::styled(line, style))), area);
}

/// Key hints, most important first: the line is cut at the terminal's edge.
const HINTS: [(&str, &str); 9] = [
    ("q", "quit"),
    ("?", "help"),
    ("tab", "view"),
    ("s", "sort"),
    ("p", "pause"),
    ("r", "reset"),
    ("f", "flamegraph"),
    ("a", "window"),
    ("v", "vmap only"),
];

pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let line = if let Some(status) = app.status() {
        let text = crate::top::format::truncate(&status.text, area.width as usize);
        Line::from(Span::styled(
            text,
            if status.error {
                theme.alert()
            } else {
                theme.value()
            },
        ))
    } else if app.warming_up() && !app.paused {
        Line::from(Span::styled(
            "collecting the first interval...",
            theme.dim(),
        ))
    } else {
        let mut spans = Vec::new();
        let mut used = 0;
        for (key, what) in HINTS {
            let what = if key == "p" && app.paused {
                "resume"
            } else {
                what
            };
            let text = format!(" {what}  ");
            // Whole hints only: a cut-off one reads as a different key.
            used += key.len() + text.trim_end().len();
            if used > area.width as usize {
                break;
            }
            used += 2;
            spans.push(Span::styled(key, theme.key()));
            spans.push(Span::raw(text));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}
