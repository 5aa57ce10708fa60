//! The thread that owns the tracing session: reads the kernel maps when a scrape or a
//! recording needs them, keeps the rendered metrics, writes recordings, and on shutdown takes
//! the last snapshot, writes the last recording and detaches.
//!
//! One thread owns everything that touches the kernel (the session is created on it and never
//! moves), so scrapes never race map reads and the lock-series state is updated in order.
//! Scrapes arriving within [`MIN_REFRESH_INTERVAL`] of a map read share it: a scrape storm
//! costs one read per interval, and an idle daemon reads nothing.
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use tokio::sync::oneshot;

use super::exposition::{DaemonStats, MetricsBuilder, MetricsOptions};
use super::log::Logger;
use super::recorder::RecordingRotation;
use crate::profile::Profile;
use crate::session::TraceSession;

/// Scrapes within this long of the last map read reuse it.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Where cumulative profiles come from: the live session, or a fake in tests.
pub trait ProfileSource {
    fn snapshot(&mut self) -> Result<Profile>;
}

impl ProfileSource for TraceSession {
    fn snapshot(&mut self) -> Result<Profile> {
        TraceSession::snapshot(self)
    }
}

/// Periodic recordings.
#[derive(Debug, Clone)]
pub struct RecordingSchedule {
    pub rotation: RecordingRotation,
    pub every: Duration,
}

#[derive(Debug, Clone)]
pub struct SamplerOptions {
    pub metrics: MetricsOptions,
    pub recording: Option<RecordingSchedule>,
}

enum Request {
    Metrics(oneshot::Sender<Result<Arc<String>, String>>),
    Shutdown(mpsc::Sender<ShutdownReport>),
}

/// What the sampler did on its way out.
#[derive(Debug)]
pub struct ShutdownReport {
    /// The last recording, or why it could not be written; None without --record-dir.
    pub final_recording: Option<Result<std::path::PathBuf, String>>,
    /// One-line summary of the final snapshot (None if it failed).
    pub summary: Option<String>,
}

/// Asks the sampler for metrics; cheap to clone into every request handler.
#[derive(Clone, Debug)]
pub struct MetricsClient {
    requests: mpsc::Sender<Request>,
}

impl MetricsClient {
    /// The current exposition text, refreshed if older than [`MIN_REFRESH_INTERVAL`].
    pub async fn metrics(&self) -> Result<Arc<String>> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Metrics(tx))
            .map_err(|_| anyhow!("the sampler has stopped"))?;
        rx.await
            .map_err(|_| anyhow!("the sampler has stopped"))?
            .map_err(|e| anyhow!(e))
    }
}

/// The running sampler thread.
pub struct Sampler {
    client: MetricsClient,
    thread: JoinHandle<()>,
}

impl Sampler {
    /// Start the thread, create the source on it, and return once the source exists and has
    /// been read once (or with its creation error).
    pub fn spawn<S, F>(make_source: F, options: SamplerOptions, log: Logger) -> Result<Sampler>
    where
        S: ProfileSource,
        F: FnOnce() -> Result<S> + Send + 'static,
    {
        let (requests, inbox) = mpsc::channel();
        let (started_tx, started_rx) = mpsc::channel::<Result<()>>();
        let thread = std::thread::Builder::new()
            .name("vmap-trace-sampler".into())
            .spawn(move || {
                let source = match make_source() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let mut sampler = SamplerLoop::new(source, options, log);
                sampler.first_read();
                let _ = started_tx.send(Ok(()));
                sampler.run(inbox);
            })
            .context("cannot start the sampler thread")?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Sampler {
                client: MetricsClient { requests },
                thread,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(anyhow!("the sampler thread died while starting"))
            }
        }
    }

    pub fn client(&self) -> MetricsClient {
        self.client.clone()
    }

    /// Final snapshot and recording, then detach (the source is dropped on the thread).
    pub fn shutdown(self) -> Result<ShutdownReport> {
        let (tx, rx) = mpsc::channel();
        self.client
            .requests
            .send(Request::Shutdown(tx))
            .map_err(|_| anyhow!("the sampler thread has died"))?;
        let report = rx
            .recv()
            .map_err(|_| anyhow!("the sampler thread died during shutdown"))?;
        self.thread
            .join()
            .map_err(|_| anyhow!("the sampler thread panicked"))?;
        Ok(report)
    }
}

