//! Compact figures for table cells: a live view has 80 columns to share, so every figure fits
//! in 6 or 7 characters (the report's `format_ns` takes up to 9).
use super::window::WindowMax;

/// `850ns`, `1.25us`, `12.5us`, `125us`, `1.25ms`, ... `12.5s`: three significant digits.
pub fn ns(ns: f64) -> String {
    if !ns.is_finite() || ns <= 0.0 {
        return "0".into();
    }
    if ns < 999.5 {
        return format!("{ns:.0}ns");
    }
    for (scale, unit) in [(1e3, "us"), (1e6, "ms"), (1e9, "s")] {
        let v = ns / scale;
        if v < 9.995 {
            return format!("{v:.2}{unit}");
        } else if v < 99.95 {
            return format!("{v:.1}{unit}");
        } else if v < 999.5 || unit == "s" {
            return format!("{v:.0}{unit}");
        }
    }
    unreachable!("the seconds branch always returns")
}

/// An optional duration, `-` when there was nothing to measure.
pub fn opt_ns(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), ns)
}

/// A window's max: `≤` marks an upper bound (see `window::WindowMax`).
pub fn max(m: WindowMax) -> String {
    if m.ns == 0 {
        "-".into()
    } else if m.exact {
        ns(m.ns as f64)
    } else {
        format!("≤{}", ns(m.ns as f64))
    }
}

/// `0`, `0.50`, `7.25`, `12.5`, `850`, `1.2k`, `12k`, `1.5M`: rates of events per second.
pub fn rate(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        "0".into()
    } else if r < 9.995 {
        format!("{r:.2}")
    } else if r < 99.95 {
        format!("{r:.1}")
    } else if r < 999.5 {
        format!("{r:.0}")
    } else if r < 9_950.0 {
        format!("{:.1}k", r / 1e3)
    } else if r < 999_500.0 {
        format!("{:.0}k", r / 1e3)
    } else {
        format!("{:.1}M", r / 1e6)
    }
}

/// `0:02:13` (h:mm:ss), the way top shows uptime-like durations.
pub fn clock(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `1.0 s`, `0.5 s`, `2m`, `1h05m`: a span for titles.
pub fn span(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1} s")
    } else if secs < 3600.0 {
        let m = (secs / 60.0).floor();
        let s = (secs - m * 60.0).round();
        if s == 0.0 {
            format!("{m:.0}m")
        } else {
            format!("{m:.0}m{s:02.0}s")
        }
    } else {
        let total_min = (secs / 60.0) as u64;
        format!("{}h{:02}m", total_min / 60, total_min % 60)
    }
}

/// A share as a percentage with sensible precision: `0%`, `0.4%`, `12%`, `100%`.
pub fn percent(fraction: f64) -> String {
    let p = fraction * 100.0;
    if !p.is_finite() || p <= 0.0 {
        "0%".into()
    } else if p < 0.05 {
        // Not zero, and not to be read as zero.
        "<0.1%".into()
    } else if p < 9.95 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// A horizontal bar of `width` cells filled to `fraction` with eighth-cell resolution. It
/// reads without colour (NO_COLOR) and never renders a non-zero value as empty.
pub fn bar(fraction: f64, width: usize) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    if width == 0 {
        return String::new();
    }
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut eighths = (f * width as f64 * 8.0).round() as usize;
    if f > 0.0 && eighths == 0 {
        eighths = 1;
    }
    let full = eighths / 8;
    let mut s = "█".repeat(full);
    if full < width {
        s.push(PARTIAL[eighths % 8]);
        s.push_str(&" ".repeat(width - full - 1));
    }
    s
}

/// Cut `s` to `width` characters, marking the cut with `…`.
pub fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fit_in_six_characters() {
        assert_eq!(ns(0.0), "0");
        assert_eq!(ns(850.0), "850ns");
        assert_eq!(ns(999.4), "999ns");
        assert_eq!(ns(999.6), "1.00us");
        assert_eq!(ns(1_250.0), "1.25us");
        assert_eq!(ns(12_500.0), "12.5us");
        assert_eq!(ns(125_000.0), "125us");
        assert_eq!(ns(999_900.0), "1.00ms");
        assert_eq!(ns(2_500_000.0), "2.50ms");
        assert_eq!(ns(3e9), "3.00s");
        assert_eq!(ns(4000e9), "4000s");
        assert_eq!(ns(f64::NAN), "0");
        for v in [1.0, 999.0, 1e3, 9.99e3, 99.9e3, 999e3, 9.99e6, 999e6, 99e9] {
            assert!(ns(v).chars().count() <= 6, "{v}: {}", ns(v));
        }
        assert_eq!(
            max(WindowMax {
                ns: 9_000,
                exact: false
            }),
            "≤9.00us"
        );
        assert_eq!(
            max(WindowMax {
                ns: 9_000,
                exact: true
            }),
            "9.00us"
        );
        assert_eq!(
            max(WindowMax {
                ns: 0,
                exact: false
            }),
            "-"
        );
        assert_eq!(opt_ns(None), "-");
    }

    #[test]
    fn rates_and_spans() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.5), "0.50");
        assert_eq!(rate(12.34), "12.3");
        assert_eq!(rate(850.0), "850");
        assert_eq!(rate(1234.0), "1.2k");
        assert_eq!(rate(12_345.0), "12k");
        assert_eq!(rate(1_500_000.0), "1.5M");
        assert_eq!(clock(133.7), "0:02:13");
        assert_eq!(clock(3_725.0), "1:02:05");
        assert_eq!(span(1.0), "1.0 s");
        assert_eq!(span(120.0), "2m");
        assert_eq!(span(150.0), "2m30s");
        assert_eq!(span(3_900.0), "1h05m");
        assert_eq!(percent(0.004), "0.4%");
        assert_eq!(percent(0.123), "12%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.0001), "<0.1%");
    }

    #[test]
    fn bars_and_truncation() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██  ");
        assert_eq!(bar(0.5625, 4), "██▎ ");
        assert_eq!(bar(0.0001, 4), "▏   ");
        assert_eq!(bar(7.0, 3), "███");
        assert_eq!(bar(0.5, 0), "");
        assert_eq!(truncate("alloc_vmap_area", 8), "alloc_v…");
        assert_eq!(truncate("abc", 8), "abc");
        assert_eq!(truncate("abc", 0), "");
    }
}
