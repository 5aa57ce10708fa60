//! Validation against published measurements (`../shared/model-validation/published.toml`).
//!
//! - `rezki-v1-threadripper`: per-pair latency of vmalloc(1 page) + vfree with 1..32 jobs. Each
//!   design's cost scale is calibrated on its jobs = 1 value; every other row is predicted.
//! - `rezki-v3-test-vmalloc-64`: test_vmalloc run_test_mask=7 with 64 threads, with the
//!   calibration above and nothing else. The three tests run side by side (threads split
//!   between them, as the tests' random order mixes them in the real run); the wall time of one
//!   thread is the sum over tests of `test_loop_count` times that test's mean iteration
//!   latency (set-up loops are not counted).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::model::calibrate::{calibrate_pair, CalibrationTarget};
use crate::model::oracle::{machine_repairman, simulate_one_lock};
use crate::model::params::ModelParams;
use crate::model::report::si;
use crate::model::run::{simulate, RunConfig};
use crate::model::workload::{Drive, Workload, TEST_VMALLOC_LOOP_COUNT};
use crate::model::{Design, KernelVariant};
use crate::report::format_ns;

/// Where the published figures live relative to this crate.
pub const PUBLISHED_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/model-validation/published.toml"
);

#[derive(Debug, Deserialize)]
struct PublishedFile {
    case: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
struct RawCase {
    id: String,
    columns: Option<Vec<String>>,
    rows: Option<Vec<Vec<toml::Value>>>,
    legacy_wall_s: Option<f64>,
    node_sharded_wall_s: Option<f64>,
    speedup: Option<f64>,
}

/// One published pair-latency row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairRow {
    pub jobs: u32,
    pub legacy_us: f64,
    pub node_sharded_us: f64,
}

/// The published figures the model is validated on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Published {
    pub pair_rows: Vec<PairRow>,
    pub test_vmalloc_legacy_wall_s: f64,
    pub test_vmalloc_node_wall_s: f64,
    pub test_vmalloc_speedup: f64,
}

impl Published {
    /// Read and check the published file.
    pub fn load(path: &Path) -> anyhow::Result<Published> {
        let text = crate::input::read_text(path, crate::input::MODEL_INPUT).context(
            "reading the published measurements (they live in ../shared/model-validation \
             beside the project checkout)",
        )?;
        Published::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Published> {
        let file: PublishedFile = toml::from_str(text).context("parsing published measurements")?;
        let pair = file
            .case
            .iter()
            .find(|c| c.id == "rezki-v1-threadripper")
            .context("case rezki-v1-threadripper is missing")?;
        let columns = pair.columns.as_deref().unwrap_or_default();
        let col = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .with_context(|| format!("column {name} is missing"))
        };
        let (cj, cl, cn) = (col("jobs")?, col("legacy_us")?, col("node_sharded_us")?);
        let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        let mut pair_rows = Vec::new();
        for row in pair.rows.as_deref().unwrap_or_default() {
            let get = |i: usize| {
                row.get(i)
                    .and_then(number)
                    .context("a row has a missing or non-numeric value")
            };
            pair_rows.push(PairRow {
                jobs: get(cj)? as u32,
                legacy_us: get(cl)?,
                node_sharded_us: get(cn)?,
            });
        }
        if !pair_rows.iter().any(|r| r.jobs == 1) {
            bail!("the pair case has no jobs = 1 row to calibrate on");
        }
        let tv = file
            .case
            .iter()
            .find(|c| c.id == "rezki-v3-test-vmalloc-64")
            .context("case rezki-v3-test-vmalloc-64 is missing")?;
        Ok(Published {
            pair_rows,
            test_vmalloc_legacy_wall_s: tv.legacy_wall_s.context("legacy_wall_s is missing")?,
            test_vmalloc_node_wall_s: tv
                .node_sharded_wall_s
                .context("node_sharded_wall_s is missing")?,
            test_vmalloc_speedup: tv.speedup.context("speedup is missing")?,
        })
    }
}

