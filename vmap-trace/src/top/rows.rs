//! Table rows computed from windows: what each table shows, before any layout.
//!
//! Rows cover everything seen since the last reset, with figures from the shown window: a lock
//! that went quiet keeps its row (with zero rates, sorted below the active ones) instead of
//! flickering in and out between refreshes. Names (task names any user sets, symbols) are
//! shown escaped, as in every view (`crate::escape`): ratatui would drop control characters
//! silently and pass bidi overrides on.
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use super::app::SortKey;
use super::window::{LockKey, Window, WindowMax};
use crate::escape;
use crate::profile::attribution::canonical_function;
use crate::profile::{LockClass, LockWait, StackWait};

/// Hold-time figures for a lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldStats {
    pub avg_ns: f64,
    pub p99_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LockRow {
    pub key: LockKey,
    /// The lock's name, or its kind and the function that takes it most.
    pub label: String,
    pub kind: &'static str,
    /// Share of the lock's wait that went through vmap paths; None when no stack was captured.
    pub vmap_share: Option<f64>,
    pub contentions_per_s: f64,
    /// Nanoseconds of waiting per second of the window.
    pub wait_per_s: f64,
    pub avg_ns: Option<f64>,
    pub p99_ns: Option<u64>,
    pub max: WindowMax,
    /// None where hold times are not measured (see `lock_hold`).
    pub hold: Option<HoldStats>,
    /// Where the lock is taken from on its most-waited stack.
    pub top_caller: Option<String>,
    /// Wait since reset: the tie-breaker that keeps idle rows in a stable order.
    pub since_reset_ns: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub contentions_per_s: f64,
    pub wait_per_s: f64,
    pub avg_ns: Option<f64>,
    pub max: WindowMax,
    pub since_reset_ns: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CpuRow {
    pub cpu: u32,
    pub contentions_per_s: f64,
    pub wait_per_s: f64,
    pub max: WindowMax,
    pub allocs_per_s: f64,
}

/// Whether hold times exist in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldTimes {
    /// Lock timing is attached (or data is present): the hold columns are shown.
    Measured,
    /// `--lock-timing` was not given.
    NotRequested,
    /// Requested, but no lock-timing probe could be attached (the reason is in the notes).
    Unavailable,
}

pub fn hold_times(p: &crate::profile::Profile) -> HoldTimes {
    let mut hooks = p
        .meta
        .hooks
        .iter()
        .filter(|h| h.hook.starts_with("lock-timing:"))
        .peekable();
    if !p.lock_timing.is_empty() {
        return HoldTimes::Measured;
    }
    if hooks.peek().is_none() {
        return HoldTimes::NotRequested;
    }
    if hooks.any(|h| h.mechanism.is_some()) {
        HoldTimes::Measured
    } else {
        HoldTimes::Unavailable
    }
}

/// Hold times of a lock in a window, from the lock-timing probes (`--lock-timing`: around
/// the lock and unlock calls, which needs kprobes or fentry). None where the lock is not timed.
pub fn lock_hold(window: &Window, key: LockKey) -> Option<HoldStats> {
    let t = window
        .profile
        .lock_timing
        .iter()
        .find(|t| t.lock_addr == key.0)?;
    Some(HoldStats {
        avg_ns: t.hold.mean_ns()?,
        p99_ns: t.hold.p99_ns(),
    })
}

