//! A standard output nobody reads (`vmap-trace doctor | true`, `... | head -1`) ends every
//! command quietly and successfully, where `print!` used to panic with a backtrace; any other
//! write error (a full disk behind `>`) is a clear error and exit 1. The built binary runs
//! with stdout a pipe whose read end is closed before it starts, so its first write fails.
mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::recording::save;
use common::BIN;

/// Long enough for a debug build on a busy machine; a command that ignores the closed pipe
/// (a load generator running on) or waits on it fails here rather than hanging the suite.
const TIME_LIMIT: Duration = Duration::from_secs(120);

struct Ended {
    code: Option<i32>,
    stderr: String,
}

fn run(mut cmd: Command, stdout: Stdio) -> Ended {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut pipe = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        pipe.read_to_string(&mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {TIME_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ended {
        code: status.code(),
        stderr: stderr.join().unwrap().unwrap(),
    }
}

fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

fn vmap_trace(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    cmd
}

/// Exit 0, nothing said about the pipe, no panic.
fn assert_ends_quietly(cmd: Command) {
    let what = format!("{cmd:?}");
    let ended = run(cmd, closed_pipe());
    assert!(
        !ended.stderr.contains("panicked"),
        "{what} panicked:\n{}",
        ended.stderr
    );
    assert_eq!(ended.code, Some(0), "{what}:\n{}", ended.stderr);
    assert!(
        !ended.stderr.contains("Broken pipe") && !ended.stderr.contains("error"),
        "{what} complained:\n{}",
        ended.stderr
    );
}

/// Exit 1 with the reason, no panic.
fn assert_fails_on_a_full_disk(cmd: Command) {
    let what = format!("{cmd:?}");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let ended = run(cmd, full.into());
    assert!(
        !ended.stderr.contains("panicked"),
        "{what}:\n{}",
        ended.stderr
    );
    assert_eq!(ended.code, Some(1), "{what}:\n{}", ended.stderr);
    assert!(
        ended.stderr.starts_with("vmap-trace: error: cannot ")
            && ended.stderr.contains("No space left on device"),
        "{what}:\n{}",
        ended.stderr
    );
}

fn recording(dir: &Path) -> String {
    save(dir, "a.rec", "").to_str().unwrap().to_string()
}

#[test]
fn report_ends_quietly_when_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path());
    for args in [
        &["report", &rec][..],
        &["report", &rec, "--format", "json"],
        &["report", &rec, "--format", "csv", "--table", "stacks"],
        &["report", "--compare", &rec, &rec],
    ] {
        assert_ends_quietly(vmap_trace(args));
    }
    assert_fails_on_a_full_disk(vmap_trace(&["report", &rec]));
}

#[test]
fn flamegraph_and_diff_to_stdout_end_quietly_when_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path());
    for args in [
        &["flamegraph", &rec, "-o", "-", "--folded"][..],
        &["flamegraph", &rec, "-o", "-"],
        &["diff", &rec, &rec, "-o", "-", "--folded"],
    ] {
        assert_ends_quietly(vmap_trace(args));
    }
    assert_fails_on_a_full_disk(vmap_trace(&["flamegraph", &rec, "-o", "-"]));
}

#[test]
fn model_ends_quietly_when_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recording(dir.path());
    let short = ["--cpus", "2", "--duration-ms", "2", "--warmup-ms", "0"];
    let with_short = |args: &[&str]| {
        let mut cmd = vmap_trace(args);
        cmd.args(short);
        cmd
    };
    assert_ends_quietly(vmap_trace(&["model", "--list-workloads"]));
    assert_ends_quietly(with_short(&["model"]));
    assert_ends_quietly(with_short(&[
        "model", "--design", "node", "--format", "json",
    ]));
    assert_ends_quietly(with_short(&["model", "--from", &rec]));
    assert_fails_on_a_full_disk(vmap_trace(&["model", "--list-workloads"]));
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "heavy (minutes in a debug build): cargo test --release -p vmap-trace --test stdout_cli"
)]
fn model_validate_ends_quietly_when_nobody_reads() {
    assert_ends_quietly(vmap_trace(&["model", "validate"]));
}

#[test]
fn stress_stops_when_nobody_reads() {
    let run = ["threads", "-d", "0.2", "--threads", "1", "--live", "2"];
    for extra in [&[][..], &["--quiet"], &["--json"]] {
        let mut cmd = vmap_trace(&["stress"]);
        cmd.args(run).args(extra);
        assert_ends_quietly(cmd);
    }
}

/// `doctor` as a user without privileges: as root it would load and attach probes, which
/// this test is not about; unprivileged it says what it could not check, and still prints.
fn unprivileged_doctor(args: &[&str]) -> Command {
    let mut cmd = vmap_trace(&["doctor"]);
    cmd.args(args);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534); // nobody
    }
    cmd
}

#[test]
fn doctor_without_privileges_prints_and_ends_quietly_when_nobody_reads() {
    let out = unprivileged_doctor(&[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("NO  privileges") && text.contains("hooks: not tested (needs root)"),
        "{text}"
    );
    assert_ends_quietly(unprivileged_doctor(&[]));
    assert_ends_quietly(unprivileged_doctor(&["--format", "json"]));
    assert_fails_on_a_full_disk(unprivileged_doctor(&[]));
}

/// `record --report` needs root to record; without it this fails and says so (it does not
/// pass without having run).
#[test]
fn record_report_ends_quietly_when_nobody_reads() {
    assert!(
        common::is_root(),
        "needs root to load eBPF programs: run as root, or --skip record_report"
    );
    common::ensure_tracefs();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("r.rec");
    let cmd = vmap_trace(&[
        "record",
        "-d",
        "0.3",
        "--report",
        "-o",
        rec.to_str().unwrap(),
    ]);
    let what = format!("{cmd:?}");
    let ended = run(cmd, closed_pipe());
    assert!(
        !ended.stderr.contains("panicked"),
        "{what}:\n{}",
        ended.stderr
    );
    assert_eq!(ended.code, Some(0), "{what}:\n{}", ended.stderr);
    assert!(rec.exists(), "the recording is written before the report");
}
