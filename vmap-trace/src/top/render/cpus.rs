//! Per-CPU lock wait as bars: the share of each second a CPU's tasks spent waiting. Imbalance
//! between CPUs is what sharding by node is meant to remove, so it is worth a glance.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::table::{self, Column, TableRow};
use super::theme::Theme;
use crate::top::app::App;
use crate::top::format;
use crate::top::rows::{cpu_rows, CpuRow};

/// Waiting per second of wall time. Sleeping waits (mutexes) of several tasks on one CPU can
/// add up to more than a second per second; the bar stops at full, the figure does not.
fn share(row: &CpuRow) -> f64 {
    row.wait_per_s / 1e9
}

fn block(title: String, theme: Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::TOP)
        .border_style(theme.frame())
        .title(Span::styled(title, theme.title()))
}

/// The CPUs view: one row per CPU, scrollable.
pub fn render(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let rows = cpu_rows(app.shown());
    let b = block(" CPUs: lock wait per second of wall time ".into(), theme);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let cols = [
        Column::fixed("cpu", 4),
        Column::text("waiting", 10),
        Column::fixed("share", 6),
        Column::fixed("wait/s", 6),
        Column::fixed("cont/s", 6),
        Column::fixed("max", 7),
        Column::fixed("allocs/s", 8),
    ];
    let bar_width = table::widths(&cols, &[], inner.width)[1] as usize;
    let (page, visible) = table::page(&rows, inner, &mut app.scroll);
    app.page_rows = visible;
    let body: Vec<TableRow> = page
        .iter()
        .map(|r| {
            let cells = vec![
                r.cpu.to_string(),
                format::bar(share(r), bar_width),
                format::percent(share(r)),
                format::ns(r.wait_per_s),
                format::rate(r.contentions_per_s),
                format::max(r.max),
                format::rate(r.allocs_per_s),
            ];
            TableRow::new(cells, Default::default()).with_cell_style(1, theme.bar())
        })
        .collect();
    table::render(
        frame,
        inner,
        &cols,
        &body,
        theme.table_header(),
        theme.sorted_header(),
    );
}

/// A few CPUs under the lock table: all of them if they fit, else the busiest.
pub fn render_compact(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let mut rows = cpu_rows(app.shown());
    let fit = area.height.saturating_sub(1) as usize;
    let title = if rows.len() > fit {
        rows.sort_by(|a, b| {
            b.wait_per_s
                .total_cmp(&a.wait_per_s)
                .then(a.cpu.cmp(&b.cpu))
        });
        rows.truncate(fit);
        format!(
            " CPUs: lock wait (busiest {fit} of {}) ",
            app.latest().meta.cpus.max(rows.len() as u32)
        )
    } else {
        " CPUs: lock wait ".to_string()
    };
    let b = block(title, theme);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let label_w = 6; // "cpu12 "
    let figures_w = 6 + 1 + 6; // share, wait/s
    let bar_w = (inner.width as usize).saturating_sub(label_w + figures_w + 2);
    let lines: Vec<Line> = rows
        .iter()
        .map(|r| {
            Line::from(vec![
                Span::raw(format!("{:<label_w$}", format!("cpu{}", r.cpu))),
                Span::styled(format::bar(share(r), bar_w), theme.bar()),
                Span::raw(format!(
                    " {:>6} {:>6}",
                    format::percent(share(r)),
                    format::ns(r.wait_per_s)
                )),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
