//! `cargo xtask bench <which>`: what tracing costs, whether the daemon stays bounded, and the
//! criterion benches of the model and the flamegraph renderer.
//!
//! * `overhead`: each stress workload with nothing attached, under `vmap-trace record`, under
//!   `vmap-trace daemon`, under `perf lock record -a`, under an equivalent bpftrace script and
//!   under bpftrace with empty actions on the same tracepoints (the floor). Each run measures
//!   the workload's CPU time per op (the stress process tree's user + system time, which is
//!   where tracepoint programs run) and its throughput. Runs are interleaved (untraced, tracer,
//!   untraced, tracer, ...), the tracer order rotates every round, and each tracer run is
//!   compared with the mean of the untraced runs on either side, so drifts of the machine
//!   cancel out. Then the cost per event: CPU ns added per tracepoint hit (hit counts from
//!   vmap-trace's own recording), and the kernel's accounting of each program's run time
//!   (`kernel.bpf_stats_enabled`) against an empty program.
//! * `toggle`: the tracing programs switched on and off every quarter second within one stress
//!   run, each traced window compared with the untraced ones beside it (`crate::toggle`): the
//!   measurement that resolves 1% here, where separate runs drift by more.
//! * `soak`: `vmap-trace daemon` under `stress mix` for 5 minutes, scraped every 10 s like
//!   Prometheus would: RSS over time, lost events, kernel map fill. Fails if RSS grows or
//!   anything is lost.
//! * `model`, `flamegraph`: `cargo bench -p vmap-trace --bench <which>`.
//!
//! Everything needs root except the criterion benches. Results go to stdout as Markdown,
//! ready for docs/performance.md and docs/daemon.md.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::ebpf::workspace_root;
use crate::setup::run_checked;

/// Benchmarks, reported as ratios measured in one run (see docs/performance.md).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark: `overhead` (tracing cost on the stress workloads, separate runs
    /// interleaved), `toggle` (tracing switched on and off every window within one run: the
    /// precise figure), `soak` (daemon memory and losses under `stress mix`), `model` and
    /// `flamegraph` (criterion), or `all` (overhead, toggle, model, flamegraph; the soak takes
    /// 5 minutes, run it on its own).
    #[arg(default_value = "all", value_parser = ["overhead", "toggle", "soak", "model", "flamegraph", "all"])]
    pub which: String,
    /// overhead, toggle: stress workloads to measure.
    #[arg(long, value_delimiter = ',', default_value = "pty,mix", value_parser = ["pty", "threads", "fork", "bpfmap", "mix"])]
    pub workloads: Vec<String>,
    /// overhead: tracers to compare with the untraced runs; `control` is one more untraced
    /// run compared like a tracer (an A/A test: the noise floor of the machine).
    #[arg(long, value_delimiter = ',', default_value = "control,record,daemon,perf-lock,bpftrace,bpftrace-empty",
          value_parser = ["control", "record", "daemon", "perf-lock", "bpftrace", "bpftrace-empty"])]
    pub tracers: Vec<String>,
    /// overhead: seconds of stress per run.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub seconds: u32,
    /// overhead: rounds of the interleaved sequence.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// toggle: seconds of stress per workload; each variant is attached in one window of
    /// every 2 x (variants + 1).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(10..=86_400))]
    pub toggle_seconds: u32,
    /// toggle: milliseconds per window (the programs switch between windows).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(50..=60_000))]
    pub window_ms: u32,
    /// toggle: what is switched on in turn: `default` (what record and daemon attach),
    /// `sampled` (with --sample-unlocated), `empty` (programs that return at once: the
    /// hooks' dispatch floor), `kprobe` (`default` with --prefer-kprobe), `sampled-contention`
    /// and `sampled-vmalloc` (`sampled` on one family of tracepoints), `vmap-only` (`sampled`
    /// with other locks' contentions never timed: the cheapest set that still gives every
    /// metric the daemon must export), `sampled-stacks10` (`sampled` with 10 stack captures per
    /// CPU and second instead of the default 100: what stack capture costs).
    #[arg(long, value_delimiter = ',', default_value = "default,sampled,empty",
          value_parser = ["default", "sampled", "empty", "kprobe", "sampled-contention", "sampled-vmalloc", "vmap-only", "sampled-stacks10"])]
    pub variants: Vec<String>,
    /// toggle: report on the windows an earlier run saved (target/bench-toggle-<workload>.jsonl)
    /// instead of running; needs no root.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// toggle: milliseconds at the start of each window that are not measured (the switch
    /// and its after-effects).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub settle_ms: u32,
    /// soak: seconds of `stress mix` under the daemon.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub soak_seconds: u64,
    /// overhead, toggle, soak: use target/release/vmap-trace (toggle: its `tracing_toggle`
    /// example) as it is instead of building it first.
    #[arg(long)]
    pub no_build: bool,
    /// overhead: run `record` and `daemon` with `--sample-unlocated`, i.e. with other locks'
    /// contentions sampled as on kernels whose vmap locks can be located (Debian's), on a
    /// kernel whose kallsyms has no data symbols (where the default times every one).
    #[arg(long)]
    pub sample_unlocated: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.which.as_str() {
        "overhead" => overhead(&args),
        "toggle" => crate::toggle::toggle(&args),
        "soak" => soak(args.soak_seconds, !args.no_build),
        "model" | "flamegraph" => criterion(&args.which),
        "all" => {
            overhead(&args)?;
            crate::toggle::toggle(&args)?;
            criterion("model")?;
            criterion("flamegraph")
        }
        other => bail!("unknown benchmark {other}"),
    }
}

fn criterion(bench: &str) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(Command::new(cargo).current_dir(workspace_root()).args([
        "bench",
        "-p",
        "vmap-trace",
        "--bench",
        bench,
    ]))
}

// ------------------------------------------------------------------------------ common

fn release_binary(build: bool) -> Result<PathBuf> {
    release_artifact("vmap-trace", &[], build)
}

