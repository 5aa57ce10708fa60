//! Views of a `Profile` for people (text) and programs (JSON).
pub mod compare;
pub mod csv;
pub mod json;
pub mod text;

/// Options shared by the report formats.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Rows per "top" table (other locks, tasks).
    pub top: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { top: 10 }
    }
}

/// `1234` -> `1.23 us`: the unit a person reads without counting digits.
pub fn format_ns(ns: f64) -> String {
    let (v, unit) = if ns >= 1e9 {
        (ns / 1e9, "s")
    } else if ns >= 1e6 {
        (ns / 1e6, "ms")
    } else if ns >= 1e3 {
        (ns / 1e3, "us")
    } else {
        (ns, "ns")
    };
    if unit == "ns" {
        format!("{v:.0} ns")
    } else {
        format!("{v:.2} {unit}")
    }
}

/// Rate per second over `secs`, guarding against zero-length recordings.
pub fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// A lock's display name: its symbol (escaped: recordings carry any name), or its address and
/// kind.
pub fn lock_label(name: Option<&str>, addr: u64, flags: u32) -> String {
    match name {
        Some(n) => crate::escape::field(n).into_owned(),
        None => format!("{addr:#x} ({})", crate::profile::lock_kind(flags)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_units() {
        assert_eq!(format_ns(999.0), "999 ns");
        assert_eq!(format_ns(1500.0), "1.50 us");
        assert_eq!(format_ns(2_500_000.0), "2.50 ms");
        assert_eq!(format_ns(3e9), "3.00 s");
        assert_eq!(per_second(10, 0.0), 0.0);
        assert_eq!(per_second(10, 2.0), 5.0);
        assert_eq!(lock_label(None, 0x10, 32), "0x10 (mutex)");
    }
}
