//! `vmap-trace diff`: a differential flamegraph of two recordings.
use std::path::PathBuf;

use anyhow::Result;

use super::flamegraph::{check_output, is_stdout, write_output, StackArgs};
use crate::flamegraph::{self, DiffOptions, Graph, Side};
use crate::profile::recording;

/// Differential flamegraph of two recordings: where lock wait moved between before and after
/// (a kernel upgrade, a config change).
///
/// Widths are the after recording's; colour marks the change of each stack's own (top,
/// lock-frame) weight, as in Gregg's differential flamegraphs: red grew, blue shrank. The before
/// recording is normalized to the after one's total by default, so a longer or busier
/// recording does not paint everything red. Function names drop build suffixes
/// (.constprop.0, _noprof) and addresses read 0x..., so kernels and boots compare.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  vmap-trace diff 6.1.rec 6.12.rec -o upgrade.svg
  vmap-trace diff before.rec after.rec -o vanished.svg --negate
  vmap-trace diff before.rec after.rec -o - --folded | inferno-flamegraph > diff.svg

`vmap-trace report --compare BEFORE AFTER` prints the same comparison as a table of per-lock
and per-op deltas.")]
pub struct DiffArgs {
    /// The before recording.
    pub before: PathBuf,
    /// The after recording.
    pub after: PathBuf,
    /// Where to write the SVG (or the folded text with --folded); `-` for standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Write two-column folded stacks (`stack BEFORE AFTER`) instead of an SVG.
    #[arg(long)]
    pub folded: bool,
    /// Compare absolute weights instead of scaling before to after's total.
    #[arg(long)]
    pub no_normalize: bool,
    /// Draw the before recording's widths, so stacks that disappeared show (colours keep their
    /// meaning). Folded output then has the columns swapped (`stack AFTER BEFORE`), for
    /// `inferno-flamegraph --negate`.
    #[arg(long)]
    pub negate: bool,
    #[command(flatten)]
    pub stacks: StackArgs,
}

pub fn run(args: DiffArgs) -> Result<()> {
    check_output(&args.output, &[&args.before, &args.after])?;
    let before = recording::load(&args.before)?;
    let after = recording::load(&args.after)?;
    let opts = DiffOptions {
        fold: args.stacks.fold_options()?,
        normalize: !args.no_normalize,
        negate: args.negate,
    };
    let (mut before_name, mut after_name) = (file_name(&args.before), file_name(&args.after));
    if before_name == after_name {
        // a/x.rec vs b/x.rec: the file names alone would not tell the sides apart.
        (before_name, after_name) = (
            args.before.display().to_string(),
            args.after.display().to_string(),
        );
    }
    let graph = flamegraph::diff(
        Side {
            name: &before_name,
            profile: &before,
        },
        Side {
            name: &after_name,
            profile: &after,
        },
        &opts,
    )?;
    write_output(&args.output, |w| graph.write_as(args.folded, w))?;
    if !is_stdout(&args.output) {
        eprintln!(
            "vmap-trace: wrote {} ({} stacks)",
            crate::escape::field(&args.output.display().to_string()),
            graph.folded.lines.len()
        );
    }
    Ok(())
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
