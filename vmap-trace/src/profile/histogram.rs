//! log2 histograms as the kernel side fills them (bucket i: 2^i <= v < 2^(i+1)).
//!
//! The kernel aggregates into fixed log2 buckets (cheap, no division in BPF); this type keeps
//! them losslessly and answers percentiles with a bucket's bounds. hdrhistogram is used where
//! raw values are available (the model); here they never are.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Buckets")]
pub struct Log2Histogram {
    /// Count per bucket; trailing zero buckets are trimmed.
    pub buckets: Vec<u64>,
}

/// Bucket i holds values from 2^i: a 64-bit value has no bucket past 63.
pub const MAX_BUCKETS: usize = 64;

/// A histogram as read, before its number of buckets is checked.
#[derive(Deserialize)]
struct Buckets {
    buckets: Vec<u64>,
}

impl TryFrom<Buckets> for Log2Histogram {
    type Error = String;

    fn try_from(raw: Buckets) -> Result<Self, String> {
        if raw.buckets.len() > MAX_BUCKETS {
            return Err(format!(
                "a log2 histogram has {} buckets, but 64-bit values fill at most {MAX_BUCKETS}",
                raw.buckets.len()
            ));
        }
        Ok(Log2Histogram {
            buckets: raw.buckets,
        })
    }
}

impl Log2Histogram {
    pub fn from_buckets(raw: &[u64]) -> Self {
        let len = raw.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
        Log2Histogram {
            buckets: raw[..len].to_vec(),
        }
    }

    pub fn total(&self) -> u64 {
        super::sums::saturating_sum(self.buckets.iter().copied())
    }

    /// Lower bound of bucket `i` (saturated past the last bucket, which no histogram has).
    pub fn bucket_low(i: usize) -> u64 {
        if i == 0 {
            0
        } else {
            pow2(i)
        }
    }

    /// Upper bound (exclusive) of bucket `i`, saturated at `u64::MAX` for the last bucket.
    pub fn bucket_high(i: usize) -> u64 {
        pow2(i.saturating_add(1))
    }

    /// The value below which a fraction `q` (0..=1) of samples lie, as the upper bound of the
    /// bucket that holds it (an over-estimate by at most 2x, never an under-estimate).
    pub fn quantile_upper(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen = c.saturating_add(seen);
            if seen >= rank {
                return Some(Self::bucket_high(i));
            }
        }
        None
    }

    pub fn add(&mut self, other: &Log2Histogram) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
    }

    /// `self - earlier`, for windows over cumulative counters.
    pub fn since(&self, earlier: &Log2Histogram) -> Log2Histogram {
        let raw: Vec<u64> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_sub(earlier.buckets.get(i).copied().unwrap_or(0)))
            .collect();
        Self::from_buckets(&raw)
    }
}

/// 2^i, or `u64::MAX` where that does not fit.
fn pow2(i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .unwrap_or(u64::MAX)
}

/// Count, total, max and distribution of waits (or holds, or latencies) in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitHistogram {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub hist: Log2Histogram,
}

impl WaitHistogram {
    pub fn mean_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.total_ns as f64 / self.count as f64)
    }

    /// p99 as a bucket upper bound, capped by the observed max.
    pub fn p99_ns(&self) -> Option<u64> {
        self.hist.quantile_upper(0.99).map(|v| v.min(self.max_ns))
    }

    /// The max as views show it: measured, raised to the mean where a racing kernel update
    /// left it below (`ShownMax`).
    pub fn shown_max(&self) -> super::ShownMax {
        super::ShownMax::of(self.count, self.total_ns, self.max_ns, false)
    }

    pub fn add(&mut self, other: &WaitHistogram) {
        self.count = self.count.saturating_add(other.count);
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.hist.add(&other.hist);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_quantiles() {
        let h = Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 90, 9, 1, 0, 0]);
        assert_eq!(h.buckets.len(), 13);
        assert_eq!(h.total(), 100);
        assert_eq!(h.quantile_upper(0.5), Some(2048));
        assert_eq!(h.quantile_upper(0.99), Some(4096));
        assert_eq!(h.quantile_upper(1.0), Some(8192));
        assert_eq!(Log2Histogram::default().quantile_upper(0.5), None);
    }

    #[test]
    fn more_buckets_than_bits_are_refused_and_labels_never_wrap() {
        let ok = format!("{{\"buckets\":{:?}}}", vec![1u64; 64]);
        assert_eq!(
            serde_json::from_str::<Log2Histogram>(&ok)
                .unwrap()
                .buckets
                .len(),
            64
        );
        let over = format!("{{\"buckets\":{:?}}}", vec![1u64; 65]);
        let err = serde_json::from_str::<Log2Histogram>(&over).unwrap_err();
        assert!(err.to_string().contains("has 65 buckets"), "{err}");
        assert_eq!(Log2Histogram::bucket_low(63), 1 << 63);
        assert_eq!(Log2Histogram::bucket_high(63), u64::MAX);
        // Past the last bucket the bounds saturate instead of wrapping back to small values.
        assert_eq!(Log2Histogram::bucket_low(64), u64::MAX);
        assert_eq!(Log2Histogram::bucket_low(70), u64::MAX);
        assert_eq!(Log2Histogram::bucket_high(usize::MAX), u64::MAX);
    }

    #[test]
    fn since_subtracts_and_add_sums() {
        let a = Log2Histogram::from_buckets(&[1, 2, 3]);
        let b = Log2Histogram::from_buckets(&[1, 5, 3, 4]);
        assert_eq!(b.since(&a).buckets, vec![0, 3, 0, 4]);
        let mut c = a.clone();
        c.add(&b);
        assert_eq!(c.buckets, vec![2, 7, 6, 4]);
    }

    #[test]
    fn p99_capped_by_max() {
        let w = WaitHistogram {
            count: 1,
            total_ns: 1500,
            max_ns: 1500,
            hist: Log2Histogram::from_buckets(&[0; 10]),
        };
        assert_eq!(w.p99_ns(), None);
        let mut raw = [0u64; 11];
        raw[10] = 1;
        let w = WaitHistogram {
            count: 1,
            total_ns: 1500,
            max_ns: 1500,
            hist: Log2Histogram::from_buckets(&raw),
        };
        assert_eq!(w.p99_ns(), Some(1500));
        assert_eq!(w.mean_ns(), Some(1500.0));
        let zeros = WaitHistogram {
            count: 5,
            total_ns: 0,
            max_ns: 0,
            hist: Log2Histogram::from_buckets(&[5]),
        };
        assert_eq!(zeros.p99_ns(), Some(0), "all-zero waits have a zero p99");
    }
}
