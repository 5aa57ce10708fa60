//! `vmap-trace daemon`: arguments, validated into a `DaemonConfig`, then `daemon::run`.
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::daemon::connections::{
    DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};
use crate::daemon::exposition::MetricsOptions;
use crate::daemon::log::{LogFormat, Logger};
use crate::daemon::{DaemonConfig, RecordConfig, ServerLimits};
use crate::probe::ProbeOptions;

/// `vmap-trace daemon` arguments.
#[derive(Debug, clap::Args)]
// The one-line description comes from main.rs (the subcommand's doc comment); the details
// go after the options (`--help`), the examples after both forms.
#[command(
    after_long_help = "Serves OpenMetrics text on http://LISTEN/metrics: vmalloc operation counters, the lazy-free \
        backlog, lock wait histograms for the locks that waited most (the rest summed as \
        lock=\"(other)\"), per-vmap-function and per-CPU wait, and lost-event counters. Every \
        value is cumulative since the daemon attached: use rate() / increase() in PromQL.\n\n\
        Stops cleanly on SIGTERM, SIGINT or SIGHUP: last recording written, probes detached, \
        exit 0. Needs root (CAP_BPF and CAP_PERFMON). Metric reference: docs/daemon.md.\n\n\
        There is no authentication: an address other than loopback (127.0.0.1, ::1) makes the \
        metrics reachable from the network, and the daemon warns. Idle and slow clients are \
        bounded: at most --max-connections at once (at the cap the oldest connection with no \
        request in flight is closed to admit a new one, so scrapes and recordings always get \
        file descriptors), --header-timeout for a request head, --idle-timeout between \
        requests.\n\n\
        Examples:\n  \
        sudo vmap-trace daemon\n  \
        sudo vmap-trace daemon --listen 0.0.0.0:9464 --record-dir /var/lib/vmap-trace --keep 12\n  \
        curl -s http://127.0.0.1:9464/metrics | grep vmap_trace_lock_wait_seconds_count",
    after_help = "Examples:\n  \
        sudo vmap-trace daemon\n  \
        sudo vmap-trace daemon --listen 0.0.0.0:9464 --record-dir /var/lib/vmap-trace --keep 12\n  \
        curl -s http://127.0.0.1:9464/metrics | grep vmap_trace_lock_wait_seconds_count"
)]
pub struct DaemonArgs {
    /// Address or host name and port to serve /metrics on (port 0 picks a free one; the log
    /// says which). A host name is resolved once, at start, to its first IPv4 address if it
    /// has one. Not loopback: reachable from the network, without authentication (warned).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9464",
          value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Most HTTP connections open at once; at the cap the oldest one with no request in
    /// flight is closed to admit a new one. Lowered at start if the file descriptor limit
    /// cannot hold this many beside a reserve for recordings.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=16_384))]
    pub max_connections: u64,

    /// Seconds a client has to send a whole request head once its first byte arrived
    /// (slowloris clients and unfinished requests are closed then).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,

    /// Seconds a connection may stay open without a request (after it is accepted or between
    /// keep-alive requests).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,

    /// Write a recording (`vmap-trace report` reads it) to this directory every
    /// --record-every seconds and on shutdown. Created if missing.
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,

    /// Seconds between recordings (with --record-dir).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "record_dir",
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub record_every: u64,

    /// Recordings to keep in --record-dir; older ones are deleted (only files named
    /// vmap-trace-<UTC time>.rec are ever touched).
    #[arg(long, value_name = "N", default_value_t = 12, requires = "record_dir",
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub keep: u64,

    /// Locks with their own series in vmap_trace_lock_wait_seconds, chosen by wait; the rest
    /// is summed into lock="(other)". 0 keeps only the aggregate.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub top_locks: u64,

    /// Also expose the tasks that waited most (comm and tid labels, top 10). Off by default:
    /// tids are unbounded, short-lived label values.
    #[arg(long)]
    pub per_task: bool,

    /// Also time every vmap lock acquisition and hold around the lock calls themselves
    /// (vmap_trace_vmap_lock_acquire_seconds / _hold_seconds). Needs kprobes or fentry and
    /// probes every spin_lock/mutex_lock in the system: see docs/performance.md for its cost.
    #[arg(long)]
    pub lock_timing: bool,

    #[command(flatten)]
    pub stacks: super::stack_capture::StackCaptureArgs,

    /// Log line format on stderr: `journald` (`<6>message`, no timestamps), `plain`
    /// (`vmap-trace: info: message`), or `auto` (journald when stderr is the journal).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "auto")]
    pub log_format: LogFormat,
}

impl DaemonArgs {
    pub fn config(&self) -> DaemonConfig {
        DaemonConfig {
            listen: self.listen,
            limits: ServerLimits {
                max_connections: self.max_connections as usize,
                header_timeout: Duration::from_secs(self.header_timeout),
                idle_timeout: Duration::from_secs(self.idle_timeout),
            },
            record: self.record_dir.as_ref().map(|dir| RecordConfig {
                dir: dir.clone(),
                every: Duration::from_secs(self.record_every),
                keep: self.keep as usize,
            }),
            metrics: MetricsOptions {
                top_locks: self.top_locks as usize,
                per_task: self.per_task,
            },
            probes: self.stacks.apply(ProbeOptions {
                lock_timing: self.lock_timing,
                ..ProbeOptions::default()
            }),
            log: Logger::new(self.log_format),
        }
    }
}

