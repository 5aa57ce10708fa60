//! Windows over cumulative snapshots.
//!
//! `TraceSession::snapshot` returns counters accumulated since attach (the BPF maps only ever
//! add). A window is the difference of two snapshots: the last refresh interval, or everything
//! since the user last pressed `r`. The result is itself a `Profile` (its `meta.duration_ns`
//! is the window's length), so every `Profile` consumer (rates, flamegraphs, recordings) works
//! on a window unchanged.
//!
//! Two things cannot be subtracted and are handled explicitly:
//! - maxima: a cumulative max says nothing about one window unless it rose during it. When it
//!   did not, the window's max is only bounded (by the old max, the window's total and the
//!   histogram's highest bucket); `Window` remembers which maxima are such bounds so views can
//!   say so instead of presenting a guess as a measurement.
//! - entries that went backwards: the per-task table is an LRU, so a task can be evicted and
//!   come back with fresh counters, and a tid can be reused. A counter lower than before means
//!   the entry was re-created; everything it holds happened since.
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use crate::profile::{
    CpuLatency, CpuWait, Frame, FunctionLatency, LockWait, Losses, Profile, StackSampling,
    StackWait, TaskWaitSummary, VmallocOps, VmapLockTiming, WaitHistogram,
};

/// A lock as the kernel side keys it: address and `lock:contention_begin` flags.
pub type LockKey = (u64, u32);

/// A largest value seen in a window: measured, or only bounded from above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowMax {
    pub ns: u64,
    /// False when `ns` is an upper bound: the cumulative max did not rise during the window.
    pub exact: bool,
}

/// The difference of two cumulative snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Counts, totals and histograms accumulated during the window; gauges as at its end.
    /// Entries with nothing in the window are left out. Maxima are exact or upper bounds,
    /// see `lock_max` / `cpu_max` / `task_max`.
    pub profile: Profile,
    inexact_lock_max: HashSet<LockKey>,
    inexact_cpu_max: HashSet<u32>,
    inexact_task_max: HashSet<u32>,
}

impl Window {
    /// What happened between `earlier` and `later` (two snapshots of the same session).
    pub fn between(earlier: &Profile, later: &Profile) -> Window {
        let mut w = Window {
            profile: Profile {
                meta: window_meta(earlier, later),
                ops: ops_since(&earlier.ops, &later.ops),
                locks: Vec::new(),
                stacks: stacks_since(&earlier.stacks, &later.stacks),
                cpus: Vec::new(),
                tasks: Vec::new(),
                losses: losses_since(&earlier.losses, &later.losses),
                functions: functions_since(&earlier.functions, &later.functions),
                lock_timing: lock_timing_since(&earlier.lock_timing, &later.lock_timing),
                stack_sampling: StackSampling {
                    captured: later
                        .stack_sampling
                        .captured
                        .saturating_sub(earlier.stack_sampling.captured),
                    skipped: later
                        .stack_sampling
                        .skipped
                        .saturating_sub(earlier.stack_sampling.skipped),
                },
            },
            inexact_lock_max: HashSet::new(),
            inexact_cpu_max: HashSet::new(),
            inexact_task_max: HashSet::new(),
        };

        let before: HashMap<LockKey, &LockWait> = earlier
            .locks
            .iter()
            .map(|l| ((l.lock_addr, l.flags), l))
            .collect();
        for l in &later.locks {
            let key = (l.lock_addr, l.flags);
            let (wait, exact) = wait_since(before.get(&key).map(|e| &e.wait), &l.wait);
            if wait.count == 0 {
                continue;
            }
            if !exact {
                w.inexact_lock_max.insert(key);
            }
            w.profile.locks.push(LockWait {
                lock_addr: l.lock_addr,
                flags: l.flags,
                name: l.name.clone(),
                wait,
            });
        }
        w.profile.locks.sort_by_key(|l| Reverse(l.wait.total_ns));

        let before: HashMap<u32, &CpuWait> = earlier.cpus.iter().map(|c| (c.cpu, c)).collect();
        for c in &later.cpus {
            let e = before.get(&c.cpu).map(|e| (e.count, e.total_ns, e.max_ns));
            let (count, total_ns, max) = totals_since(e, (c.count, c.total_ns, c.max_ns), None);
            // Every CPU keeps its row, idle or not: the CPU view draws one bar per CPU.
            if !max.exact {
                w.inexact_cpu_max.insert(c.cpu);
            }
            w.profile.cpus.push(CpuWait {
                cpu: c.cpu,
                count,
                total_ns,
                max_ns: max.ns,
            });
        }

        let before: HashMap<u32, &TaskWaitSummary> =
            earlier.tasks.iter().map(|t| (t.tid, t)).collect();
        for t in &later.tasks {
            // A different process under the same tid is a different task.
            let e = before
                .get(&t.tid)
                .filter(|e| e.tgid == t.tgid && e.comm == t.comm)
                .map(|e| (e.count, e.total_ns, e.max_ns));
            let (count, total_ns, max) = totals_since(e, (t.count, t.total_ns, t.max_ns), None);
            if count == 0 {
                continue;
            }
            if !max.exact {
                w.inexact_task_max.insert(t.tid);
            }
            w.profile.tasks.push(TaskWaitSummary {
                tid: t.tid,
                tgid: t.tgid,
                comm: t.comm.clone(),
                count,
                total_ns,
                max_ns: max.ns,
            });
        }
        w.profile.tasks.sort_by_key(|t| Reverse(t.total_ns));
        w
    }

