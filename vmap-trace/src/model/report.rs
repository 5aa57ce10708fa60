//! Text rendering of simulation results: one configuration side by side, and CPU sweeps.
//! (JSON output is the serde form of the same structures.)

use std::fmt::Write as _;

use crate::escape::field;
use crate::model::engine::OpKind;
use crate::model::run::{Comparison, RunResult};
use crate::model::stats::LockSummary;
use crate::model::LockKind;
use crate::report::format_ns;

/// A number with a metric suffix: 1234567 -> "1.23M".
pub fn si(v: f64) -> String {
    let a = v.abs();
    // Each threshold sits where the smaller unit would round up to 1000.
    if a >= 999_995_000.0 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 999_950.0 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 999.5 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

/// Header line describing a run's configuration. Workload names come from files (and
/// recordings), so they are shown escaped.
pub fn describe(r: &RunResult, workload: &str, seed: u64) -> String {
    let workload = field(workload);
    let nodes = r
        .nodes
        .map(|n| format!(", {n} vmap nodes"))
        .unwrap_or_default();
    format!(
        "workload {workload}: {} CPUs, {} threads{nodes}, seed {seed}, {:.0} ms simulated, cost scale {:.3}",
        r.cpus, r.threads, r.simulated_ms, r.cost_scale
    )
}

/// Both designs side by side: throughput, latencies, waiting, then each design's locks.
pub fn render_comparison(c: &Comparison, workload: &str, seed: u64) -> String {
    let (l, n) = (&c.legacy, &c.node_sharded);
    let mut out = String::new();
    let _ = writeln!(out, "{}", describe(n, workload, seed));
    let _ = writeln!(out);
    let lhead = format!("legacy ({})", l.kernel);
    let nhead = format!("node-sharded ({})", n.kernel);
    let _ = writeln!(
        out,
        "{:<34} {:>28} {:>28} {:>12}",
        "", lhead, nhead, "node/legacy"
    );
    let row = |out: &mut String, name: &str, a: String, b: String, r: String| {
        let _ = writeln!(out, "{name:<34} {a:>28} {b:>28} {r:>12}");
    };
    if l.iterations_per_s > 0.0 || n.iterations_per_s > 0.0 {
        row(
            &mut out,
            "iterations/s",
            si(l.iterations_per_s),
            si(n.iterations_per_s),
            ratio(n.iterations_per_s, l.iterations_per_s),
        );
    }
    for kind in OpKind::ALL {
        let (a, b) = (l.op(kind), n.op(kind));
        if a.is_none() && b.is_none() {
            continue;
        }
        let rate = |o: Option<&crate::model::OpSummary>| o.map_or(0.0, |o| o.latency.per_s);
        row(
            &mut out,
            &format!("{}/s", kind.name()),
            si(rate(a)),
            si(rate(b)),
            ratio(rate(b), rate(a)),
        );
        let lat = |o: Option<&crate::model::OpSummary>| {
            o.map_or("-".to_string(), |o| {
                format!(
                    "{} / {} / {}",
                    format_ns(o.latency.mean_ns),
                    format_ns(o.latency.p50_ns),
                    format_ns(o.latency.p99_ns)
                )
            })
        };
        let mean = |o: Option<&crate::model::OpSummary>| o.map_or(0.0, |o| o.latency.mean_ns);
        row(
            &mut out,
            "  latency mean / p50 / p99",
            lat(a),
            lat(b),
            ratio(mean(b), mean(a)),
        );
    }
    for (gl, gn) in l.groups.iter().zip(&n.groups) {
        let label = format!("iteration '{}' ({} thr)", gl.name, gl.threads);
        row(
            &mut out,
            &label,
            format!(
                "{} / {}",
                format_ns(gl.iteration.mean_ns),
                format_ns(gl.iteration.p99_ns)
            ),
            format!(
                "{} / {}",
                format_ns(gn.iteration.mean_ns),
                format_ns(gn.iteration.p99_ns)
            ),
            ratio(gn.iteration.mean_ns, gl.iteration.mean_ns),
        );
    }
    row(
        &mut out,
        "CPU time spent waiting",
        format!("{:.1}%", 100.0 * l.cpu_waiting_share),
        format!("{:.1}%", 100.0 * n.cpu_waiting_share),
        ratio(n.cpu_waiting_share, l.cpu_waiting_share),
    );
    row(
        &mut out,
        "purges (helpers)",
        format!("{}", l.counters.purges),
        format!("{} ({})", n.counters.purges, n.counters.purge_helpers),
        String::new(),
    );
    let hits = n.counters.pool_hits + n.counters.pool_misses;
    if hits > 0 {
        row(
            &mut out,
            "node pool hit rate",
            "-".into(),
            format!("{:.1}%", 100.0 * n.counters.pool_hits as f64 / hits as f64),
            String::new(),
        );
    }
    for r in [l, n] {
        if r.alloc_failures > 0 {
            let _ = writeln!(
                out,
                "warning: {} allocations found no space in the {} design",
                r.alloc_failures,
                r.design.name()
            );
        }
    }
    for r in [l, n] {
        let _ = writeln!(out);
        let _ = writeln!(out, "{} locks:", r.design.name());
        out.push_str(&render_locks(&r.locks));
    }
    out
}

/// One design's locks as a table.
pub fn render_locks(locks: &[LockSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<26} {:>5} {:>9} {:>10} {:>10} {:>11} {:>10} {:>10}",
        "lock", "inst", "acq/s", "util mean", "util max", "contended", "wait mean", "wait p99"
    );
    let mut sorted: Vec<&LockSummary> = locks.iter().collect();
    sorted.sort_by_key(|l| match l.kind {
        LockKind::Spinlock => 0,
        LockKind::AtomicLine => 1,
        LockKind::Mutex => 2,
    });
    for l in sorted {
        let name = match l.kind {
            LockKind::AtomicLine => format!("{} (atomic)", l.name),
            LockKind::Mutex => format!("{} (mutex)", l.name),
            LockKind::Spinlock => l.name.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<26} {:>5} {:>9} {:>9.1}% {:>9.1}% {:>10.1}% {:>10} {:>10}",
            name,
            l.instances,
            si(l.acquisitions_per_s),
            100.0 * l.utilization,
            100.0 * l.max_instance_utilization,
            100.0 * l.contended_share,
            format_ns(l.wait_mean_ns),
            format_ns(l.wait_p99_ns),
        );
    }
    out
}

