//! `cargo xtask bench toggle`: what tracing costs, measured by switching vmap-trace's kernel
//! programs on and off every quarter second while one stress run goes on.
//!
//! Separate runs (`bench overhead`) compare seconds-long runs, between which this 2-vCPU
//! machine drifts by several percent; their intervals stay 3 to 14 points wide however many
//! rounds are run. Here the stress workload runs once, in the `tracing_toggle` example
//! (vmap-trace's library: the same programs and defaults as `record` and `daemon`, each
//! variant loaded once), which detaches and attaches the programs between windows: `off,
//! <variant 1>, off, <variant 2>, ..., off, sham`, the traced windows in a new order every
//! cycle (a workload's own rhythm cannot beat with it). Each traced window is compared with the
//! untraced windows on either side, a quarter second away, so slow drifts cancel; the sham
//! windows (nothing switched) are the A/A control, and the `empty` variant (programs that
//! return at once) is the floor any eBPF tool on these hooks pays. The first `--settle-ms` of
//! each window are not measured: the switch (patching the tracepoints' call sites, RCU
//! callbacks) is paid once by a user, not while tracing. What this leaves out: the
//! user-space process of record/daemon (reading maps every few seconds), which `bench
//! overhead` measures.
use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{machine_description, median, release_artifact, require_root, BenchArgs};
use crate::ebpf::workspace_root;

/// One window as the example prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub window: usize,
    /// `off`, `sham` or a variant's name.
    pub state: String,
    pub ops: u64,
    /// Operations per workload kind (`mix` runs four side by side); empty in files saved
    /// before kinds were recorded.
    pub kind_ops: BTreeMap<String, u64>,
    pub secs: f64,
    /// How long detaching and attaching took at the window's end (not measured in any window).
    pub switch_secs: f64,
}

impl Window {
    /// The log of the window's rate, all kinds (`None`) or one; None when there is none.
    fn log_rate(&self, kind: Option<&str>) -> Option<f64> {
        let ops = match kind {
            None => self.ops,
            Some(k) => *self.kind_ops.get(k)?,
        };
        (ops > 0 && self.secs > 0.0).then(|| (ops as f64 / self.secs).ln())
    }
}

/// The extra time per operation in one state's windows, in percent, against the untraced
/// windows next to them.
#[derive(Debug, Clone, PartialEq)]
pub struct Slowdown {
    pub windows: usize,
    pub mean_pct: f64,
    /// Normal-approximation 95% interval of the mean log difference (the windows number in
    /// the hundreds), as percent.
    pub low_pct: f64,
    pub high_pct: f64,
    pub median_pct: f64,
}

impl Slowdown {
    /// Per traced window: the log of the untraced rate on either side (their mean) minus the
    /// log of the window's rate, the extra time per operation while traced (the workload
    /// keeps every CPU busy, so time per operation is CPU per operation). In logs because a
    /// ratio of noisy rates is biased upwards by about the noise's variance (about 0.2
    /// points with this machine's 5% per window; the A/A control showed it); the mean log
    /// difference is not. Windows without an untraced neighbour on each side (the ends of
    /// the run) are left out.
    pub fn of(windows: &[Window], state: &str) -> Option<Slowdown> {
        Slowdown::over(windows, state, |w| w.log_rate(None))
    }

    /// [`Slowdown::of`] one workload kind's operations alone.
    pub fn of_kind(windows: &[Window], state: &str, kind: &str) -> Option<Slowdown> {
        Slowdown::over(windows, state, |w| w.log_rate(Some(kind)))
    }

    /// [`Slowdown::of`] the work done rather than the operations: each kind's operations
    /// weighted by its cost per operation (`costs`, from [`fit_op_costs`]). Under `mix` the
    /// kinds' shares of the CPU swing from window to window (a fork storm's batches), and with
    /// them the sum of operations, the cheap kinds' counting for as much as the dear ones';
    /// the work done stays put, and tracing shows as less of it. Windows missing a kind are
    /// left out.
    pub fn of_work(
        windows: &[Window],
        state: &str,
        costs: &BTreeMap<String, f64>,
    ) -> Option<Slowdown> {
        let log_work = |w: &Window| -> Option<f64> {
            let mut work = 0.0;
            for (kind, cost) in costs {
                work += *w.kind_ops.get(kind)? as f64 * cost;
            }
            (work > 0.0 && w.secs > 0.0).then(|| (work / w.secs).ln())
        };
        Slowdown::over(windows, state, log_work)
    }

