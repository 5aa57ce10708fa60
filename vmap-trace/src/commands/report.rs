//! `vmap-trace report`: read a recording and print it.
use std::path::PathBuf;

use anyhow::Result;

use crate::profile::recording;
use crate::report::{json, text, ReportOptions};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

/// Print a recording: vmap contention first, then vmalloc ops, other locks, CPUs and tasks.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A recording written by `vmap-trace record`.
    pub file: PathBuf,
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Rows in the "top" tables.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// JSON only: keep just the N heaviest stacks and tasks (default: all of them).
    #[arg(long, value_name = "N")]
    pub max_rows: Option<usize>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let profile = recording::load(&args.file)?;
    match args.format {
        ReportFormat::Text => print!("{}", text::render(&profile, &ReportOptions { top: args.top })),
        ReportFormat::Json => println!("{}", json::render(&profile, args.max_rows)),
    }
    Ok(())
}
