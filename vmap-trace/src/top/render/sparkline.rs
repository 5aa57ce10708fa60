//! Total vmap lock wait over the last minutes, one bar per refresh.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Sparkline};
use ratatui::Frame;

use super::theme::Theme;
use crate::top::app::App;
use crate::top::format;

pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let width = area.width as usize;
    let points: Vec<_> = app.history.last(width).collect();
    let span_secs: f64 = points.iter().map(|p| p.secs).sum();
    let now = app.history.newest().map_or(0.0, |p| p.vmap_wait_per_s);
    let peak = points.iter().map(|p| p.vmap_wait_per_s).fold(0.0, f64::max);
    let all_now = app.history.newest().map_or(0.0, |p| p.all_wait_per_s);
    let share = if all_now > 0.0 {
        format!(" ({} of all lock wait)", format::percent(now / all_now))
    } else {
        String::new()
    };
    let title = Line::from(vec![
        Span::styled(" vmap lock wait/s ", theme.title()),
        Span::raw(format!(
            "now {}{share}, peak {} over {} ",
            format::ns(now),
            format::ns(peak),
            format::span(span_secs)
        )),
    ]);
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(theme.frame())
        .title(title);
    // Bars in whole nanoseconds per second, the newest at the right edge like a scrolling
    // chart: the part of the width with no history yet stays blank.
    let data: Vec<Option<u64>> = std::iter::repeat_n(None, width.saturating_sub(points.len()))
        .chain(
            points
                .iter()
                .map(|p| Some(p.vmap_wait_per_s.round() as u64)),
        )
        .collect();
    let sparkline = Sparkline::default()
        .block(block)
        .data(data)
        .style(theme.bar());
    frame.render_widget(sparkline, area);
}