    /// A window of length zero at `at` (right after a reset).
    pub fn empty(at: &Profile) -> Window {
        Window::between(at, at)
    }

    /// Window length in seconds.
    pub fn secs(&self) -> f64 {
        self.profile.meta.duration_s()
    }

    /// Events per second over the window (0 for an empty window).
    pub fn rate(&self, n: u64) -> f64 {
        crate::report::per_second(n, self.secs())
    }

    pub fn lock(&self, key: LockKey) -> Option<&LockWait> {
        self.profile
            .locks
            .iter()
            .find(|l| (l.lock_addr, l.flags) == key)
    }

    pub fn lock_max(&self, key: LockKey) -> WindowMax {
        let ns = self.lock(key).map_or(0, |l| l.wait.max_ns);
        WindowMax {
            ns,
            exact: !self.inexact_lock_max.contains(&key),
        }
    }

    pub fn cpu_max(&self, cpu: u32) -> WindowMax {
        let ns = self
            .profile
            .cpus
            .iter()
            .find(|c| c.cpu == cpu)
            .map_or(0, |c| c.max_ns);
        WindowMax {
            ns,
            exact: !self.inexact_cpu_max.contains(&cpu),
        }
    }

    pub fn task_max(&self, tid: u32) -> WindowMax {
        self.profile
            .tasks
            .iter()
            .find(|t| t.tid == tid)
            .map_or(WindowMax { ns: 0, exact: true }, |t| self.max_of_task(t))
    }

    /// The max of one of this window's tasks, without searching for it (thousands of tasks).
    pub fn max_of_task(&self, task: &TaskWaitSummary) -> WindowMax {
        WindowMax {
            ns: task.max_ns,
            exact: !self.inexact_task_max.contains(&task.tid),
        }
    }
}

/// A snapshot of the same session before anything was recorded: the origin of "since start".
/// Windows measured from it have exact maxima.
pub fn zero_like(p: &Profile) -> Profile {
    let mut meta = p.meta.clone();
    meta.duration_ns = 0;
    Profile {
        meta,
        ops: VmallocOps {
            lazy_pages_max: p.ops.lazy_pages_max,
            allocs_per_cpu: vec![0; p.ops.allocs_per_cpu.len()],
            sources: p.ops.sources.clone(),
            ..Default::default()
        },
        locks: Vec::new(),
        stacks: Vec::new(),
        cpus: p
            .cpus
            .iter()
            .map(|c| CpuWait {
                cpu: c.cpu,
                ..Default::default()
            })
            .collect(),
        tasks: Vec::new(),
        losses: Losses::default(),
        functions: Vec::new(),
        lock_timing: Vec::new(),
        stack_sampling: StackSampling::default(),
    }
}

