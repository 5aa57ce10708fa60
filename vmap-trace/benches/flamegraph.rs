//! Flamegraph rendering speed: 1,000,000 folded samples spread over 100,000 distinct kernel
//! stacks, rendered to SVG with inferno (goal: under 1 s). See docs/flamegraph.md for the
//! figure and the command.
//!
//! - `render_1m_samples_100k_stacks`: folded stacks (`Folded`, merged and sorted) -> SVG: the
//!   figure the goal is about; also measured in thread CPU time (`flamegraph_cpu/...`);
//! - `render_unsorted_lines_...`: the same as unsorted text lines, which inferno must sort
//!   first (what `inferno-flamegraph` does with arbitrary folded input);
//! - `profile_to_svg_100k_stacks`: a `Profile` holding those stacks -> fold -> SVG (what
//!   `vmap-trace flamegraph` does after loading a recording).
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use vmap_trace::flamegraph::svg::{render, Labels, RenderOptions};
use vmap_trace::flamegraph::{display_scale, flamegraph, FoldOptions, Folded, Quantity, Weight};
use vmap_trace::profile::{
    attribution, AllocatorDesign, Frame, Losses, Profile, RecordingMeta, StackWait, VmallocOps,
};

const STACKS: usize = 100_000;
const SAMPLES: u64 = 1_000_000;

/// A small deterministic generator (xorshift64*), so every run renders the same input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 100k distinct stacks, outermost frame first, 8 to 40 frames deep, shaped like kernel
/// stacks: few entry points, more fan-out the deeper it goes, a lock primitive on top.
fn synthetic_stacks() -> Vec<Vec<String>> {
    let entries = [
        "entry_SYSCALL_64_after_hwframe",
        "asm_exc_page_fault",
        "ret_from_fork_asm",
        "asm_sysvec_apic_timer_interrupt",
    ];
    let locks = [
        "_raw_spin_lock",
        "_raw_spin_lock_irqsave",
        "__mutex_lock.constprop.0",
        "down_write",
        "queued_read_lock_slowpath",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = std::collections::HashSet::with_capacity(STACKS);
    let mut stacks = Vec::with_capacity(STACKS);
    while stacks.len() < STACKS {
        let depth = 8 + rng.below(33) as usize;
        let mut frames = vec![entries[rng.below(entries.len() as u64) as usize].to_string()];
        for d in 1..depth - 1 {
            // Pool size grows with depth: shared trunks, bushy tops.
            let pool = 4 + (d as u64) * (d as u64) * 6;
            frames.push(format!("kfunc_d{d}_{}", rng.below(pool)));
        }
        frames.push(locks[rng.below(locks.len() as u64) as usize].to_string());
        if seen.insert(frames.join(";")) {
            stacks.push(frames);
        }
    }
    stacks
}

/// Sample counts for `n` stacks summing to exactly SAMPLES, skewed like real profiles (a few
/// heavy stacks, a long tail of light ones), every stack at least one sample.
fn sample_counts(n: usize) -> Vec<u64> {
    let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / (rank as f64).powf(0.8)).collect();
    let sum: f64 = weights.iter().sum();
    let spare = SAMPLES - n as u64;
    let mut counts: Vec<u64> = weights
        .iter()
        .map(|w| 1 + (w / sum * spare as f64) as u64)
        .collect();
    let short = SAMPLES - counts.iter().sum::<u64>();
    counts[0] += short;
    counts
}

fn folded_lines(stacks: &[Vec<String>], counts: &[u64]) -> Vec<String> {
    stacks
        .iter()
        .zip(counts)
        .map(|(s, c)| format!("{} {c}", s.join(";")))
        .collect()
}