    /// The statistic over every traced window of `state` between two untraced ones: the
    /// neighbours' mean `log_rate` minus the traced window's (windows where it is None are
    /// left out).
    fn over(
        windows: &[Window],
        state: &str,
        log_rate: impl Fn(&Window) -> Option<f64>,
    ) -> Option<Slowdown> {
        let mut values: Vec<f64> = windows
            .windows(3)
            .filter(|w| w[1].state == state && w[0].state == "off" && w[2].state == "off")
            .filter_map(|w| Some((log_rate(&w[0])? + log_rate(&w[2])?) / 2.0 - log_rate(&w[1])?))
            .collect();
        let n = values.len();
        if n < 2 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let half = 1.96 * (var / n as f64).sqrt();
        let median = median(&mut values);
        let pct = |log: f64| log.exp_m1() * 100.0;
        Some(Slowdown {
            windows: n,
            mean_pct: pct(mean),
            low_pct: pct(mean - half),
            high_pct: pct(mean + half),
            median_pct: pct(median),
        })
    }

    /// Against a goal of at most `limit_pct`.
    pub fn verdict(&self, limit_pct: f64) -> &'static str {
        if self.high_pct <= limit_pct {
            "met"
        } else if self.low_pct > limit_pct {
            "MISSED"
        } else {
            "not resolved"
        }
    }
}

/// The workload kinds the windows counted operations of, in order of first appearance.
fn kinds_of(windows: &[Window]) -> Vec<&str> {
    let mut kinds: Vec<&str> = Vec::new();
    for w in windows {
        for k in w.kind_ops.keys() {
            if !kinds.contains(&k.as_str()) {
                kinds.push(k);
            }
        }
    }
    kinds
}

/// Each kind's cost per operation, relative (seconds of a window per operation, up to a
/// common factor), by least squares over the untraced windows: a window's length against
/// the operations of each kind in it. None with fewer than two kinds, too few windows, or a
/// fit that gives a kind no positive cost (the kinds' counts move together).
pub fn fit_op_costs(windows: &[Window]) -> Option<BTreeMap<String, f64>> {
    let kinds = kinds_of(windows);
    let n = kinds.len();
    if n < 2 {
        return None;
    }
    // Normal equations A^T A x = A^T b, rows: untraced windows with every kind counted.
    let mut ata = vec![vec![0.0f64; n]; n];
    let mut atb = vec![0.0f64; n];
    let mut rows = 0;
    for w in windows.iter().filter(|w| w.state == "off") {
        let Some(row) = kinds
            .iter()
            .map(|k| w.kind_ops.get(*k).map(|&o| o as f64))
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        rows += 1;
        for i in 0..n {
            atb[i] += row[i] * w.secs;
            for j in 0..n {
                ata[i][j] += row[i] * row[j];
            }
        }
    }
    if rows < 10 * n {
        return None;
    }
    // Gaussian elimination with partial pivoting; a pivot this small next to the largest
    // diagonal term means the kinds' counts are (nearly) proportional: no fit.
    let scale = (0..n).map(|i| ata[i][i]).fold(0.0f64, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| ata[a][col].abs().total_cmp(&ata[b][col].abs()))?;
        ata.swap(col, pivot);
        atb.swap(col, pivot);
        if ata[col][col].abs() <= 1e-9 * scale {
            return None;
        }
        let pivot_row = ata[col].clone();
        for r in col + 1..n {
            let f = ata[r][col] / pivot_row[col];
            for (v, p) in ata[r].iter_mut().zip(&pivot_row).skip(col) {
                *v -= f * p;
            }
            atb[r] -= f * atb[col];
        }
    }
    let mut x = vec![0.0f64; n];
    for r in (0..n).rev() {
        let tail: f64 = (r + 1..n).map(|c| ata[r][c] * x[c]).sum();
        x[r] = (atb[r] - tail) / ata[r][r];
    }
    if x.iter().any(|&c| !(c.is_finite() && c > 0.0)) {
        return None;
    }
    Some(kinds.iter().map(|k| k.to_string()).zip(x).collect())
}

