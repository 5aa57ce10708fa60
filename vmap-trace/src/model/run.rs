//! Running one simulation and summarizing it; running both designs side by side.

use anyhow::Context;
use serde::Serialize;

use crate::model::common::Core;
use crate::model::engine::{Design as EngineDesign, Engine, Load, OpKind};
use crate::model::env::{ns, to_ns, Env};
use crate::model::legacy::Legacy;
use crate::model::node::Node;
use crate::model::params::ModelParams;
use crate::model::stats::{summarize_locks, DesignCounters, LatencySummary, LockSummary};
use crate::model::workload::{assign_groups, Drive, Workload};
use crate::model::{env, Design, KernelVariant, LockKind, SetupPlan};

/// How long and with which seed to simulate, and which design.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunConfig {
    pub design: Design,
    /// Node-sharded variant (ignored for the legacy design).
    pub variant: KernelVariant,
    pub seed: u64,
    /// Minimum warm-up before measuring (simulated ms). Warm-up also lasts until the first purge
    /// has completed (node pools are filled by purges), but at most `MAX_WARMUP_MS`.
    pub warmup_ms: f64,
    /// Measured simulated time, ms.
    pub duration_ms: f64,
}

/// Upper bound of the warm-up when no purge happens (light loads).
pub const MAX_WARMUP_MS: f64 = 1000.0;

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            design: Design::Legacy,
            variant: KernelVariant::default(),
            seed: 1,
            warmup_ms: 10.0,
            duration_ms: 100.0,
        }
    }
}

/// Latency and rate of one operation kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    pub op: OpKind,
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// Iterations of one closed-loop thread group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupSummary {
    pub name: String,
    pub threads: u32,
    #[serde(flatten)]
    pub iteration: LatencySummary,
}

/// Everything one simulation reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    pub design: Design,
    /// Kernel versions this design stands for ("5.11..6.8", "6.9", "6.10", "mainline").
    pub kernel: String,
    pub cpus: u32,
    /// Workload threads (closed loop) or CPUs issuing requests (open loop).
    pub threads: u32,
    /// `nr_vmap_nodes` (node-sharded only).
    pub nodes: Option<u32>,
    pub cost_scale: f64,
    pub simulated_ms: f64,
    /// Closed-loop iterations per second, all groups.
    pub iterations_per_s: f64,
    pub ops: Vec<OpSummary>,
    pub groups: Vec<GroupSummary>,
    pub locks: Vec<LockSummary>,
    /// Share of the workload CPUs' time spent spinning on locks and contended lines.
    pub cpu_waiting_share: f64,
    pub counters: DesignCounters,
    pub alloc_failures: u64,
    /// Spinlock and atomic-line acquisitions simulated in the measured window.
    pub lock_operations: u64,
    /// Design actions the engine ran (in global time order), warm-up included: the
    /// unit of the simulation's own cost (host time per event, `cargo xtask bench model`).
    pub events: u64,
}

impl RunResult {
    pub fn op(&self, kind: OpKind) -> Option<&OpSummary> {
        self.ops.iter().find(|o| o.op == kind)
    }

    pub fn lock(&self, name: &str) -> Option<&LockSummary> {
        self.locks.iter().find(|l| l.name == name)
    }

    /// Mean iteration latency of the first group, ns (the pair latency for pair workloads).
    pub fn iteration_mean_ns(&self) -> f64 {
        self.groups.first().map_or(0.0, |g| g.iteration.mean_ns)
    }
}

