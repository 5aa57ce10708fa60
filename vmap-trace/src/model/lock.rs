//! Locks and contended cache lines.
//!
//! A spinlock is a FIFO queue (qspinlock hands the lock to waiters in arrival order). Because a
//! critical section's duration is known when it is granted, a lock only needs the time it next
//! becomes free: a request at `t` is granted at `max(t, free_at)` plus the hand-off, the time for
//! the lock's cache line to reach the new holder. The engine processes requests in global time
//! order, so this is exactly FIFO. When the previous holder was another CPU, the lock line and the
//! protected structure's modified lines (`lines`) move: a cost that grows with cross-CPU traffic
//! and vanishes when one CPU re-takes its own lock.
//!
//! A contended atomic counter (`vmap_lazy_nr`, `nr_vmalloc_pages`) is the same object with no
//! critical section: each read-modify-write must own the line, so updates serialize on
//! ownership transfers.
//!
//! The purge mutex sleeps: its waiters do not spin and are woken one at a time.

use std::collections::VecDeque;

use hdrhistogram::Histogram;
use rand_chacha::ChaCha8Rng;

use crate::model::engine::Cx;
use crate::model::env::{to_ns, Env, Ps, NO_CPU};

/// Index of a lock (or contended line) in a [`LockTable`].
pub type LockId = u32;

/// What kind of object a lock class is, for reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Spinlock,
    AtomicLine,
    Mutex,
}

#[derive(Debug)]
struct SpinLock {
    free_at: Ps,
    holder: u32,
    class: usize,
    hold: Ps,
    /// Cache line holding the lock word (shared by locks declared side by side).
    line: usize,
    /// Grant time of the latest request: later than a new request's time exactly when someone
    /// is already waiting (FIFO grants are increasing).
    last_grant: Ps,
}

/// The cache line of one or more lock words.
#[derive(Debug)]
struct LockLine {
    /// Last CPU that wrote the line.
    owner: u32,
    members: Vec<LockId>,
}

/// Statistics of all instances of one lock (e.g. every node's `busy.lock`).
#[derive(Debug)]
pub struct LockClass {
    pub name: &'static str,
    pub kind: LockKind,
    pub instances: u32,
    pub acquisitions: u64,
    pub contended: u64,
    pub wait_total: Ps,
    /// Wait of the acquisitions that found the lock held (what contention tracing measures).
    pub contended_wait_total: Ps,
    pub hold_total: Ps,
    /// Wait (request to grant) in ns.
    pub wait_hist: Histogram<u64>,
}

impl LockClass {
    fn new(name: &'static str, kind: LockKind, instances: u32) -> Self {
        LockClass {
            name,
            kind,
            instances,
            acquisitions: 0,
            contended: 0,
            wait_total: 0,
            contended_wait_total: 0,
            hold_total: 0,
            wait_hist: new_ns_histogram(),
        }
    }

    fn record(&mut self, wait: Ps, hold: Ps, contended: bool) {
        self.acquisitions += 1;
        self.contended += u64::from(contended);
        self.wait_total += wait;
        if contended {
            self.contended_wait_total += wait;
        }
        self.hold_total += hold;
        self.wait_hist.saturating_record(to_ns(wait) as u64);
    }

    fn reset(&mut self) {
        self.acquisitions = 0;
        self.contended = 0;
        self.wait_total = 0;
        self.contended_wait_total = 0;
        self.hold_total = 0;
        self.wait_hist.reset();
    }
}

/// A histogram of nanosecond values with 2 significant digits (1% resolution).
pub fn new_ns_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("valid histogram bounds")
}

/// Every spinlock and contended line of one design, grouped into reporting classes.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: Vec<SpinLock>,
    lines: Vec<LockLine>,
    classes: Vec<LockClass>,
}

impl LockTable {
    /// Register `instances` locks of one class, each on its own cache line; returns the id of
    /// the first (they are consecutive).
    pub fn add_class(&mut self, name: &'static str, kind: LockKind, instances: u32) -> LockId {
        let class = self.classes.len();
        self.classes.push(LockClass::new(name, kind, instances));
        let first = self.locks.len() as LockId;
        for i in 0..instances {
            let id = first + i;
            self.lines.push(LockLine {
                owner: NO_CPU,
                members: vec![id],
            });
            let line = self.lines.len() - 1;
            self.locks.push(SpinLock {
                free_at: 0,
                holder: NO_CPU,
                class,
                hold: 0,
                line,
                last_grant: 0,
            });
        }
        first
    }

