//! Workloads: what the simulated CPUs ask of the allocator.
//!
//! Closed loop: each thread repeats an iteration as fast as it can (test_vmalloc's style):
//! allocate `allocs_per_iteration` areas (each followed by its lookups), free them in allocation
//! order, think. Threads are split between groups by weight; a group may set up long-lived state
//! first (test_vmalloc's long_busy_list keeps 15000 areas, full_fit fragments the free space).
//!
//! Open loop: allocations arrive at given rates per CPU (Poisson), each area is freed after an
//! exponential lifetime. Latency then includes queueing behind earlier requests on the same CPU.
//!
//! Built-in workloads are listed by [`preset_names`]; a TOML file describes others (format in
//! docs/model.md).

use anyhow::{bail, ensure, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::draw::SimRng;
use crate::model::space::fls;

/// One size of allocation and how often it is picked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeClass {
    /// Requested pages (the guard page of vmalloc is added by the kernel, not here).
    pub pages: u32,
    /// Alignment in pages (power of two).
    #[serde(default = "one")]
    pub align_pages: u32,
    #[serde(default = "one_f")]
    pub weight: f64,
}

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}

/// Which address a lookup (`find_vmap_area`, as hardened usercopy does) passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupOffset {
    /// The area's start.
    #[default]
    Start,
    /// A uniformly random page of the area: interior pointers, as copies into a large buffer.
    Uniform,
}

/// How the sizes of one iteration's allocations are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeOrder {
    /// Each allocation draws a size by weight.
    #[default]
    Sampled,
    /// Allocation `i` of an iteration uses size `i % sizes.len()` (test_vmalloc's fixed sequences).
    InOrder,
}

/// Long-lived fragments a group creates before its loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fragments {
    #[default]
    None,
    /// test_vmalloc full_fit_alloc_test: `fls(num_online_cpus()) * 8192` one-page areas kept,
    /// interleaved with as many freed (and purged) ones, so the free space is full of
    /// exactly-fitting holes.
    FullFit,
}

/// One group of closed-loop threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadGroup {
    pub name: String,
    /// Share of the threads running this group.
    pub weight: f64,
    /// Areas allocated per iteration, then freed in allocation order.
    pub allocs_per_iteration: u32,
    #[serde(rename = "size")]
    pub sizes: Vec<SizeClass>,
    pub size_order: SizeOrder,
    /// Mean `find_vmap_area` calls after each allocation (fractions are drawn: 0.5 = every
    /// other allocation).
    pub lookups_per_alloc: f64,
    pub lookup_offset: LookupOffset,
    /// Share of allocations made with `vm_map_ram` instead of `vmalloc`.
    pub vm_map_ram_share: f64,
    /// Time between iterations, not spent in the allocator (ns).
    pub think_ns: f64,
    /// One-page vmalloc areas allocated before the loop and kept (long_busy_list: 15000).
    pub resident_areas: u32,
    pub fragments: Fragments,
    /// Iterations each thread runs in the real test (wall-time estimates only).
    pub loop_count: Option<u64>,
}

impl Default for ThreadGroup {
    fn default() -> Self {
        ThreadGroup {
            name: "pairs".into(),
            weight: 1.0,
            allocs_per_iteration: 1,
            sizes: vec![SizeClass {
                pages: 1,
                align_pages: 1,
                weight: 1.0,
            }],
            size_order: SizeOrder::Sampled,
            lookups_per_alloc: 0.0,
            lookup_offset: LookupOffset::Start,
            vm_map_ram_share: 0.0,
            think_ns: 0.0,
            resident_areas: 0,
            fragments: Fragments::None,
            loop_count: None,
        }
    }
}

