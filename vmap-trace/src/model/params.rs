//! Model parameters: the simulated machine, hardware latencies, CPU costs of each piece of kernel
//! work, and a few kernel settings. Every field has a documented default (docs/model.md); a TOML
//! file passed with `--params` overrides any subset.
//!
//! Only `cost_scale` is calibrated: it multiplies every [`CpuCosts`] field so that one measured
//! point (a single-thread latency) is reproduced. Hardware latencies (cache-line transfers, DRAM)
//! are not scaled by calibration; they describe the machine, not the kernel build.

use anyhow::{bail, ensure, Context};
use serde::{Deserialize, Serialize};

/// All parameters of one simulation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelParams {
    pub machine: Machine,
    pub hardware: Hardware,
    pub costs: CpuCosts,
    pub lines: SharedLines,
    pub kernel: KernelSetup,
    /// Calibrated multiplier of every `costs` field (1.0 = the defaults as written).
    pub cost_scale: f64,
}

/// The simulated machine. Defaults describe the published measurements' machine, an AMD Ryzen
/// Threadripper 3970X: 32 cores, 2 hardware threads per core, 4 cores per L3 (CCX).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Machine {
    /// Logical CPUs (online = possible). Numbered like Linux on x86: CPU `c` and `c + cores`
    /// are SMT siblings.
    pub cpus: u32,
    /// Hardware threads per core (1 = no SMT). Ignored when it does not divide `cpus`.
    pub threads_per_core: u32,
    /// Cores sharing one last-level cache.
    pub cores_per_llc: u32,
    /// `nr_vmap_nodes` override; `None` = the kernel's rule, `clamp(cpus, 1, 128)`.
    pub nodes: Option<u32>,
    /// Page size in bytes.
    pub page_size: u64,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            cpus: 64,
            threads_per_core: 2,
            cores_per_llc: 4,
            nodes: None,
            page_size: 4096,
        }
    }
}

/// Hardware latencies and behaviour; not touched by calibration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hardware {
    /// Moving a modified cache line between SMT siblings (shared L1/L2), ns.
    pub transfer_smt_ns: f64,
    /// Moving a modified cache line between cores of the same last-level cache, ns.
    pub transfer_llc_ns: f64,
    /// Moving a modified cache line between last-level caches when every core is busy, ns.
    pub transfer_remote_ns: f64,
    /// The same with a single busy core, ns. The data fabric drops to low-power states when
    /// lightly used, which makes cross-cache transfers slower; the model interpolates linearly
    /// in the number of busy cores between this and `transfer_remote_ns`. Set both equal to
    /// disable the effect.
    pub transfer_remote_idle_ns: f64,
    /// One rb-tree level that misses the caches and goes to DRAM, ns.
    pub dram_ns: f64,
    /// Tree nodes of one rb-tree that stay cached: levels below `log2` of this miss to DRAM.
    pub cached_tree_nodes: u64,
    /// CPU work runs this many times slower when the SMT sibling is busy too.
    pub smt_slowdown: f64,
    /// A sleeping mutex waiter is running again this long after the unlock, ns.
    pub mutex_wakeup_ns: f64,
    /// Coefficient of variation of every CPU cost (0 = deterministic). Each cost is drawn as
    /// `mean * (1 - cv + cv * Exp(1))`: mean preserved, standard deviation `cv * mean`.
    pub cost_cv: f64,
    /// Coefficient of variation of each cache-line transfer, drawn the same way.
    pub transfer_cv: f64,
    /// Transfers for a spinlock to reach its first waiter (qspinlock pending path: the release
    /// is seen, then the waiter's atomic takes the line). A free lock costs one.
    pub handoff_pending_transfers: f64,
    /// Transfers for a spinlock to reach a waiter queued behind another (MCS path: lock word,
    /// then the hand-over to the next MCS node before the section starts).
    pub handoff_queued_transfers: f64,
    /// Transfers a holder pays to get back a lock line shared with other lock words while one of
    /// those locks is busy (their holders and spinners take the line during the hold).
    pub shared_line_penalty_transfers: f64,
}

