//! `vmap-trace model`: command-line front end of the reference model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};

use crate::model::calibrate::{calibrate_pair, CalibrationTarget};
use crate::model::measured::{compare_measured, MeasuredWorkload};
use crate::model::params::ModelParams;
use crate::model::report::{render_comparison, render_single, render_sweep};
use crate::model::run::{compare, simulate, RunConfig};
use crate::model::validate::{validate, Published, ValidationOptions, PUBLISHED_PATH};
use crate::model::workload::{preset_names, Workload};
use crate::model::{Design, KernelVariant};

/// Which design(s) to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DesignChoice {
    /// The legacy design (5.11 .. 6.8): global locks.
    Legacy,
    /// The node-sharded design (6.9+).
    Node,
    /// Both, side by side with ratios.
    Both,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `vmap-trace model` arguments.
#[derive(Debug, clap::Args)]
#[command(
    about = "Simulate the kernel's legacy and node-sharded vmap allocator designs",
    long_about = "Simulate N CPUs running a vmalloc workload against the legacy vmap allocator \
                  (5.11..6.8: global free_vmap_area_lock, vmap_area_lock, purge_vmap_area_lock) and \
                  the node-sharded one (6.9+: per-node pools and locks). Deterministic: the same \
                  seed gives the same numbers. Without --cpus the default machine is the published \
                  measurements' AMD Threadripper 3970X (64 CPUs); see docs/model.md for every \
                  parameter and its default.",
    after_help = "Examples:\n  vmap-trace model\n  vmap-trace model --workload test-vmalloc --cpus 1,2,4,8,16,32,64,128\n  \
                  vmap-trace model --design node --kernel 6.9 --workload usercopy --threads 8 --format json\n  \
                  vmap-trace model --calibrate-pair-us 0.9 --calibrated-on legacy\n  vmap-trace model validate"
)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: Option<ModelCommand>,

    /// Which design to simulate; `both` prints them side by side with node/legacy ratios.
    #[arg(long, value_enum, default_value = "both")]
    pub design: DesignChoice,

    /// Node-sharded kernel variant: 6.9 takes busy.lock twice per vmalloc, 6.10 (..6.12) once;
    /// mainline also scans nodes backwards on lookups.
    #[arg(long, value_enum, default_value = "6.10")]
    pub kernel: KernelVariant,

    /// Online CPUs (comma-separated list for a sweep, e.g. 1,2,4,8,16,32,64,128).
    /// Default: the machine of --params (64 CPUs unless changed).
    #[arg(long, value_delimiter = ',')]
    pub cpus: Vec<u32>,

    /// Closed-loop threads, one per CPU (default: one on every CPU; capped at the CPU count in
    /// sweeps).
    #[arg(long)]
    pub threads: Option<u32>,

    /// Workload: a built-in name (see --list-workloads) or a TOML file (format in docs/model.md).
    #[arg(long, default_value = "pair")]
    pub workload: String,

    /// TOML file overriding model parameters (machine, hardware latencies, costs); any subset.
    #[arg(long)]
    pub params: Option<PathBuf>,

    /// Random seed; the same seed gives the same output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Measured simulated time per configuration, in ms.
    #[arg(long, default_value_t = 100.0)]
    pub duration_ms: f64,

    /// Minimum warm-up before measuring, in ms (warm-up also waits for the first purge).
    #[arg(long, default_value_t = 10.0)]
    pub warmup_ms: f64,

    /// Calibrate: a measured single-thread vmalloc(1 page) + vfree latency in µs on your
    /// machine. Every CPU cost is scaled so that the model reproduces it.
    #[arg(long)]
    pub calibrate_pair_us: Option<f64>,

    /// The design of the kernel --calibrate-pair-us was measured on.
    #[arg(long, value_enum, default_value = "legacy")]
    pub calibrated_on: Design,

    /// Compare a measured workload (MeasuredWorkload JSON, see docs/model.md) with the model:
    /// measured vs predicted, the other design, then the --cpus sweep.
    #[arg(long, conflicts_with = "from")]
    pub from_measured: Option<PathBuf>,

    /// Compare a vmap-trace recording with the model: recognise its kernel's design,
    /// calibrate on it, show measured vs predicted for the recorded configuration, then the
    /// other design and the --cpus sweep ("would 6.9+ fix this, and by how much?").
    #[arg(long, value_name = "REC")]
    pub from: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,

    /// List the built-in workloads and exit.
    #[arg(long)]
    pub list_workloads: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Reproduce the published measurements (calibrated on the single-thread figures only)
    /// and print predicted vs published with errors.
    Validate {
        /// The published measurements file.
        #[arg(long, default_value = PUBLISHED_PATH)]
        published: PathBuf,
        /// Node-sharded variant standing for the published series.
        #[arg(long, value_enum, default_value = "6.9")]
        kernel: KernelVariant,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    if args.list_workloads {
        let list: String = preset_names()
            .iter()
            .map(|(name, what)| format!("{name:<14} {what}\n"))
            .collect();
        return print(&list);
    }
    let params = load_params(args.params.as_deref())?;
    if let Some(ModelCommand::Validate {
        published,
        kernel,
        seed,
        format,
    }) = &args.command
    {
        let published = Published::load(published)?;
        let opts = ValidationOptions {
            seed: *seed,
            variant: *kernel,
            ..ValidationOptions::default()
        };
        let report = validate(&published, &params, &opts)?;
        return print(&match format {
            Format::Text => report.render(&published),
            Format::Json => json(&report)?,
        });
    }
    let cfg = RunConfig {
        design: Design::Legacy,
        variant: args.kernel,
        seed: args.seed,
        warmup_ms: args.warmup_ms,
        duration_ms: args.duration_ms,
    };
    let cpus_list = if args.cpus.is_empty() {
        vec![params.machine.cpus]
    } else {
        args.cpus.clone()
    };
    let measured = match (&args.from, &args.from_measured) {
        (Some(rec), _) => {
            let profile = crate::profile::recording::load(rec)?;
            let measured =
                crate::model::recording::measured_from_profile(&profile).map_err(|why| {
                    anyhow::anyhow!(
                        "{}: the model cannot use this recording: {why}",
                        rec.display()
                    )
                })?;
            Some(measured)
        }
        (None, Some(path)) => {
            let text = read_model_input(path)?;
            Some(
                MeasuredWorkload::from_json(&text)
                    .with_context(|| format!("in {}", path.display()))?,
            )
        }
        (None, None) => None,
    };
    if let Some(measured) = measured {
        let report = compare_measured(&measured, &params, &cpus_list, &cfg)?;
        return print(&match args.format {
            Format::Text => report.render(),
            Format::Json => json(&report)?,
        });
    }
    let workload = load_workload(&args.workload)?;
    let params = match args.calibrate_pair_us {
        Some(us) => {
            let design = args.calibrated_on;
            let target = CalibrationTarget {
                design,
                variant: args.kernel,
                pages: 1,
                pair_latency_ns: us * 1e3,
            };
            let machine = params.with_cpus(cpus_list[0]);
            let scale = calibrate_pair(&machine, &target, args.seed).context("calibrating")?;
            eprintln!(
                "calibrated on {us} us ({}): cost scale {scale:.3}",
                design.name()
            );
            params.with_cost_scale(scale)
        }
        None => params,
    };
    let sweep = cpus_list.len() > 1;
    let mut comparisons = Vec::new();
    let mut singles = Vec::new();
    for &cpus in &cpus_list {
        let machine = params.with_cpus(cpus);
        let workload = match args.threads {
            Some(t) if sweep => workload.clone().with_threads(t.min(cpus))?,
            Some(t) => workload.clone().with_threads(t)?,
            None => workload.clone(),
        };
        match args.design {
            DesignChoice::Both => comparisons
                .push(compare(&machine, &workload, &cfg).with_context(|| format!("{cpus} CPUs"))?),
            DesignChoice::Legacy | DesignChoice::Node => {
                let design = if args.design == DesignChoice::Legacy {
                    Design::Legacy
                } else {
                    Design::NodeSharded
                };
                let run = simulate(
                    &machine,
                    &workload,
                    &RunConfig {
                        design,
                        ..cfg.clone()
                    },
                )
                .with_context(|| format!("{cpus} CPUs"))?;
                singles.push(run);
            }
        }
    }
    print(&match (args.format, sweep) {
        (Format::Json, _) if !comparisons.is_empty() => json(&comparisons)?,
        (Format::Json, _) => json(&singles)?,
        (Format::Text, true) if !comparisons.is_empty() => {
            render_sweep(&comparisons, &workload.name)
        }
        (Format::Text, _) => {
            let comparisons = comparisons
                .iter()
                .map(|c| render_comparison(c, &workload.name, args.seed));
            let singles = singles
                .iter()
                .map(|r| render_single(r, &workload.name, args.seed));
            comparisons.chain(singles).collect::<Vec<_>>().join("\n")
        }
    })
}