/// `--listen`: an address, or a host name resolved now (a usage error if it resolves to
/// nothing), so `localhost:9464` works as it does for Prometheus' own targets.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let resolved = value.to_socket_addrs().map_err(|e| {
        format!("{e} (expected HOST:PORT or ADDRESS:PORT, e.g. localhost:9464 or 127.0.0.1:9464)")
    })?;
    prefer_ipv4(resolved.collect()).ok_or_else(|| format!("{value} resolves to no address"))
}

/// The first IPv4 address, else the first: `localhost` is then 127.0.0.1, the default's
/// address, which is what a scraper configured with 127.0.0.1 reaches.
fn prefer_ipv4(addrs: Vec<SocketAddr>) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

pub fn run(args: DaemonArgs) -> Result<()> {
    crate::daemon::run(args.config())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DaemonArgs,
    }

    fn parse(argv: &[&str]) -> Result<DaemonArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("daemon").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap().config();
        assert_eq!(config.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(config.limits, ServerLimits::default());
        assert_eq!(config.record, None);
        assert_eq!(
            config.metrics,
            MetricsOptions {
                top_locks: 16,
                per_task: false
            }
        );
        let defaults = ProbeOptions {
            stack_depth: Some(vmap_trace_common::DEFAULT_STACK_DEPTH),
            stack_samples: Some(vmap_trace_common::DEFAULT_STACK_SAMPLES),
            stack_keys: Some(vmap_trace_common::MAX_STACK_KEYS),
            other_lock_period: Some(vmap_trace_common::DEFAULT_OTHER_LOCK_PERIOD),
            ..ProbeOptions::default()
        };
        assert_eq!(config.probes, defaults);
        let all = parse(&["--sample-other-locks", "1"]).unwrap().config();
        assert_eq!(all.probes.other_lock_period, Some(1));
        assert!(parse(&["--sample-other-locks", "0"]).is_err());
        let big = parse(&["--stack-keys", "100000"]).unwrap().config();
        assert_eq!(big.probes.stack_keys, Some(100_000));
        assert_eq!(big.probes.stack_keying().table_entries, 100_000);
        assert!(parse(&["--stack-keys", "7"]).is_err());
        let exact = parse(&["--stack-samples", "0", "--stack-depth", "8"])
            .unwrap()
            .config();
        assert_eq!(
            (exact.probes.stack_samples, exact.probes.stack_depth),
            (Some(0), Some(8))
        );
        assert!(
            parse(&["--stack-depth", "0"]).is_err() && parse(&["--stack-depth", "49"]).is_err()
        );
    }

    #[test]
    fn recording_flags() {
        let config = parse(&[
            "--record-dir",
            "/tmp/x",
            "--record-every",
            "60",
            "--keep",
            "3",
            "--per-task",
            "--top-locks",
            "4",
            "--lock-timing",
        ])
        .unwrap()
        .config();
        assert_eq!(
            config.record,
            Some(RecordConfig {
                dir: "/tmp/x".into(),
                every: Duration::from_secs(60),
                keep: 3
            })
        );
        assert_eq!(
            config.metrics,
            MetricsOptions {
                top_locks: 4,
                per_task: true
            }
        );
        assert!(config.probes.lock_timing);
    }

    #[test]
    fn bad_input_is_rejected_by_the_parser() {
        for argv in [
            &["--listen", "nonsense"][..],
            &["--listen", "127.0.0.1"],
            &["--listen", "127.0.0.1:99999"],
            &["--record-dir", "/tmp/x", "--keep", "0"],
            &["--record-dir", "/tmp/x", "--record-every", "0"],
            &["--record-every", "10"],
            &["--keep", "2"],
            &["--log-format", "colour"],
            &["--top-locks", "-1"],
            &["--max-connections", "0"],
            &["--header-timeout", "0"],
            &["--idle-timeout", "0"],
            &["--listen", "localhost"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?} should be rejected");
        }
    }

    #[test]
    fn listen_accepts_host_names_and_prefers_ipv4() {
        let config = parse(&["--listen", "localhost:9464"]).unwrap().config();
        assert_eq!(config.listen, "127.0.0.1:9464".parse().unwrap());
        let v6 = parse(&["--listen", "[::1]:0"]).unwrap().config();
        assert_eq!(v6.listen, "[::1]:0".parse().unwrap());
        let both = vec!["[::1]:1".parse().unwrap(), "127.0.0.1:1".parse().unwrap()];
        assert_eq!(prefer_ipv4(both), Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(
            prefer_ipv4(vec!["[::1]:1".parse().unwrap()]),
            Some("[::1]:1".parse().unwrap())
        );
        assert_eq!(prefer_ipv4(Vec::new()), None);
        let err = parse(&["--listen", "localhost"]).err().unwrap().to_string();
        assert!(
            err.contains("--listen") && err.contains("HOST:PORT"),
            "{err}"
        );
    }

    #[test]
    fn server_limit_flags() {
        let config = parse(&[
            "--max-connections",
            "8",
            "--header-timeout",
            "3",
            "--idle-timeout",
            "20",
        ])
        .unwrap()
        .config();
        assert_eq!(
            config.limits,
            ServerLimits {
                max_connections: 8,
                header_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(20),
            }
        );
    }
}
