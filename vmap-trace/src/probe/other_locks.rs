//! `--sample-other-locks`: which contentions the kernel side times in full.
//!
//! The vmap locks are always timed. Other locks' contentions are the context a vmap-lock
//! problem is judged against (`top`'s verdict, the report's share of waiting), but under a
//! workload that contends on them heavily (tty_mutex under `stress pty`: 1.3 contentions per
//! operation) timing every one was most of what tracing cost. So, per CPU, one contention of
//! other locks in N is timed and counted N times; the rest cost a counter increment. Totals
//! stay within N per CPU; how they split between the other locks, and their wait times, are
//! estimates. Where the vmap locks cannot all be located (kallsyms without data symbols),
//! nothing is sampled, since sampling could then hit a vmap lock, unless the user accepts that
//! (`--sample-unlocated`).
use vmap_trace_common::STATIC_VMAP_LOCKS;

use crate::kernel::vmap_locks::VmapLockTable;

/// What the kernel side was told, resolved from the request and the vmap locks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherLockSampling {
    /// One contention in `period` of other locks is timed (1: every one, nothing sampled).
    pub period: u32,
    /// The static vmap locks, 0 where unused.
    pub static_locks: [u64; STATIC_VMAP_LOCKS],
    /// The `vmap_nodes` array's locks as an address range, `start..end` (empty: none).
    pub nodes: std::ops::Range<u64>,
    /// Why sampling was requested but not applied (`period` 1), or, with
    /// `--sample-unlocated`, why vmap locks may be sampled too.
    pub caveat: Option<String>,
}

impl OtherLockSampling {
    /// Every contention timed.
    pub fn exact(caveat: Option<String>) -> Self {
        OtherLockSampling {
            period: 1,
            static_locks: [0; STATIC_VMAP_LOCKS],
            nodes: 0..0,
            caveat,
        }
    }

    /// Sample other locks one in `requested` (0 or 1: no sampling) if `table` names every
    /// vmap lock of the running kernel, or anyway with `unlocated` (the vmap locks not
    /// located are then sampled like other locks).
    pub fn resolve(requested: u32, table: &VmapLockTable, unlocated: bool) -> Self {
        let (nodes, statics): (Vec<_>, Vec<_>) = table
            .locks
            .iter()
            .partition(|l| l.name.starts_with("vmap_node["));
        if statics.len() > STATIC_VMAP_LOCKS {
            return Self::exact(Some(format!(
                "{} static vmap locks, room for {STATIC_VMAP_LOCKS}",
                statics.len()
            )));
        }
        let mut static_locks = [0; STATIC_VMAP_LOCKS];
        for (slot, lock) in static_locks.iter_mut().zip(&statics) {
            *slot = lock.addr;
        }
        // The node locks lie inside the vmap_nodes array, which holds no other lock: the range
        // from the first to the last one names them all.
        let nodes = match (
            nodes.iter().map(|l| l.addr).min(),
            nodes.iter().map(|l| l.addr).max(),
        ) {
            (Some(lo), Some(hi)) => lo..hi + 1,
            _ => 0..0,
        };
        // The located locks are passed on even when nothing is sampled: the slow-path probes
        // time sleeping waits of vmap locks only (probe/slowpath.rs).
        let located = |period, caveat| OtherLockSampling {
            period,
            static_locks,
            nodes: nodes.clone(),
            caveat,
        };
        if requested <= 1 {
            return located(1, None);
        }
        let missing = if !table.problems.is_empty() {
            Some(format!(
                "not all vmap locks could be located ({})",
                table.problems.join("; ")
            ))
        } else if table.locks.is_empty() {
            Some("no vmap lock could be located".into())
        } else {
            None
        };
        match missing {
            Some(why) if !unlocated => located(1, Some(why)),
            Some(why) => located(
                requested,
                Some(format!(
                    "{why}; with --sample-unlocated the vmap locks not located are sampled like other locks"
                )),
            ),
            None => located(requested, None),
        }
    }

    /// Whether the kernel side (`is_vmap_lock` in the eBPF program) counts `addr` as a vmap
    /// lock: the tests' statement of what the addresses and range encode.
    #[cfg(test)]
    fn is_vmap_lock(&self, addr: u64) -> bool {
        addr != 0 && (self.static_locks.contains(&addr) || self.nodes.contains(&addr))
    }

