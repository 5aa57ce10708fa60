//! The two header lines (what is being measured, how, and how well) and the view line
//! (tabs, sort, window, pause).
use std::collections::BTreeMap;

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::theme::Theme;
use crate::profile::{HookStatus, Profile};
use crate::top::app::{App, View, WindowMode};
use crate::top::format;

/// A header field in a long and a short form (label and value); the short one is used when
/// the line is too long.
struct Field {
    label: &'static str,
    long: String,
    short_label: &'static str,
    short: String,
    alert: bool,
}

fn field(label: &'static str, long: impl Into<String>, short: impl Into<String>) -> Field {
    Field {
        label,
        long: long.into(),
        short_label: label,
        short: short.into(),
        alert: false,
    }
}

impl Field {
    fn short_label(mut self, label: &'static str) -> Field {
        self.short_label = label;
        self
    }

    fn label(&self, short: bool) -> &'static str {
        if short {
            self.short_label
        } else {
            self.label
        }
    }
}

/// Lay out fields on one line, shortening from the last field backwards until it fits.
fn fit(fields: &[Field], width: u16, theme: Theme, lead: Option<&str>) -> Line<'static> {
    const SEP: &str = "  ";
    let len = |f: &Field, short: bool| {
        let label = if f.label(short).is_empty() {
            0
        } else {
            f.label(short).len() + 1
        };
        label
            + if short {
                f.short.chars().count()
            } else {
                f.long.chars().count()
            }
    };
    let lead_len = lead.map_or(0, |l| l.len() + SEP.len());
    let mut short = vec![false; fields.len()];
    let total = |short: &[bool]| -> usize {
        lead_len
            + fields
                .iter()
                .zip(short)
                .map(|(f, &s)| len(f, s))
                .sum::<usize>()
            + SEP.len() * fields.len().saturating_sub(1)
    };
    for i in (0..fields.len()).rev() {
        if total(&short) <= width as usize {
            break;
        }
        short[i] = true;
    }
    let mut spans = Vec::new();
    if let Some(l) = lead {
        spans.push(Span::styled(l.to_string(), theme.title()));
        spans.push(Span::raw(SEP));
    }
    for (i, (f, &s)) in fields.iter().zip(&short).enumerate() {
        if i > 0 {
            spans.push(Span::raw(SEP));
        }
        if !f.label(s).is_empty() {
            spans.push(Span::styled(format!("{} ", f.label(s)), theme.label()));
        }
        let text = if s { f.short.clone() } else { f.long.clone() };
        spans.push(Span::styled(
            text,
            if f.alert {
                theme.alert()
            } else {
                theme.value()
            },
        ));
    }
    Line::from(spans)
}

/// How a group of hooks is attached: `tp_btf (5 hooks)`, `tp_btf 4, tracepoint 1, 1 unavailable`,
/// or `n/a` when none could be.
pub fn mechanisms<'a>(hooks: impl Iterator<Item = &'a HookStatus>) -> String {
    let mut by: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut missing = 0;
    for h in hooks {
        match h.mechanism {
            Some(m) => *by.entry(m.label()).or_default() += 1,
            None => missing += 1,
        }
    }
    let mut parts: Vec<String> = match by.len() {
        0 => return "n/a".into(),
        1 => by
            .iter()
            .map(|(m, n)| format!("{m} ({n} hook{})", if *n == 1 { "" } else { "s" }))
            .collect(),
        _ => by.iter().map(|(m, n)| format!("{m} {n}")).collect(),
    };
    if missing > 0 {
        parts.push(format!("{missing} unavailable"));
    }
    parts.join(", ")
}

/// Hook groups by their label's prefix: the optional ones are told apart from the tracepoints
/// every view depends on.
fn hook_group<'a>(
    p: &'a Profile,
    prefix: Option<&'static str>,
) -> impl Iterator<Item = &'a HookStatus> + Clone {
    const OPTIONAL: [&str; 2] = ["fn:", "lock-timing:"];
    p.meta.hooks.iter().filter(move |h| match prefix {
        Some(pre) => h.hook.starts_with(pre),
        None => !OPTIONAL.iter().any(|o| h.hook.starts_with(o)),
    })
}

pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let p = app.latest();
    let m = &p.meta;
    let design_short = m
        .design
        .label()
        .split(" (")
        .next()
        .unwrap_or("unknown")
        .to_string();
    let lost = p.losses.total();
    let mut lost_field =
        field("events lost", lost.to_string(), lost.to_string()).short_label("lost");
    if lost > 0 {
        lost_field.long = format!("{lost} (see ?)");
        lost_field.alert = true;
    }
    let line1 = fit(
        &[
            field("kernel", m.kernel_release.clone(), m.kernel_release.clone()).short_label(""),
            field("design", m.design.label(), design_short).short_label(""),
            field("", format!("{} CPUs", m.cpus), format!("{} CPUs", m.cpus)),
            field(
                "elapsed",
                format::clock(m.duration_s()),
                format::clock(m.duration_s()),
            )
            .short_label("up"),
            lost_field,
        ],
        area.width,
        theme,
        Some("vmap-trace top"),
    );
    let notes = super::help::session_notes(p).len();
    let tracepoints = mechanisms(hook_group(p, None));
    let functions = hook_group(p, Some("fn:"));
    let function_latency = if functions.clone().next().is_none() {
        "off".to_string()
    } else {
        mechanisms(functions)
    };
    let mut fields = vec![
        field("probes", tracepoints.clone(), tracepoints),
        field("fn latency", function_latency.clone(), function_latency).short_label("fn"),
        field(
            "refresh",
            format::span(app.options.interval.as_secs_f64()),
            format::span(app.options.interval.as_secs_f64()),
        )
        .short_label("every"),
    ];
    let timing = hook_group(p, Some("lock-timing:"));
    if timing.clone().next().is_some() {
        let t = mechanisms(timing);
        fields.push(field("lock timing", t.clone(), t).short_label("timing"));
    }
    if notes > 0 {
        fields.push(field(
            "notes",
            format!("{notes} (press ?)"),
            format!("{notes} (?)"),
        ));
    }
    let line2 = fit(&fields, area.width, theme, None);
    frame.render_widget(Paragraph::new(vec![line1, line2]), area);
}

/// What the tables are measured over, e.g. `last 1.0 s` or `since reset 2m13s`.
pub fn window_label(app: &App) -> String {
    match app.window_mode {
        WindowMode::Interval if app.warming_up() => "first interval pending".into(),
        WindowMode::Interval => format!("last {}", format::span(app.interval().secs())),
        WindowMode::SinceReset => app.since_reset_label(),
    }
}

pub fn render_tabs(frame: &mut Frame, area: Rect, app: &App, theme: Theme) {
    let mut spans = Vec::new();
    for v in View::ALL {
        let text = format!(" {} ", v.title());
        spans.push(if v == app.view {
            Span::styled(text, theme.selected_tab())
        } else {
            Span::raw(text)
        });
    }
    spans.push(Span::raw("  "));
    spans.push(Span::styled("sort ", theme.label()));
    spans.push(Span::styled(app.sort.label(), theme.value()));
    spans.push(Span::raw("  "));
    spans.push(Span::styled("window ", theme.label()));
    spans.push(Span::styled(window_label(app), theme.value()));
    let used: usize = spans.iter().map(|s| s.width()).sum();
    if app.paused {
        let tag = " PAUSED ";
        let pad = (area.width as usize)
            .saturating_sub(used + tag.len())
            .max(1);
        spans.push(Span::raw(" ".repeat(pad)));
        spans.push(Span::styled(tag, theme.paused()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{HookStatus, Mechanism};

    #[test]
    fn summarizes_mechanisms() {
        let mut p = crate::profile::tests::sample_profile();
        assert_eq!(mechanisms(hook_group(&p, None)), "tp_btf (1 hook)");
        let hook = |name: &str, m| HookStatus {
            hook: name.into(),
            mechanism: m,
            rejected: vec![],
        };
        p.meta.hooks = vec![
            hook("vmalloc:alloc_vmap_area", Some(Mechanism::TpBtf)),
            hook("lock:contention_begin", Some(Mechanism::Tracepoint)),
            hook("lock:contention_end", Some(Mechanism::TpBtf)),
            hook("vmalloc:purge_vmap_area_lazy", None),
            hook("fn:alloc_vmap_area", None),
            hook("fn:find_vmap_area", None),
            hook("lock-timing:spinlock", Some(Mechanism::Kprobe)),
        ];
        assert_eq!(
            mechanisms(hook_group(&p, None)),
            "tp_btf 2, tracepoint 1, 1 unavailable"
        );
        assert_eq!(mechanisms(hook_group(&p, Some("fn:"))), "n/a");
        assert_eq!(
            mechanisms(hook_group(&p, Some("lock-timing:"))),
            "kprobe (1 hook)"
        );
    }
}
