//! Tasks by lock wait: who is paying for the contention.
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

use super::table::{self, Column, TableRow};
use super::theme::Theme;
use crate::top::app::{App, SortKey};
use crate::top::format;
use crate::top::rows::{task_rows, TaskRow};

fn columns(sort: SortKey) -> Vec<Column> {
    vec![
        Column::fixed("tid", 7),
        Column::fixed("pid", 7),
        Column::text("comm", 15).sorted_if(sort == SortKey::Name),
        Column::fixed("cont/s", 6).sorted_if(sort == SortKey::Count),
        Column::fixed("wait/s", 6).sorted_if(sort == SortKey::Wait),
        Column::fixed("avg", 6).sorted_if(sort == SortKey::Avg),
        // Tasks have no histogram: sorting by p99 sorts by max.
        Column::fixed("max", 7).sorted_if(matches!(sort, SortKey::Max | SortKey::P99)),
    ]
}

fn cells(r: &TaskRow, cols: &[Column]) -> Vec<String> {
    cols.iter()
        .map(|c| match c.header {
            "tid" => r.tid.to_string(),
            "pid" => r.tgid.to_string(),
            "comm" => r.comm.clone(),
            "cont/s" => format::rate(r.contentions_per_s),
            "wait/s" => format::ns(r.wait_per_s),
            "avg" => format::opt_ns(r.avg_ns),
            "max" => format::max(r.max),
            other => unreachable!("no task column {other}"),
        })
        .collect()
}

fn body(rows: &[TaskRow], cols: &[Column], theme: Theme) -> Vec<TableRow> {
    rows.iter()
        .map(|r| {
            TableRow::new(
                cells(r, cols),
                if r.contentions_per_s == 0.0 {
                    theme.idle_row()
                } else {
                    Default::default()
                },
            )
        })
        .collect()
}

fn block(title: String, theme: Theme) -> Block<'static> {
    Block::default()
        .borders(Borders::TOP)
        .border_style(theme.frame())
        .title(Span::styled(title, theme.title()))
}

/// The tasks view: every task that waited since the last reset, scrollable.
pub fn render(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let rows = task_rows(app.shown(), app.since_reset(), app.sort);
    let b = block(format!(" Tasks by lock wait ({}) ", rows.len()), theme);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    if rows.is_empty() {
        table::empty(
            frame,
            inner,
            vec![Span::raw("no task has waited on a contended lock yet")],
        );
        return;
    }
    let (page, visible) = table::page(&rows, inner, &mut app.scroll);
    app.page_rows = visible;
    let cols = columns(app.sort);
    table::render(
        frame,
        inner,
        &cols,
        &body(page, &cols, theme),
        theme.table_header(),
        theme.sorted_header(),
    );
}

/// The top few tasks under the lock table: the ones active in the shown window (a fork-heavy
/// load leaves thousands of exited tasks in the period, which only the tasks view lists).
pub fn render_compact(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let rows = task_rows(app.shown(), app.shown(), app.sort);
    let b = block(" Top tasks ".into(), theme);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    if rows.is_empty() {
        table::empty(frame, inner, vec![Span::styled("none yet", theme.dim())]);
        return;
    }
    // Half a screen wide: the figures that rank tasks, not the ones that describe them.
    let cols: Vec<Column> = columns(app.sort)
        .into_iter()
        .filter(|c| c.header != "pid" && c.header != "avg")
        .collect();
    let (page, _) = table::page(&rows, inner, &mut 0);
    table::render(
        frame,
        inner,
        &cols,
        &body(page, &cols, theme),
        theme.table_header(),
        theme.sorted_header(),
    );
}
