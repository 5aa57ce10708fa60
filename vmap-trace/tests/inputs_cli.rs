//! Every file the CLI reads (recordings, model workloads, parameters, measured workloads, the
//! published figures) is refused, promptly and with a clear error, when it is a FIFO, a device,
//! a directory or too large: before, a FIFO blocked `open` forever and `/dev/zero` was read
//! until memory ran out. No root needed.
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vmap_trace::profile::{recording, Profile};

const BIN: &str = env!("CARGO_BIN_EXE_vmap-trace");
/// A refusal is immediate; this only bounds a run that would block or read forever.
const TIME_BOUND: Duration = Duration::from_secs(20);

struct Run {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Run the binary with a deadline (killed past it) and an address-space cap, so that a
/// regression that reads a device forever fails the test instead of exhausting the machine.
fn vmap_trace(dir: &Path, args: &[&str]) -> Run {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let err_path = dir.join(format!("stderr-{}", RUNS.fetch_add(1, Ordering::Relaxed)));
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            libc::setrlimit(libc::RLIMIT_AS, &cap);
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIME_BOUND {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.and_then(|s| s.code()),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
        took: started.elapsed(),
    }
}

/// The run ended on its own, failed with exit code 1, and said `message`.
fn refused(run: &Run, message: &str) {
    assert!(
        run.took < TIME_BOUND,
        "still running after {TIME_BOUND:?} (killed); stderr: {}",
        run.stderr
    );
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains(message),
        "expected {message:?} in: {}",
        run.stderr
    );
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A small valid recording, for the side of a two-recording command that is not under test.
fn valid_recording(dir: &Path) -> PathBuf {
    let profile: Profile = serde_json::from_value(serde_json::json!({
        "meta": {
            "tool_version": "0.1.0", "kernel_release": "6.1.0-test", "hostname": "h",
            "design": "legacy", "cpus": 2, "started_unix_s": 1_700_000_000u64,
            "duration_ns": 2_000_000_000u64, "hooks": [], "lock_names_available": true,
            "stacks_symbolized": true, "notes": []
        },
        "ops": {
            "allocs": 100, "allocs_failed": 0, "frees": 100, "purges": 1, "purged_areas": 10,
            "alloc_pages": 100, "size_pages": {"buckets": [100]}, "allocs_per_cpu": [50, 50],
            "lazy_pages_last": 0, "lazy_pages_max": 0, "lazy_pages_peak": 0
        },
        "locks": [], "stacks": [], "cpus": [], "tasks": [],
        "losses": {
            "inflight_full": 0, "lock_map_full": 0, "stack_capture_failed": 0,
            "stack_keys_full": 0, "tasks_evicted": 0
        }
    }))
    .unwrap();
    let path = dir.join("valid.rec");
    recording::save(&profile, &path).unwrap();
    path
}

fn fifo_message(path: &Path, what: &str) -> String {
    format!(
        "{} is a FIFO: vmap-trace reads {what} from regular files",
        path.display()
    )
}

#[test]
fn recording_inputs_refuse_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("rec.fifo");
    mkfifo(&fifo);
    let valid = valid_recording(d);
    let (f, v) = (fifo.to_str().unwrap(), valid.to_str().unwrap());
    let svg = d.join("out.svg");
    let svg = svg.to_str().unwrap();
    let msg = fifo_message(&fifo, "recordings");
    for args in [
        vec!["report", f],
        vec!["report", f, "--format", "json"],
        vec!["report", "--compare", f, v],
        vec!["report", "--compare", v, f],
        vec!["flamegraph", f, "-o", svg],
        vec!["diff", f, v, "-o", svg],
        vec!["diff", v, f, "-o", svg],
        vec!["model", "--from", f, "--cpus", "2", "--duration-ms", "1"],
    ] {
        let run = vmap_trace(d, &args);
        refused(&run, &msg);
    }
}

#[test]
fn model_inputs_refuse_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("input.fifo");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    let msg = fifo_message(&fifo, "model inputs");
    for args in [
        vec![
            "model",
            "--workload",
            f,
            "--cpus",
            "2",
            "--duration-ms",
            "1",
        ],
        vec!["model", "--params", f, "--cpus", "2", "--duration-ms", "1"],
        vec!["model", "--from-measured", f, "--cpus", "2"],
        vec!["model", "validate", "--published", f],
    ] {
        refused(&vmap_trace(d, &args), &msg);
    }
}

#[test]
fn devices_directories_and_oversized_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A link stands for any path that leads to a device (the system's /dev is not touched).
    let zero = d.join("zero.rec");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let z = zero.to_str().unwrap();
    let device = |what| {
        format!(
            "{} is a character device: vmap-trace reads {what} from regular files",
            zero.display()
        )
    };
    refused(&vmap_trace(d, &["report", z]), &device("recordings"));
    refused(
        &vmap_trace(d, &["model", "--workload", z, "--duration-ms", "1"]),
        &device("model inputs"),
    );
    let sub = d.join("sub.rec");
    std::fs::create_dir(&sub).unwrap();
    refused(
        &vmap_trace(d, &["report", sub.to_str().unwrap()]),
        &format!(
            "{} is a directory: vmap-trace reads recordings from regular files",
            sub.display()
        ),
    );
    // Sparse: as large as the limit says, without writing a GiB.
    let big = d.join("big.rec");
    File::create(&big)
        .unwrap()
        .set_len(vmap_trace::input::RECORDING_LIMIT + 1)
        .unwrap();
    refused(
        &vmap_trace(d, &["report", big.to_str().unwrap()]),
        "big.rec is larger than 1073741824 bytes, the most vmap-trace reads for recordings",
    );
    let toml = d.join("big.toml");
    File::create(&toml)
        .unwrap()
        .set_len(vmap_trace::input::TEXT_LIMIT + 1)
        .unwrap();
    refused(
        &vmap_trace(d, &["model", "--params", toml.to_str().unwrap()]),
        "big.toml is larger than 16777216 bytes, the most vmap-trace reads for model inputs",
    );
}
