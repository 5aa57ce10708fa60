//! Speed of the reference model: 128 CPUs, one simulated second of the 64-thread test_vmalloc
//! workload (run_test_mask=7), each design. Prints the simulated lock operations (spinlock and
//! contended-line acquisitions) per second of host time; the goal is under 2 s per simulated
//! second on one core.
//!
//! cargo bench -p vmap-trace --bench model

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
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
        group.bench_function(
            format!("test-vmalloc 64 threads, 128 CPUs, 1 s, {}", design.name()),
            |b| b.iter(|| simulate(&params, &workload, &cfg).expect("simulation runs")),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
