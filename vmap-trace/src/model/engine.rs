//! The discrete-event engine: CPUs run actors (workload threads and kernel workers), each actor
//! executes a queue of steps, and steps that touch shared state run in global time order.
//!
//! A step is private CPU work (folded into the actor's local clock, no event), a design action
//! (runs at an event so that locks see requests in time order), or the end of an operation
//! (latency bookkeeping). A design expands each workload operation into steps and its actions may
//! push follow-up steps, spawn kernel workers or wake sleeping ones.
//!
//! Kernel workers (`schedule_work`) run on a CPU: on an idle one when there is one, otherwise on
//! the requesting CPU, where a closed-loop thread yields at its next step boundary until the
//! worker finishes or sleeps. Open-loop CPUs are idle between requests; workers run beside them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp};

use crate::model::draw::SimRng;
use crate::model::env::{ns, Env, Ps};
use crate::model::pack::Pack;
use crate::model::queue::EventQueue;
use crate::model::space::Area;
use crate::model::stats::OpStats;
use crate::model::steps::AllocRequest;
use crate::model::workload::{
    alloc_op, draw_count, draw_size, lookup_offset, Next, Op, OpenLoop, ThreadGroup, ThreadScript,
};

/// Operation kinds, for latency statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Vmalloc,
    Vfree,
    VmMapRam,
    VmUnmapRam,
    Lookup,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Vmalloc,
        OpKind::Vfree,
        OpKind::VmMapRam,
        OpKind::VmUnmapRam,
        OpKind::Lookup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Vmalloc => "vmalloc",
            OpKind::Vfree => "vfree",
            OpKind::VmMapRam => "vm_map_ram",
            OpKind::VmUnmapRam => "vm_unmap_ram",
            OpKind::Lookup => "find_vmap_area",
        }
    }
}

/// What a workload slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldKind {
    /// A vmalloc area: own vmap area, pages allocated and mapped.
    Vmalloc,
    /// A large vm_map_ram: own vmap area, caller's pages mapped.
    MapRam,
    /// A small vm_map_ram carved from the per-CPU vmap block starting at `block`.
    MapRamInBlock { block: u64 },
}

/// An allocation held by a workload thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub area: Area,
    /// Pages mapped (the guard page excluded).
    pub mapped_pages: u32,
    pub kind: HeldKind,
}

/// One step of an actor.
#[derive(Clone, Copy, Debug)]
pub enum Step<A> {
    /// Private CPU time.
    Work(Ps),
    /// A design action, run at an event in global time order.
    Act(A),
    /// The current operation ends here.
    Done(OpKind),
}

/// Result of a design action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The actor continues at this time.
    At(Ps),
    /// The actor sleeps until a design wakes it.
    Blocked,
}

/// Where a kernel worker runs.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// `schedule_work_on(cpu)`.
    Cpu(u32),
    /// `schedule_work()` from this CPU: an idle CPU if there is one, else this one.
    Near(u32),
}

enum Request<A> {
    Spawn { on: Placement, first: A },
    Wake { actor: u32, at: Ps },
}

/// What a design action sees: the time, the acting CPU and its slots, and ways to ask the engine
/// for follow-up steps, workers and wake-ups.
pub struct Cx<'a, A> {
    pub now: Ps,
    pub actor: u32,
    pub cpu: u32,
    pub env: &'a Env,
    pub rng: &'a mut SimRng,
    slots: &'a mut Vec<Option<Held>>,
    /// The allocation call in progress (at most one per actor).
    alloc: &'a mut AllocRequest,
    steps: &'a mut StepStack,
    requests: &'a mut Vec<Request<A>>,
}