/// Parse the example's output; the first `skip` windows (start-up) are dropped.
pub fn parse_windows(text: &str, skip: usize) -> Result<Vec<Window>> {
    let mut windows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let w = (|| {
            let v: Value = serde_json::from_str(line).ok()?;
            Some(Window {
                window: v["window"].as_u64()? as usize,
                state: v["state"].as_str()?.to_string(),
                ops: v["ops"].as_u64()?,
                kind_ops: match v.get("kind_ops") {
                    None => BTreeMap::new(),
                    Some(kinds) => kinds
                        .as_object()?
                        .iter()
                        .map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                        .collect::<Option<_>>()?,
                },
                secs: v["secs"].as_f64()?,
                switch_secs: v["switch_secs"].as_f64().unwrap_or(0.0),
            })
        })()
        .with_context(|| format!("line {} of tracing_toggle's output: {line}", i + 1))?;
        if w.window >= skip {
            windows.push(w);
        }
    }
    Ok(windows)
}

pub fn toggle(args: &BenchArgs) -> Result<()> {
    if let Some(path) = &args.from {
        return analyse_saved(path);
    }
    require_root("bench toggle")?;
    let example = ["--example", "tracing_toggle"];
    let bin = release_artifact("examples/tracing_toggle", &example, !args.no_build)?;
    let variants: Vec<&str> = args.variants.iter().map(String::as_str).collect();
    println!("## Toggled A/B: {}", machine_description());
    println!();
    println!(
        "Windows of {} ms, the first {} ms of each (the switch settling) not measured, {} s per \
         workload, cycle `off, {}, off, sham` with the traced windows in a new order every \
         cycle; the first cycle is dropped. {ESTIMATE}",
        args.window_ms,
        args.settle_ms,
        args.toggle_seconds,
        variants.join(", off, ")
    );
    for workload in &args.workloads {
        eprintln!(
            "bench toggle: {workload} for {} s ({} ms windows)",
            args.toggle_seconds, args.window_ms
        );
        let out = Command::new(&bin)
            .arg(workload)
            .arg(args.toggle_seconds.to_string())
            .arg(args.window_ms.to_string())
            .arg(args.settle_ms.to_string())
            .args(&variants)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "tracing_toggle {workload} failed ({}):\n{stderr}",
                out.status
            );
        }
        let raw = String::from_utf8_lossy(&out.stdout);
        // Kept for other analyses of the same run (`--from`).
        let saved = workspace_root().join(format!("target/bench-toggle-{workload}.jsonl"));
        std::fs::write(&saved, raw.as_bytes())
            .with_context(|| format!("writing {}", saved.display()))?;
        eprintln!("bench toggle: windows written to {}", saved.display());
        let windows = parse_windows(&raw, 2 * (variants.len() + 1))?;
        println!();
        println!("### `stress {workload}`");
        for line in stderr.lines().filter(|l| l.starts_with("variant ")) {
            println!("- {line}");
        }
        report(&windows, &variants)?;
    }
    Ok(())
}

const ESTIMATE: &str = "Extra time per operation in each state's windows against the untraced \
                        windows on either side (mean log difference); 95% interval of the mean \
                        (normal approximation).";

/// `--from`: the report of windows saved by an earlier run; the variants are the states found.
fn analyse_saved(path: &std::path::Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let all = parse_windows(&text, 0)?;
    let mut variants: Vec<&str> = Vec::new();
    for w in &all {
        if w.state != "off" && w.state != "sham" && !variants.contains(&w.state.as_str()) {
            variants.push(&w.state);
        }
    }
    if variants.is_empty() {
        bail!("{}: no traced windows", path.display());
    }
    let windows = parse_windows(&text, 2 * (variants.len() + 1))?;
    println!("## Toggled A/B, windows saved in {}", path.display());
    println!();
    println!("The first cycle is dropped. {ESTIMATE}");
    report(&windows, &variants)
}