/// The command's output on standard output, in one write.
fn print(text: &str) -> anyhow::Result<()> {
    crate::stdout::print(text).map(drop)
}

/// Pretty JSON, one line break at the end, whose recorded strings (a recording's kernel, a
/// workload file's name) cannot reach a terminal raw (`crate::escape::json`).
fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(crate::escape::json(serde_json::to_string_pretty(value)?) + "\n")
}

fn load_params(path: Option<&Path>) -> anyhow::Result<ModelParams> {
    let Some(path) = path else {
        return Ok(ModelParams::default());
    };
    let text = read_model_input(path)?;
    ModelParams::from_toml_str(&text).with_context(|| format!("in {}", path.display()))
}

fn load_workload(spec: &str) -> anyhow::Result<Workload> {
    if let Some(w) = Workload::preset(spec) {
        return Ok(w);
    }
    let path = Path::new(spec);
    if !path.exists() {
        let names: Vec<&str> = preset_names().iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown workload {spec:?}: not a built-in ({}) nor an existing file",
            names.join(", ")
        );
    }
    let text = read_model_input(path)?;
    Workload::from_toml_str(&text).with_context(|| format!("in {}", path.display()))
}

/// A TOML or JSON file of the model's, through the CLI's checked reader.
fn read_model_input(path: &Path) -> anyhow::Result<String> {
    Ok(crate::input::read_text(path, crate::input::MODEL_INPUT)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn run_with(args: &[&str]) -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(std::iter::once("model").chain(args.iter().copied()))?;
        run(cli.model)
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let err = run_with(&["--workload", "no-such-workload"]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown workload"), "{err:#}");
        let err = run_with(&["--cpus", "4", "--threads", "5", "--duration-ms", "1"]).unwrap_err();
        assert!(format!("{err:#}").contains("do not fit"), "{err:#}");
        assert!(run_with(&["--params", "/nonexistent/params.toml"]).is_err());
        assert!(run_with(&["--cpus", "0"]).is_err());
        assert!(run_with(&["--duration-ms", "-5"]).is_err());
        assert!(run_with(&["--calibrate-pair-us", "0", "--cpus", "2"]).is_err());
        assert!(run_with(&["--from-measured", "/nonexistent/m.json"]).is_err());
        assert!(run_with(&["validate", "--published", "/nonexistent/published.toml"]).is_err());
        assert!(run_with(&["--design", "sideways"]).is_err());
    }

    #[test]
    fn a_small_sweep_runs() {
        run_with(&["--cpus", "1,2", "--duration-ms", "2", "--warmup-ms", "0"]).unwrap();
        run_with(&[
            "--design",
            "node",
            "--cpus",
            "2",
            "--duration-ms",
            "2",
            "--format",
            "json",
        ])
        .unwrap();
    }
}