impl Default for Hardware {
    fn default() -> Self {
        Hardware {
            transfer_smt_ns: 20.0,
            transfer_llc_ns: 35.0,
            transfer_remote_ns: 50.0,
            transfer_remote_idle_ns: 110.0,
            dram_ns: 120.0,
            cached_tree_nodes: 8192,
            smt_slowdown: 1.4,
            mutex_wakeup_ns: 5000.0,
            cost_cv: 1.0,
            transfer_cv: 0.5,
            handoff_pending_transfers: 1.5,
            handoff_queued_transfers: 2.5,
            shared_line_penalty_transfers: 1.0,
        }
    }
}

/// The cost scales the model accepts. Outside them simulated time would barely advance per
/// event (a run would take forever) or a single lock section would outlast a run.
pub const COST_SCALE_RANGE: std::ops::RangeInclusive<f64> = 1e-3..=1e3;

/// CPU time of each piece of kernel work, ns, before `cost_scale`. Critical-section costs are the
/// fixed part; rb-tree walks add `tree_level_ns` per cached level (and `Hardware::dram_ns` per
/// level that misses), and shared cache lines add transfers (see [`SharedLines`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuCosts {
    /// vmalloc bookkeeping outside locks: `vm_struct` kzalloc, `vmap_area` slab alloc, preload.
    pub vmalloc_prepare_ns: f64,
    /// vfree/vunmap bookkeeping outside locks: kfree of `vm_struct`, flags, checks.
    pub vfree_prepare_ns: f64,
    /// Allocating one page for a vmalloc area.
    pub page_alloc_ns: f64,
    /// Freeing one page of a vmalloc area.
    pub page_free_ns: f64,
    /// Mapping one page (`vmap_pages_range`).
    pub pte_map_ns: f64,
    /// Unmapping one page (`vunmap_range_noflush`).
    pub pte_unmap_ns: f64,
    /// One cached rb-tree level of a walk (compare and follow a pointer).
    pub tree_level_ns: f64,
    /// Under `free_vmap_area_lock`: fit adjustment and augment update after the walk.
    pub free_fit_ns: f64,
    /// Busy-tree insert (`insert_vmap_area`) besides the walk.
    pub busy_insert_ns: f64,
    /// `setup_vmalloc_vm` under the busy lock.
    pub setup_vm_ns: f64,
    /// Busy-tree lookup and unlink (`find_unlink_vmap_area`) besides the walk.
    pub busy_unlink_ns: f64,
    /// Busy-tree lookup (`find_vmap_area`) besides the walk.
    pub lookup_ns: f64,
    /// Insert into the purge tree (legacy, merging) or a node's lazy tree, besides the walk.
    pub lazy_insert_ns: f64,
    /// Merging one area back into the free tree (purge, decay), besides the walk.
    pub free_merge_ns: f64,
    /// Pool list add or remove under `pool_lock`.
    pub pool_op_ns: f64,
    /// O(1) list detach or splice under a lock (purge splice, lazy detach, pool detach).
    pub list_splice_ns: f64,
    /// An atomic read-modify-write on a line this CPU already owns.
    pub atomic_ns: f64,
    /// `flush_tlb_kernel_range` at each purge (IPI round to all CPUs).
    pub tlb_flush_ns: f64,
    /// vm_map_ram / vm_unmap_ram bitmap work under the per-CPU vmap block lock.
    pub vmap_block_ns: f64,
}

impl Default for CpuCosts {
    fn default() -> Self {
        CpuCosts {
            vmalloc_prepare_ns: 90.0,
            vfree_prepare_ns: 50.0,
            page_alloc_ns: 60.0,
            page_free_ns: 50.0,
            pte_map_ns: 15.0,
            pte_unmap_ns: 15.0,
            tree_level_ns: 4.0,
            free_fit_ns: 40.0,
            busy_insert_ns: 35.0,
            setup_vm_ns: 10.0,
            busy_unlink_ns: 35.0,
            lookup_ns: 15.0,
            lazy_insert_ns: 30.0,
            free_merge_ns: 30.0,
            pool_op_ns: 15.0,
            list_splice_ns: 10.0,
            atomic_ns: 5.0,
            tlb_flush_ns: 3000.0,
            vmap_block_ns: 30.0,
        }
    }
}

