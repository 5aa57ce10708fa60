//! The least a discrete-event simulation of these locks does per event, as a measuring stick
//! for the model's speed (docs/model.md, "Speed"). Not part of the model.
//!
//! The model's node-sharded benchmark runs about 62 million design actions per simulated
//! second, and each touches state that other CPUs share (a lock or a contended counter), so
//! they run in global time order: through the event queue, or at once when the actor's next
//! action is the earliest of all. This module runs the same number of events with nothing but
//! that core, built from the model's own pieces: the tournament-tree queue, one FIFO spinlock
//! section per event (the grant at `max(request, free_at)`, a cache-line transfer when another
//! CPU held the lock last, a hold time), wait totals and a wait histogram, and the private CPU
//! work before the actor's next request, with the model's variability draws. No operation
//! steps, designs, pools, purging, workers or latency statistics.
//!
//! It does no more per event than the model does: a smaller queue (64 leaves where the model's
//! grows to 256 with purge workers), fewer and smaller lock records, and no more random draws
//! per event than the model makes (2.33 exponential variates per action in the node-sharded
//! benchmark, counted with a temporary counter in `draw.rs`): an actor takes its own lock (no
//! transfer, as a CPU re-taking its node's pool or lazy lock) and every `shared_every`-th
//! event a lock picked by a hash of the event number (no random draw), whose line usually
//! comes from another CPU. Its cost per event is therefore a floor for any simulation of this
//! model that keeps one event per locked step.

use rand::SeedableRng;

use crate::model::draw::{mul_q32, ExpTable, Jitter, SimRng, TimeDraw};
use crate::model::engine::{actor_of, ACTOR_BITS};
use crate::model::env::Ps;
use crate::model::queue::EventQueue;
use crate::model::stats::NsHistogram;

/// What a skeleton run did, so that the work cannot be optimized away and tests can check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkeletonRun {
    pub events: u64,
    /// Exponential variates drawn.
    pub draws: u64,
    /// Requests that found the lock held.
    pub contended: u64,
    /// Picoseconds, like the next three.
    pub wait_total: u64,
    pub hold_total: u64,
    pub work_total: u64,
    /// Simulated time of the last event.
    pub end: u64,
    /// Wait histogram's 99th percentile, in nanoseconds.
    pub wait_p99_ns: u64,
}

/// The shape of a skeleton run.
#[derive(Clone, Copy, Debug)]
pub struct SkeletonConfig {
    pub events: u64,
    /// Actors, one per CPU, each always waiting for its next event.
    pub actors: u32,
    /// Locks (a power of two, at least `actors` unless `shared_every` is 1); lock `a` is actor
    /// `a`'s own.
    pub locks: u32,
    /// Every this many events (globally), the section takes a lock picked by a hash instead of
    /// the actor's own.
    pub shared_every: u64,
    /// Mean hold time of a section.
    pub hold_ns: f64,
    /// Mean transfer of the lock's line when another CPU held it last.
    pub transfer_ns: f64,
    /// Mean private work between an actor's sections.
    pub work_ns: f64,
    /// Coefficients of variation of holds and work, and of transfers (the model's
    /// `hardware.cost_cv` and `hardware.transfer_cv`); 0 draws nothing for them.
    pub cost_cv: f64,
    pub transfer_cv: f64,
    pub seed: u64,
}

impl SkeletonConfig {
    /// The model's node-sharded benchmark reduced to its events: 64 threads, locks of 128
    /// nodes, the model's default variability (`cost_cv` 1, `transfer_cv` 0.5), and as many
    /// draws per event as the model (about 2.33).
    pub fn node_benchmark(events: u64) -> Self {
        SkeletonConfig {
            events,
            actors: 64,
            locks: 128,
            shared_every: 5,
            hold_ns: 50.0,
            transfer_ns: 100.0,
            work_ns: 1000.0,
            cost_cv: 1.0,
            transfer_cv: 0.5,
            seed: 1,
        }
    }
}

/// The model's draws, each variate counted where it is drawn (the tests check the draws per
/// event; the model itself does not count).
struct CountedDraws<'t> {
    table: &'t ExpTable,
    count: u64,
}

impl CountedDraws<'_> {
    #[inline(always)]
    fn variate(&mut self, rng: &mut SimRng) -> u64 {
        self.count += 1;
        self.table.draw(rng)
    }

    /// [`TimeDraw::sample`], counted.
    #[inline(always)]
    fn sample(&mut self, draw: &TimeDraw, rng: &mut SimRng) -> Ps {
        if draw.slope == 0 {
            return draw.base;
        }
        draw.base + mul_q32(draw.slope, self.variate(rng))
    }
}

#[derive(Clone, Copy)]
struct Lock {
    free_at: Ps,
    owner: u32,
}

