//! Address-space bookkeeping shared by both designs: vmap area descriptors, the free-space tree
//! with the kernel's lowest-fit rule, and the small kernel formulas (`lazy_max_pages`, vmap
//! zones, pool size classes).
//!
//! Addresses are page frame numbers (virtual address / page size) so that zone and alignment
//! arithmetic is exact; the free tree is a real interval set, not a count, because node-sharded
//! behaviour (which node's lock an area takes, pool alignment hits) depends on actual addresses.

use std::collections::{BTreeMap, BTreeSet};

/// x86-64 `VMALLOC_START` with 4-level paging.
pub const VMALLOC_START: u64 = 0xffff_c900_0000_0000;
/// x86-64 vmalloc space size with 4-level paging (32 TiB).
pub const VMALLOC_SIZE: u64 = 32 << 40;
/// `vmap_zone_size` in pages: the node-sharded design hashes addresses to nodes by 16-page zones.
pub const VMAP_ZONE_PAGES: u64 = 16;
/// `MAX_VA_SIZE_PAGES`: pool classes per node.
pub const MAX_VA_SIZE_PAGES: u32 = 256;
/// `nr_vmap_nodes` is clamped to this.
pub const MAX_VMAP_NODES: u32 = 128;

/// The kernel's `fls()`: 1-based index of the most significant set bit, 0 for 0.
pub fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// `lazy_max_pages()`: lazily freed pages tolerated before a purge is scheduled,
/// `fls(num_online_cpus()) * (32 MiB / PAGE_SIZE)`.
pub fn lazy_max_pages(online_cpus: u32, page_size: u64) -> u64 {
    u64::from(fls(online_cpus)) * ((32 << 20) / page_size)
}

/// `vmap_init_nodes()`: one node per possible CPU, at most 128.
pub fn nr_vmap_nodes(possible_cpus: u32) -> u32 {
    possible_cpus.clamp(1, MAX_VMAP_NODES)
}

/// `addr_to_node_id()`: `(addr / vmap_zone_size) % nr_vmap_nodes`, with `addr` as a page number.
///
/// Most lock operations of the node-sharded design start here, and a 64-bit division takes tens
/// of cycles; `nr_vmap_nodes` is the CPU count (at most 128), usually a power of two, where the
/// remainder is a mask (the same value).
#[inline]
pub fn addr_to_node(addr_page: u64, nr_nodes: u32) -> u32 {
    let zone = addr_page / VMAP_ZONE_PAGES;
    if nr_nodes.is_power_of_two() {
        (zone & u64::from(nr_nodes - 1)) as u32
    } else {
        (zone % u64::from(nr_nodes)) as u32
    }
}

/// `cpu % nr_nodes`, by a mask when `nr_nodes` is a power of two (see [`addr_to_node`]).
#[inline]
pub fn cpu_to_node(cpu: u32, nr_nodes: u32) -> u32 {
    if nr_nodes.is_power_of_two() {
        cpu & (nr_nodes - 1)
    } else {
        cpu % nr_nodes
    }
}

/// `size_to_va_pool()`: the pool class of an area of `area_pages` pages (guard page included),
/// `(size - 1) / PAGE_SIZE`, or `None` when the area is too large to be pooled.
pub fn pool_class(area_pages: u32) -> Option<usize> {
    let idx = area_pages.checked_sub(1)?;
    (idx < MAX_VA_SIZE_PAGES).then_some(idx as usize)
}

/// First page number of the vmalloc range for a given page size.
pub fn vmalloc_start_page(page_size: u64) -> u64 {
    VMALLOC_START / page_size
}

/// One vmap area: `[start, start + pages)` in page numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Area {
    pub start: u64,
    pub pages: u32,
    /// Node-sharded design: the allocating node (`va->flags` holds `(id + 1) << 8`); `None` in
    /// the legacy design and for areas that did not go through `node_alloc()`.
    pub alloc_node: Option<u16>,
}

impl Area {
    pub fn end(&self) -> u64 {
        self.start + u64::from(self.pages)
    }
}

/// How an allocation carved its free block (`adjust_va_to_fit_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitKind {
    /// The block is used whole and removed from the tree.
    Full,
    /// Allocated at one edge; the block shrinks in place.
    Edge,
    /// Allocated in the middle; the block splits and a new node is inserted.
    Split,
}

/// Lengths up to this many pages are indexed per exact length; longer blocks are few (the big
/// unused remainder of the range and large merged holes) and are scanned in address order.
const INDEXED_MAX_PAGES: u64 = 1024;
const LEN_WORDS: usize = (INDEXED_MAX_PAGES as usize + 1).div_ceil(64);
/// With an alignment constraint, how many blocks of one length are examined before giving up on
/// that length. Exact lowest-fit would need the kernel's augmented tree; this bound only matters
/// for aligned requests in a heavily fragmented tree and is documented as a model limit.
const ALIGN_SCAN_LIMIT: usize = 64;

