//! Runs the drivers of a workload, watches the deadline and the stop flag, samples progress
//! and assembles the [`StressResult`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::driver::{DriverContext, KindCounters};
use super::{bpfmap, fork, mix, pty, rate_per_sec, threads};
use super::{KindResult, StressConfig, StressResult, WorkloadKind};

/// How often the supervisor looks at the stop flag and the deadline. Small enough that
/// Ctrl-C feels immediate and a 1 s run ends within a few ms of its deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Sets the halt flag when dropped, panics included.
struct HaltOnDrop<'a>(&'a AtomicBool);

impl Drop for HaltOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Progress of one basic workload at a sampling point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindProgress {
    pub kind: WorkloadKind,
    /// Ops completed since the start.
    pub ops: u64,
    /// Ops per second since the previous sample.
    pub ops_per_sec: f64,
    pub failed_ops: u64,
}

/// Handed to the progress callback every `config.progress_interval`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressSample {
    #[serde(rename = "elapsed_secs", serialize_with = "super::serialize_secs")]
    pub elapsed: Duration,
    pub per_kind: Vec<KindProgress>,
}

/// Run `kind` for `config.duration`, or until `stop` becomes true (checked every 10 ms).
///
/// Blocks the calling thread; spawns `config.drivers` driver threads (for `mix`, at least
/// four) and joins them before returning, so every child is reaped and every fd closed.
/// Fails on an invalid config or on an error that retrying cannot fix (e.g. EPERM from
/// bpf(2)); transient failures (EAGAIN, ENOMEM, EMFILE, ...) are counted in the result.
pub fn run_workload(
    kind: WorkloadKind,
    config: &StressConfig,
    stop: &AtomicBool,
) -> anyhow::Result<StressResult> {
    run_workload_with_progress(kind, config, stop, |_| {})
}

/// [`run_workload`], calling `on_progress` every `config.progress_interval`.
pub fn run_workload_with_progress(
    kind: WorkloadKind,
    config: &StressConfig,
    stop: &AtomicBool,
    mut on_progress: impl FnMut(&ProgressSample),
) -> anyhow::Result<StressResult> {
    config.validate()?;
    super::limits::check_system(kind, config)?;
    let plan = mix::driver_plan(kind, config.drivers);
    let counters: Vec<KindCounters> = plan.iter().map(|_| KindCounters::default()).collect();
    // Tells every driver to finish its current round and return.
    let halt = AtomicBool::new(false);

    let start = Instant::now();
    // A duration too large to add to "now" means "until stopped".
    let deadline = start.checked_add(config.duration);
    let mut stopped_early = false;

    let (elapsed, driver_error) = std::thread::scope(|scope| {
        // However this closure ends (a panic in `on_progress` included), the drivers are told
        // to stop, or the scope would wait for them forever.
        let _halt_on_exit = HaltOnDrop(&halt);
        let mut drivers: Vec<(WorkloadKind, ScopedJoinHandle<'_, anyhow::Result<()>>)> = Vec::new();
        let mut spawn_error = None;
        'spawn: for ((kind, count), counters) in plan.iter().copied().zip(&counters) {
            for index in 0..count {
                let ctx = DriverContext::new(&halt, counters, config.live_for(kind));
                let halt = &halt;
                let spawned = std::thread::Builder::new()
                    .name(format!("stress-{kind}-{index}"))
                    .spawn_scoped(scope, move || {
                        let result = run_driver(kind, &ctx, config);
                        if result.is_err() {
                            halt.store(true, Ordering::SeqCst); // stop the others too
                        }
                        result
                    });
                match spawned {
                    Ok(handle) => drivers.push((kind, handle)),
                    Err(error) => {
                        spawn_error =
                            Some(anyhow::Error::new(error).context("spawning a driver thread"));
                        break 'spawn;
                    }
                }
            }
        }

        if spawn_error.is_none() {
            let mut sampler = ProgressSampler::new(start, &plan, config.progress_interval);
            loop {
                if stop.load(Ordering::SeqCst) {
                    stopped_early = true;
                    break;
                }
                let now = Instant::now();
                if halt.load(Ordering::SeqCst) || deadline.is_some_and(|d| now >= d) {
                    break;
                }
                if let Some(sample) = sampler.sample_if_due(now, &counters) {
                    on_progress(&sample);
                }
                let mut nap = POLL_INTERVAL.min(sampler.next_due.saturating_duration_since(now));
                if let Some(deadline) = deadline {
                    nap = nap.min(deadline.saturating_duration_since(now));
                }
                std::thread::sleep(nap);
            }
        }
        halt.store(true, Ordering::SeqCst);

        let mut first_error = spawn_error;
        for (kind, handle) in drivers {
            let outcome = match handle.join() {
                Ok(outcome) => outcome,
                Err(_) => Err(anyhow::anyhow!("a {kind} driver thread panicked")),
            };
            if let Err(error) = outcome {
                first_error.get_or_insert(error.context(format!("stress {kind} failed")));
            }
        }
        (start.elapsed(), first_error)
    });

    if let Some(error) = driver_error {
        return Err(error);
    }

    let per_kind: Vec<KindResult> = plan
        .iter()
        .zip(&counters)
        .map(|(&(kind, drivers), counters)| {
            let ops = counters.ops.load(Ordering::Relaxed);
            KindResult {
                kind,
                op: kind.op_description(),
                drivers,
                live_per_driver: config.live_for(kind),
                ops,
                ops_per_sec: rate_per_sec(ops, elapsed),
                failed_ops: counters.failed_ops.load(Ordering::Relaxed),
                last_error: counters.last_error.lock().ok().and_then(|e| e.clone()),
            }
        })
        .collect();
    let ops = per_kind.iter().map(|k| k.ops).sum();
    Ok(StressResult {
        workload: kind,
        ops,
        elapsed,
        ops_per_sec: rate_per_sec(ops, elapsed),
        stopped_early,
        failed_ops: per_kind.iter().map(|k| k.failed_ops).sum(),
        per_kind,
        config: config.clone(),
    })
}

