//! The simulated machine as the engine sees it: time units, CPU topology (which CPUs share a
//! core or a last-level cache), where workload threads run, cache-line transfer latencies, and
//! the calibrated CPU costs converted for use.

use crate::model::draw::{mul_q32, ExpTable, Jitter, SimRng, TimeDraw};
use crate::model::params::{CpuCosts, ModelParams, SharedLines};
use crate::model::space::lazy_max_pages;

/// Simulated time in picoseconds: integer, so event order is exact and reproducible.
pub type Ps = u64;
pub const PS_PER_NS: f64 = 1000.0;

/// Marker for "no CPU has touched this line yet".
pub const NO_CPU: u32 = u32::MAX;

/// Convert nanoseconds to simulated time (rounded to the nearest picosecond).
#[inline(always)]
pub fn ns(v: f64) -> Ps {
    to_ps(v * PS_PER_NS + 0.5)
}

/// `ps as Ps`: truncated, 0 for negative values and NaN. Converting through i64 is one
/// instruction on x86-64 where the unsigned conversion takes several, and conversions are on
/// the path of every simulated step.
#[inline(always)]
pub fn to_ps(ps: f64) -> Ps {
    if ps < 9.0e18 {
        (ps as i64).max(0) as Ps
    } else {
        ps as Ps
    }
}

/// `t as f64` for times and durations, which stay far below 2^63 ps (same reason as
/// [`to_ps`]).
#[inline(always)]
pub fn ps_f64(t: Ps) -> f64 {
    debug_assert!(t < 1 << 63);
    t as i64 as f64
}

/// `t` scaled by `factor` (truncated), as `(t as f64 * factor) as Ps`.
#[inline(always)]
pub fn scale(t: Ps, factor: f64) -> Ps {
    to_ps(ps_f64(t) * factor)
}

/// Convert simulated time to nanoseconds.
pub fn to_ns(t: Ps) -> f64 {
    t as f64 / PS_PER_NS
}

/// The CPU costs of [`CpuCosts`] with the calibration scale applied, in picoseconds: means
/// that [`Env::cpu_work`] draws around.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    pub vmalloc_prepare: Ps,
    pub vfree_prepare: Ps,
    pub page_alloc: Ps,
    pub page_free: Ps,
    pub pte_map: Ps,
    pub pte_unmap: Ps,
    pub tree_level: Ps,
    pub free_fit: Ps,
    pub busy_insert: Ps,
    pub setup_vm: Ps,
    pub busy_unlink: Ps,
    pub lookup: Ps,
    pub lazy_insert: Ps,
    pub free_merge: Ps,
    pub pool_op: Ps,
    pub list_splice: Ps,
    pub atomic: Ps,
    pub tlb_flush: Ps,
    pub vmap_block: Ps,
}

impl Costs {
    fn new(c: &CpuCosts, scale: f64) -> Self {
        let ps = |v: f64| ns(v * scale);
        Costs {
            vmalloc_prepare: ps(c.vmalloc_prepare_ns),
            vfree_prepare: ps(c.vfree_prepare_ns),
            page_alloc: ps(c.page_alloc_ns),
            page_free: ps(c.page_free_ns),
            pte_map: ps(c.pte_map_ns),
            pte_unmap: ps(c.pte_unmap_ns),
            tree_level: ps(c.tree_level_ns),
            free_fit: ps(c.free_fit_ns),
            busy_insert: ps(c.busy_insert_ns),
            setup_vm: ps(c.setup_vm_ns),
            busy_unlink: ps(c.busy_unlink_ns),
            lookup: ps(c.lookup_ns),
            lazy_insert: ps(c.lazy_insert_ns),
            free_merge: ps(c.free_merge_ns),
            pool_op: ps(c.pool_op_ns),
            list_splice: ps(c.list_splice_ns),
            atomic: ps(c.atomic_ns),
            tlb_flush: ps(c.tlb_flush_ns),
            vmap_block: ps(c.vmap_block_ns),
        }
    }
}

/// How a lock's cache line reaches a CPU (qspinlock's paths, see [`crate::model::lock`]): the
/// number of transfers differs, so each has its own pre-scaled draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// One transfer: a free lock, an atomic, a protected data line.
    Once = 0,
    /// The first waiter (pending bit): `handoff_pending_transfers`.
    Pending = 1,
    /// A waiter queued behind another (MCS): `handoff_queued_transfers`.
    Queued = 2,
}

/// How far apart two CPUs are, for a cache-line transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Distance {
    Smt = 0,
    Llc = 1,
    Remote = 2,
}