    /// Put the lock words of `ids` on one cache line (adjacent static spinlocks).
    pub fn share_line(&mut self, ids: &[LockId]) {
        let line = self.locks[ids[0] as usize].line;
        for &id in &ids[1..] {
            let old = self.locks[id as usize].line;
            self.lines[old].members.clear();
            self.locks[id as usize].line = line;
            self.lines[line].members.push(id);
        }
    }

    /// Run a critical section: `cpu` requests lock `id` at `t`; the section costs `work` of
    /// CPU time and modifies `lines` cache lines of the protected structure. Returns the
    /// release time.
    ///
    /// Hand-off, following qspinlock: a free lock costs one transfer of its line (fast-path
    /// cmpxchg); the first waiter spins on the lock word and takes it over with
    /// `handoff_pending` transfers; later waiters queue on per-CPU MCS nodes and the lock reaches
    /// them with `handoff_queued` transfers (lock word, MCS hand-over to the next node).
    /// Atomic lines move with one transfer. When other lock words share the line and one of
    /// those locks is busy, their spinners and holders steal the line during the hold: the
    /// release pays `shared_line_penalty` transfers to get it back.
    #[allow(clippy::too_many_arguments)]
    pub fn critical(
        &mut self,
        env: &Env,
        rng: &mut ChaCha8Rng,
        id: LockId,
        t: Ps,
        cpu: u32,
        work: Ps,
        lines: u32,
    ) -> Ps {
        let lock = &mut self.locks[id as usize];
        let kind = self.classes[lock.class].kind;
        let someone_waiting = lock.last_grant > t;
        let start = t.max(lock.free_at);
        let contended = start > t;
        let line = &mut self.lines[lock.line];
        let handoff = if !contended || kind == LockKind::AtomicLine {
            env.transfer_sample(line.owner, cpu, rng)
        } else {
            let per = env.transfer_sample(lock.holder, cpu, rng);
            let n = if someone_waiting {
                env.handoff_queued
            } else {
                env.handoff_pending
            };
            (per as f64 * n) as Ps
        };
        let grant = start + handoff;
        line.owner = cpu;
        let data = if lines == 0 {
            0
        } else {
            Ps::from(lines) * env.transfer_sample(lock.holder, cpu, rng)
        };
        let peers_busy = line.members.len() > 1
            && line
                .members
                .iter()
                .any(|&m| m != id && self.locks[m as usize].free_at > grant);
        let stolen = if peers_busy {
            (env.remote_transfer() as f64 * env.shared_line_penalty) as Ps
        } else {
            0
        };
        let lock = &mut self.locks[id as usize];
        let hold = work + data + stolen;
        let release = grant + hold;
        lock.last_grant = grant;
        lock.free_at = release;
        lock.holder = cpu;
        lock.hold += hold;
        self.classes[lock.class].record(grant - t, hold, contended);
        release
    }

    /// [`LockTable::critical`] for the acting CPU at the current time.
    pub fn section<A: Copy>(&mut self, cx: &mut Cx<'_, A>, id: LockId, work: Ps, lines: u32) -> Ps {
        self.critical(cx.env, cx.rng, id, cx.now, cx.cpu, work, lines)
    }

    /// Touch a line outside its own FIFO (an atomic inside another lock's critical section):
    /// returns the transfer cost and takes ownership.
    pub fn touch(&mut self, env: &Env, id: LockId, cpu: u32) -> Ps {
        let line = &mut self.lines[self.locks[id as usize].line];
        let transfer = env.transfer(line.owner, cpu);
        line.owner = cpu;
        transfer
    }

    /// Forget statistics gathered so far (end of warm-up); lock state is kept.
    pub fn reset_stats(&mut self) {
        for l in &mut self.locks {
            l.hold = 0;
        }
        for c in &mut self.classes {
            c.reset();
        }
    }

    pub fn classes(&self) -> &[LockClass] {
        &self.classes
    }

    /// Largest hold total of one instance of each class.
    pub fn max_instance_hold(&self) -> Vec<Ps> {
        let mut max = vec![0; self.classes.len()];
        for l in &self.locks {
            max[l.class] = max[l.class].max(l.hold);
        }
        max
    }

    /// Number of acquisitions of every lock and line since the last reset.
    pub fn total_acquisitions(&self) -> u64 {
        self.classes.iter().map(|c| c.acquisitions).sum()
    }
}

/// A sleeping mutex (`vmap_purge_lock`). Waiters queue FIFO and sleep.
#[derive(Debug)]
pub struct SleepMutex {
    holder: Option<u32>,
    held_since: Ps,
    waiters: VecDeque<(u32, Ps)>,
    pub stats: LockClass,
}

