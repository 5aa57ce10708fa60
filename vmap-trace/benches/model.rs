//! Speed of the reference model: 128 CPUs, one simulated second of the 64-thread test_vmalloc
//! workload (run_test_mask=7), each design. Prints the simulated lock operations (spinlock and
//! contended-line acquisitions) per second of host time; the goal is under 2 s per simulated
//! second on one core.
//!
//! Then the same number of events through the model's irreducible core alone
//! ([`vmap_trace::model::skeleton`]: the event queue, one lock section and as many variability
//! draws per event as the model makes, nothing else), and the ratio of the node-sharded run's
//! time per event to the skeleton's: how far the model is from the floor any simulation of
//! one event per locked step pays on this machine.
//!
//! cargo bench -p vmap-trace --bench model

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use vmap_trace::model::skeleton::{self, SkeletonConfig};
use vmap_trace::model::{simulate, Design, ModelParams, RunConfig, Workload};

fn config(design: Design) -> (ModelParams, Workload, RunConfig) {
    let params = ModelParams::default().with_cpus(128);
    let workload = Workload::preset("test-vmalloc")
        .expect("built-in workload")
        .with_threads(64)
        .expect("closed loop");
    let cfg = RunConfig {
        design,
        duration_ms: 1000.0,
        ..RunConfig::default()
    };
    (params, workload, cfg)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    let mut node_events = None;
    for design in [Design::Legacy, Design::NodeSharded] {
        let (params, workload, cfg) = config(design);
        let start = Instant::now();
        let run = simulate(&params, &workload, &cfg).expect("simulation runs");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}: one simulated second (128 CPUs, 64 test_vmalloc threads) in {secs:.2} s host time; \
             {} lock operations simulated, {:.1} M lock operations per host second",
            design.name(),
            run.lock_operations,
            run.lock_operations as f64 / secs / 1e6
        );
        if design == Design::NodeSharded {
            node_events = Some((run.events, secs));
            println!(
                "{}: {} events, {:.1} ns of host time per event",
                design.name(),
                run.events,
                secs * 1e9 / run.events as f64
            );
        }
        group.bench_function(
            format!("test-vmalloc 64 threads, 128 CPUs, 1 s, {}", design.name()),
            |b| b.iter(|| simulate(&params, &workload, &cfg).expect("simulation runs")),
        );
    }
    let (events, node_secs) = node_events.expect("the node-sharded design ran");
    let floor = SkeletonConfig::node_benchmark(events);
    let start = Instant::now();
    let skeleton_run = skeleton::run(&floor);
    let floor_secs = start.elapsed().as_secs_f64();
    assert_eq!(skeleton_run.events, events);
    println!(
        "skeleton (queue, one lock section and {:.2} draws per event, nothing else): {events} \
         events in {floor_secs:.2} s host time, {:.1} ns per event; the node-sharded model \
         takes {:.1}x that per event",
        skeleton_run.draws as f64 / events as f64,
        floor_secs * 1e9 / events as f64,
        node_secs / floor_secs
    );
    let no_draws = SkeletonConfig {
        cost_cv: 0.0,
        transfer_cv: 0.0,
        ..floor
    };
    let start = Instant::now();
    std::hint::black_box(skeleton::run(&no_draws));
    println!(
        "skeleton without variability draws: {:.2} s host time",
        start.elapsed().as_secs_f64()
    );
    group.bench_function("skeleton, node-sharded benchmark's events", |b| {
        b.iter(|| skeleton::run(&floor))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