/// Machine description and derived constants shared by every part of one simulation.
#[derive(Debug)]
pub struct Env {
    pub cpus: u32,
    pub nodes: u32,
    pub page_size: u64,
    pub lazy_max_pages: u64,
    /// CPU costs with the calibration scale applied.
    pub cost: Costs,
    pub lines: SharedLines,
    pub purge_lock_break: bool,
    /// Core and last-level cache of each CPU.
    core_of: Vec<u32>,
    llc_of: Vec<u32>,
    /// Per-CPU factor of CPU work: SMT slowdown (the sibling also runs a workload thread) and
    /// cost variability.
    work: Vec<Jitter>,
    /// Whether CPU costs vary (`cost_cv > 0`).
    work_varies: bool,
    transfer_smt: Ps,
    transfer_llc: Ps,
    transfer_remote: Ps,
    /// Transfer draws by hand-off kind and distance.
    transfers: [[TimeDraw; 3]; 3],
    /// What a lock holder pays to get back a lock line shared with a busy lock.
    shared_line_stolen: Ps,
    exp: ExpTable,
    dram: Ps,
    cached_levels: u32,
    mutex_wakeup: Ps,
    pub legacy_locks_share_line: bool,
}

impl Env {
    /// `busy_cpus` are the CPUs that run workload threads (they slow their SMT siblings).
    pub fn new(params: &ModelParams, busy_cpus: &[u32]) -> Self {
        let m = &params.machine;
        let tpc = if m.threads_per_core > 1 && m.cpus.is_multiple_of(m.threads_per_core) {
            m.threads_per_core
        } else {
            1
        };
        let cores = m.cpus / tpc;
        let mut occupied = vec![false; m.cpus as usize];
        for &c in busy_cpus {
            occupied[c as usize] = true;
        }
        let h = &params.hardware;
        let work = (0..m.cpus)
            .map(|c| {
                let sibling_busy = (0..tpc)
                    .map(|t| c % cores + t * cores)
                    .any(|s| s != c && occupied[s as usize]);
                let speed = if sibling_busy { h.smt_slowdown } else { 1.0 };
                Jitter::new(speed, h.cost_cv)
            })
            .collect();
        let busy_cores = {
            let mut cores_used: Vec<u32> = busy_cpus.iter().map(|c| c % cores).collect();
            cores_used.sort_unstable();
            cores_used.dedup();
            cores_used.len().max(1) as f64
        };
        let idle_share = if cores > 1 {
            (f64::from(cores) - busy_cores) / f64::from(cores - 1)
        } else {
            0.0
        };
        let transfer_remote_ns =
            h.transfer_remote_ns + (h.transfer_remote_idle_ns - h.transfer_remote_ns) * idle_share;
        let (smt, llc, remote) = (
            ns(h.transfer_smt_ns),
            ns(h.transfer_llc_ns),
            ns(transfer_remote_ns),
        );
        let transfers = [1.0, h.handoff_pending_transfers, h.handoff_queued_transfers]
            .map(|n| [smt, llc, remote].map(|mean| TimeDraw::new(mean, n, h.transfer_cv)));
        Env {
            cpus: m.cpus,
            nodes: params.nodes(),
            page_size: m.page_size,
            lazy_max_pages: lazy_max_pages(m.cpus, m.page_size),
            cost: Costs::new(&params.costs, params.cost_scale),
            lines: params.lines.clone(),
            purge_lock_break: params.kernel.purge_lock_break,
            core_of: (0..m.cpus).map(|c| c % cores).collect(),
            llc_of: (0..m.cpus).map(|c| (c % cores) / m.cores_per_llc).collect(),
            work,
            work_varies: h.cost_cv > 0.0,
            transfer_smt: smt,
            transfer_llc: llc,
            transfer_remote: remote,
            transfers,
            shared_line_stolen: scale(remote, h.shared_line_penalty_transfers),
            exp: ExpTable::new(),
            dram: ns(h.dram_ns),
            cached_levels: tree_levels(h.cached_tree_nodes),
            mutex_wakeup: ns(h.mutex_wakeup_ns),
            legacy_locks_share_line: params.kernel.legacy_locks_share_line,
        }
    }

    fn distance(&self, from: u32, to: u32) -> Distance {
        if self.core_of[from as usize] == self.core_of[to as usize] {
            Distance::Smt
        } else if self.llc_of[from as usize] == self.llc_of[to as usize] {
            Distance::Llc
        } else {
            Distance::Remote
        }
    }

    /// Time for a modified cache line to move from `from` to `to`.
    #[inline]
    pub fn transfer(&self, from: u32, to: u32) -> Ps {
        if from == to || from == NO_CPU {
            return 0;
        }
        match self.distance(from, to) {
            Distance::Smt => self.transfer_smt,
            Distance::Llc => self.transfer_llc,
            Distance::Remote => self.transfer_remote,
        }
    }

    /// The time for a lock's line (or a data line) to reach `to` from `from` by `handoff`, with
    /// the configured variability.
    #[inline(always)]
    pub fn transfer_sample(&self, from: u32, to: u32, handoff: Handoff, rng: &mut SimRng) -> Ps {
        if from == to || from == NO_CPU {
            return 0;
        }
        let d = self.distance(from, to);
        self.transfers[handoff as usize][d as usize].sample(&self.exp, rng)
    }

    /// What a holder pays to get its lock line back from the holders and spinners of a busy
    /// lock that shares it.
    pub fn shared_line_stolen(&self) -> Ps {
        self.shared_line_stolen
    }