/// `target/release/<artifact>` of the vmap-trace package, built first (`cargo build --release
/// -p vmap-trace <extra>`) unless `build` is false.
pub fn release_artifact(artifact: &str, extra: &[&str], build: bool) -> Result<PathBuf> {
    let bin = workspace_root().join("target/release").join(artifact);
    if build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run_checked(
            Command::new(cargo)
                .current_dir(workspace_root())
                .args(["build", "--release", "--locked", "-p", "vmap-trace"])
                .args(extra),
        )?;
    } else if !bin.exists() {
        bail!(
            "{} does not exist: build it, or drop --no-build",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn require_root(what: &str) -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!("{what} needs root (it attaches eBPF programs and perf/bpftrace)");
    }
    Ok(())
}

fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run `cmd`, fail with its stderr unless it succeeds, return stdout.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn stress_args(bin: &Path, workload: &str, seconds: u32) -> Vec<String> {
    vec![
        bin.display().to_string(),
        "stress".into(),
        workload.into(),
        "--duration".into(),
        seconds.to_string(),
        "--json".into(),
    ]
}

/// `stress --json` result.
#[derive(Debug, Clone, Copy)]
struct StressResult {
    ops: u64,
    ops_per_sec: f64,
}

fn parse_stress(stdout: &str) -> Result<StressResult> {
    // Tracers may print before the child's JSON; it is the last JSON object on stdout.
    let start = stdout
        .find("{\n")
        .ok_or_else(|| anyhow!("no stress JSON in: {stdout}"))?;
    let v: Value = serde_json::from_str(stdout[start..].trim()).context("stress --json output")?;
    let ops = v["ops"]
        .as_u64()
        .ok_or_else(|| anyhow!("stress JSON has no ops"))?;
    let ops_per_sec = v["ops_per_sec"]
        .as_f64()
        .ok_or_else(|| anyhow!("stress JSON has no ops_per_sec"))?;
    if v["failed_ops"].as_u64().unwrap_or(0) > ops / 100 {
        eprintln!("bench: warning: more than 1% of the stress ops failed (resource limits?)");
    }
    Ok(StressResult { ops, ops_per_sec })
}

