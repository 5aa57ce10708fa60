//! The steps of each allocator call, which both designs share: what a vmalloc, vfree,
//! vm_map_ram, vm_unmap_ram or lookup does in which order, with the private CPU work between the
//! locked steps. What differs between the designs (which lock protects an area's busy tree or
//! lazy list, where an allocation looks first, how a lookup finds the area, how purging works)
//! is behind [`Allocator`], implemented by [`crate::model::legacy::Legacy`] and
//! [`crate::model::node::Node`].
//!
//! | call | steps |
//! |---|---|
//! | vmalloc(n) | prepare · allocate n + 1 pages · busy insert · (setup_vmalloc_vm under the busy lock again, legacy and 6.9) · allocate and map n pages · `nr_vmalloc_pages` |
//! | vfree | prepare · busy unlink · unmap · `vmap_lazy_nr` · lazy insert (maybe start the drain work) · free pages · `nr_vmalloc_pages` |
//! | vm_map_ram(n ≤ 64) | take pages of the CPU's vmap block (a new block is a 1024-page area allocation and busy insert) · map |
//! | vm_map_ram(n > 64) | prepare · allocate n pages · busy insert · map |
//! | vm_unmap_ram | in a block: unmap · mark dirty (a fully dirty block's area is unlinked and lazily freed); else prepare · busy unlink · unmap · `vmap_lazy_nr` · lazy insert |
//! | find_vmap_area | the design's lookup |

use std::fmt::Debug;

use crate::model::common::{Core, VMAP_BLOCK_PAGES, VMAP_MAX_ALLOC};
use crate::model::engine::{Cx, Design, Held, HeldKind, OpKind, Outcome, Step};
use crate::model::env::Ps;
use crate::model::pack::{get, get32, put, Pack};
use crate::model::space::Area;
use crate::model::workload::Op;

/// What an allocated area is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AreaUse {
    /// A vmalloc area: pages allocated and mapped.
    #[default]
    Vmalloc,
    /// A large vm_map_ram, or a vmap block: the caller's pages are mapped.
    MapRam,
}

/// One vmap area allocation (`alloc_vmap_area`) into a workload slot. An actor has at most one
/// in progress; [`Cx::alloc_request`] holds it, so that [`Act::Alloc`] packs into a word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocRequest {
    pub slot: u32,
    /// Pages of the area, the guard page included.
    pub pages: u32,
    pub align: u32,
    /// Pages the caller maps into it.
    pub mapped: u32,
    pub kind: AreaUse,
}

impl AllocRequest {
    /// The slot now holds the area at `start`.
    pub fn hold<A: Pack>(&self, cx: &mut Cx<'_, A>, start: u64, alloc_node: Option<u16>) {
        let area = Area {
            start,
            pages: self.pages,
            alloc_node,
        };
        let kind = match self.kind {
            AreaUse::Vmalloc => HeldKind::Vmalloc,
            AreaUse::MapRam => HeldKind::MapRam,
        };
        cx.hold(
            self.slot,
            Held {
                area,
                mapped_pages: self.mapped,
                kind,
            },
        );
    }
}

/// A design action: a step of an allocator call, or one of the design's own steps
/// (`Design`: purging, and the node-sharded design's pool misses and lookup scans).
#[derive(Clone, Copy, Debug)]
pub enum Act<D> {
    /// `alloc_vmap_area()` of the actor's [`Cx::alloc_request`].
    Alloc,
    /// Insert the slot's area into its busy tree.
    BusyInsert {
        slot: u32,
    },
    /// `setup_vmalloc_vm()` as its own busy-lock section (legacy, 6.9).
    SetupVm {
        slot: u32,
    },
    /// `find_unlink_vmap_area()`.
    BusyUnlink {
        slot: u32,
    },
    /// `find_vmap_area(start + offset_pages)` of the slot's area.
    Lookup {
        slot: u32,
        offset_pages: u32,
    },
    /// `nr_vmalloc_pages` add or sub.
    AccountPages,
    /// `vmap_lazy_nr` add for the slot's area, then its lazy insert.
    LazyAdd {
        slot: u32,
    },
    /// Free the slot's area lazily; `kick` schedules the drain work.
    LazyInsert {
        slot: u32,
        kick: bool,
    },
    /// Take pages of this CPU's vmap block.
    VbAlloc {
        slot: u32,
        pages: u32,
    },
    /// Make the block just allocated into the slot this CPU's block.
    VbInstall {
        slot: u32,
        pages: u32,
    },
    /// Mark the slot's pages of their vmap block dirty.
    VbFree {
        slot: u32,
    },
    Design(D),
}