fn window_meta(earlier: &Profile, later: &Profile) -> crate::profile::RecordingMeta {
    let mut meta = later.meta.clone();
    let start_ns = earlier.meta.duration_ns.min(later.meta.duration_ns);
    meta.duration_ns = later.meta.duration_ns - start_ns;
    meta.started_unix_s = later.meta.started_unix_s + start_ns / 1_000_000_000;
    meta
}

/// `later - earlier` for a counter, where a smaller `later` means the entry was re-created.
fn counter_since(earlier: u64, later: u64) -> u64 {
    if later >= earlier {
        later - earlier
    } else {
        later
    }
}

/// The window's largest value from cumulative maxima and the window's own count and total.
fn max_since(
    earlier_max: u64,
    later_max: u64,
    count: u64,
    total_ns: u64,
    hist_bound: Option<u64>,
) -> WindowMax {
    if count == 0 {
        WindowMax { ns: 0, exact: true }
    } else if later_max > earlier_max {
        // The maximum rose, so the new one happened in this window.
        WindowMax {
            ns: later_max,
            exact: true,
        }
    } else if count == 1 {
        WindowMax {
            ns: total_ns,
            exact: true,
        }
    } else {
        let bound = later_max.min(total_ns).min(hist_bound.unwrap_or(u64::MAX));
        WindowMax {
            ns: bound,
            exact: false,
        }
    }
}

/// (count, total, max) since `earlier` (None: the entry is new).
fn totals_since(
    earlier: Option<(u64, u64, u64)>,
    later: (u64, u64, u64),
    hist_bound: Option<u64>,
) -> (u64, u64, WindowMax) {
    let (count, total, max) = later;
    match earlier {
        // Re-created entry (count went down) or a new one: all of `later` is in the window.
        Some((ec, _, _)) if ec > count => {
            (count, total, max_since(0, max, count, total, hist_bound))
        }
        None => (count, total, max_since(0, max, count, total, hist_bound)),
        Some((ec, et, em)) => {
            let c = count - ec;
            let t = counter_since(et, total);
            (c, t, max_since(em, max, c, t, hist_bound))
        }
    }
}

/// A lock's wait histogram since `earlier`, and whether its max is exact.
fn wait_since(earlier: Option<&WaitHistogram>, later: &WaitHistogram) -> (WaitHistogram, bool) {
    let earlier = earlier.filter(|e| e.count <= later.count);
    let hist = match earlier {
        Some(e) => later.hist.since(&e.hist),
        None => later.hist.clone(),
    };
    // Upper bound (exclusive) of the highest bucket with samples in the window.
    let hist_bound = hist
        .buckets
        .len()
        .checked_sub(1)
        .map(crate::profile::Log2Histogram::bucket_high);
    let (count, total_ns, max) = totals_since(
        earlier.map(|e| (e.count, e.total_ns, e.max_ns)),
        (later.count, later.total_ns, later.max_ns),
        hist_bound,
    );
    (
        WaitHistogram {
            count,
            total_ns,
            max_ns: max.ns,
            hist,
        },
        max.exact,
    )
}

