//! What both designs share: the global free tree under `free_vmap_area_lock`, the two global
//! atomic counters, lazy-free accounting and the drain work item, the purge mutex, vm_map_ram's
//! per-CPU vmap blocks, and the bulk set-up of long-lived areas before a run.

use std::collections::BTreeMap;

use crate::model::engine::{Cx, Held, HeldKind, Outcome, Placement, Step};
use crate::model::env::{Env, Ps};
use crate::model::lock::{LockId, LockKind, LockTable, SleepMutex};
use crate::model::pack::Pack;
use crate::model::space::{vmalloc_start_page, Area, FitKind, FreeSpace, VMALLOC_SIZE};
use crate::model::stats::DesignCounters;
use crate::model::steps::AllocRequest;
use crate::model::workload::{full_fit_pairs, Fragments, ThreadGroup};
use crate::model::SetupPlan;

/// `VMAP_BBMAP_BITS` on x86-64: a vmap block covers 1024 pages (4 MiB with 4 KiB pages).
pub const VMAP_BLOCK_PAGES: u32 = 1024;
/// `VMAP_MAX_ALLOC`: vm_map_ram requests up to this many pages use vmap blocks.
pub const VMAP_MAX_ALLOC: u32 = 64;

#[derive(Debug)]
struct VmapBlock {
    /// The block's own vmap area.
    area: Area,
    owner: u32,
    used: u32,
    dirty: u32,
}

/// State of the `drain_vmap_work` item: at most one instance runs; a request while it runs makes
/// it loop once more.
#[derive(Debug, Default)]
struct Drain {
    active: bool,
    rerun: bool,
}

/// Shared state and critical sections of both designs.
#[derive(Debug)]
pub struct Core {
    pub locks: LockTable,
    pub free_lock: LockId,
    nr_pages_line: LockId,
    lazy_line: LockId,
    vb_locks: LockId,
    pub purge_mutex: SleepMutex,
    pub space: FreeSpace,
    /// `vmap_lazy_nr`.
    pub lazy_pages: u64,
    drain: Drain,
    current_block: Vec<Option<u64>>,
    blocks: BTreeMap<u64, VmapBlock>,
    pub counters: DesignCounters,
    /// Allocations that found no space (vmalloc returned NULL).
    pub alloc_failures: u64,
    /// Purge rounds finished since the start (not reset with statistics).
    pub completed_purges: u64,
}

impl Core {
    /// `design_locks` registers the design's own locks right after `free_vmap_area_lock`, so
    /// reports list the main locks first.
    pub fn new(env: &Env, design_locks: impl FnOnce(&mut LockTable)) -> Self {
        let mut locks = LockTable::default();
        let free_lock = locks.add_class("free_vmap_area_lock", LockKind::Spinlock, 1);
        design_locks(&mut locks);
        let vb_locks = locks.add_class("vmap_block_queue.lock", LockKind::Spinlock, env.cpus);
        let lazy_line = locks.add_class("vmap_lazy_nr", LockKind::AtomicLine, 1);
        let nr_pages_line = locks.add_class("nr_vmalloc_pages", LockKind::AtomicLine, 1);
        let start = vmalloc_start_page(env.page_size);
        Core {
            locks,
            free_lock,
            nr_pages_line,
            lazy_line,
            vb_locks,
            purge_mutex: SleepMutex::new("vmap_purge_lock"),
            space: FreeSpace::new(start, start + VMALLOC_SIZE / env.page_size),
            lazy_pages: 0,
            drain: Drain::default(),
            current_block: vec![None; env.cpus as usize],
            blocks: BTreeMap::new(),
            counters: DesignCounters::default(),
            alloc_failures: 0,
            completed_purges: 0,
        }
    }

    /// Lay out the run's long-lived state ([`lay_out_setup`]): the freed holes are the free
    /// tree, `live(area)` sees every area that stays allocated.
    pub fn set_up(&mut self, env: &Env, plan: &SetupPlan<'_>, live: impl FnMut(Area)) {
        let mut holes = Vec::new();
        let top = lay_out_setup(
            env,
            plan.boot_areas,
            plan.boot_area_pages,
            &plan.threads,
            live,
            |a, _| holes.push((a.start, a.end())),
        );
        let end = vmalloc_start_page(env.page_size) + VMALLOC_SIZE / env.page_size;
        self.space = FreeSpace::with_holes(holes, top, end);
    }