    /// What a user should know about it, for the recording's notes.
    pub fn note(&self) -> Option<String> {
        if self.period <= 1 {
            return self.caveat.as_ref().map(|why| {
                format!(
                    "every lock's contentions were timed, as with --sample-other-locks 1: {why}"
                )
            });
        }
        let sampled = format!(
            "locks other than the vmap locks: one contention in {} per CPU timed, counted {} times \
             (their total stays within that many per CPU of the true count; their split between locks, \
             their waits and the per-CPU, per-task and stack figures they add to are estimates; \
             --sample-other-locks 1 times every one)",
            self.period, self.period
        );
        Some(match &self.caveat {
            None => format!("{sampled}; the vmap locks are exact"),
            Some(why) => format!("{sampled}; {why}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::vmap_locks::{VmapLock, VmapLockKind};

    fn lock(name: &str, addr: u64) -> VmapLock {
        VmapLock {
            name: name.into(),
            addr,
            kind: VmapLockKind::Spinlock,
        }
    }

    #[test]
    fn legacy_statics_and_node_ranges() {
        let legacy = VmapLockTable {
            locks: vec![
                lock("vmap_area_lock", 0x10),
                lock("free_vmap_area_lock", 0x20),
                lock("purge_vmap_area_lock", 0x30),
                lock("vmap_purge_lock", 0x40),
            ],
            problems: vec![],
        };
        let s = OtherLockSampling::resolve(8, &legacy, false);
        assert_eq!(s.period, 8);
        assert_eq!(s.static_locks, [0x10, 0x20, 0x30, 0x40]);
        assert!(s.nodes.is_empty());
        assert!(s.is_vmap_lock(0x30) && !s.is_vmap_lock(0x31) && !s.is_vmap_lock(0));
        assert!(s.note().unwrap().contains("one contention in 8"));

        let node = VmapLockTable {
            locks: vec![
                lock("free_vmap_area_lock", 0x20),
                lock("vmap_purge_lock", 0x40),
                lock("vmap_node[0].pool_lock", 0x1000),
                lock("vmap_node[0].busy", 0x1040),
                lock("vmap_node[1].lazy", 0x1180),
            ],
            problems: vec![],
        };
        let s = OtherLockSampling::resolve(4, &node, false);
        assert_eq!(s.static_locks, [0x20, 0x40, 0, 0]);
        assert_eq!(s.nodes, 0x1000..0x1181);
        assert!(s.is_vmap_lock(0x1180) && s.is_vmap_lock(0x1040) && !s.is_vmap_lock(0x1181));
    }

    #[test]
    fn exact_when_asked_or_when_a_vmap_lock_is_missing() {
        let ok = VmapLockTable {
            locks: vec![lock("vmap_area_lock", 0x10)],
            problems: vec![],
        };
        for requested in [0, 1] {
            let s = OtherLockSampling::resolve(requested, &ok, true);
            assert_eq!((s.period, s.note()), (1, None));
            // Still named to the kernel side: the slow-path probes time vmap locks only.
            assert!(s.is_vmap_lock(0x10));
        }
        let missing = VmapLockTable {
            locks: vec![lock("vmap_area_lock", 0x10)],
            problems: vec!["vmap_nodes is not in kallsyms".into()],
        };
        let s = OtherLockSampling::resolve(8, &missing, false);
        assert_eq!(s.period, 1);
        assert!(s.note().unwrap().contains("vmap_nodes is not in kallsyms"));
        // 5.10 has no purge_vmap_area_lock: the locks it has are still named.
        assert!(s.is_vmap_lock(0x10) && !s.is_vmap_lock(0x11));
        let s = OtherLockSampling::resolve(8, &VmapLockTable::default(), false);
        assert_eq!(s.period, 1);
        assert!(s.caveat.is_some());
        // --sample-unlocated: sampled anyway, the located locks still exact, and said so.
        let s = OtherLockSampling::resolve(8, &missing, true);
        assert_eq!(s.period, 8);
        assert!(s.is_vmap_lock(0x10));
        let note = s.note().unwrap();
        assert!(note.contains("one contention in 8") && note.contains("not located are sampled"));
        let s = OtherLockSampling::resolve(8, &VmapLockTable::default(), true);
        assert_eq!((s.period, s.is_vmap_lock(0)), (8, false));
        let many = VmapLockTable {
            locks: (0..5).map(|i| lock("x", i + 1)).collect(),
            problems: vec![],
        };
        assert_eq!(OtherLockSampling::resolve(8, &many, true).period, 1);
    }
}