fn ops_since(e: &VmallocOps, l: &VmallocOps) -> VmallocOps {
    VmallocOps {
        allocs: counter_since(e.allocs, l.allocs),
        allocs_failed: counter_since(e.allocs_failed, l.allocs_failed),
        frees: counter_since(e.frees, l.frees),
        purges: counter_since(e.purges, l.purges),
        purged_areas: counter_since(e.purged_areas, l.purged_areas),
        alloc_pages: counter_since(e.alloc_pages, l.alloc_pages),
        size_pages: l.size_pages.since(&e.size_pages),
        allocs_per_cpu: l
            .allocs_per_cpu
            .iter()
            .enumerate()
            .map(|(cpu, &n)| counter_since(e.allocs_per_cpu.get(cpu).copied().unwrap_or(0), n))
            .collect(),
        // Gauges: the reading at the window's end.
        lazy_pages_last: l.lazy_pages_last,
        lazy_pages_max: l.lazy_pages_max,
        // The session's peak belongs to this window only if it rose during it; otherwise the
        // larger of the two readings is what is known to have been reached.
        lazy_pages_peak: if l.lazy_pages_peak > e.lazy_pages_peak {
            l.lazy_pages_peak
        } else {
            e.lazy_pages_last.max(l.lazy_pages_last)
        },
        sources: l.sources.clone(),
    }
}

/// Stacks are keyed by (lock, flags, frames): two kernel stack ids can symbolize and trim to
/// the same frames, so both sides are merged by key before subtracting.
fn stacks_since(earlier: &[StackWait], later: &[StackWait]) -> Vec<StackWait> {
    type StackKey<'a> = (u64, u32, &'a [Frame]);
    fn merged(stacks: &[StackWait]) -> Vec<(StackKey<'_>, StackWait)> {
        let mut index: HashMap<StackKey<'_>, usize> = HashMap::new();
        let mut out: Vec<(StackKey<'_>, StackWait)> = Vec::new();
        for s in stacks {
            let key = (s.lock_addr, s.flags, &s.frames[..]);
            match index.get(&key) {
                Some(&i) => {
                    let m = &mut out[i].1;
                    m.count += s.count;
                    m.total_ns += s.total_ns;
                    m.max_ns = m.max_ns.max(s.max_ns);
                }
                None => {
                    index.insert(key, out.len());
                    out.push((key, s.clone()));
                }
            }
        }
        out
    }
    let before: HashMap<StackKey<'_>, StackWait> = merged(earlier).into_iter().collect();
    let mut out: Vec<StackWait> = merged(later)
        .into_iter()
        .filter_map(|(key, mut s)| {
            let e = before.get(&key).map(|e| (e.count, e.total_ns, e.max_ns));
            let (count, total_ns, max) = totals_since(e, (s.count, s.total_ns, s.max_ns), None);
            s.count = count;
            s.total_ns = total_ns;
            s.max_ns = max.ns;
            (count > 0).then_some(s)
        })
        .collect();
    out.sort_by_key(|s| Reverse(s.total_ns));
    out
}

/// vmap function latencies by function. Functions are probed for the whole session, so each
/// keeps its entry (with zero calls when idle), as in a snapshot.
fn functions_since(earlier: &[FunctionLatency], later: &[FunctionLatency]) -> Vec<FunctionLatency> {
    later
        .iter()
        .map(|f| {
            let e = earlier.iter().find(|e| e.function == f.function);
            let per_cpu = f
                .per_cpu
                .iter()
                .map(|c| {
                    let ec = e
                        .and_then(|e| e.per_cpu.iter().find(|x| x.cpu == c.cpu))
                        .map(|x| &x.latency);
                    CpuLatency {
                        cpu: c.cpu,
                        latency: wait_since(ec, &c.latency).0,
                    }
                })
                .filter(|c| c.latency.count > 0)
                .collect();
            FunctionLatency {
                function: f.function.clone(),
                symbol: f.symbol.clone(),
                latency: wait_since(e.map(|e| &e.latency), &f.latency).0,
                per_cpu,
            }
        })
        .collect()
}

