//! Root integration tests of `vmap-trace daemon` on the running kernel: real probes, real load,
//! scraped over HTTP and parsed with a Prometheus text parser. Without root they print why
//! they did not run.
//!
//! The 5-minute soak is `cargo xtask bench soak` (docs/daemon.md); the memory test here is its
//! 20-second version, short enough for CI.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
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
        Daemon::start_with(extra, None)
    }

    /// Started with RLIMIT_NOFILE set to `nofile` (soft and hard), as a unit's LimitNOFILE would.
    fn start_with(extra: &[&str], nofile: Option<u64>) -> Daemon {
        let mut cmd = Command::new(BIN);
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let r = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
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

/// Log lines that mean descriptors ran out or data was lost.
fn trouble(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| {
            [
                "Too many open files",
                "os error 24",
                "EMFILE",
                "cannot accept",
                "recording failed",
                "cannot read the kernel maps",
            ]
            .iter()
            .any(|bad| l.contains(bad))
        })
        .collect()
}

/// Raise this process's soft descriptor limit to its hard one; the abuse needs ~1200.
fn raise_own_nofile(needed: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    assert!(
        r.rlim_cur >= needed,
        "the test needs {needed} file descriptors, the hard limit is {}",
        r.rlim_max
    );
}

/// A connection of the abusing client, and when the daemon closed it.
struct Held {
    stream: TcpStream,
    opened: Instant,
    closed: Option<Duration>,
}

impl Held {
    fn open(addr: SocketAddr, first_bytes: &[u8]) -> Held {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("the daemon did not accept a connection: {e}"));
        let opened = Instant::now();
        stream.write_all(first_bytes).unwrap();
        stream.set_nonblocking(true).unwrap();
        Held {
            stream,
            opened,
            closed: None,
        }
    }

    /// Note when the daemon has closed it (EOF or reset); reads and drops any response.
    fn check(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        self.closed = Some(self.opened.elapsed());
    }

    /// Send one more byte of a header that never ends (slowloris).
    fn dribble(&mut self) {
        if self.closed.is_none() && self.stream.write_all(b"a").is_err() {
            self.closed = Some(self.opened.elapsed());
        }
    }
}

/// Sockets and all descriptors the process `pid` has open.
fn daemon_fds(pid: i32) -> (usize, usize) {
    let mut sockets = 0;
    let mut all = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        all += 1;
        if std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        {
            sockets += 1;
        }
    }
    (sockets, all)
}