impl<A: Pack> Cx<'_, A> {
    /// Run these steps next, in order, before the rest of the actor's queue. An array, so that
    /// the length and the steps' kinds are known where this is inlined.
    #[inline(always)]
    pub fn then<const N: usize>(&mut self, steps: [Step<A>; N]) {
        // The usual follow-ups (one action, or work then an action) as one entry each, the
        // checks folded away; longer sequences through the general fold.
        match *steps.as_slice() {
            [Step::Act(act)] => self.push_act(0, act),
            [Step::Work(work), Step::Act(act)] => self.push_act(work, act),
            _ => self.steps.push_front(&steps),
        }
    }

    /// Put `act`, after `work` of private CPU time, in front of the actor's steps. Several of
    /// these build a sequence back to front: the cheap form of [`Cx::then`] for the steps of
    /// every operation (one entry written per step, no per-step dispatch).
    #[inline(always)]
    pub fn push_act(&mut self, work: Ps, act: A) {
        self.steps.entries.push(Entry {
            work,
            then: Then::act(act),
        });
    }

    /// Put the end of the current operation, after `work`, in front of the actor's steps (see
    /// [`Cx::push_act`]).
    #[inline(always)]
    pub fn push_done(&mut self, work: Ps, kind: OpKind) {
        self.steps.entries.push(Entry {
            work,
            then: Then::done(kind),
        });
    }

    /// [`Cx::then`] for a number of steps known only at run time.
    pub fn then_all(&mut self, steps: &[Step<A>]) {
        self.steps.push_front(steps);
    }

    /// CPU work of mean `mean` on this CPU (SMT slowdown and variability applied).
    #[inline(always)]
    pub fn work(&mut self, mean: Ps) -> Ps {
        self.env.cpu_work(self.cpu, mean, self.rng)
    }

    pub fn spawn(&mut self, on: Placement, first: A) {
        self.requests.push(Request::Spawn { on, first });
    }

    pub fn wake(&mut self, actor: u32, at: Ps) {
        self.requests.push(Request::Wake { actor, at });
    }

    /// Drop the rest of the current operation's steps (the allocation failed).
    pub fn abort_op(&mut self) {
        self.steps.drop_until_done();
    }

    /// The allocation call in progress.
    pub fn alloc_request(&self) -> AllocRequest {
        *self.alloc
    }

    /// Start an allocation call: what [`Cx::alloc_request`] returns until the next one.
    pub fn set_alloc_request(&mut self, req: AllocRequest) {
        *self.alloc = req;
    }

    pub fn slots_get(&self, slot: u32) -> Option<Held> {
        self.slots.get(slot as usize).copied().flatten()
    }

    pub fn held(&self, slot: u32) -> Held {
        self.slots[slot as usize].expect("workload slot holds an area")
    }

    pub fn hold(&mut self, slot: u32, held: Held) {
        self.slots[slot as usize] = Some(held);
    }

    pub fn release(&mut self, slot: u32) -> Held {
        self.slots[slot as usize]
            .take()
            .expect("workload slot holds an area")
    }
}

