//! `vmap-trace flamegraph`: a recording's contended kernel stacks as an SVG flamegraph or as
//! folded text. The work is in `crate::flamegraph`; this file parses arguments and writes.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::flamegraph::{self, ClassFilter, FoldOptions, Graph, LockSelector, StackFilter, Weight};
use crate::profile::recording;
use crate::report::format_ns;

/// Which stacks go into a graph and how they are weighted (shared by `flamegraph` and `diff`).
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Only stacks waiting on this lock: its name as `vmap-trace report` prints it, or its
    /// address (0x...). Repeat for several. An unknown lock lists the ones that exist.
    #[arg(long, value_name = "NAME|0xADDR")]
    pub lock: Vec<String>,
    /// Only stacks through vmap allocator functions (`vmap`) or only the rest (`other`).
    #[arg(long, value_enum, value_name = "CLASS")]
    pub class: Option<ClassFilter>,
    /// What the widths measure: wait time (ns), contended waits, or hold time (hold needs
    /// hold times per stack, which no recording has yet: this says so and stops).
    #[arg(long, value_enum, default_value_t = Weight::Wait)]
    pub weight: Weight,
    /// Only this process: its pid or command name. Needs a recording made with
    /// `record --per-task` (or --user-stacks); on others this stops with the task's totals.
    #[arg(long, value_name = "PID|COMM")]
    pub task: Option<String>,
    /// Put each process and its user-space stack under the kernel frames
    /// (`comm (pid);user frames;[kernel];kernel frames`). Needs `record --user-stacks`.
    #[arg(long)]
    pub user_stacks: bool,
}

impl StackArgs {
    pub fn fold_options(&self) -> Result<FoldOptions> {
        let locks = self
            .lock
            .iter()
            .map(|l| l.parse::<LockSelector>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FoldOptions {
            weight: self.weight,
            filter: StackFilter {
                locks,
                class: self.class,
                task: self.task.clone(),
            },
            canonical_names: false,
            user_stacks: self.user_stacks,
        })
    }
}

/// Render a flamegraph of a recording's contended kernel stacks.
///
/// Each tower is one contended kernel path, outermost frame at the bottom and the lock it
/// waited for on top (`[spinlock vmap_area_lock]`, or the lock's address when the kernel does
/// not name it). Widths are total wait by default; tooltips read in us (ms for graphs of 10 s
/// of wait or more) or in waits.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  vmap-trace flamegraph web.rec -o web.svg
  vmap-trace flamegraph web.rec -o vmap.svg --class vmap --weight count
  vmap-trace flamegraph web.rec -o - --folded | inferno-flamegraph > web.svg
  vmap-trace flamegraph web.rec -o web.folded --folded --lock vmap_area_lock
  vmap-trace record --user-stacks -o ssh.rec -- sleep 30 && vmap-trace flamegraph ssh.rec -o sshd.svg --user-stacks --task sshd

--folded writes `frame;frame;...;[lock] WEIGHT` lines (outermost frame first; weights in
nanoseconds, or waits with --weight count): the input of flamegraph.pl, inferno-flamegraph
and speedscope.")]
pub struct FlamegraphArgs {
    /// A recording written by `vmap-trace record`.
    pub file: PathBuf,
    /// Where to write the SVG (or the folded text with --folded); `-` for standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Write folded stacks instead of an SVG.
    #[arg(long)]
    pub folded: bool,
    #[command(flatten)]
    pub stacks: StackArgs,
}

pub fn run(args: FlamegraphArgs) -> Result<()> {
    check_output(&args.output, &[&args.file])?;
    let profile = recording::load(&args.file)?;
    let graph = flamegraph::flamegraph(&profile, &args.stacks.fold_options()?)?;
    write_output(&args.output, |w| graph.write_as(args.folded, w))?;
    if !is_stdout(&args.output) {
        let total = graph.folded.total();
        let amount = match graph.weight {
            Weight::Count => format!("{total} contended waits"),
            _ => format!("{} of {}", format_ns(total as f64), graph.weight.describe()),
        };
        eprintln!(
            "vmap-trace: wrote {} ({} stacks, {amount})",
            crate::escape::field(&args.output.display().to_string()),
            graph.folded.len()
        );
    }
    Ok(())
}

pub(crate) fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Write to `path` (or standard output for `-`) through `write`. A file is rendered in full
/// first and then written by [`crate::output::write`], so a failed render never leaves half an
/// SVG behind and the target is treated as the user's (see that module).
pub(crate) fn write_output(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    if is_stdout(path) {
        return crate::stdout::write_with(write).map(drop);
    }
    let mut rendered = Vec::new();
    write(&mut rendered)?;
    crate::output::write(path, &rendered)
}

/// Check an output path before reading the inputs: it must be writable and none of them.
pub(crate) fn check_output(path: &Path, inputs: &[&Path]) -> Result<()> {
    if !is_stdout(path) {
        crate::output::check(path, inputs)?;
    }
    Ok(())
}
