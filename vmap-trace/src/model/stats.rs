//! Statistics gathered during a run and the summary a run produces.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::model::engine::OpKind;
use crate::model::env::{to_ns, Ps};
use crate::model::lock::{new_ns_histogram, LockClass, LockKind, LockTable, SleepMutex};

/// Latencies of one kind of operation (or of one group's iterations).
#[derive(Debug)]
pub struct LatencyAgg {
    pub count: u64,
    pub total: Ps,
    pub hist: Histogram<u64>,
}

impl LatencyAgg {
    fn new() -> Self {
        LatencyAgg {
            count: 0,
            total: 0,
            hist: new_ns_histogram(),
        }
    }

    fn record(&mut self, latency: Ps) {
        self.count += 1;
        self.total += latency;
        self.hist.saturating_record(to_ns(latency) as u64);
    }

    /// Summary over `duration` of simulated time.
    pub fn summary(&self, duration: Ps) -> LatencySummary {
        let secs = to_ns(duration) / 1e9;
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
            p50_ns: self.hist.value_at_quantile(0.5) as f64,
            p99_ns: self.hist.value_at_quantile(0.99) as f64,
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