/// Open-loop arrivals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenLoop {
    /// Allocations per second, whole machine.
    pub allocs_per_s: f64,
    /// Frees per allocation (1 = every area is freed).
    pub frees_per_alloc: f64,
    /// Mean lifetime of an area before its free arrives (exponential), µs.
    pub lifetime_us: f64,
    pub lookups_per_alloc: f64,
    pub lookup_offset: LookupOffset,
    pub vm_map_ram_share: f64,
    #[serde(rename = "size")]
    pub sizes: Vec<SizeClass>,
    /// Share of the allocations issued by each CPU; empty = uniform.
    pub cpu_share: Vec<f64>,
}

impl Default for OpenLoop {
    fn default() -> Self {
        OpenLoop {
            allocs_per_s: 100_000.0,
            frees_per_alloc: 1.0,
            lifetime_us: 10.0,
            lookups_per_alloc: 0.0,
            lookup_offset: LookupOffset::Start,
            vm_map_ram_share: 0.0,
            sizes: vec![SizeClass {
                pages: 1,
                align_pages: 1,
                weight: 1.0,
            }],
            cpu_share: Vec::new(),
        }
    }
}

/// How load is generated.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drive {
    Closed {
        /// Looping threads; `None` = one per CPU.
        threads: Option<u32>,
        groups: Vec<ThreadGroup>,
    },
    Open(OpenLoop),
}

/// A named workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Workload {
    pub name: String,
    pub drive: Drive,
}

/// The TOML file shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    name: Option<String>,
    mode: Mode,
    threads: Option<u32>,
    #[serde(default)]
    group: Vec<ThreadGroup>,
    open: Option<OpenLoop>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Closed,
    Open,
}

/// test_vmalloc's default `test_loop_count`.
pub const TEST_VMALLOC_LOOP_COUNT: u64 = 1_000_000;

fn fix_size_group() -> ThreadGroup {
    ThreadGroup {
        name: "fix_size_alloc".into(),
        loop_count: Some(TEST_VMALLOC_LOOP_COUNT),
        ..ThreadGroup::default()
    }
}

fn full_fit_group() -> ThreadGroup {
    ThreadGroup {
        name: "full_fit_alloc".into(),
        fragments: Fragments::FullFit,
        loop_count: Some(TEST_VMALLOC_LOOP_COUNT),
        ..ThreadGroup::default()
    }
}

fn long_busy_group() -> ThreadGroup {
    ThreadGroup {
        name: "long_busy_list_alloc".into(),
        allocs_per_iteration: 2,
        sizes: vec![
            SizeClass {
                pages: 100,
                align_pages: 1,
                weight: 1.0,
            },
            SizeClass {
                pages: 1,
                align_pages: 1,
                weight: 1.0,
            },
        ],
        size_order: SizeOrder::InOrder,
        resident_areas: 15000,
        loop_count: Some(TEST_VMALLOC_LOOP_COUNT),
        ..ThreadGroup::default()
    }
}

fn closed(name: &str, groups: Vec<ThreadGroup>) -> Workload {
    Workload {
        name: name.into(),
        drive: Drive::Closed {
            threads: None,
            groups,
        },
    }
}

/// Built-in workloads and what they model.
pub fn preset_names() -> &'static [(&'static str, &'static str)] {
    &[
        ("pair", "loop of vmalloc(1 page) + vfree (the published per-pair latency test)"),
        (
            "test-vmalloc",
            "test_vmalloc run_test_mask=7: threads split between fix_size, full_fit and long_busy_list",
        ),
        ("fix-size", "test_vmalloc fix_size_alloc_test: vmalloc(1 page) + vfree"),
        ("full-fit", "test_vmalloc full_fit_alloc_test: one-page holes fill exactly"),
        ("long-busy", "test_vmalloc long_busy_list_alloc_test: 15000 live areas, 100 + 1 page pairs"),
        ("stacks", "VMAP_STACK: 16 KiB stacks aligned to 16 KiB, one find_vm_area each"),
        ("usercopy", "64 KiB vzalloc'd buffers, 8 hardened-usercopy lookups at interior pointers"),
        ("vm-map-ram", "vm_map_ram / vm_unmap_ram of 4 pages (per-CPU vmap blocks)"),
    ]
}

