//! Wait and hold times of the vmap locks themselves, from entry probes on the lock calls
//! (`_raw_spin_lock`/`_raw_spin_unlock`, `mutex_lock`/`mutex_unlock`) filtered in the kernel by
//! the vmap lock addresses. This sees the two-way spinlock waits that lock:contention_* never
//! report, at the cost of a probe on every lock call in the system: opt-in
//! (`record --lock-timing`), see docs/kernels.md for its measured cost.
//!
//! Entry kprobes only. Under QEMU's multi-threaded TCG, a kretprobe on `_raw_spin_lock`
//! crashed Debian's 6.1 (a return through NULL from scheduler_tick) and detaching an fexit
//! from it crashed 6.12 (int3 oops in the ftrace direct-call update); entry kprobes there still
//! faulted about once in 5-30 attach/detach cycles, while single-threaded TCG ran 105 cycles
//! clean (docs/kernels.md). Real hardware cannot be tested here, so the conservative choice
//! stays. The acquisition time is derived from release times instead (see the eBPF side):
//! exact for spinlocks; for a mutex, a woken waiter's wake-up latency is counted as hold
//! rather than wait.
use aya::{maps::HashMap, Ebpf};

use super::attach::kprobe_pair;
use crate::kernel::{kallsyms::DataSymbols, vmap_locks::VmapLockTable};
use crate::profile::{HookStatus, Mechanism, Rejection};

struct LockFamily {
    label: &'static str,
    acquire: &'static str,
    release: &'static str,
    /// PREEMPT_RT's pair, used where the kernel has it: there `spinlock_t` (every vmap
    /// spinlock) is an rtmutex taken by `rt_spin_lock`, and `_raw_spin_lock` only ever sees
    /// raw spinlocks, so the vmap locks would never show.
    rt: Option<(&'static str, &'static str)>,
}

const FAMILIES: [LockFamily; 2] = [
    LockFamily {
        label: "lock-timing:spinlock",
        acquire: "_raw_spin_lock",
        release: "_raw_spin_unlock",
        rt: Some(("rt_spin_lock", "rt_spin_unlock")),
    },
    LockFamily {
        label: "lock-timing:mutex",
        acquire: "mutex_lock",
        release: "mutex_unlock",
        rt: None,
    },
];

const FENTRY_REFUSED: &str =
    "not used for lock primitives: fexit/kretprobe on _raw_spin_lock crashed test kernels";

/// Fill the address filter and attach. Returns one hook status per lock family.
pub fn attach(
    ebpf: &mut Ebpf,
    symbols: &DataSymbols,
    table: &VmapLockTable,
    links: &mut super::links::Links,
) -> Vec<HookStatus> {
    if table.locks.is_empty() {
        let reason = format!(
            "no vmap lock could be located: {}",
            table.problems.join("; ")
        );
        return FAMILIES
            .iter()
            .map(|f| HookStatus {
                hook: f.label.into(),
                mechanism: None,
                rejected: vec![Rejection::new(Mechanism::Kprobe, reason.clone())],
            })
            .collect();
    }
    if let Err(e) = fill_filter(ebpf, table) {
        return FAMILIES
            .iter()
            .map(|f| HookStatus {
                hook: f.label.into(),
                mechanism: None,
                rejected: vec![Rejection::new(Mechanism::Kprobe, e.clone())],
            })
            .collect();
    }
    FAMILIES
        .iter()
        .map(|f| {
            let mut rejected = vec![Rejection::new(Mechanism::Fentry, FENTRY_REFUSED)];
            let (acquire_name, release_name) = match f.rt {
                Some((a, r))
                    if symbols.resolve_function(a).is_some()
                        && symbols.resolve_function(r).is_some() =>
                {
                    (a, r)
                }
                _ => (f.acquire, f.release),
            };
            let Some(acquire) = symbols.resolve_function(acquire_name) else {
                rejected.push(Rejection::new(
                    Mechanism::Kprobe,
                    format!("{acquire_name} is not in kallsyms"),
                ));
                return HookStatus {
                    hook: f.label.into(),
                    mechanism: None,
                    rejected,
                };
            };
            // Both the lock and the release call are needed: timings are computed at release.
            let Some(release) = symbols.resolve_function(release_name) else {
                let reason =
                    format!("{release_name} is not an out-of-line function here (inlined)");
                rejected.push(Rejection::new(Mechanism::Kprobe, reason));
                return HookStatus {
                    hook: f.label.into(),
                    mechanism: None,
                    rejected,
                };
            };
            let attached = kprobe_pair(ebpf, &release, Some("kprobe_lock_release"), None, links)
                .and_then(|()| {
                    kprobe_pair(ebpf, &acquire, Some("kprobe_lock_acquire"), None, links)
                });
            if let Err(refusal) = attached {
                rejected.push(refusal.into_rejection(Mechanism::Kprobe));
                return HookStatus {
                    hook: f.label.into(),
                    mechanism: None,
                    rejected,
                };
            }
            HookStatus {
                hook: f.label.into(),
                mechanism: Some(Mechanism::Kprobe),
                rejected,
            }
        })
        .collect()
}

fn fill_filter(ebpf: &mut Ebpf, table: &VmapLockTable) -> Result<(), String> {
    let map = ebpf.map_mut("VMAP_LOCKS").ok_or("map VMAP_LOCKS missing")?;
    let mut map: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(|e| e.to_string())?;
    for (id, lock) in table.locks.iter().enumerate() {
        map.insert(lock.addr, id as u32, 0)
            .map_err(|e| format!("filling the vmap lock filter: {e}"))?;
    }
    Ok(())
}

/// Read wait and hold stats per lock id.
pub fn read(
    ebpf: &Ebpf,
) -> anyhow::Result<std::collections::HashMap<u32, vmap_trace_common::LockTiming>> {
    let map = ebpf
        .map("LOCK_TIMING")
        .ok_or_else(|| anyhow::anyhow!("map LOCK_TIMING missing"))?;
    let map: HashMap<_, u32, vmap_trace_common::LockTiming> = HashMap::try_from(map)?;
    let mut out = std::collections::HashMap::new();
    for entry in map.iter() {
        let (k, v) = entry?;
        out.insert(k, v);
    }
    Ok(out)
}