/// One row per lock that waited since the last reset, figures from `shown`, in `sort` order.
pub fn lock_rows(shown: &Window, since_reset: &Window, sort: SortKey) -> Vec<LockRow> {
    let mut keys: Vec<LockKey> = Vec::new();
    let mut seen = HashSet::new();
    for l in shown.profile.locks.iter().chain(&since_reset.profile.locks) {
        let key = (l.lock_addr, l.flags);
        if seen.insert(key) {
            keys.push(key);
        }
    }
    fn by_lock(w: &Window) -> HashMap<LockKey, Vec<&StackWait>> {
        let mut m: HashMap<LockKey, Vec<&StackWait>> = HashMap::new();
        for s in &w.profile.stacks {
            m.entry((s.lock_addr, s.flags)).or_default().push(s);
        }
        m
    }
    fn heaviest<'a>(stacks: Option<&Vec<&'a StackWait>>) -> Option<&'a StackWait> {
        stacks.and_then(|v| v.iter().copied().max_by_key(|s| s.total_ns))
    }
    let (shown_stacks, period_stacks) = (by_lock(shown), by_lock(since_reset));
    // Indexed: a busy machine can have thousands of contended locks.
    let shown_locks: HashMap<LockKey, &LockWait> = shown
        .profile
        .locks
        .iter()
        .map(|l| ((l.lock_addr, l.flags), l))
        .collect();
    let period_locks: HashMap<LockKey, &LockWait> = since_reset
        .profile
        .locks
        .iter()
        .map(|l| ((l.lock_addr, l.flags), l))
        .collect();
    let mut rows: Vec<LockRow> = keys
        .into_iter()
        .map(|key| {
            let lock = shown_locks.get(&key).copied();
            let history = period_locks.get(&key).copied();
            let wait = lock.map(|l| l.wait.clone()).unwrap_or_default();
            let name = lock.or(history).and_then(|l| l.name.clone());
            // Figures from the shown window when it has stacks for the lock, else from the
            // whole period, so a quiet lock still says where it is taken.
            let stacks = shown_stacks.get(&key).or_else(|| period_stacks.get(&key));
            let top_caller = heaviest(stacks)
                .and_then(caller_label)
                .map(|l| escape::field(&l).into_owned());
            let stack_ns: u64 = stacks.map_or(0, |v| v.iter().map(|s| s.total_ns).sum());
            let vmap_ns: u64 = stacks.map_or(0, |v| {
                v.iter()
                    .filter(|s| s.attribution.class == LockClass::Vmap)
                    .map(|s| s.total_ns)
                    .sum()
            });
            let kind = crate::profile::lock_kind(key.1);
            // An unnamed lock is labelled from the whole period, so its label does not change
            // from one refresh to the next.
            let site = heaviest(period_stacks.get(&key).or(stacks))
                .and_then(|s| s.attribution.call_site.as_deref());
            let label = match (&name, site) {
                (Some(n), _) => escape::field(n).into_owned(),
                (None, Some(site)) => format!("{kind} in {}", escape::field(site)),
                (None, None) => crate::report::lock_label(None, key.0, key.1),
            };
            LockRow {
                key,
                label,
                kind,
                vmap_share: (stack_ns > 0).then(|| vmap_ns as f64 / stack_ns as f64),
                contentions_per_s: shown.rate(wait.count),
                wait_per_s: shown.rate(wait.total_ns),
                avg_ns: wait.mean_ns(),
                p99_ns: wait.p99_ns(),
                max: shown.lock_max(key),
                hold: lock_hold(shown, key),
                top_caller,
                since_reset_ns: history.map_or(0, |l| l.wait.total_ns),
            }
        })
        .collect();
    disambiguate(&mut rows);
    rows.sort_by(|a, b| {
        let primary = match sort {
            SortKey::Wait => desc_f(a.wait_per_s, b.wait_per_s),
            SortKey::Count => desc_f(a.contentions_per_s, b.contentions_per_s),
            SortKey::Avg => desc_f(a.avg_ns.unwrap_or(0.0), b.avg_ns.unwrap_or(0.0)),
            SortKey::P99 => b.p99_ns.unwrap_or(0).cmp(&a.p99_ns.unwrap_or(0)),
            SortKey::Max => b.max.ns.cmp(&a.max.ns),
            SortKey::Name => a.label.cmp(&b.label),
        };
        primary
            .then(b.since_reset_ns.cmp(&a.since_reset_ns))
            .then_with(|| a.label.cmp(&b.label))
    });
    rows
}

/// The call site and who called it, `try_to_wake_up ← wake_up_q`, plus the vmap function
/// when the lock was taken under one without being the vmap allocator's own
/// (`n_tty_open ← tty_open via vfree`): the call site alone often only repeats the label.
fn caller_label(s: &StackWait) -> Option<String> {
    let site = s.attribution.call_site.as_deref()?;
    let names: Vec<&str> = s
        .frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .map(canonical_function)
        .collect();
    let parent = names
        .iter()
        .position(|n| *n == site)
        .and_then(|i| names.get(i + 1));
    let mut label = match parent {
        Some(p) => format!("{site} ← {p}"),
        None => site.to_string(),
    };
    if let Some(v) = s.attribution.vmap_function.as_deref() {
        if v != site && Some(&v) != parent {
            label.push_str(&format!(" via {v}"));
        }
    }
    Some(label)
}

