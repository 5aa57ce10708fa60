//! Lock waits from the kernel's lock slow paths (the eBPF side is `vmap-trace-ebpf`'s
//! `slowpath.rs`): each slow path gets fentry/fexit, else kprobe/kretprobe, and keeps each
//! refusal's reason.
//!
//! Spinlock waits: `lock:contention_*` report a qspinlock wait only once it reaches the MCS
//! queue, so two-way waits, and the test-and-set spinning of VMs without paravirt spinlocks
//! (QEMU TCG, KVM without PV_UNHALT), never reach them. The slow path itself
//! (`native_queued_spin_lock_slowpath`, or `__pv_queued_spin_lock_slowpath` in KVM guests with
//! PV spinlocks) is entered for every contended spinlock acquisition. Both are probed and
//! their entries counted, so a recording says which one the kernel runs.
//!
//! Sleeping waits (mutex, PREEMPT_RT's rtmutex-based locks): the tracepoints report those
//! well, so their slow paths are probed only where the tracepoints are missing (5.10).
use aya::{maps::Array, maps::PerCpuArray, Btf, Ebpf};
use vmap_trace_common::slow_path;

use super::attach::{attach_best, MechanismChoice};
use super::links::Links;
use crate::kernel::{btf::KernelBtf, kallsyms::DataSymbols};
use crate::profile::{HookStatus, LockWaitSources, SlowPathEntries, WaitSource};

/// `--spin-waits`: where spinlock wait times come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SpinWaitChoice {
    /// The slow-path probes where the kernel allows kprobes or fentry, else the tracepoints.
    #[default]
    Auto,
    /// The qspinlock slow path (fentry, else kprobe); the tracepoints if it cannot be probed.
    SlowPath,
    /// lock:contention_begin/end only (they miss two-way waits, and every spinlock wait in
    /// VMs without paravirt spinlocks).
    Tracepoint,
}

impl SpinWaitChoice {
    pub fn label(self) -> &'static str {
        match self {
            SpinWaitChoice::Auto => "auto",
            SpinWaitChoice::SlowPath => "slow-path",
            SpinWaitChoice::Tracepoint => "tracepoint",
        }
    }
}

/// One slow path and its programs.
struct SlowPath {
    function: &'static str,
    source: u32,
    fentry: &'static str,
    fexit: &'static str,
    kprobe: &'static str,
    kretprobe: &'static str,
}

const SPIN_PATHS: [SlowPath; 2] = [
    SlowPath {
        function: "native_queued_spin_lock_slowpath",
        source: slow_path::NATIVE_SPIN,
        fentry: "fentry_native_spin_slowpath",
        fexit: "fexit_native_spin_slowpath",
        kprobe: "kprobe_native_spin_slowpath",
        kretprobe: "kretprobe_spin_slowpath",
    },
    SlowPath {
        function: "__pv_queued_spin_lock_slowpath",
        source: slow_path::PV_SPIN,
        fentry: "fentry_pv_spin_slowpath",
        fexit: "fexit_pv_spin_slowpath",
        kprobe: "kprobe_pv_spin_slowpath",
        kretprobe: "kretprobe_spin_slowpath",
    },
];

/// Non-RT kernels have the first, PREEMPT_RT kernels the other two (spinlock_t, mutex).
const SLEEPING_PATHS: [SlowPath; 3] = [
    SlowPath {
        function: "__mutex_lock_slowpath",
        source: slow_path::MUTEX,
        fentry: "fentry_mutex_slowpath",
        fexit: "fexit_mutex_slowpath",
        kprobe: "kprobe_mutex_slowpath",
        kretprobe: "kretprobe_sleeping_slowpath",
    },
    SlowPath {
        function: "rtlock_slowlock_locked",
        source: slow_path::RTLOCK,
        fentry: "fentry_rtlock_slowpath",
        fexit: "fexit_rtlock_slowpath",
        kprobe: "kprobe_rtlock_slowpath",
        kretprobe: "kretprobe_sleeping_slowpath",
    },
    SlowPath {
        function: "rt_mutex_slowlock",
        source: slow_path::RT_MUTEX,
        fentry: "fentry_rt_mutex_slowpath",
        fexit: "fexit_rt_mutex_slowpath",
        kprobe: "kprobe_rt_mutex_slowpath",
        kretprobe: "kretprobe_sleeping_slowpath",
    },
];

pub fn hook_label(function: &str) -> String {
    format!("slowpath:{function}")
}

/// What was attached: hook statuses and where each kind of wait comes from (entry counts
/// still zero: [`read_entries`] fills them).
pub struct Attached {
    pub hooks: Vec<HookStatus>,
    pub sources: LockWaitSources,
}

