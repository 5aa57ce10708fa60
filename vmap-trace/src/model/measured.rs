//! A measured workload (what a vmap-trace recording tells about a machine) and its comparison
//! with the model: calibrate on the recording, reproduce the recorded configuration, then
//! predict the other design and more CPUs — "would 6.9+ fix this, and by how much?".
//!
//! [`MeasuredWorkload`] is a plain serde structure so any recording format can be adapted to
//! it; `vmap-trace model --from-measured FILE.json` reads it directly.

use std::fmt::Write as _;

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

use crate::model::calibrate::{calibrate_pair, single_pair, CalibrationTarget};
use crate::model::params::ModelParams;
use crate::model::report::{render_sweep, si};
use crate::model::run::{compare, simulate, Comparison, RunConfig, RunResult};
use crate::model::workload::{Drive, LookupOffset, OpenLoop, SizeClass, Workload};
use crate::model::{Design, KernelVariant, OpKind};
use crate::report::format_ns;

/// What a recording measured. Lock names are the kernel's: `free_vmap_area_lock`,
/// `vmap_area_lock`, `purge_vmap_area_lock`, `vmap_purge_lock`, and for the node-sharded design
/// `vmap_node.busy.lock`, `vmap_node.lazy.lock`, `vmap_node.pool_lock` (all nodes together).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredWorkload {
    /// Design of the recorded kernel.
    pub design: Design,
    /// `uname -r` of the recorded kernel.
    pub kernel_release: String,
    /// Online CPUs of the recorded machine.
    pub cpus: u32,
    pub duration_s: f64,
    pub allocs_per_s: f64,
    pub frees_per_s: f64,
    /// `find_vmap_area` calls per second, where recorded.
    #[serde(default)]
    pub lookups_per_s: Option<f64>,
    /// (size lower bound in pages, allocations) — guard page not included.
    pub size_pages_histogram: Vec<(u64, u64)>,
    /// Share of allocations per CPU (index = CPU); empty = uniform.
    #[serde(default)]
    pub per_cpu_alloc_share: Vec<f64>,
    /// Mean lifetime of an area between its allocation and its free, where known (µs).
    #[serde(default)]
    pub mean_lifetime_us: Option<f64>,
    /// Uncontended latencies, where measured.
    #[serde(default)]
    pub uncontended: Option<UncontendedLatency>,
    /// Mean hold time per lock, where measured.
    #[serde(default)]
    pub lock_holds: Vec<MeasuredLockHold>,
    /// Total measured wait per lock, where measured.
    #[serde(default)]
    pub lock_waits: Vec<MeasuredLockWait>,
}

/// Latencies measured without contention (e.g. with one busy CPU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UncontendedLatency {
    /// Pages per allocation the latencies were measured with.
    pub pages: u32,
    /// One vmalloc + vfree pair, ns.
    #[serde(default)]
    pub pair_ns: Option<f64>,
    #[serde(default)]
    pub vmalloc_ns: Option<f64>,
    #[serde(default)]
    pub vfree_ns: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredLockHold {
    pub lock: String,
    pub mean_ns: f64,
}

/// Contended acquisitions of one lock: compared with the model's acquisitions that found the
/// lock held, and their wait (request to grant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredLockWait {
    pub lock: String,
    /// Acquisitions that waited.
    pub count: u64,
    /// Their total wait over the recording, ns.
    pub total_ns: f64,
}

/// One measured figure next to the model's prediction for the recorded configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasuredVsPredicted {
    pub metric: String,
    pub measured: f64,
    pub predicted: f64,
    /// (predicted - measured) / measured, percent.
    pub error_pct: f64,
}

/// The comparison of a recording with the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonReport {
    pub design: Design,
    pub kernel_release: String,
    pub cpus: u32,
    /// How the cost scale was derived.
    pub calibration: String,
    pub cost_scale: f64,
    pub measured_vs_predicted: Vec<MeasuredVsPredicted>,
    /// Both designs on the recorded configuration.
    pub recorded: Comparison,
    /// Both designs with the same per-CPU load on each CPU count of the sweep.
    pub sweep: Vec<Comparison>,
}