/// Packed: the variant in the low [`TAG_BITS`] bits, then the slot (32 bits), then a second
/// field; a design's own step takes the bits above the tag.
impl<O: Pack> Pack for Act<O> {
    #[inline(always)]
    fn pack(self) -> u64 {
        let slot = |slot: u32| put(u64::from(slot), SLOT_AT, 32);
        let extra = |v: u32| put(u64::from(v), EXTRA_AT, EXTRA_BITS);
        match self {
            Act::Alloc => 0,
            Act::BusyInsert { slot: s } => 1 | slot(s),
            Act::SetupVm { slot: s } => 2 | slot(s),
            Act::BusyUnlink { slot: s } => 3 | slot(s),
            Act::Lookup {
                slot: s,
                offset_pages,
            } => 4 | slot(s) | extra(offset_pages),
            Act::AccountPages => 5,
            Act::LazyAdd { slot: s } => 6 | slot(s),
            Act::LazyInsert { slot: s, kick } => 7 | slot(s) | extra(u32::from(kick)),
            Act::VbAlloc { slot: s, pages } => 8 | slot(s) | extra(pages),
            Act::VbInstall { slot: s, pages } => 9 | slot(s) | extra(pages),
            Act::VbFree { slot: s } => 10 | slot(s),
            Act::Design(own) => 11 | put(own.pack(), TAG_BITS, OWN_BITS),
        }
    }

    #[inline(always)]
    fn unpack(word: u64) -> Self {
        let slot = get32(word, SLOT_AT, 32);
        let extra = get32(word, EXTRA_AT, EXTRA_BITS);
        match get(word, 0, TAG_BITS) {
            0 => Act::Alloc,
            1 => Act::BusyInsert { slot },
            2 => Act::SetupVm { slot },
            3 => Act::BusyUnlink { slot },
            4 => Act::Lookup {
                slot,
                offset_pages: extra,
            },
            5 => Act::AccountPages,
            6 => Act::LazyAdd { slot },
            7 => Act::LazyInsert {
                slot,
                kick: extra != 0,
            },
            8 => Act::VbAlloc { slot, pages: extra },
            9 => Act::VbInstall { slot, pages: extra },
            10 => Act::VbFree { slot },
            _ => Act::Design(O::unpack(get(word, TAG_BITS, OWN_BITS))),
        }
    }
}

/// Bits of a packed [`Act`]'s variant.
const TAG_BITS: u32 = 4;
const SLOT_AT: u32 = TAG_BITS;
const EXTRA_AT: u32 = SLOT_AT + 32;
/// Lookup offsets (below 2^20 pages) and vm_map_ram sizes (at most 64 pages).
const EXTRA_BITS: u32 = 22;
/// Bits left for a design's own steps ([`Allocator::Own`]).
pub const OWN_BITS: u32 = crate::model::pack::PACKED_BITS - TAG_BITS;

/// What the two designs do differently. Each method runs at its step's time and returns when
/// the actor continues.
pub trait Allocator {
    /// The design's own steps, packed into [`OWN_BITS`] bits.
    type Own: Pack + Debug;

    fn core(&mut self) -> &mut Core;

    /// Whether `setup_vmalloc_vm()` takes the busy lock again after the insert.
    fn separate_setup_vm(&self) -> bool;