/// Attach the slow paths `choice` and the kernel call for. `contention_tracepoints`: whether
/// lock:contention_begin/end are attached.
#[allow(clippy::too_many_arguments)]
pub fn attach(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    kernel_btf: Option<&KernelBtf>,
    symbols: &DataSymbols,
    choice: SpinWaitChoice,
    mechanisms: MechanismChoice,
    contention_tracepoints: bool,
    links: &mut Links,
) -> Attached {
    let mut hooks = Vec::new();
    let mut slow_paths = Vec::new();
    let mut attach_one = |ebpf: &mut Ebpf, path: &SlowPath, hooks: &mut Vec<HookStatus>| {
        let symbol = symbols.resolve_function(path.function);
        // fentry needs the function in BTF under its own name (clones are not in BTF).
        let in_btf = kernel_btf.is_some_and(|b| b.has_function(path.function));
        let (mechanism, rejected) = attach_best(
            ebpf,
            btf,
            mechanisms,
            in_btf.then_some(path.function),
            symbol.as_deref(),
            (Some(path.fentry), Some(path.fexit)),
            (Some(path.kprobe), Some(path.kretprobe)),
            links,
        );
        hooks.push(HookStatus {
            hook: hook_label(path.function),
            mechanism,
            rejected,
        });
        if mechanism.is_some() {
            slow_paths.push(SlowPathEntries {
                function: path.function.to_string(),
                symbol: symbol.clone(),
                entries: 0,
                vmap_lock_entries: 0,
            });
        }
        mechanism.is_some()
    };

    let tracepoint_source = if contention_tracepoints {
        WaitSource::Tracepoints
    } else {
        WaitSource::Unavailable
    };
    let (spin, spin_reason) = if choice == SpinWaitChoice::Tracepoint {
        (tracepoint_source, "--spin-waits tracepoint".to_string())
    } else {
        let mut any = false;
        for path in &SPIN_PATHS {
            any |= attach_one(ebpf, path, &mut hooks);
        }
        let flag_set = any && set_spin_flag(ebpf).map_err(|e| log::warn!("{e}")).is_ok();
        if flag_set {
            (
                WaitSource::SlowPaths,
                format!(
                    "--spin-waits {}: the qspinlock slow path sees every contended spinlock \
                     acquisition, two-way waits included",
                    choice.label()
                ),
            )
        } else {
            (
                tracepoint_source,
                format!(
                    "--spin-waits {}: no qspinlock slow path could be probed (see its hooks)",
                    choice.label()
                ),
            )
        }
    };

    // Only where the tracepoints are missing: they report these waits, and both would count
    // each twice. A slow path this kernel does not have (RT vs non-RT) is not listed.
    let sleeping = if contention_tracepoints {
        WaitSource::Tracepoints
    } else {
        // rt_mutex_slowlock exists on every kernel (PI futexes); only PREEMPT_RT kernels,
        // which have rtlock_slowlock_locked, build spinlock_t and mutex on it.
        let preempt_rt = symbols.resolve_function("rtlock_slowlock_locked").is_some();
        let mut any = false;
        for path in &SLEEPING_PATHS {
            let wanted = match path.source {
                slow_path::MUTEX => !preempt_rt,
                _ => preempt_rt,
            };
            if wanted && symbols.resolve_function(path.function).is_some() {
                any |= attach_one(ebpf, path, &mut hooks);
            }
        }
        if any {
            WaitSource::SlowPaths
        } else {
            WaitSource::Unavailable
        }
    };
    Attached {
        hooks,
        sources: LockWaitSources {
            spin,
            sleeping,
            spin_reason,
            slow_paths,
        },
    }
}

/// Tell the programs that the slow path times spin waits: `contention_begin` then leaves
/// qspinlock begins alone. Set only once a slow path is attached, so no wait goes uncounted.
fn set_spin_flag(ebpf: &mut Ebpf) -> Result<(), String> {
    let map = ebpf
        .map_mut(slow_path::SPIN_WAITS_MAP)
        .ok_or_else(|| format!("map {} missing", slow_path::SPIN_WAITS_MAP))?;
    let mut map: Array<_, u32> = Array::try_from(map).map_err(|e| e.to_string())?;
    map.set(0, 1, 0)
        .map_err(|e| format!("setting {}: {e}", slow_path::SPIN_WAITS_MAP))
}

/// Fill each attached slow path's entry counts (summed over CPUs).
pub fn read_entries(ebpf: &Ebpf, sources: &mut LockWaitSources) -> anyhow::Result<()> {
    if sources.slow_paths.is_empty() {
        return Ok(());
    }
    let map = ebpf
        .map("SLOWPATH_ENTRIES")
        .ok_or_else(|| anyhow::anyhow!("map SLOWPATH_ENTRIES missing"))?;
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    let sum = |index: u32| -> anyhow::Result<u64> {
        Ok(map
            .get(&index, 0)?
            .iter()
            .fold(0u64, |a, v| a.saturating_add(*v)))
    };
    for entry in &mut sources.slow_paths {
        let Some(source) = source_of(&entry.function) else {
            continue;
        };
        entry.entries = sum(slow_path::entries_index(source, false))?;
        entry.vmap_lock_entries = sum(slow_path::entries_index(source, true))?;
    }
    Ok(())
}

fn source_of(function: &str) -> Option<u32> {
    SPIN_PATHS
        .iter()
        .chain(SLEEPING_PATHS.iter())
        .find(|p| p.function == function)
        .map(|p| p.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slow_path_has_its_own_counter() {
        let mut sources: Vec<u32> = SPIN_PATHS
            .iter()
            .chain(SLEEPING_PATHS.iter())
            .map(|p| p.source)
            .collect();
        sources.sort_unstable();
        sources.dedup();
        assert_eq!(sources.len(), SPIN_PATHS.len() + SLEEPING_PATHS.len());
        assert!(sources
            .iter()
            .all(|&s| slow_path::entries_index(s, true) < slow_path::ENTRY_COUNTERS));
        assert_eq!(source_of("__mutex_lock_slowpath"), Some(slow_path::MUTEX));
        assert_eq!(source_of("queued_spin_lock"), None);
    }

    #[test]
    fn entry_programs_are_per_slow_path_and_fentry_programs_unshared() {
        // fentry programs are bound to one target at load: sharing one would fail the second
        // attach. kprobe entries must differ too, or entries would count under one name.
        let all: Vec<&SlowPath> = SPIN_PATHS.iter().chain(SLEEPING_PATHS.iter()).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.fentry, b.fentry);
                assert_ne!(a.fexit, b.fexit);
                assert_ne!(a.kprobe, b.kprobe);
            }
        }
    }
}
