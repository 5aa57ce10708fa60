//! Root integration tests of `vmap-trace daemon` on the running kernel: real probes, real load,
//! scraped over HTTP and parsed with a Prometheus text parser. Without root they print why
//! they did not run.
//!
//! The 5-minute soak is `cargo xtask bench soak` (docs/daemon.md); the memory test here is its
//! 20-second version, short enough for CI.
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Value};

mod common;
use common::{is_root, BIN};

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// A daemon process, its address once it serves, and its stderr lines.
struct Daemon {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["daemon", "--listen", "127.0.0.1:0", "--log-format", "plain"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start vmap-trace daemon");
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            addr: String::new(),
            lines,
            log: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match d.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                        d.addr = rest.trim_end_matches("/metrics").to_string();
                    }
                    d.log.push(line);
                }
                Err(_) => {
                    let status = d.child.try_wait().ok().flatten();
                    panic!(
                        "daemon did not start serving within 60 s (exit: {status:?}); log:\n{}",
                        d.log.join("\n")
                    );
                }
            }
        }
        d
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn scrape(&self) -> Vec<Sample> {
        let response = reqwest::blocking::Client::new()
            .get(format!("http://{}/metrics", self.addr))
            .timeout(Duration::from_secs(30))
            .send()
            .expect("scrape /metrics");
        assert_eq!(response.status(), 200);
        let text = response.text().unwrap();
        assert!(text.ends_with("# EOF\n"), "complete OpenMetrics exposition");
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("parses as Prometheus text")
            .samples
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, then wait for the exit; returns whether it exited 0, and the full log.
    fn terminate(self) -> (bool, Vec<String>) {
        self.stop_with(libc::SIGTERM)
    }

    /// Send `signal`, then wait for the exit; returns whether it exited 0, and the full log.
    fn stop_with(mut self, signal: i32) -> (bool, Vec<String>) {
        unsafe { libc::kill(self.pid(), signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon did not exit within 30 s of signal {signal}; log:\n{}",
                    self.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The reader thread ends at EOF; collect what it read.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        (status.success(), std::mem::take(&mut self.log))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only when a test failed before terminate(): do not leave probes attached.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scalar(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{metric} is not a scalar"),
        })
}

fn must(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    scalar(samples, metric, labels).unwrap_or_else(|| panic!("no {metric} {labels:?}"))
}

fn key(s: &Sample) -> String {
    let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{}{{{}}}", s.metric, labels.join(","))
}

/// Every histogram: bounds increase, counts are cumulative, +Inf equals _count.
fn assert_histograms_consistent(samples: &[Sample]) -> usize {
    let mut n = 0;
    for s in samples {
        let Value::Histogram(buckets) = &s.value else {
            continue;
        };
        n += 1;
        assert!(
            buckets.windows(2).all(|w| w[0].less_than < w[1].less_than),
            "{}: bounds not increasing",
            key(s)
        );
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "{}: buckets not cumulative",
            key(s)
        );
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite(), "{}: no +Inf bucket", key(s));
        let labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = must(samples, &format!("{}_count", s.metric), &labels);
        assert_eq!(inf.count, count, "{}: +Inf bucket != _count", key(s));
    }
    n
}

/// Counters, histogram buckets, _count and _sum of series present in both scrapes never go
/// down (every value is cumulative since the daemon attached).
fn assert_never_decrease(before: &[Sample], after: &[Sample]) {
    let scalars = |samples: &[Sample]| -> HashMap<String, f64> {
        samples
            .iter()
            .filter(|s| {
                s.metric.ends_with("_total")
                    || s.metric.ends_with("_count")
                    || s.metric.ends_with("_sum")
            })
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Untyped(v) => Some((key(s), v)),
                _ => None,
            })
            .collect()
    };
    let after_values = scalars(after);
    for (k, v) in scalars(before) {
        if let Some(&w) = after_values.get(&k) {
            assert!(w >= v, "{k} went down: {v} -> {w}");
        }
    }
}