impl SleepMutex {
    pub fn new(name: &'static str) -> Self {
        SleepMutex {
            holder: None,
            held_since: 0,
            waiters: VecDeque::new(),
            stats: LockClass::new(name, LockKind::Mutex, 1),
        }
    }

    /// `actor` asks for the mutex at `t`: true when it got it, false when it now sleeps.
    pub fn lock(&mut self, actor: u32, t: Ps) -> bool {
        if self.holder.is_none() {
            self.holder = Some(actor);
            self.held_since = t;
            self.stats.record(0, 0, false);
            true
        } else {
            self.waiters.push_back((actor, t));
            false
        }
    }

    /// Release at `t`; returns the waiter that now owns the mutex and when it runs.
    pub fn unlock(&mut self, env: &Env, t: Ps) -> Option<(u32, Ps)> {
        self.stats.hold_total += t.saturating_sub(self.held_since);
        self.holder = None;
        let (next, asked) = self.waiters.pop_front()?;
        let runs_at = t + env.mutex_wakeup();
        self.holder = Some(next);
        self.held_since = runs_at;
        self.stats.record(runs_at - asked, 0, true);
        Some((next, runs_at))
    }

    /// Forget statistics; a hold in progress is counted whole when it ends.
    pub fn reset_stats(&mut self) {
        self.stats.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::env::ns;
    use crate::model::params::ModelParams;

    fn env() -> Env {
        let mut p = ModelParams::default();
        p.hardware.cost_cv = 0.0;
        p.hardware.transfer_cv = 0.0;
        Env::new(&p, &[])
    }

    fn rng() -> ChaCha8Rng {
        <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1)
    }

    #[test]
    fn fifo_handoff_costs_follow_qspinlock_paths() {
        let env = env();
        let mut rng = rng();
        let t = env.transfer(0, 4);
        let pending = (t as f64 * env.handoff_pending) as Ps;
        let queued = (t as f64 * env.handoff_queued) as Ps;
        let mut table = LockTable::default();
        let id = table.add_class("l", LockKind::Spinlock, 1);
        // First acquisition of a never-touched lock: no transfer.
        let r0 = table.critical(&env, &mut rng, id, 0, 0, ns(100.0), 2);
        assert_eq!(r0, ns(100.0));
        // CPU 4 asks while CPU 0 holds it: first waiter (pending path); two data lines move.
        let r1 = table.critical(&env, &mut rng, id, ns(50.0), 4, ns(100.0), 2);
        assert_eq!(r1, r0 + pending + ns(100.0) + 2 * t);
        // CPU 8 asks while CPU 0 holds and CPU 4 waits: queued (MCS) path behind CPU 4.
        let r2 = table.critical(&env, &mut rng, id, ns(60.0), 8, ns(100.0), 0);
        assert_eq!(r2, r1 + queued + ns(100.0));
        // CPU 8 again, after everything: its own line, no transfer.
        let r3 = table.critical(&env, &mut rng, id, r2 + ns(10.0), 8, ns(100.0), 2);
        assert_eq!(r3, r2 + ns(110.0));
        let c = &table.classes()[0];
        assert_eq!(c.acquisitions, 4);
        assert_eq!(c.contended, 2);
    }

    #[test]
    fn lock_words_on_one_line_interfere() {
        let env = env();
        let mut rng = rng();
        let t = env.transfer(0, 4);
        let mut table = LockTable::default();
        let a = table.add_class("a", LockKind::Spinlock, 1);
        let b = table.add_class("b", LockKind::Spinlock, 1);
        table.share_line(&[a, b]);
        table.critical(&env, &mut rng, a, 0, 0, ns(1000.0), 0);
        // b is free, but its word's line was last written by CPU 0 (taking a); a is still
        // held, so its holder takes the line away during b's section.
        let rb = table.critical(&env, &mut rng, b, ns(10.0), 4, ns(100.0), 0);
        let stolen = (env.remote_transfer() as f64 * env.shared_line_penalty) as Ps;
        assert_eq!(rb, ns(10.0) + t + ns(100.0) + stolen);
    }

    #[test]
    fn mutex_wakes_waiters_in_order() {
        let env = env();
        let mut m = SleepMutex::new("m");
        assert!(m.lock(1, 0));
        assert!(!m.lock(2, 10));
        assert!(!m.lock(3, 20));
        assert_eq!(m.unlock(&env, 100), Some((2, 100 + env.mutex_wakeup())));
        assert_eq!(
            m.unlock(&env, 200 + env.mutex_wakeup()).map(|w| w.0),
            Some(3)
        );
        assert_eq!(m.unlock(&env, 20_000_000), None);
    }
}