/// How to run the validation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationOptions {
    pub seed: u64,
    /// Node-sharded variant standing for the published series.
    pub variant: KernelVariant,
    /// Simulated time of each pair-latency run, ms.
    pub pair_duration_ms: f64,
    /// Simulated time of each test_vmalloc run, ms.
    pub test_vmalloc_duration_ms: f64,
}

impl Default for ValidationOptions {
    fn default() -> Self {
        ValidationOptions {
            seed: 1,
            variant: KernelVariant::V6_9,
            pair_duration_ms: 60.0,
            test_vmalloc_duration_ms: 150.0,
        }
    }
}

/// One predicted figure next to its published value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub what: String,
    pub design: Option<Design>,
    pub published: f64,
    pub predicted: f64,
    /// (predicted - published) / published.
    pub error: f64,
    /// Calibration input rather than a prediction.
    pub calibrated: bool,
}

/// The one-lock system against the exact machine-repairman queue, for one CPU count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OracleCheck {
    pub cpus: u32,
    pub exact_throughput_per_s: f64,
    pub simulated_throughput_per_s: f64,
    pub exact_wait_ns: f64,
    pub simulated_wait_ns: f64,
}

impl OracleCheck {
    /// Relative errors of throughput and mean wait (0 when both waits are 0).
    pub fn errors(&self) -> (f64, f64) {
        let x = self.simulated_throughput_per_s / self.exact_throughput_per_s - 1.0;
        let w = if self.exact_wait_ns > 0.0 {
            self.simulated_wait_ns / self.exact_wait_ns - 1.0
        } else {
            self.simulated_wait_ns
        };
        (x, w)
    }
}

/// Mean think and service times of the oracle check (the knee is at 11 CPUs).
pub const ORACLE_THINK_NS: f64 = 10_000.0;
pub const ORACLE_SERVICE_NS: f64 = 1_000.0;
/// CPU counts of the oracle check.
pub const ORACLE_CPUS: [u32; 9] = [1, 2, 3, 4, 8, 11, 16, 32, 64];

/// Run the one-lock system for `cpus` CPUs long enough for about 400k critical sections, so
/// that even the rare, long-tailed waits at low load have well under 1% sampling error.
pub fn oracle_check(cpus: u32, seed: u64) -> OracleCheck {
    let exact = machine_repairman(cpus, ORACLE_THINK_NS, ORACLE_SERVICE_NS);
    let duration_ms = 400_000.0 / exact.throughput_per_s * 1e3;
    let sim = simulate_one_lock(cpus, ORACLE_THINK_NS, ORACLE_SERVICE_NS, seed, duration_ms);
    OracleCheck {
        cpus,
        exact_throughput_per_s: exact.throughput_per_s,
        simulated_throughput_per_s: sim.throughput_per_s,
        exact_wait_ns: exact.mean_wait_ns,
        simulated_wait_ns: sim.mean_wait_ns,
    }
}

/// test_vmalloc wall-time estimate of one design.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TestVmallocEstimate {
    pub design: Design,
    /// (test name, mean iteration latency ns) as simulated side by side.
    pub iteration_ns: Vec<(String, f64)>,
    pub wall_s: f64,
}

/// Everything the validation computed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidationReport {
    pub options: ValidationOptions,
    pub oracle: Vec<OracleCheck>,
    pub legacy_cost_scale: f64,
    pub node_cost_scale: f64,
    pub pair_checks: Vec<Check>,
    pub test_vmalloc: Vec<TestVmallocEstimate>,
    pub speedup_published: f64,
    pub speedup_predicted: f64,
}

fn pair_workload(jobs: u32) -> anyhow::Result<Workload> {
    Workload::preset("pair")
        .expect("preset exists")
        .with_threads(jobs)
}