/// Shortest recording whose rates the model takes (`record` itself polls every 100 ms).
pub const MIN_DURATION_S: f64 = 1e-3;
/// Allocations a simulated run needs for its figures to mean anything; a light load gets a
/// longer simulated run (cheap: few events), up to [`MAX_SIMULATED_MS`].
const MIN_SIMULATED_ALLOCS: f64 = 100.0;
/// Longest simulated run `simulate` accepts.
const MAX_SIMULATED_MS: f64 = 60_000.0;

/// `cfg` with a simulated duration long enough for [`MIN_SIMULATED_ALLOCS`] at `allocs_per_s`,
/// or an error for a load too light for that within [`MAX_SIMULATED_MS`].
fn run_config_for(allocs_per_s: f64, cfg: &RunConfig) -> anyhow::Result<RunConfig> {
    let needed_ms = MIN_SIMULATED_ALLOCS / allocs_per_s * 1e3;
    ensure!(
        needed_ms <= MAX_SIMULATED_MS,
        "{allocs_per_s:.3e} allocations/s is too light a load to model: the model needs \
         {MIN_SIMULATED_ALLOCS} allocations within {} s of simulated time, i.e. at least {:.2}/s. \
         At such rates vmap allocations almost never overlap, so their locks cannot contend",
        MAX_SIMULATED_MS / 1e3,
        MIN_SIMULATED_ALLOCS / (MAX_SIMULATED_MS / 1e3)
    );
    Ok(RunConfig {
        duration_ms: cfg.duration_ms.max(needed_ms),
        ..cfg.clone()
    })
}

/// A vmap lock held this long on average would stall the machine (a spinlock for a second is
/// a soft lockup): calibrating on it would scale every cost beyond what the model can run.
pub const MAX_MEAN_HOLD_NS: f64 = 1e9;

/// How far measured lock holds may be from the model's for a calibration on them: machines
/// differ by a few times, not by orders of magnitude, and a cost scale far off makes every
/// simulated operation last seconds.
const MAX_HOLD_RATIO: f64 = 1e3;

/// Allocations per second and CPU past which a measurement cannot be real: a vmalloc takes
/// microseconds, so a CPU making nothing else makes about a million a second. Simulating an
/// impossible rate would only burn time (the model runs every one of them).
pub const MAX_ALLOCS_PER_CPU_S: f64 = 1e7;