fn stress(workload: &str, seconds: &str) -> u64 {
    let out = Command::new(BIN)
        .args(["stress", workload, "--duration", seconds, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stress failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["ops"].as_u64().unwrap()
}

fn rotated(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("vmap-trace-")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn daemon_metrics_follow_pty_stress_and_sigterm_writes_the_last_recording() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        "--record-dir",
        dir.path().to_str().unwrap(),
        "--record-every",
        "1",
        "--keep",
        "3",
    ]);

    let before = d.scrape();
    let pairs = stress("pty", "2");
    let after = d.scrape();

    let allocs = |s: &[Sample]| must(s, "vmap_trace_vmalloc_allocs_total", &[]);
    let grew = allocs(&after) - allocs(&before);
    // One pty pair is two n_tty_data vzallocs.
    assert!(
        grew >= pairs as f64 && grew > 1000.0,
        "allocs grew by {grew} during {pairs} pty pairs"
    );
    let frees = |s: &[Sample]| must(s, "vmap_trace_vmalloc_frees_total", &[]);
    assert!(
        frees(&after) - frees(&before) >= pairs as f64,
        "frees follow the closes"
    );
    assert!(
        must(&after, "vmap_trace_vmalloc_alloc_size_pages_count", &[])
            > must(&before, "vmap_trace_vmalloc_alloc_size_pages_count", &[])
    );
    assert_eq!(
        must(
            &after,
            "vmap_trace_hook_attached",
            &[("hook", "vmalloc:alloc_vmap_area")]
        ),
        1.0
    );
    assert_eq!(
        must(
            &after,
            "vmap_trace_hook_attached",
            &[("hook", "lock:contention_begin")]
        ),
        1.0
    );
    assert!(
        scalar(
            &after,
            "vmap_trace_lock_wait_seconds_count",
            &[("lock", "(other)")]
        )
        .is_some(),
        "aggregate lock series is always there"
    );
    assert!(must(&after, "vmap_trace_snapshots_total", &[]) >= 2.0);
    assert!(
        assert_histograms_consistent(&after) >= 2,
        "size histogram and at least the (other) lock histogram"
    );
    assert_histograms_consistent(&before);
    assert_never_decrease(&before, &after);
    assert!(
        after.iter().all(|s| !s.labels.contains_key("tid")),
        "no per-task labels by default"
    );

    std::thread::sleep(Duration::from_millis(1500));
    let periodic = rotated(dir.path());
    assert!(
        !periodic.is_empty() && periodic.len() <= 3,
        "rotation keeps at most 3: {periodic:?}"
    );

    let (clean, log) = d.terminate();
    assert!(clean, "SIGTERM exits 0; log:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| l.contains("received SIGTERM")),
        "{}",
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.contains("probes detached")),
        "{}",
        log.join("\n")
    );
    let files = rotated(dir.path());
    assert!(files.len() <= 3, "{files:?}");
    let last = files.last().expect("the last recording");
    assert!(
        log.iter()
            .any(|l| l.contains("wrote the last recording") && l.contains(last.to_str().unwrap())),
        "{}",
        log.join("\n")
    );
    let profile = vmap_trace::profile::recording::load(last).expect("the last recording loads");
    assert!(
        profile.ops.allocs as f64 >= allocs(&after),
        "the last recording holds everything scraped before it"
    );
}

#[test]
fn daemon_per_task_flag_adds_bounded_task_series() {
    require_root!();
    let d = Daemon::start(&["--per-task", "--top-locks", "2"]);
    stress("mix", "2");
    let samples = d.scrape();
    let tasks = samples
        .iter()
        .filter(|s| s.metric == "vmap_trace_task_lock_waits")
        .count();
    assert!((1..=10).contains(&tasks), "1..=10 task series, got {tasks}");
    let locks = samples
        .iter()
        .filter(|s| s.metric == "vmap_trace_lock_wait_seconds")
        .count();
    assert!(locks <= 3, "--top-locks 2 plus (other), got {locks}");
    let (clean, log) = d.terminate();
    assert!(clean, "{}", log.join("\n"));
}

