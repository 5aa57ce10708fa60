//! Statistics gathered during a run and the summary a run produces.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::model::engine::OpKind;
use crate::model::env::{to_ns, Ps};
use crate::model::lock::{LockClass, LockKind, LockTable, SleepMutex};

/// Highest latency a histogram tells apart (one hour), ns.
const HIGHEST_NS: u64 = 3_600_000_000_000;
/// HdrHistogram with 2 significant digits keeps 256 sub-buckets per power of two: half of them
/// (`1 << 7`) are new in each bucket after the first.
const HALF_SUB_BUCKETS_LOG2: u32 = 7;
/// HdrHistogram's `leading_zero_count_base` for a lowest value of 1 and 256 sub-buckets.
const LEADING_ZERO_BASE: u32 = 64 - 8;

/// A latency histogram in nanoseconds with 2 significant digits (1% resolution).
///
/// It counts into HdrHistogram's own buckets (same index formula) and builds the
/// [`Histogram`] only when a quantile is asked for, so every quantile is exactly the
/// HdrHistogram one. Recording is on the path of every simulated lock acquisition, and
/// HdrHistogram's general recording (resizing, clamping, min/max and total tracking) cost
/// about a tenth of a simulation.
#[derive(Debug)]
pub struct NsHistogram {
    counts: Vec<u64>,
}

impl NsHistogram {
    pub fn new() -> Self {
        NsHistogram {
            counts: vec![0; hdr_histogram().distinct_values()],
        }
    }

    /// Count `latency`, truncated to whole nanoseconds.
    #[inline]
    pub fn record(&mut self, latency: Ps) {
        // Integer division: the same value as `to_ns(latency) as u64` below 2^53 ps.
        let i = bucket_index(latency / 1000).min(self.counts.len() - 1);
        self.counts[i] += 1;
    }

    pub fn reset(&mut self) {
        self.counts.fill(0);
    }

    /// The HdrHistogram of the values recorded (each at its bucket's lowest value).
    pub fn to_hdr(&self) -> Histogram<u64> {
        let mut h = hdr_histogram();
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                h.record_n(bucket_lowest_value(i), n)
                    .expect("bucket values are in range");
            }
        }
        h
    }

    pub fn value_at_quantile(&self, quantile: f64) -> u64 {
        self.to_hdr().value_at_quantile(quantile)
    }
}

fn hdr_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 2).expect("valid histogram bounds")
}

/// HdrHistogram's `index_for` for a lowest value of 1 and 2 significant digits.
#[inline]
fn bucket_index(ns: u64) -> usize {
    let bucket = LEADING_ZERO_BASE - (ns | 0xff).leading_zeros();
    let sub_bucket = (ns >> bucket) as usize;
    ((bucket as usize + 1) << HALF_SUB_BUCKETS_LOG2) + sub_bucket - (1 << HALF_SUB_BUCKETS_LOG2)
}

/// HdrHistogram's `value_for`: the lowest value of bucket index `i`.
fn bucket_lowest_value(i: usize) -> u64 {
    let half = 1usize << HALF_SUB_BUCKETS_LOG2;
    let bucket = (i >> HALF_SUB_BUCKETS_LOG2) as i64 - 1;
    let sub_bucket = (i & (half - 1)) + half;
    if bucket < 0 {
        (sub_bucket - half) as u64
    } else {
        (sub_bucket as u64) << bucket
    }
}

/// Latencies of one kind of operation (or of one group's iterations).
#[derive(Debug)]
pub struct LatencyAgg {
    pub count: u64,
    pub total: Ps,
    pub hist: NsHistogram,
}

impl LatencyAgg {
    fn new() -> Self {
        LatencyAgg {
            count: 0,
            total: 0,
            hist: NsHistogram::new(),
        }
    }

    fn record(&mut self, latency: Ps) {
        self.count += 1;
        self.total += latency;
        self.hist.record(latency);
    }

    /// Summary over `duration` of simulated time.
    pub fn summary(&self, duration: Ps) -> LatencySummary {
        let secs = to_ns(duration) / 1e9;
        let hist = self.hist.to_hdr();
        LatencySummary {
            count: self.count,
            per_s: if secs > 0.0 {
                self.count as f64 / secs
            } else {
                0.0
            },
            mean_ns: if self.count > 0 {
                to_ns(self.total) / self.count as f64
            } else {
                0.0
            },
            p50_ns: hist.value_at_quantile(0.5) as f64,
            p99_ns: hist.value_at_quantile(0.99) as f64,
        }
    }
}

/// Operation latencies of one run.
#[derive(Debug)]
pub struct OpStats {
    ops: Vec<LatencyAgg>,
    iterations: Vec<LatencyAgg>,
}

