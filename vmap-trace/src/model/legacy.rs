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

use crate::model::common::{lay_out_setup, Core, VMAP_BLOCK_PAGES, VMAP_MAX_ALLOC};
use crate::model::engine::{Cx, Design, Held, HeldKind, OpKind, Outcome, Step};
use crate::model::env::{Env, Ps};
use crate::model::lock::{LockId, LockKind};
use crate::model::space::{vmalloc_start_page, Area, FreeSpace, VMALLOC_SIZE};
use crate::model::workload::Op;
use crate::model::SetupPlan;

#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// Allocate an area of `pages` (guard included) from the free tree into `slot`.
    FreeFit {
        slot: u32,
        pages: u32,
        align: u32,
        kind: HeldKind,
        mapped: u32,
    },
    BusyInsert,
    SetupVm,
    BusyUnlink,
    Lookup,
    AccountPages,
    LazyAdd {
        slot: u32,
    },
    LazyInsert {
        slot: u32,
        kick: bool,
    },
    VbAlloc {
        slot: u32,
        pages: u32,
    },
    VbInstall {
        slot: u32,
        pages: u32,
    },
    VbFree {
        slot: u32,
    },
    PurgeStart,
    PurgeSplice,
    MergeNext,
    PurgeEnd,
}

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
        let mut holes = Vec::new();
        let top = lay_out_setup(
            env,
            plan.boot_areas,
            plan.boot_area_pages,
            &plan.threads,
            |_| busy_areas += 1,
            |a, _| holes.push((a.start, a.end())),
        );
        let end = vmalloc_start_page(env.page_size) + VMALLOC_SIZE / env.page_size;
        core.space = FreeSpace::with_holes(holes, top, end);
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

    fn busy_section(&mut self, cx: &mut Cx<'_, Act>, mean_ns: f64, walk: bool, lines: u32) -> Ps {
        let env = cx.env;
        let (walk_cpu, stall) = if walk {
            (
                env.walk_cpu_ns(self.busy_areas),
                env.walk_stall(self.busy_areas),
            )
        } else {
            (0.0, 0)
        };
        let work = cx.work(mean_ns + walk_cpu) + stall;
        self.core.locks.section(cx, self.busy_lock, work, lines)
    }
}

impl Design for Legacy {
    type Act = Act;

    fn begin(&mut self, op: Op, cx: &mut Cx<'_, Act>) {
        let c = &cx.env.cost;
        let (prepare, free_prepare) = (c.vmalloc_prepare_ns, c.vfree_prepare_ns);
        let (map, unmap, page_alloc, page_free) = (
            c.pte_map_ns,
            c.pte_unmap_ns,
            c.page_alloc_ns,
            c.page_free_ns,
        );
        match op {
            Op::Vmalloc { slot, pages, align } => {
                let pre = cx.work(prepare);
                let fill = cx.work(f64::from(pages) * (page_alloc + map));
                cx.then(&[
                    Step::Work(pre),
                    Step::Act(Act::FreeFit {
                        slot,
                        pages: pages + 1,
                        align,
                        kind: HeldKind::Vmalloc,
                        mapped: pages,
                    }),
                    Step::Act(Act::BusyInsert),
                    Step::Act(Act::SetupVm),
                    Step::Work(fill),
                    Step::Act(Act::AccountPages),
                    Step::Done(OpKind::Vmalloc),
                ]);
            }
            Op::VmMapRam { slot, pages } if pages <= VMAP_MAX_ALLOC => {
                let fill = cx.work(f64::from(pages) * map);
                cx.then(&[
                    Step::Act(Act::VbAlloc { slot, pages }),
                    Step::Work(fill),
                    Step::Done(OpKind::VmMapRam),
                ]);
            }
            Op::VmMapRam { slot, pages } => {
                let pre = cx.work(prepare);
                let fill = cx.work(f64::from(pages) * map);
                cx.then(&[
                    Step::Work(pre),
                    Step::Act(Act::FreeFit {
                        slot,
                        pages,
                        align: 1,
                        kind: HeldKind::MapRam,
                        mapped: pages,
                    }),
                    Step::Act(Act::BusyInsert),
                    Step::Work(fill),
                    Step::Done(OpKind::VmMapRam),
                ]);
            }
            Op::Release { slot } => {
                let Some(held) = cx.slots_get(slot) else {
                    // vfree(NULL) after a failed allocation.
                    cx.then(&[Step::Done(OpKind::Vfree)]);
                    return;
                };
                let mapped = f64::from(held.mapped_pages);
                match held.kind {
                    HeldKind::Vmalloc => {
                        let pre = cx.work(free_prepare);
                        let clear = cx.work(mapped * unmap);
                        let pages_out = cx.work(mapped * page_free);
                        cx.then(&[
                            Step::Work(pre),
                            Step::Act(Act::BusyUnlink),
                            Step::Work(clear),
                            Step::Act(Act::LazyAdd { slot }),
                            Step::Work(pages_out),
                            Step::Act(Act::AccountPages),
                            Step::Done(OpKind::Vfree),
                        ]);
                    }
                    HeldKind::MapRam => {
                        let pre = cx.work(free_prepare);
                        let clear = cx.work(mapped * unmap);
                        cx.then(&[
                            Step::Work(pre),
                            Step::Act(Act::BusyUnlink),
                            Step::Work(clear),
                            Step::Act(Act::LazyAdd { slot }),
                            Step::Done(OpKind::VmUnmapRam),
                        ]);
                    }
                    HeldKind::MapRamInBlock { .. } => {
                        let clear = cx.work(mapped * unmap);
                        cx.then(&[
                            Step::Work(clear),
                            Step::Act(Act::VbFree { slot }),
                            Step::Done(OpKind::VmUnmapRam),
                        ]);
                    }
                }
            }
            Op::Lookup { slot, .. } => {
                if cx.slots_get(slot).is_some() {
                    cx.then(&[Step::Act(Act::Lookup), Step::Done(OpKind::Lookup)]);
                } else {
                    cx.then(&[Step::Done(OpKind::Lookup)]);
                }
            }
        }
    }