    pub fn reset_stats(&mut self) {
        self.locks.reset_stats();
        self.purge_mutex.reset_stats();
        self.counters = DesignCounters::default();
        self.alloc_failures = 0;
    }

    /// A critical section on `lock` whose CPU work is `mean` plus, with `walk = Some(n)`, a
    /// walk down an rb-tree of `n` nodes (busy trees, lazy lists).
    #[inline(always)]
    pub fn tree_section<A: Pack>(
        &mut self,
        cx: &mut Cx<'_, A>,
        lock: LockId,
        mean: Ps,
        walk: Option<u64>,
        lines: u32,
    ) -> Ps {
        let env = cx.env;
        let (walk_cpu, stall) = match walk {
            Some(n) => (env.walk_cpu(n), env.walk_stall(n)),
            None => (0, 0),
        };
        let work = cx.work(mean + walk_cpu) + stall;
        self.locks.section(cx, lock, work, lines)
    }

    /// `__alloc_vmap_area` under `free_vmap_area_lock`: lowest-fit search and fit adjustment.
    /// The area goes into the request's slot, remembering `alloc_node`; when the space is
    /// exhausted the call fails (the rest of its steps are dropped). Returns the release time.
    pub fn free_fit<A: Pack>(
        &mut self,
        cx: &mut Cx<'_, A>,
        req: AllocRequest,
        alloc_node: Option<u16>,
    ) -> Ps {
        let nodes = self.space.blocks();
        let found = self.space.alloc(u64::from(req.pages), u64::from(req.align));
        let env = cx.env;
        let mut mean = env.cost.free_fit + env.walk_cpu(nodes);
        let mut stall = env.walk_stall(nodes);
        if let Some((_, FitKind::Split)) = found {
            // NE_FIT_TYPE inserts the remainder as a new node: a second walk.
            mean += env.walk_cpu(nodes);
            stall += env.walk_stall(nodes);
        }
        let work = cx.work(mean) + stall;
        let release = self
            .locks
            .section(cx, self.free_lock, work, env.lines.free_fit);
        match found {
            Some((start, _)) => req.hold(cx, start, alloc_node),
            None => {
                self.alloc_failures += 1;
                cx.abort_op();
            }
        }
        release
    }

    /// Return areas to the free tree in one `free_vmap_area_lock` hold (purge, decay, reclaim).
    /// `extra` is added to the hold (e.g. atomics done inside it).
    pub fn merge_areas<A: Pack>(
        &mut self,
        cx: &mut Cx<'_, A>,
        areas: &[(u64, u64)],
        extra: Ps,
    ) -> Ps {
        let env = cx.env;
        let mut mean = 0;
        let mut stall = 0;
        for &(s, e) in areas {
            let nodes = self.space.blocks();
            mean += env.cost.free_merge + env.walk_cpu(nodes);
            stall += env.walk_stall(nodes);
            self.space.merge(s, e);
        }
        let work = cx.work(mean) + stall + extra;
        self.locks
            .section(cx, self.free_lock, work, env.lines.free_merge)
    }

    /// `atomic_long_add(nr_pages, &nr_vmalloc_pages)` (or the matching sub in vfree).
    #[inline(always)]
    pub fn account_pages<A: Pack>(&mut self, cx: &mut Cx<'_, A>) -> Ps {
        let work = cx.work(cx.env.cost.atomic);
        self.locks.section(cx, self.nr_pages_line, work, 0)
    }

    /// `atomic_long_add_return(pages, &vmap_lazy_nr)`: returns the time and whether the lazy
    /// total now exceeds `lazy_max_pages()`.
    #[inline(always)]
    pub fn lazy_add<A: Pack>(&mut self, cx: &mut Cx<'_, A>, pages: u32) -> (Ps, bool) {
        let work = cx.work(cx.env.cost.atomic);
        let t = self.locks.section(cx, self.lazy_line, work, 0);
        self.lazy_pages += u64::from(pages);
        (t, self.lazy_pages > cx.env.lazy_max_pages)
    }