/// Send SIGTERM to a process this bench started.
fn terminate(child: &Child) -> Result<()> {
    run_quiet(Command::new("kill").args(["-TERM", &child.id().to_string()]))
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn wait_exit(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "process {} did not exit within {} s",
                child.id(),
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `vmap-trace daemon`.
struct Daemon {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(bin: &Path, extra: &[&str]) -> Result<Daemon> {
        let mut child = Command::new(bin)
            .args(["daemon", "--listen", "127.0.0.1:0", "--log-format", "plain"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start vmap-trace daemon")?;
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                        let addr = rest.trim_end_matches("/metrics").to_string();
                        return Ok(Daemon { child, addr, log });
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "the daemon did not start serving; its log:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    fn metrics(&self) -> Result<String> {
        http_get(&self.addr, "/metrics")
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS for the daemon"))
    }

    /// SIGTERM; returns the exit status and the remaining log lines.
    fn stop(mut self) -> Result<(std::process::ExitStatus, Vec<String>)> {
        terminate(&self.child)?;
        let status = wait_exit(&mut self.child, Duration::from_secs(60))?;
        let lines = self.log.try_iter().collect();
        Ok((status, lines))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only reached on an error path before stop(): never leave probes attached.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Minimal HTTP/1.0 GET (xtask has no HTTP client; the daemon speaks plain HTTP).
fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut stream =
        TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Sum of the samples of `metric` (exact name) whose label set contains `label` if given.
fn metric_sum(text: &str, metric: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            (name == metric && label.is_none_or(|want| series.contains(want)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// BPF programs held by processes other than `ours` (other tracers distort the baseline).
fn foreign_bpf_programs(ours: &[u32]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.filter_map(|e| e.ok()) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || ours.contains(&pid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let progs = fds
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog")
            })
            .count();
        if progs > 0 {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            found.push(format!("pid {pid} ({}): {progs} programs", comm.trim()));
        }
    }
    found
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// (median, min, max).
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    let m = median(&mut v);
    (
        m,
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

/// The median of some runs with a distribution-free confidence interval: the order statistics
/// `x(k) ..= x(n+1-k)` cover the true median with probability `1 - 2 P(Bin(n, 1/2) < k)`,
/// whatever the distribution of the runs. The narrowest such interval of at least 95%, or
/// min .. max when there are too few runs for 95% (under six).
#[derive(Clone, Copy, Debug, PartialEq)]
struct MedianInterval {
    median: f64,
    low: f64,
    high: f64,
    coverage: f64,
    runs: usize,
}

impl MedianInterval {
    fn of(values: &[f64]) -> Option<Self> {
        let mut v = values.to_vec();
        let median = median(&mut v);
        let n = v.len();
        if n == 0 {
            return None;
        }
        let binomial = |i: usize| -> f64 {
            let mut c = 1.0f64;
            for j in 0..i {
                c *= (n - j) as f64 / (j + 1) as f64;
            }
            c / 2f64.powi(n as i32)
        };
        // below = P(Bin(n, 1/2) < k); widen k while the interval keeps 95%.
        let (mut k, mut below) = (1, binomial(0));
        while k < n.div_ceil(2) {
            let next = below + binomial(k);
            if 1.0 - 2.0 * next < 0.95 {
                break;
            }
            below = next;
            k += 1;
        }
        Some(MedianInterval {
            median,
            low: v[k - 1],
            high: v[n - k],
            coverage: 1.0 - 2.0 * below,
            runs: n,
        })
    }

    /// Ratios to the untraced runs as percent changes, e.g. "+0.52% (96% interval -0.10% ..
    /// +1.20%, 15 rounds)".
    fn ratio_text(&self) -> String {
        let pct = |r: f64| (r - 1.0) * 100.0;
        format!(
            "{:+.2}% ({:.0}% interval {:+.2}% .. {:+.2}%, {} rounds)",
            pct(self.median),
            self.coverage * 100.0,
            pct(self.low),
            pct(self.high),
            self.runs
        )
    }
}

pub fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string());
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    format!(
        "{} CPUs ({}), kernel {}, {}",
        cpus,
        model.unwrap_or_else(|| "unknown CPU".into()),
        kernel.trim(),
        date.trim()
    )
}

/// `sh` wrapper: runs the command, then writes the CPU time (in clock ticks, user and system)
/// of everything it waited for to a file: the command, its threads, and every descendant the
/// command reaped itself (the fork workload's children). A shared machine's other load changes
/// wall-clock throughput a lot; it hardly changes the CPU the workload needs per op.
/// Runs the stress command and writes two lines to `$1`: the process tree's user and system
/// ticks, then every CPU's busy ticks during the run (/proc/stat: user, nice, system, irq,
/// softirq, steal), which also counts work the run causes outside its tree (kworkers, a
/// tracer's own process) and, on a shared machine, everyone else's.
const CPU_WRAPPER: &str = r#"out=$1; shift
busy() { read -r _ u n s i w q sq st _ < /proc/stat; echo $((u + n + s + q + sq + st)); }
b0=$(busy)
"$@"; rc=$?
b1=$(busy)
read -r stat < /proc/$$/stat
set -- $stat
echo "${16} ${17}" > "$out"
echo "$((b1 - b0))" >> "$out"
exit $rc
"#;

fn clock_ticks_per_second() -> f64 {
    output(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds written by `CPU_WRAPPER`: the process tree's, and all CPUs' busy time.
fn read_cpu_file(path: &Path, ticks: f64) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("no CPU time in {}", path.display()))?;
    let mut lines = text.lines();
    let mut sum = |what: &str| -> Result<f64> {
        let line = lines
            .next()
            .with_context(|| format!("no {what} CPU time in {}", path.display()))?;
        let ticks_sum: f64 = line
            .split_whitespace()
            .map(|t| t.parse::<f64>())
            .sum::<Result<f64, _>>()
            .with_context(|| format!("bad {what} CPU time {line:?} in {}", path.display()))?;
        Ok(ticks_sum / ticks)
    };
    Ok((sum("process")?, sum("system-wide")?))
}

/// user + system CPU seconds of a running process.
fn process_cpu(pid: u32, ticks: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces: utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|r| r.1)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    Ok((f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / ticks)
}

// ------------------------------------------------------------------------------ overhead

/// bpftrace's closest equivalent of vmap-trace's default mode: contention wait histogram keyed
/// like perf (by task) and the vmalloc event counts.
const BPFTRACE_EQUIVALENT: &str = "\
tracepoint:lock:contention_begin { @start[tid] = nsecs; }
tracepoint:lock:contention_end /@start[tid]/ { @wait_ns = hist(nsecs - @start[tid]); delete(@start[tid]); }
tracepoint:vmalloc:alloc_vmap_area { @allocs = count(); }
tracepoint:vmalloc:free_vmap_area_noflush { @frees = count(); }
tracepoint:vmalloc:purge_vmap_area_lazy { @purges = count(); }";

/// The floor: a program that does nothing, on every tracepoint vmap-trace uses.
const BPFTRACE_EMPTY: &str = "\
tracepoint:lock:contention_begin {}
tracepoint:lock:contention_end {}
tracepoint:vmalloc:alloc_vmap_area {}
tracepoint:vmalloc:free_vmap_area_noflush {}
tracepoint:vmalloc:purge_vmap_area_lazy {}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tracer {
    Untraced,
    Control,
    Record,
    Daemon,
    PerfLock,
    Bpftrace,
    BpftraceEmpty,
}

impl Tracer {
    fn parse(name: &str) -> Result<Tracer> {
        Ok(match name {
            "control" => Tracer::Control,
            "record" => Tracer::Record,
            "daemon" => Tracer::Daemon,
            "perf-lock" => Tracer::PerfLock,
            "bpftrace" => Tracer::Bpftrace,
            "bpftrace-empty" => Tracer::BpftraceEmpty,
            other => bail!("unknown tracer {other}"),
        })
    }

    fn label(self) -> &'static str {
        match self {
            Tracer::Untraced => "untraced",
            Tracer::Control => "untraced (A/A control)",
            Tracer::Record => "vmap-trace record",
            Tracer::Daemon => "vmap-trace daemon",
            Tracer::PerfLock => "perf lock record -a",
            Tracer::Bpftrace => "bpftrace (equivalent script)",
            Tracer::BpftraceEmpty => "bpftrace, empty actions (floor)",
        }
    }
}

/// Tracepoint hits during a run, as vmap-trace counted them.
#[derive(Debug, Clone, Copy)]
struct Hits {
    vmalloc: f64,
    contentions: f64,
}

impl Hits {
    /// vmalloc events fire one program each; a contention fires begin and end.
    fn total(self) -> f64 {
        self.vmalloc + 2.0 * self.contentions
    }
}

struct Run {
    stress: StressResult,
    /// CPU seconds of the stress process tree (where the tracepoint programs run).
    cpu_s: f64,
    /// Busy seconds of all CPUs during the run.
    system_cpu_s: f64,
    hits: Option<Hits>,
    /// The daemon's own CPU seconds while the stress ran.
    daemon_cpu_s: Option<f64>,
}

impl Run {
    fn cpu_ns_per_op(&self) -> f64 {
        self.cpu_s * 1e9 / self.stress.ops.max(1) as f64
    }

    fn system_ns_per_op(&self) -> f64 {
        self.system_cpu_s * 1e9 / self.stress.ops.max(1) as f64
    }
}

/// Where a run keeps its files.
struct Scratch {
    dir: PathBuf,
    wrapper: PathBuf,
    cpu: PathBuf,
    ticks: f64,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vmap-trace-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let wrapper = dir.join("cpu-time.sh");
        std::fs::write(&wrapper, CPU_WRAPPER)?;
        Ok(Scratch {
            cpu: dir.join("cpu-ticks"),
            wrapper,
            dir,
            ticks: clock_ticks_per_second(),
        })
    }

    /// The stress command line wrapped to measure its CPU time.
    fn wrapped(&self, stress: &[String]) -> Vec<String> {
        let mut cmd = vec![
            "/bin/sh".to_string(),
            self.wrapper.display().to_string(),
            self.cpu.display().to_string(),
        ];
        cmd.extend(stress.iter().cloned());
        cmd
    }

    fn cpu_s(&self) -> Result<(f64, f64)> {
        let cpu = read_cpu_file(&self.cpu, self.ticks);
        std::fs::remove_file(&self.cpu).ok();
        cpu
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn run_once(
    bin: &Path,
    tracer: Tracer,
    workload: &str,
    seconds: u32,
    scratch: &Scratch,
    tracer_flags: &[&str],
) -> Result<Run> {
    let stress = scratch.wrapped(&stress_args(bin, workload, seconds));
    let plain = |stdout: String, hits: Option<Hits>| -> Result<Run> {
        let (cpu_s, system_cpu_s) = scratch.cpu_s()?;
        Ok(Run {
            stress: parse_stress(&stdout)?,
            cpu_s,
            system_cpu_s,
            hits,
            daemon_cpu_s: None,
        })
    };
    match tracer {
        Tracer::Untraced | Tracer::Control => {
            plain(output(Command::new(&stress[0]).args(&stress[1..]))?, None)
        }
        Tracer::Record => {
            let rec = scratch.dir.join("overhead.rec");
            let out = output(
                Command::new(bin)
                    .arg("record")
                    .args(tracer_flags)
                    .arg("-o")
                    .arg(&rec)
                    .arg("--")
                    .args(&stress),
            )?;
            let report: Value = serde_json::from_str(&output(
                Command::new(bin)
                    .args(["report", "--format", "json"])
                    .arg(&rec),
            )?)?;
            let p = &report["profile"];
            let ops = &p["ops"];
            let vmalloc = ["allocs", "frees", "purges"]
                .iter()
                .map(|k| ops[k].as_f64().unwrap_or(0.0))
                .sum();
            let contentions = p["locks"].as_array().map_or(0.0, |l| {
                l.iter()
                    .map(|l| l["wait"]["count"].as_f64().unwrap_or(0.0))
                    .sum()
            });
            std::fs::remove_file(&rec).ok();
            plain(
                out,
                Some(Hits {
                    vmalloc,
                    contentions,
                }),
            )
        }
        Tracer::Daemon => {
            let daemon = Daemon::start(bin, tracer_flags)?;
            let cpu_before = process_cpu(daemon.child.id(), scratch.ticks)?;
            let out = output(Command::new(&stress[0]).args(&stress[1..]))?;
            let daemon_cpu_s = process_cpu(daemon.child.id(), scratch.ticks)? - cpu_before;
            // One scrape, as Prometheus would do every 15 s or so: the run's hit counts.
            let text = daemon.metrics()?;
            let (status, log) = daemon.stop()?;
            if !status.success() {
                bail!("the daemon exited with {status}: {}", log.join("\n"));
            }
            let vmalloc = [
                "vmap_trace_vmalloc_allocs_total",
                "vmap_trace_vmalloc_frees_total",
                "vmap_trace_vmalloc_purges_total",
            ]
            .iter()
            .map(|m| metric_sum(&text, m, None))
            .sum();
            let contentions = metric_sum(&text, "vmap_trace_lock_wait_seconds_count", None);
            let mut run = plain(
                out,
                Some(Hits {
                    vmalloc,
                    contentions,
                }),
            )?;
            run.daemon_cpu_s = Some(daemon_cpu_s);
            Ok(run)
        }
        Tracer::PerfLock => {
            let data = scratch.dir.join("perf-lock.data");
            let out = output(
                Command::new("perf")
                    .args(["lock", "record", "-a", "-o"])
                    .arg(&data)
                    .arg("--")
                    .args(&stress),
            )?;
            std::fs::remove_file(&data).ok();
            plain(out, None)
        }
        Tracer::Bpftrace | Tracer::BpftraceEmpty => {
            let script = if tracer == Tracer::Bpftrace {
                BPFTRACE_EQUIVALENT
            } else {
                BPFTRACE_EMPTY
            };
            let maps = scratch.dir.join("bpftrace.out");
            // bpftrace splits -c on spaces: every path here is space-free.
            let out = output(Command::new("bpftrace").arg("-o").arg(&maps).args([
                "-e",
                script,
                "-c",
                &stress.join(" "),
            ]))?;
            std::fs::remove_file(&maps).ok();
            plain(out, None)
        }
    }
}

/// Per (workload, tracer), each compared with the mean of the untraced runs on either side:
/// CPU per op ratios (the headline), throughput ratios, and the extra CPU ns per op.
#[derive(Default)]
struct Samples {
    cpu_ratios: Vec<f64>,
    /// All CPUs' busy time per op, traced over untraced.
    system_ratios: Vec<f64>,
    throughput_ratios: Vec<f64>,
    extra_cpu_ns_per_op: Vec<f64>,
    /// The daemon's own CPU, seconds per second of stress.
    daemon_cpu_share: Vec<f64>,
}

fn overhead(args: &BenchArgs) -> Result<()> {
    require_root("bench overhead")?;
    let tracer_flags: Vec<&str> = if args.sample_unlocated {
        println!("record and daemon run with --sample-unlocated\n");
        vec!["--sample-unlocated"]
    } else {
        vec![]
    };
    let tracers: Vec<Tracer> = args
        .tracers
        .iter()
        .map(|t| Tracer::parse(t))
        .collect::<Result<_>>()?;
    for (tracer, tool) in [
        (Tracer::PerfLock, "perf"),
        (Tracer::Bpftrace, "bpftrace"),
        (Tracer::BpftraceEmpty, "bpftrace"),
    ] {
        if tracers.contains(&tracer) && !tool_available(tool) {
            bail!("{tool} is not installed (cargo xtask setup installs it), or leave {} out with --tracers", tracer.label());
        }
    }
    let bin = release_binary(!args.no_build)?;
    let scratch = Scratch::new()?;
    let machine = machine_description();
    let foreign_before = foreign_bpf_programs(&[]);

    let mut samples: BTreeMap<(String, Tracer), Samples> = BTreeMap::new();
    let mut hits_per_op: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut untraced: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut untraced_system: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for workload in &args.workloads {
        for round in 0..args.rounds {
            let mut order = tracers.clone();
            let shift = round as usize % order.len().max(1);
            order.rotate_left(shift);
            let run = |tracer| {
                run_once(
                    &bin,
                    tracer,
                    workload,
                    args.seconds,
                    &scratch,
                    &tracer_flags,
                )
            };
            let first = run(Tracer::Untraced)?;
            let mut before = (first.stress.ops_per_sec, first.cpu_ns_per_op());
            let mut before_system = first.system_ns_per_op();
            untraced.entry(workload.clone()).or_default().push(before);
            untraced_system
                .entry(workload.clone())
                .or_default()
                .push(before_system);
            for &tracer in &order {
                let traced = run(tracer)?;
                let next = run(Tracer::Untraced)?;
                let after = (next.stress.ops_per_sec, next.cpu_ns_per_op());
                let after_system = next.system_ns_per_op();
                untraced.entry(workload.clone()).or_default().push(after);
                untraced_system
                    .entry(workload.clone())
                    .or_default()
                    .push(after_system);
                let base_system = (before_system + after_system) / 2.0;
                let base_rate = (before.0 + after.0) / 2.0;
                let base_cpu = (before.1 + after.1) / 2.0;
                let (rate, cpu) = (traced.stress.ops_per_sec, traced.cpu_ns_per_op());
                let system = traced.system_ns_per_op();
                eprintln!(
                    "bench: {workload} round {}/{}: {:<32} {:>7.0} CPU ns/op vs {:>7.0} untraced ({:+.2}%); all CPUs {:+.2}%; {:>7.0} ops/s vs {:>7.0} ({:+.2}%)",
                    round + 1,
                    args.rounds,
                    tracer.label(),
                    cpu,
                    base_cpu,
                    (cpu / base_cpu - 1.0) * 100.0,
                    (system / base_system - 1.0) * 100.0,
                    rate,
                    base_rate,
                    (rate / base_rate - 1.0) * 100.0
                );
                let s = samples.entry((workload.clone(), tracer)).or_default();
                s.cpu_ratios.push(cpu / base_cpu);
                s.system_ratios.push(system / base_system);
                s.throughput_ratios.push(rate / base_rate);
                s.extra_cpu_ns_per_op.push(cpu - base_cpu);
                if let Some(d) = traced.daemon_cpu_s {
                    s.daemon_cpu_share
                        .push(d / (traced.stress.ops as f64 / traced.stress.ops_per_sec.max(1e-9)));
                }
                if let Some(h) = traced.hits {
                    hits_per_op
                        .entry(workload.clone())
                        .or_default()
                        .push(h.total() / traced.stress.ops.max(1) as f64);
                }
                before = after;
                before_system = after_system;
            }
        }
    }

    let mut bpf_stats = Vec::new();
    for workload in &args.workloads {
        bpf_stats.push((
            workload.clone(),
            program_run_times(
                &bin,
                workload,
                args.seconds,
                tracers.contains(&Tracer::BpftraceEmpty),
                &tracer_flags,
            )?,
        ));
    }
    let foreign_after = foreign_bpf_programs(&[]);
    drop(scratch);

    // ---- report
    println!("## Tracing overhead on the stress workloads\n");
    println!("Machine: {machine}.  ");
    println!(
        "Command: `cargo xtask bench overhead --workloads {} --tracers {} --seconds {} --rounds {}`\n",
        args.workloads.join(","),
        args.tracers.join(","),
        args.seconds,
        args.rounds
    );
    for (label, list) in [("before", &foreign_before), ("after", &foreign_after)] {
        if !list.is_empty() {
            println!("Other BPF programs were attached {label} the run (they slow every run alike): {}.  ", list.join("; "));
        }
    }
    println!();
    for workload in &args.workloads {
        let base = untraced.get(workload).cloned().unwrap_or_default();
        let base_rate = median(&mut base.iter().map(|b| b.0).collect::<Vec<_>>());
        let base_cpu = median(&mut base.iter().map(|b| b.1).collect::<Vec<_>>());
        let base_system = median(&mut untraced_system.get(workload).cloned().unwrap_or_default());
        let h = median(&mut hits_per_op.get(workload).cloned().unwrap_or_default());
        println!(
            "### `stress {workload}`: untraced {base_cpu:.0} CPU ns per op ({base_system:.0} on all CPUs), {base_rate:.0} ops/s (medians); {h:.2} tracepoint hits per op\n"
        );
        println!("| tracer | CPU per op vs untraced: median | min .. max | CPU slowdown | all CPUs' busy time per op: median | min .. max | throughput vs untraced: median | min .. max | ns added per tracepoint hit |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for &tracer in &tracers {
            let Some(s) = samples.get(&(workload.clone(), tracer)) else {
                continue;
            };
            let (cpu, cpu_lo, cpu_hi) = spread(&s.cpu_ratios);
            let (sys, sys_lo, sys_hi) = spread(&s.system_ratios);
            let (tp, tp_lo, tp_hi) = spread(&s.throughput_ratios);
            let per_hit = if h > 0.0 {
                format!("{:.0}", median(&mut s.extra_cpu_ns_per_op.clone()) / h)
            } else {
                "n/a".into()
            };
            println!(
                "| {} | {:.2}% | {:.2}% .. {:.2}% | {:+.2}% | {:.2}% | {:.2}% .. {:.2}% | {:.2}% | {:.2}% .. {:.2}% | {per_hit} |",
                tracer.label(),
                cpu * 100.0,
                cpu_lo * 100.0,
                cpu_hi * 100.0,
                (cpu - 1.0) * 100.0,
                sys * 100.0,
                sys_lo * 100.0,
                sys_hi * 100.0,
                tp * 100.0,
                tp_lo * 100.0,
                tp_hi * 100.0,
            );
        }
        if let Some(s) = samples
            .get(&(workload.clone(), Tracer::Daemon))
            .filter(|s| !s.daemon_cpu_share.is_empty())
        {
            println!(
                "\nThe daemon process itself used {:.2} ms of CPU per second of stress (median; no scrape during the runs).",
                median(&mut s.daemon_cpu_share.clone()) * 1000.0
            );
        }
        println!();
    }
    println!("### Program run time per tracepoint hit (kernel.bpf_stats_enabled)\n");
    println!("| workload | program | runs | runs per op | ns per run | ns per op |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (workload, stats) in &bpf_stats {
        for p in stats {
            println!(
                "| {workload} | {} | {} | {:.3} | {:.0} | {:.0} |",
                p.name,
                p.runs,
                p.runs_per_op(),
                p.ns_per_run(),
                p.ns_per_op()
            );
        }
    }
    println!();
    // What the program run times add to each op, against the untraced CPU per op: a steadier
    // figure than the A/B difference on a busy machine (it leaves out the tracepoint dispatch,
    // which the empty program's row bounds from below).
    // In the order of --workloads, as the tables above.
    let shares: Vec<(&String, ProgramShare)> = bpf_stats
        .iter()
        .map(|(workload, stats)| {
            let base_cpu = median(
                &mut untraced
                    .get(workload)
                    .map(|b| b.iter().map(|x| x.1).collect::<Vec<f64>>())
                    .unwrap_or_default(),
            );
            (workload, ProgramShare::new(stats, base_cpu))
        })
        .collect();
    for (workload, share) in &shares {
        let ProgramShare {
            runs_per_op,
            ns_per_op,
            base_cpu,
            ..
        } = *share;
        println!(
            "- {workload}: vmap-trace's programs run {runs_per_op:.2} times and {ns_per_op:.0} ns per op = {:.2}% of the untraced {base_cpu:.0} CPU ns per op{}",
            ns_per_op / base_cpu * 100.0,
            share.floor_ns_per_op.map_or(String::new(), |f| format!(
                "; empty programs on the same hits: {f:.0} ns per op ({:.2}%); beyond them: {:.0} ns per op ({:.2}%)",
                f / base_cpu * 100.0,
                ns_per_op - f,
                (ns_per_op - f) / base_cpu * 100.0
            ))
        );
    }
    println!();
    // Goals. Two measures: the A/B median of CPU per op with a distribution-free confidence
    // interval (the A/A control's own interval shows whether the machine drifted), and the
    // vmap-trace programs' own run time per op, a lower bound of what tracing adds (dispatch
    // and cache effects come on top).
    println!("Goals (default mode: at most +1% CPU per op, and cheaper than perf lock record):\n");
    let pct = |r: f64| (r - 1.0) * 100.0;
    // "met" only when the whole interval is at most +1%, "MISSED" when all of it is above.
    let ab_verdict = |values: &[f64]| -> String {
        let Some(ci) = MedianInterval::of(values) else {
            return "no runs".to_string();
        };
        let verdict = if pct(ci.high) <= 1.0 {
            "met"
        } else if pct(ci.low) > 1.0 {
            "MISSED"
        } else {
            "not resolved"
        };
        format!("{}: {verdict}", ci.ratio_text())
    };
    // Cheaper than perf: the per-round differences of the two ratios (runs of one round).
    let cheaper_verdict = |ours: &[f64], perf: &[f64]| -> String {
        let diffs: Vec<f64> = ours.iter().zip(perf).map(|(o, p)| o - p).collect();
        let Some(ci) = MedianInterval::of(&diffs) else {
            return "no runs".to_string();
        };
        let verdict = if ci.high < 0.0 {
            "met"
        } else if ci.low >= 0.0 {
            "MISSED"
        } else {
            "not resolved"
        };
        format!(
            "{verdict} (difference {:+.2} points, {:.0}% interval {:+.2} .. {:+.2})",
            ci.median * 100.0,
            ci.coverage * 100.0,
            ci.low * 100.0,
            ci.high * 100.0
        )
    };
    for workload in &args.workloads {
        let get = |t: Tracer| samples.get(&(workload.clone(), t));
        if let Some(control) = get(Tracer::Control) {
            let text = |v: &[f64]| MedianInterval::of(v).map_or(String::new(), |c| c.ratio_text());
            println!(
                "- {workload}, A/A control (untraced vs untraced): process CPU per op {}; all CPUs {} (an interval away from 0 means the machine drifted)",
                text(&control.cpu_ratios),
                text(&control.system_ratios)
            );
        }
        let beyond_floor_pct = shares
            .iter()
            .find(|(w, _)| *w == workload)
            .and_then(|(_, share)| share.beyond_floor_pct());
        for t in [Tracer::Record, Tracer::Daemon] {
            let Some(s) = get(t) else { continue };
            let mut line = format!(
                "- {workload}, {}: process CPU per op {}; all CPUs' busy time per op {}",
                t.label(),
                ab_verdict(&s.cpu_ratios),
                ab_verdict(&s.system_ratios)
            );
            match beyond_floor_pct {
                Some(f) if f > 1.0 => line += &format!("; MISSED in any case: the programs' work beyond empty programs alone costs {f:.2}%"),
                Some(f) => line += &format!("; the programs' work beyond empty programs costs {f:.2}%"),
                None => {}
            }
            println!("{line}");
            if let Some(perf) = get(Tracer::PerfLock) {
                println!(
                    "- {workload}, {} vs perf lock record -a: process CPU {:+.2}% vs {:+.2}% -> cheaper: {}; all CPUs (perf's own process included) {:+.2}% vs {:+.2}% -> cheaper: {}",
                    t.label(),
                    pct(spread(&s.cpu_ratios).0),
                    pct(spread(&perf.cpu_ratios).0),
                    cheaper_verdict(&s.cpu_ratios, &perf.cpu_ratios),
                    pct(spread(&s.system_ratios).0),
                    pct(spread(&perf.system_ratios).0),
                    cheaper_verdict(&s.system_ratios, &perf.system_ratios),
                );
            }
        }
    }
    Ok(())
}

/// One BPF program's accumulated run time, from its fdinfo, over one stress run.
struct ProgramStats {
    name: String,
    runs: u64,
    run_time_ns: u64,
    /// Ops of the stress run during which the program ran.
    ops: u64,
}

impl ProgramStats {
    fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            f64::NAN
        } else {
            self.run_time_ns as f64 / self.runs as f64
        }
    }

    fn runs_per_op(&self) -> f64 {
        self.runs as f64 / self.ops.max(1) as f64
    }

    fn ns_per_op(&self) -> f64 {
        self.run_time_ns as f64 / self.ops.max(1) as f64
    }
}

const FLOOR_ROW: &str = "empty action (every hook, floor)";

/// vmap-trace's programs' run time per op of one workload, the empty programs' on as many
/// hits, and the untraced CPU per op they compare with.
#[derive(Clone, Copy)]
struct ProgramShare {
    runs_per_op: f64,
    ns_per_op: f64,
    floor_ns_per_op: Option<f64>,
    base_cpu: f64,
}

impl ProgramShare {
    fn new(stats: &[ProgramStats], base_cpu: f64) -> ProgramShare {
        let ours = stats.iter().filter(|p| p.name.starts_with("vmap-trace "));
        let ns_per_op = ours.clone().map(|p| p.ns_per_op()).sum();
        let runs_per_op = ours.map(|p| p.runs_per_op()).sum();
        let floor_ns_per_op = stats
            .iter()
            .find(|p| p.name.ends_with(FLOOR_ROW))
            .map(|p| p.ns_per_run() * runs_per_op);
        ProgramShare {
            runs_per_op,
            ns_per_op,
            floor_ns_per_op,
            base_cpu,
        }
    }

    /// A lower bound of what the programs add, in % of the untraced CPU per op: their run
    /// time beyond empty programs' on the same number of hits (bpf_stats' own clock reads are
    /// in both; the dispatch, the same for any program, in neither).
    fn beyond_floor_pct(&self) -> Option<f64> {
        self.floor_ns_per_op
            .map(|f| (self.ns_per_op - f) / self.base_cpu * 100.0)
    }
}

/// With `kernel.bpf_stats_enabled`, run the workload under the daemon (and under the empty
/// bpftrace script) and read each program's run count and run time from the holder's fdinfo.
/// Measures the program bodies only: the tracepoint dispatch around them is the same for any
/// program on the same hook.
fn program_run_times(
    bin: &Path,
    workload: &str,
    seconds: u32,
    with_floor: bool,
    tracer_flags: &[&str],
) -> Result<Vec<ProgramStats>> {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let previous = std::fs::read_to_string(KNOB).context("kernel.bpf_stats_enabled")?;
    std::fs::write(KNOB, "1").context("cannot enable kernel.bpf_stats_enabled")?;
    let result = (|| -> Result<Vec<ProgramStats>> {
        let stress = stress_args(bin, workload, seconds);
        let daemon = Daemon::start(bin, tracer_flags)?;
        let ops = parse_stress(&output(Command::new(&stress[0]).args(&stress[1..]))?)?.ops;
        let mut stats = read_program_stats(daemon.child.id(), "vmap-trace ", None, ops)?;
        daemon.stop()?;
        if with_floor {
            let mut bpftrace = Command::new("bpftrace")
                .args(["-e", BPFTRACE_EMPTY])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start bpftrace")?;
            // bpftrace says "Attaching N probes..." once attached.
            let mut first = String::new();
            BufReader::new(bpftrace.stdout.as_mut().expect("piped")).read_line(&mut first)?;
            let ops = parse_stress(&output(Command::new(&stress[0]).args(&stress[1..]))?)?.ops;
            let floor = read_program_stats(bpftrace.id(), "bpftrace ", Some(FLOOR_ROW), ops);
            let _ = Command::new("kill")
                .args(["-INT", &bpftrace.id().to_string()])
                .status();
            wait_exit(&mut bpftrace, Duration::from_secs(30))?;
            stats.extend(floor?);
        }
        Ok(stats)
    })();
    std::fs::write(KNOB, previous.trim()).context("cannot restore kernel.bpf_stats_enabled")?;
    result
}

/// Programs held by `pid` that ran, named from /proc/kallsyms (`bpf_prog_<tag>_<name>`, the
/// name cut to 15 characters by the kernel). Programs sharing a cut name are numbered in load
/// order (vmap-trace loads and attaches contention_end before contention_begin: #1 is the end
/// program; the run in docs/performance.md predates that order and had begin first). Identical programs share a
/// tag and so a kallsyms name: `merge` sums them into one row (bpftrace's empty actions).
fn read_program_stats(
    pid: u32,
    prefix: &str,
    merge: Option<&str>,
    ops: u64,
) -> Result<Vec<ProgramStats>> {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let mut progs: Vec<(u64, String, u64, u64)> = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.filter_map(|e| e.ok()) {
        if !std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog")
        {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))?;
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        let number = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (id, runs, ns) = (
            number("prog_id:"),
            number("run_cnt:"),
            number("run_time_ns:"),
        );
        if runs == 0 {
            continue; // attached to a hook the workload never hit, or not attached at all
        }
        let marker = format!("bpf_prog_{}_", field("prog_tag:").unwrap_or_default());
        let name = kallsyms
            .lines()
            .find_map(|l| {
                l.split_whitespace()
                    .nth(2)
                    .and_then(|s| s.strip_prefix(&marker))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("prog {id}"));
        progs.push((id, name, runs, ns));
    }
    progs.sort();
    if let Some(label) = merge {
        let (runs, ns) = progs.iter().fold((0, 0), |(r, n), p| (r + p.2, n + p.3));
        return Ok(vec![ProgramStats {
            name: format!("{prefix}{label}"),
            runs,
            run_time_ns: ns,
            ops,
        }]);
    }
    let mut out: Vec<ProgramStats> = Vec::new();
    for (_, name, runs, ns) in &progs {
        let same = progs.iter().filter(|p| &p.1 == name).count();
        let nth = out
            .iter()
            .filter(|o| o.name.starts_with(&format!("{prefix}{name}")))
            .count()
            + 1;
        let name = if same > 1 {
            format!("{prefix}{name} #{nth}")
        } else {
            format!("{prefix}{name}")
        };
        out.push(ProgramStats {
            name,
            runs: *runs,
            run_time_ns: *ns,
            ops,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------------------ soak

fn soak(seconds: u64, build: bool) -> Result<()> {
    require_root("bench soak")?;
    let bin = release_binary(build)?;
    let dir = std::env::temp_dir().join(format!("vmap-trace-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let daemon = Daemon::start(
        &bin,
        &[
            "--record-dir",
            dir.to_str().unwrap(),
            "--record-every",
            "60",
            "--keep",
            "3",
        ],
    )?;
    daemon.metrics()?;
    let rss_attached = daemon.rss_kib()?;
    let machine = machine_description();
    let mut load = Command::new(&bin)
        .args([
            "stress",
            "mix",
            "--duration",
            &seconds.to_string(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start stress mix")?;
    let started = Instant::now();
    println!("## Daemon soak: {seconds} s of `stress mix`, scraped every 10 s\n");
    println!("Machine: {machine}. Command: `cargo xtask bench soak --soak-seconds {seconds}`\n");
    println!("| t (s) | RSS (KiB) | allocs | contentions | lost (all reasons) | stack captures lost | lock keys | stack keys | tasks | scrape (ms) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows: Vec<(u64, u64)> = Vec::new();
    // (t, lock keys, stack keys) to project when the kernel maps would fill.
    let mut fill: Vec<(f64, f64, f64)> = Vec::new();
    let mut last = String::new();
    let mut next = Duration::from_secs(10);
    while load.try_wait()?.is_none() || started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(next.saturating_sub(started.elapsed()));
        let scrape_started = Instant::now();
        last = daemon.metrics()?;
        let scrape_ms = scrape_started.elapsed().as_secs_f64() * 1000.0;
        let rss = daemon.rss_kib()?;
        let t = started.elapsed().as_secs();
        rows.push((t, rss));
        let m = |name: &str, label: Option<&str>| metric_sum(&last, name, label);
        fill.push((
            started.elapsed().as_secs_f64(),
            m("vmap_trace_kernel_map_entries", Some("\"locks\"")),
            m("vmap_trace_kernel_map_entries", Some("\"stack_keys\"")),
        ));
        println!(
            "| {t} | {rss} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {scrape_ms:.0} |",
            m("vmap_trace_vmalloc_allocs_total", None),
            m("vmap_trace_lock_wait_seconds_count", None),
            m("vmap_trace_lost_events_total", None),
            m("vmap_trace_lost_events_total", Some("stack_capture_failed")),
            m("vmap_trace_kernel_map_entries", Some("\"locks\"")),
            m("vmap_trace_kernel_map_entries", Some("\"stack_keys\"")),
            m("vmap_trace_kernel_map_entries", Some("\"tasks\"")),
        );
        next += Duration::from_secs(10);
        if started.elapsed() > Duration::from_secs(seconds + 120) {
            bail!("stress mix did not end");
        }
    }
    let mut stress_out = String::new();
    load.stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stress_out)?;
    let stress = parse_stress(&stress_out)?;
    let (status, log) = daemon.stop()?;
    let recordings: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    let last_recording = recordings.iter().max().cloned();
    let loads = last_recording.as_ref().is_some_and(|r| {
        Command::new(&bin)
            .arg("report")
            .arg(r)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    std::fs::remove_dir_all(&dir).ok();

    // RSS after the first minute (allocator arenas, symbolizer cache warm) vs the end.
    let warm = rows
        .iter()
        .find(|(t, _)| *t >= 60)
        .or(rows.first())
        .map_or(0, |r| r.1);
    let end = rows.last().map_or(0, |r| r.1);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0);
    let lost: Vec<(String, f64)> = [
        "inflight_full",
        "lock_map_full",
        "stack_capture_failed",
        "stack_keys_full",
        "calls_inflight_full",
    ]
    .iter()
    .map(|r| {
        (
            r.to_string(),
            metric_sum(
                &last,
                "vmap_trace_lost_events_total",
                Some(&format!("\"{r}\"")),
            ),
        )
    })
    .collect();
    let contentions = metric_sum(&last, "vmap_trace_lock_wait_seconds_count", None);
    println!();
    println!(
        "- stress mix: {} ops, {:.0} ops/s",
        stress.ops, stress.ops_per_sec
    );
    println!("- daemon RSS: {rss_attached} KiB attached and idle, {warm} KiB after 60 s, {end} KiB at the end (max {max} KiB)");
    println!(
        "- contentions recorded: {contentions:.0}; lost: {}",
        lost.iter()
            .map(|(r, n)| format!("{r} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let (Some(first), Some(end)) = (
        fill.iter().find(|f| f.0 >= 60.0).or(fill.first()),
        fill.last(),
    ) {
        let span = end.0 - first.0;
        for (map, used_first, used_end) in
            [("locks", first.1, end.1), ("stack_keys", first.2, end.2)]
        {
            let capacity = metric_sum(
                &last,
                "vmap_trace_kernel_map_capacity",
                Some(&format!("\"{map}\"")),
            );
            let rate = if span > 0.0 {
                (used_end - used_first) / span
            } else {
                0.0
            };
            let projection = if rate > 0.0 {
                format!(
                    "full in about {:.0} min at this rate",
                    (capacity - used_end) / rate / 60.0
                )
            } else {
                "not growing".to_string()
            };
            println!(
                "- kernel map {map}: {used_end:.0} of {capacity:.0} entries, growing {rate:.2}/s after the first minute: {projection}"
            );
        }
    }
    println!(
        "- SIGTERM: {status}; last recording {} ({})",
        last_recording
            .as_ref()
            .map_or("missing".into(), |p| p.display().to_string()),
        if loads { "loads" } else { "DOES NOT LOAD" }
    );
    for line in log.iter().filter(|l| l.contains("final totals")) {
        println!("- daemon: {line}");
    }

    let mut failures = Vec::new();
    // Flat: within 2 MiB (allocator noise) of the warm value.
    if end > warm + 2048 {
        failures.push(format!("RSS grew from {warm} KiB to {end} KiB"));
    }
    let lost_total: f64 = lost.iter().map(|(_, n)| n).sum();
    if lost_total > 0.0 {
        failures.push(format!("{lost_total:.0} events lost"));
    }
    if !status.success() || !loads {
        failures.push("clean shutdown with a loadable last recording".into());
    }
    if failures.is_empty() {
        println!("\nSoak passed: flat RSS, nothing lost, clean shutdown.");
        Ok(())
    } else {
        bail!("soak failed: {}", failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_interval_uses_order_statistics_of_at_least_95_percent() {
        // 15 runs: x(4) ..= x(12) (1-based) covers 96.5%; x(5) ..= x(11) only 88.2%.
        let v: Vec<f64> = (1..=15).rev().map(f64::from).collect();
        let ci = MedianInterval::of(&v).unwrap();
        assert_eq!((ci.median, ci.low, ci.high), (8.0, 4.0, 12.0));
        assert!((ci.coverage - 0.96484375).abs() < 1e-9, "{}", ci.coverage);
        // Five runs cannot give 95%: min .. max, 93.75%.
        let ci = MedianInterval::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((ci.median, ci.low, ci.high), (3.0, 1.0, 5.0));
        assert!((ci.coverage - 0.9375).abs() < 1e-9);
        // Six: min .. max, 96.9%.
        let ci = MedianInterval::of(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!((ci.low, ci.high), (1.0, 6.0));
        assert!((ci.coverage - 0.96875).abs() < 1e-9);
        assert_eq!(MedianInterval::of(&[]), None);
        assert!(MedianInterval::of(&[1.02])
            .unwrap()
            .ratio_text()
            .starts_with("+2.00% ("));
    }
}
