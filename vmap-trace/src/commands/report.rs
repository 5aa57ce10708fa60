//! `vmap-trace report`: read a recording and print it, or compare two.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::profile::recording;
use crate::report::csv::CsvTable;
use crate::report::{compare, csv, json, text, ReportOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Tables for people.
    Text,
    /// Schema vmap-trace-report/1 (vmap-trace-compare/1 with --compare).
    Json,
    /// One table (see --table), schema vmap-trace-csv/1.
    Csv,
}

/// Print a recording: vmap contention first, then vmalloc ops, other locks, CPUs and tasks.
///
/// With --compare BEFORE AFTER, print per-lock, per-vmap-function and per-op deltas between
/// two recordings instead (rates per second, so recordings of different lengths compare).
/// The JSON and CSV schemas are documented in docs/report-schema.md.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  vmap-trace report web.rec
  vmap-trace report web.rec --format csv --table stacks > stacks.csv
  vmap-trace report --compare 6.1.rec 6.12.rec
  vmap-trace report --compare before.rec after.rec --format csv > deltas.csv")]
pub struct ReportArgs {
    /// A recording written by `vmap-trace record`.
    #[arg(required_unless_present = "compare")]
    pub file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// CSV only: which table to write (each has its own columns).
    #[arg(long, value_enum, value_name = "TABLE")]
    pub table: Option<CsvTable>,
    /// Rows in the "top" tables.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// JSON only: keep just the N heaviest stacks and tasks (default: all of them).
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
    /// Text only: show the whole verifier log of each program the kernel refused (by default
    /// its last lines, which hold the refusal).
    #[arg(short, long)]
    pub verbose: bool,
    /// Compare two recordings instead of printing one.
    #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"], conflicts_with = "file")]
    pub compare: Option<Vec<PathBuf>>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    if args.table.is_some() && args.format != ReportFormat::Csv {
        bail!("--table only applies to --format csv");
    }
    if let Some(paths) = &args.compare {
        return run_compare(&args, &paths[0], &paths[1]);
    }
    let Some(file) = &args.file else {
        bail!("give a recording to report on, or --compare BEFORE AFTER")
    };
    let profile = recording::load(file)?;
    let out = match args.format {
        ReportFormat::Text => text::render(
            &profile,
            &ReportOptions {
                top: args.top,
                verbose: args.verbose,
            },
        ),
        ReportFormat::Json => json::render(&profile, args.max_rows) + "\n",
        ReportFormat::Csv => csv::render(&profile, args.table.unwrap_or(CsvTable::Locks)),
    };
    crate::stdout::print(&out).map(drop)
}

fn run_compare(args: &ReportArgs, before_path: &Path, after_path: &Path) -> Result<()> {
    if args.table.is_some() {
        bail!("--table does not apply to --compare: its CSV is a single `compare` table");
    }
    if args.max_rows.is_some() {
        bail!("--max-rows applies to a single recording's JSON, not to --compare");
    }
    let before = recording::load(before_path)?;
    let after = recording::load(after_path)?;
    let name = |p: &Path| p.display().to_string();
    let c = compare::compare(&name(before_path), &before, &name(after_path), &after);
    let out = match args.format {
        ReportFormat::Text => compare::render_text(&c, args.top),
        ReportFormat::Json => compare::render_json(&c) + "\n",
        ReportFormat::Csv => compare::render_csv(&c),
    };
    crate::stdout::print(&out).map(drop)
}
