//! Root test of detaching and attaching the loaded programs again (`Probes::detach_all`,
//! `Probes::attach_again`), which the toggled overhead bench relies on: detached programs must
//! count nothing, and attached again they must count what perf stat counts.
use std::process::Command;

use aya::maps::PerCpuArray;
use vmap_trace::kernel::{btf::KernelBtf, kallsyms, vmap_locks};
use vmap_trace::probe::{self, ProbeOptions, Probes};
use vmap_trace::session::detect_design;
use vmap_trace_common::OpCounter;

mod common;
use common::{ensure_tracefs, is_root, BIN};

/// `vmalloc:alloc_vmap_area` hits our programs counted, summed over CPUs.
fn our_allocs(probes: &Probes) -> u64 {
    let map = probes.ebpf.map("OP_COUNTS").expect("OP_COUNTS map");
    let counts: PerCpuArray<_, u64> = PerCpuArray::try_from(map).expect("per-CPU array");
    counts
        .get(&(OpCounter::Allocs as u32), 0)
        .expect("allocation counter")
        .iter()
        .sum()
}

/// Half a second of `stress pty` inside `perf stat -a`: perf's count of the same tracepoint.
fn perf_counted_pty() -> u64 {
    let out = Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-a",
            "-e",
            "vmalloc:alloc_vmap_area",
            "--",
            BIN,
        ])
        .args(["stress", "pty", "--duration", "500ms"])
        .output()
        .expect("perf runs");
    assert!(out.status.success(), "perf stat failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.contains("vmalloc:alloc_vmap_area"))
        .and_then(|l| l.split(',').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in perf stat's output:\n{text}"))
}

#[test]
fn detached_programs_count_nothing_and_attached_again_count_like_perf() {
    if !is_root() {
        eprintln!("skipped: needs root to load eBPF programs");
        return;
    }
    ensure_tracefs();
    let (_, symbols) = kallsyms::load().unwrap();
    let btf = KernelBtf::load().ok();
    let locks = vmap_locks::discover(detect_design(btf.as_ref()), &symbols, btf.as_ref());
    let mut probes =
        probe::attach_all(ProbeOptions::default(), &symbols, btf.as_ref(), &locks).unwrap();
    let links = probes.links.len();
    assert!(links >= 4, "tracepoints attached: {links} links");
    assert_eq!(probes.links.attached(), links);

    // Our window contains perf's (perf's own start-up may add a few).
    let within = |ours: u64, perf: u64, phase: &str| {
        assert!(
            perf > 1000 && ours >= perf && ours - perf <= perf / 50 + 20,
            "{phase}: we counted {ours}, perf stat {perf}"
        );
    };
    let before = our_allocs(&probes);
    let perf = perf_counted_pty();
    within(our_allocs(&probes) - before, perf, "attached");

    probes.detach_all().unwrap();
    assert_eq!(probes.links.attached(), 0);
    let before = our_allocs(&probes);
    let perf = perf_counted_pty();
    assert!(perf > 1000, "the workload ran: perf counted {perf}");
    assert_eq!(our_allocs(&probes), before, "detached programs counted");

    probes.attach_again().unwrap();
    assert_eq!(probes.links.attached(), links);
    let before = our_allocs(&probes);
    let perf = perf_counted_pty();
    within(our_allocs(&probes) - before, perf, "attached again");

    // A second cycle: links made by attach_again detach as well.
    probes.detach_all().unwrap();
    let before = our_allocs(&probes);
    perf_counted_pty();
    assert_eq!(
        our_allocs(&probes),
        before,
        "detached a second time, counted"
    );
}