/// Tell apart locks labelled the same (two runqueue locks both "spinlock in __schedule") by
/// the end of their address: as many hex digits as it takes, since per-CPU locks share their
/// low bits. The same address twice (different flags) also gets the flags.
fn disambiguate(rows: &mut [LockRow]) {
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        groups.entry(r.label.clone()).or_default().push(i);
    }
    for members in groups.into_values().filter(|m| m.len() > 1) {
        let addrs: Vec<u64> = members.iter().map(|&i| rows[i].key.0).collect();
        let digits = (4..=16)
            .find(|&d| {
                let tail = |a: u64| {
                    if d == 16 {
                        a
                    } else {
                        a & ((1u64 << (4 * d)) - 1)
                    }
                };
                let distinct: HashSet<u64> = addrs.iter().map(|&a| tail(a)).collect();
                let unique_addrs: HashSet<u64> = addrs.iter().copied().collect();
                distinct.len() == unique_addrs.len()
            })
            .unwrap_or(16);
        for &i in &members {
            let (addr, flags) = rows[i].key;
            let hex = format!("{addr:016x}");
            let mut suffix = format!(" @{}", &hex[16 - digits..]);
            if addrs.iter().filter(|&&a| a == addr).count() > 1 {
                suffix.push_str(&format!("/{flags:#x}"));
            }
            rows[i].label.push_str(&suffix);
        }
    }
}

/// One row per task that waited since the last reset, figures from `shown`. A fork-heavy
/// load leaves thousands of tasks: everything here is linear in their number.
pub fn task_rows(shown: &Window, since_reset: &Window, sort: SortKey) -> Vec<TaskRow> {
    type TaskKey<'a> = (u32, u32, &'a str);
    fn index(w: &Window) -> HashMap<TaskKey<'_>, usize> {
        w.profile
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.tid, t.tgid, t.comm.as_str()), i))
            .collect()
    }
    let now: HashMap<TaskKey<'_>, usize> = index(shown);
    let period: HashMap<TaskKey<'_>, usize> = index(since_reset);
    let mut rows: Vec<TaskRow> = Vec::new();
    let mut seen: HashSet<TaskKey<'_>> = HashSet::new();
    for t in shown.profile.tasks.iter().chain(&since_reset.profile.tasks) {
        let k = (t.tid, t.tgid, t.comm.as_str());
        if !seen.insert(k) {
            continue;
        }
        let in_window = now.get(&k).map(|&i| &shown.profile.tasks[i]);
        let (count, total) = in_window.map_or((0, 0), |s| (s.count, s.total_ns));
        rows.push(TaskRow {
            tid: t.tid,
            tgid: t.tgid,
            comm: escape::field(&t.comm).into_owned(),
            contentions_per_s: shown.rate(count),
            wait_per_s: shown.rate(total),
            avg_ns: (count > 0).then(|| total as f64 / count as f64),
            max: in_window.map_or(WindowMax { ns: 0, exact: true }, |s| shown.max_of_task(s)),
            since_reset_ns: period
                .get(&k)
                .map_or(0, |&i| since_reset.profile.tasks[i].total_ns),
        });
    }
    rows.sort_by(|a, b| {
        let primary = match sort {
            SortKey::Wait => desc_f(a.wait_per_s, b.wait_per_s),
            SortKey::Count => desc_f(a.contentions_per_s, b.contentions_per_s),
            SortKey::Avg => desc_f(a.avg_ns.unwrap_or(0.0), b.avg_ns.unwrap_or(0.0)),
            // Tasks have no histogram: the tail they have is the max.
            SortKey::P99 | SortKey::Max => b.max.ns.cmp(&a.max.ns),
            SortKey::Name => a.comm.cmp(&b.comm),
        };
        primary
            .then(b.since_reset_ns.cmp(&a.since_reset_ns))
            .then(a.tid.cmp(&b.tid))
    });
    rows
}

