//! `vmap-trace stress`: command-line front end of [`super::run_workload_with_progress`].

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;

use super::{signal, BpfMapShape, ProgressSample, StressConfig, StressResult, WorkloadKind};
use super::{MAX_BPF_VALUE_SIZE, MAX_DRIVERS, MAX_LIVE_PER_DRIVER};
use crate::commands::duration::parse_duration;
use crate::stdout::Written;

/// `vmap-trace stress` arguments.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(
    about = "Generate real load on the kernel's vmalloc / vmap-area allocator",
    after_help = "See --help for what each workload does. Examples:\n  \
        vmap-trace stress pty --duration 2\n  \
        vmap-trace stress mix --threads 8 --json\n  \
        perf stat -e vmalloc:alloc_vmap_area -a -- vmap-trace stress fork -d 2",
    after_long_help = "How it works: each driver thread repeatedly creates --live objects, keeps \
        them alive together, then releases them all, and counts one op per object:\n  \
        threads  a thread spawned and joined: a vmalloc'd VMAP_STACK kernel stack each; many \
        live at once defeat the kernel's 2-per-CPU cache of freed stacks (~1 vmap area per op)\n  \
        fork     a child process forked and reaped (from a helper process per driver, so \
        mmap_lock contention stays out of the way; ~1 vmap area per op)\n  \
        pty      a pty pair opened and closed: n_tty_data is vzalloc'd for both ends (2 per op)\n  \
        bpfmap   a BPF array map created and closed: maps over 32 KiB are vmalloc'd, frees are \
        lazy and purged in batches (2 per op: the area and its page array). Needs CAP_BPF.\n  \
        mix      all four at once, --threads split between them (at least one each)\n\n\
        Limits: a run may hold at most half of the tasks (pid_max, threads-max, RLIMIT_NPROC), \
        open files (RLIMIT_NOFILE), ptys (kernel.pty.max) and available memory (BPF maps) that \
        are free when it starts; a larger --threads x --live is refused before anything starts.\n\n\
        Ctrl-C, SIGTERM or SIGHUP stops early and still prints the summary; a second one kills.\n\n\
        Examples:\n  \
        vmap-trace stress pty --duration 2\n  \
        vmap-trace stress mix --threads 8 --json\n  \
        perf stat -e vmalloc:alloc_vmap_area -a -- vmap-trace stress fork -d 2\n  \
        perf lock record -a -o /tmp/lock.data -- vmap-trace stress mix -d 2; \
        perf lock contention -i /tmp/lock.data"
)]
pub struct StressArgs {
    /// Which load to generate.
    #[arg(value_enum)]
    pub workload: WorkloadKind,

    /// Driver threads [default: 2 x the CPUs this process may use]. `mix` splits them over its
    /// four workloads and uses at least four.
    #[arg(short = 't', long = "threads", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_DRIVERS as i64))]
    pub threads: Option<u32>,

    /// How long to run: seconds ("2", "0.5", "2s") or milliseconds ("500ms").
    #[arg(short = 'd', long, value_name = "S", default_value = "5", value_parser = parse_duration)]
    pub duration: Duration,

    /// Objects each driver keeps alive at once (tasks, pty pairs, maps)
    /// [default: threads 64, fork 32, pty 8, bpfmap 4].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=MAX_LIVE_PER_DRIVER as i64))]
    pub live: Option<u32>,

    /// Size of each BPF array map (`bpfmap`, `mix`). Anything over 32 KiB is vmalloc'd.
    #[arg(long, value_name = "MIB", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub map_size_mib: u32,

    /// Value size of the BPF array maps, in bytes; the map has size / value-size entries.
    #[arg(long, value_name = "BYTES", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=MAX_BPF_VALUE_SIZE as i64))]
    pub map_value_size: u32,

    /// Seconds between progress lines.
    #[arg(long, value_name = "S", default_value = "1", value_parser = parse_duration)]
    pub interval: Duration,

    /// Print only the result, as JSON, on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,

    /// Print only the summary (no progress lines).
    #[arg(short, long, conflicts_with = "json")]
    pub quiet: bool,
}

impl StressArgs {
    /// The run configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<StressConfig> {
        let mut config = StressConfig::new(self.duration);
        if let Some(threads) = self.threads {
            config.drivers = threads as usize;
        }
        config.live_per_driver = self.live.map(|n| n as usize);
        config.bpf_map =
            BpfMapShape::for_size(u64::from(self.map_size_mib) << 20, self.map_value_size)?;
        config.progress_interval = self.interval;
        config.validate()?;
        Ok(config)
    }
}

/// Run `vmap-trace stress` and print its progress and result.
pub fn run(args: StressArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    // Before the plan is printed, so a refused run prints only why.
    super::limits::check_system(args.workload, &config)?;
    signal::STOP_REQUESTED.store(false, Ordering::SeqCst);
    signal::install_stop_handlers().context("installing the SIGINT/SIGTERM handlers")?;

    let mut out = Output::new(!args.json && !args.quiet);
    out.line(&describe_plan(args.workload, &config));
    let result = super::run_workload_with_progress(
        args.workload,
        &config,
        &signal::STOP_REQUESTED,
        |sample| out.line(&progress_line(sample)),
    )?;

    let out = if args.json {
        serde_json::to_string_pretty(&result).context("serializing the result")? + "\n"
    } else {
        summary(&result)
    };
    crate::stdout::print(&out)?;
    for kind in &result.per_kind {
        if kind.failed_ops > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "vmap-trace: warning: {} {} operations failed and were retried (last: {})",
                kind.failed_ops,
                kind.kind,
                kind.last_error.as_deref().unwrap_or("unknown error"),
            );
        }
    }
    Ok(())
}

