//! The daemon's life: check the outputs, bind, attach, serve until SIGTERM, SIGINT or SIGHUP,
//! write the last recording, detach.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use super::connections::ServerLimits;
use super::exposition::MetricsOptions;
use super::fds;
use super::log::{Level, Logger};
use super::recorder::RecordingRotation;
use super::sampler::{ProfileSource, RecordingSchedule, Sampler, SamplerOptions};
use super::server;
use crate::probe::ProbeOptions;
use crate::profile::HookStatus;
use crate::session::TraceSession;

/// Periodic recordings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    pub dir: PathBuf,
    pub every: Duration,
    pub keep: usize,
}

/// Everything `vmap-trace daemon` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    /// Connection cap and deadlines of the HTTP server.
    pub limits: ServerLimits,
    pub record: Option<RecordConfig>,
    pub metrics: MetricsOptions,
    /// What to attach beyond the tracepoints (vmap function latency, `--lock-timing`).
    pub probes: ProbeOptions,
    pub log: Logger,
}

/// Run with the live tracing session until SIGTERM, SIGINT or SIGHUP.
pub fn run(config: DaemonConfig) -> Result<()> {
    let (log, probes) = (config.log, config.probes);
    run_with(config, move || start_session(probes, log))
}

/// Attach the probes and say how each hook is attached.
fn start_session(probes: ProbeOptions, log: Logger) -> Result<TraceSession> {
    let session = TraceSession::start_with(probes)?;
    for line in hook_lines(session.hooks()) {
        log.log(line.0, line.1);
    }
    if session.hooks().iter().all(|h| h.mechanism.is_none()) {
        bail!("no hook could be attached; run `vmap-trace doctor` to see why");
    }
    Ok(session)
}

/// One line per attached hook, and one per distinct reason for the unavailable ones (a kernel
/// without kprobes refuses a dozen function hooks for the same reason).
fn hook_lines(hooks: &[HookStatus]) -> Vec<(Level, String)> {
    let mut lines = Vec::new();
    let mut unavailable: Vec<(&str, Vec<&str>)> = Vec::new();
    for h in hooks {
        match h.mechanism {
            Some(m) => lines.push((
                Level::Info,
                format!("{} attached via {}", h.hook, m.label()),
            )),
            None => {
                let why = h
                    .rejected
                    .last()
                    .map_or("unknown reason", |r| r.reason.as_str());
                match unavailable.iter_mut().find(|(w, _)| *w == why) {
                    Some((_, names)) => names.push(&h.hook),
                    None => unavailable.push((why, vec![&h.hook])),
                }
            }
        }
    }
    for (why, names) in unavailable {
        lines.push((
            Level::Warning,
            format!("unavailable: {}: {why}", names.join(", ")),
        ));
    }
    lines
}

/// The daemon around any profile source (the live session, or a fake in tests).
pub fn run_with<S, F>(config: DaemonConfig, make_source: F) -> Result<()>
where
    S: ProfileSource,
    F: FnOnce() -> Result<S> + Send + 'static,
{
    let log = config.log;
    if let Some(warning) = exposure_warning(config.listen) {
        log.warning(warning);
    }
    // Every check that can fail on bad input happens before the probes are attached.
    let recording = match &config.record {
        Some(r) => Some(RecordingSchedule {
            rotation: RecordingRotation::open(&r.dir, r.keep)?,
            every: r.every,
        }),
        None => None,
    };
    let nofile = raise_fd_limit(log);
    let listener = server::bind(config.listen)?;
    let bound = listener
        .local_addr()
        .context("cannot read the listening address")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Install the handlers before the (slow) attach, so a SIGTERM during start-up is not fatal
    // but a prompt, clean stop.
    let stop = {
        let _guard = runtime.enter();
        StopSignals::install()?
    };

    let sampler = Sampler::spawn(
        make_source,
        SamplerOptions {
            metrics: config.metrics,
            recording: recording.clone(),
        },
        log,
    )?;
    let limits = connection_limits(config.limits, nofile, log);
    log.info(format!("serving metrics on http://{bound}/metrics"));
    match &recording {
        Some(r) => log.info(format!(
            "writing a recording to {} every {} s, keeping the newest {}",
            r.rotation.dir().display(),
            r.every.as_secs_f64(),
            r.rotation.keep()
        )),
        None => log.info("no --record-dir: metrics only"),
    }

    let served = runtime.block_on(async {
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
        let shutdown = async move {
            let name = stop.wait().await;
            let _ = stopped_tx.send(name);
        };
        let router = server::router(sampler.client());
        let result = server::serve(listener, router, limits, log, shutdown).await;
        (result, stopped_rx.await.ok())
    });
    match &served {
        (_, Some(signal)) => log.info(format!(
            "received {signal}: writing the last data and detaching"
        )),
        (Err(e), None) => log.error(format!("{e:#}: writing the last data and detaching")),
        (Ok(()), None) => {}
    }
    let report = sampler.shutdown()?;
    if let Some(summary) = &report.summary {
        log.info(format!("final totals: {summary}"));
    }
    let flushed = match report.final_recording {
        Some(Ok(path)) => {
            log.info(format!("wrote the last recording {}", path.display()));
            Ok(())
        }
        Some(Err(e)) => Err(anyhow::anyhow!("the last recording was not written: {e}")),
        None => Ok(()),
    };
    log.info("probes detached; exiting");
    served.0?;
    flushed
}

