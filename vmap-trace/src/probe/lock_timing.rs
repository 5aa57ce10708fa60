//! Wait and hold times of the vmap locks themselves, measured around the lock calls
//! (`_raw_spin_lock`/`_raw_spin_unlock`, `mutex_lock`/`mutex_unlock`) and filtered in the
//! kernel by the vmap lock addresses. This sees the two-way spinlock waits that
//! lock:contention_* never report, at the cost of a probe on every lock call in the system:
//! opt-in (`record --lock-timing`), see docs/performance.md.
use aya::{maps::HashMap, Btf, Ebpf};

use super::attach::{attach_best, MechanismChoice};
use crate::kernel::{btf::KernelBtf, kallsyms::DataSymbols, vmap_locks::VmapLockTable};
use crate::profile::{HookStatus, Mechanism, Rejection};

struct LockFamily {
    label: &'static str,
    acquire: &'static str,
    release: &'static str,
    fentry: &'static str,
    fexit: &'static str,
    fentry_release: &'static str,
}

const FAMILIES: [LockFamily; 2] = [
    LockFamily {
        label: "lock-timing:spinlock",
        acquire: "_raw_spin_lock",
        release: "_raw_spin_unlock",
        fentry: "fentry_spin_lock",
        fexit: "fexit_spin_lock",
        fentry_release: "fentry_spin_unlock",
    },
    LockFamily {
        label: "lock-timing:mutex",
        acquire: "mutex_lock",
        release: "mutex_unlock",
        fentry: "fentry_mutex_lock",
        fexit: "fexit_mutex_lock",
        fentry_release: "fentry_mutex_unlock",
    },
];

/// Fill the address filter and attach. Returns one hook status per lock family.
pub fn attach(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    kernel_btf: Option<&KernelBtf>,
    symbols: &DataSymbols,
    table: &VmapLockTable,
    choice: MechanismChoice,
) -> Vec<HookStatus> {
    if table.locks.is_empty() {
        let reason = format!("no vmap lock could be located: {}", table.problems.join("; "));
        return FAMILIES
            .iter()
            .map(|f| HookStatus {
                hook: f.label.into(),
                mechanism: None,
                rejected: vec![Rejection { mechanism: Mechanism::Kprobe, reason: reason.clone() }],
            })
            .collect();
    }
    if let Err(e) = fill_filter(ebpf, table) {
        return FAMILIES
            .iter()
            .map(|f| HookStatus { hook: f.label.into(), mechanism: None, rejected: vec![Rejection { mechanism: Mechanism::Kprobe, reason: e.clone() }] })
            .collect();
    }
    FAMILIES
        .iter()
        .map(|f| {
            let in_btf = |name| kernel_btf.is_some_and(|b| b.has_function(name));
            let acquire_sym = symbols.resolve_function(f.acquire);
            let release_sym = symbols.resolve_function(f.release);
            // Acquire first (entry + return), then release; both needed for hold times.
            let (mechanism, mut rejected) = attach_best(
                ebpf,
                btf,
                choice,
                in_btf(f.acquire).then_some(f.acquire),
                acquire_sym.as_deref(),
                (Some(f.fentry), Some(f.fexit)),
                (Some("kprobe_lock_acquire"), Some("kretprobe_lock_acquire")),
            );
            let release = match mechanism {
                None => None,
                Some(Mechanism::Fentry) => btf.map(|b| super::attach::fentry_pair(ebpf, b, f.release, Some(f.fentry_release), None)),
                Some(_) => release_sym.as_deref().map(|s| super::attach::kprobe_pair(ebpf, s, Some("kprobe_lock_release"), None)),
            };
            if let Some(Err(e)) = release {
                rejected.push(Rejection { mechanism: mechanism.unwrap_or(Mechanism::Kprobe), reason: format!("{} not probed, no hold times: {e}", f.release) });
            } else if mechanism.is_some() && release.is_none() {
                rejected.push(Rejection {
                    mechanism: Mechanism::Kprobe,
                    reason: format!("{} is not an out-of-line function here (inlined): no hold times", f.release),
                });
            }
            HookStatus { hook: f.label.into(), mechanism, rejected }
        })
        .collect()
}

fn fill_filter(ebpf: &mut Ebpf, table: &VmapLockTable) -> Result<(), String> {
    let map = ebpf.map_mut("VMAP_LOCKS").ok_or("map VMAP_LOCKS missing")?;
    let mut map: HashMap<_, u64, u32> = HashMap::try_from(map).map_err(|e| e.to_string())?;
    for (id, lock) in table.locks.iter().enumerate() {
        map.insert(lock.addr, id as u32, 0).map_err(|e| format!("filling the vmap lock filter: {e}"))?;
    }
    Ok(())
}

/// Read wait and hold stats per lock id.
pub fn read(ebpf: &Ebpf) -> anyhow::Result<std::collections::HashMap<u32, vmap_trace_common::LockTiming>> {
    let map = ebpf.map("LOCK_TIMING").ok_or_else(|| anyhow::anyhow!("map LOCK_TIMING missing"))?;
    let map: HashMap<_, u32, vmap_trace_common::LockTiming> = HashMap::try_from(map)?;
    let mut out = std::collections::HashMap::new();
    for entry in map.iter() {
        let (k, v) = entry?;
        out.insert(k, v);
    }
    Ok(out)
}