    /// `atomic_long_sub(pages, &vmap_lazy_nr)` as its own operation (node-sharded purge).
    pub fn lazy_sub<A: Pack>(&mut self, cx: &mut Cx<'_, A>, pages: u64) -> Ps {
        let work = cx.work(cx.env.cost.atomic);
        self.lazy_pages = self.lazy_pages.saturating_sub(pages);
        self.locks.section(cx, self.lazy_line, work, 0)
    }

    /// `atomic_long_sub` inside another lock's critical section (legacy purge loop): the line
    /// moves to this CPU; returns the added hold time.
    pub fn lazy_sub_in_section(&mut self, env: &Env, cpu: u32, pages: u64) -> Ps {
        self.lazy_pages = self.lazy_pages.saturating_sub(pages);
        self.locks.touch(env, self.lazy_line, cpu)
    }

    /// `schedule_work(&drain_vmap_work)` from this CPU; `start` is the design's first purge
    /// action.
    pub fn request_drain<A: Pack>(&mut self, cx: &mut Cx<'_, A>, start: A) {
        if self.drain.active {
            self.drain.rerun = true;
        } else {
            self.drain.active = true;
            cx.spawn(Placement::Near(cx.cpu), start);
        }
    }

    /// The drain work takes the purge mutex; `first` is its first step under it. The worker
    /// sleeps when another purge holds it.
    pub fn lock_purge<A: Pack>(&mut self, cx: &mut Cx<'_, A>, first: A) -> Outcome {
        cx.then([Step::Act(first)]);
        if self.purge_mutex.lock(cx.actor, cx.now) {
            Outcome::At(cx.now)
        } else {
            Outcome::Blocked
        }
    }

    /// End of a purge round: release the mutex (waking the next waiter) and run `restart`, the
    /// drain work's first step, again if it must purge again.
    pub fn unlock_purge<A: Pack>(&mut self, cx: &mut Cx<'_, A>, restart: A) -> Ps {
        if let Some((waiter, at)) = self.purge_mutex.unlock(cx.env, cx.now) {
            cx.wake(waiter, at);
        }
        if self.drain_again(cx.env) {
            cx.then([Step::Act(restart)]);
        }
        cx.now
    }

    /// End of one purge round of the drain work: true when it must purge again (the lazy total
    /// is still over the limit, or another request came meanwhile).
    fn drain_again(&mut self, env: &Env) -> bool {
        self.completed_purges += 1;
        let again = self.lazy_pages > env.lazy_max_pages || self.drain.rerun;
        self.drain.rerun = false;
        if !again {
            self.drain.active = false;
        }
        again
    }

    /// `vb_alloc`: take `pages` (rounded up to a power of two) from this CPU's current vmap
    /// block. `Err` when a new block is needed; the time is the end of the attempt either way.
    pub fn vb_alloc<A: Pack>(
        &mut self,
        cx: &mut Cx<'_, A>,
        slot: u32,
        pages: u32,
    ) -> Result<Ps, Ps> {
        let need = pages.next_power_of_two();
        let t = self.vb_section(cx, cx.cpu);
        let current = self.current_block[cx.cpu as usize];
        match current.and_then(|start| self.blocks.get_mut(&start).map(|b| (start, b))) {
            Some((start, block)) if block.used + need <= VMAP_BLOCK_PAGES => {
                let area = Area {
                    start: start + u64::from(block.used),
                    pages: need,
                    alloc_node: None,
                };
                block.used += need;
                cx.hold(
                    slot,
                    Held {
                        area,
                        mapped_pages: pages,
                        kind: HeldKind::MapRamInBlock { block: start },
                    },
                );
                Ok(t)
            }
            _ => Err(t),
        }
    }