/// Run the skeleton.
pub fn run(cfg: &SkeletonConfig) -> SkeletonRun {
    let SkeletonConfig {
        events,
        actors,
        locks,
        shared_every,
        hold_ns,
        transfer_ns,
        work_ns,
        cost_cv,
        transfer_cv,
        seed,
    } = *cfg;
    assert!(locks.is_power_of_two() && actors > 0 && shared_every > 0);
    // Own locks exist unless every section takes a hashed one.
    assert!(actors <= locks || shared_every == 1);
    let ps = |ns: f64| (ns * 1000.0) as Ps;
    let table = ExpTable::new();
    let mut rng = SimRng::seed_from_u64(seed);
    let transfer = TimeDraw::new(ps(transfer_ns), 1.0, transfer_cv);
    let hold_jitter = Jitter::new(1.0, cost_cv);
    let hold_mean = ps(hold_ns);
    let work_draw = TimeDraw::new(ps(work_ns), 1.0, cost_cv);
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
        queue.push(a, (u64::from(a) * 997) << ACTOR_BITS | u64::from(a));
    }
    let mut out = SkeletonRun {
        events: 0,
        draws: 0,
        contended: 0,
        wait_total: 0,
        hold_total: 0,
        work_total: 0,
        end: 0,
        wait_p99_ns: 0,
    };
    let mut draws = CountedDraws {
        table: &table,
        count: 0,
    };
    let mut until_shared = shared_every;
    while out.events < events {
        let Some(key) = queue.first() else { break };
        let (t, a) = (key >> ACTOR_BITS, actor_of(key));
        debug_assert!(t >= out.end, "events run in time order");
        queue.start(a);
        until_shared -= 1;
        let index = if until_shared == 0 {
            until_shared = shared_every;
            // A hash of the event number (a multiply-xorshift round): locks in no pattern, as
            // the nodes of the model's addresses. A Fibonacci hash alone spreads consecutive
            // events so evenly that they never meet on a lock.
            let h = out.events.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            ((h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 40) as usize
                & (locks as usize - 1)
        } else {
            a as usize
        };
        let lock = &mut lock_state[index];
        let held = t < lock.free_at;
        let mut grant = t.max(lock.free_at);
        if lock.owner != a {
            grant += draws.sample(&transfer, &mut rng);
        }
        let hold = if cost_cv > 0.0 {
            mul_q32(hold_mean, hold_jitter.factor(draws.variate(&mut rng)))
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
        let work = draws.sample(&work_draw, &mut rng);
        out.work_total += work;
        queue.push(a, (release + work) << ACTOR_BITS | u64::from(a));
        queue.finish();
        out.events += 1;
        out.end = t;
    }
    out.draws = draws.count;
    out.wait_p99_ns = hist.value_at_quantile(0.99);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulates_the_sections_it_claims_with_the_models_draws() {
        let cfg = SkeletonConfig::node_benchmark(200_000);
        let a = run(&cfg);
        assert_eq!(a, run(&cfg), "the same seed gives the same run");
        assert_eq!(a.events, 200_000);
        // Draws per event: a hold and a work draw, and a transfer for the shared sections and
        // the own locks another actor took meanwhile; no more than the model's 2.33.
        let per_event = a.draws as f64 / a.events as f64;
        assert!((2.2..=2.33).contains(&per_event), "{per_event}");
        // Means as drawn.
        let mean_ns = |total: u64, n: u64| total as f64 / 1000.0 / n as f64;
        assert!((mean_ns(a.hold_total, a.events) - 50.0).abs() < 1.0);
        assert!((mean_ns(a.work_total, a.events) - 1000.0).abs() < 15.0);
        // Mostly own locks: little waiting. One lock for all 64 actors saturates it: nearly
        // every request waits, and simulated time advances by one section (transfer and hold)
        // per event.
        let hashed = |locks, actors| SkeletonConfig {
            locks,
            actors,
            shared_every: 1,
            ..cfg
        };
        let single = run(&hashed(1, 1));
        assert_eq!(single.contended, 0, "one actor never waits for itself");
        let all_on_one = run(&hashed(1, 64));
        assert!(all_on_one.contended > 190_000, "{all_on_one:?}");
        let per_event_ns = mean_ns(all_on_one.end, all_on_one.events);
        assert!((per_event_ns - 150.0).abs() < 15.0, "{per_event_ns}");
        assert!(all_on_one.wait_p99_ns > 9000, "{all_on_one:?}");
        let spread = run(&hashed(128, 64));
        assert!(spread.contended < all_on_one.contended / 2, "{spread:?}");
        assert!(a.contended < spread.contended, "{a:?} {spread:?}");
        // Each coefficient drives its own draws: holds and work (two per event) with `cost_cv`,
        // transfers with `transfer_cv`.
        let no_transfer_cv = run(&SkeletonConfig {
            transfer_cv: 0.0,
            ..cfg
        });
        assert_eq!(no_transfer_cv.draws, 2 * no_transfer_cv.events);
        let no_cost_cv = run(&SkeletonConfig {
            cost_cv: 0.0,
            ..cfg
        });
        assert_eq!(no_cost_cv.hold_total, 50_000 * no_cost_cv.events);
        let transfers = no_cost_cv.draws as f64 / no_cost_cv.events as f64;
        assert!((0.2..=0.33).contains(&transfers), "{transfers}");
        // Without variability nothing is drawn and every hold is exactly the mean.
        let fixed = run(&SkeletonConfig {
            cost_cv: 0.0,
            transfer_cv: 0.0,
            ..cfg
        });
        assert_eq!(fixed.draws, 0);
        assert_eq!(fixed.hold_total, 50_000 * fixed.events);
    }
}