/// Simulate one design on one configuration.
pub fn simulate(
    params: &ModelParams,
    workload: &Workload,
    cfg: &RunConfig,
) -> anyhow::Result<RunResult> {
    params.validate()?;
    workload
        .validate(Some(params.machine.cpus))
        .with_context(|| format!("workload {:?}", workload.name))?;
    anyhow::ensure!(
        cfg.duration_ms.is_finite() && cfg.duration_ms > 0.0 && cfg.duration_ms <= 60_000.0,
        "duration must be between 0 and 60000 ms of simulated time, got {}",
        cfg.duration_ms
    );
    anyhow::ensure!(
        cfg.warmup_ms.is_finite() && (0.0..=MAX_WARMUP_MS).contains(&cfg.warmup_ms),
        "warm-up must be between 0 and {MAX_WARMUP_MS} ms, got {}",
        cfg.warmup_ms
    );
    let cpus = params.machine.cpus;
    let (load, busy_cpus, plan_threads, group_threads) = match &workload.drive {
        Drive::Closed { threads, groups } => {
            let n = threads.unwrap_or(cpus);
            let thread_groups = assign_groups(groups, n);
            let placement = env::place_threads(params, n);
            let plan: Vec<(u32, usize)> = placement
                .iter()
                .copied()
                .zip(thread_groups.iter().copied())
                .collect();
            let counts: Vec<u32> = (0..groups.len())
                .map(|g| thread_groups.iter().filter(|&&x| x == g).count() as u32)
                .collect();
            let busy = placement.clone();
            (
                Load::Closed {
                    groups,
                    thread_groups,
                    cpus: placement,
                },
                busy,
                plan,
                counts,
            )
        }
        Drive::Open(spec) => (
            Load::Open { spec },
            (0..cpus).collect(),
            Vec::new(),
            Vec::new(),
        ),
    };
    let env = Env::new(params, &busy_cpus);
    let groups: &[crate::model::workload::ThreadGroup] = match &workload.drive {
        Drive::Closed { groups, .. } => groups,
        Drive::Open(_) => &[],
    };
    let plan = SetupPlan {
        threads: plan_threads
            .iter()
            .map(|&(cpu, g)| (cpu, &groups[g]))
            .collect(),
        boot_areas: params.kernel.boot_areas,
        boot_area_pages: params.kernel.boot_area_pages,
    };
    let kernel = match cfg.design {
        Design::Legacy => "5.11..6.8".to_string(),
        Design::NodeSharded => cfg.variant.name().to_string(),
    };
    let meta = Meta {
        design: cfg.design,
        kernel,
        params,
        groups,
        group_threads,
    };
    match cfg.design {
        Design::Legacy => {
            let design = Legacy::new(&env, &plan);
            drop(plan);
            run_engine(
                Engine::new(design, env, load, cfg.seed),
                cfg,
                Legacy::core,
                &meta,
            )
        }
        Design::NodeSharded => {
            let design = Node::new(&env, &plan, cfg.variant);
            drop(plan);
            run_engine(
                Engine::new(design, env, load, cfg.seed),
                cfg,
                Node::core,
                &meta,
            )
        }
    }
}

struct Meta<'a> {
    design: Design,
    kernel: String,
    params: &'a ModelParams,
    groups: &'a [crate::model::workload::ThreadGroup],
    group_threads: Vec<u32>,
}

fn run_engine<D: EngineDesign>(
    mut engine: Engine<'_, D>,
    cfg: &RunConfig,
    core: fn(&D) -> &Core,
    meta: &Meta<'_>,
) -> anyhow::Result<RunResult> {
    let warm = |d: &D| core(d).completed_purges > 0;
    engine.run(
        ns(cfg.warmup_ms * 1e6),
        ns(MAX_WARMUP_MS * 1e6),
        warm,
        ns(cfg.duration_ms * 1e6),
    )?;
    let duration = ns(cfg.duration_ms * 1e6);
    let core = core(&engine.design);
    let secs = cfg.duration_ms / 1e3;
    let ops = OpKind::ALL
        .iter()
        .filter(|&&k| engine.stats.op(k).count > 0)
        .map(|&k| OpSummary {
            op: k,
            latency: engine.stats.op(k).summary(duration),
        })
        .collect();
    let groups: Vec<GroupSummary> = meta
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| GroupSummary {
            name: g.name.clone(),
            threads: meta.group_threads[i],
            iteration: engine.stats.iteration(i).summary(duration),
        })
        .collect();
    let iterations: u64 = groups.iter().map(|g| g.iteration.count).sum();
    let locks = summarize_locks(&core.locks, &core.purge_mutex, duration);
    let spin_wait: f64 = locks
        .iter()
        .filter(|l| l.kind != LockKind::Mutex)
        .map(|l| l.wait_total_ns)
        .sum();
    let threads = engine.threads();
    Ok(RunResult {
        design: meta.design,
        kernel: meta.kernel.clone(),
        cpus: meta.params.machine.cpus,
        threads,
        nodes: (meta.design == Design::NodeSharded).then(|| meta.params.nodes()),
        cost_scale: meta.params.cost_scale,
        simulated_ms: cfg.duration_ms,
        iterations_per_s: iterations as f64 / secs,
        ops,
        groups,
        locks,
        cpu_waiting_share: spin_wait / (f64::from(threads.max(1)) * to_ns(duration)),
        counters: core.counters.clone(),
        alloc_failures: core.alloc_failures,
        lock_operations: core.locks.total_acquisitions(),
        events: engine.events,
    })
}