impl Workload {
    /// A built-in workload by name.
    pub fn preset(name: &str) -> Option<Workload> {
        Some(match name {
            "pair" => closed(
                "pair",
                vec![ThreadGroup {
                    name: "vmalloc+vfree".into(),
                    ..ThreadGroup::default()
                }],
            ),
            "test-vmalloc" => closed(
                "test-vmalloc",
                vec![fix_size_group(), full_fit_group(), long_busy_group()],
            ),
            "fix-size" => closed("fix-size", vec![fix_size_group()]),
            "full-fit" => closed("full-fit", vec![full_fit_group()]),
            "long-busy" => closed("long-busy", vec![long_busy_group()]),
            "stacks" => closed(
                "stacks",
                vec![ThreadGroup {
                    name: "kernel stacks".into(),
                    sizes: vec![SizeClass {
                        pages: 4,
                        align_pages: 4,
                        weight: 1.0,
                    }],
                    lookups_per_alloc: 1.0,
                    ..ThreadGroup::default()
                }],
            ),
            "usercopy" => closed(
                "usercopy",
                vec![ThreadGroup {
                    name: "usercopy buffers".into(),
                    sizes: vec![SizeClass {
                        pages: 16,
                        align_pages: 1,
                        weight: 1.0,
                    }],
                    lookups_per_alloc: 8.0,
                    lookup_offset: LookupOffset::Uniform,
                    ..ThreadGroup::default()
                }],
            ),
            "vm-map-ram" => closed(
                "vm-map-ram",
                vec![ThreadGroup {
                    name: "vm_map_ram".into(),
                    sizes: vec![SizeClass {
                        pages: 4,
                        align_pages: 1,
                        weight: 1.0,
                    }],
                    vm_map_ram_share: 1.0,
                    ..ThreadGroup::default()
                }],
            ),
            _ => return None,
        })
    }

