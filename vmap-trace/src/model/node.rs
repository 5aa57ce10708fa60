//! The node-sharded design (6.9+): `nr_vmap_nodes` nodes, each with a `pool_lock` over 256
//! size-class pools of ready areas, a `busy.lock` over its busy tree and a `lazy.lock` over its
//! lazily freed areas; `free_vmap_area_lock` and the purge mutex remain global.
//!
//! - vmalloc: pool of node `cpu % nr` (lockless empty check, then `pool_lock`; the head is used
//!   only when aligned, else moved to the tail). A miss takes `free_vmap_area_lock` as before.
//!   The area goes into the busy tree of `addr_to_node(va_start)`: 6.9 takes that `busy.lock`
//!   twice (insert, `setup_vmalloc_vm`), 6.10+ once.
//! - vfree: `busy.lock` of `addr_to_node`, then `lazy.lock` of the allocating node.
//! - `find_vmap_area(addr)`: scan nodes from `addr_to_node(addr)`, one `busy.lock` round trip per
//!   node visited, forward in 6.9..6.12, backward in recent mainline.
//! - purge (mutex held): per node, decay each pool by a quarter (6.9..6.12: a pool shorter than
//!   four is drained whole) and return the decayed areas under `free_vmap_area_lock`, then detach
//!   the lazy list; flush the TLB; `clamp(lazy / lazy_max_pages, 1, nodes) - 1` helpers on the
//!   nodes' CPUs purge nodes in parallel: poolable areas go back to their node's pool (one
//!   `pool_lock` per area), the rest to the free tree in one hold per node.

use std::collections::VecDeque;

use crate::model::common::{lay_out_setup, Core, VMAP_BLOCK_PAGES, VMAP_MAX_ALLOC};
use crate::model::engine::{Cx, Design, Held, HeldKind, OpKind, Outcome, Placement, Step};
use crate::model::env::{Env, Ps};
use crate::model::lock::{LockId, LockKind};
use crate::model::space::{
    addr_to_node, pool_class, vmalloc_start_page, Area, FreeSpace, MAX_VA_SIZE_PAGES, VMALLOC_SIZE,
};
use crate::model::workload::Op;
use crate::model::{KernelVariant, SetupPlan};

#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// `node_alloc` then, on a miss, the global free tree.
    Alloc {
        slot: u32,
        pages: u32,
        align: u32,
        kind: HeldKind,
        mapped: u32,
    },
    FreeFit {
        slot: u32,
        pages: u32,
        align: u32,
        kind: HeldKind,
        mapped: u32,
        node: u16,
    },
    BusyInsert {
        slot: u32,
    },
    SetupVm {
        slot: u32,
    },
    BusyUnlink {
        slot: u32,
    },
    /// One node of a `find_vmap_area` scan.
    Lookup {
        slot: u32,
        addr: u64,
        node: u32,
        visits: u32,
    },
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
    /// Decay the next non-empty pool class `>= class` of `node`.
    DecayPool {
        node: u32,
        class: u32,
    },
    DecayReattach {
        node: u32,
        class: u32,
    },
    /// Return `node`'s decayed areas to the free tree, then detach its lazy list.
    NodeDone {
        node: u32,
    },
    LazyDetach {
        node: u32,
    },
    PurgeFlush,
    PurgeDispatch,
    /// Put back the next area of `node`'s purge list.
    PurgeArea {
        node: u32,
        helper: bool,
    },
    PurgeNodeEnd {
        node: u32,
        helper: bool,
    },
    ReclaimNode {
        node: u32,
        helper: bool,
    },
    WaitHelpers,
    PurgeEnd,
}

#[derive(Debug)]
struct Pools {
    classes: Vec<VecDeque<Area>>,
    nonempty: [u64; 4],
}

impl Pools {
    fn new() -> Self {
        Pools {
            classes: (0..MAX_VA_SIZE_PAGES).map(|_| VecDeque::new()).collect(),
            nonempty: [0; 4],
        }
    }