impl MeasuredWorkload {
    /// Read a MeasuredWorkload JSON document.
    pub fn from_json(text: &str) -> anyhow::Result<MeasuredWorkload> {
        let m: MeasuredWorkload =
            serde_json::from_str(text).context("parsing the measured workload JSON")?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=4096).contains(&self.cpus),
            "cpus must be 1..=4096, got {}",
            self.cpus
        );
        ensure!(
            self.duration_s.is_finite() && self.duration_s >= MIN_DURATION_S,
            "the recording lasted {} s: a rate cannot be measured over less than {MIN_DURATION_S} s",
            self.duration_s
        );
        ensure!(
            self.allocs_per_s.is_finite() && self.allocs_per_s > 0.0,
            "allocs_per_s must be > 0"
        );
        let per_cpu = self.allocs_per_s / self.cpus as f64;
        ensure!(
            per_cpu <= MAX_ALLOCS_PER_CPU_S,
            "{:.3e} allocations/s per CPU is more than a CPU can make (at most {MAX_ALLOCS_PER_CPU_S:.0e}: \
             each takes well over 100 ns); the recording or file is corrupt",
            per_cpu
        );
        ensure!(
            self.frees_per_s.is_finite() && self.frees_per_s >= 0.0,
            "frees_per_s must be >= 0"
        );
        ensure!(
            self.size_pages_histogram.iter().any(|&(_, n)| n > 0),
            "size_pages_histogram needs at least one allocation"
        );
        ensure!(
            self.per_cpu_alloc_share.len() <= self.cpus as usize,
            "per_cpu_alloc_share has more entries than CPUs"
        );
        for h in &self.lock_holds {
            ensure!(
                h.mean_ns.is_finite() && h.mean_ns > 0.0 && h.mean_ns <= MAX_MEAN_HOLD_NS,
                "{}: a mean hold of {} ns is not a real one (0 to {MAX_MEAN_HOLD_NS:.0e} ns); the recording or file is corrupt",
                h.lock,
                h.mean_ns
            );
        }
        Ok(())
    }

    /// The open-loop workload this recording describes, on `cpus` CPUs with the same load per
    /// CPU as recorded.
    pub fn workload(&self, cpus: u32) -> Workload {
        let per_cpu = cpus as f64 / self.cpus as f64;
        let sizes = self
            .size_pages_histogram
            .iter()
            .filter(|&&(_, n)| n > 0)
            .map(|&(pages, n)| SizeClass {
                pages: pages.clamp(1, 1 << 20) as u32,
                align_pages: 1,
                weight: n as f64,
            })
            .collect();
        let cpu_share = if cpus == self.cpus {
            self.per_cpu_alloc_share.clone()
        } else {
            Vec::new()
        };
        Workload {
            name: format!("recorded on {} ({} CPUs)", self.kernel_release, self.cpus),
            drive: Drive::Open(OpenLoop {
                allocs_per_s: self.allocs_per_s * per_cpu,
                frees_per_alloc: (self.frees_per_s / self.allocs_per_s).min(1.0),
                lifetime_us: self
                    .mean_lifetime_us
                    .unwrap_or(OpenLoop::default().lifetime_us),
                lookups_per_alloc: self.lookups_per_s.unwrap_or(0.0) / self.allocs_per_s,
                lookup_offset: LookupOffset::Start,
                vm_map_ram_share: 0.0,
                sizes,
                cpu_share,
            }),
        }
    }
}

/// Calibrate on the recording: the uncontended pair latency if measured (or vmalloc + vfree),
/// else the ratio of measured to modelled lock hold times, else the defaults.
fn calibrate(
    m: &MeasuredWorkload,
    params: &ModelParams,
    variant: KernelVariant,
    seed: u64,
) -> anyhow::Result<(f64, String)> {
    let base = params.with_cpus(m.cpus);
    if let Some(u) = &m.uncontended {
        let pair = u.pair_ns.or(match (u.vmalloc_ns, u.vfree_ns) {
            (Some(a), Some(f)) => Some(a + f),
            _ => None,
        });
        if let Some(pair_ns) = pair {
            let target = CalibrationTarget {
                design: m.design,
                variant,
                pages: u.pages.max(1),
                pair_latency_ns: pair_ns,
            };
            let scale = calibrate_pair(&base, &target, seed)?;
            return Ok((
                scale,
                format!(
                    "uncontended {}-page pair latency {}",
                    u.pages,
                    format_ns(pair_ns)
                ),
            ));
        }
    }
    if !m.lock_holds.is_empty() {
        let cfg = RunConfig {
            design: m.design,
            variant,
            seed,
            warmup_ms: 2.0,
            duration_ms: 20.0,
        };
        let run = simulate(&base, &single_pair(1), &cfg)?;
        let ratios: Vec<f64> = m
            .lock_holds
            .iter()
            .filter_map(|h| {
                run.lock(&h.lock)
                    .filter(|l| l.hold_mean_ns > 0.0)
                    .map(|l| h.mean_ns / l.hold_mean_ns)
            })
            .collect();
        if !ratios.is_empty() {
            let ratio = ratios.iter().sum::<f64>() / ratios.len() as f64;
            ensure!(
                (1.0 / MAX_HOLD_RATIO..=MAX_HOLD_RATIO).contains(&ratio),
                "the measured lock holds are {ratio:.3e} times the model's: no machine is that much \
                 faster or slower, so the model cannot calibrate on them"
            );
            let scale = base.cost_scale * ratio;
            return Ok((
                scale,
                format!(
                    "mean ratio of {} measured lock hold times to the model's",
                    ratios.len()
                ),
            ));
        }
    }
    Ok((base.cost_scale, "none measured: default costs".into()))
}