    /// Parse a workload TOML file's text.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Workload> {
        let file: WorkloadFile = toml::from_str(text).context("parsing workload")?;
        let name = file.name.unwrap_or_else(|| "custom".into());
        let drive = match file.mode {
            Mode::Closed => {
                ensure!(file.open.is_none(), "an [open] table needs mode = \"open\"");
                let groups = if file.group.is_empty() {
                    vec![ThreadGroup::default()]
                } else {
                    file.group
                };
                Drive::Closed {
                    threads: file.threads,
                    groups,
                }
            }
            Mode::Open => {
                ensure!(
                    file.group.is_empty(),
                    "[[group]] tables need mode = \"closed\""
                );
                ensure!(
                    file.threads.is_none(),
                    "threads applies to mode = \"closed\" only"
                );
                Drive::Open(file.open.unwrap_or_default())
            }
        };
        let w = Workload { name, drive };
        w.validate(None)?;
        Ok(w)
    }

    /// The same workload with the closed-loop thread count set.
    pub fn with_threads(mut self, n: u32) -> anyhow::Result<Workload> {
        match &mut self.drive {
            Drive::Closed { threads, .. } => *threads = Some(n),
            Drive::Open(_) => bail!("--threads applies to closed-loop workloads only"),
        }
        Ok(self)
    }

    /// Check the workload; with `cpus`, also that it fits the machine.
    pub fn validate(&self, cpus: Option<u32>) -> anyhow::Result<()> {
        match &self.drive {
            Drive::Closed { threads, groups } => {
                ensure!(
                    !groups.is_empty(),
                    "a closed-loop workload needs at least one group"
                );
                if let Some(t) = threads {
                    ensure!(*t >= 1, "threads must be at least 1");
                    if let Some(c) = cpus {
                        ensure!(
                            *t <= c,
                            "{t} threads do not fit on {c} CPUs (one thread per CPU)"
                        );
                    }
                }
                for g in groups {
                    let ctx = || format!("group {:?}", g.name);
                    ensure!(
                        g.weight.is_finite() && g.weight > 0.0,
                        "{}: weight must be > 0",
                        ctx()
                    );
                    ensure!(
                        (1..=1024).contains(&g.allocs_per_iteration),
                        "{}: allocs_per_iteration must be 1..=1024",
                        ctx()
                    );
                    check_common(&g.sizes, g.lookups_per_alloc, g.vm_map_ram_share)
                        .with_context(ctx)?;
                    ensure!(
                        (0.0..=1e9).contains(&g.think_ns),
                        "{}: think_ns must be 0..=1e9",
                        ctx()
                    );
                    ensure!(
                        g.resident_areas <= 1_000_000,
                        "{}: resident_areas must be <= 1000000",
                        ctx()
                    );
                }
            }
            Drive::Open(o) => {
                ensure!(
                    o.allocs_per_s.is_finite() && o.allocs_per_s > 0.0,
                    "open.allocs_per_s must be > 0"
                );
                ensure!(
                    (0.0..=1.0).contains(&o.frees_per_alloc),
                    "open.frees_per_alloc must be between 0 and 1"
                );
                ensure!(
                    (0.0..=1e9).contains(&o.lifetime_us),
                    "open.lifetime_us must be 0..=1e9"
                );
                check_common(&o.sizes, o.lookups_per_alloc, o.vm_map_ram_share).context("open")?;
                if !o.cpu_share.is_empty() {
                    ensure!(
                        o.cpu_share.iter().all(|s| s.is_finite() && *s >= 0.0)
                            && o.cpu_share.iter().sum::<f64>() > 0.0,
                        "open.cpu_share must be non-negative with a positive sum"
                    );
                    if let Some(c) = cpus {
                        ensure!(
                            o.cpu_share.len() <= c as usize,
                            "open.cpu_share has {} entries for {c} CPUs",
                            o.cpu_share.len()
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_common(sizes: &[SizeClass], lookups: f64, map_ram: f64) -> anyhow::Result<()> {
    ensure!(!sizes.is_empty(), "at least one [[size]] is needed");
    for s in sizes {
        ensure!(
            (1..=(1 << 20)).contains(&s.pages),
            "size pages must be 1..=1048576, got {}",
            s.pages
        );
        ensure!(
            s.align_pages.is_power_of_two() && s.align_pages <= (1 << 20),
            "size align_pages must be a power of two, got {}",
            s.align_pages
        );
        ensure!(
            s.weight.is_finite() && s.weight > 0.0,
            "size weight must be > 0"
        );
    }
    ensure!(
        lookups.is_finite() && (0.0..=10_000.0).contains(&lookups),
        "lookups_per_alloc must be 0..=10000"
    );
    ensure!(
        (0.0..=1.0).contains(&map_ram),
        "vm_map_ram_share must be between 0 and 1"
    );
    Ok(())
}

/// One allocator call issued by a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `vmalloc(pages)` aligned to `align` pages, into a thread-local slot.
    Vmalloc { slot: u32, pages: u32, align: u32 },
    /// `vm_map_ram(pages)`.
    VmMapRam { slot: u32, pages: u32 },
    /// Free whatever the slot holds (`vfree` or `vm_unmap_ram`).
    Release { slot: u32 },
    /// `find_vmap_area(start + offset_pages)`.
    Lookup { slot: u32, offset_pages: u32 },
}

/// What a closed-loop thread does next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    Op(Op),
    /// Time outside the allocator (ns).
    Think(f64),
    /// The iteration ended.
    IterationDone,
}

/// Draw an integer count with mean `mean` (integer part, plus one with the fractional chance).
pub fn draw_count(mean: f64, rng: &mut SimRng) -> u32 {
    let whole = mean.floor();
    // A whole mean needs no draw (most workloads: no lookups), which saves a random number on
    // every allocation.
    let extra = mean > whole && rng.random::<f64>() < mean - whole;
    whole as u32 + u32::from(extra)
}

/// Pick a size class by weight.
pub fn draw_size<'a>(sizes: &'a [SizeClass], rng: &mut SimRng) -> &'a SizeClass {
    if sizes.len() == 1 {
        return &sizes[0];
    }
    let total: f64 = sizes.iter().map(|s| s.weight).sum();
    let mut x = rng.random::<f64>() * total;
    for s in sizes {
        if x < s.weight {
            return s;
        }
        x -= s.weight;
    }
    sizes.last().expect("sizes is not empty")
}

/// The allocation call for a drawn size.
pub fn alloc_op(slot: u32, size: &SizeClass, map_ram_share: f64, rng: &mut SimRng) -> Op {
    if map_ram_share > 0.0 && rng.random::<f64>() < map_ram_share {
        Op::VmMapRam {
            slot,
            pages: size.pages,
        }
    } else {
        Op::Vmalloc {
            slot,
            pages: size.pages,
            align: size.align_pages,
        }
    }
}

/// Lookup offset within an area of `pages` pages.
pub fn lookup_offset(kind: LookupOffset, pages: u32, rng: &mut SimRng) -> u32 {
    match kind {
        LookupOffset::Start => 0,
        LookupOffset::Uniform => rng.random_range(0..pages),
    }
}

/// A closed-loop thread's position in its iteration.
#[derive(Debug)]
pub struct ThreadScript {
    pub group: usize,
    allocated: u32,
    freed: u32,
    lookups_left: u32,
    last_pages: u32,
    thought: bool,
}

impl ThreadScript {
    pub fn new(group: usize) -> Self {
        ThreadScript {
            group,
            allocated: 0,
            freed: 0,
            lookups_left: 0,
            last_pages: 0,
            thought: false,
        }
    }

    /// The next step of the iteration (slots are `0..allocs_per_iteration`). Inlined into the
    /// engine: returned through memory, the operation was written field by field and read
    /// back whole, a stalled store-to-load forward on every operation.
    #[inline(always)]
    pub fn next(&mut self, g: &ThreadGroup, rng: &mut SimRng) -> Next {
        if self.lookups_left > 0 {
            self.lookups_left -= 1;
            let slot = self.allocated - 1;
            let offset_pages = lookup_offset(g.lookup_offset, self.last_pages, rng);
            return Next::Op(Op::Lookup { slot, offset_pages });
        }
        if self.allocated < g.allocs_per_iteration {
            let size = match g.size_order {
                SizeOrder::Sampled => draw_size(&g.sizes, rng),
                SizeOrder::InOrder => &g.sizes[self.allocated as usize % g.sizes.len()],
            };
            let slot = self.allocated;
            self.allocated += 1;
            self.last_pages = size.pages;
            self.lookups_left = draw_count(g.lookups_per_alloc, rng);
            return Next::Op(alloc_op(slot, size, g.vm_map_ram_share, rng));
        }
        if self.freed < g.allocs_per_iteration {
            let slot = self.freed;
            self.freed += 1;
            return Next::Op(Op::Release { slot });
        }
        if g.think_ns > 0.0 && !self.thought {
            self.thought = true;
            return Next::Think(g.think_ns);
        }
        *self = ThreadScript::new(self.group);
        Next::IterationDone
    }
}

/// Split `threads` between groups by weight (largest remainders), in group order.
pub fn assign_groups(groups: &[ThreadGroup], threads: u32) -> Vec<usize> {
    let total: f64 = groups.iter().map(|g| g.weight).sum();
    let exact: Vec<f64> = groups
        .iter()
        .map(|g| g.weight / total * f64::from(threads))
        .collect();
    let mut counts: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let mut left = threads - counts.iter().sum::<u32>();
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    counts
        .iter()
        .enumerate()
        .flat_map(|(g, &n)| std::iter::repeat_n(g, n as usize))
        .collect()
}

/// full_fit_alloc_test's `junk_length`: `fls(num_online_cpus()) * (32 MiB / PAGE_SIZE)`.
pub fn full_fit_pairs(cpus: u32, page_size: u64) -> u64 {
    u64::from(fls(cpus)) * ((32 << 20) / page_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn presets_are_valid() {
        for (name, _) in preset_names() {
            let w = Workload::preset(name).unwrap();
            w.validate(Some(64)).unwrap();
        }
        assert!(Workload::preset("nope").is_none());
    }

    #[test]
    fn long_busy_iteration_is_two_allocs_then_two_frees() {
        let g = long_busy_group();
        let mut rng = SimRng::seed_from_u64(1);
        let mut s = ThreadScript::new(0);
        let seq: Vec<Next> = (0..5).map(|_| s.next(&g, &mut rng)).collect();
        assert_eq!(
            seq,
            vec![
                Next::Op(Op::Vmalloc {
                    slot: 0,
                    pages: 100,
                    align: 1
                }),
                Next::Op(Op::Vmalloc {
                    slot: 1,
                    pages: 1,
                    align: 1
                }),
                Next::Op(Op::Release { slot: 0 }),
                Next::Op(Op::Release { slot: 1 }),
                Next::IterationDone,
            ]
        );
    }

    #[test]
    fn lookups_follow_their_allocation() {
        let g = ThreadGroup {
            lookups_per_alloc: 2.0,
            think_ns: 5.0,
            ..ThreadGroup::default()
        };
        let mut rng = SimRng::seed_from_u64(1);
        let mut s = ThreadScript::new(0);
        let seq: Vec<Next> = (0..6).map(|_| s.next(&g, &mut rng)).collect();
        assert_eq!(
            seq[1],
            Next::Op(Op::Lookup {
                slot: 0,
                offset_pages: 0
            })
        );
        assert_eq!(
            seq[2],
            Next::Op(Op::Lookup {
                slot: 0,
                offset_pages: 0
            })
        );
        assert_eq!(seq[3], Next::Op(Op::Release { slot: 0 }));
        assert_eq!(seq[4], Next::Think(5.0));
        assert_eq!(seq[5], Next::IterationDone);
    }

    #[test]
    fn groups_are_split_by_weight() {
        let w = Workload::preset("test-vmalloc").unwrap();
        let Drive::Closed { groups, .. } = &w.drive else {
            panic!()
        };
        let a = assign_groups(groups, 64);
        assert_eq!(a.len(), 64);
        let counts: Vec<usize> = (0..3)
            .map(|g| a.iter().filter(|&&x| x == g).count())
            .collect();
        assert_eq!(counts, vec![22, 21, 21]);
    }

    #[test]
    fn toml_workloads_parse_and_bad_ones_explain() {
        let w = Workload::from_toml_str(
            "mode = \"closed\"\nthreads = 4\n[[group]]\nname = \"x\"\nlookups_per_alloc = 1.5\n[[group.size]]\npages = 3\n",
        )
        .unwrap();
        let Drive::Closed { threads, groups } = &w.drive else {
            panic!()
        };
        assert_eq!(*threads, Some(4));
        assert_eq!(groups[0].sizes[0].pages, 3);
        let w =
            Workload::from_toml_str("mode = \"open\"\n[open]\nallocs_per_s = 5000.0\n").unwrap();
        assert!(matches!(w.drive, Drive::Open(ref o) if o.allocs_per_s == 5000.0));
        let err = Workload::from_toml_str(
            "mode = \"closed\"\n[[group]]\n[[group.size]]\npages = 3\nalign_pages = 3\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("power of two"), "{err:#}");
        assert!(Workload::from_toml_str("mode = \"sideways\"\n").is_err());
        let w = Workload::preset("pair").unwrap().with_threads(65).unwrap();
        assert!(w.validate(Some(64)).is_err());
    }

    #[test]
    fn full_fit_junk_length_follows_the_test() {
        assert_eq!(full_fit_pairs(64, 4096), 57344);
    }
}