    fn act(&mut self, act: Act, cx: &mut Cx<'_, Act>) -> Outcome {
        let env = cx.env;
        let t = match act {
            Act::FreeFit {
                slot,
                pages,
                align,
                kind,
                mapped,
            } => {
                let (t, start) = self.core.free_fit(cx, pages, align);
                match start {
                    Some(start) => {
                        let area = Area {
                            start,
                            pages,
                            alloc_node: None,
                        };
                        cx.hold(
                            slot,
                            Held {
                                area,
                                mapped_pages: mapped,
                                kind,
                            },
                        );
                    }
                    None => cx.abort_op(),
                }
                t
            }
            Act::BusyInsert => {
                self.busy_areas += 1;
                self.busy_section(cx, env.cost.busy_insert_ns, true, env.lines.busy_insert)
            }
            Act::SetupVm => self.busy_section(cx, env.cost.setup_vm_ns, false, env.lines.setup_vm),
            Act::BusyUnlink => {
                let t = self.busy_section(cx, env.cost.busy_unlink_ns, true, env.lines.busy_unlink);
                self.busy_areas -= 1;
                t
            }
            Act::Lookup => self.busy_section(cx, env.cost.lookup_ns, true, env.lines.lookup),
            Act::AccountPages => self.core.account_pages(cx),
            Act::LazyAdd { slot } => {
                let pages = cx.held(slot).area.pages;
                let (t, kick) = self.core.lazy_add(cx, pages);
                cx.then(&[Step::Act(Act::LazyInsert { slot, kick })]);
                t
            }
            Act::LazyInsert { slot, kick } => {
                let area = cx.release(slot).area;
                let nodes = self.purge_tree.blocks();
                let work = cx.work(env.cost.lazy_insert_ns + env.walk_cpu_ns(nodes))
                    + env.walk_stall(nodes);
                self.purge_tree.merge(area.start, area.end());
                self.purge_tree_areas += 1;
                let t = self
                    .core
                    .locks
                    .section(cx, self.purge_lock, work, env.lines.lazy_insert);
                if kick {
                    self.core.request_drain(cx, Act::PurgeStart);
                }
                t
            }
            Act::VbAlloc { slot, pages } => match self.core.vb_alloc(cx, slot, pages) {
                Ok(t) => t,
                Err(t) => {
                    let block = VMAP_BLOCK_PAGES;
                    cx.then(&[
                        Step::Act(Act::FreeFit {
                            slot,
                            pages: block,
                            align: block,
                            kind: HeldKind::MapRam,
                            mapped: 0,
                        }),
                        Step::Act(Act::BusyInsert),
                        Step::Act(Act::VbInstall { slot, pages }),
                    ]);
                    t
                }
            },
            Act::VbInstall { slot, pages } => self.core.vb_install(cx, slot, pages),
            Act::VbFree { slot } => {
                let (t, block) = self.core.vb_free(cx, slot);
                if let Some(area) = block {
                    cx.hold(
                        slot,
                        Held {
                            area,
                            mapped_pages: 0,
                            kind: HeldKind::MapRam,
                        },
                    );
                    cx.then(&[Step::Act(Act::BusyUnlink), Step::Act(Act::LazyAdd { slot })]);
                }
                t
            }
            Act::PurgeStart => {
                cx.then(&[Step::Act(Act::PurgeSplice)]);
                if !self.core.purge_mutex.lock(cx.actor, cx.now) {
                    return Outcome::Blocked;
                }
                cx.now
            }
            Act::PurgeSplice => {
                let work = cx.work(env.cost.list_splice_ns);
                let t = self
                    .core
                    .locks
                    .section(cx, self.purge_lock, work, env.lines.list_splice);
                self.purging = self.purge_tree.take_all().into();
                self.core.counters.purges += 1;
                self.core.counters.purged_areas += std::mem::take(&mut self.purge_tree_areas);
                if self.purging.is_empty() {
                    cx.then(&[Step::Act(Act::PurgeEnd)]);
                } else {
                    let flush = cx.work(env.cost.tlb_flush_ns);
                    cx.then(&[Step::Work(flush), Step::Act(Act::MergeNext)]);
                }
                t
            }
            Act::MergeNext => {
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
                    Act::PurgeEnd
                } else {
                    Act::MergeNext
                };
                cx.then(&[Step::Act(next)]);
                t
            }
            Act::PurgeEnd => {
                if let Some((waiter, at)) = self.core.purge_mutex.unlock(env, cx.now) {
                    cx.wake(waiter, at);
                }
                if self.core.drain_again(env) {
                    cx.then(&[Step::Act(Act::PurgeStart)]);
                }
                cx.now
            }
        };
        Outcome::At(t)
    }

    fn reset_stats(&mut self) {
        self.core.reset_stats();
    }
}
