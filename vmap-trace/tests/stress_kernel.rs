//! The library API (`stress::run_workload`) on the running kernel: each workload, counted
//! independently with a perf counter on the vmalloc:alloc_vmap_area tracepoint, allocates vmap
//! areas; a stop request ends a run early without leaking children or fds.
//!
//! Root-only tests print "skipped: ..." and pass when they cannot run.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmap_trace::stress::{run_workload, StressConfig, WorkloadKind};

mod common;
use common::is_root;

/// The tests share process-wide state (children, fd table) and system-wide counters: run them
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER0 (64 bytes), which every kernel accepts.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// A system-wide count of one tracepoint: one counting perf event per online CPU.
struct TracepointCounter {
    per_cpu: Vec<OwnedFd>,
}

impl TracepointCounter {
    fn open(system: &str, event: &str) -> Result<Self, String> {
        let id_path = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .map(|t| format!("{t}/events/{system}/{event}/id"))
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| format!("no {system}:{event} tracepoint in tracefs"))?;
        let id: u64 = std::fs::read_to_string(&id_path)
            .map_err(|e| format!("{id_path}: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("{id_path}: {e}"))?;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_TRACEPOINT,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: id,
            ..Default::default()
        };
        // SAFETY: sysconf cannot fail for this name.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
        let mut per_cpu = Vec::new();
        for cpu in 0..cpus as libc::c_int {
            // SAFETY: valid attr; pid -1 + cpu N counts every task on that CPU.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr as *const PerfEventAttr,
                    -1 as libc::c_int,
                    cpu,
                    -1 as libc::c_int,
                    PERF_FLAG_FD_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(format!(
                    "perf_event_open({system}:{event}, cpu {cpu}): {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: a new descriptor we own.
            per_cpu.push(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
        }
        Ok(TracepointCounter { per_cpu })
    }

    fn read(&self) -> u64 {
        self.per_cpu
            .iter()
            .map(|fd| {
                let mut count = 0u64;
                // SAFETY: reading the 8-byte counter value into a u64.
                let n = unsafe { libc::read(fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
                assert_eq!(
                    n,
                    8,
                    "reading a perf counter: {}",
                    std::io::Error::last_os_error()
                );
                count
            })
            .sum()
    }
}

/// Run `kind` in-process for `duration` and return (ops, alloc_vmap_area events).
fn run_counted(kind: WorkloadKind, duration: Duration) -> Option<(u64, u64)> {
    if !is_root() {
        println!("skipped: needs root");
        return None;
    }
    let counter = match TracepointCounter::open("vmalloc", "alloc_vmap_area") {
        Ok(counter) => counter,
        Err(reason) => {
            println!("skipped: {reason}");
            return None;
        }
    };
    let config = StressConfig::new(duration);
    let stop = AtomicBool::new(false);
    let before = counter.read();
    let result =
        run_workload(kind, &config, &stop).unwrap_or_else(|e| panic!("stress {kind}: {e:#}"));
    let allocs = counter.read() - before;
    println!(
        "stress {kind} in-process: {} ops, {allocs} alloc_vmap_area, {:.0} ops/s",
        result.ops, result.ops_per_sec
    );
    assert!(result.ops > 0, "stress {kind}: no ops: {result:?}");
    assert!(!result.stopped_early);
    assert!(
        result.elapsed >= duration && result.elapsed < duration + Duration::from_secs(2),
        "{:?}",
        result.elapsed
    );
    Some((result.ops, allocs))
}

fn assert_allocs_per_op(kind: WorkloadKind, min_per_op: f64) {
    let _serial = serial();
    let Some((ops, allocs)) = run_counted(kind, Duration::from_millis(500)) else {
        return;
    };
    let per_op = allocs as f64 / ops as f64;
    assert!(
        per_op >= min_per_op,
        "stress {kind}: {allocs} allocs for {ops} ops = {per_op:.2}/op, expected >= {min_per_op}"
    );
}

#[test]
fn stress_pty_in_process_allocates_vmap_areas() {
    assert_allocs_per_op(WorkloadKind::Pty, 1.5);
}

#[test]
fn stress_bpfmap_in_process_allocates_vmap_areas() {
    assert_allocs_per_op(WorkloadKind::Bpfmap, 1.5);
}

#[test]
fn stress_threads_in_process_allocates_vmap_areas() {
    assert_allocs_per_op(WorkloadKind::Threads, 0.6);
}

#[test]
fn stress_fork_in_process_allocates_vmap_areas() {
    assert_allocs_per_op(WorkloadKind::Fork, 0.6);
}

#[test]
fn stress_mix_in_process_runs_every_workload() {
    let _serial = serial();
    if !is_root() {
        println!("skipped: needs root");
        return;
    }
    let config = StressConfig::new(Duration::from_millis(500));
    let result =
        run_workload(WorkloadKind::Mix, &config, &AtomicBool::new(false)).expect("stress mix");
    assert_eq!(result.per_kind.len(), 4);
    for kind in WorkloadKind::BASIC {
        let entry = result
            .kind(kind)
            .unwrap_or_else(|| panic!("no {kind} in {result:?}"));
        assert!(entry.ops > 0 && entry.drivers >= 1, "{entry:?}");
    }
    assert_eq!(
        result.ops,
        result.per_kind.iter().map(|k| k.ops).sum::<u64>()
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of this process that belong to a stress run (drivers are named "stress-<kind>-<n>";
/// the short-lived workload threads inherit their driver's name).
fn stress_threads_alive() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return vec![];
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| comm.starts_with("stress-"))
        .collect()
}

/// A stop request ends a long run promptly, and leaves no children, threads or fds behind.
#[test]
fn stress_stop_request_ends_run_cleanly() {
    let _serial = serial();
    if !is_root() {
        println!("skipped: needs root (mix includes bpfmap)");
        return;
    }
    let fds_before = open_fds();
    let stop = AtomicBool::new(false);
    let config = StressConfig::new(Duration::from_secs(60));
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let stopper = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        });
        let result = run_workload(WorkloadKind::Mix, &config, &stop);
        stopper.join().unwrap();
        result
    })
    .expect("stress mix");
    assert!(result.stopped_early);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(result.ops > 0);

    // No child left, not even a zombie: waitpid finds no children at all.
    // SAFETY: non-blocking wait for any child.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(r, -1, "a child of the stress run was left behind (pid {r})");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ECHILD)
    );
    assert_eq!(open_fds(), fds_before, "fds leaked");
    assert_eq!(
        stress_threads_alive(),
        Vec::<String>::new(),
        "stress threads left running"
    );
}