/// CI-length version of the 5-minute soak (`cargo xtask bench soak`): under `stress mix`, the
/// daemon's memory stays flat and the kernel tables do not overflow.
#[test]
fn daemon_memory_stays_flat_and_tables_do_not_overflow_under_mix_stress() {
    require_root!();
    let d = Daemon::start(&[]);
    d.scrape();
    let load = Command::new(BIN)
        .args(["stress", "mix", "--duration", "20", "--quiet"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut load = Guard(load);
    let mut warm = None;
    let mut last = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_secs(1));
        last = d.scrape();
        // The first seconds fill the symbolizer cache and the allocator's arenas.
        if warm.is_none() && started.elapsed() >= Duration::from_secs(5) {
            warm = Some(d.rss_kib());
        }
    }
    let status = load.0.wait().unwrap();
    assert!(status.success());
    let (warm, end) = (warm.unwrap(), d.rss_kib());
    eprintln!("daemon RSS: {warm} KiB after 5 s, {end} KiB after 20 s of stress mix");
    // Gross leaks only: the daemon returns freed memory after each read, so RSS moves by a few
    // MiB either way, and it follows the kernel maps' fill (see docs/daemon.md).
    assert!(end <= warm + 8192, "RSS grew from {warm} KiB to {end} KiB");

    let lost = |reason| must(&last, "vmap_trace_lost_events_total", &[("reason", reason)]);
    for reason in [
        "inflight_full",
        "lock_map_full",
        "stack_capture_failed",
        "stack_keys_full",
        "calls_inflight_full",
    ] {
        assert_eq!(lost(reason), 0.0, "{reason}: events lost");
    }
    let (clean, log) = d.terminate();
    assert!(clean, "{}", log.join("\n"));
}

/// Kills the load generator if the test fails halfway.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The tests below fail, rather than pass, when not run as root.
fn must_be_root() {
    assert!(
        is_root(),
        "needs root (it attaches to the running kernel): run `sudo cargo xtask test`, or as \
         root `cargo test --release -p vmap-trace --test daemon_kernel -- --test-threads=1`"
    );
}

/// SIGHUP (terminal or ssh session closed), SIGINT and SIGTERM each stop the daemon cleanly:
/// exit 0, a log line naming the signal, and a last recording that loads and reports.
#[test]
fn daemon_sighup_sigint_and_sigterm_each_leave_a_complete_last_recording() {
    must_be_root();
    for (signal, name) in [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // No periodic recording within the test: the only file is the last one.
        let d = Daemon::start(&["--record-dir", dir.path().to_str().unwrap()]);
        stress("pty", "1");
        let scraped = must(&d.scrape(), "vmap_trace_vmalloc_allocs_total", &[]);
        let (clean, log) = d.stop_with(signal);
        let log = log.join("\n");
        assert!(clean, "{name}: exit 0; log:\n{log}");
        assert!(log.contains(&format!("received {name}")), "{log}");
        assert!(log.contains("probes detached"), "{log}");
        let files = rotated(dir.path());
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        assert!(log.contains(&format!("wrote the last recording {}", files[0].display())));
        let profile = vmap_trace::profile::recording::load(&files[0])
            .unwrap_or_else(|e| panic!("{name}: the last recording does not load: {e:#}"));
        assert!(
            profile.ops.allocs as f64 >= scraped,
            "{name}: holds what was scraped"
        );
        let report = common::run(
            Command::new(BIN)
                .args(["report", "--format", "json"])
                .arg(&files[0]),
        );
        let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
        assert_eq!(json["schema"], "vmap-trace-report/1", "{name}");
        assert_eq!(
            json["profile"]["ops"]["allocs"], profile.ops.allocs,
            "{name}"
        );
    }
}