    /// CPU work of mean `mean` on `cpu`: SMT slowdown and cost variability applied.
    #[inline(always)]
    pub fn cpu_work(&self, cpu: u32, mean: Ps, rng: &mut SimRng) -> Ps {
        if mean == 0 {
            return 0;
        }
        let jitter = self.work[cpu as usize];
        let factor = if self.work_varies {
            jitter.factor(self.exp.draw(rng))
        } else {
            jitter.mean_factor()
        };
        mul_q32(mean, factor)
    }

    /// Mean CPU time of a walk down an rb-tree of `nodes` nodes (cached levels only).
    #[inline]
    pub fn walk_cpu(&self, nodes: u64) -> Ps {
        Ps::from(tree_levels(nodes).min(self.cached_levels)) * self.cost.tree_level
    }

    /// Memory stall of a walk down an rb-tree of `nodes` nodes: the levels that miss the caches.
    pub fn walk_stall(&self, nodes: u64) -> Ps {
        u64::from(tree_levels(nodes).saturating_sub(self.cached_levels)) * self.dram
    }

    pub fn mutex_wakeup(&self) -> Ps {
        self.mutex_wakeup
    }
}

/// Levels of a balanced tree of `nodes` nodes: `floor(log2(nodes)) + 1`, 0 when empty.
pub fn tree_levels(nodes: u64) -> u32 {
    64 - nodes.leading_zeros()
}

/// Where workload threads run: spread over last-level caches first, then over the cores of each
/// cache, then over SMT siblings, the way the scheduler balances busy threads.
pub fn place_threads(params: &ModelParams, threads: u32) -> Vec<u32> {
    let m = &params.machine;
    let tpc = if m.threads_per_core > 1 && m.cpus.is_multiple_of(m.threads_per_core) {
        m.threads_per_core
    } else {
        1
    };
    let cores = m.cpus / tpc;
    let llcs = cores.div_ceil(m.cores_per_llc);
    let mut core_order = Vec::with_capacity(cores as usize);
    for slot in 0..m.cores_per_llc {
        for llc in 0..llcs {
            let core = llc * m.cores_per_llc + slot;
            if core < cores {
                core_order.push(core);
            }
        }
    }
    (0..threads)
        .map(|j| core_order[(j % cores) as usize] + (j / cores) * cores)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_spread_over_caches_then_cores_then_siblings() {
        let p = ModelParams::default(); // 64 CPUs, 32 cores, 4 cores per LLC: 8 LLCs
        let cpus = place_threads(&p, 64);
        assert_eq!(&cpus[..3], &[0, 4, 8]);
        assert_eq!(cpus[8], 1); // second core of the first LLC
        assert_eq!(cpus[32], 32); // sibling of CPU 0
        let mut sorted = cpus.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 64);
    }

    #[test]
    fn transfer_cost_depends_on_distance() {
        let p = ModelParams::default();
        let env = Env::new(&p, &[0]);
        assert_eq!(env.transfer(3, 3), 0);
        assert_eq!(env.transfer(0, 32), ns(p.hardware.transfer_smt_ns));
        assert_eq!(env.transfer(0, 1), ns(p.hardware.transfer_llc_ns));
        assert_eq!(env.transfer(NO_CPU, 4), 0);
        // One busy core: the fabric is idle, cross-cache transfers are slow.
        assert_eq!(env.transfer(0, 4), ns(p.hardware.transfer_remote_idle_ns));
        // Every core busy: the fast end.
        let all: Vec<u32> = (0..32).collect();
        let busy = Env::new(&p, &all);
        assert_eq!(busy.transfer(0, 4), ns(p.hardware.transfer_remote_ns));
        let half: Vec<u32> = (0..16).collect();
        let mid = Env::new(&p, &half).transfer(0, 4) as f64;
        assert!(
            mid > ns(p.hardware.transfer_remote_ns) as f64
                && mid < ns(p.hardware.transfer_remote_idle_ns) as f64
        );
    }

    #[test]
    fn smt_slowdown_applies_only_with_a_busy_sibling() {
        let mut p = ModelParams::default();
        p.hardware.cost_cv = 0.0;
        let env = Env::new(&p, &[0, 32, 1]);
        let mut rng = <SimRng as rand::SeedableRng>::seed_from_u64(1);
        assert_eq!(
            env.cpu_work(0, ns(100.0), &mut rng),
            ns(100.0 * p.hardware.smt_slowdown)
        );
        assert_eq!(env.cpu_work(1, ns(100.0), &mut rng), ns(100.0));
    }

    #[test]
    fn walks_miss_below_the_cached_levels() {
        let mut p = ModelParams::default();
        p.hardware.cached_tree_nodes = 1023; // 10 cached levels
        let env = Env::new(&p, &[]);
        assert_eq!(tree_levels(1), 1);
        assert_eq!(tree_levels(1024), 11);
        assert_eq!(env.walk_stall(1000), 0);
        assert_eq!(env.walk_stall(4096), 3 * ns(p.hardware.dram_ns));
        assert_eq!(env.walk_cpu(1 << 20), 10 * ns(p.costs.tree_level_ns));
    }
}
