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

use crate::model::draw::SimRng;
use crate::model::engine::Cx;
use crate::model::env::{Env, Handoff, Ps, NO_CPU};
use crate::model::pack::Pack;
use crate::model::stats::NsHistogram;

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

/// The state of one lock that every critical section reads and writes, in 32 bytes: the
/// sections of a run go to hundreds of locks (three per node), and two or three cache misses
/// per section on scattered lock, line and statistics records were a tenth of a simulation.
#[derive(Debug)]
struct SpinLock {
    free_at: Ps,
    /// Grant time of the latest request: later than a new request's time exactly when someone
    /// is already waiting (FIFO grants are increasing).
    last_grant: Ps,
    holder: u32,
    /// Last CPU that wrote the lock word's cache line, when the line is the lock's own.
    owner: u32,
    class: u16,
    /// The line the lock word shares with other locks (index in `shared_lines`), or
    /// `OWN_LINE`.
    shared_line: u16,
    /// A contended line rather than a lock (its class's kind, kept here for the hot path).
    atomic: bool,
}

const OWN_LINE: u16 = u16::MAX;

/// A cache line holding the words of several locks declared side by side.
#[derive(Debug)]
struct SharedLine {
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
    /// Wait (request to grant).
    pub wait_hist: NsHistogram,
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
            wait_hist: NsHistogram::new(),
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
        self.wait_hist.record(wait);
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

/// Every spinlock and contended line of one design, grouped into reporting classes.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: Vec<SpinLock>,
    /// Time each lock was held since the last reset, per lock.
    holds: Vec<Ps>,
    shared_lines: Vec<SharedLine>,
    classes: Vec<LockClass>,
}

impl LockTable {
    /// Register `instances` locks of one class, each on its own cache line; returns the id of
    /// the first (they are consecutive).
    pub fn add_class(&mut self, name: &'static str, kind: LockKind, instances: u32) -> LockId {
        let class = self.classes.len();
        self.classes.push(LockClass::new(name, kind, instances));
        let first = self.locks.len() as LockId;
        for _ in 0..instances {
            self.locks.push(SpinLock {
                free_at: 0,
                last_grant: 0,
                holder: NO_CPU,
                owner: NO_CPU,
                class: class.try_into().expect("fewer than 2^16 lock classes"),
                shared_line: OWN_LINE,
                atomic: kind == LockKind::AtomicLine,
            });
            self.holds.push(0);
        }
        first
    }

    /// Put the lock words of `ids` (not yet used) on one cache line (adjacent static spinlocks).
    pub fn share_line(&mut self, ids: &[LockId]) {
        let line = self.shared_lines.len();
        self.shared_lines.push(SharedLine {
            owner: NO_CPU,
            members: ids.to_vec(),
        });
        for &id in ids {
            self.locks[id as usize].shared_line =
                line.try_into().expect("fewer than 2^16 shared lines");
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
    #[inline(always)]
    pub fn critical(
        &mut self,
        env: &Env,
        rng: &mut SimRng,
        id: LockId,
        t: Ps,
        cpu: u32,
        work: Ps,
        lines: u32,
    ) -> Ps {
        let lock = &mut self.locks[id as usize];
        let someone_waiting = lock.last_grant > t;
        let start = t.max(lock.free_at);
        let contended = start > t;
        let line_owner = match lock.shared_line {
            OWN_LINE => &mut lock.owner,
            line => &mut self.shared_lines[usize::from(line)].owner,
        };
        let handoff = if !contended || lock.atomic {
            env.transfer_sample(*line_owner, cpu, Handoff::Once, rng)
        } else {
            let path = if someone_waiting {
                Handoff::Queued
            } else {
                Handoff::Pending
            };
            env.transfer_sample(lock.holder, cpu, path, rng)
        };
        let grant = start + handoff;
        *line_owner = cpu;
        let data = if lines == 0 {
            0
        } else {
            Ps::from(lines) * env.transfer_sample(lock.holder, cpu, Handoff::Once, rng)
        };
        let shared_line = lock.shared_line;
        let peers_busy = shared_line != OWN_LINE
            && self.shared_lines[usize::from(shared_line)]
                .members
                .iter()
                .any(|&m| m != id && self.locks[m as usize].free_at > grant);
        let stolen = if peers_busy {
            env.shared_line_stolen()
        } else {
            0
        };
        let lock = &mut self.locks[id as usize];
        let hold = work + data + stolen;
        let release = grant + hold;
        lock.last_grant = grant;
        lock.free_at = release;
        lock.holder = cpu;
        self.holds[id as usize] += hold;
        self.classes[usize::from(lock.class)].record(grant - t, hold, contended);
        release
    }

    /// [`LockTable::critical`] for the acting CPU at the current time.
    #[inline(always)]
    pub fn section<A: Pack>(&mut self, cx: &mut Cx<'_, A>, id: LockId, work: Ps, lines: u32) -> Ps {
        self.critical(cx.env, cx.rng, id, cx.now, cx.cpu, work, lines)
    }

    /// Touch a line outside its own FIFO (an atomic inside another lock's critical section):
    /// returns the transfer cost and takes ownership.
    pub fn touch(&mut self, env: &Env, id: LockId, cpu: u32) -> Ps {
        let lock = &mut self.locks[id as usize];
        let owner = match lock.shared_line {
            OWN_LINE => &mut lock.owner,
            line => &mut self.shared_lines[usize::from(line)].owner,
        };
        let transfer = env.transfer(*owner, cpu);
        *owner = cpu;
        transfer
    }

    /// Forget statistics gathered so far (end of warm-up); lock state is kept.
    pub fn reset_stats(&mut self) {
        self.holds.fill(0);
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
        for (l, &hold) in self.locks.iter().zip(&self.holds) {
            let class = usize::from(l.class);
            max[class] = max[class].max(hold);
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

    fn hardware() -> crate::model::params::Hardware {
        ModelParams::default().hardware
    }

    fn rng() -> SimRng {
        <SimRng as rand::SeedableRng>::seed_from_u64(1)
    }

    #[test]
    fn fifo_handoff_costs_follow_qspinlock_paths() {
        let env = env();
        let mut rng = rng();
        let t = env.transfer(0, 4);
        let pending = (t as f64 * hardware().handoff_pending_transfers) as Ps;
        let queued = (t as f64 * hardware().handoff_queued_transfers) as Ps;
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
        let remote = env.transfer(0, 4);
        let stolen = (remote as f64 * hardware().shared_line_penalty_transfers) as Ps;
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