fn profile_of(stacks: &[Vec<String>], counts: &[u64]) -> Profile {
    let stacks = stacks
        .iter()
        .zip(counts)
        .map(|(names, &count)| {
            // Profiles keep frames innermost first.
            let frames: Vec<Frame> = names
                .iter()
                .rev()
                .map(|n| Frame {
                    addr: 0xffff_ffff_8100_0000,
                    function: Some(n.clone()),
                    offset: 0,
                })
                .collect();
            StackWait {
                task: None,
                user_frames: Vec::new(),
                lock_addr: 0xffff_8881_0005_5820 + (count % 7) * 0x40,
                flags: 1,
                attribution: attribution::attribute(&frames),
                frames: frames.into(),
                count,
                total_ns: count * 1_000,
                max_ns: 1_000,
            }
        })
        .collect();
    Profile {
        meta: RecordingMeta {
            stack_keys: Default::default(),
            other_lock_period: 1,
            lock_waits: Default::default(),
            tool_version: "bench".into(),
            kernel_release: "6.18.0-bench".into(),
            hostname: "bench".into(),
            design: AllocatorDesign::NodeSharded,
            design_detail: None,
            cpus: 64,
            started_unix_s: 0,
            duration_ns: 10_000_000_000,
            hooks: vec![],
            lock_names_available: false,
            stacks_symbolized: true,
            notes: vec![],
            vmap_locks: vec![],
        },
        ops: VmallocOps::default(),
        locks: vec![],
        stacks,
        cpus: vec![],
        tasks: vec![],
        losses: Losses::default(),
        functions: vec![],
        lock_timing: vec![],
        stack_sampling: Default::default(),
    }
}

/// CPU time of the benchmarking thread. The shared development machine runs builds, VMs and
/// other benchmarks beside this one; wall time then mostly measures the neighbours, while
/// thread CPU time still measures the work (rendering is single-threaded).
struct ThreadCpuTime {
    wall: WallTime,
}

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID unavailable");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_now() - started
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

struct Inputs {
    folded: Folded,
    unsorted_lines: Vec<String>,
    profile: Profile,
    options: RenderOptions,
}

fn inputs() -> Inputs {
    let stacks = synthetic_stacks();
    let counts = sample_counts(stacks.len());
    assert_eq!(counts.iter().sum::<u64>(), SAMPLES);
    let unsorted_lines = folded_lines(&stacks, &counts);
    let mut folded = Folded::new();
    for (s, &c) in stacks.iter().zip(&counts) {
        folded.add(&s.join(";"), c);
    }
    assert_eq!((folded.len(), folded.total()), (STACKS, SAMPLES));
    let options = RenderOptions::new(
        Labels {
            title: "bench".into(),
            subtitle: Some("1,000,000 samples, 100,000 stacks".into()),
            notes: String::new(),
        },
        display_scale(Quantity::Events, SAMPLES),
    );
    Inputs {
        folded,
        unsorted_lines,
        profile: profile_of(&stacks, &counts),
        options,
    }
}

fn render_folded(inputs: &Inputs) -> usize {
    let lines = inputs.folded.lines();
    let mut svg = Vec::with_capacity(8 << 20);
    render(lines.iter().map(String::as_str), &inputs.options, &mut svg).unwrap();
    svg.len()
}

fn wall_time(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("flamegraph");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("render_1m_samples_100k_stacks", |b| {
        b.iter(|| black_box(render_folded(&inputs)))
    });
    group.bench_function("render_unsorted_lines_1m_samples_100k_stacks", |b| {
        b.iter(|| {
            let mut svg = Vec::with_capacity(8 << 20);
            render(
                inputs.unsorted_lines.iter().map(String::as_str),
                &inputs.options,
                &mut svg,
            )
            .unwrap();
            black_box(svg.len())
        })
    });
    let fold = FoldOptions {
        weight: Weight::Count,
        ..Default::default()
    };
    group.bench_function("profile_to_svg_100k_stacks", |b| {
        b.iter(|| {
            let graph = flamegraph(black_box(&inputs.profile), &fold).unwrap();
            assert_eq!(graph.folded.total(), SAMPLES);
            let mut svg = Vec::with_capacity(8 << 20);
            graph.write_svg(&mut svg).unwrap();
            black_box(svg.len())
        })
    });
    group.finish();
}

fn cpu_time(c: &mut Criterion<ThreadCpuTime>) {
    let inputs = inputs();
    let mut group = c.benchmark_group("flamegraph_cpu");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("render_1m_samples_100k_stacks", |b| {
        b.iter(|| black_box(render_folded(&inputs)))
    });
    let fold = FoldOptions {
        weight: Weight::Count,
        ..Default::default()
    };
    group.bench_function("profile_to_svg_100k_stacks", |b| {
        b.iter(|| {
            let mut svg = Vec::with_capacity(8 << 20);
            flamegraph(black_box(&inputs.profile), &fold)
                .unwrap()
                .write_svg(&mut svg)
                .unwrap();
            black_box(svg.len())
        })
    });
    group.finish();
}

criterion_group!(wall, wall_time);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime });
    targets = cpu_time
}
criterion_main!(wall, cpu);
