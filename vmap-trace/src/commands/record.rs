//! `vmap-trace record`: attach, aggregate in the kernel, write a recording.
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::profile::recording;
use crate::session::TraceSession;

/// Record vmap allocator activity and lock contention to a file.
///
/// Runs until --duration elapses, the given command exits, or Ctrl-C / SIGTERM / SIGHUP (a
/// closed terminal or ssh session); in every case everything aggregated so far is written. If
/// the output cannot be written (a full disk), the recording is saved in the temporary
/// directory instead and the error says where.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Stop after this long: seconds, or with a unit (500ms, 30s, 10m, 1h). Default: until
    /// Ctrl-C, or until COMMAND exits.
    #[arg(short, long, value_name = "DURATION", value_parser = super::duration::parse_duration)]
    pub duration: Option<Duration>,
    /// Where to write the recording. An existing file is overwritten in place (keeping its
    /// owner and mode) only once the new recording is safely written beside it; a symlink is
    /// followed; a device or FIFO is written to; a directory is refused at once.
    #[arg(short, long, value_name = "FILE", default_value = "vmap-trace.rec")]
    pub output: PathBuf,
    /// Print a summary report when done.
    #[arg(long)]
    pub report: bool,
    /// EXPERIMENTAL: also time every vmap lock acquisition (wait and hold) around the lock
    /// calls themselves, which sees the two-way spinlock waits lock:contention_* miss. Puts
    /// kprobes on _raw_spin_lock/unlock and mutex_lock/unlock (every lock in the system pays),
    /// and probing lock primitives has crashed test kernels under QEMU's multi-threaded
    /// emulation (docs/kernels.md): not for production machines.
    /// Times the vmap functions with kprobes rather than fentry (see docs/kernels.md).
    #[arg(long)]
    pub lock_timing: bool,
    /// Key contended stacks by process too (pid and command name), so `flamegraph --task`
    /// can select one. Costs map space: a fork storm of short-lived processes multiplies the
    /// stack keys (a full table is counted as lost events).
    #[arg(long)]
    pub per_task: bool,
    /// Capture the user-space stack of each contention too (implies --per-task). User frames
    /// are symbolized while the processes run (each second), so short-lived processes may
    /// keep bare addresses; code built without frame pointers yields only the innermost frame.
    #[arg(long)]
    pub user_stacks: bool,
    #[command(flatten)]
    pub stacks: super::stack_capture::StackCaptureArgs,
    /// Use kprobes even where fentry works (to compare the two, or work around fentry issues).
    #[arg(long)]
    pub prefer_kprobe: bool,
    /// Use classic tracepoints even where tp_btf works (to compare the two).
    #[arg(long)]
    pub classic_tracepoints: bool,
    /// Print the whole verifier log of each program the kernel refuses (by default its last
    /// lines, which hold the refusal; the recording keeps the log for `report`).
    #[arg(short, long)]
    pub verbose: bool,
    /// Count vmalloc operations (allocations, frees, purges, lazy backlog) from the vmap
    /// function probes even where the vmalloc:* tracepoints exist, as kernels before 6.2 must
    /// (to compare the two sources). The tracepoints are then not attached.
    #[arg(long)]
    pub ops_from_functions: bool,
    /// Run this command while recording and stop when it exits (system-wide recording
    /// still: other processes' activity is included).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(args: RecordArgs) -> Result<()> {
    // Fail on an unwritable output now, not after a long recording.
    crate::output::check(&args.output, &[])?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in STOP_SIGNALS {
        // A second signal ends the process at once, for a recording that does not stop.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }

    let options = args.stacks.apply(crate::probe::ProbeOptions {
        lock_timing: args.lock_timing,
        prefer_kprobe: args.prefer_kprobe,
        classic_tracepoints: args.classic_tracepoints,
        ops_from_functions: args.ops_from_functions,
        per_task: args.per_task,
        user_stacks: args.user_stacks,
        ..Default::default()
    });
    let mut session = TraceSession::start_with(options)?;
    for h in session.hooks() {
        match h.mechanism {
            Some(m) => eprintln!("vmap-trace: {} via {}", h.hook, m.label()),
            None => eprintln!("vmap-trace: {} unavailable", h.hook),
        }
    }
    eprint!(
        "{}",
        crate::profile::verifier_log::render_refusals(
            session.hooks(),
            args.verbose,
            "vmap-trace: "
        )
    );
    if session.hooks().iter().all(|h| h.mechanism.is_none()) {
        bail!("no hook could be attached; run `vmap-trace doctor` to see why");
    }

    let mut child = spawn(&args.command)?;
    let tty = std::io::stderr().is_terminal();
    let limit = args.duration;
    let mut stopped_by = "duration";
    let mut ticks = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        if ticks % 10 == 0 {
            if let Err(e) = session.resolve_user_stacks() {
                note(format_args!("symbolizing user stacks: {e:#}"));
            }
        }
        if stop.load(Ordering::Relaxed) {
            stopped_by = "signal";
            break;
        }
        if let Some(c) = child.as_mut() {
            // An error waiting for the command ends the run, but the recording is still saved.
            let exited = c.try_wait().unwrap_or_else(|e| {
                note(format_args!("cannot wait for the command: {e}"));
                c.kill().ok().and_then(|()| c.wait().ok())
            });
            if let Some(status) = exited {
                stopped_by = "command exit";
                if !status.success() {
                    note(format_args!("command exited with {status}"));
                }
                child = None;
                break;
            }
        }
        if limit.is_some_and(|l| session.elapsed() >= l) {
            break;
        }
        if tty {
            // Not eprint!: see `note`.
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\rrecording... {:.1} s  (Ctrl-C to stop)",
                session.elapsed().as_secs_f64()
            );
            let _ = err.flush();
        }
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
    // The command may just have exited; its user stacks are symbolized while it is a zombie
    // at best, so resolve what is left before the final read.
    let _ = session.resolve_user_stacks();
    let profile = session.finish()?; // detached before anything slow
    if let Some(mut c) = child {
        // We stopped first (duration or signal): don't leave the workload running.
        let _ = c.kill();
        let _ = c.wait();
    }
    let saved = save(&profile, &args.output);
    if args.report {
        // Even when the file could not be written: the report is the user's other copy.
        let text = crate::report::text::render(&profile, &Default::default());
        if let Err(e) = crate::stdout::print(&text) {
            note(format_args!("cannot print the report: {e:#}"));
        }
    }
    let written = saved?;
    note(format_args!(
        "wrote {} ({:.1} s, stopped by {stopped_by}; {} allocs, {} contentions{})",
        crate::escape::field(&written.display().to_string()),
        profile.meta.duration_s(),
        profile.ops.allocs,
        profile.total_wait().count,
        if profile.losses.total() > 0 {
            format!(", {} events LOST", profile.losses.total())
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// A message on stderr that cannot panic: after SIGHUP the terminal is gone, and a failed
/// write must not lose the recording.
fn note(message: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "vmap-trace: {message}");
}

/// The signals that end a recording cleanly: Ctrl-C, `kill`, and a closed terminal.
pub const STOP_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// Write the recording to `path`; if that fails, to a fresh file in the temporary directory,
/// so that a full disk or a vanished directory never loses what was recorded. Returns the
/// path written, or an error that names where the recording went.
fn save(profile: &crate::profile::Profile, path: &Path) -> Result<PathBuf> {
    let bytes = recording::encode(profile);
    let err = match crate::output::write(path, &bytes) {
        Ok(()) => return Ok(path.to_path_buf()),
        Err(e) => e,
    };
    match save_fallback(&bytes) {
        Ok(kept) => Err(err.context(format!(
            "the recording was saved to {} instead",
            kept.display()
        ))),
        Err(e2) => Err(err.context(format!(
            "the recording is LOST: it could not be saved to the temporary directory either ({e2})"
        ))),
    }
}

fn save_fallback(bytes: &[u8]) -> std::io::Result<PathBuf> {
    let mut tmp = tempfile::Builder::new()
        .prefix("vmap-trace-")
        .suffix(".rec")
        .tempfile_in(std::env::temp_dir())?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    let (_, path) = tmp.keep().map_err(|e| e.error)?;
    Ok(path)
}

fn spawn(command: &[String]) -> Result<Option<Child>> {
    let Some((prog, rest)) = command.split_first() else {
        return Ok(None);
    };
    let child = Command::new(prog)
        .args(rest)
        .spawn()
        .with_context(|| format!("cannot run {prog}"))?;
    Ok(Some(child))
}
