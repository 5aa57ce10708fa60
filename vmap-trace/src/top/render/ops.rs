//! vmalloc operation rates and the lazy-free backlog.
//!
//! The backlog is the number of pages freed lazily and not yet purged; when it passes the
//! kernel's limit (lazy_max_pages) a purge runs, which is where the legacy design serializes
//! on purge_vmap_area_lock and free_vmap_area_lock. Its distance to the limit says how soon
//! the next purge comes.
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use super::table::{self, Column, TableRow};
use super::theme::Theme;
use crate::profile::{Log2Histogram, OpSource, OpSources, VmallocOps};
use crate::top::app::App;
use crate::top::format;

/// `1234/32768 pages ███▌   4%` in `width` cells (the bar takes what the figures leave, and
/// is left out below 4 cells), or `not seen yet` before the first free.
fn backlog_spans(ops: &VmallocOps, width: usize, theme: Theme) -> Vec<Span<'static>> {
    let unavailable = ops
        .sources
        .as_ref()
        .is_some_and(|s| s.lazy_backlog == OpSource::Unavailable);
    if unavailable {
        return vec![Span::styled(
            "unavailable in this kernel (vmap_lazy_nr not located)",
            theme.dim(),
        )];
    }
    if ops.lazy_pages_max == 0 {
        return vec![Span::styled(
            "not seen yet (reported when areas are freed)",
            theme.dim(),
        )];
    }
    let fill = ops.lazy_pages_last as f64 / ops.lazy_pages_max as f64;
    let figures = format!("{}/{} pages", ops.lazy_pages_last, ops.lazy_pages_max);
    let percent = format::percent(fill);
    let bar_width = width
        .saturating_sub(figures.chars().count() + percent.len() + 2)
        .min(40);
    let mut spans = vec![Span::raw(figures)];
    if bar_width >= 4 {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format::bar(fill, bar_width), theme.bar()));
    }
    spans.push(Span::styled(
        format!(" {percent}"),
        if fill > 1.0 {
            theme.alert()
        } else {
            Default::default()
        },
    ));
    spans
}

