//! The least a discrete-event simulation of these locks does per event, as a measuring stick
//! for the model's speed (docs/model.md, "Speed").
//!
//! The model's node-sharded benchmark run is about 51 million events per simulated second, and
//! every one of them must pass through the queue in time order because it touches shared state
//! (a lock or a contended counter). This module runs the same number of events with nothing but
//! that irreducible core, built from the model's own pieces: the tournament-tree queue over the
//! same number of actors, one FIFO spinlock section per event on one of many locks (the grant at
//! `max(request, free_at)`, a cache-line transfer when another CPU held it last, a hold time),
//! the per-lock statistics and wait histogram, and the private CPU work before the actor's next
//! request, with the model's variability (an exponential variate per drawn time, as
//! [`crate::model::draw`] makes them). No operation steps, no designs, no workers.
//!
//! Its cost per event is therefore a floor for any simulation of this model that keeps one
//! event per locked step: if the floor alone is a large part of the time budget per event, no
//! tuning of the model's engine can meet the budget.

use rand::{RngCore, SeedableRng};

use crate::model::draw::{mul_q32, ExpTable, Jitter, SimRng, TimeDraw};
use crate::model::env::Ps;
use crate::model::queue::EventQueue;
use crate::model::stats::NsHistogram;

/// Bits of an event key holding the actor (as in the engine).
const ACTOR_BITS: u32 = 18;

/// What a skeleton run did, so that the work cannot be optimized away and tests can check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkeletonRun {
    pub events: u64,
    /// Requests that found the lock held.
    pub contended: u64,
    pub wait_total: u64,
    pub hold_total: u64,
    /// Simulated time of the last event (picoseconds).
    pub end: u64,
    /// Wait histogram's 99th percentile, in nanoseconds.
    pub wait_p99_ns: u64,
}

#[derive(Clone, Copy)]
struct Lock {
    free_at: Ps,
    owner: u32,
}

/// The shape of a skeleton run.
#[derive(Clone, Copy, Debug)]
pub struct SkeletonConfig {
    pub events: u64,
    /// Actors, one per CPU, each always waiting for its next event.
    pub actors: u32,
    /// Locks taken at random (a power of two).
    pub locks: u32,
    /// Mean hold time of a section.
    pub hold_ns: f64,
    /// Mean transfer of the lock's line when another CPU held it last.
    pub transfer_ns: f64,
    /// Mean private work between an actor's sections.
    pub work_ns: f64,
    /// Coefficient of variation of every drawn time; 0 draws nothing (one random word per
    /// event, to pick the lock).
    pub cv: f64,
    pub seed: u64,
}

impl SkeletonConfig {
    /// The model's node-sharded benchmark, reduced to its events: 64 threads, one lock
    /// section per event on one of 128 nodes' locks, about as many events per simulated
    /// second (51 million), the model's default variability (`cost_cv = transfer_cv = 0.5`).
    pub fn node_benchmark(events: u64) -> Self {
        SkeletonConfig {
            events,
            actors: 64,
            locks: 128,
            hold_ns: 50.0,
            transfer_ns: 100.0,
            work_ns: 1000.0,
            cv: 0.5,
            seed: 1,
        }
    }
}

/// Run the skeleton.
pub fn run(cfg: &SkeletonConfig) -> SkeletonRun {
    let SkeletonConfig {
        events,
        actors,
        locks,
        hold_ns,
        transfer_ns,
        work_ns,
        cv,
        seed,
    } = *cfg;
    assert!(locks.is_power_of_two() && actors > 0);
    let ps = |ns: f64| (ns * 1000.0) as Ps;
    let table = ExpTable::new();
    let mut rng = SimRng::seed_from_u64(seed);
    let transfer = TimeDraw::new(ps(transfer_ns), 1.0, cv);
    let hold_jitter = Jitter::new(1.0, cv);
    let hold_mean = ps(hold_ns);
    let work = TimeDraw::new(ps(work_ns), 1.0, cv);
    let mut lock_state = vec![
        Lock {
            free_at: 0,
            owner: u32::MAX
        };
        locks as usize
    ];
    let mut hist = NsHistogram::new();
    let mut queue = EventQueue::new();
    for a in 0..actors {
        let start = rng.next_u64() % 1_000_000;
        queue.push(a, start << ACTOR_BITS | u64::from(a));
    }
    let mut out = SkeletonRun {
        events: 0,
        contended: 0,
        wait_total: 0,
        hold_total: 0,
        end: 0,
        wait_p99_ns: 0,
    };
    while out.events < events {
        let Some(key) = queue.first() else { break };
        let (t, a) = (key >> ACTOR_BITS, (key & ((1 << ACTOR_BITS) - 1)) as u32);
        queue.start(a);
        let u = rng.next_u64();
        let lock = &mut lock_state[(u >> 40) as usize & (locks as usize - 1)];
        let held = t < lock.free_at;
        let mut grant = t.max(lock.free_at);
        if lock.owner != a {
            grant += transfer.sample(&table, &mut rng);
        }
        let hold = if cv > 0.0 {
            mul_q32(hold_mean, hold_jitter.factor(table.draw(&mut rng)))
        } else {
            hold_mean
        };
        let release = grant + hold;
        lock.free_at = release;
        lock.owner = a;
        let wait = grant - t;
        out.contended += u64::from(held);
        out.wait_total += wait;
        out.hold_total += hold;
        hist.record(wait);
        let next = release + work.sample(&table, &mut rng);
        queue.push(a, next << ACTOR_BITS | u64::from(a));
        queue.finish();
        out.events += 1;
        out.end = t;
    }
    out.wait_p99_ns = hist.value_at_quantile(0.99);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_run_and_contention_grows_with_fewer_locks() {
        let cfg = SkeletonConfig::node_benchmark(200_000);
        let a = run(&cfg);
        assert_eq!(a, run(&cfg));
        assert_eq!(a.events, 200_000);
        let one = run(&SkeletonConfig { locks: 1, ..cfg });
        // One lock for 64 actors saturates it: nearly every request waits, and simulated time
        // advances by about one section (hold and transfer) per event.
        assert!(one.contended > 190_000, "{one:?}");
        assert!(a.contended < one.contended / 4, "{a:?} {one:?}");
        let per_event_ns = one.end as f64 / 1000.0 / one.events as f64;
        assert!((per_event_ns - 150.0).abs() < 15.0, "{per_event_ns}");
        // Mean hold as drawn, and exactly the mean without variability.
        let hold_ns = a.hold_total as f64 / 1000.0 / a.events as f64;
        assert!((hold_ns - 50.0).abs() < 1.0, "{hold_ns}");
        let fixed = run(&SkeletonConfig { cv: 0.0, ..cfg });
        assert_eq!(fixed.hold_total, 50_000 * fixed.events);
    }
}