/// The warning for an address other machines can reach: the metrics have no authentication.
pub fn exposure_warning(listen: SocketAddr) -> Option<String> {
    (!listen.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "--listen {listen} is not a loopback address: /metrics will be reachable from the \
             network, without authentication or TLS; use 127.0.0.1 (the default) unless a \
             firewall or the network decides who may connect"
        )
    })
}

/// Raise the soft descriptor limit (see `fds`); returns the limit in force.
fn raise_fd_limit(log: Logger) -> Option<fds::NofileLimit> {
    match fds::raise_nofile_limit() {
        Ok((before, after)) => {
            if after.soft != before.soft {
                log.info(format!(
                    "file descriptor limit raised from {} to {}",
                    before.soft, after.soft
                ));
            }
            Some(after)
        }
        Err(e) => {
            log.warning(format!(
                "cannot read or raise the file descriptor limit: {e}"
            ));
            None
        }
    }
}

/// The limits to serve with: `--max-connections`, lowered if the descriptor limit cannot hold
/// that many beside what is open now (after attach) and the reserve for recordings.
fn connection_limits(
    asked: ServerLimits,
    nofile: Option<fds::NofileLimit>,
    log: Logger,
) -> ServerLimits {
    let (Some(nofile), Ok(open)) = (nofile, fds::open_fds()) else {
        return asked;
    };
    let cap = fds::connection_cap(asked.max_connections, nofile.soft, open);
    let line = format!(
        "at most {cap} connections (file descriptors: limit {}, {open} open, {} reserved for \
         recordings and map reads); header timeout {} s, idle timeout {} s",
        nofile.soft,
        fds::FD_RESERVE,
        asked.header_timeout.as_secs_f64(),
        asked.idle_timeout.as_secs_f64()
    );
    if cap < asked.max_connections {
        log.warning(format!(
            "{line}: fewer than --max-connections {}; raise LimitNOFILE to allow more",
            asked.max_connections
        ));
    } else {
        log.info(line);
    }
    ServerLimits {
        max_connections: cap,
        ..asked
    }
}

/// SIGTERM, SIGINT and SIGHUP as one future. SIGHUP (the terminal or ssh session closed)
/// would otherwise kill the daemon without its last recording.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
        })
    }

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::log::LogFormat;
    use crate::daemon::sampler::tests::fake;

    fn config(listen: &str, record: Option<RecordConfig>) -> DaemonConfig {
        DaemonConfig {
            listen: listen.parse().unwrap(),
            limits: ServerLimits::default(),
            record,
            metrics: MetricsOptions::default(),
            probes: ProbeOptions::default(),
            log: Logger::new(LogFormat::Plain),
        }
    }

    #[test]
    fn unavailable_hooks_are_grouped_by_reason() {
        use crate::profile::{Mechanism, Rejection};
        let hook = |name: &str, mechanism, reason: &str| HookStatus {
            hook: name.into(),
            mechanism,
            rejected: vec![Rejection::new(Mechanism::Kprobe, reason)],
        };
        let lines = hook_lines(&[
            hook("lock:contention_begin", Some(Mechanism::TpBtf), "-"),
            hook("fn:a", None, "no kprobe PMU"),
            hook("fn:b", None, "no kprobe PMU"),
            hook("fn:c", None, "other reason"),
        ]);
        assert_eq!(
            lines,
            vec![
                (
                    Level::Info,
                    "lock:contention_begin attached via tp_btf".to_string()
                ),
                (
                    Level::Warning,
                    "unavailable: fn:a, fn:b: no kprobe PMU".to_string()
                ),
                (
                    Level::Warning,
                    "unavailable: fn:c: other reason".to_string()
                ),
            ]
        );
    }

    #[test]
    fn only_addresses_beyond_loopback_are_warned_about() {
        for local in [
            "127.0.0.1:9464",
            "127.1.2.3:1",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(exposure_warning(local.parse().unwrap()), None, "{local}");
        }
        for exposed in ["0.0.0.0:9464", "[::]:9464", "192.0.2.1:9464"] {
            let warning = exposure_warning(exposed.parse().unwrap()).expect(exposed);
            assert!(
                warning.contains(exposed) && warning.contains("without authentication"),
                "{warning}"
            );
        }
    }

    #[test]
    fn bad_record_dir_fails_before_attaching() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let record = RecordConfig {
            dir: file.join("sub"),
            every: Duration::from_secs(1),
            keep: 1,
        };
        let err = run_with(
            config("127.0.0.1:0", Some(record)),
            || -> Result<crate::daemon::sampler::tests::FakeSource> { panic!("must not attach") },
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("--record-dir"), "{err:#}");
    }

    #[test]
    fn taken_port_fails_before_attaching() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (source, snapshots, _) = fake();
        let err = run_with(
            config(&taken.local_addr().unwrap().to_string(), None),
            move || Ok(source),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot listen"), "{err}");
        assert_eq!(snapshots.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
