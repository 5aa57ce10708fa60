//! The legacy design (5.11 .. 6.8): three global spinlocks and the purge mutex.
//!
//! - `free_vmap_area_lock`: the free tree (lowest-fit allocation, merging at purge).
//! - `vmap_area_lock`: the busy tree. One vmalloc takes it twice (insert, then
//!   `setup_vmalloc_vm`), one vfree once (`find_unlink_vmap_area`), one lookup once.
//! - `purge_vmap_area_lock`: lazily freed areas, merged into the purge tree.
//! - `vmap_purge_lock` (mutex): serializes purges. A purge splices the purge list out, flushes
//!   the TLB, then merges every block back into the free tree under `free_vmap_area_lock`,
//!   subtracting each from `vmap_lazy_nr`; with lock breaking it lets waiters in between blocks
//!   while the backlog is under twice `lazy_max_pages()`.

use std::collections::VecDeque;

use crate::model::common::Core;
use crate::model::engine::{Cx, Outcome, Step};
use crate::model::env::{Env, Ps};
use crate::model::lock::{LockId, LockKind};
use crate::model::pack::Pack;
use crate::model::space::{Area, FreeSpace};
use crate::model::steps::{self, AllocRequest, Allocator};
use crate::model::SetupPlan;

/// The legacy design's own steps: the purge.
#[derive(Clone, Copy, Debug)]
pub enum Purge {
    /// Take the purge mutex.
    Start,
    /// Splice the purge list out under `purge_vmap_area_lock`.
    Splice,
    /// Merge the next area (or all of them) into the free tree.
    MergeNext,
    End,
}

impl Pack for Purge {
    fn pack(self) -> u64 {
        self as u64
    }

    fn unpack(word: u64) -> Self {
        match word {
            0 => Purge::Start,
            1 => Purge::Splice,
            2 => Purge::MergeNext,
            _ => Purge::End,
        }
    }
}

type Act = steps::Act<Purge>;

/// The legacy allocator's state.
#[derive(Debug)]
pub struct Legacy {
    core: Core,
    busy_lock: LockId,
    purge_lock: LockId,
    busy_areas: u64,
    purge_tree: FreeSpace,
    purge_tree_areas: u64,
    purging: VecDeque<(u64, u64)>,
}

impl Legacy {
    pub fn new(env: &Env, plan: &SetupPlan<'_>) -> Self {
        let mut busy_lock = 0;
        let mut purge_lock = 0;
        let mut core = Core::new(env, |locks| {
            busy_lock = locks.add_class("vmap_area_lock", LockKind::Spinlock, 1);
            purge_lock = locks.add_class("purge_vmap_area_lock", LockKind::Spinlock, 1);
        });
        if env.legacy_locks_share_line {
            core.locks
                .share_line(&[core.free_lock, busy_lock, purge_lock]);
        }
        let mut busy_areas = 0;
        core.set_up(env, plan, |_| busy_areas += 1);
        Legacy {
            core,
            busy_lock,
            purge_lock,
            busy_areas,
            purge_tree: FreeSpace::empty(),
            purge_tree_areas: 0,
            purging: VecDeque::new(),
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// A `vmap_area_lock` section, walking the busy tree or not.
    fn busy_section(&mut self, cx: &mut Cx<'_, Act>, mean: Ps, walk: bool, lines: u32) -> Ps {
        let walk = walk.then_some(self.busy_areas);
        self.core
            .tree_section(cx, self.busy_lock, mean, walk, lines)
    }
}

impl Allocator for Legacy {
    type Own = Purge;

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn separate_setup_vm(&self) -> bool {
        true
    }

    fn alloc(&mut self, req: AllocRequest, cx: &mut Cx<'_, Act>) -> Ps {
        self.core.free_fit(cx, req, None)
    }

    fn busy_insert(&mut self, _: Area, cx: &mut Cx<'_, Act>) -> Ps {
        self.busy_areas += 1;
        let (mean, lines) = (cx.env.cost.busy_insert, cx.env.lines.busy_insert);
        self.busy_section(cx, mean, true, lines)
    }

    fn setup_vm(&mut self, _: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let (mean, lines) = (cx.env.cost.setup_vm, cx.env.lines.setup_vm);
        self.busy_section(cx, mean, false, lines)
    }

    fn busy_unlink(&mut self, _: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let (mean, lines) = (cx.env.cost.busy_unlink, cx.env.lines.busy_unlink);
        let t = self.busy_section(cx, mean, true, lines);
        self.busy_areas -= 1;
        t
    }

    fn lookup(&mut self, _: u32, _: Area, _: u32, cx: &mut Cx<'_, Act>) -> Ps {
        let (mean, lines) = (cx.env.cost.lookup, cx.env.lines.lookup);
        self.busy_section(cx, mean, true, lines)
    }

    /// Merge into the purge tree under `purge_vmap_area_lock`.
    fn lazy_insert(&mut self, area: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let env = cx.env;
        let nodes = self.purge_tree.blocks();
        let work = cx.work(env.cost.lazy_insert + env.walk_cpu(nodes)) + env.walk_stall(nodes);
        self.purge_tree.merge(area.start, area.end());
        self.purge_tree_areas += 1;
        self.core
            .locks
            .section(cx, self.purge_lock, work, env.lines.lazy_insert)
    }

    fn purge_start(&self) -> Purge {
        Purge::Start
    }

    fn own(&mut self, purge: Purge, cx: &mut Cx<'_, Act>) -> Outcome {
        let env = cx.env;
        let t = match purge {
            Purge::Start => return self.core.lock_purge(cx, Act::Design(Purge::Splice)),
            Purge::Splice => {
                let work = cx.work(env.cost.list_splice);
                let t = self
                    .core
                    .locks
                    .section(cx, self.purge_lock, work, env.lines.list_splice);
                self.purging = self.purge_tree.take_all().into();
                self.core.counters.purges += 1;
                self.core.counters.purged_areas += std::mem::take(&mut self.purge_tree_areas);
                if self.purging.is_empty() {
                    cx.then([Step::Act(Act::Design(Purge::End))]);
                } else {
                    let flush = cx.work(env.cost.tlb_flush);
                    cx.then([Step::Work(flush), Step::Act(Act::Design(Purge::MergeNext))]);
                }
                t
            }
            Purge::MergeNext => {
                // cond_resched_lock() lets waiters in between areas while the backlog is below
                // twice lazy_max_pages(); otherwise the whole list goes in one hold.
                let breaks = env.purge_lock_break && self.core.lazy_pages < 2 * env.lazy_max_pages;
                let n = if breaks { 1 } else { self.purging.len() };
                let chunk: Vec<(u64, u64)> = self.purging.drain(..n).collect();
                let mut extra = 0;
                for &(s, e) in &chunk {
                    extra += self.core.lazy_sub_in_section(env, cx.cpu, e - s);
                }
                let t = self.core.merge_areas(cx, &chunk, extra);
                let next = if self.purging.is_empty() {
                    Purge::End
                } else {
                    Purge::MergeNext
                };
                cx.then([Step::Act(Act::Design(next))]);
                t
            }
            Purge::End => self.core.unlock_purge(cx, Act::Design(Purge::Start)),
        };
        Outcome::At(t)
    }
}
