//! The kernel's log2 histograms as Prometheus histograms, exactly: no sample is invented or
//! re-bucketed, bucket bounds are a subset of the kernel's bucket edges.
//!
//! Kernel bucket `i` holds values `v` with `2^i <= v < 2^(i+1)` (bucket 0 also holds 0 and 1,
//! the last bucket everything above). The number of values below an edge `2^k` is therefore
//! exactly the sum of kernel buckets `0..k`, for any `k`: choosing which edges to expose only
//! decides the resolution, never the correctness. Everything above the last exposed edge is in
//! `+Inf` only.
//!
//! Prometheus bounds are inclusive (`le`). Times are exposed at powers of two (`le` =
//! 2^k ns in seconds): a wait of exactly 2^k ns is counted in the next bucket, a 1 ns edge
//! effect. Sizes are integers that hit powers of two all the time (a 4-page stack), so their
//! bounds are the largest integer of each kernel bucket, `2^k - 1` pages, which is exact.
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::profile::{Log2Histogram, WaitHistogram};

/// Exponents `k` of the exposed wait-time edges 2^k ns: 256 ns .. 2^35 ns (34.4 s). Shorter
/// waits fall in the first bucket, longer ones in `+Inf` only.
pub const WAIT_EDGE_EXPONENTS: std::ops::RangeInclusive<u32> = 8..=35;
/// Exponents `k` of the exposed size edges (2^k - 1 pages): 1 page .. 262143 pages (1 GiB of
/// 4 KiB pages).
pub const SIZE_EDGE_EXPONENTS: std::ops::RangeInclusive<u32> = 1..=18;

/// A classic Prometheus histogram ready to encode: per-bucket (not cumulative) counts with
/// their inclusive upper bounds, the last one `+Inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromHistogram {
    pub sum: f64,
    /// Equal to the sum of `buckets`' counts (the `+Inf` bucket), as Prometheus requires.
    pub count: u64,
    /// (inclusive upper bound, count in this bucket only), bounds increasing, last `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl PromHistogram {
    /// Counts per exposed edge 2^k: kernel buckets below the first edge collapse into the first
    /// bucket, kernel buckets at or above the last edge into `+Inf`.
    fn from_log2(
        hist: &Log2Histogram,
        exponents: std::ops::RangeInclusive<u32>,
        bound: impl Fn(u32) -> f64,
        sum: f64,
    ) -> Self {
        let count_below = |k: u32| -> u64 { hist.buckets.iter().take(k as usize).sum() };
        let mut buckets = Vec::with_capacity(exponents.clone().count() + 1);
        let mut previous = 0u64;
        for k in exponents {
            let cumulative = count_below(k);
            buckets.push((bound(k), cumulative - previous));
            previous = cumulative;
        }
        let count = hist.total();
        buckets.push((f64::INFINITY, count - previous));
        PromHistogram {
            sum,
            count,
            buckets,
        }
    }

    /// A wait (or hold, or latency) histogram in seconds.
    ///
    /// `_count` is the histogram's own total rather than `WaitHistogram::count`: the kernel
    /// updates the two with separate atomic adds, so a snapshot taken mid-update may see them
    /// differ by a few, and `_count` must equal the `+Inf` bucket.
    pub fn seconds(wait: &WaitHistogram) -> Self {
        Self::from_log2(
            &wait.hist,
            WAIT_EDGE_EXPONENTS,
            |k| (1u64 << k) as f64 / 1e9,
            wait.total_ns as f64 / 1e9,
        )
    }

    /// An allocation-size histogram in pages; `sum_pages` is the exact total of the sizes.
    pub fn pages(sizes: &Log2Histogram, sum_pages: u64) -> Self {
        Self::from_log2(
            sizes,
            SIZE_EDGE_EXPONENTS,
            |k| ((1u64 << k) - 1) as f64,
            sum_pages as f64,
        )
    }
}

impl EncodeMetric for PromHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cumulative(h: &PromHistogram) -> Vec<(f64, u64)> {
        let mut total = 0;
        h.buckets
            .iter()
            .map(|&(le, c)| {
                total += c;
                (le, total)
            })
            .collect()
    }

    #[test]
    fn wait_buckets_are_exact_cumulative_counts_at_powers_of_two() {
        // 3 waits in [1024, 2048) ns, 2 in [2^20, 2^21), 1 in the kernel's catch-all bucket 47.
        let mut raw = [0u64; 48];
        raw[10] = 3;
        raw[20] = 2;
        raw[47] = 1;
        raw[2] = 4; // below the first exposed edge (256 ns)
        let w = WaitHistogram {
            count: 10,
            total_ns: 5_000_000_000,
            max_ns: 0,
            hist: Log2Histogram::from_buckets(&raw),
        };
        let h = PromHistogram::seconds(&w);
        assert_eq!(h.count, 10);
        assert_eq!(h.sum, 5.0);
        let cum = cumulative(&h);
        let at = |ns: u64| {
            cum.iter()
                .find(|(le, _)| *le == ns as f64 / 1e9)
                .map(|(_, c)| *c)
                .unwrap()
        };
        assert_eq!(
            at(256),
            4,
            "values below the first edge are in the first bucket"
        );
        assert_eq!(at(1024), 4, "bucket [1024, 2048) is not below 1024");
        assert_eq!(at(2048), 7);
        assert_eq!(at(1 << 20), 7);
        assert_eq!(at(1 << 21), 9);
        assert_eq!(at(1 << 35), 9);
        assert_eq!(
            cum.last().unwrap(),
            &(f64::INFINITY, 10),
            "the catch-all bucket is only in +Inf"
        );
        assert_eq!(h.buckets.len(), WAIT_EDGE_EXPONENTS.count() + 1);
    }

    #[test]
    fn count_is_the_histogram_total_not_the_racy_counter() {
        let w = WaitHistogram {
            count: 12,
            total_ns: 100,
            max_ns: 0,
            hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]),
        };
        let h = PromHistogram::seconds(&w);
        assert_eq!(h.count, 11);
        assert_eq!(cumulative(&h).last().unwrap().1, 11);
    }

    #[test]
    fn size_bounds_include_exact_powers_of_two() {
        // A 4-page allocation is in kernel bucket 2 ([4, 8)): it must count under le=7, not le=3.
        let sizes = Log2Histogram::from_buckets(&[5, 0, 7]);
        let h = PromHistogram::pages(&sizes, 5 + 7 * 4);
        let cum = cumulative(&h);
        assert_eq!(cum[0], (1.0, 5));
        assert_eq!(cum[1], (3.0, 5));
        assert_eq!(cum[2], (7.0, 12));
        assert_eq!(h.sum, 33.0);
        assert_eq!(h.count, 12);
    }

    #[test]
    fn empty_histogram_has_all_bounds_and_zero_counts() {
        let h = PromHistogram::seconds(&WaitHistogram::default());
        assert_eq!(h.count, 0);
        assert!(h.buckets.iter().all(|&(_, c)| c == 0));
        assert!(
            h.buckets.windows(2).all(|w| w[0].0 < w[1].0),
            "bounds increase"
        );
    }
}