/// The free vmap space (`free_vmap_area_root` and its list), with the kernel's lowest-fit rule:
/// an allocation takes the lowest-addressed free block in which an aligned request fits.
#[derive(Debug)]
pub struct FreeSpace {
    blocks: BTreeMap<u64, u64>,
    by_len: Vec<BTreeSet<u64>>,
    long: BTreeSet<u64>,
    nonempty: [u64; LEN_WORDS],
}

impl FreeSpace {
    /// The whole range `[start, end)` free.
    pub fn new(start: u64, end: u64) -> Self {
        let mut space = FreeSpace::empty();
        space.insert_block(start, end);
        space
    }

    /// An empty interval set (the legacy purge tree reuses this structure).
    pub fn empty() -> Self {
        FreeSpace {
            blocks: BTreeMap::new(),
            by_len: vec![BTreeSet::new(); INDEXED_MAX_PAGES as usize + 1],
            long: BTreeSet::new(),
            nonempty: [0; LEN_WORDS],
        }
    }

    /// Remove and return every block, in address order.
    pub fn take_all(&mut self) -> Vec<(u64, u64)> {
        let blocks = std::mem::take(&mut self.blocks).into_iter().collect();
        *self = FreeSpace::empty();
        blocks
    }

    /// A free space made of `holes` (sorted, disjoint, not adjacent) plus `[tail_start, end)`.
    /// Used to set up large fragmented states (test_vmalloc's full_fit) in bulk.
    pub fn with_holes(
        holes: impl IntoIterator<Item = (u64, u64)>,
        tail_start: u64,
        end: u64,
    ) -> Self {
        let blocks: BTreeMap<u64, u64> = holes.into_iter().collect();
        let mut space = FreeSpace::empty();
        let mut per_len: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (&s, &e) in &blocks {
            per_len.entry(e - s).or_default().push(s);
        }
        for (len, starts) in per_len {
            if len <= INDEXED_MAX_PAGES {
                space.by_len[len as usize] = starts.into_iter().collect();
                space.nonempty[len as usize / 64] |= 1 << (len % 64);
            } else {
                space.long.extend(starts);
            }
        }
        space.blocks = blocks;
        space.merge(tail_start, end);
        space
    }

    /// Number of free blocks, i.e. nodes in the kernel's free tree.
    pub fn blocks(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Lowest-fit allocation of `pages` aligned to `align` pages.
    pub fn alloc(&mut self, pages: u64, align: u64) -> Option<(u64, FitKind)> {
        let (block_start, at) = self.lowest_fit(pages, align)?;
        let block_end = self.remove_block(block_start);
        let end = at + pages;
        let kind = match (at == block_start, end == block_end) {
            (true, true) => FitKind::Full,
            (true, false) | (false, true) => FitKind::Edge,
            (false, false) => FitKind::Split,
        };
        if at > block_start {
            self.insert_block(block_start, at);
        }
        if end < block_end {
            self.insert_block(end, block_end);
        }
        Some((at, kind))
    }

    /// `merge_or_add_vmap_area()`: return `[start, end)` to the free space, coalescing with
    /// adjacent free blocks. Returns whether it merged with a neighbour.
    pub fn merge(&mut self, start: u64, end: u64) -> bool {
        let (mut s, mut e) = (start, end);
        let mut merged = false;
        if let Some((&ps, &pe)) = self.blocks.range(..s).next_back() {
            debug_assert!(
                pe <= s,
                "freeing {start:#x}..{end:#x} overlaps a free block"
            );
            if pe == s {
                self.remove_block(ps);
                s = ps;
                merged = true;
            }
        }
        if let Some(&ne) = self.blocks.get(&e) {
            self.remove_block(e);
            e = ne;
            merged = true;
        }
        self.insert_block(s, e);
        merged
    }

    fn lowest_fit(&self, pages: u64, align: u64) -> Option<(u64, u64)> {
        let fits = |s: u64, e: u64| {
            let at = s.next_multiple_of(align);
            (at + pages <= e).then_some((s, at))
        };
        let mut best: Option<(u64, u64)> = None;
        let mut consider = |cand: Option<(u64, u64)>| {
            if let Some(c) = cand {
                if best.is_none_or(|b| c.0 < b.0) {
                    best = Some(c);
                }
            }
        };
        if pages <= INDEXED_MAX_PAGES {
            let mut len = pages as usize;
            while let Some(l) = self.next_nonempty_len(len) {
                let scan = if align <= 1 { 1 } else { ALIGN_SCAN_LIMIT };
                let cand = self.by_len[l]
                    .iter()
                    .take(scan)
                    .find_map(|&s| fits(s, s + l as u64));
                consider(cand);
                len = l + 1;
            }
        }
        let cand = self.long.iter().find_map(|&s| fits(s, self.blocks[&s]));
        consider(cand);
        best
    }

    fn next_nonempty_len(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        if word >= LEN_WORDS {
            return None;
        }
        let mut bits = self.nonempty[word] & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            if word >= LEN_WORDS {
                return None;
            }
            bits = self.nonempty[word];
        }
    }