/// A kernel design as the engine drives it.
pub trait Design {
    /// Stored packed: see [`crate::model::pack`].
    type Act: Pack + std::fmt::Debug;
    /// Push the steps of one workload operation.
    fn begin(&mut self, op: Op, cx: &mut Cx<'_, Self::Act>);
    /// Run one action at `cx.now`.
    fn act(&mut self, act: Self::Act, cx: &mut Cx<'_, Self::Act>) -> Outcome;
    /// [`Design::act`] of a packed action (what the engine calls): unpacked in the design's
    /// own code, where the compiler merges the unpacking with the action's dispatch.
    fn act_packed(&mut self, act: u64, cx: &mut Cx<'_, Self::Act>) -> Outcome {
        self.act(Self::Act::unpack(act), cx)
    }
    /// Forget statistics (end of warm-up).
    fn reset_stats(&mut self);
}

/// The load an engine runs.
pub enum Load<'w> {
    /// One entry per thread: its group; threads run on `cpus[i]`.
    Closed {
        groups: &'w [ThreadGroup],
        thread_groups: Vec<usize>,
        cpus: Vec<u32>,
    },
    /// One arrival process per CPU with nonzero share.
    Open { spec: &'w OpenLoop },
}

enum Role {
    Closed(ThreadScript),
    Open(Box<OpenCpu>),
    Worker,
}

/// An actor's steps. Steps are only ever added in front of the others ([`Cx::then`]) and taken
/// from the front, so they are a stack, the next one last. Private CPU work is folded into the
/// step that follows it: work steps need no dispatch of their own, and every entry taken off
/// the stack is a point where something happens.
struct StepStack {
    entries: Vec<Entry>,
}

/// Private CPU work, then an action, the end of an operation, or nothing (work at the very end).
#[derive(Clone, Copy, Debug)]
struct Entry {
    work: Ps,
    then: Then,
}

/// What an entry ends with, in one word (see [`crate::model::pack`]): the low two bits say
/// what, the rest is the packed action or the operation kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Then(u64);

/// What a [`Then`] word holds, decoded.
enum Point<A> {
    Act(A),
    Done(OpKind),
    Nothing,
}

impl Then {
    const NOTHING: Then = Then(0);
    const DONE: u64 = 1;
    const ACT: u64 = 2;

    #[inline(always)]
    fn act<A: Pack>(act: A) -> Then {
        Then(act.pack() << 2 | Then::ACT)
    }

    #[inline(always)]
    fn done(kind: OpKind) -> Then {
        Then((kind as u64) << 2 | Then::DONE)
    }

    /// The packed action, if this is one.
    #[inline(always)]
    fn packed_act(self) -> Option<u64> {
        (self.0 & 3 == Then::ACT).then_some(self.0 >> 2)
    }

    #[inline(always)]
    fn point<A: Pack>(self) -> Point<A> {
        match self.0 & 3 {
            Then::ACT => Point::Act(A::unpack(self.0 >> 2)),
            Then::DONE => Point::Done(OpKind::ALL[(self.0 >> 2) as usize % OpKind::ALL.len()]),
            _ => Point::Nothing,
        }
    }
}

impl StepStack {
    fn new() -> Self {
        StepStack {
            entries: Vec::new(),
        }
    }

    /// Put `steps` in front of the others, in order.
    fn push_front<A: Pack>(&mut self, steps: &[Step<A>]) {
        self.entries.reserve(steps.len());
        for &step in steps.iter().rev() {
            let then = match step {
                Step::Work(work) => {
                    match self.entries.last_mut() {
                        Some(next) => next.work += work,
                        None => self.entries.push(Entry {
                            work,
                            then: Then::NOTHING,
                        }),
                    }
                    continue;
                }
                Step::Act(act) => Then::act(act),
                Step::Done(kind) => Then::done(kind),
            };
            self.entries.push(Entry { work: 0, then });
        }
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<Entry> {
        self.entries.pop()
    }

    /// Drop the steps before the end of the current operation, its CPU work included.
    fn drop_until_done(&mut self) {
        while let Some(entry) = self.entries.last_mut() {
            if entry.then.0 & 3 == Then::DONE {
                entry.work = 0;
                return;
            }
            self.entries.pop();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    /// The steps in order, as designs pushed them (design unit tests).
    #[cfg(test)]
    fn to_steps<A: Pack>(&self) -> Vec<Step<A>> {
        let mut steps = Vec::new();
        for entry in self.entries.iter().rev() {
            if entry.work > 0 {
                steps.push(Step::Work(entry.work));
            }
            match entry.then.point() {
                Point::Act(act) => steps.push(Step::Act(act)),
                Point::Done(kind) => steps.push(Step::Done(kind)),
                Point::Nothing => {}
            }
        }
        steps
    }
}

struct Actor {
    cpu: u32,
    role: Role,
    /// The action of the actor's pending event (kept out of `steps`: it is taken at once), or
    /// `Then::NOTHING`.
    due: Then,
    steps: StepStack,
    slots: Vec<Option<Held>>,
    alloc: AllocRequest,
    op_start: Ps,
    iter_start: Ps,
}

#[derive(Default)]
struct CpuSlot {
    /// The closed-loop thread of this CPU. Open-loop CPUs have idle time between requests, so
    /// workers run beside them instead of preempting them.
    thread: Option<u32>,
    worker: Option<u32>,
    /// Workers waiting for this CPU, with the time each is ready.
    pending: VecDeque<(u32, Ps)>,
    /// The thread yielded to workers and waits for them.
    parked: bool,
}

/// Open-loop state of one CPU.
struct OpenCpu {
    next_alloc: Ps,
    interarrival: Exp<f64>,
    /// Frees due, as (arrival, slot).
    frees: BinaryHeap<Reverse<(Ps, u32)>>,
    free_slots: Vec<u32>,
    lookups_left: u32,
    current: Option<Op>,
}

/// Bits of an event key holding the actor; the rest hold the time.
pub(crate) const ACTOR_BITS: u32 = 18;
/// Simulated time must stay below this (2^46 ps, about 70 s).
const MAX_TIME: Ps = 1 << (64 - ACTOR_BITS);

/// The actor of an event key.
pub(crate) fn actor_of(key: u64) -> u32 {
    (key & ((1 << ACTOR_BITS) - 1)) as u32
}

/// A run reached the simulated-time horizon before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the simulation reached its horizon of {:.0} s of simulated time before the end of the run \
     (a load too light to reach the run's end, or a run too long)",
    MAX_TIME as f64 / 1e12
)]
pub struct HorizonReached;

/// A simulation in progress.
pub struct Engine<'w, D: Design> {
    pub design: D,
    env: Env,
    rng: SimRng,
    actors: Vec<Actor>,
    free_workers: Vec<u32>,
    cpus: Vec<CpuSlot>,
    /// Per CPU: a kernel worker runs or waits there ([`CpuSlot`]'s `worker` or `pending`).
    /// Checked at every event of a closed-loop thread; a byte per CPU stays in the first-level
    /// cache where the slots often did not.
    workers_on: Vec<bool>,
    /// Pending events as `time << ACTOR_BITS | actor`, at most one per actor: equal times run in
    /// actor order, deterministically.
    queue: EventQueue,
    now: Ps,
    /// Actions may run without going through the queue up to this time (warm-up and
    /// measurement boundaries are checked on queued events only).
    inline_limit: Ps,
    requests: Vec<Request<D::Act>>,
    groups: &'w [ThreadGroup],
    open: Option<&'w OpenLoop>,
    pub stats: OpStats,
    /// Design actions run, warm-up included.
    pub events: u64,
}

impl<'w, D: Design> Engine<'w, D> {
    pub fn new(design: D, env: Env, load: Load<'w>, seed: u64) -> Self {
        let mut rng = SimRng::seed_from_u64(seed);
        let mut cpus: Vec<CpuSlot> = (0..env.cpus).map(|_| CpuSlot::default()).collect();
        let mut actors = Vec::new();
        let (groups, open, group_count) = match load {
            Load::Closed {
                groups,
                thread_groups,
                cpus: placement,
            } => {
                for (g, cpu) in thread_groups.into_iter().zip(placement) {
                    cpus[cpu as usize].thread = Some(actors.len() as u32);
                    let slots = vec![None; groups[g].allocs_per_iteration as usize];
                    actors.push(Actor::new(cpu, Role::Closed(ThreadScript::new(g)), slots));
                }
                (groups, None, groups.len())
            }
            Load::Open { spec } => {
                let shares = open_shares(spec, env.cpus);
                for (cpu, share) in shares.into_iter().enumerate() {
                    let rate_per_ps = spec.allocs_per_s * share / 1e12;
                    if rate_per_ps <= 0.0 {
                        continue;
                    }
                    let interarrival = Exp::new(rate_per_ps).expect("positive rate");
                    // Arrivals past the horizon never run; capping them there keeps every
                    // later `t + work` far from overflowing.
                    let first = (interarrival.sample(&mut rng) as Ps).min(MAX_TIME);
                    let state = OpenCpu {
                        next_alloc: first,
                        interarrival,
                        frees: BinaryHeap::new(),
                        free_slots: Vec::new(),
                        lookups_left: 0,
                        current: None,
                    };
                    actors.push(Actor::new(
                        cpu as u32,
                        Role::Open(Box::new(state)),
                        Vec::new(),
                    ));
                }
                (&[][..], Some(spec), 0)
            }
        };
        Engine {
            design,
            env,
            rng,
            actors,
            free_workers: Vec::new(),
            workers_on: vec![false; cpus.len()],
            cpus,
            queue: EventQueue::new(),
            now: 0,
            inline_limit: 0,
            requests: Vec::new(),
            groups,
            open,
            stats: OpStats::new(group_count),
            events: 0,
        }
    }

    /// Warm up for at least `min_warmup` and until `warm(design)` holds (at most `max_warmup`),
    /// forget the warm-up's statistics, then simulate `measure` more.
    ///
    /// Fails if the run would execute an event at the time horizon ([`MAX_TIME`], about 70 s):
    /// events are clamped there, so a run whose end lies past it would never end.
    pub fn run(
        &mut self,
        min_warmup: Ps,
        max_warmup: Ps,
        warm: impl Fn(&D) -> bool,
        measure: Ps,
    ) -> Result<(), HorizonReached> {
        let threads: Vec<u32> = (0..self.actors.len() as u32).collect();
        for a in threads {
            // Threads start within the first microsecond so they do not move in lockstep.
            let start = self.rng.random_range(0..ns(1000.0));
            self.actors[a as usize].iter_start = start;
            self.schedule(a, start);
        }
        let mut end = None;
        self.inline_limit = min_warmup;
        while let Some(key) = self.queue.first() {
            let (t, a) = (key >> ACTOR_BITS, actor_of(key));
            match end {
                None if t >= min_warmup && (t >= max_warmup || warm(&self.design)) => {
                    end = Some(t + measure);
                    self.inline_limit = t + measure;
                    self.stats = OpStats::new(self.stats.groups());
                    self.design.reset_stats();
                }
                Some(end) if t >= end => break,
                _ => {}
            }
            if t >= MAX_TIME - 1 {
                return Err(HorizonReached);
            }
            self.now = t;
            self.queue.start(a);
            self.advance(a, t);
            self.queue.finish();
        }
        Ok(())
    }

    /// Give `actor` its next event at `at`. Returns whether that is the earliest event when
    /// `actor` is the one running.
    fn schedule(&mut self, actor: u32, at: Ps) -> bool {
        debug_assert!(actor < 1 << ACTOR_BITS);
        // Events past the end of any run never execute; clamping keeps the key valid.
        let at = at.min(MAX_TIME - 1);
        self.queue.push(actor, at << ACTOR_BITS | u64::from(actor))
    }

    fn must_yield(&self, a: u32) -> bool {
        let actor = &self.actors[a as usize];
        if !matches!(actor.role, Role::Closed(_)) {
            return false;
        }
        self.workers_on[actor.cpu as usize]
    }

    /// Run actor `a` from `t` (the current event) until it waits for its next event.
    fn advance(&mut self, a: u32, mut t: Ps) {
        // A closed-loop thread yields to the kernel workers of its CPU at its next step. Workers
        // only arrive through the requests that actions make, so this is checked on entry and
        // after requests were served.
        if self.must_yield(a) {
            self.park(a, t);
            return;
        }
        loop {
            let actor = &mut self.actors[a as usize];
            let due = std::mem::replace(&mut actor.due, Then::NOTHING);
            // The action stays packed until the design runs it.
            let act = match due.packed_act() {
                // This event's action.
                Some(act) => act,
                None => {
                    let Some(entry) = actor.steps.pop() else {
                        if matches!(actor.role, Role::Worker) {
                            self.worker_finished(a, t);
                            return;
                        }
                        t = self.next_op(a, t);
                        continue;
                    };
                    t += entry.work;
                    let Some(act) = entry.then.packed_act() else {
                        if let Point::Done(kind) = entry.then.point::<D::Act>() {
                            self.op_done(a, kind, t);
                        }
                        continue;
                    };
                    if t > self.now {
                        // Run it now if no other event comes first (saves a queue round trip).
                        if self.schedule(a, t) && t < self.inline_limit {
                            self.queue.start(a);
                            self.now = t;
                        } else {
                            self.actors[a as usize].due = entry.then;
                            return;
                        }
                    }
                    act
                }
            };
            let mut cx =
                self.actors[a as usize].cx(a, t, &self.env, &mut self.rng, &mut self.requests);
            let outcome = self.design.act_packed(act, &mut cx);
            self.events += 1;
            let served = self.serve_requests(t);
            match outcome {
                Outcome::At(next) => t = next,
                Outcome::Blocked => {
                    self.worker_sleeps(a, t);
                    return;
                }
            }
            if served && self.must_yield(a) {
                self.park(a, t);
                return;
            }
        }
    }

    /// The closed-loop thread `a` yields its CPU to workers at `t`.
    fn park(&mut self, a: u32, t: Ps) {
        let cpu = self.actors[a as usize].cpu as usize;
        self.cpus[cpu].parked = true;
        if self.cpus[cpu].worker.is_none() {
            self.start_pending(cpu as u32, t);
        }
    }

    /// Start the next operation of a workload thread; returns its local time.
    fn next_op(&mut self, a: u32, mut t: Ps) -> Ps {
        loop {
            let actor = &mut self.actors[a as usize];
            let op = match &mut actor.role {
                Role::Closed(script) => {
                    let group = script.group;
                    match script.next(&self.groups[group], &mut self.rng) {
                        Next::Op(op) => {
                            actor.op_start = t;
                            op
                        }
                        Next::Think(d) => {
                            t += ns(d);
                            continue;
                        }
                        Next::IterationDone => {
                            self.stats.record_iteration(group, t - actor.iter_start);
                            actor.iter_start = t;
                            continue;
                        }
                    }
                }
                Role::Open(state) => {
                    let spec = self.open.expect("open-loop actor has a spec");
                    let (arrival, op) = state.next(spec, &actor.slots, &mut self.rng);
                    let arrival = arrival.unwrap_or(t);
                    t = t.max(arrival);
                    actor.op_start = arrival;
                    if let Op::Vmalloc { slot, .. } | Op::VmMapRam { slot, .. } = op {
                        if actor.slots.len() <= slot as usize {
                            actor.slots.resize(slot as usize + 1, None);
                        }
                    }
                    op
                }
                Role::Worker => unreachable!("workers have no operations"),
            };
            let mut cx = actor.cx(a, t, &self.env, &mut self.rng, &mut self.requests);
            self.design.begin(op, &mut cx);
            debug_assert!(self.requests.is_empty(), "begin() only pushes steps");
            return t;
        }
    }

    fn op_done(&mut self, a: u32, kind: OpKind, t: Ps) {
        let actor = &mut self.actors[a as usize];
        self.stats.record_op(kind, t - actor.op_start);
        if let Role::Open(state) = &mut actor.role {
            let spec = self.open.expect("open-loop actor has a spec");
            state.completed(spec, t, &mut self.rng);
        }
    }

    /// Spawn and wake what the last action asked for; false when it asked nothing.
    fn serve_requests(&mut self, t: Ps) -> bool {
        if self.requests.is_empty() {
            return false;
        }
        let requests = std::mem::take(&mut self.requests);
        for r in &requests {
            match *r {
                Request::Spawn { on, first } => self.spawn_worker(on, first, t),
                Request::Wake { actor, at } => self.make_ready(actor, at),
            }
        }
        self.requests = requests;
        self.requests.clear();
        true
    }

    fn spawn_worker(&mut self, on: Placement, first: D::Act, t: Ps) {
        let cpu = match on {
            Placement::Cpu(c) => c % self.env.cpus,
            Placement::Near(c) => self
                .cpus
                .iter()
                .position(|s| s.thread.is_none() && s.worker.is_none() && s.pending.is_empty())
                .map_or(c, |i| i as u32),
        };
        let w = match self.free_workers.pop() {
            Some(w) => {
                let actor = &mut self.actors[w as usize];
                actor.cpu = cpu;
                actor.steps.clear();
                w
            }
            None => {
                self.actors.push(Actor::new(cpu, Role::Worker, Vec::new()));
                (self.actors.len() - 1) as u32
            }
        };
        self.actors[w as usize].due = Then::act(first);
        self.make_ready(w, t);
    }

    /// A worker is ready to run at `at`: it runs at once if its CPU is free, else it waits.
    fn make_ready(&mut self, w: u32, at: Ps) {
        let cpu = self.actors[w as usize].cpu;
        let slot = &mut self.cpus[cpu as usize];
        slot.pending.push_back((w, at));
        if slot.worker.is_none() && (slot.thread.is_none() || slot.parked) {
            self.start_pending(cpu, at);
        }
        self.note_workers(cpu);
    }

    /// Bring `workers_on` up to date for `cpu` after its worker or queue changed.
    fn note_workers(&mut self, cpu: u32) {
        let c = &self.cpus[cpu as usize];
        self.workers_on[cpu as usize] = c.worker.is_some() || !c.pending.is_empty();
    }

    fn start_pending(&mut self, cpu: u32, t: Ps) {
        if let Some((w, ready)) = self.cpus[cpu as usize].pending.pop_front() {
            self.cpus[cpu as usize].worker = Some(w);
            self.schedule(w, t.max(ready));
        }
        self.note_workers(cpu);
    }

    /// The running worker leaves the CPU (finished or asleep): the next worker or the parked
    /// thread gets it.
    fn release_cpu(&mut self, cpu: u32, t: Ps) {
        let slot = &mut self.cpus[cpu as usize];
        slot.worker = None;
        if !slot.pending.is_empty() {
            self.start_pending(cpu, t);
        } else if slot.parked {
            slot.parked = false;
            let thread = slot.thread.expect("a parked thread exists");
            self.schedule(thread, t);
        }
        self.note_workers(cpu);
    }

    fn worker_finished(&mut self, w: u32, t: Ps) {
        let cpu = self.actors[w as usize].cpu;
        self.free_workers.push(w);
        self.release_cpu(cpu, t);
    }

    fn worker_sleeps(&mut self, w: u32, t: Ps) {
        debug_assert!(
            matches!(self.actors[w as usize].role, Role::Worker),
            "only workers sleep"
        );
        let cpu = self.actors[w as usize].cpu;
        self.release_cpu(cpu, t);
    }

    /// Number of workload threads (closed loop) or request-issuing CPUs (open loop).
    pub fn threads(&self) -> u32 {
        self.actors
            .iter()
            .filter(|a| !matches!(a.role, Role::Worker))
            .count() as u32
    }
}

impl Actor {
    fn new(cpu: u32, role: Role, slots: Vec<Option<Held>>) -> Self {
        Actor {
            cpu,
            role,
            due: Then::NOTHING,
            steps: StepStack::new(),
            slots,
            alloc: AllocRequest::default(),
            op_start: 0,
            iter_start: 0,
        }
    }

    /// What a design sees of this actor (number `id`) at `now`.
    fn cx<'a, A>(
        &'a mut self,
        id: u32,
        now: Ps,
        env: &'a Env,
        rng: &'a mut SimRng,
        requests: &'a mut Vec<Request<A>>,
    ) -> Cx<'a, A> {
        Cx {
            now,
            actor: id,
            cpu: self.cpu,
            env,
            rng,
            slots: &mut self.slots,
            alloc: &mut self.alloc,
            steps: &mut self.steps,
            requests,
        }
    }
}

/// Share of the open-loop allocations issued by each CPU.
fn open_shares(spec: &OpenLoop, cpus: u32) -> Vec<f64> {
    if spec.cpu_share.is_empty() {
        return vec![1.0 / f64::from(cpus); cpus as usize];
    }
    let total: f64 = spec.cpu_share.iter().sum();
    let mut shares: Vec<f64> = spec.cpu_share.iter().map(|s| s / total).collect();
    shares.resize(cpus as usize, 0.0);
    shares
}

impl OpenCpu {
    /// The next operation to run and when it arrived (`None`: now). Lookups follow their
    /// allocation at once; otherwise the earliest of the next allocation and the frees due is
    /// taken.
    fn next(
        &mut self,
        spec: &OpenLoop,
        slots: &[Option<Held>],
        rng: &mut SimRng,
    ) -> (Option<Ps>, Op) {
        if self.lookups_left > 0 {
            if let Some(Op::Vmalloc { slot, pages, .. } | Op::VmMapRam { slot, pages }) =
                self.current
            {
                if slots.get(slot as usize).is_some_and(Option::is_some) {
                    self.lookups_left -= 1;
                    let offset_pages = lookup_offset(spec.lookup_offset, pages, rng);
                    return (None, Op::Lookup { slot, offset_pages });
                }
            }
            self.lookups_left = 0;
        }
        let free_due = self.frees.peek().map(|Reverse((at, _))| *at);
        if let Some(at) = free_due.filter(|&at| at <= self.next_alloc) {
            let Reverse((_, slot)) = self.frees.pop().expect("peeked");
            self.free_slots.push(slot);
            self.current = None;
            return (Some(at), Op::Release { slot });
        }
        let arrival = self.next_alloc;
        self.next_alloc = self
            .next_alloc
            .saturating_add((self.interarrival.sample(rng) as Ps).max(1))
            .min(MAX_TIME);
        let slot = self.free_slots.pop().unwrap_or(slots.len() as u32);
        let size = draw_size(&spec.sizes, rng);
        let op = alloc_op(slot, size, spec.vm_map_ram_share, rng);
        self.current = Some(op);
        self.lookups_left = draw_count(spec.lookups_per_alloc, rng);
        (Some(arrival), op)
    }