    fn mark(&mut self, class: usize) {
        if self.classes[class].is_empty() {
            self.nonempty[class / 64] &= !(1 << (class % 64));
        } else {
            self.nonempty[class / 64] |= 1 << (class % 64);
        }
    }

    fn next_nonempty(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = *self.nonempty.get(word)? & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.nonempty.get(word)?;
        }
    }
}

/// The node-sharded allocator's state.
#[derive(Debug)]
pub struct Node {
    core: Core,
    variant: KernelVariant,
    nodes: u32,
    pool_locks: LockId,
    busy_locks: LockId,
    lazy_locks: LockId,
    pools: Vec<Pools>,
    busy_areas: Vec<u64>,
    lazy: Vec<Vec<Area>>,
    // One purge runs at a time (mutex); its working state:
    detached: VecDeque<Area>,
    decayed: Vec<(u64, u64)>,
    purge_lists: Vec<VecDeque<Area>>,
    purge_nodes: Vec<u32>,
    purged_pages: Vec<u64>,
    to_global: Vec<Vec<(u64, u64)>>,
    helpers_running: u32,
    purger_waiting: Option<u32>,
}

impl Node {
    pub fn new(env: &Env, plan: &SetupPlan<'_>, variant: KernelVariant) -> Self {
        let nodes = env.nodes;
        let (mut pool_locks, mut busy_locks, mut lazy_locks) = (0, 0, 0);
        let mut core = Core::new(env, |locks| {
            busy_locks = locks.add_class("vmap_node.busy.lock", LockKind::Spinlock, nodes);
            lazy_locks = locks.add_class("vmap_node.lazy.lock", LockKind::Spinlock, nodes);
            pool_locks = locks.add_class("vmap_node.pool_lock", LockKind::Spinlock, nodes);
        });
        let mut busy_areas = vec![0u64; nodes as usize];
        let mut holes = Vec::new();
        let top = lay_out_setup(
            env,
            plan.boot_areas,
            plan.boot_area_pages,
            &plan.threads,
            |a| busy_areas[addr_to_node(a.start, nodes) as usize] += 1,
            |a, _| holes.push((a.start, a.end())),
        );
        let end = vmalloc_start_page(env.page_size) + VMALLOC_SIZE / env.page_size;
        core.space = FreeSpace::with_holes(holes, top, end);
        Node {
            core,
            variant,
            nodes,
            pool_locks,
            busy_locks,
            lazy_locks,
            pools: (0..nodes).map(|_| Pools::new()).collect(),
            busy_areas,
            lazy: vec![Vec::new(); nodes as usize],
            detached: VecDeque::new(),
            decayed: Vec::new(),
            purge_lists: vec![VecDeque::new(); nodes as usize],
            purge_nodes: Vec::new(),
            purged_pages: vec![0; nodes as usize],
            to_global: vec![Vec::new(); nodes as usize],
            helpers_running: 0,
            purger_waiting: None,
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    fn pool_section(&mut self, cx: &mut Cx<'_, Act>, node: u32, mean_ns: f64, lines: u32) -> Ps {
        let work = cx.work(mean_ns);
        self.core
            .locks
            .section(cx, self.pool_locks + node, work, lines)
    }

    fn busy_section(
        &mut self,
        cx: &mut Cx<'_, Act>,
        node: u32,
        mean_ns: f64,
        walk: bool,
        lines: u32,
    ) -> Ps {
        let env = cx.env;
        let n = self.busy_areas[node as usize];
        let (walk_cpu, stall) = if walk {
            (env.walk_cpu_ns(n), env.walk_stall(n))
        } else {
            (0.0, 0)
        };
        let work = cx.work(mean_ns + walk_cpu) + stall;
        self.core
            .locks
            .section(cx, self.busy_locks + node, work, lines)
    }

    fn lazy_section(
        &mut self,
        cx: &mut Cx<'_, Act>,
        node: u32,
        mean_ns: f64,
        walk: bool,
        lines: u32,
    ) -> Ps {
        let env = cx.env;
        let n = self.lazy[node as usize].len() as u64;
        let (walk_cpu, stall) = if walk {
            (env.walk_cpu_ns(n), env.walk_stall(n))
        } else {
            (0.0, 0)
        };
        let work = cx.work(mean_ns + walk_cpu) + stall;
        self.core
            .locks
            .section(cx, self.lazy_locks + node, work, lines)
    }

    /// Steps of allocating a vmap area into `slot` and inserting it into its busy tree.
    fn alloc_steps(
        slot: u32,
        pages: u32,
        align: u32,
        kind: HeldKind,
        mapped: u32,
    ) -> [Step<Act>; 2] {
        [
            Step::Act(Act::Alloc {
                slot,
                pages,
                align,
                kind,
                mapped,
            }),
            Step::Act(Act::BusyInsert { slot }),
        ]
    }

    /// The next node of a lookup scan.
    fn scan_next(&self, node: u32) -> u32 {
        if self.variant.reverse_lookup_scan() {
            (node + self.nodes - 1) % self.nodes
        } else {
            (node + 1) % self.nodes
        }
    }

    fn next_purge_node(&self, node: u32) -> Act {
        if node + 1 < self.nodes {
            Act::DecayPool {
                node: node + 1,
                class: 0,
            }
        } else {
            Act::PurgeFlush
        }
    }
}

impl Design for Node {
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
                let [alloc, insert] =
                    Self::alloc_steps(slot, pages + 1, align, HeldKind::Vmalloc, pages);
                let (fill, account, done) = (
                    Step::Work(fill),
                    Step::Act(Act::AccountPages),
                    Step::Done(OpKind::Vmalloc),
                );
                if self.variant.busy_lock_twice() {
                    let setup = Step::Act(Act::SetupVm { slot });
                    cx.then(&[Step::Work(pre), alloc, insert, setup, fill, account, done]);
                } else {
                    cx.then(&[Step::Work(pre), alloc, insert, fill, account, done]);
                }
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
                let [alloc, insert] = Self::alloc_steps(slot, pages, 1, HeldKind::MapRam, pages);
                cx.then(&[
                    Step::Work(pre),
                    alloc,
                    insert,
                    Step::Work(fill),
                    Step::Done(OpKind::VmMapRam),
                ]);
            }
            Op::Release { slot } => {
                let Some(held) = cx.slots_get(slot) else {
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
                            Step::Act(Act::BusyUnlink { slot }),
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
                            Step::Act(Act::BusyUnlink { slot }),
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
            Op::Lookup { slot, offset_pages } => match cx.slots_get(slot) {
                Some(held) => {
                    let addr = held.area.start + u64::from(offset_pages);
                    let node = addr_to_node(addr, self.nodes);
                    cx.then(&[
                        Step::Act(Act::Lookup {
                            slot,
                            addr,
                            node,
                            visits: 0,
                        }),
                        Step::Done(OpKind::Lookup),
                    ]);
                }
                None => cx.then(&[Step::Done(OpKind::Lookup)]),
            },
        }
    }

    fn act(&mut self, act: Act, cx: &mut Cx<'_, Act>) -> Outcome {
        let env = cx.env;
        let t = match act {
            Act::Alloc {
                slot,
                pages,
                align,
                kind,
                mapped,
            } => {
                // node_alloc(): only with several nodes (always the full vmalloc range here).
                if self.nodes == 1 {
                    return self.act(
                        Act::FreeFit {
                            slot,
                            pages,
                            align,
                            kind,
                            mapped,
                            node: u16::MAX,
                        },
                        cx,
                    );
                }
                let node = cx.cpu % self.nodes;
                let miss = Act::FreeFit {
                    slot,
                    pages,
                    align,
                    kind,
                    mapped,
                    node: node as u16,
                };
                let Some(class) = pool_class(pages) else {
                    return self.act(miss, cx);
                };
                if self.pools[node as usize].classes[class].is_empty() {
                    // Lockless list_empty() check: no pool_lock taken.
                    self.core.counters.pool_misses += 1;
                    return self.act(miss, cx);
                }
                let t = self.pool_section(cx, node, env.cost.pool_op_ns, env.lines.pool_op);
                let pools = &mut self.pools[node as usize];
                let head = pools.classes[class].pop_front().expect("checked non-empty");
                if head.start.is_multiple_of(u64::from(align)) {
                    pools.mark(class);
                    self.core.counters.pool_hits += 1;
                    cx.hold(
                        slot,
                        Held {
                            area: head,
                            mapped_pages: mapped,
                            kind,
                        },
                    );
                } else {
                    // list_move_tail(): the unaligned head goes to the back; this request misses.
                    pools.classes[class].push_back(head);
                    self.core.counters.pool_misses += 1;
                    cx.then(&[Step::Act(miss)]);
                }
                t
            }
            Act::FreeFit {
                slot,
                pages,
                align,
                kind,
                mapped,
                node,
            } => {
                let (t, start) = self.core.free_fit(cx, pages, align);
                match start {
                    Some(start) => {
                        let alloc_node = (node != u16::MAX).then_some(node);
                        cx.hold(
                            slot,
                            Held {
                                area: Area {
                                    start,
                                    pages,
                                    alloc_node,
                                },
                                mapped_pages: mapped,
                                kind,
                            },
                        );
                    }
                    None => cx.abort_op(),
                }
                t
            }
            Act::BusyInsert { slot } => {
                let node = addr_to_node(cx.held(slot).area.start, self.nodes);
                let mut mean = env.cost.busy_insert_ns;
                if !self.variant.busy_lock_twice() {
                    // 6.10+: setup_vmalloc_vm() runs inside the insert's critical section.
                    mean += env.cost.setup_vm_ns;
                }
                self.busy_areas[node as usize] += 1;
                self.busy_section(cx, node, mean, true, env.lines.busy_insert)
            }
            Act::SetupVm { slot } => {
                let node = addr_to_node(cx.held(slot).area.start, self.nodes);
                self.busy_section(cx, node, env.cost.setup_vm_ns, false, env.lines.setup_vm)
            }
            Act::BusyUnlink { slot } => {
                let node = addr_to_node(cx.held(slot).area.start, self.nodes);
                let t = self.busy_section(
                    cx,
                    node,
                    env.cost.busy_unlink_ns,
                    true,
                    env.lines.busy_unlink,
                );
                self.busy_areas[node as usize] -= 1;
                t
            }
            Act::Lookup {
                slot,
                addr,
                node,
                visits,
            } => {
                self.core.counters.lookup_node_visits += 1;
                let t = self.busy_section(cx, node, env.cost.lookup_ns, true, env.lines.lookup);
                let home = addr_to_node(cx.held(slot).area.start, self.nodes);
                if node != home && visits + 1 < self.nodes {
                    let next = self.scan_next(node);
                    cx.then(&[Step::Act(Act::Lookup {
                        slot,
                        addr,
                        node: next,
                        visits: visits + 1,
                    })]);
                }
                t
            }
            Act::AccountPages => self.core.account_pages(cx),
            Act::LazyAdd { slot } => {
                let pages = cx.held(slot).area.pages;
                let (t, kick) = self.core.lazy_add(cx, pages);
                cx.then(&[Step::Act(Act::LazyInsert { slot, kick })]);
                t
            }
            Act::LazyInsert { slot, kick } => {
                let area = cx.release(slot).area;
                let node = match area.alloc_node {
                    Some(n) => u32::from(n),
                    None => addr_to_node(area.start, self.nodes),
                };
                let t = self.lazy_section(
                    cx,
                    node,
                    env.cost.lazy_insert_ns,
                    true,
                    env.lines.lazy_insert,
                );
                self.lazy[node as usize].push(area);
                if kick {
                    self.core.request_drain(cx, Act::PurgeStart);
                }
                t
            }
            Act::VbAlloc { slot, pages } => match self.core.vb_alloc(cx, slot, pages) {
                Ok(t) => t,
                Err(t) => {
                    let block = VMAP_BLOCK_PAGES;
                    let [alloc, insert] =
                        Self::alloc_steps(slot, block, block, HeldKind::MapRam, 0);
                    cx.then(&[alloc, insert, Step::Act(Act::VbInstall { slot, pages })]);
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
                    cx.then(&[
                        Step::Act(Act::BusyUnlink { slot }),
                        Step::Act(Act::LazyAdd { slot }),
                    ]);
                }
                t
            }
            Act::PurgeStart => {
                cx.then(&[Step::Act(Act::DecayPool { node: 0, class: 0 })]);
                self.core.counters.purges += 1;
                if !self.core.purge_mutex.lock(cx.actor, cx.now) {
                    return Outcome::Blocked;
                }
                cx.now
            }
            Act::DecayPool { node, class } => {
                let Some(class) = self.pools[node as usize].next_nonempty(class as usize) else {
                    cx.then(&[Step::Act(Act::NodeDone { node })]);
                    return Outcome::At(cx.now);
                };
                // Detach the whole class list under pool_lock: allocations on this node miss
                // it until it is reattached.
                let t = self.pool_section(cx, node, env.cost.list_splice_ns, env.lines.list_splice);
                let pools = &mut self.pools[node as usize];
                self.detached = std::mem::take(&mut pools.classes[class]);
                pools.mark(class);
                let len = self.detached.len();
                let quarter = len >> 2;
                let n_decay = if quarter == 0 && self.variant.drains_short_pools() {
                    len
                } else {
                    quarter
                };
                for a in self.detached.drain(..n_decay) {
                    self.decayed.push((a.start, a.end()));
                }
                let merge_local = cx.work(n_decay as f64 * env.cost.free_merge_ns);
                let next = if self.detached.is_empty() {
                    Act::DecayPool {
                        node,
                        class: class as u32 + 1,
                    }
                } else {
                    Act::DecayReattach {
                        node,
                        class: class as u32,
                    }
                };
                cx.then(&[Step::Work(merge_local), Step::Act(next)]);
                t
            }
            Act::DecayReattach { node, class } => {
                let t = self.pool_section(cx, node, env.cost.list_splice_ns, env.lines.list_splice);
                let pools = &mut self.pools[node as usize];
                pools.classes[class as usize] = std::mem::take(&mut self.detached);
                pools.mark(class as usize);
                cx.then(&[Step::Act(Act::DecayPool {
                    node,
                    class: class + 1,
                })]);
                t
            }
            Act::NodeDone { node } => {
                let next = self.next_purge_node(node);
                let detach = !self.lazy[node as usize].is_empty();
                cx.then(&[Step::Act(if detach {
                    Act::LazyDetach { node }
                } else {
                    next
                })]);
                if self.decayed.is_empty() {
                    return Outcome::At(cx.now);
                }
                // reclaim_list_global(): the decayed areas go back in one hold.
                let decayed = std::mem::take(&mut self.decayed);
                self.core.merge_areas(cx, &decayed, 0)
            }
            Act::LazyDetach { node } => {
                let t = self.lazy_section(
                    cx,
                    node,
                    env.cost.list_splice_ns,
                    false,
                    env.lines.list_splice,
                );
                let mut list = std::mem::take(&mut self.lazy[node as usize]);
                list.sort_unstable_by_key(|a| a.start);
                self.purge_lists[node as usize] = list.into();
                self.purge_nodes.push(node);
                cx.then(&[Step::Act(self.next_purge_node(node))]);
                t
            }
            Act::PurgeFlush => {
                if self.purge_nodes.is_empty() {
                    cx.then(&[Step::Act(Act::PurgeEnd)]);
                } else {
                    let flush = cx.work(env.cost.tlb_flush_ns);
                    cx.then(&[Step::Work(flush), Step::Act(Act::PurgeDispatch)]);
                }
                cx.now
            }
            Act::PurgeDispatch => {
                let nodes = std::mem::take(&mut self.purge_nodes);
                // One extra worker per full lazy_max_pages() set, minus one.
                let full_sets = self.core.lazy_pages / env.lazy_max_pages;
                let helpers = full_sets.clamp(1, nodes.len() as u64) as usize - 1;
                for &n in &nodes[..helpers] {
                    cx.spawn(
                        Placement::Cpu(n),
                        Act::PurgeArea {
                            node: n,
                            helper: true,
                        },
                    );
                }
                self.helpers_running = helpers as u32;
                self.core.counters.purge_helpers += helpers as u64;
                let own: Vec<Step<Act>> = nodes[helpers..]
                    .iter()
                    .map(|&n| {
                        Step::Act(Act::PurgeArea {
                            node: n,
                            helper: false,
                        })
                    })
                    .chain([Step::Act(Act::WaitHelpers), Step::Act(Act::PurgeEnd)])
                    .collect();
                cx.then(&own);
                cx.now
            }
            Act::PurgeArea { node, helper } => {
                let list = &mut self.purge_lists[node as usize];
                let mut t = cx.now;
                while let Some(area) = list.pop_front() {
                    self.purged_pages[node as usize] += u64::from(area.pages);
                    self.core.counters.purged_areas += 1;
                    match (area.alloc_node, pool_class(area.pages)) {
                        (Some(_), Some(class)) => {
                            t = self.pool_section(cx, node, env.cost.pool_op_ns, env.lines.pool_op);
                            let pools = &mut self.pools[node as usize];
                            pools.classes[class].push_front(area);
                            pools.mark(class);
                            break;
                        }
                        _ => self.to_global[node as usize].push((area.start, area.end())),
                    }
                }
                let next = if self.purge_lists[node as usize].is_empty() {
                    Act::PurgeNodeEnd { node, helper }
                } else {
                    Act::PurgeArea { node, helper }
                };
                cx.then(&[Step::Act(next)]);
                t
            }
            Act::PurgeNodeEnd { node, helper } => {
                let pages = std::mem::take(&mut self.purged_pages[node as usize]);
                cx.then(&[Step::Act(Act::ReclaimNode { node, helper })]);
                self.core.lazy_sub(cx, pages)
            }
            Act::ReclaimNode { node, helper } => {
                let global = std::mem::take(&mut self.to_global[node as usize]);
                let t = if global.is_empty() {
                    cx.now
                } else {
                    self.core.merge_areas(cx, &global, 0)
                };
                if helper {
                    self.helpers_running -= 1;
                    if self.helpers_running == 0 {
                        if let Some(purger) = self.purger_waiting.take() {
                            cx.wake(purger, t);
                        }
                    }
                }
                t
            }
            Act::WaitHelpers => {
                if self.helpers_running > 0 {
                    self.purger_waiting = Some(cx.actor);
                    return Outcome::Blocked;
                }
                cx.now
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::engine::with_test_cx;
    use crate::model::params::ModelParams;

    fn node(variant: KernelVariant) -> (Env, Node) {
        let params = ModelParams::default().with_cpus(4);
        let env = Env::new(&params, &[0, 1, 2, 3]);
        let plan = SetupPlan {
            threads: Vec::new(),
            boot_areas: 0,
            boot_area_pages: 1,
        };
        let node = Node::new(&env, &plan, variant);
        (env, node)
    }

    fn pooled(start: u64, pages: u32) -> Area {
        Area {
            start,
            pages,
            alloc_node: Some(0),
        }
    }

    fn fill(n: &mut Node, node: usize, class: usize, areas: &[Area]) {
        for &a in areas {
            n.pools[node].classes[class].push_back(a);
        }
        n.pools[node].mark(class);
    }

    #[test]
    fn pool_head_is_used_only_when_aligned() {
        let (env, mut n) = node(KernelVariant::V6_10);
        let class = pool_class(3).unwrap();
        let base = vmalloc_start_page(4096);
        fill(
            &mut n,
            0,
            class,
            &[pooled(base + 1, 3), pooled(base + 8, 3)],
        );
        let alloc = Act::Alloc {
            slot: 0,
            pages: 3,
            align: 4,
            kind: HeldKind::Vmalloc,
            mapped: 2,
        };
        // CPU 0 allocates from node 0; the unaligned head moves to the tail and the request
        // falls back to the free tree.
        let (_, steps) = with_test_cx(&env, 0, 0, 1, |cx| n.act(alloc, cx));
        assert_eq!(n.core.counters.pool_misses, 1);
        assert!(
            matches!(
                steps[..],
                [Step::Act(Act::FreeFit {
                    align: 4,
                    node: 0,
                    ..
                })]
            ),
            "{steps:?}"
        );
        let order: Vec<u64> = n.pools[0].classes[class]
            .iter()
            .map(|a| a.start - base)
            .collect();
        assert_eq!(order, vec![8, 1]);
        // Now the aligned area is at the head: a hit, no global lock.
        let (_, steps) = with_test_cx(&env, 0, 0, 1, |cx| {
            n.act(alloc, cx);
            assert_eq!(cx.held(0).area.start, base + 8);
        });
        assert!(steps.is_empty());
        assert_eq!(n.core.counters.pool_hits, 1);
    }

    #[test]
    fn empty_pool_misses_without_taking_pool_lock() {
        let (env, mut n) = node(KernelVariant::V6_10);
        let alloc = Act::Alloc {
            slot: 0,
            pages: 2,
            align: 1,
            kind: HeldKind::Vmalloc,
            mapped: 1,
        };
        with_test_cx(&env, 1, 0, 1, |cx| n.act(alloc, cx));
        let pool = n
            .core
            .locks
            .classes()
            .iter()
            .find(|c| c.name == "vmap_node.pool_lock")
            .unwrap();
        assert_eq!(pool.acquisitions, 0);
        assert_eq!(n.core.counters.pool_misses, 1);
        let free = n
            .core
            .locks
            .classes()
            .iter()
            .find(|c| c.name == "free_vmap_area_lock")
            .unwrap();
        assert_eq!(free.acquisitions, 1);
    }

    fn decay(variant: KernelVariant, len: usize) -> usize {
        let (env, mut n) = node(variant);
        let class = pool_class(2).unwrap();
        let base = vmalloc_start_page(4096);
        let areas: Vec<Area> = (0..len as u64).map(|i| pooled(base + 4 * i, 2)).collect();
        fill(&mut n, 0, class, &areas);
        with_test_cx(&env, 0, 0, 0, |cx| {
            n.act(Act::DecayPool { node: 0, class: 0 }, cx)
        });
        n.decayed.len()
    }

    #[test]
    fn decay_takes_a_quarter_and_drains_short_pools_until_fixed() {
        assert_eq!(decay(KernelVariant::V6_9, 10), 2);
        assert_eq!(decay(KernelVariant::V6_10, 100), 25);
        // 6.9..6.12: len >> 2 == 0 makes the loop run until the list is empty.
        assert_eq!(decay(KernelVariant::V6_9, 3), 3);
        assert_eq!(decay(KernelVariant::Mainline, 3), 0);
    }

    #[test]
    fn lazily_freed_areas_go_to_the_allocating_node() {
        let (env, mut n) = node(KernelVariant::V6_10);
        let base = vmalloc_start_page(4096);
        // Address zone of node 1, allocated by node 3.
        let area = Area {
            start: base + 16,
            pages: 2,
            alloc_node: Some(3),
        };
        assert_eq!(addr_to_node(area.start, 4), 1);
        with_test_cx(&env, 3, 0, 1, |cx| {
            cx.hold(
                0,
                Held {
                    area,
                    mapped_pages: 1,
                    kind: HeldKind::Vmalloc,
                },
            );
            n.act(
                Act::LazyInsert {
                    slot: 0,
                    kick: false,
                },
                cx,
            )
        });
        assert_eq!(n.lazy[3], vec![area]);
        assert!(n.lazy[1].is_empty());
    }
}