    fn insert_block(&mut self, start: u64, end: u64) {
        debug_assert!(start < end);
        self.blocks.insert(start, end);
        let len = end - start;
        if len <= INDEXED_MAX_PAGES {
            self.by_len[len as usize].insert(start);
            self.nonempty[len as usize / 64] |= 1 << (len % 64);
        } else {
            self.long.insert(start);
        }
    }

    fn remove_block(&mut self, start: u64) -> u64 {
        let end = self.blocks.remove(&start).expect("free block exists");
        let len = end - start;
        if len <= INDEXED_MAX_PAGES {
            let set = &mut self.by_len[len as usize];
            set.remove(&start);
            if set.is_empty() {
                self.nonempty[len as usize / 64] &= !(1 << (len % 64));
            }
        } else {
            self.long.remove(&start);
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_max_pages_matches_kernel_values() {
        assert_eq!(lazy_max_pages(4, 4096), 24576);
        assert_eq!(lazy_max_pages(8, 4096), 32768);
        assert_eq!(lazy_max_pages(64, 4096), 57344);
        assert_eq!(lazy_max_pages(128, 4096), 65536);
        assert_eq!(lazy_max_pages(1, 4096), 8192);
    }

    #[test]
    fn node_count_is_clamped() {
        assert_eq!(nr_vmap_nodes(1), 1);
        assert_eq!(nr_vmap_nodes(64), 64);
        assert_eq!(nr_vmap_nodes(512), 128);
    }

    #[test]
    fn node_masks_agree_with_the_modulo() {
        let base = vmalloc_start_page(4096);
        for nodes in 1..=130u32 {
            for k in [0u64, 1, 15, 16, 17, 1000, 123_456_789] {
                let addr = base + k * 7;
                let zone = addr / VMAP_ZONE_PAGES;
                assert_eq!(
                    u64::from(addr_to_node(addr, nodes)),
                    zone % u64::from(nodes)
                );
                let cpu = (k % 300) as u32;
                assert_eq!(cpu_to_node(cpu, nodes), cpu % nodes);
            }
        }
    }

    #[test]
    fn addr_to_node_uses_16_page_zones() {
        let base = vmalloc_start_page(4096);
        assert_eq!(addr_to_node(base, 4), addr_to_node(base + 15, 4));
        let n0 = addr_to_node(base, 4);
        assert_eq!(addr_to_node(base + 16, 4), (n0 + 1) % 4);
        assert_eq!(addr_to_node(base + 4 * 16, 4), n0);
        // One 64 KiB zone per node with 4 KiB pages.
        assert_eq!(VMAP_ZONE_PAGES * 4096, 64 << 10);
    }

    #[test]
    fn pool_class_includes_guard_page_and_stops_at_256() {
        // vmalloc(PAGE_SIZE) asks for two pages (guard included): class 1.
        assert_eq!(pool_class(2), Some(1));
        assert_eq!(pool_class(1), Some(0));
        assert_eq!(pool_class(256), Some(255));
        assert_eq!(pool_class(257), None);
        assert_eq!(pool_class(0), None);
    }

    #[test]
    fn lowest_fit_prefers_lowest_address_and_honours_alignment() {
        let mut fs = FreeSpace::new(0, 1000);
        assert_eq!(fs.alloc(2, 1), Some((0, FitKind::Edge)));
        assert_eq!(fs.alloc(2, 1), Some((2, FitKind::Edge)));
        assert_eq!(fs.alloc(3, 1), Some((4, FitKind::Edge)));
        // Free the first area: a two-page hole at 0 is the lowest fit for two pages.
        assert!(!fs.merge(0, 2));
        assert_eq!(fs.alloc(2, 1), Some((0, FitKind::Full)));
        // Aligned request skips the unaligned start of the tail block.
        assert_eq!(fs.alloc(4, 16), Some((16, FitKind::Split)));
        assert_eq!(fs.blocks(), 2);
    }

    #[test]
    fn merge_coalesces_both_neighbours() {
        let mut fs = FreeSpace::new(0, 100);
        for _ in 0..3 {
            fs.alloc(10, 1).unwrap();
        }
        fs.merge(0, 10);
        fs.merge(20, 30);
        assert_eq!(fs.blocks(), 2);
        assert!(fs.merge(10, 20));
        assert_eq!(fs.blocks(), 1);
        assert_eq!(fs.alloc(100, 1), Some((0, FitKind::Full)));
    }

    #[test]
    fn bulk_holes_behave_like_incremental_frees() {
        let holes = (0..100u64).map(|i| (i * 4 + 2, i * 4 + 4));
        let mut fs = FreeSpace::with_holes(holes, 500, 1000);
        assert_eq!(fs.blocks(), 101);
        assert_eq!(fs.alloc(2, 1), Some((2, FitKind::Full)));
        assert_eq!(fs.alloc(3, 1), Some((500, FitKind::Edge)));
    }
}
