//! Readable units in flamegraph tooltips.
//!
//! inferno prints each frame's weight as an integer with thousands separators, after
//! multiplying it by `Options::factor`, followed by `Options::count_name`. Folded stacks keep
//! raw nanoseconds (exact, and what other tools expect); only the rendering scales them, so a
//! tooltip reads `alloc_vmap_area (2,215 us, 3.17%)` instead of `2215342 samples`.

/// What a folded stack's number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Nanoseconds,
    /// Discrete events (contended waits).
    Events,
}

/// The unit shown in tooltips and the factor that converts folded values into it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisplayScale {
    pub unit: &'static str,
    pub factor: f64,
}

/// Pick the tooltip unit for a graph whose total weight is `total`.
///
/// Time switches from us to ms once the whole graph is 10 s or more: inferno hides frames
/// narrower than 0.01% of the total, so every visible frame is then at least 1 ms and never
/// reads "0 ms". Below that, us keeps the resolution (a visible frame in a 450 us graph is
/// 0.045 us wide; its tooltip still gives its exact share in percent).
pub fn display_scale(quantity: Quantity, total: u64) -> DisplayScale {
    const TEN_SECONDS_NS: u64 = 10_000_000_000;
    match quantity {
        Quantity::Events => DisplayScale {
            unit: "waits",
            factor: 1.0,
        },
        Quantity::Nanoseconds if total >= TEN_SECONDS_NS => DisplayScale {
            unit: "ms",
            factor: 1e-6,
        },
        Quantity::Nanoseconds => DisplayScale {
            unit: "us",
            factor: 1e-3,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_reads_in_us_then_ms_and_counts_in_waits() {
        assert_eq!(
            display_scale(Quantity::Nanoseconds, 450_000),
            DisplayScale {
                unit: "us",
                factor: 1e-3
            }
        );
        assert_eq!(
            display_scale(Quantity::Nanoseconds, 9_999_999_999).unit,
            "us"
        );
        assert_eq!(
            display_scale(Quantity::Nanoseconds, 10_000_000_000),
            DisplayScale {
                unit: "ms",
                factor: 1e-6
            }
        );
        assert_eq!(
            display_scale(Quantity::Events, 10_000_000_000),
            DisplayScale {
                unit: "waits",
                factor: 1.0
            }
        );
    }
}