fn row(metric: String, measured: f64, predicted: f64) -> MeasuredVsPredicted {
    let error_pct = if measured != 0.0 {
        100.0 * (predicted / measured - 1.0)
    } else {
        f64::NAN
    };
    MeasuredVsPredicted {
        metric,
        measured,
        predicted,
        error_pct,
    }
}

fn result_of(c: &Comparison, d: Design) -> &RunResult {
    match d {
        Design::Legacy => &c.legacy,
        Design::NodeSharded => &c.node_sharded,
    }
}

/// Calibrate on `measured`, compare the recorded configuration with the model, then predict
/// the other design and the CPU counts of `cpus_sweep` (same load per CPU).
pub fn compare_measured(
    measured: &MeasuredWorkload,
    params: &ModelParams,
    cpus_sweep: &[u32],
    cfg: &RunConfig,
) -> anyhow::Result<ComparisonReport> {
    measured.validate()?;
    let (scale, calibration) = calibrate(measured, params, cfg.variant, cfg.seed)?;
    let calibrated = params.with_cost_scale(scale);
    let workload = measured.workload(measured.cpus);
    let recorded = compare(
        &calibrated.with_cpus(measured.cpus),
        &workload,
        &run_config_for(measured.allocs_per_s, cfg)?,
    )
    .context("recorded configuration")?;
    let own = result_of(&recorded, measured.design);
    let secs = measured.duration_s;
    let mut rows = vec![row(
        "allocations/s".into(),
        measured.allocs_per_s,
        own.op(OpKind::Vmalloc).map_or(0.0, |o| o.latency.per_s),
    )];
    for w in &measured.lock_waits {
        if let Some(l) = own.lock(&w.lock) {
            let waited_per_s = l.acquisitions_per_s * l.contended_share;
            rows.push(row(
                format!("{}: waits", w.lock),
                w.count as f64,
                waited_per_s * secs,
            ));
            rows.push(row(
                format!("{}: total wait (ns)", w.lock),
                w.total_ns,
                l.contended_wait_total_ns / (own.simulated_ms / 1e3) * secs,
            ));
        }
    }
    for h in &measured.lock_holds {
        if let Some(l) = own.lock(&h.lock) {
            rows.push(row(
                format!("{}: mean hold (ns)", h.lock),
                h.mean_ns,
                l.hold_mean_ns,
            ));
        }
    }
    let mut sweep = Vec::new();
    for &cpus in cpus_sweep {
        let workload = measured.workload(cpus);
        let rate = measured.allocs_per_s * f64::from(cpus) / f64::from(measured.cpus);
        let c = compare(
            &calibrated.with_cpus(cpus),
            &workload,
            &run_config_for(rate, cfg)?,
        )
        .with_context(|| format!("{cpus} CPUs"))?;
        sweep.push(c);
    }
    Ok(ComparisonReport {
        design: measured.design,
        kernel_release: measured.kernel_release.clone(),
        cpus: measured.cpus,
        calibration,
        cost_scale: scale,
        measured_vs_predicted: rows,
        recorded,
        sweep,
    })
}