/// Both designs on the same configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub legacy: RunResult,
    pub node_sharded: RunResult,
}

/// Run both designs with the same workload, parameters and seed.
pub fn compare(
    params: &ModelParams,
    workload: &Workload,
    cfg: &RunConfig,
) -> anyhow::Result<Comparison> {
    let legacy = simulate(
        params,
        workload,
        &RunConfig {
            design: Design::Legacy,
            ..cfg.clone()
        },
    )?;
    let node_sharded = simulate(
        params,
        workload,
        &RunConfig {
            design: Design::NodeSharded,
            ..cfg.clone()
        },
    )?;
    Ok(Comparison {
        legacy,
        node_sharded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::workload::{LookupOffset, SizeClass, ThreadGroup};

    fn small(cpus: u32) -> ModelParams {
        ModelParams::default().with_cpus(cpus)
    }

    fn cfg(design: Design, variant: KernelVariant) -> RunConfig {
        RunConfig {
            design,
            variant,
            seed: 5,
            warmup_ms: 1.0,
            duration_ms: 10.0,
        }
    }

    fn group_workload(group: ThreadGroup, threads: u32) -> Workload {
        Workload {
            name: "test".into(),
            drive: Drive::Closed {
                threads: Some(threads),
                groups: vec![group],
            },
        }
    }

    fn per_alloc(r: &RunResult, lock: &str) -> f64 {
        let allocs = r.op(OpKind::Vmalloc).unwrap().latency.per_s;
        r.lock(lock).map_or(0.0, |l| l.acquisitions_per_s) / allocs
    }

    #[test]
    fn same_seed_same_numbers_other_seed_other_numbers() {
        let w = Workload::preset("pair").unwrap().with_threads(4).unwrap();
        let c = cfg(Design::NodeSharded, KernelVariant::V6_10);
        let a = serde_json::to_string(&simulate(&small(8), &w, &c).unwrap()).unwrap();
        let b = serde_json::to_string(&simulate(&small(8), &w, &c).unwrap()).unwrap();
        assert_eq!(a, b);
        let other = RunConfig { seed: 6, ..c };
        let d = serde_json::to_string(&simulate(&small(8), &w, &other).unwrap()).unwrap();
        assert_ne!(a, d);
    }

    #[test]
    fn legacy_takes_the_busy_lock_three_times_per_pair() {
        let w = Workload::preset("pair").unwrap().with_threads(2).unwrap();
        let r = simulate(&small(4), &w, &cfg(Design::Legacy, KernelVariant::V6_10)).unwrap();
        let busy = per_alloc(&r, "vmap_area_lock");
        assert!(
            (busy - 3.0).abs() < 0.01,
            "vmap_area_lock per vmalloc+vfree: {busy}"
        );
        let free = per_alloc(&r, "free_vmap_area_lock");
        assert!(
            (1.0..1.1).contains(&free),
            "free_vmap_area_lock per pair: {free}"
        );
        assert!((per_alloc(&r, "purge_vmap_area_lock") - 1.0).abs() < 0.01);
        assert!(r.counters.purges > 0, "lazy frees were purged");
    }

    #[test]
    fn node_busy_lock_twice_in_6_9_once_in_6_10() {
        let w = Workload::preset("pair").unwrap().with_threads(2).unwrap();
        let v69 = simulate(
            &small(4),
            &w,
            &cfg(Design::NodeSharded, KernelVariant::V6_9),
        )
        .unwrap();
        let v610 = simulate(
            &small(4),
            &w,
            &cfg(Design::NodeSharded, KernelVariant::V6_10),
        )
        .unwrap();
        let b69 = per_alloc(&v69, "vmap_node.busy.lock");
        let b610 = per_alloc(&v610, "vmap_node.busy.lock");
        assert!(
            (b69 - 3.0).abs() < 0.01,
            "6.9: insert + setup + unlink, got {b69}"
        );
        assert!(
            (b610 - 2.0).abs() < 0.01,
            "6.10: insert + unlink, got {b610}"
        );
        assert!(
            v610.counters.pool_hits > v610.counters.pool_misses,
            "{:?}",
            v610.counters
        );
    }

    #[test]
    fn lookups_scan_forward_in_6_10_and_backward_in_mainline() {
        let buffers = ThreadGroup {
            sizes: vec![SizeClass {
                pages: 16,
                align_pages: 1,
                weight: 1.0,
            }],
            lookups_per_alloc: 4.0,
            lookup_offset: LookupOffset::Uniform,
            ..ThreadGroup::default()
        };
        let w = group_workload(buffers, 2);
        let visits = |v| {
            let r = simulate(&small(16), &w, &cfg(Design::NodeSharded, v)).unwrap();
            r.counters.lookup_node_visits as f64
                / r.op(OpKind::Lookup).unwrap().latency.count as f64
        };
        let (forward, backward) = (
            visits(KernelVariant::V6_10),
            visits(KernelVariant::Mainline),
        );
        // An interior pointer one zone past va_start costs N = 16 round trips forward, 2 back.
        assert!(
            backward <= 2.0 + 1e-9,
            "mainline visits at most k+1 = 2 nodes, got {backward}"
        );
        assert!(
            forward > 3.0 * backward,
            "forward {forward} vs backward {backward}"
        );
    }

    #[test]
    fn open_loop_serves_the_offered_rate() {
        let w = Workload {
            name: "open".into(),
            drive: Drive::Open(crate::model::workload::OpenLoop {
                allocs_per_s: 400_000.0,
                ..Default::default()
            }),
        };
        let r = simulate(
            &small(4),
            &w,
            &RunConfig {
                duration_ms: 20.0,
                ..cfg(Design::Legacy, KernelVariant::V6_10)
            },
        )
        .unwrap();
        let rate = r.op(OpKind::Vmalloc).unwrap().latency.per_s;
        assert!((rate / 400_000.0 - 1.0).abs() < 0.05, "served {rate}/s");
        assert!(r.op(OpKind::Vfree).is_some());
    }

    #[test]
    fn vm_map_ram_uses_per_cpu_blocks() {
        let w = Workload::preset("vm-map-ram")
            .unwrap()
            .with_threads(2)
            .unwrap();
        for design in [Design::Legacy, Design::NodeSharded] {
            let r = simulate(&small(4), &w, &cfg(design, KernelVariant::V6_10)).unwrap();
            let maps = r.op(OpKind::VmMapRam).unwrap().latency.count as f64;
            let blocks = r
                .lock("free_vmap_area_lock")
                .map_or(0.0, |l| l.acquisitions_per_s)
                * 0.01;
            // One 1024-page block serves 256 four-page mappings.
            assert!(
                blocks < maps / 100.0,
                "{}: {blocks} free-tree visits for {maps} mappings",
                design.name()
            );
            assert!(r.op(OpKind::VmUnmapRam).is_some());
        }
    }

    #[test]
    fn exhausted_space_fails_allocations_without_panicking() {
        // 4 GiB areas that are never freed: the 32 TiB range is full after 8192 of them.
        let hoard = crate::model::workload::OpenLoop {
            allocs_per_s: 1_000_000.0,
            frees_per_alloc: 0.0,
            sizes: vec![SizeClass {
                pages: 1 << 20,
                align_pages: 1,
                weight: 1.0,
            }],
            ..Default::default()
        };
        let mut params = small(1);
        params.costs.page_alloc_ns = 0.0;
        params.costs.pte_map_ns = 0.0;
        let w = Workload {
            name: "hoard".into(),
            drive: Drive::Open(hoard),
        };
        let r = simulate(
            &params,
            &w,
            &RunConfig {
                duration_ms: 20.0,
                ..cfg(Design::Legacy, KernelVariant::V6_10)
            },
        )
        .unwrap();
        assert!(r.alloc_failures > 0);
    }

    #[test]
    fn bad_configurations_are_errors() {
        let w = Workload::preset("pair").unwrap().with_threads(9).unwrap();
        assert!(simulate(&small(8), &w, &RunConfig::default()).is_err());
        let w = Workload::preset("pair").unwrap();
        let zero = RunConfig {
            duration_ms: 0.0,
            ..RunConfig::default()
        };
        assert!(simulate(&small(8), &w, &zero).is_err());
    }
}