fn busiest(r: &RunResult) -> String {
    r.locks
        .iter()
        .filter(|l| l.kind != LockKind::Mutex)
        .max_by(|a, b| {
            a.max_instance_utilization
                .total_cmp(&b.max_instance_utilization)
        })
        .map_or("-".into(), |l| {
            format!("{} {:.0}%", l.name, 100.0 * l.max_instance_utilization)
        })
}

/// Mean latency of the first group's iteration, or of allocations for open loops.
fn headline_latency(r: &RunResult) -> f64 {
    if r.iterations_per_s > 0.0 {
        r.iteration_mean_ns()
    } else {
        r.op(OpKind::Vmalloc).map_or(0.0, |o| o.latency.mean_ns)
    }
}

fn headline_rate(r: &RunResult) -> f64 {
    if r.iterations_per_s > 0.0 {
        r.iterations_per_s
    } else {
        r.op(OpKind::Vmalloc).map_or(0.0, |o| o.latency.per_s)
    }
}

/// A CPU sweep: one line per CPU count, both designs.
pub fn render_sweep(rows: &[Comparison], workload: &str) -> String {
    let mut out = String::new();
    let what = if rows
        .first()
        .is_some_and(|c| c.legacy.iterations_per_s > 0.0)
    {
        "iter"
    } else {
        "alloc"
    };
    let _ = writeln!(
        out,
        "workload {}: CPU sweep (both designs, same seed)",
        field(workload)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>8} {:>8}  {:<30} {:<30}",
        "cpus",
        "threads",
        format!("legacy {what}/s"),
        format!("node {what}/s"),
        "ratio",
        "legacy lat",
        "node lat",
        "leg wait",
        "node wait",
        "busiest legacy lock",
        "busiest node lock"
    );
    for c in rows {
        let (l, n) = (&c.legacy, &c.node_sharded);
        let _ = writeln!(
            out,
            "{:>5} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11} {:>7.1}% {:>7.1}%  {:<30} {:<30}",
            l.cpus,
            l.threads,
            si(headline_rate(l)),
            si(headline_rate(n)),
            ratio(headline_rate(n), headline_rate(l)),
            format_ns(headline_latency(l)),
            format_ns(headline_latency(n)),
            100.0 * l.cpu_waiting_share,
            100.0 * n.cpu_waiting_share,
            busiest(l),
            busiest(n),
        );
    }
    out
}

/// One design alone (when `--design` picks one).
pub fn render_single(r: &RunResult, workload: &str, seed: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}) — {}",
        r.design.name(),
        r.kernel,
        describe(r, workload, seed)
    );
    let _ = writeln!(out);
    if r.iterations_per_s > 0.0 {
        let _ = writeln!(out, "  iterations/s            {}", si(r.iterations_per_s));
    }
    for o in &r.ops {
        let _ = writeln!(
            out,
            "  {:<22} {:>9}/s   mean {:>10}  p50 {:>10}  p99 {:>10}",
            o.op.name(),
            si(o.latency.per_s),
            format_ns(o.latency.mean_ns),
            format_ns(o.latency.p50_ns),
            format_ns(o.latency.p99_ns)
        );
    }
    for g in &r.groups {
        let _ = writeln!(
            out,
            "  iteration '{}' ({} threads): mean {}  p99 {}",
            g.name,
            g.threads,
            format_ns(g.iteration.mean_ns),
            format_ns(g.iteration.p99_ns)
        );
    }
    let _ = writeln!(
        out,
        "  CPU time spent waiting  {:.1}%",
        100.0 * r.cpu_waiting_share
    );
    let _ = writeln!(out);
    out.push_str(&render_locks(&r.locks));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_names_are_shown_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        use crate::model::run::{compare, RunConfig};
        use crate::model::{Design, KernelVariant, ModelParams, Workload};
        let params = ModelParams::default().with_cpus(2);
        let mut workload = Workload::preset("pair").unwrap();
        workload.name = HOSTILE.into();
        let cfg = RunConfig {
            design: Design::Legacy,
            variant: KernelVariant::V6_10,
            seed: 1,
            warmup_ms: 0.0,
            duration_ms: 1.0,
        };
        let c = compare(&params, &workload, &cfg).unwrap();
        for text in [
            render_comparison(&c, &workload.name, 1),
            render_sweep(std::slice::from_ref(&c), &workload.name),
            render_single(&c.legacy, &workload.name, 1),
        ] {
            assert_inert(&text, false);
            assert!(
                text.contains(&format!("workload {HOSTILE_SHOWN}")),
                "{text}"
            );
        }
    }

    #[test]
    fn units_are_readable() {
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(950.0), "950");
        assert_eq!(si(999_990.0), "1.00M");
        assert_eq!(format_ns(576.0), "576 ns");
        assert_eq!(format_ns(21_090.0), "21.09 us");
        assert_eq!(format_ns(51.3e9), "51.30 s");
    }
}