/// Run the whole validation with `params` (the default machine is the published one).
pub fn validate(
    published: &Published,
    params: &ModelParams,
    opts: &ValidationOptions,
) -> anyhow::Result<ValidationReport> {
    let one = published
        .pair_rows
        .iter()
        .find(|r| r.jobs == 1)
        .expect("checked at load");
    let mut scales = Vec::new();
    for (design, us) in [
        (Design::Legacy, one.legacy_us),
        (Design::NodeSharded, one.node_sharded_us),
    ] {
        let target = CalibrationTarget {
            design,
            variant: opts.variant,
            pages: 1,
            pair_latency_ns: us * 1e3,
        };
        scales.push(
            calibrate_pair(params, &target, opts.seed)
                .with_context(|| format!("calibrating {}", design.name()))?,
        );
    }
    let (legacy_scale, node_scale) = (scales[0], scales[1]);
    let scale_of = |d: Design| {
        if d == Design::Legacy {
            legacy_scale
        } else {
            node_scale
        }
    };
    let mut pair_checks = Vec::new();
    for row in &published.pair_rows {
        for (design, us) in [
            (Design::Legacy, row.legacy_us),
            (Design::NodeSharded, row.node_sharded_us),
        ] {
            let cfg = RunConfig {
                design,
                variant: opts.variant,
                seed: opts.seed,
                warmup_ms: 5.0,
                duration_ms: opts.pair_duration_ms,
            };
            let run = simulate(
                &params.with_cost_scale(scale_of(design)),
                &pair_workload(row.jobs)?,
                &cfg,
            )?;
            let predicted = run.iteration_mean_ns() / 1e3;
            pair_checks.push(Check {
                what: format!("pair latency, {} jobs (us)", row.jobs),
                design: Some(design),
                published: us,
                predicted,
                error: predicted / us - 1.0,
                calibrated: row.jobs == 1,
            });
        }
    }
    let test_vmalloc_cpus = 64;
    let workload = Workload::preset("test-vmalloc")
        .expect("preset exists")
        .with_threads(test_vmalloc_cpus)?;
    let mut test_vmalloc = Vec::new();
    for design in [Design::Legacy, Design::NodeSharded] {
        let cfg = RunConfig {
            design,
            variant: opts.variant,
            seed: opts.seed,
            warmup_ms: 10.0,
            duration_ms: opts.test_vmalloc_duration_ms,
        };
        let machine = params
            .with_cpus(test_vmalloc_cpus)
            .with_cost_scale(scale_of(design));
        let run = simulate(&machine, &workload, &cfg)?;
        let Drive::Closed { groups, .. } = &workload.drive else {
            unreachable!("test-vmalloc is closed-loop")
        };
        let mut wall_ns = 0.0;
        let mut iteration_ns = Vec::new();
        for (g, res) in groups.iter().zip(&run.groups) {
            anyhow::ensure!(
                res.iteration.count > 0,
                "no {} iteration completed; simulate longer",
                g.name
            );
            let loops = g.loop_count.unwrap_or(TEST_VMALLOC_LOOP_COUNT) as f64;
            wall_ns += loops * res.iteration.mean_ns;
            iteration_ns.push((g.name.clone(), res.iteration.mean_ns));
        }
        test_vmalloc.push(TestVmallocEstimate {
            design,
            iteration_ns,
            wall_s: wall_ns / 1e9,
        });
    }
    let speedup_predicted = test_vmalloc[0].wall_s / test_vmalloc[1].wall_s;
    Ok(ValidationReport {
        options: opts.clone(),
        oracle: ORACLE_CPUS
            .iter()
            .map(|&n| oracle_check(n, opts.seed))
            .collect(),
        legacy_cost_scale: legacy_scale,
        node_cost_scale: node_scale,
        pair_checks,
        test_vmalloc,
        speedup_published: published.test_vmalloc_speedup,
        speedup_predicted,
    })
}

impl ValidationReport {
    /// The largest absolute relative error of the predicted (not calibrated) pair latencies.
    pub fn worst_pair_error(&self) -> f64 {
        self.pair_checks
            .iter()
            .filter(|c| !c.calibrated)
            .map(|c| c.error.abs())
            .fold(0.0, f64::max)
    }