/// The one-line summary under the main panel of the other views.
pub fn render_strip(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let w = app.shown();
    let ops = &w.profile.ops;
    let mut spans = vec![Span::styled("vmalloc ", theme.title())];
    for (label, n) in [
        ("allocs", ops.allocs),
        ("frees", ops.frees),
        ("purges", ops.purges),
    ] {
        spans.push(Span::styled(format!("{label} "), theme.label()));
        spans.push(Span::styled(
            format!("{}/s", format::rate(w.rate(n))),
            theme.value(),
        ));
        spans.push(Span::raw("  "));
    }
    if ops.allocs_failed > 0 {
        spans.push(Span::styled(
            format!("failed {}/s  ", format::rate(w.rate(ops.allocs_failed))),
            theme.alert(),
        ));
    }
    spans.push(Span::styled("lazy ", theme.label()));
    let used: usize = spans.iter().map(|s| s.width()).sum();
    spans.extend(backlog_spans(
        &app.latest().ops,
        (area.width as usize).saturating_sub(used).min(50),
        theme,
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The ops view's title: where the figures come from, when that is not the tracepoints
/// (kernels before 6.2 count them with the vmap function probes).
fn ops_title(sources: Option<&OpSources>) -> String {
    match sources {
        Some(s) if *s != OpSources::tracepoints() => {
            format!(" vmalloc operations ({}) ", s.describe())
        }
        _ => " vmalloc operations ".to_string(),
    }
}

/// Size bucket label: `1`, `2-3`, `4-7`, ... pages.
fn size_label(bucket: usize) -> String {
    let lo = Log2Histogram::bucket_low(bucket).max(1);
    let hi = Log2Histogram::bucket_high(bucket) - 1;
    if lo >= hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// The ops view.
pub fn render(frame: &mut Frame, area: Rect, app: &mut App, theme: Theme) {
    let w = app.shown();
    let since = app.since_reset();
    let ops = &w.profile.ops;
    let b = Block::default()
        .borders(Borders::TOP)
        .border_style(theme.frame())
        .title(Span::styled(ops_title(ops.sources.as_ref()), theme.title()));
    let inner = b.inner(area);
    frame.render_widget(b, area);

    let cols = [
        Column::text("operation", 20),
        Column::fixed("per s", 8),
        Column::fixed(
            if app.never_reset() {
                "since start"
            } else {
                "since reset"
            },
            12,
        ),
    ];
    let figures: [(&str, u64, u64); 6] = [
        ("allocations", ops.allocs, since.profile.ops.allocs),
        (
            "failed allocations",
            ops.allocs_failed,
            since.profile.ops.allocs_failed,
        ),
        ("frees", ops.frees, since.profile.ops.frees),
        ("purges", ops.purges, since.profile.ops.purges),
        (
            "areas purged",
            ops.purged_areas,
            since.profile.ops.purged_areas,
        ),
        (
            "pages allocated",
            ops.alloc_pages,
            since.profile.ops.alloc_pages,
        ),
    ];
    let rows: Vec<TableRow> = figures
        .iter()
        .map(|&(what, n, total)| {
            let style = if what.starts_with("failed") && n > 0 {
                theme.alert()
            } else {
                Default::default()
            };
            TableRow::new(
                vec![what.to_string(), format::rate(w.rate(n)), total.to_string()],
                style,
            )
        })
        .collect();
    let table_width = inner.width.min(44);
    let table_area = Rect {
        width: table_width,
        height: (rows.len() as u16 + 1).min(inner.height),
        ..inner
    };
    table::render(
        frame,
        table_area,
        &cols,
        &rows,
        theme.table_header(),
        theme.sorted_header(),
    );

    // Below: backlog, sizes, per-CPU allocations, as bar lines.
    let bar_width = (inner.width as usize).saturating_sub(26).clamp(4, 40);
    let mut lines: Vec<Line> = vec![Line::default()];
    let mut backlog = vec![Span::styled(
        format!("{:<18}", "lazy backlog"),
        theme.label(),
    )];
    backlog.extend(backlog_spans(
        &app.latest().ops,
        (inner.width as usize).saturating_sub(18).min(70),
        theme,
    ));
    let latest = &app.latest().ops;
    if latest.lazy_pages_max > 0 {
        backlog.push(Span::styled(
            format!(
                "  peak {} ({})",
                latest.lazy_pages_peak,
                format::percent(latest.lazy_pages_peak as f64 / latest.lazy_pages_max as f64)
            ),
            theme.dim(),
        ));
    }
    lines.push(Line::from(backlog));

    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        "allocation sizes (pages), per s",
        theme.label(),
    )));
    let sizes = &ops.size_pages.buckets;
    let biggest = sizes.iter().copied().max().unwrap_or(0);
    if biggest == 0 {
        lines.push(Line::from(Span::styled(
            "  none in this window",
            theme.dim(),
        )));
    }
    for (i, &n) in sizes.iter().enumerate().filter(|(_, &n)| n > 0) {
        lines.push(Line::from(vec![
            Span::raw(format!("  {:>11} ", size_label(i))),
            Span::styled(
                format::bar(n as f64 / biggest as f64, bar_width),
                theme.bar(),
            ),
            Span::raw(format!(" {}", format::rate(w.rate(n)))),
        ]));
    }

    lines.push(Line::default());
    lines.push(Line::from(Span::styled(
        "allocations per CPU, per s",
        theme.label(),
    )));
    let per_cpu = &ops.allocs_per_cpu;
    let busiest = per_cpu.iter().copied().max().unwrap_or(0);
    for (cpu, &n) in per_cpu.iter().enumerate() {
        lines.push(Line::from(vec![
            Span::raw(format!("  {:>11} ", format!("cpu{cpu}"))),
            Span::styled(
                format::bar(
                    if busiest > 0 {
                        n as f64 / busiest as f64
                    } else {
                        0.0
                    },
                    bar_width,
                ),
                theme.bar(),
            ),
            Span::raw(format!(" {}", format::rate(w.rate(n)))),
        ]));
    }

    lines.push(Line::default());
    lines.extend(function_lines(app, theme));

    let rest = Rect {
        y: table_area.y + table_area.height,
        height: inner.height.saturating_sub(table_area.height),
        ..inner
    };
    let visible = rest.height as usize;
    app.scroll = table::clamp_scroll(app.scroll, lines.len(), visible);
    app.page_rows = visible;
    frame.render_widget(
        Paragraph::new(lines).scroll((app.scroll.min(u16::MAX as usize) as u16, 0)),
        rest,
    );
}

/// Latency of the vmap functions (entry to return), when kprobes or fentry could time them.
fn function_lines(app: &App, theme: Theme) -> Vec<Line<'static>> {
    let w = app.shown();
    let probed = app
        .latest()
        .meta
        .hooks
        .iter()
        .filter(|h| h.hook.starts_with("fn:"))
        .count();
    let mut lines = vec![Line::from(Span::styled(
        "vmap function latency",
        theme.label(),
    ))];
    if w.profile.functions.is_empty() {
        let why = if probed == 0 {
            "not probed"
        } else {
            "n/a (needs kprobe/fentry)"
        };
        lines.push(Line::from(Span::styled(format!("  {why}"), theme.dim())));
        return lines;
    }
    lines.push(Line::from(Span::styled(
        format!(
            "  {:<24} {:>8} {:>7} {:>7}",
            "function", "calls/s", "avg", "p99"
        ),
        theme.table_header(),
    )));
    for f in &w.profile.functions {
        let l = &f.latency;
        let row = format!(
            "  {:<24} {:>8} {:>7} {:>7}",
            format::truncate(&f.function, 24),
            format::rate(w.rate(l.count)),
            format::opt_ns(l.mean_ns()),
            format::opt_ns(l.p99_ns().map(|v| v as f64))
        );
        lines.push(Line::styled(
            row,
            if l.count == 0 {
                theme.idle_row()
            } else {
                Default::default()
            },
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels() {
        assert_eq!(size_label(0), "1");
        assert_eq!(size_label(1), "2-3");
        assert_eq!(size_label(4), "16-31");
    }

    #[test]
    fn the_title_and_backlog_say_when_figures_do_not_come_from_the_tracepoints() {
        use crate::profile::tests::function_probe_profile;
        assert_eq!(ops_title(None), " vmalloc operations ");
        assert_eq!(
            ops_title(Some(&OpSources::tracepoints())),
            " vmalloc operations "
        );
        let mut p = function_probe_profile();
        let sources = p.ops.sources.as_mut().unwrap();
        assert!(ops_title(Some(sources)).contains("function probe"));
        sources.lazy_backlog = OpSource::Unavailable;
        let text: String = backlog_spans(&p.ops, 60, Theme::new(false))
            .iter()
            .map(|s| s.content.to_string())
            .collect();
        assert!(text.starts_with("unavailable"), "{text}");
    }
}