    /// The current operation completed at `t`: an allocation schedules its free.
    fn completed(&mut self, spec: &OpenLoop, t: Ps, rng: &mut SimRng) {
        let Some(Op::Vmalloc { slot, .. } | Op::VmMapRam { slot, .. }) = self.current else {
            return;
        };
        if self.lookups_left > 0 {
            return; // lookups first; the free is scheduled after them
        }
        self.current = None;
        if rng.random::<f64>() < spec.frees_per_alloc {
            let life = if spec.lifetime_us > 0.0 {
                Exp::new(1.0 / (spec.lifetime_us * 1e6))
                    .expect("positive lifetime")
                    .sample(rng) as Ps
            } else {
                0
            };
            self.frees.push(Reverse((t.saturating_add(life), slot)));
        }
    }
}

/// Run `f` with a context for `cpu` at `now`, as a design action would see it; returns its
/// result and the steps it pushed (design unit tests).
#[cfg(test)]
pub fn with_test_cx<A: Pack, R>(
    env: &Env,
    cpu: u32,
    now: Ps,
    slots: usize,
    f: impl FnOnce(&mut Cx<'_, A>) -> R,
) -> (R, Vec<Step<A>>) {
    let mut rng = SimRng::seed_from_u64(1);
    let mut slots = vec![None; slots];
    let mut steps = StepStack::new();
    let mut requests = Vec::new();
    let mut alloc = AllocRequest::default();
    let mut cx = Cx {
        now,
        actor: 0,
        cpu,
        env,
        rng: &mut rng,
        slots: &mut slots,
        alloc: &mut alloc,
        steps: &mut steps,
        requests: &mut requests,
    };
    let r = f(&mut cx);
    (r, steps.to_steps())
}
