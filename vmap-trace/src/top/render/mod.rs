//! Drawing the screen from an `App`. Pure: the same state always draws the same cells, which
//! is what the TestBackend tests rely on.
//!
//! ```text
//! header        kernel, design, CPUs, elapsed, events lost / probes, refresh, notes
//! view line     Locks Ops CPUs Tasks   sort   window               PAUSED
//! main panel    the selected view (locks: table, plus CPU bars and top tasks when tall)
//! ops strip     vmalloc rates and lazy backlog (not in the ops view, which shows them fully)
//! sparkline     vmap lock wait per second, last minutes (dropped on short terminals)
//! verdict       the reference model's verdict
//! footer        key hints, or a status message
//! ```
mod cpus;
mod footer;
mod header;
mod help;
mod locks;
mod ops;
mod sparkline;
pub mod table;
mod tasks;
mod theme;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::app::{App, View};
use theme::Theme;

/// Smallest usable screen; below it a one-line notice is drawn instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 12;

pub fn draw(frame: &mut Frame, app: &mut App) {
    let theme = Theme::new(app.options.color);
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small ({}x{}): vmap-trace top needs {MIN_WIDTH}x{MIN_HEIGHT}; q quits",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(Line::from(msg)).wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    let show_strip = app.view != View::Ops;
    // The sparkline is the first thing to go on a short terminal: the tables matter more.
    let sparkline_h = if area.height >= 22 { 3 } else { 0 };
    let [head, tabs, main, strip, trend, verdict, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(u16::from(show_strip)),
        Constraint::Length(sparkline_h),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);

    header::render(frame, head, app, theme);
    header::render_tabs(frame, tabs, app, theme);
    match app.view {
        View::Locks => render_locks_view(frame, main, app, theme),
        View::Ops => ops::render(frame, main, app, theme),
        View::Cpus => cpus::render(frame, main, app, theme),
        View::Tasks => tasks::render(frame, main, app, theme),
    }
    if show_strip {
        ops::render_strip(frame, strip, app, theme);
    }
    if sparkline_h > 0 {
        sparkline::render(frame, trend, app, theme);
    }
    footer::render_verdict(frame, verdict, app, theme);
    footer::render(frame, foot, app, theme);
    if app.help {
        help::render(frame, area, app, theme);
    }
}

/// The lock table; on a tall terminal, CPU bars and the top tasks beside each other below it.
fn render_locks_view(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    const PANEL: u16 = 6;
    if area.height < 20 {
        locks::render(frame, area, app, theme);
        return;
    }
    let [table, panels] =
        Layout::vertical([Constraint::Min(8), Constraint::Length(PANEL)]).areas(area);
    locks::render(frame, table, app, theme);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
            .spacing(1)
            .areas(panels);
    cpus::render_compact(frame, left, app, theme);
    tasks::render_compact(frame, right, app, theme);
}