impl ComparisonReport {
    /// Measured vs predicted, then both designs on the recorded configuration, then the sweep.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Recording: {} kernel {} on {} CPUs. Calibration: {} (cost scale {:.3}). \
             Simulated: {:.0} ms.",
            self.design.name(),
            crate::escape::field(&self.kernel_release),
            self.cpus,
            self.calibration,
            self.cost_scale,
            result_of(&self.recorded, self.design).simulated_ms
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Measured vs predicted ({} design, recorded configuration):",
            self.design.name()
        );
        let _ = writeln!(
            out,
            "  {:<44} {:>14} {:>14} {:>9}",
            "metric", "measured", "predicted", "error"
        );
        for r in &self.measured_vs_predicted {
            let _ = writeln!(
                out,
                "  {:<44} {:>14} {:>14} {:>8.1}%",
                r.metric,
                si(r.measured),
                si(r.predicted),
                r.error_pct
            );
        }
        let own = result_of(&self.recorded, self.design);
        let other = result_of(&self.recorded, self.design.other());
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Recorded configuration, {} vs {}:",
            self.design.name(),
            self.design.other().name()
        );
        for kind in [OpKind::Vmalloc, OpKind::Vfree, OpKind::Lookup] {
            if let (Some(a), Some(b)) = (own.op(kind), other.op(kind)) {
                let _ = writeln!(
                    out,
                    "  {:<16} mean {:>10} -> {:>10}   p99 {:>10} -> {:>10}",
                    kind.name(),
                    format_ns(a.latency.mean_ns),
                    format_ns(b.latency.mean_ns),
                    format_ns(a.latency.p99_ns),
                    format_ns(b.latency.p99_ns)
                );
            }
        }
        let _ = writeln!(
            out,
            "  CPU time waiting {:.2}% -> {:.2}%",
            100.0 * own.cpu_waiting_share,
            100.0 * other.cpu_waiting_share
        );
        if !self.sweep.is_empty() {
            let _ = writeln!(out);
            out.push_str(&render_sweep(&self.sweep, "recorded load per CPU"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MeasuredWorkload {
        MeasuredWorkload {
            design: Design::Legacy,
            kernel_release: "6.1.0-test".into(),
            cpus: 4,
            duration_s: 2.0,
            allocs_per_s: 200_000.0,
            frees_per_s: 200_000.0,
            lookups_per_s: Some(100_000.0),
            size_pages_histogram: vec![(1, 900), (4, 100)],
            per_cpu_alloc_share: vec![0.4, 0.3, 0.2, 0.1],
            mean_lifetime_us: Some(5.0),
            uncontended: Some(UncontendedLatency {
                pages: 1,
                pair_ns: Some(700.0),
                vmalloc_ns: None,
                vfree_ns: None,
            }),
            lock_holds: vec![],
            lock_waits: vec![MeasuredLockWait {
                lock: "vmap_area_lock".into(),
                count: 1000,
                total_ns: 5e5,
            }],
        }
    }

    #[test]
    fn json_round_trip_and_workload() {
        let m = sample();
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(MeasuredWorkload::from_json(&text).unwrap(), m);
        let Drive::Open(o) = m.workload(8).drive else {
            panic!()
        };
        assert_eq!(o.allocs_per_s, 400_000.0);
        assert_eq!(o.lookups_per_alloc, 0.5);
        assert!(o.cpu_share.is_empty());
        assert!(MeasuredWorkload::from_json("{\"design\": \"legacy\"}").is_err());
    }

    #[test]
    fn a_recorded_kernel_release_is_shown_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        let m = MeasuredWorkload {
            kernel_release: HOSTILE.into(),
            uncontended: None,
            ..sample()
        };
        let cfg = RunConfig {
            duration_ms: 2.0,
            warmup_ms: 0.0,
            ..RunConfig::default()
        };
        let text = compare_measured(&m, &ModelParams::default(), &[2], &cfg)
            .unwrap()
            .render();
        assert_inert(&text, false);
        assert!(
            text.contains(&format!(
                "Recording: legacy kernel {HOSTILE_SHOWN} on 4 CPUs"
            )),
            "{text}"
        );
    }

    #[test]
    fn comparison_reproduces_the_recorded_rate_and_predicts_the_other_design() {
        let cfg = RunConfig {
            duration_ms: 20.0,
            warmup_ms: 2.0,
            ..RunConfig::default()
        };
        let report = compare_measured(&sample(), &ModelParams::default(), &[8], &cfg).unwrap();
        assert!(
            (report.cost_scale - 1.0).abs() > 1e-3,
            "calibrated on the pair latency"
        );
        let rate = &report.measured_vs_predicted[0];
        assert!(
            rate.error_pct.abs() < 5.0,
            "the open-loop rate is reproduced: {rate:?}"
        );
        assert_eq!(report.sweep.len(), 1);
        assert_eq!(report.sweep[0].legacy.cpus, 8);
        let text = report.render();
        assert!(text.contains("vmap_area_lock: waits"), "{text}");
    }
}