/// Scrapes every 200 ms on a fresh connection until `until`; their latencies (each must
/// answer a complete exposition within 5 s) and the last body.
fn scrape_until(addr: String, until: Instant) -> (Vec<Duration>, String) {
    let mut latencies = Vec::new();
    let mut last = String::new();
    while Instant::now() < until {
        let started = Instant::now();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let response = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .unwrap_or_else(|e| panic!("scrape {} under abuse failed: {e}", latencies.len()));
        assert_eq!(response.status(), 200);
        last = response.text().expect("the whole exposition");
        assert!(last.ends_with("# EOF\n"), "complete exposition");
        latencies.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    (latencies, last)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What the abusing client holds: 1,100 idle connections, 20 slowloris ones and 30
/// unfinished requests, each replaced when the daemon closes it while `sweep` reopens.
struct Abuse {
    addr: SocketAddr,
    idle: Vec<Held>,
    slow: Vec<Held>,
    partial: Vec<Held>,
    /// Idle connections the daemon closed and the client replaced, and how long each lived.
    idle_cut: Vec<Duration>,
}

const IDLE_CONNECTIONS: usize = 1100;
const SLOWLORIS_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
/// A request line without its end, a head without its blank line, a body never sent.
const PARTIAL_REQUESTS: [&[u8]; 3] = [
    b"GET /metrics HTTP/1.1",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
    b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
];

impl Abuse {
    fn open(addr: SocketAddr) -> Abuse {
        let mut abuse = Abuse {
            addr,
            idle: (0..IDLE_CONNECTIONS)
                .map(|_| Held::open(addr, b""))
                .collect(),
            slow: Vec::new(),
            partial: Vec::new(),
            idle_cut: Vec::new(),
        };
        abuse.fresh_requests();
        abuse
    }

    /// New slowloris and unfinished requests, in place of the current ones (closed by us).
    fn fresh_requests(&mut self) {
        self.slow = (0..20)
            .map(|_| Held::open(self.addr, SLOWLORIS_HEAD))
            .collect();
        self.partial = (0..30)
            .map(|i| Held::open(self.addr, PARTIAL_REQUESTS[i % 3]))
            .collect();
    }

    /// Check every connection; with `reopen`, replace the closed slowloris and partial ones
    /// and up to `reopen` closed idle ones.
    fn sweep(&mut self, reopen: usize) {
        for held in self
            .idle
            .iter_mut()
            .chain(&mut self.slow)
            .chain(&mut self.partial)
        {
            held.check();
        }
        if reopen == 0 {
            return;
        }
        let addr = self.addr;
        for held in self
            .idle
            .iter_mut()
            .filter(|h| h.closed.is_some())
            .take(reopen)
        {
            self.idle_cut.extend(held.closed);
            *held = Held::open(addr, b"");
        }
        for held in self.slow.iter_mut().filter(|h| h.closed.is_some()) {
            *held = Held::open(addr, SLOWLORIS_HEAD);
        }
        for (i, held) in self.partial.iter_mut().enumerate() {
            if held.closed.is_some() {
                *held = Held::open(addr, PARTIAL_REQUESTS[i % 3]);
            }
        }
    }

    fn dribble(&mut self) {
        for held in &mut self.slow {
            held.dribble();
        }
    }

    fn all_closed(&self) -> bool {
        self.idle
            .iter()
            .chain(&self.slow)
            .chain(&self.partial)
            .all(|h| h.closed.is_some())
    }
}

/// The connection cap the daemon announced at start.
fn announced_cap(log: &[String]) -> usize {
    log.iter()
        .find_map(|l| l.split("at most ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no connection cap in the log:\n{}", log.join("\n")))
}

/// Peaks of the daemon's descriptors.
#[derive(Default)]
struct Peaks {
    sockets: usize,
    fds: usize,
}

impl Peaks {
    fn sample(&mut self, pid: i32) {
        let (sockets, fds) = daemon_fds(pid);
        self.sockets = self.sockets.max(sockets);
        self.fds = self.fds.max(fds);
    }
}

/// Sweep every 100 ms (dribbling slowloris bytes every 300 ms) until `until`, or until every
/// connection is closed if not reopening.
fn abuse_until(abuse: &mut Abuse, until: Instant, reopen: usize, pid: i32, peaks: &mut Peaks) {
    let mut last_dribble = Instant::now();
    while Instant::now() < until && !(reopen == 0 && abuse.all_closed()) {
        abuse.sweep(reopen);
        if last_dribble.elapsed() >= Duration::from_millis(300) {
            abuse.dribble();
            last_dribble = Instant::now();
        }
        peaks.sample(pid);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon with the shipped unit's 1024 descriptors, under 1,100 idle connections,
/// slowloris clients and unfinished requests, all replaced as the daemon closes them for 10 s:
/// scrapes keep answering within 5 s, recordings keep being written, the daemon holds no more
/// sockets than its cap. Then fresh slowloris and unfinished requests, no longer replaced,
/// are cut by the header timeout and the idle connections left by the idle timeout.
/// Loopback only; bounded in count and time.
#[test]
fn daemon_under_abuse_keeps_answering_scrapes_and_writing_recordings() {
    must_be_root();
    raise_own_nofile(4096);
    let (header_timeout, idle_timeout) = (Duration::from_secs(2), Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    #[rustfmt::skip]
    let d = Daemon::start_with(&[
        "--record-dir", dir.path().to_str().unwrap(), "--record-every", "1", "--keep", "1000",
        "--header-timeout", "2", "--idle-timeout", "5",
    ], Some(1024));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    assert!(
        limits.lines().any(|l| l.starts_with("Max open files")
            && l.split_whitespace().skip(3).take(2).eq(["1024", "1024"])),
        "{limits}"
    );
    let cap = announced_cap(&d.log);
    let addr: SocketAddr = d.addr.parse().unwrap();
    let recordings_before = rotated(dir.path()).len();

    let sustain = Duration::from_secs(10);
    let started = Instant::now();
    let scraper = {
        let addr = d.addr.clone();
        std::thread::spawn(move || scrape_until(addr, started + sustain))
    };
    let mut peaks = Peaks::default();
    let mut abuse = Abuse::open(addr);
    let opened_in = started.elapsed();
    abuse_until(&mut abuse, started + sustain, 100, d.pid(), &mut peaks);
    let (mut latencies, last) = scraper.join().expect("every scrape answered in time");
    let recordings = rotated(dir.path()).len() - recordings_before;

    // Nothing replaced any more: the timeouts must close what is left.
    abuse.fresh_requests();
    let timeouts_from = Instant::now();
    let deadline = timeouts_from + idle_timeout + Duration::from_secs(5);
    abuse_until(&mut abuse, deadline, 0, d.pid(), &mut peaks);
    let drained_in = timeouts_from.elapsed();

    latencies.sort();
    let mut cut = abuse.idle_cut.clone();
    cut.extend(abuse.idle.iter().filter_map(|h| h.closed));
    cut.sort();
    let lives = |held: &[Held]| {
        let mut lives: Vec<Duration> = held.iter().filter_map(|h| h.closed).collect();
        lives.sort();
        lives
    };
    let (slow, partial) = (lives(&abuse.slow), lives(&abuse.partial));
    eprintln!(
        "abuse: {IDLE_CONNECTIONS} idle + 20 slowloris + 30 partial connections opened in \
         {:.0} ms; {} idle connections closed in all, replaced by the client for {} s; cap \
         {cap}; the daemon held at most {} sockets ({} fds of 1024)\n\
         scrapes: {} answered, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
         idle connections cut after: p50 {:.2} s, max {:.2} s ({} within 1 s: made room at \
         the cap)\nafterwards, slowloris cut after {:.2} to {:.2} s, partial requests after \
         {:.2} to {:.2} s; everything closed {:.1} s after the replacing stopped\n\
         recordings written meanwhile: {recordings}",
        ms(opened_in),
        cut.len(),
        sustain.as_secs(),
        peaks.sockets,
        peaks.fds,
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        percentile(&cut, 0.5).as_secs_f64(),
        cut.last().unwrap().as_secs_f64(),
        cut.iter().filter(|c| **c < Duration::from_secs(1)).count(),
        slow.first().unwrap_or(&Duration::ZERO).as_secs_f64(),
        slow.last().unwrap_or(&Duration::ZERO).as_secs_f64(),
        partial.first().unwrap_or(&Duration::ZERO).as_secs_f64(),
        partial.last().unwrap_or(&Duration::ZERO).as_secs_f64(),
        drained_in.as_secs_f64(),
    );

    assert!(
        abuse.all_closed(),
        "some abusive connections were never closed"
    );
    assert!(latencies.len() >= 20, "{} scrapes", latencies.len());
    assert!(latencies.last().unwrap() < &Duration::from_secs(5));
    assert!(
        peaks.sockets <= cap + 1 + 8,
        "{} sockets open, cap {cap} (+ the listener)",
        peaks.sockets
    );
    assert!(
        *cut.last().unwrap() <= idle_timeout + Duration::from_secs(2),
        "an idle connection lived {:?}",
        cut.last()
    );
    // Slowloris clients and unfinished heads live until the header timeout, not less (they
    // were not made room for) and not much more.
    let by_header_timeout =
        header_timeout - Duration::from_millis(100)..=header_timeout + Duration::from_secs(2);
    assert!(
        slow.iter().all(|l| by_header_timeout.contains(l)),
        "slowloris lives {slow:?}"
    );
    let heads: Vec<Duration> = (abuse.partial.iter().enumerate())
        .filter(|(i, _)| i % 3 != 2)
        .filter_map(|(_, h)| h.closed)
        .collect();
    assert!(
        heads.iter().all(|l| by_header_timeout.contains(l)),
        "unfinished heads lived {heads:?}"
    );
    assert!(
        partial.last().unwrap() <= by_header_timeout.end(),
        "partial requests lived {partial:?}"
    );
    assert!(recordings >= 5, "{recordings} recordings in {sustain:?}");
    let samples = prometheus_parse::Scrape::parse(last.lines().map(|l| Ok(l.to_string())))
        .unwrap()
        .samples;
    assert_eq!(
        must(&samples, "vmap_trace_recording_failures_total", &[]),
        0.0
    );
    assert!(must(&samples, "vmap_trace_recordings_written_total", &[]) >= 5.0);

    let (clean, log) = d.terminate();
    assert!(clean, "{}", log.join("\n"));
    assert!(trouble(&log).is_empty(), "{:?}", trouble(&log));
    assert!(
        log.iter()
            .any(|l| l.contains("closing the oldest idle ones")),
        "the cap was reached and said so:\n{}",
        log.join("\n")
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

/// The BPF program and link ids behind the descriptors of process `pid` (its fdinfo).
fn bpf_ids_of(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let (mut progs, mut links) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in info.lines() {
            let field = |name: &str| {
                line.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<u32>().ok())
            };
            progs.extend(field("prog_id:"));
            links.extend(field("link_id:"));
        }
    }
    progs.sort();
    progs.dedup();
    (progs, links)
}

/// Ids the kernel lists now: `bpftool -j prog show` or `link show`.
fn bpftool_ids(object: &str) -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["-j", object, "show"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run bpftool ({e}): install it with `cargo xtask setup` (Debian package bpftool)")
        });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    listed
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .map(|id| id as u32)
        .collect()
}

/// SIGKILL gives the daemon no chance to clean up; the kernel must: once the process is gone,
/// none of its programs or links remains (they were held by its descriptors only).
#[test]
fn daemon_sigkill_leaves_no_program_or_link_attached() {
    must_be_root();
    let mut d = Daemon::start(&[]);
    let (progs, links) = bpf_ids_of(d.pid());
    assert!(
        !progs.is_empty() && !links.is_empty(),
        "{progs:?} {links:?}"
    );
    let in_kernel = |ids: &[u32], object| {
        let listed = bpftool_ids(object);
        ids.iter()
            .copied()
            .filter(|id| listed.contains(id))
            .collect::<Vec<_>>()
    };
    // bpftool sees them while the daemon lives, so their absence later means something.
    assert_eq!(in_kernel(&progs, "prog"), progs);
    assert_eq!(in_kernel(&links, "link"), links);

    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let remaining = loop {
        let remaining = (in_kernel(&progs, "prog"), in_kernel(&links, "link"));
        if (remaining.0.is_empty() && remaining.1.is_empty()) || Instant::now() > deadline {
            break remaining;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        remaining,
        (vec![], vec![]),
        "programs and links of the killed daemon still in the kernel 10 s later"
    );
}