fn run_driver(
    kind: WorkloadKind,
    ctx: &DriverContext<'_>,
    config: &StressConfig,
) -> anyhow::Result<()> {
    match kind {
        WorkloadKind::Threads => threads::run_driver(ctx),
        WorkloadKind::Fork => fork::run_driver(ctx),
        WorkloadKind::Pty => pty::run_driver(ctx),
        WorkloadKind::Bpfmap => bpfmap::run_driver(ctx, config.bpf_map),
        // driver_plan never hands out Mix itself, only its parts.
        WorkloadKind::Mix => anyhow::bail!("internal error: mix is not a basic workload"),
    }
}

/// Turns the running counters into per-interval rates.
struct ProgressSampler {
    start: Instant,
    kinds: Vec<WorkloadKind>,
    interval: Duration,
    next_due: Instant,
    previous_at: Instant,
    previous_ops: Vec<u64>,
}

impl ProgressSampler {
    fn new(start: Instant, plan: &[(WorkloadKind, usize)], interval: Duration) -> Self {
        ProgressSampler {
            start,
            kinds: plan.iter().map(|p| p.0).collect(),
            interval,
            next_due: start + interval,
            previous_at: start,
            previous_ops: vec![0; plan.len()],
        }
    }

    fn sample_if_due(&mut self, now: Instant, counters: &[KindCounters]) -> Option<ProgressSample> {
        if now < self.next_due {
            return None;
        }
        let since_previous = now - self.previous_at;
        let per_kind = self
            .kinds
            .iter()
            .zip(counters)
            .zip(&mut self.previous_ops)
            .map(|((&kind, counters), previous)| {
                let ops = counters.ops.load(Ordering::Relaxed);
                let delta = ops.saturating_sub(*previous);
                *previous = ops;
                KindProgress {
                    kind,
                    ops,
                    ops_per_sec: rate_per_sec(delta, since_previous),
                    failed_ops: counters.failed_ops.load(Ordering::Relaxed),
                }
            })
            .collect();
        self.previous_at = now;
        // Skip missed ticks rather than firing a burst of them.
        while self.next_due <= now {
            self.next_due += self.interval;
        }
        Some(ProgressSample {
            elapsed: now - self.start,
            per_kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_reports_interval_rates() {
        let start = Instant::now();
        let plan = [(WorkloadKind::Pty, 1)];
        let counters = vec![KindCounters::default()];
        let mut sampler = ProgressSampler::new(start, &plan, Duration::from_secs(1));
        assert!(sampler
            .sample_if_due(start + Duration::from_millis(500), &counters)
            .is_none());
        counters[0].ops.store(100, Ordering::Relaxed);
        let s = sampler
            .sample_if_due(start + Duration::from_secs(1), &counters)
            .unwrap();
        assert_eq!(s.per_kind[0].ops, 100);
        assert_eq!(s.per_kind[0].ops_per_sec, 100.0);
        counters[0].ops.store(400, Ordering::Relaxed);
        // Late by 1.5 intervals: one sample, rate over the real 2.5 s.
        let s = sampler
            .sample_if_due(start + Duration::from_millis(3500), &counters)
            .unwrap();
        assert_eq!(s.per_kind[0].ops_per_sec, 300.0 / 2.5);
        assert_eq!(sampler.next_due, start + Duration::from_secs(4));
    }

    #[test]
    fn invalid_config_is_an_error_not_a_panic() {
        let config = StressConfig {
            drivers: 0,
            ..StressConfig::default()
        };
        let never = AtomicBool::new(false);
        let err = run_workload(WorkloadKind::Pty, &config, &never).unwrap_err();
        assert!(err.to_string().contains("--threads"), "{err}");
    }

    #[test]
    fn a_preset_stop_flag_ends_the_run_at_once() {
        let config = StressConfig::new(Duration::from_secs(60));
        let stop = AtomicBool::new(true);
        // Threads need no privileges, so this runs anywhere.
        let result = run_workload(WorkloadKind::Threads, &config, &stop).unwrap();
        assert!(result.stopped_early);
        assert!(result.elapsed < Duration::from_secs(5));
    }

    #[test]
    fn threads_workload_runs_unprivileged() {
        let mut config = StressConfig::new(Duration::from_millis(200));
        config.drivers = 2;
        config.live_per_driver = Some(4);
        let result = run_for_test(WorkloadKind::Threads, &config);
        assert!(result.ops > 0);
        assert_eq!(result.per_kind.len(), 1);
        assert_eq!(result.per_kind[0].drivers, 2);
        assert!(!result.stopped_early);
    }

    #[test]
    fn a_panicking_progress_callback_stops_the_drivers() {
        // Before the halt guard, the scope waited forever for drivers nobody told to stop.
        let mut config = StressConfig::new(Duration::from_secs(3600));
        config.drivers = 2;
        config.live_per_driver = Some(2);
        config.progress_interval = Duration::from_millis(20);
        let never = AtomicBool::new(false);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_workload_with_progress(WorkloadKind::Threads, &config, &never, |_| {
                panic!("progress output failed")
            })
        }));
        assert!(outcome.is_err(), "the callback's panic propagates");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn more_than_the_system_allows_is_refused_before_starting() {
        let mut config = StressConfig::new(Duration::from_secs(3600));
        config.drivers = crate::stress::MAX_DRIVERS;
        config.live_per_driver = Some(crate::stress::MAX_LIVE_PER_DRIVER);
        let never = AtomicBool::new(false);
        let err = run_workload(WorkloadKind::Threads, &config, &never).unwrap_err();
        assert!(
            err.to_string().contains("tasks (threads and processes)"),
            "{err}"
        );
    }

    fn run_for_test(kind: WorkloadKind, config: &StressConfig) -> StressResult {
        super::super::run_for(kind, config).unwrap()
    }
}