    /// `alloc_vmap_area()`: find space for `req` and put the area in its slot, or
    /// [`Cx::abort_op`] when there is none.
    fn alloc(&mut self, req: AllocRequest, cx: &mut Cx<'_, Act<Self::Own>>) -> Ps;

    fn busy_insert(&mut self, area: Area, cx: &mut Cx<'_, Act<Self::Own>>) -> Ps;

    fn setup_vm(&mut self, area: Area, cx: &mut Cx<'_, Act<Self::Own>>) -> Ps;

    fn busy_unlink(&mut self, area: Area, cx: &mut Cx<'_, Act<Self::Own>>) -> Ps;

    /// `find_vmap_area()` of `area.start + offset_pages`, held in `slot`.
    fn lookup(
        &mut self,
        slot: u32,
        area: Area,
        offset_pages: u32,
        cx: &mut Cx<'_, Act<Self::Own>>,
    ) -> Ps;

    /// Put a freed area on the lazy list (before the drain work may be scheduled).
    fn lazy_insert(&mut self, area: Area, cx: &mut Cx<'_, Act<Self::Own>>) -> Ps;

    /// The first step of the drain work.
    fn purge_start(&self) -> Self::Own;

    fn own(&mut self, act: Self::Own, cx: &mut Cx<'_, Act<Self::Own>>) -> Outcome;
}

/// The engine drives either design through the shared steps.
impl<D: Allocator> Design for D {
    type Act = Act<D::Own>;

    fn begin(&mut self, op: Op, cx: &mut Cx<'_, Self::Act>) {
        push_steps(self, op, cx);
    }

    fn act(&mut self, act: Self::Act, cx: &mut Cx<'_, Self::Act>) -> Outcome {
        run_step(self, act, cx)
    }

    fn act_packed(&mut self, act: u64, cx: &mut Cx<'_, Self::Act>) -> Outcome {
        run_step(self, Act::unpack(act), cx)
    }

    fn reset_stats(&mut self) {
        self.core().reset_stats();
    }
}

/// Push the steps of one workload call. The CPU work between locked steps is drawn here, in the
/// order the steps run.
fn push_steps<D: Allocator>(design: &D, op: Op, cx: &mut Cx<'_, Act<D::Own>>) {
    let c = &cx.env.cost;
    let (prepare, free_prepare) = (c.vmalloc_prepare, c.vfree_prepare);
    let (map, unmap, page_alloc, page_free) = (c.pte_map, c.pte_unmap, c.page_alloc, c.page_free);
    match op {
        Op::Vmalloc { slot, pages, align } => {
            // prepare · alloc · busy insert · (setup_vmalloc_vm) · fill · account · done, pushed
            // back to front.
            let pre = cx.work(prepare);
            let fill = cx.work(Ps::from(pages) * (page_alloc + map));
            cx.push_done(0, OpKind::Vmalloc);
            cx.push_act(fill, Act::AccountPages);
            if design.separate_setup_vm() {
                cx.push_act(0, Act::SetupVm { slot });
            }
            cx.push_act(0, Act::BusyInsert { slot });
            let req = AllocRequest {
                slot,
                pages: pages + 1,
                align,
                mapped: pages,
                kind: AreaUse::Vmalloc,
            };
            cx.set_alloc_request(req);
            cx.push_act(pre, Act::Alloc);
        }
        Op::VmMapRam { slot, pages } if pages <= VMAP_MAX_ALLOC => {
            let fill = cx.work(Ps::from(pages) * map);
            cx.then([
                Step::Act(Act::VbAlloc { slot, pages }),
                Step::Work(fill),
                Step::Done(OpKind::VmMapRam),
            ]);
        }
        Op::VmMapRam { slot, pages } => {
            let pre = cx.work(prepare);
            let fill = cx.work(Ps::from(pages) * map);
            cx.set_alloc_request(AllocRequest {
                slot,
                pages,
                align: 1,
                mapped: pages,
                kind: AreaUse::MapRam,
            });
            cx.then([
                Step::Work(pre),
                Step::Act(Act::Alloc),
                Step::Act(Act::BusyInsert { slot }),
                Step::Work(fill),
                Step::Done(OpKind::VmMapRam),
            ]);
        }
        Op::Release { slot } => {
            let Some(held) = cx.slots_get(slot) else {
                // vfree(NULL) after a failed allocation.
                cx.then([Step::Done(OpKind::Vfree)]);
                return;
            };
            let mapped = Ps::from(held.mapped_pages);
            if let HeldKind::MapRamInBlock { .. } = held.kind {
                let clear = cx.work(mapped * unmap);
                cx.then([
                    Step::Work(clear),
                    Step::Act(Act::VbFree { slot }),
                    Step::Done(OpKind::VmUnmapRam),
                ]);
                return;
            }
            // An area of its own: unlinked, unmapped and freed lazily; a vmalloc area's pages
            // are freed and accounted too (drawn in the order the steps run).
            let pre = cx.work(free_prepare);
            let clear = cx.work(mapped * unmap);
            // prepare · busy unlink · unmap · lazy add (then lazy insert) · [free pages ·
            // account] · done, pushed back to front.
            if held.kind == HeldKind::Vmalloc {
                let pages_out = cx.work(mapped * page_free);
                cx.push_done(0, OpKind::Vfree);
                cx.push_act(pages_out, Act::AccountPages);
            } else {
                cx.push_done(0, OpKind::VmUnmapRam);
            }
            cx.push_act(clear, Act::LazyAdd { slot });
            cx.push_act(pre, Act::BusyUnlink { slot });
        }
        Op::Lookup { slot, offset_pages } => {
            if cx.slots_get(slot).is_some() {
                cx.then([
                    Step::Act(Act::Lookup { slot, offset_pages }),
                    Step::Done(OpKind::Lookup),
                ]);
            } else {
                cx.then([Step::Done(OpKind::Lookup)]);
            }
        }
    }
}

/// Run one action.
fn run_step<D: Allocator>(
    design: &mut D,
    act: Act<D::Own>,
    cx: &mut Cx<'_, Act<D::Own>>,
) -> Outcome {
    let t = match act {
        Act::Alloc => design.alloc(cx.alloc_request(), cx),
        Act::BusyInsert { slot } => design.busy_insert(cx.held(slot).area, cx),
        Act::SetupVm { slot } => design.setup_vm(cx.held(slot).area, cx),
        Act::BusyUnlink { slot } => design.busy_unlink(cx.held(slot).area, cx),
        Act::Lookup { slot, offset_pages } => {
            design.lookup(slot, cx.held(slot).area, offset_pages, cx)
        }
        Act::AccountPages => design.core().account_pages(cx),
        Act::LazyAdd { slot } => {
            let pages = cx.held(slot).area.pages;
            let (t, kick) = design.core().lazy_add(cx, pages);
            cx.push_act(0, Act::LazyInsert { slot, kick });
            t
        }
        Act::LazyInsert { slot, kick } => {
            let area = cx.release(slot).area;
            let t = design.lazy_insert(area, cx);
            if kick {
                let start = Act::Design(design.purge_start());
                design.core().request_drain(cx, start);
            }
            t
        }
        Act::VbAlloc { slot, pages } => match design.core().vb_alloc(cx, slot, pages) {
            Ok(t) => t,
            Err(t) => {
                // new_vmap_block(): the block is an area of its own.
                let block = AllocRequest {
                    slot,
                    pages: VMAP_BLOCK_PAGES,
                    align: VMAP_BLOCK_PAGES,
                    mapped: 0,
                    kind: AreaUse::MapRam,
                };
                cx.set_alloc_request(block);
                cx.then([
                    Step::Act(Act::Alloc),
                    Step::Act(Act::BusyInsert { slot }),
                    Step::Act(Act::VbInstall { slot, pages }),
                ]);
                t
            }
        },
        Act::VbInstall { slot, pages } => design.core().vb_install(cx, slot, pages),
        Act::VbFree { slot } => {
            let (t, block) = design.core().vb_free(cx, slot);
            if let Some(area) = block {
                // The whole block is dirty: its area is unlinked and freed like any other.
                cx.hold(
                    slot,
                    Held {
                        area,
                        mapped_pages: 0,
                        kind: HeldKind::MapRam,
                    },
                );
                cx.then([
                    Step::Act(Act::BusyUnlink { slot }),
                    Step::Act(Act::LazyAdd { slot }),
                ]);
            }
            t
        }
        Act::Design(own) => return design.own(own, cx),
    };
    Outcome::At(t)
}