impl CpuCosts {
    fn fields(&self) -> [(&'static str, f64); 19] {
        [
            ("vmalloc_prepare_ns", self.vmalloc_prepare_ns),
            ("vfree_prepare_ns", self.vfree_prepare_ns),
            ("page_alloc_ns", self.page_alloc_ns),
            ("page_free_ns", self.page_free_ns),
            ("pte_map_ns", self.pte_map_ns),
            ("pte_unmap_ns", self.pte_unmap_ns),
            ("tree_level_ns", self.tree_level_ns),
            ("free_fit_ns", self.free_fit_ns),
            ("busy_insert_ns", self.busy_insert_ns),
            ("setup_vm_ns", self.setup_vm_ns),
            ("busy_unlink_ns", self.busy_unlink_ns),
            ("lookup_ns", self.lookup_ns),
            ("lazy_insert_ns", self.lazy_insert_ns),
            ("free_merge_ns", self.free_merge_ns),
            ("pool_op_ns", self.pool_op_ns),
            ("list_splice_ns", self.list_splice_ns),
            ("atomic_ns", self.atomic_ns),
            ("tlb_flush_ns", self.tlb_flush_ns),
            ("vmap_block_ns", self.vmap_block_ns),
        ]
    }
}

/// Cache lines of the protected structure that a critical section modifies. When the previous
/// holder of the lock was another CPU, each of them moves (one transfer each) before the section
/// can finish: the part of the hold time that grows with cross-CPU traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedLines {
    pub free_fit: u32,
    pub busy_insert: u32,
    pub setup_vm: u32,
    pub busy_unlink: u32,
    pub lookup: u32,
    pub lazy_insert: u32,
    pub free_merge: u32,
    pub pool_op: u32,
    pub list_splice: u32,
    pub vmap_block: u32,
}

impl Default for SharedLines {
    fn default() -> Self {
        SharedLines {
            free_fit: 2,
            busy_insert: 1,
            setup_vm: 0,
            busy_unlink: 2,
            lookup: 0,
            lazy_insert: 1,
            free_merge: 2,
            pool_op: 1,
            list_splice: 1,
            vmap_block: 1,
        }
    }
}

/// Kernel state and configuration the model needs besides the design itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelSetup {
    /// Long-lived vmap areas present before the workload starts (kernel stacks, modules, ...).
    pub boot_areas: u32,
    /// Size of each boot area in pages, guard included.
    pub boot_area_pages: u32,
    /// Legacy purge: `cond_resched_lock()` drops `free_vmap_area_lock` between areas when someone
    /// waits for it (kernels with CONFIG_PREEMPTION, including PREEMPT_DYNAMIC distro kernels).
    /// `false` = the whole purge list is merged in one hold.
    pub purge_lock_break: bool,
    /// Legacy: `vmap_area_lock`, `free_vmap_area_lock` and `purge_vmap_area_lock` are static
    /// spinlocks defined a few lines apart (with the list heads between them), so their lock
    /// words share a cache line.
    pub legacy_locks_share_line: bool,
}

impl Default for KernelSetup {
    fn default() -> Self {
        KernelSetup {
            boot_areas: 2000,
            boot_area_pages: 5,
            purge_lock_break: true,
            legacy_locks_share_line: true,
        }
    }
}