impl OpStats {
    pub fn new(groups: usize) -> Self {
        OpStats {
            ops: OpKind::ALL.iter().map(|_| LatencyAgg::new()).collect(),
            iterations: (0..groups).map(|_| LatencyAgg::new()).collect(),
        }
    }

    pub fn groups(&self) -> usize {
        self.iterations.len()
    }

    pub fn record_op(&mut self, kind: OpKind, latency: Ps) {
        self.ops[kind as usize].record(latency);
    }

    pub fn record_iteration(&mut self, group: usize, latency: Ps) {
        self.iterations[group].record(latency);
    }

    pub fn op(&self, kind: OpKind) -> &LatencyAgg {
        &self.ops[kind as usize]
    }

    pub fn iteration(&self, group: usize) -> &LatencyAgg {
        &self.iterations[group]
    }
}

/// Count, rate and latency of one kind of operation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub per_s: f64,
    pub mean_ns: f64,
    pub p50_ns: f64,
    pub p99_ns: f64,
}

/// One lock (all instances of it) over a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LockSummary {
    pub name: String,
    pub kind: LockKind,
    pub instances: u32,
    pub acquisitions_per_s: f64,
    /// Share of acquisitions that found the lock held.
    pub contended_share: f64,
    /// Mean over instances of the share of time held.
    pub utilization: f64,
    /// Share of time the busiest instance was held.
    pub max_instance_utilization: f64,
    /// Request to grant, including the line hand-off.
    pub wait_mean_ns: f64,
    pub wait_p99_ns: f64,
    /// Total waiting over the run, ns (spinning, or sleeping for the mutex).
    pub wait_total_ns: f64,
    /// Part of `wait_total_ns` spent by acquisitions that found the lock held.
    pub contended_wait_total_ns: f64,
    pub hold_mean_ns: f64,
}

fn summarize_class(class: &LockClass, max_hold: Ps, duration: Ps) -> LockSummary {
    let secs = to_ns(duration) / 1e9;
    let n = class.acquisitions.max(1) as f64;
    LockSummary {
        name: class.name.to_string(),
        kind: class.kind,
        instances: class.instances,
        acquisitions_per_s: class.acquisitions as f64 / secs,
        contended_share: class.contended as f64 / n,
        utilization: class.hold_total as f64 / (duration as f64 * f64::from(class.instances)),
        max_instance_utilization: max_hold as f64 / duration as f64,
        wait_mean_ns: to_ns(class.wait_total) / n,
        wait_p99_ns: class.wait_hist.value_at_quantile(0.99) as f64,
        wait_total_ns: to_ns(class.wait_total),
        contended_wait_total_ns: to_ns(class.contended_wait_total),
        hold_mean_ns: to_ns(class.hold_total) / n,
    }
}

/// Summaries of every spinlock, contended line and the mutex of a design.
pub fn summarize_locks(table: &LockTable, mutex: &SleepMutex, duration: Ps) -> Vec<LockSummary> {
    let max = table.max_instance_hold();
    let mut out: Vec<LockSummary> = table
        .classes()
        .iter()
        .zip(max)
        .filter(|(c, _)| c.acquisitions > 0)
        .map(|(c, m)| summarize_class(c, m, duration))
        .collect();
    if mutex.stats.acquisitions > 0 {
        out.push(summarize_class(
            &mutex.stats,
            mutex.stats.hold_total,
            duration,
        ));
    }
    out
}

/// Design-specific event counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DesignCounters {
    pub purges: u64,
    pub purged_areas: u64,
    /// Node-sharded: allocations served from a node pool.
    pub pool_hits: u64,
    /// Node-sharded: poolable allocations that went to the global free tree.
    pub pool_misses: u64,
    /// Node-sharded: purge helpers started on other CPUs.
    pub purge_helpers: u64,
    /// Node-sharded: busy-lock round trips of `find_vmap_area` scans.
    pub lookup_node_visits: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn ns_histogram_matches_hdrhistogram() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut ours = NsHistogram::new();
        let mut reference = hdr_histogram();
        for i in 0..200_000u64 {
            // Every magnitude from 0 ps to about an hour, and the bucket edges exactly.
            let ps = match i % 3 {
                0 => {
                    let magnitude = rng.random_range(1..52);
                    rng.random_range(0..1u64 << magnitude)
                }
                1 => (1u64 << (i % 42)) * 1000,
                _ => ((1u64 << (i % 42)) - 1) * 1000 + 999,
            };
            ours.record(ps);
            reference.saturating_record(to_ns(ps) as u64);
        }
        let converted = ours.to_hdr();
        let recorded = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        assert_eq!(recorded(&converted), recorded(&reference));
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                ours.value_at_quantile(q),
                reference.value_at_quantile(q),
                "q {q}"
            );
        }
    }
}