/// Wait and hold of each timed vmap lock, by address. Busiest first, idle ones left out.
fn lock_timing_since(earlier: &[VmapLockTiming], later: &[VmapLockTiming]) -> Vec<VmapLockTiming> {
    let mut out: Vec<VmapLockTiming> = later
        .iter()
        .filter_map(|t| {
            let e = earlier.iter().find(|e| e.lock_addr == t.lock_addr);
            let wait = wait_since(e.map(|e| &e.wait), &t.wait).0;
            let hold = wait_since(e.map(|e| &e.hold), &t.hold).0;
            (wait.count > 0 || hold.count > 0).then(|| VmapLockTiming {
                name: t.name.clone(),
                lock_addr: t.lock_addr,
                wait,
                hold,
            })
        })
        .collect();
    out.sort_by_key(|t| Reverse(t.wait.total_ns));
    out
}

fn losses_since(e: &Losses, l: &Losses) -> Losses {
    Losses {
        inflight_full: counter_since(e.inflight_full, l.inflight_full),
        lock_map_full: counter_since(e.lock_map_full, l.lock_map_full),
        stack_capture_failed: counter_since(e.stack_capture_failed, l.stack_capture_failed),
        stack_keys_full: counter_since(e.stack_keys_full, l.stack_keys_full),
        calls_inflight_full: counter_since(e.calls_inflight_full, l.calls_inflight_full),
        tasks_evicted: counter_since(e.tasks_evicted, l.tasks_evicted),
        lock_keys_evicted: counter_since(e.lock_keys_evicted, l.lock_keys_evicted),
        stack_keys_evicted: counter_since(e.stack_keys_evicted, l.stack_keys_evicted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use crate::profile::Log2Histogram;

    /// `sample_profile` one second later, with more of everything.
    fn later_than(p: &Profile) -> Profile {
        let mut l = p.clone();
        l.meta.duration_ns += 1_000_000_000;
        l.ops.allocs += 500;
        l.ops.frees += 400;
        l.ops.purges += 1;
        l.ops.allocs_per_cpu = vec![300, 200];
        l.ops.lazy_pages_last = 700;
        l.ops.lazy_pages_max = 32768;
        // vmap_area_lock: 6 more waits totalling 30 us, max unchanged (9 us).
        l.locks[0].wait.count += 6;
        l.locks[0].wait.total_ns += 30_000;
        l.locks[0].wait.hist =
            Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16]);
        // the mutex: one more wait of 500 us, a new max.
        l.locks[1].wait.count += 1;
        l.locks[1].wait.total_ns += 500_000;
        l.locks[1].wait.max_ns = 500_000;
        l.locks[1].wait.hist = Log2Histogram::from_buckets(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 1,
        ]);
        l.stacks[0].count += 6;
        l.stacks[0].total_ns += 30_000;
        l.cpus[0].count += 7;
        l.cpus[0].total_ns += 530_000;
        l.cpus[0].max_ns = 500_000;
        l.tasks[0].count += 7;
        l.tasks[0].total_ns += 530_000;
        l.tasks[0].max_ns = 500_000;
        l.losses.stack_keys_full += 2;
        l
    }

    #[test]
    fn subtracts_counters_and_keeps_gauges() {
        let a = sample_profile();
        let b = later_than(&a);
        let w = Window::between(&a, &b);
        assert_eq!(w.secs(), 1.0);
        assert_eq!(w.profile.ops.allocs, 500);
        assert_eq!(w.rate(w.profile.ops.allocs), 500.0);
        assert_eq!(w.profile.ops.frees, 400);
        assert_eq!(w.profile.ops.purges, 1);
        // the sample profile has no per-CPU allocs: all of them are new
        assert_eq!(w.profile.ops.allocs_per_cpu, vec![300, 200]);
        assert_eq!(w.profile.ops.lazy_pages_last, 700);
        assert_eq!(w.profile.ops.lazy_pages_max, 32768);
        assert_eq!(w.profile.losses.stack_keys_full, 2);
        assert_eq!(w.profile.losses.total(), 2);
    }

    #[test]
    fn lock_waits_and_histograms_by_key() {
        let a = sample_profile();
        let b = later_than(&a);
        let w = Window::between(&a, &b);
        let spin = w.lock((0x1000, 1)).expect("vmap_area_lock in window");
        assert_eq!((spin.wait.count, spin.wait.total_ns), (6, 30_000));
        assert_eq!(spin.wait.hist.total(), 6);
        assert_eq!(spin.name.as_deref(), Some("vmap_area_lock"));
        // max did not rise: only bounded, here by the window's highest bucket (4096..8192 ns)
        assert_eq!(
            w.lock_max((0x1000, 1)),
            WindowMax {
                ns: 8_192,
                exact: false
            }
        );
        let mutex = w.lock((0x2000, 32)).unwrap();
        assert_eq!((mutex.wait.count, mutex.wait.total_ns), (1, 500_000));
        assert_eq!(
            w.lock_max((0x2000, 32)),
            WindowMax {
                ns: 500_000,
                exact: true
            }
        );
        // the window's p99 comes from the window's histogram only: bucket 19 (<= 1.05 ms) capped by max
        assert_eq!(mutex.wait.p99_ns(), Some(500_000));
        // busiest first
        assert_eq!(w.profile.locks[0].lock_addr, 0x2000);
    }

    #[test]
    fn max_is_bounded_by_the_window_histogram() {
        let mut a = sample_profile();
        a.locks[0].wait.max_ns = 1_000_000; // an old 1 ms outlier
        let mut b = a.clone();
        b.meta.duration_ns += 1_000_000_000;
        b.locks[0].wait.count += 3;
        b.locks[0].wait.total_ns += 3_000;
        // three waits in bucket 9 (512..1024 ns)
        let mut raw = a.locks[0].wait.hist.buckets.clone();
        raw[9] += 3;
        b.locks[0].wait.hist = Log2Histogram::from_buckets(&raw);
        let w = Window::between(&a, &b);
        assert_eq!(
            w.lock_max((0x1000, 1)),
            WindowMax {
                ns: 1024,
                exact: false
            }
        );
    }

    #[test]
    fn idle_entries_leave_the_window_but_cpus_stay() {
        let a = sample_profile();
        let mut b = a.clone();
        b.meta.duration_ns += 500_000_000;
        let w = Window::between(&a, &b);
        assert!(w.profile.locks.is_empty());
        assert!(w.profile.stacks.is_empty());
        assert!(w.profile.tasks.is_empty());
        assert_eq!(w.profile.cpus.len(), 2);
        assert!(w
            .profile
            .cpus
            .iter()
            .all(|c| c.count == 0 && c.total_ns == 0));
        assert_eq!(w.secs(), 0.5);
        assert_eq!(Window::empty(&b).secs(), 0.0);
        assert_eq!(Window::empty(&b).rate(10), 0.0);
    }

    #[test]
    fn recreated_or_reused_task_entries_count_from_scratch() {
        let a = sample_profile();
        let mut b = a.clone();
        b.meta.duration_ns += 1_000_000_000;
        // evicted and re-added: fewer waits than before
        b.tasks[0].count = 3;
        b.tasks[0].total_ns = 3_000;
        b.tasks[0].max_ns = 1_500;
        // tid 42 reused by another process would also be new; add one
        b.tasks.push(TaskWaitSummary {
            tid: 7,
            tgid: 7,
            comm: "kworker/0:1".into(),
            count: 2,
            total_ns: 100,
            max_ns: 60,
        });
        let w = Window::between(&a, &b);
        let t = w.profile.tasks.iter().find(|t| t.tid == 42).unwrap();
        assert_eq!((t.count, t.total_ns), (3, 3_000));
        assert_eq!(
            w.task_max(42),
            WindowMax {
                ns: 1_500,
                exact: true
            }
        );
        let mut c = b.clone();
        c.tasks[0].comm = "bash".into();
        c.tasks[0].count += 1;
        let w = Window::between(&a, &c);
        assert_eq!(
            w.profile.tasks.iter().find(|t| t.tid == 42).unwrap().count,
            4
        );
    }

    #[test]
    fn duplicate_stacks_merge_before_subtracting() {
        let a = sample_profile();
        let mut b = a.clone();
        b.meta.duration_ns += 1_000_000_000;
        // a second stack id with the same frames as the vmap one
        let mut dup = a.stacks[0].clone();
        dup.count = 2;
        dup.total_ns = 4_000;
        dup.max_ns = 2_000;
        b.stacks.push(dup);
        let w = Window::between(&a, &b);
        assert_eq!(w.profile.stacks.len(), 1);
        assert_eq!(
            (w.profile.stacks[0].count, w.profile.stacks[0].total_ns),
            (2, 4_000)
        );
        assert_eq!(w.profile.vmap_wait_ns(), 4_000);
    }

    #[test]
    fn function_latency_and_lock_timing_by_key() {
        let mut a = sample_profile();
        let hist = |raw: &[u64]| Log2Histogram::from_buckets(raw);
        let timing = |count, total, hold_count, hold_total| VmapLockTiming {
            name: "free_vmap_area_lock".into(),
            lock_addr: 0xffff_8000_0000_1000,
            wait: WaitHistogram {
                count,
                total_ns: total,
                max_ns: total,
                hist: hist(&[0, 0, 0, 0, 0, 0, count]),
            },
            hold: WaitHistogram {
                count: hold_count,
                total_ns: hold_total,
                max_ns: hold_total,
                hist: hist(&[0, 0, 0, 0, 0, 0, 0, 0, hold_count]),
            },
        };
        a.lock_timing = vec![timing(10, 700, 10, 3_000)];
        let mut b = a.clone();
        b.meta.duration_ns += 1_000_000_000;
        b.lock_timing = vec![timing(25, 1_600, 25, 7_500)];
        b.functions[0].latency.count += 100;
        b.functions[0].latency.total_ns += 250_000;
        b.functions[0].latency.hist = hist(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2100]);
        let w = Window::between(&a, &b);
        assert_eq!(w.profile.lock_timing.len(), 1);
        let t = &w.profile.lock_timing[0];
        assert_eq!(
            (t.wait.count, t.wait.total_ns, t.hold.count, t.hold.total_ns),
            (15, 900, 15, 4_500)
        );
        assert_eq!(t.hold.mean_ns(), Some(300.0));
        assert_eq!(t.hold.hist.total(), 15);
        let f = &w.profile.functions[0];
        assert_eq!(
            (f.function.as_str(), f.latency.count, f.latency.total_ns),
            ("alloc_vmap_area", 100, 250_000)
        );
        // idle: the function keeps its (empty) entry, the timed lock drops out
        let idle = Window::between(&b, &b);
        assert_eq!(idle.profile.functions[0].latency.count, 0);
        assert!(idle.profile.lock_timing.is_empty());
    }

    #[test]
    fn zero_origin_makes_since_start_exact() {
        let b = sample_profile();
        let w = Window::between(&zero_like(&b), &b);
        // the same locks, busiest first
        let mut expected = b.locks.clone();
        expected.sort_by_key(|l| std::cmp::Reverse(l.wait.total_ns));
        assert_eq!(w.profile.locks, expected);
        assert_eq!(w.profile.ops.allocs, b.ops.allocs);
        assert_eq!(w.secs(), b.meta.duration_s());
        assert!(w.lock_max((0x1000, 1)).exact);
        assert_eq!(w.lock_max((0x1000, 1)).ns, 9_000);
        assert_eq!(
            w.cpu_max(0),
            WindowMax {
                ns: 200_000,
                exact: true
            }
        );
    }

    #[test]
    fn window_meta_starts_where_the_earlier_snapshot_ended() {
        let a = sample_profile();
        let b = later_than(&a);
        let w = Window::between(&a, &b);
        assert_eq!(w.profile.meta.started_unix_s, a.meta.started_unix_s + 2);
        assert_eq!(w.profile.meta.kernel_release, b.meta.kernel_release);
    }
}
