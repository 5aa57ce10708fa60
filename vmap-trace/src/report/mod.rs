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
    /// Whole verifier logs of refused programs, not just their last lines.
    pub verbose: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            top: 10,
            verbose: false,
        }
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

/// A max for a table: `>=3.74 us` when it is only a lower bound (`ShownMax`), so a reader
/// never takes it for a measured maximum.
pub fn format_max(max: crate::profile::ShownMax) -> String {
    let ns = format_ns(max.ns as f64);
    if max.estimated {
        format!(">={ns}")
    } else {
        ns
    }
}

/// Said under the vmap table when it has a `>=` max.
pub const ESTIMATED_MAX_NOTE: &str =
    "max >=X: at least X, not measured: the row includes short waits (under 50 us) the \
     stack sampler passed over, counted in its count and total but not in its max; \
     `record --stack-samples 0` measures every stack's max";

/// Said under other tables when they have a `>=` max: a measured max below its row's mean.
pub const RAISED_MAX_NOTE: &str = "max >=X: the recorded max was below the row's mean X (a racing \
     update of the kernel's shared max kept a smaller wait): at least X";

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
        let max = |ns, estimated| format_max(crate::profile::ShownMax { ns, estimated });
        assert_eq!(max(3740, true), ">=3.74 us");
        assert_eq!(max(851, false), "851 ns");
    }
}
