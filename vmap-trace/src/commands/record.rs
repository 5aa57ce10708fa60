//! `vmap-trace record`: attach, aggregate in the kernel, write a recording.
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::profile::recording;
use crate::session::TraceSession;

/// Record vmap allocator activity and lock contention to a file.
///
/// Runs until --duration elapses, the given command exits, or Ctrl-C / SIGTERM; in every
/// case everything aggregated so far is written.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// Stop after this many seconds (default: until Ctrl-C, or until COMMAND exits).
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Where to write the recording.
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
    /// Run this command while recording and stop when it exits (system-wide recording
    /// still: other processes' activity is included).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(args: RecordArgs) -> Result<()> {
    if let Some(d) = args.duration {
        if !(d > 0.0 && d.is_finite()) {
            bail!("--duration must be a positive number of seconds, got {d}");
        }
    }
    // Fail on an unwritable output now, not after a long recording.
    check_writable(&args.output)?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }

    let options = args.stacks.apply(crate::probe::ProbeOptions {
        lock_timing: args.lock_timing,
        prefer_kprobe: args.prefer_kprobe,
        classic_tracepoints: args.classic_tracepoints,
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
    if session.hooks().iter().all(|h| h.mechanism.is_none()) {
        bail!("no hook could be attached; run `vmap-trace doctor` to see why");
    }

    let mut child = spawn(&args.command)?;
    let tty = std::io::stderr().is_terminal();
    let limit = args.duration.map(Duration::from_secs_f64);
    let mut stopped_by = "duration";
    let mut ticks = 0u64;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        if ticks % 10 == 0 {
            if let Err(e) = session.resolve_user_stacks() {
                eprintln!("vmap-trace: symbolizing user stacks: {e:#}");
            }
        }
        if stop.load(Ordering::Relaxed) {
            stopped_by = "signal";
            break;
        }
        if let Some(c) = child.as_mut() {
            if let Some(status) = c.try_wait()? {
                stopped_by = "command exit";
                if !status.success() {
                    eprintln!("vmap-trace: command exited with {status}");
                }
                child = None;
                break;
            }
        }
        if limit.is_some_and(|l| session.elapsed() >= l) {
            break;
        }
        if tty {
            eprint!(
                "\rrecording... {:.1} s  (Ctrl-C to stop)",
                session.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        }
    }
    if tty {
        eprintln!();
    }
    // The command may just have exited; its user stacks are symbolized while it is a zombie
    // at best, so resolve what is left before the final read.
    let _ = session.resolve_user_stacks();
    let profile = session.snapshot()?;
    drop(session); // detach before anything slow
    if let Some(mut c) = child {
        // We stopped first (duration or signal): don't leave the workload running.
        let _ = c.kill();
        let _ = c.wait();
    }
    recording::save(&profile, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "vmap-trace: wrote {} ({:.1} s, stopped by {stopped_by}; {} allocs, {} contentions{})",
        args.output.display(),
        profile.meta.duration_s(),
        profile.ops.allocs,
        profile.total_wait().count,
        if profile.losses.total() > 0 {
            format!(", {} events LOST", profile.losses.total())
        } else {
            String::new()
        }
    );
    if args.report {
        crate::stdout::print(&crate::report::text::render(&profile, &Default::default()))?;
    }
    Ok(())
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

fn check_writable(path: &std::path::Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    Ok(())
}
