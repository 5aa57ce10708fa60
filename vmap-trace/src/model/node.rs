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

use crate::model::common::Core;
use crate::model::engine::{Cx, Outcome, Placement, Step};
use crate::model::env::{Env, Ps};
use crate::model::lock::{LockId, LockKind};
use crate::model::pack::{get, get32, put, Pack};
use crate::model::space::{addr_to_node, cpu_to_node, pool_class, Area, MAX_VA_SIZE_PAGES};
use crate::model::steps::{self, AllocRequest, Allocator};
use crate::model::{KernelVariant, SetupPlan};

/// The node-sharded design's own steps.
#[derive(Clone, Copy, Debug)]
pub enum Own {
    /// A pool miss after taking `pool_lock`: the allocation ([`Cx::alloc_request`]) continues
    /// in the global free tree, remembering the allocating node.
    FreeFit {
        node: u16,
    },
    /// One node of a `find_vmap_area` scan for the slot's area.
    LookupScan {
        slot: u32,
        node: u32,
        visits: u32,
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

/// Packed: the variant in the low 4 bits, then a node (16 bits; at most 128 nodes) and a second
/// field, or a slot (32 bits), a node and a visit count (10 bits each) for a lookup scan.
impl Pack for Own {
    #[inline(always)]
    fn pack(self) -> u64 {
        let node = |n: u32| put(u64::from(n), NODE_AT, 16);
        let second = |v: u32| put(u64::from(v), SECOND_AT, 16);
        match self {
            Own::FreeFit { node: n } => node(u32::from(n)), // tag 0
            Own::LookupScan {
                slot,
                node: n,
                visits,
            } => {
                1 | put(u64::from(slot), 4, 32)
                    | put(u64::from(n), 36, 10)
                    | put(u64::from(visits), 46, 10)
            }
            Own::PurgeStart => 2,
            Own::DecayPool { node: n, class } => 3 | node(n) | second(class),
            Own::DecayReattach { node: n, class } => 4 | node(n) | second(class),
            Own::NodeDone { node: n } => 5 | node(n),
            Own::LazyDetach { node: n } => 6 | node(n),
            Own::PurgeFlush => 7,
            Own::PurgeDispatch => 8,
            Own::PurgeArea { node: n, helper } => 9 | node(n) | second(u32::from(helper)),
            Own::PurgeNodeEnd { node: n, helper } => 10 | node(n) | second(u32::from(helper)),
            Own::ReclaimNode { node: n, helper } => 11 | node(n) | second(u32::from(helper)),
            Own::WaitHelpers => 12,
            Own::PurgeEnd => 13,
        }
    }

    #[inline(always)]
    fn unpack(word: u64) -> Self {
        let node = get32(word, NODE_AT, 16);
        let second = get32(word, SECOND_AT, 16);
        match get(word, 0, 4) {
            0 => Own::FreeFit { node: node as u16 },
            1 => Own::LookupScan {
                slot: get32(word, 4, 32),
                node: get32(word, 36, 10),
                visits: get32(word, 46, 10),
            },
            2 => Own::PurgeStart,
            3 => Own::DecayPool {
                node,
                class: second,
            },
            4 => Own::DecayReattach {
                node,
                class: second,
            },
            5 => Own::NodeDone { node },
            6 => Own::LazyDetach { node },
            7 => Own::PurgeFlush,
            8 => Own::PurgeDispatch,
            9 => Own::PurgeArea {
                node,
                helper: second != 0,
            },
            10 => Own::PurgeNodeEnd {
                node,
                helper: second != 0,
            },
            11 => Own::ReclaimNode {
                node,
                helper: second != 0,
            },
            12 => Own::WaitHelpers,
            _ => Own::PurgeEnd,
        }
    }
}

const NODE_AT: u32 = 4;
const SECOND_AT: u32 = NODE_AT + 16;

type Act = steps::Act<Own>;

/// A step of the node design's own.
fn own(step: Own) -> Step<Act> {
    Step::Act(Act::Design(step))
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

/// The per-node trees behind a lock of their own.
#[derive(Clone, Copy, Debug)]
enum Tree {
    /// Allocated areas, `busy.lock`.
    Busy,
    /// Lazily freed areas, `lazy.lock`.
    Lazy,
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
        core.set_up(env, plan, |a| {
            busy_areas[addr_to_node(a.start, nodes) as usize] += 1;
        });
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

    #[inline(always)]
    fn pool_section(&mut self, cx: &mut Cx<'_, Act>, node: u32, mean: Ps, lines: u32) -> Ps {
        let work = cx.work(mean);
        self.core
            .locks
            .section(cx, self.pool_locks + node, work, lines)
    }

    /// A section on `node`'s `busy.lock` or `lazy.lock`, walking the tree it protects or not.
    #[inline(always)]
    fn tree_section(
        &mut self,
        cx: &mut Cx<'_, Act>,
        tree: Tree,
        node: u32,
        mean: Ps,
        walk: bool,
        lines: u32,
    ) -> Ps {
        let (first_lock, size) = match tree {
            Tree::Busy => (self.busy_locks, self.busy_areas[node as usize]),
            Tree::Lazy => (self.lazy_locks, self.lazy[node as usize].len() as u64),
        };
        let walk = walk.then_some(size);
        self.core
            .tree_section(cx, first_lock + node, mean, walk, lines)
    }

    /// The next node of a lookup scan.
    fn scan_next(&self, node: u32) -> u32 {
        if self.variant.reverse_lookup_scan() {
            (node + self.nodes - 1) % self.nodes
        } else {
            (node + 1) % self.nodes
        }
    }

    fn next_purge_node(&self, node: u32) -> Own {
        if node + 1 < self.nodes {
            Own::DecayPool {
                node: node + 1,
                class: 0,
            }
        } else {
            Own::PurgeFlush
        }
    }
}

impl Allocator for Node {
    type Own = Own;

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn separate_setup_vm(&self) -> bool {
        self.variant.busy_lock_twice()
    }

    /// `node_alloc()` from the pool of node `cpu % nr`, then the global free tree on a miss.
    fn alloc(&mut self, req: AllocRequest, cx: &mut Cx<'_, Act>) -> Ps {
        // Only with several nodes (always the full vmalloc range here).
        if self.nodes == 1 {
            return self.core.free_fit(cx, req, None);
        }
        let node = cpu_to_node(cx.cpu, self.nodes);
        let Some(class) = pool_class(req.pages) else {
            return self.core.free_fit(cx, req, Some(node as u16));
        };
        if self.pools[node as usize].classes[class].is_empty() {
            // Lockless list_empty() check: no pool_lock taken.
            self.core.counters.pool_misses += 1;
            return self.core.free_fit(cx, req, Some(node as u16));
        }
        let env = cx.env;
        let t = self.pool_section(cx, node, env.cost.pool_op, env.lines.pool_op);
        let pools = &mut self.pools[node as usize];
        let head = pools.classes[class].pop_front().expect("checked non-empty");
        if head.start.is_multiple_of(u64::from(req.align)) {
            pools.mark(class);
            self.core.counters.pool_hits += 1;
            req.hold(cx, head.start, head.alloc_node);
        } else {
            // list_move_tail(): the unaligned head goes to the back; this request misses.
            pools.classes[class].push_back(head);
            self.core.counters.pool_misses += 1;
            cx.then([own(Own::FreeFit { node: node as u16 })]);
        }
        t
    }

    fn busy_insert(&mut self, area: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let node = addr_to_node(area.start, self.nodes);
        let env = cx.env;
        let mut mean = env.cost.busy_insert;
        if !self.variant.busy_lock_twice() {
            // 6.10+: setup_vmalloc_vm() runs inside the insert's critical section.
            mean += env.cost.setup_vm;
        }
        self.busy_areas[node as usize] += 1;
        self.tree_section(cx, Tree::Busy, node, mean, true, env.lines.busy_insert)
    }

    fn setup_vm(&mut self, area: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let node = addr_to_node(area.start, self.nodes);
        let (mean, lines) = (cx.env.cost.setup_vm, cx.env.lines.setup_vm);
        self.tree_section(cx, Tree::Busy, node, mean, false, lines)
    }

    fn busy_unlink(&mut self, area: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let node = addr_to_node(area.start, self.nodes);
        let (mean, lines) = (cx.env.cost.busy_unlink, cx.env.lines.busy_unlink);
        let t = self.tree_section(cx, Tree::Busy, node, mean, true, lines);
        self.busy_areas[node as usize] -= 1;
        t
    }

    /// The scan starts at the node of the looked-up address.
    fn lookup(&mut self, slot: u32, area: Area, offset_pages: u32, cx: &mut Cx<'_, Act>) -> Ps {
        let node = addr_to_node(area.start + u64::from(offset_pages), self.nodes);
        self.lookup_scan(slot, node, 0, cx)
    }

    /// Into the lazy tree of the allocating node.
    fn lazy_insert(&mut self, area: Area, cx: &mut Cx<'_, Act>) -> Ps {
        let node = match area.alloc_node {
            Some(n) => u32::from(n),
            None => addr_to_node(area.start, self.nodes),
        };
        let (mean, lines) = (cx.env.cost.lazy_insert, cx.env.lines.lazy_insert);
        let t = self.tree_section(cx, Tree::Lazy, node, mean, true, lines);
        self.lazy[node as usize].push(area);
        t
    }

    fn purge_start(&self) -> Own {
        Own::PurgeStart
    }

    fn own(&mut self, step: Own, cx: &mut Cx<'_, Act>) -> Outcome {
        let env = cx.env;
        let t = match step {
            Own::FreeFit { node } => self.core.free_fit(cx, cx.alloc_request(), Some(node)),
            Own::LookupScan { slot, node, visits } => self.lookup_scan(slot, node, visits, cx),
            Own::PurgeStart => {
                self.core.counters.purges += 1;
                return self
                    .core
                    .lock_purge(cx, Act::Design(Own::DecayPool { node: 0, class: 0 }));
            }
            Own::DecayPool { node, class } => {
                let Some(class) = self.pools[node as usize].next_nonempty(class as usize) else {
                    cx.then([own(Own::NodeDone { node })]);
                    return Outcome::At(cx.now);
                };
                // Detach the whole class list under pool_lock: allocations on this node miss
                // it until it is reattached.
                let t = self.pool_section(cx, node, env.cost.list_splice, env.lines.list_splice);
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
                let merge_local = cx.work(n_decay as Ps * env.cost.free_merge);
                let next = if self.detached.is_empty() {
                    Own::DecayPool {
                        node,
                        class: class as u32 + 1,
                    }
                } else {
                    Own::DecayReattach {
                        node,
                        class: class as u32,
                    }
                };
                cx.then([Step::Work(merge_local), own(next)]);
                t
            }
            Own::DecayReattach { node, class } => {
                let t = self.pool_section(cx, node, env.cost.list_splice, env.lines.list_splice);
                let pools = &mut self.pools[node as usize];
                pools.classes[class as usize] = std::mem::take(&mut self.detached);
                pools.mark(class as usize);
                cx.then([own(Own::DecayPool {
                    node,
                    class: class + 1,
                })]);
                t
            }
            Own::NodeDone { node } => {
                let next = self.next_purge_node(node);
                let detach = !self.lazy[node as usize].is_empty();
                cx.then([own(if detach {
                    Own::LazyDetach { node }
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
            Own::LazyDetach { node } => {
                let t = self.tree_section(
                    cx,
                    Tree::Lazy,
                    node,
                    env.cost.list_splice,
                    false,
                    env.lines.list_splice,
                );
                let mut list = std::mem::take(&mut self.lazy[node as usize]);
                list.sort_unstable_by_key(|a| a.start);
                self.purge_lists[node as usize] = list.into();
                self.purge_nodes.push(node);
                cx.then([own(self.next_purge_node(node))]);
                t
            }
            Own::PurgeFlush => {
                if self.purge_nodes.is_empty() {
                    cx.then([own(Own::PurgeEnd)]);
                } else {
                    let flush = cx.work(env.cost.tlb_flush);
                    cx.then([Step::Work(flush), own(Own::PurgeDispatch)]);
                }
                cx.now
            }
            Own::PurgeDispatch => {
                let nodes = std::mem::take(&mut self.purge_nodes);
                // One extra worker per full lazy_max_pages() set, minus one.
                let full_sets = self.core.lazy_pages / env.lazy_max_pages;
                let helpers = full_sets.clamp(1, nodes.len() as u64) as usize - 1;
                for &n in &nodes[..helpers] {
                    cx.spawn(
                        Placement::Cpu(n),
                        Act::Design(Own::PurgeArea {
                            node: n,
                            helper: true,
                        }),
                    );
                }
                self.helpers_running = helpers as u32;
                self.core.counters.purge_helpers += helpers as u64;
                let this_worker: Vec<Step<Act>> = nodes[helpers..]
                    .iter()
                    .map(|&n| {
                        own(Own::PurgeArea {
                            node: n,
                            helper: false,
                        })
                    })
                    .chain([own(Own::WaitHelpers), own(Own::PurgeEnd)])
                    .collect();
                cx.then_all(&this_worker);
                cx.now
            }
            Own::PurgeArea { node, helper } => {
                let list = &mut self.purge_lists[node as usize];
                let mut t = cx.now;
                while let Some(area) = list.pop_front() {
                    self.purged_pages[node as usize] += u64::from(area.pages);
                    self.core.counters.purged_areas += 1;
                    match (area.alloc_node, pool_class(area.pages)) {
                        (Some(_), Some(class)) => {
                            t = self.pool_section(cx, node, env.cost.pool_op, env.lines.pool_op);
                            let pools = &mut self.pools[node as usize];
                            pools.classes[class].push_front(area);
                            pools.mark(class);
                            break;
                        }
                        _ => self.to_global[node as usize].push((area.start, area.end())),
                    }
                }
                let next = if self.purge_lists[node as usize].is_empty() {
                    Own::PurgeNodeEnd { node, helper }
                } else {
                    Own::PurgeArea { node, helper }
                };
                cx.then([own(next)]);
                t
            }
            Own::PurgeNodeEnd { node, helper } => {
                let pages = std::mem::take(&mut self.purged_pages[node as usize]);
                cx.then([own(Own::ReclaimNode { node, helper })]);
                self.core.lazy_sub(cx, pages)
            }
            Own::ReclaimNode { node, helper } => {
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
            Own::WaitHelpers => {
                if self.helpers_running > 0 {
                    self.purger_waiting = Some(cx.actor);
                    return Outcome::Blocked;
                }
                cx.now
            }
            Own::PurgeEnd => self.core.unlock_purge(cx, Act::Design(Own::PurgeStart)),
        };
        Outcome::At(t)
    }
}

impl Node {
    /// One `busy.lock` round trip of a `find_vmap_area` scan at `node`; the scan goes on until
    /// the node whose busy tree holds the slot's area (or every node was visited).
    fn lookup_scan(&mut self, slot: u32, node: u32, visits: u32, cx: &mut Cx<'_, Act>) -> Ps {
        self.core.counters.lookup_node_visits += 1;
        let (mean, lines) = (cx.env.cost.lookup, cx.env.lines.lookup);
        let t = self.tree_section(cx, Tree::Busy, node, mean, true, lines);
        let home = addr_to_node(cx.held(slot).area.start, self.nodes);
        if node != home && visits + 1 < self.nodes {
            cx.then([own(Own::LookupScan {
                slot,
                node: self.scan_next(node),
                visits: visits + 1,
            })]);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::engine::{with_test_cx, Design, Held, HeldKind};
    use crate::model::params::ModelParams;
    use crate::model::space::vmalloc_start_page;
    use crate::model::steps::AreaUse;

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
        let req = AllocRequest {
            slot: 0,
            pages: 3,
            align: 4,
            mapped: 2,
            kind: AreaUse::Vmalloc,
        };
        // CPU 0 allocates from node 0; the unaligned head moves to the tail and the request
        // falls back to the free tree.
        let (_, steps) = with_test_cx(&env, 0, 0, 1, |cx| {
            cx.set_alloc_request(req);
            n.act(Act::Alloc, cx)
        });
        assert_eq!(n.core.counters.pool_misses, 1);
        assert!(
            matches!(
                steps[..],
                [Step::Act(Act::Design(Own::FreeFit { node: 0 }))]
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
            cx.set_alloc_request(req);
            n.act(Act::Alloc, cx);
            assert_eq!(cx.held(0).area.start, base + 8);
        });
        assert!(steps.is_empty());
        assert_eq!(n.core.counters.pool_hits, 1);
    }

    #[test]
    fn empty_pool_misses_without_taking_pool_lock() {
        let (env, mut n) = node(KernelVariant::V6_10);
        let req = AllocRequest {
            slot: 0,
            pages: 2,
            align: 1,
            mapped: 1,
            kind: AreaUse::Vmalloc,
        };
        with_test_cx(&env, 1, 0, 1, |cx| {
            cx.set_alloc_request(req);
            n.act(Act::Alloc, cx)
        });
        let acquisitions = |name: &str| {
            let classes = n.core.locks.classes();
            classes
                .iter()
                .find(|c| c.name == name)
                .unwrap()
                .acquisitions
        };
        assert_eq!(acquisitions("vmap_node.pool_lock"), 0);
        assert_eq!(n.core.counters.pool_misses, 1);
        assert_eq!(acquisitions("free_vmap_area_lock"), 1);
    }

    fn decay(variant: KernelVariant, len: usize) -> usize {
        let (env, mut n) = node(variant);
        let class = pool_class(2).unwrap();
        let base = vmalloc_start_page(4096);
        let areas: Vec<Area> = (0..len as u64).map(|i| pooled(base + 4 * i, 2)).collect();
        fill(&mut n, 0, class, &areas);
        with_test_cx(&env, 0, 0, 0, |cx| {
            n.act(Act::Design(Own::DecayPool { node: 0, class: 0 }), cx)
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

    #[test]
    fn actions_pack_into_a_word_and_back() {
        let acts = [
            Act::Alloc,
            Act::BusyInsert { slot: u32::MAX },
            Act::Lookup {
                slot: 7,
                offset_pages: (1 << 20) - 1,
            },
            Act::LazyInsert {
                slot: 3,
                kick: true,
            },
            Act::VbAlloc { slot: 1, pages: 64 },
            Act::Design(Own::FreeFit { node: 127 }),
            Act::Design(Own::LookupScan {
                slot: u32::MAX,
                node: 127,
                visits: 127,
            }),
            Act::Design(Own::DecayPool {
                node: 127,
                class: 255,
            }),
            Act::Design(Own::ReclaimNode {
                node: 5,
                helper: true,
            }),
            Act::Design(Own::PurgeEnd),
        ];
        for act in acts {
            let word = act.pack();
            assert!(word < 1 << crate::model::pack::PACKED_BITS, "{act:?}");
            assert_eq!(format!("{:?}", Act::unpack(word)), format!("{act:?}"));
        }
    }
}