    /// Markdown tables: pair latencies and the test_vmalloc estimate.
    pub fn render(&self, published: &Published) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Analytic oracle: one FIFO lock, exponential think {ORACLE_THINK_NS} ns and service \
             {ORACLE_SERVICE_NS} ns (M/M/1//N), acceptance 3%:"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| CPUs | exact throughput | simulated | error | exact mean wait | simulated | error |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
        for o in &self.oracle {
            let (xe, we) = o.errors();
            let _ = writeln!(
                out,
                "| {} | {}/s | {}/s | {:+.2}% | {} | {} | {} |",
                o.cpus,
                si(o.exact_throughput_per_s),
                si(o.simulated_throughput_per_s),
                100.0 * xe,
                format_ns(o.exact_wait_ns),
                format_ns(o.simulated_wait_ns),
                if o.exact_wait_ns > 0.0 {
                    format!("{:+.2}%", 100.0 * we)
                } else {
                    "-".into()
                }
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Calibrated on the jobs = 1 row: cost scale legacy {:.3}, node-sharded {:.3} \
             (node-sharded variant {}, seed {}).",
            self.legacy_cost_scale,
            self.node_cost_scale,
            self.options.variant.name(),
            self.options.seed
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| jobs | legacy published | legacy predicted | error | node published | node predicted | error |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
        for row in &published.pair_rows {
            let find = |d: Design| {
                self.pair_checks.iter().find(|c| {
                    c.design == Some(d) && c.what.contains(&format!(" {} jobs", row.jobs))
                })
            };
            let cell = |c: Option<&Check>| match c {
                Some(c) if c.calibrated => {
                    (format!("{:.2} us", c.predicted), "calibrated".to_string())
                }
                Some(c) => (
                    format!("{:.2} us", c.predicted),
                    format!("{:+.0}%", 100.0 * c.error),
                ),
                None => ("-".into(), "-".into()),
            };
            let (lp, le) = cell(find(Design::Legacy));
            let (np, ne) = cell(find(Design::NodeSharded));
            let _ = writeln!(
                out,
                "| {} | {:.2} us | {lp} | {le} | {:.2} us | {np} | {ne} |",
                row.jobs, row.legacy_us, row.node_sharded_us
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "test_vmalloc run_test_mask=7, 64 threads (mean iteration latency, simulated side by side):");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| design | fix_size | full_fit | long_busy_list | estimated wall | published wall |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for (est, published_wall) in self.test_vmalloc.iter().zip([
            published.test_vmalloc_legacy_wall_s,
            published.test_vmalloc_node_wall_s,
        ]) {
            let lat: Vec<String> = est
                .iteration_ns
                .iter()
                .map(|(_, ns)| format_ns(*ns))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} s | {:.0} s |",
                est.design.name(),
                lat.join(" | "),
                est.wall_s,
                published_wall
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Speedup node-sharded over legacy: predicted {:.1}x, published {:.1}x (acceptance: 8x..18x).",
            self.speedup_predicted, self.speedup_published
        );
        let _ = writeln!(
            out,
            "Worst predicted pair-latency error: {:.0}% (acceptance: 30%).",
            100.0 * self.worst_pair_error()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_file_parses() {
        let p = Published::load(Path::new(PUBLISHED_PATH)).unwrap();
        assert_eq!(p.pair_rows.len(), 7);
        assert_eq!(
            p.pair_rows[0],
            PairRow {
                jobs: 1,
                legacy_us: 0.576,
                node_sharded_us: 0.556
            }
        );
        assert!((p.test_vmalloc_speedup - 12.7).abs() < 1e-9);
    }

    #[test]
    fn malformed_files_are_explained() {
        let err = Published::parse("[[case]]\nid = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("rezki-v1-threadripper"));
        let err = Published::load(Path::new("/nonexistent/published.toml")).unwrap_err();
        assert!(format!("{err:#}").contains("../shared/model-validation"));
    }
}