struct SamplerLoop<S> {
    source: S,
    builder: MetricsBuilder,
    recording: Option<RecordingSchedule>,
    stats: DaemonStats,
    log: Logger,
    /// The last rendered exposition and when its snapshot was taken.
    rendered: Option<(Instant, Arc<String>)>,
    /// One-line summary of the last snapshot, for the shutdown log.
    last_summary: String,
}

impl<S: ProfileSource> SamplerLoop<S> {
    fn new(source: S, options: SamplerOptions, log: Logger) -> Self {
        SamplerLoop {
            source,
            builder: MetricsBuilder::new(options.metrics),
            recording: options.recording,
            stats: DaemonStats::default(),
            log,
            rendered: None,
            last_summary: String::new(),
        }
    }

    /// A first read right after attach, before the daemon says it serves: the limitations of
    /// this kernel and session go to the log once, a first scrape is served from it, and the
    /// daemon is idle from then on.
    fn first_read(&mut self) {
        if let Ok(profile) = self.refresh() {
            for note in &profile.meta.notes {
                self.log.info(format!("note: {note}"));
            }
        }
    }

    fn run(mut self, inbox: mpsc::Receiver<Request>) {
        let mut next_recording = self.recording.as_ref().map(|r| Instant::now() + r.every);
        loop {
            let request = match next_recording {
                Some(at) => inbox.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => inbox
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match request {
                Ok(Request::Metrics(reply)) => {
                    let fresh = self
                        .rendered
                        .as_ref()
                        .is_some_and(|(at, _)| at.elapsed() < MIN_REFRESH_INTERVAL);
                    let result = if fresh {
                        Ok(())
                    } else {
                        self.refresh()
                            .map(drop)
                            .map_err(|e| format!("cannot read the kernel maps: {e:#}"))
                    };
                    let text = result.and_then(|()| {
                        self.rendered
                            .as_ref()
                            .map(|(_, text)| text.clone())
                            .ok_or_else(|| "no metrics yet".to_string())
                    });
                    let _ = reply.send(text);
                    if !fresh {
                        return_freed_memory();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let (Ok(profile), Some(schedule)) = (self.refresh(), self.recording.clone())
                    {
                        // A failure is logged and counted in the metrics; the daemon keeps going.
                        let _ = self.record(&profile, &schedule.rotation);
                    }
                    return_freed_memory();
                    let every = self.recording.as_ref().map_or(Duration::MAX, |r| r.every);
                    next_recording = next_recording.map(|at| (at + every).max(Instant::now()));
                }
                Ok(Request::Shutdown(reply)) => {
                    let _ = reply.send(self.shutdown());
                    return;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Every client is gone without asking for a shutdown: still flush.
                    self.shutdown();
                    return;
                }
            }
        }
    }

    /// Read the maps and render; the profile is returned for recordings.
    fn refresh(&mut self) -> Result<Profile> {
        let started = Instant::now();
        let profile = match self.source.snapshot() {
            Ok(p) => p,
            Err(e) => {
                self.stats.snapshot_failures += 1;
                self.log
                    .warning(format!("cannot read the kernel maps: {e:#}"));
                return Err(e);
            }
        };
        self.stats.snapshots += 1;
        self.stats.last_snapshot_seconds = started.elapsed().as_secs_f64();
        let exposition = self.builder.build(&profile, &self.stats);
        self.last_summary = super::exposition::summary(&exposition);
        self.rendered = Some((started, Arc::new(exposition.render())));
        Ok(profile)
    }

    fn record(
        &mut self,
        profile: &Profile,
        rotation: &RecordingRotation,
    ) -> Result<std::path::PathBuf, String> {
        match rotation.write(profile, SystemTime::now()) {
            Ok(path) => {
                self.stats.recordings_written += 1;
                Ok(path)
            }
            Err(e) => {
                self.stats.recording_failures += 1;
                let message = format!("{e:#}");
                self.log.error(format!("recording failed: {message}"));
                Err(message)
            }
        }
    }

    fn shutdown(mut self) -> ShutdownReport {
        let snapshot = self.refresh();
        let summary = snapshot.is_ok().then(|| self.last_summary.clone());
        let final_recording = match (&snapshot, self.recording.clone()) {
            (Ok(profile), Some(schedule)) => Some(self.record(profile, &schedule.rotation)),
            (Err(e), Some(_)) => Some(Err(format!("no final snapshot: {e:#}"))),
            (_, None) => None,
        };
        // Dropping the source detaches the programs; do it before reporting success.
        drop(self.source);
        ShutdownReport {
            final_recording,
            summary,
        }
    }
}

/// Give the memory freed after a map read or a recording back to the system.
///
/// Each read builds a whole profile and each recording encodes it into one buffer, both a few
/// MiB and growing with the kernel maps' fill; glibc keeps such freed blocks in the heap (its
/// mmap threshold rises after the first large free), so without this the RSS ratchets up to
/// the largest transient ever seen. Cheap next to the map read it follows.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::daemon::log::LogFormat;
    use crate::profile::tests::sample_profile;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source whose allocation count grows by 1000 per snapshot; counts snapshots and
    /// whether it was dropped.
    pub(crate) struct FakeSource {
        pub snapshots: Arc<AtomicUsize>,
        pub dropped: Arc<AtomicUsize>,
        pub fail: bool,
    }

    impl ProfileSource for FakeSource {
        fn snapshot(&mut self) -> Result<Profile> {
            if self.fail {
                anyhow::bail!("map read failed");
            }
            let n = self.snapshots.fetch_add(1, Ordering::SeqCst) as u64 + 1;
            let mut p = sample_profile();
            p.ops.allocs = 1000 * n;
            Ok(p)
        }
    }

    impl Drop for FakeSource {
        fn drop(&mut self) {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn fake() -> (FakeSource, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let snapshots = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        (
            FakeSource {
                snapshots: snapshots.clone(),
                dropped: dropped.clone(),
                fail: false,
            },
            snapshots,
            dropped,
        )
    }

    fn options(recording: Option<RecordingSchedule>) -> SamplerOptions {
        SamplerOptions {
            metrics: MetricsOptions::default(),
            recording,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn scrapes_within_the_interval_share_one_map_read() {
        let (source, snapshots, dropped) = fake();
        let sampler = Sampler::spawn(
            move || Ok(source),
            options(None),
            Logger::new(LogFormat::Plain),
        )
        .unwrap();
        let client = sampler.client();
        let a = block_on(client.metrics()).unwrap();
        let b = block_on(client.metrics()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(snapshots.load(Ordering::SeqCst), 1);
        assert!(a.contains("vmap_trace_vmalloc_allocs_total 1000"));
        std::thread::sleep(MIN_REFRESH_INTERVAL);
        let c = block_on(client.metrics()).unwrap();
        assert!(
            c.contains("vmap_trace_vmalloc_allocs_total 2000"),
            "refreshed after the interval"
        );
        assert_eq!(snapshots.load(Ordering::SeqCst), 2);
        let report = sampler.shutdown().unwrap();
        assert!(report.final_recording.is_none());
        assert!(
            report.summary.unwrap().contains("3000 allocs"),
            "final snapshot taken"
        );
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "source dropped (programs detached)"
        );
    }

    #[test]
    fn periodic_and_final_recordings_are_written_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let rotation = RecordingRotation::open(dir.path(), 2).unwrap();
        let schedule = RecordingSchedule {
            rotation: rotation.clone(),
            every: Duration::from_millis(300),
        };
        let (source, snapshots, _) = fake();
        let sampler = Sampler::spawn(
            move || Ok(source),
            options(Some(schedule)),
            Logger::new(LogFormat::Plain),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        let periodic = snapshots.load(Ordering::SeqCst) - 1; // the first read at start
        assert!(
            (2..=4).contains(&periodic),
            "about 3 periodic snapshots, got {periodic}"
        );
        let report = sampler.shutdown().unwrap();
        let last = report.final_recording.unwrap().unwrap();
        let files = rotation.list().unwrap();
        assert!(!files.is_empty() && files.len() <= 2, "{files:?}");
        assert_eq!(files.last().unwrap(), &last);
        let loaded = crate::profile::recording::load(&last).unwrap();
        assert_eq!(
            loaded.ops.allocs,
            1000 * snapshots.load(Ordering::SeqCst) as u64,
            "the final snapshot"
        );
    }

    #[test]
    fn a_failing_source_gives_errors_not_panics() {
        let (mut source, _, dropped) = fake();
        source.fail = true;
        let sampler = Sampler::spawn(
            move || Ok(source),
            options(None),
            Logger::new(LogFormat::Plain),
        )
        .unwrap();
        let err = block_on(sampler.client().metrics())
            .unwrap_err()
            .to_string();
        assert!(err.contains("map read failed"), "{err}");
        let report = sampler.shutdown().unwrap();
        assert!(report.summary.is_none());
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_source_that_cannot_start_is_an_error() {
        let result = Sampler::spawn(
            || -> Result<FakeSource> { anyhow::bail!("needs root") },
            options(None),
            Logger::new(LogFormat::Plain),
        );
        assert_eq!(result.err().unwrap().to_string(), "needs root");
    }
}