/// The plan and progress lines: a closed pipe (`| head -1`) silences them instead of ending
/// the run, which goes on to its --duration, because the load is what the user asked for.
struct Output {
    show: bool,
    closed: bool,
}

impl Output {
    fn new(show: bool) -> Self {
        Output {
            show,
            closed: false,
        }
    }

    fn line(&mut self, line: &str) {
        self.text(&format!("{line}\n"));
    }

    fn text(&mut self, text: &str) {
        if !self.show || self.closed {
            return;
        }
        match crate::stdout::print(text) {
            Ok(Written::All) => {}
            Ok(Written::ReaderGone) => self.closed = true,
            Err(e) => {
                self.closed = true;
                let _ = writeln!(std::io::stderr(), "vmap-trace: {e:#}");
            }
        }
    }
}

fn describe_plan(kind: WorkloadKind, config: &StressConfig) -> String {
    let plan = super::mix::driver_plan(kind, config.drivers)
        .into_iter()
        .map(|(k, n)| format!("{k}: {n} driver(s) x {} live", config.live_for(k)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "stress {kind} for {:.1} s ({plan}); Ctrl-C stops",
        config.duration.as_secs_f64()
    )
}

fn progress_line(sample: &ProgressSample) -> String {
    let rates = sample
        .per_kind
        .iter()
        .map(|k| format!("{} {:.0} ops/s", k.kind, k.ops_per_sec))
        .collect::<Vec<_>>()
        .join("  ");
    format!("[{:6.1}s] {rates}", sample.elapsed.as_secs_f64())
}

/// The per-workload lines (for `mix`) and the final summary line.
pub fn summary(result: &StressResult) -> String {
    let mut out = String::new();
    if result.per_kind.len() > 1 {
        for k in &result.per_kind {
            out += &format!(
                "  {:<8} {:>10} ops  {:>10.0} ops/s  ({} driver(s) x {} live; op = {})\n",
                k.kind.name(),
                k.ops,
                k.ops_per_sec,
                k.drivers,
                k.live_per_driver,
                k.op
            );
        }
    }
    let detail = match result.per_kind.as_slice() {
        [only] => format!(
            "; {} driver(s) x {} live; op = {}",
            only.drivers, only.live_per_driver, only.op
        ),
        _ => String::new(),
    };
    out += &format!(
        "stress {}: {} ops in {:.2} s = {:.0} ops/s{}{}\n",
        result.workload,
        result.ops,
        result.elapsed.as_secs_f64(),
        result.ops_per_sec,
        if result.failed_ops > 0 {
            format!(", {} failed", result.failed_ops)
        } else {
            String::new()
        },
        detail,
    );
    if result.stopped_early {
        out += "(stopped early on request)\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        args: StressArgs,
    }

    fn parse(argv: &[&str]) -> Result<StressArgs, clap::Error> {
        TestCli::try_parse_from(std::iter::once("stress").chain(argv.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let args = parse(&["pty"]).unwrap();
        assert_eq!(args.workload, WorkloadKind::Pty);
        assert_eq!(args.duration, Duration::from_secs(5));
        let config = args.config().unwrap();
        assert_eq!(config.drivers, super::super::default_drivers());
        assert_eq!(config.bpf_map, BpfMapShape::default());
        assert_eq!(config.live_per_driver, None);
    }

    #[test]
    fn all_flags() {
        let args = parse(&[
            "bpfmap",
            "--threads",
            "3",
            "-d",
            "500ms",
            "--live",
            "2",
            "--map-size-mib",
            "8",
            "--map-value-size",
            "1024",
            "--interval",
            "0.25",
            "--json",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(config.drivers, 3);
        assert_eq!(config.duration, Duration::from_millis(500));
        assert_eq!(config.live_per_driver, Some(2));
        assert_eq!(
            config.bpf_map,
            BpfMapShape {
                value_size: 1024,
                max_entries: 8192
            }
        );
        assert_eq!(config.progress_interval, Duration::from_millis(250));
        assert!(args.json);
    }

    #[test]
    fn bad_input_is_rejected_by_the_parser() {
        for argv in [
            &["nosuch"][..],
            &["pty", "--threads", "0"],
            &["pty", "--threads", "-1"],
            &["pty", "--duration", "0"],
            &["pty", "--duration", "-3"],
            &["pty", "--duration", "abc"],
            &["pty", "--duration", "inf"],
            &["pty", "--live", "0"],
            &["bpfmap", "--map-size-mib", "0"],
            &["bpfmap", "--map-value-size", "0"],
            &["pty", "--json", "--quiet"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?} should be rejected");
        }
    }

    #[test]
    fn summary_lines() {
        let result = StressResult {
            workload: WorkloadKind::Mix,
            ops: 30,
            elapsed: Duration::from_secs(2),
            ops_per_sec: 15.0,
            stopped_early: true,
            failed_ops: 1,
            per_kind: vec![
                kind_result(WorkloadKind::Threads, 10),
                kind_result(WorkloadKind::Pty, 20),
            ],
            config: StressConfig::default(),
        };
        let text = summary(&result);
        assert!(
            text.contains("stress mix: 30 ops in 2.00 s = 15 ops/s, 1 failed"),
            "{text}"
        );
        assert!(text.contains("threads"), "{text}");
        assert!(text.contains("stopped early"), "{text}");
    }

    fn kind_result(kind: WorkloadKind, ops: u64) -> super::super::KindResult {
        super::super::KindResult {
            kind,
            op: kind.op_description(),
            drivers: 1,
            live_per_driver: 1,
            ops,
            ops_per_sec: ops as f64 / 2.0,
            failed_ops: 0,
            last_error: None,
        }
    }
}