/// One workload's table.
fn report(windows: &[Window], variants: &[&str]) -> Result<()> {
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for w in windows {
        *by_state.entry(w.state.as_str()).or_default() += 1;
    }
    let off: Vec<&Window> = windows.iter().filter(|w| w.state == "off").collect();
    let off_rate =
        off.iter().map(|w| w.ops as f64).sum::<f64>() / off.iter().map(|w| w.secs).sum::<f64>();
    let switches: Vec<f64> = windows
        .iter()
        .filter(|w| w.state != "sham")
        .map(|w| w.switch_secs * 1e3)
        .collect();
    let switch_ms = switches.iter().sum::<f64>() / switches.len().max(1) as f64;
    println!();
    println!(
        "{} windows, untraced {off_rate:.0} ops/s, a switch took {switch_ms:.2} ms on average.",
        windows.len()
    );
    println!();
    println!("| state | windows | extra time per op, mean (95% interval) | median | at most 1% |");
    println!("|---|---:|---:|---:|---|");
    for state in variants.iter().chain(&["sham"]) {
        let Some(s) = Slowdown::of(windows, state) else {
            bail!("too few `{state}` windows between untraced ones ({by_state:?})");
        };
        let verdict = match *state {
            "sham" => "(A/A control: should contain 0)",
            "empty" => "(the floor: any program on these hooks)",
            _ => s.verdict(1.0),
        };
        println!(
            "| {state} | {} | {:+.2}% ({:+.2}% .. {:+.2}%) | {:+.2}% | {verdict} |",
            s.windows, s.mean_pct, s.low_pct, s.high_pct, s.median_pct
        );
    }
    report_kinds(windows, variants);
    Ok(())
}