/// One row per CPU, in CPU order.
pub fn cpu_rows(shown: &Window) -> Vec<CpuRow> {
    let p = &shown.profile;
    let cpus = p
        .cpus
        .len()
        .max(p.ops.allocs_per_cpu.len())
        .max(p.meta.cpus as usize);
    (0..cpus as u32)
        .map(|cpu| {
            let c = p.cpus.iter().find(|c| c.cpu == cpu);
            CpuRow {
                cpu,
                contentions_per_s: shown.rate(c.map_or(0, |c| c.count)),
                wait_per_s: shown.rate(c.map_or(0, |c| c.total_ns)),
                max: shown.cpu_max(cpu),
                allocs_per_s: shown
                    .rate(p.ops.allocs_per_cpu.get(cpu as usize).copied().unwrap_or(0)),
            }
        })
        .collect()
}

/// Descending order of two rates (NaN-safe).
fn desc_f(a: f64, b: f64) -> Ordering {
    b.partial_cmp(&a).unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use crate::top::window::zero_like;

    fn since_start() -> Window {
        let p = sample_profile();
        Window::between(&zero_like(&p), &p)
    }

    #[test]
    fn lock_rows_rates_labels_and_callers() {
        let w = since_start();
        let rows = lock_rows(&w, &w, SortKey::Wait);
        assert_eq!(rows.len(), 2);
        // the mutex waited 400 us over 2 s; it has no name, so it is labelled by its call site
        assert_eq!(rows[0].label, "mutex in tty_lock");
        assert_eq!(rows[0].wait_per_s, 200_000.0);
        assert_eq!(rows[0].contentions_per_s, 2.0);
        assert_eq!(rows[0].vmap_share, Some(0.0));
        assert_eq!(rows[1].label, "vmap_area_lock");
        assert_eq!(
            rows[1].top_caller.as_deref(),
            Some("alloc_vmap_area ← __vmalloc_node_range")
        );
        assert_eq!(rows[0].top_caller.as_deref(), Some("tty_lock ← tty_open"));
        assert_eq!(rows[1].vmap_share, Some(1.0));
        assert_eq!(rows[1].avg_ns, Some(5_000.0));
        assert_eq!(
            rows[1].max,
            WindowMax {
                ns: 9_000,
                exact: true
            }
        );
        assert!(rows.iter().all(|r| r.hold.is_none()));
    }

    #[test]
    fn hold_times_come_from_lock_timing_by_address() {
        let mut p = sample_profile();
        p.lock_timing = vec![crate::profile::VmapLockTiming {
            name: "vmap_area_lock".into(),
            lock_addr: 0x1000,
            wait: Default::default(),
            hold: crate::profile::WaitHistogram {
                count: 4,
                total_ns: 2_000,
                max_ns: 900,
                hist: crate::profile::Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 4]),
            },
        }];
        let w = Window::between(&zero_like(&p), &p);
        let rows = lock_rows(&w, &w, SortKey::Name);
        let spin = rows.iter().find(|r| r.label == "vmap_area_lock").unwrap();
        assert_eq!(
            spin.hold,
            Some(HoldStats {
                avg_ns: 500.0,
                p99_ns: Some(900)
            })
        );
        assert_eq!(
            rows.iter()
                .find(|r| r.label != "vmap_area_lock")
                .unwrap()
                .hold,
            None
        );
    }

    #[test]
    fn sort_keys_reorder_rows() {
        let w = since_start();
        let labels = |k| {
            lock_rows(&w, &w, k)
                .into_iter()
                .map(|r| r.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            labels(SortKey::Wait),
            vec!["mutex in tty_lock", "vmap_area_lock"]
        );
        assert_eq!(
            labels(SortKey::Count),
            vec!["vmap_area_lock", "mutex in tty_lock"]
        );
        assert_eq!(
            labels(SortKey::Name),
            vec!["mutex in tty_lock", "vmap_area_lock"]
        );
        assert_eq!(
            labels(SortKey::Max),
            vec!["mutex in tty_lock", "vmap_area_lock"]
        );
    }

    #[test]
    fn same_labels_get_address_suffixes() {
        let mut p = sample_profile();
        let mut twin = p.locks[1].clone();
        twin.lock_addr = 0xffff_8880_0abc_2340;
        p.locks.push(twin);
        let mut stack = p.stacks[1].clone();
        stack.lock_addr = 0xffff_8880_0abc_2340;
        p.stacks.push(stack);
        let w = Window::between(&zero_like(&p), &p);
        let mut labels: Vec<String> = lock_rows(&w, &w, SortKey::Name)
            .into_iter()
            .map(|r| r.label)
            .collect();
        labels.sort();
        assert_eq!(
            labels,
            vec![
                "mutex in tty_lock @2000",
                "mutex in tty_lock @2340",
                "vmap_area_lock"
            ]
        );

        // per-CPU locks: the same low 16 bits, told apart by more digits
        let mut rows = lock_rows(&w, &w, SortKey::Name);
        for (r, addr) in
            rows.iter_mut()
                .zip([0xffff_8880_7dc2_ba40u64, 0xffff_8880_7dd2_ba40, 0x3000])
        {
            r.label = "spinlock in __schedule".into();
            r.key.0 = addr;
        }
        rows[2].key.0 = rows[1].key.0; // and the same address under other flags
        rows[2].key.1 = 0x101;
        disambiguate(&mut rows);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels[0], "spinlock in __schedule @c2ba40");
        assert!(
            labels[1].starts_with("spinlock in __schedule @d2ba40/"),
            "{labels:?}"
        );
        assert_eq!(labels[2], "spinlock in __schedule @d2ba40/0x101");
    }

    #[test]
    fn caller_names_the_vmap_function_it_ran_under() {
        let frames: Vec<crate::profile::Frame> = [
            "__mutex_lock.constprop.0",
            "n_tty_open",
            "tty_ldisc_open",
            "vfree",
        ]
        .iter()
        .map(|n| crate::profile::tests::frame(n))
        .collect();
        let s = StackWait {
            task: None,
            user_frames: Vec::new(),
            lock_addr: 1,
            flags: 32,
            attribution: crate::profile::attribution::attribute(&frames),
            frames: frames.into(),
            count: 1,
            total_ns: 1,
            max_ns: 1,
        };
        assert_eq!(
            caller_label(&s).as_deref(),
            Some("n_tty_open ← tty_ldisc_open via vfree")
        );
    }

    #[test]
    fn quiet_locks_keep_their_row_with_zero_rates() {
        let p = sample_profile();
        let mut later = p.clone();
        later.meta.duration_ns += 1_000_000_000;
        later.locks[0].wait.count += 1;
        later.locks[0].wait.total_ns += 1_000;
        later.locks[0].wait.hist.buckets[9] = 1;
        let interval = Window::between(&p, &later);
        let since = Window::between(&zero_like(&p), &later);
        let rows = lock_rows(&interval, &since, SortKey::Wait);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].label, "vmap_area_lock");
        assert_eq!(rows[0].contentions_per_s, 1.0);
        assert_eq!(rows[1].contentions_per_s, 0.0);
        assert_eq!(rows[1].avg_ns, None);
        // still attributed from the period since reset
        assert_eq!(rows[1].label, "mutex in tty_lock");
    }

    #[test]
    fn names_are_shown_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE_SHOWN};
        let p = crate::profile::tests::hostile_profile();
        let w = Window::between(&zero_like(&p), &p);
        let tasks = task_rows(&w, &w, SortKey::Wait);
        assert_eq!(tasks[0].comm, HOSTILE_SHOWN);
        let locks = lock_rows(&w, &w, SortKey::Wait);
        assert_eq!(locks[0].label, format!("mutex{HOSTILE_SHOWN}"));
        let caller = locks[0].top_caller.as_deref().unwrap();
        assert!(
            caller.starts_with(&format!("caller{HOSTILE_SHOWN}")),
            "{caller}"
        );
        for r in &locks {
            assert_inert(&r.label, false);
            assert_inert(r.top_caller.as_deref().unwrap_or(""), false);
        }
    }

    #[test]
    fn task_and_cpu_rows() {
        let w = since_start();
        let tasks = task_rows(&w, &w, SortKey::Wait);
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].tid, tasks[0].comm.as_str()), (42, "sshd"));
        assert_eq!(tasks[0].contentions_per_s, 7.0);
        let cpus = cpu_rows(&w);
        // the sample machine has 4 CPUs, two of which waited
        assert_eq!(cpus.len(), 4);
        assert_eq!(cpus[0].wait_per_s, 125_000.0);
        assert_eq!(cpus[3].wait_per_s, 0.0);
    }
}
