//! The lock table: every contended lock, vmap ones highlighted.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders};
use ratatui::Frame;

use super::table::{self, Column, TableRow};
use super::theme::Theme;
use crate::top::app::{App, SortKey};
use crate::top::format;
use crate::top::rows::{hold_times, lock_rows, HoldTimes, LockRow};

/// Why there are no hold columns, for the table's title; None when there are.
pub fn hold_note(times: HoldTimes) -> Option<&'static str> {
    match times {
        HoldTimes::Measured => None,
        HoldTimes::NotRequested => Some("hold: n/a (needs --lock-timing and kprobe/fentry)"),
        HoldTimes::Unavailable => {
            Some("hold: n/a (lock timing unavailable: needs kprobe/fentry, see ?)")
        }
    }
}

/// Titles wider than this get their long forms.
const WIDE: u16 = 100;

/// The lock is mostly waited for on vmap paths.
fn is_vmap(row: &LockRow) -> bool {
    row.vmap_share.is_some_and(|s| s >= 0.5)
}

fn columns(rows: &[LockRow], show_hold: bool, sort: SortKey, width: u16) -> Vec<Column> {
    let mut cols = vec![Column::text("lock", 14)
        .sorted_if(sort == SortKey::Name)
        .keep_suffix(" @")];
    // Unnamed locks carry their kind in the label ("spinlock in ..."); named ones need the
    // column, when the terminal is wide enough to spare it.
    let named = rows.iter().any(|r| !r.label.starts_with(r.kind));
    if width >= 110 && named {
        cols.push(Column::fixed("kind", 13).left());
    }
    cols.extend([
        Column::fixed("vmap", 5),
        Column::fixed("cont/s", 6).sorted_if(sort == SortKey::Count),
        Column::fixed("wait/s", 6).sorted_if(sort == SortKey::Wait),
        Column::fixed("avg", 6).sorted_if(sort == SortKey::Avg),
        Column::fixed("p99", 6).sorted_if(sort == SortKey::P99),
        Column::fixed("max", 7).sorted_if(sort == SortKey::Max),
    ]);
    if show_hold {
        cols.extend([Column::fixed("hold avg", 8), Column::fixed("hold p99", 8)]);
    }
    cols.push(Column::text("top caller", 10));
    cols
}

fn cells(r: &LockRow, cols: &[Column]) -> Vec<String> {
    cols.iter()
        .map(|c| match c.header {
            "lock" => r.label.clone(),
            "kind" => r.kind.to_string(),
            "vmap" => match r.vmap_share {
                None => "?".into(),
                Some(s) if s <= 0.0 => "-".into(),
                Some(s) => format::percent(s).replace(".0%", "%"),
            },
            "cont/s" => format::rate(r.contentions_per_s),
            "wait/s" => format::ns(r.wait_per_s),
            "avg" => format::opt_ns(r.avg_ns),
            "p99" => format::opt_ns(r.p99_ns.map(|v| v as f64)),
            "max" => format::max(r.max),
            "hold avg" => format::opt_ns(r.hold.map(|h| h.avg_ns)),
            "hold p99" => format::opt_ns(r.hold.and_then(|h| h.p99_ns).map(|v| v as f64)),
            "top caller" => r.top_caller.clone().unwrap_or_else(|| "?".into()),
            other => unreachable!("no lock column {other}"),
        })
        .collect()
}

pub fn render(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let mut rows = lock_rows(app.shown(), app.since_reset(), app.sort);
    let all = rows.len();
    if app.vmap_only {
        rows.retain(|r| r.vmap_share.is_some_and(|s| s > 0.0));
    }
    // Hold columns depend on the session, not on the rows, so the layout does not jump when a
    // timed lock goes quiet for an interval.
    let hold = hold_note(hold_times(app.latest()));
    let wide = area.width >= WIDE;
    let count = match (app.vmap_only, wide) {
        (true, true) => format!("vmap paths only: {} of {all} locks (v: all)", rows.len()),
        (true, false) => format!("vmap only: {} of {all}", rows.len()),
        (false, true) => {
            let vmap = rows.iter().filter(|r| is_vmap(r)).count();
            format!(
                "{all} lock{}, {vmap} mostly vmap (v: vmap only)",
                if all == 1 { "" } else { "s" }
            )
        }
        (false, false) => format!("{all} lock{}", if all == 1 { "" } else { "s" }),
    };
    let hold = hold.map(|note| if wide { note } else { "hold: n/a (see ?)" });
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(theme.frame())
        .title(Line::from(vec![
            Span::styled(" Contended locks ", theme.title()),
            Span::raw(format!("{count} ")),
        ]))
        .title(hold.map_or_else(Line::default, |note| {
            Line::from(Span::styled(format!(" {note} "), theme.dim())).right_aligned()
        }));
    let inner = block.inner(area);
    frame.render_widget(block, area);

    if rows.is_empty() {
        let mut msg = vec![Span::raw(if app.vmap_only && all > 0 {
            "no contention on vmap paths yet"
        } else {
            "no lock contention recorded yet"
        })];
        if app
            .latest()
            .meta
            .notes
            .iter()
            .any(|n| n.contains("3+ contenders"))
        {
            msg.push(Span::styled(
                " (lock:contention_* only see waits with 3+ contenders: two-way waits are invisible; see ?)",
                theme.dim(),
            ));
        }
        table::empty(frame, inner, msg);
        return;
    }
    let cols = columns(&rows, hold.is_none(), app.sort, inner.width);
    let (page, visible) = table::page(&rows, inner, &mut app.scroll);
    app.page_rows = visible;
    let body: Vec<TableRow> = page
        .iter()
        .map(|r| {
            let style = if r.contentions_per_s == 0.0 {
                theme.idle_row()
            } else if is_vmap(r) {
                theme.vmap_row()
            } else {
                Default::default()
            };
            TableRow::new(cells(r, &cols), style)
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