/// Under a workload of several kinds (`mix`): the work done (operations weighted by each
/// kind's cost) and each kind alone.
fn report_kinds(windows: &[Window], variants: &[&str]) {
    let kinds = kinds_of(windows);
    if kinds.len() < 2 {
        return;
    }
    let costs = fit_op_costs(windows);
    println!();
    match &costs {
        Some(costs) => {
            let cheapest = costs.values().copied().fold(f64::INFINITY, f64::min);
            let relative: Vec<String> = costs
                .iter()
                .map(|(k, c)| format!("{k} {:.1}", c / cheapest))
                .collect();
            println!(
                "Per workload kind. `work`: each window's operations weighted by their kind's cost \
                 per operation, fitted on the untraced windows (relative costs: {}); the kinds' \
                 shares of the CPU swing between windows and move the sum of operations, not the \
                 work. Each kind alone below it.",
                relative.join(", ")
            );
        }
        None => println!(
            "Per workload kind (the kinds' costs per operation could not be fitted, so no \
             `work` row)."
        ),
    }
    println!();
    println!("| state | measure | windows | extra time per op, mean (95% interval) | median | at most 1% |");
    println!("|---|---|---:|---:|---:|---|");
    for state in variants.iter().chain(&["sham"]) {
        let work = costs
            .as_ref()
            .map(|c| ("work", Slowdown::of_work(windows, state, c)));
        let rows = work.into_iter().chain(
            kinds
                .iter()
                .map(|k| (*k, Slowdown::of_kind(windows, state, k))),
        );
        for (measure, s) in rows {
            let Some(s) = s else {
                println!("| {state} | {measure} | too few windows | | | |");
                continue;
            };
            let verdict = match *state {
                "sham" => "(A/A control)",
                "empty" => "(floor)",
                _ => s.verdict(1.0),
            };
            println!(
                "| {state} | {measure} | {} | {:+.2}% ({:+.2}% .. {:+.2}%) | {:+.2}% | {verdict} |",
                s.windows, s.mean_pct, s.low_pct, s.high_pct, s.median_pct
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: uniform in [0, 1), reproducible.
    fn uniform(mut x: u64) -> impl FnMut() -> f64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A run whose untraced rate drifts by 30% over its length, with 3% noise per window, and
    /// whose traced windows are 1.5% slower: the estimate finds 1.5%, the sham windows 0.
    #[test]
    fn slowdown_cancels_drift_and_finds_the_cost() {
        let mut uniform = uniform(0x9e37_79b9_7f4a_7c15);
        let cycle = ["off", "default", "off", "sham"];
        let n = 4000;
        let windows: Vec<Window> = (0..n)
            .map(|i| {
                let state = cycle[i % cycle.len()];
                let drift = 1.0 + 0.3 * (i as f64 / n as f64 * 6.0).sin();
                let noise = 1.0 + 0.03 * (uniform() - 0.5) * 3.46;
                let cost = if state == "default" { 1.015 } else { 1.0 };
                let rate = 80_000.0 * drift * noise / cost;
                Window {
                    window: i,
                    state: state.into(),
                    ops: (rate * 0.25) as u64,
                    kind_ops: BTreeMap::new(),
                    secs: 0.25,
                    switch_secs: 0.001,
                }
            })
            .collect();
        let traced = Slowdown::of(&windows, "default").unwrap();
        assert_eq!(traced.windows, n / 4);
        assert!((traced.mean_pct - 1.5).abs() < 0.25, "{traced:?}");
        assert!(traced.low_pct < 1.5 && 1.5 < traced.high_pct, "{traced:?}");
        assert!(traced.high_pct - traced.low_pct < 0.6, "{traced:?}");
        assert_eq!(traced.verdict(1.0), "MISSED");
        let sham = Slowdown::of(&windows, "sham").unwrap();
        assert!(sham.low_pct < 0.0 && 0.0 < sham.high_pct, "{sham:?}");
        assert_eq!(sham.verdict(1.0), "met");
    }

    /// Noisy windows (about 12% per window) and no cost at all: the estimate stays at 0. A
    /// mean of rate ratios would read about +1% here (the noise's variance).
    #[test]
    fn noise_alone_reads_as_no_cost() {
        let mut uniform = uniform(0x2545_f491_4f6c_dd1d);
        let windows: Vec<Window> = (0..40_000)
            .map(|i| Window {
                window: i,
                state: if i % 2 == 0 { "off" } else { "sham" }.into(),
                // Log-uniform noise of standard deviation 0.12.
                ops: (80_000.0 * (0.12 * 3.46 * (uniform() - 0.5)).exp()) as u64,
                kind_ops: BTreeMap::new(),
                secs: 1.0,
                switch_secs: 0.0,
            })
            .collect();
        let s = Slowdown::of(&windows, "sham").unwrap();
        assert!(s.mean_pct.abs() < 0.2, "{s:?}");
        assert!(s.low_pct < 0.0 && 0.0 < s.high_pct, "{s:?}");
    }

    /// A `mix`-like run: two kinds, one 30 times dearer per operation, whose shares of the
    /// CPU swing between a third and two thirds from window to window, each 1.5% slower when
    /// traced. The sum of operations is swamped by the swings; the work done finds 1.5% with
    /// a narrow interval, and the fitted costs are the true ones.
    #[test]
    fn work_sees_through_shifting_shares() {
        let mut uniform = uniform(0x1234_5678_9abc_def1);
        let cycle = ["off", "sampled", "off", "sham"];
        let windows: Vec<Window> = (0..8000)
            .map(|i| {
                let state = cycle[i % cycle.len()];
                let cost = if state == "sampled" { 1.015 } else { 1.0 };
                let share = 1.0 / 3.0 + uniform() / 3.0;
                let mut noise = || 1.0 + 0.01 * (uniform() - 0.5);
                // 0.25 s of two CPUs: fork 300 us per op, pty 10 us.
                let fork = (0.5 * share / 300e-6 * noise() / cost) as u64;
                let pty = (0.5 * (1.0 - share) / 10e-6 * noise() / cost) as u64;
                Window {
                    window: i,
                    state: state.into(),
                    ops: fork + pty,
                    kind_ops: BTreeMap::from([("fork".into(), fork), ("pty".into(), pty)]),
                    secs: 0.25,
                    switch_secs: 0.0,
                }
            })
            .collect();
        let costs = fit_op_costs(&windows).unwrap();
        let ratio = costs["fork"] / costs["pty"];
        assert!((ratio - 30.0).abs() < 0.5, "{costs:?}");
        let total = Slowdown::of(&windows, "sampled").unwrap();
        let work = Slowdown::of_work(&windows, "sampled", &costs).unwrap();
        assert!((work.mean_pct - 1.5).abs() < 0.1, "{work:?}");
        assert!(work.high_pct - work.low_pct < 0.2, "{work:?}");
        assert!(
            total.high_pct - total.low_pct > 10.0 * (work.high_pct - work.low_pct),
            "the total's interval {total:?} against the work's {work:?}"
        );
        let sham = Slowdown::of_work(&windows, "sham", &costs).unwrap();
        assert!(sham.low_pct < 0.0 && 0.0 < sham.high_pct, "{sham:?}");
        // A kind missing from a window leaves that window out.
        let mut gap = windows.clone();
        gap[1].kind_ops.remove("fork");
        let fewer = Slowdown::of_work(&gap, "sampled", &costs).unwrap();
        assert_eq!(fewer.windows, work.windows - 1);
        // One kind, or kinds that always move together: nothing to fit.
        let single: Vec<Window> = windows
            .iter()
            .map(|w| Window {
                kind_ops: BTreeMap::from([("pty".into(), w.ops)]),
                ..w.clone()
            })
            .collect();
        assert!(fit_op_costs(&single).is_none());
        let twins: Vec<Window> = windows
            .iter()
            .map(|w| Window {
                kind_ops: BTreeMap::from([("a".into(), w.ops), ("b".into(), w.ops)]),
                ..w.clone()
            })
            .collect();
        assert!(fit_op_costs(&twins).is_none());
    }

    #[test]
    fn only_windows_between_untraced_ones_count() {
        let w = |i: usize, state: &str, ops: u64| Window {
            window: i,
            state: state.into(),
            ops,
            kind_ops: BTreeMap::new(),
            secs: 0.5,
            switch_secs: 0.0,
        };
        // default at the end has no right neighbour; the sham one sits between off windows.
        let windows = vec![
            w(0, "off", 100),
            w(1, "default", 90),
            w(2, "off", 80),
            w(3, "default", 60),
            w(4, "off", 60),
            w(5, "sham", 60),
            w(6, "off", 60),
            w(7, "default", 10),
        ];
        let s = Slowdown::of(&windows, "default").unwrap();
        assert_eq!(s.windows, 2);
        // 90 against 100 and 80, 60 against 80 and 60: the mean of the log differences.
        let d1 = (100f64.ln() + 80f64.ln()) / 2.0 - 90f64.ln();
        let d2 = (80f64.ln() + 60f64.ln()) / 2.0 - 60f64.ln();
        let expect = ((d1 + d2) / 2.0).exp_m1() * 100.0;
        assert!((s.mean_pct - expect).abs() < 1e-9, "{s:?} against {expect}");
        assert!(expect > 5.0 && expect < 9.0);
        assert!(
            Slowdown::of(&windows, "sham").is_none(),
            "one window is too few"
        );
    }

    #[test]
    fn output_lines_parse_and_start_up_is_dropped() {
        let text = "{\"window\":0,\"state\":\"off\",\"ops\":19872,\"secs\":0.250064}\n\
                    {\"window\":1,\"state\":\"default\",\"ops\":19344,\"secs\":0.249997}\n";
        let w = parse_windows(text, 1).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].state, "default");
        assert_eq!(w[0].ops, 19344);
        assert!(w[0].kind_ops.is_empty());
        let mix = "{\"window\":0,\"state\":\"off\",\"ops\":30,\"kind_ops\":{\"fork\":10,\"pty\":20},\"secs\":0.2}\n";
        let w = parse_windows(mix, 0).unwrap();
        assert_eq!(w[0].kind_ops["fork"], 10);
        assert_eq!(w[0].kind_ops["pty"], 20);
        assert!(parse_windows(&mix.replace("10", "\"x\""), 0).is_err());
        let err = parse_windows("not json\n", 0).unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }
}