impl ModelParams {
    /// Parameters from a TOML file; absent fields keep their defaults.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let params: ModelParams = toml::from_str(text).context("parsing model parameters")?;
        params.validate()?;
        Ok(params)
    }

    /// The same parameters on a machine with `cpus` logical CPUs.
    pub fn with_cpus(&self, cpus: u32) -> Self {
        let mut p = self.clone();
        p.machine.cpus = cpus;
        p
    }

    /// The same parameters with the calibrated cost scale set.
    pub fn with_cost_scale(&self, scale: f64) -> Self {
        let mut p = self.clone();
        p.cost_scale = scale;
        p
    }

    /// `nr_vmap_nodes` for this machine.
    pub fn nodes(&self) -> u32 {
        self.machine
            .nodes
            .unwrap_or_else(|| crate::model::space::nr_vmap_nodes(self.machine.cpus))
    }

    /// Reject values the simulation cannot run with, naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        let m = &self.machine;
        ensure!(
            (1..=4096).contains(&m.cpus),
            "machine.cpus must be 1..=4096, got {}",
            m.cpus
        );
        ensure!(
            m.threads_per_core >= 1,
            "machine.threads_per_core must be at least 1"
        );
        ensure!(
            m.cores_per_llc >= 1,
            "machine.cores_per_llc must be at least 1"
        );
        ensure!(
            m.page_size >= 4096 && m.page_size.is_power_of_two() && m.page_size <= (1 << 20),
            "machine.page_size must be a power of two between 4096 and 1 MiB, got {}",
            m.page_size
        );
        if let Some(n) = m.nodes {
            ensure!(
                (1..=crate::model::space::MAX_VMAP_NODES).contains(&n),
                "machine.nodes must be 1..=128, got {n}"
            );
        }
        let h = &self.hardware;
        for (name, v) in [
            ("transfer_smt_ns", h.transfer_smt_ns),
            ("transfer_llc_ns", h.transfer_llc_ns),
            ("transfer_remote_ns", h.transfer_remote_ns),
            ("transfer_remote_idle_ns", h.transfer_remote_idle_ns),
            ("dram_ns", h.dram_ns),
            ("mutex_wakeup_ns", h.mutex_wakeup_ns),
            ("handoff_pending_transfers", h.handoff_pending_transfers),
            ("handoff_queued_transfers", h.handoff_queued_transfers),
            (
                "shared_line_penalty_transfers",
                h.shared_line_penalty_transfers,
            ),
        ] {
            ensure!(
                v.is_finite() && v >= 0.0,
                "hardware.{name} must be a finite number >= 0, got {v}"
            );
        }
        ensure!(
            h.cached_tree_nodes >= 1,
            "hardware.cached_tree_nodes must be at least 1"
        );
        ensure!(
            h.smt_slowdown.is_finite() && h.smt_slowdown >= 1.0,
            "hardware.smt_slowdown must be >= 1, got {}",
            h.smt_slowdown
        );
        for (name, v) in [("cost_cv", h.cost_cv), ("transfer_cv", h.transfer_cv)] {
            ensure!(
                (0.0..=1.0).contains(&v),
                "hardware.{name} must be between 0 and 1, got {v}"
            );
        }
        for (name, v) in self.costs.fields() {
            ensure!(
                v.is_finite() && v >= 0.0,
                "costs.{name} must be a finite number >= 0, got {v}"
            );
        }
        if !(self.cost_scale.is_finite() && COST_SCALE_RANGE.contains(&self.cost_scale)) {
            bail!(
                "cost_scale must be between {} and {} (a machine 1000 times faster or slower \
                 than the reference), got {}",
                COST_SCALE_RANGE.start(),
                COST_SCALE_RANGE.end(),
                self.cost_scale
            );
        }
        ensure!(
            self.kernel.boot_area_pages >= 1,
            "kernel.boot_area_pages must be at least 1"
        );
        Ok(())
    }
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            machine: Machine::default(),
            hardware: Hardware::default(),
            costs: CpuCosts::default(),
            lines: SharedLines::default(),
            kernel: KernelSetup::default(),
            cost_scale: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let p = ModelParams::default();
        p.validate().unwrap();
        let text = toml::to_string(&p).unwrap();
        assert_eq!(ModelParams::from_toml_str(&text).unwrap(), p);
    }

    #[test]
    fn partial_toml_overrides_only_named_fields() {
        let p =
            ModelParams::from_toml_str("[machine]\ncpus = 8\n[hardware]\ncost_cv = 0.0\n").unwrap();
        assert_eq!(p.machine.cpus, 8);
        assert_eq!(p.hardware.cost_cv, 0.0);
        assert_eq!(p.costs, CpuCosts::default());
        assert_eq!(p.nodes(), 8);
    }

    #[test]
    fn bad_values_are_rejected_with_the_field_name() {
        let err = ModelParams::from_toml_str("[machine]\ncpus = 0\n").unwrap_err();
        assert!(format!("{err:#}").contains("machine.cpus"));
        let err = ModelParams::from_toml_str("[costs]\natomic_ns = -1.0\n").unwrap_err();
        assert!(format!("{err:#}").contains("costs.atomic_ns"));
        let err = ModelParams::from_toml_str("[machine]\nbogus = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("bogus"));
    }
}