    /// `new_vmap_block` finished allocating the block's area (held in `slot`): make it this
    /// CPU's current block and take the request from it.
    pub fn vb_install<A: Pack>(&mut self, cx: &mut Cx<'_, A>, slot: u32, pages: u32) -> Ps {
        let block_area = cx.held(slot).area;
        let need = pages.next_power_of_two();
        self.blocks.insert(
            block_area.start,
            VmapBlock {
                area: block_area,
                owner: cx.cpu,
                used: need,
                dirty: 0,
            },
        );
        self.current_block[cx.cpu as usize] = Some(block_area.start);
        let area = Area {
            start: block_area.start,
            pages: need,
            alloc_node: None,
        };
        cx.hold(
            slot,
            Held {
                area,
                mapped_pages: pages,
                kind: HeldKind::MapRamInBlock {
                    block: block_area.start,
                },
            },
        );
        self.vb_section(cx, cx.cpu)
    }

    /// `vb_free`: mark the pages dirty in their block. When the whole block is dirty it is freed:
    /// the block's own vmap area is returned for the design's unlink and lazy free.
    pub fn vb_free<A: Pack>(&mut self, cx: &mut Cx<'_, A>, slot: u32) -> (Ps, Option<Area>) {
        let held = cx.release(slot);
        let HeldKind::MapRamInBlock { block } = held.kind else {
            unreachable!("vb_free on a slot that is not in a vmap block")
        };
        let owner = self.blocks[&block].owner;
        let t = self.vb_section(cx, owner);
        let b = self.blocks.get_mut(&block).expect("block exists");
        b.dirty += held.area.pages;
        if b.dirty < VMAP_BLOCK_PAGES {
            return (t, None);
        }
        let freed = self.blocks.remove(&block).expect("block exists");
        if self.current_block[owner as usize] == Some(block) {
            self.current_block[owner as usize] = None;
        }
        (t, Some(freed.area))
    }

    fn vb_section<A: Pack>(&mut self, cx: &mut Cx<'_, A>, owner: u32) -> Ps {
        let work = cx.work(cx.env.cost.vmap_block);
        let lock = self.vb_locks + owner;
        self.locks.section(cx, lock, work, cx.env.lines.vmap_block)
    }
}

/// Long-lived areas created before the run: boot areas, then each thread's resident areas and
/// full_fit fragments, interleaved between threads in allocation order as concurrent set-up
/// would lay them out. Calls `live(area)` for areas that stay allocated and `hole(area, cpu)`
/// for areas allocated then freed by the thread on `cpu`; returns the first page above
/// everything laid out.
///
/// Holes are given in the state the test's loop runs in, back in the free tree: the legacy
/// purge merges them there at once; the node-sharded purge first puts them in the freeing
/// node's pool, from which the 25% decay of every purge returns them within a few dozen purges
/// (well under a second of a test that runs for tens of seconds).
pub fn lay_out_setup(
    env: &Env,
    boot_areas: u32,
    boot_area_pages: u32,
    threads: &[(u32, &ThreadGroup)],
    mut live: impl FnMut(Area),
    mut hole: impl FnMut(Area, u32),
) -> u64 {
    let mut next = vmalloc_start_page(env.page_size);
    let mut take = |pages: u32| {
        let start = next;
        next += u64::from(pages);
        Area {
            start,
            pages,
            alloc_node: None,
        }
    };
    for _ in 0..boot_areas {
        live(take(boot_area_pages));
    }
    let fragment_pairs = |g: &ThreadGroup| match g.fragments {
        Fragments::None => 0,
        Fragments::FullFit => full_fit_pairs(env.cpus, env.page_size),
    };
    let rounds = threads
        .iter()
        .map(|(_, g)| u64::from(g.resident_areas).max(fragment_pairs(g)))
        .max()
        .unwrap_or(0);
    // A one-page vmalloc occupies two pages with its guard page.
    for k in 0..rounds {
        for &(cpu, g) in threads {
            if k < u64::from(g.resident_areas) {
                live(take(2));
            }
            if k < fragment_pairs(g) {
                live(take(2));
                hole(take(2), cpu);
            }
        }
    }
    next
}
