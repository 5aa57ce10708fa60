//! The verdict line: what the reference model says about the load being measured, e.g.
//! "node-sharded would cut vmap lock wait ~4.0x at this load".
//!
//! The window since the last reset becomes a `model::MeasuredWorkload` (rates over a longer
//! span than one refresh are what a model should be fed) and `model::compare_measured` runs
//! both designs on it. That is a simulation taking from tens of milliseconds to seconds, so it
//! runs on a worker thread (`VerdictWorker`) every `VERDICT_PERIOD`; the screen shows the
//! latest result and what it was computed from.
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use crate::model::{self, Design, KernelVariant, MeasuredWorkload, ModelParams, RunConfig};
use crate::profile::{AllocatorDesign, Profile};

/// How often the model is re-run on the newest window.
pub const VERDICT_PERIOD: Duration = Duration::from_secs(15);

/// Below this much measured time, rates are too noisy to feed the model.
const MIN_WINDOW_SECS: f64 = 5.0;

/// The name of the model's worker thread.
pub const WORKER_THREAD: &str = "vmap-trace-model";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The model's comparison at the measured load, as one sentence.
    Comparison(String),
    /// Being computed for the first time.
    Pending,
    /// No comparison, and why.
    Unavailable(String),
}

impl Verdict {
    pub fn line(&self) -> String {
        match self {
            Verdict::Comparison(text) => format!("model verdict: {text}"),
            Verdict::Pending => {
                "model verdict: running the reference model on the measured load...".into()
            }
            Verdict::Unavailable(why) => format!("model verdict: unavailable ({why})"),
        }
    }
}

/// The window as the model takes it, or why it cannot.
pub fn measured_workload(window: &Profile) -> Result<MeasuredWorkload, String> {
    if window.meta.design != AllocatorDesign::Unknown && window.meta.duration_s() < MIN_WINDOW_SECS
    {
        return Err(format!(
            "needs {MIN_WINDOW_SECS:.0} s of data since the last reset"
        ));
    }
    model::recording::measured_from_profile(window)
}

/// The node-sharded variant a kernel release stands for: 6.9 takes `busy.lock` twice per
/// vmalloc, 6.10 to 6.12 once, later kernels are mainline.
fn variant_of(release: &str) -> KernelVariant {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(6), Some(9)) => KernelVariant::V6_9,
        (Some(6), Some(10..=12)) => KernelVariant::V6_10,
        _ => KernelVariant::Mainline,
    }
}

/// Run the model on `measured` and say it in one sentence.
pub fn assess(measured: &MeasuredWorkload) -> Verdict {
    let cfg = RunConfig {
        design: measured.design,
        variant: variant_of(&measured.kernel_release),
        ..RunConfig::default()
    };
    let report = match model::compare_measured(measured, &ModelParams::default(), &[], &cfg) {
        Ok(r) => r,
        Err(e) => return Verdict::Unavailable(format!("the model failed: {e:#}")),
    };
    let wait_per_s = |r: &model::RunResult| {
        r.locks.iter().map(|l| l.wait_total_ns).sum::<f64>() / (r.simulated_ms / 1e3).max(1e-9)
    };
    let legacy = wait_per_s(&report.recorded.legacy);
    let node = wait_per_s(&report.recorded.node_sharded);
    Verdict::Comparison(sentence(
        measured.design,
        legacy,
        node,
        &super::format::span(measured.duration_s),
    ))
}

/// The verdict from the modelled vmap lock wait per second of each design at the measured load
/// (`span`: how much data it was computed from). Differences within 15% are called the same:
/// the model is not more precise than that.
fn sentence(current: Design, legacy_wait: f64, node_wait: f64, span: &str) -> String {
    let ns = |v: f64| super::format::ns(v);
    let (ours, theirs) = match current {
        Design::Legacy => (legacy_wait, node_wait),
        Design::NodeSharded => (node_wait, legacy_wait),
    };
    let figures = format!(
        "(model: {}/s here vs {}/s, on {span})",
        ns(ours),
        ns(theirs)
    );
    if legacy_wait <= 0.0 && node_wait <= 0.0 {
        return format!("neither design waits on vmap locks at this load (model, on {span})");
    }
    let other = current.other().name();
    let ratio = if theirs > 0.0 {
        ours / theirs
    } else {
        f64::INFINITY
    };
    if (1.0 / 1.15..=1.15).contains(&ratio) {
        format!("{other} would wait about as long on vmap locks at this load {figures}")
    } else if ratio > 1.0 {
        let by = if ratio.is_finite() {
            format!("~{ratio:.1}x")
        } else {
            "to nothing".into()
        };
        format!("{other} would cut vmap lock wait {by} at this load {figures}")
    } else {
        format!(
            "{other} would wait ~{:.1}x longer on vmap locks at this load {figures}",
            1.0 / ratio
        )
    }
}

/// Runs the model off the UI thread: at most one request in flight, the newest result kept.
pub struct VerdictWorker {
    requests: Sender<(u64, MeasuredWorkload)>,
    results: Receiver<(u64, Verdict)>,
    busy: bool,
    last_request: Option<Instant>,
    /// Bumped by `reset`: results for windows from before it are dropped.
    generation: u64,
}

impl VerdictWorker {
    pub fn spawn() -> std::io::Result<VerdictWorker> {
        let (requests, inbox) = mpsc::channel::<(u64, MeasuredWorkload)>();
        let (outbox, results) = mpsc::channel();
        std::thread::Builder::new()
            .name(WORKER_THREAD.into())
            .spawn(move || {
                for (generation, measured) in inbox {
                    let verdict = match std::panic::catch_unwind(|| assess(&measured)) {
                        Ok(v) => v,
                        Err(panic) => Verdict::Unavailable(format!(
                            "the model panicked: {}",
                            super::export::panic_message(&panic)
                        )),
                    };
                    if outbox.send((generation, verdict)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(VerdictWorker {
            requests,
            results,
            busy: false,
            last_request: None,
            generation: 0,
        })
    }

    /// The counters were reset: ask again as soon as the new window allows, and drop any
    /// answer about the old one.
    pub fn reset(&mut self) {
        self.generation += 1;
        self.last_request = None;
    }

    /// Ask for a verdict on `window` if the last one is `VERDICT_PERIOD` old and none is
    /// being computed. Returns a verdict to show at once when the window cannot be modelled.
    pub fn request(&mut self, window: &Profile, now: Instant) -> Option<Verdict> {
        if self.busy
            || self
                .last_request
                .is_some_and(|t| now.duration_since(t) < VERDICT_PERIOD)
        {
            return None;
        }
        match measured_workload(window) {
            Ok(measured) => {
                self.last_request = Some(now);
                self.busy = self.requests.send((self.generation, measured)).is_ok();
                if self.busy {
                    None
                } else {
                    Some(Verdict::Unavailable("the model's worker stopped".into()))
                }
            }
            // Not enough data yet: ask again on the next refresh.
            Err(why) => Some(Verdict::Unavailable(why)),
        }
    }

    /// A finished verdict, if one arrived.
    pub fn poll(&mut self) -> Option<Verdict> {
        match self.results.try_recv() {
            Ok((generation, v)) => {
                self.busy = false;
                (generation == self.generation).then_some(v)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.busy = false;
                Some(Verdict::Unavailable("the model's worker stopped".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use crate::profile::Log2Histogram;
    use crate::profile::{VmapLockTiming, WaitHistogram};

    #[test]
    fn measured_workload_from_a_window() {
        let mut p = sample_profile();
        p.ops.size_pages = Log2Histogram::from_buckets(&[10, 0, 1990]);
        p.ops.allocs_per_cpu = vec![1500, 500];
        let hold = |count, total_ns| WaitHistogram {
            count,
            total_ns,
            ..Default::default()
        };
        p.lock_timing = vec![
            VmapLockTiming {
                name: "vmap_node[0].busy.lock".into(),
                lock_addr: 1,
                wait: hold(10, 1_000),
                hold: hold(10, 3_000),
            },
            VmapLockTiming {
                name: "vmap_node[1].busy.lock".into(),
                lock_addr: 2,
                wait: hold(30, 1_000),
                hold: hold(30, 5_000),
            },
            VmapLockTiming {
                name: "free_vmap_area_lock".into(),
                lock_addr: 3,
                wait: hold(0, 0),
                hold: hold(0, 0),
            },
        ];
        p.meta.duration_ns = 5_000_000_000;
        let m = measured_workload(&p).unwrap();
        assert_eq!((m.design, m.cpus, m.duration_s), (Design::Legacy, 4, 5.0));
        assert_eq!((m.allocs_per_s, m.frees_per_s), (400.0, 398.0));
        assert_eq!(m.size_pages_histogram, vec![(1, 10), (4, 1990)]);
        assert_eq!(m.per_cpu_alloc_share, vec![0.75, 0.25]);
        assert_eq!(m.lookups_per_s, None);
        // both nodes' busy locks in one class: 8 us of hold over 40 acquisitions
        assert_eq!(m.lock_holds.len(), 1);
        assert_eq!(
            (m.lock_holds[0].lock.as_str(), m.lock_holds[0].mean_ns),
            ("vmap_node.busy.lock", 200.0)
        );
        assert_eq!(
            (m.lock_waits[0].count, m.lock_waits[0].total_ns),
            (40, 2_000.0)
        );
        m.validate().unwrap();
    }

    #[test]
    fn windows_the_model_cannot_take() {
        let mut p = sample_profile();
        p.meta.duration_ns = 4_000_000_000;
        assert_eq!(
            measured_workload(&p).unwrap_err(),
            "needs 5 s of data since the last reset"
        );
        p.meta.duration_ns = 5_000_000_000;
        p.ops.allocs = 0;
        assert_eq!(
            measured_workload(&p).unwrap_err(),
            "no vmalloc activity since the last reset"
        );
        p.meta.design = AllocatorDesign::Unknown;
        assert!(measured_workload(&p)
            .unwrap_err()
            .contains("design unknown"));
    }

    #[test]
    fn sentences() {
        assert_eq!(
            sentence(Design::Legacy, 4_000_000.0, 1_000_000.0, "17.0 s"),
            "node-sharded would cut vmap lock wait ~4.0x at this load (model: 4.00ms/s here vs 1.00ms/s, on 17.0 s)"
        );
        assert_eq!(
            sentence(Design::NodeSharded, 3_000_000.0, 1_000_000.0, "2m"),
            "legacy would wait ~3.0x longer on vmap locks at this load (model: 1.00ms/s here vs 3.00ms/s, on 2m)"
        );
        assert!(sentence(Design::NodeSharded, 1_000.0, 1_100.0, "x")
            .starts_with("legacy would wait about as long"));
        assert!(sentence(Design::Legacy, 0.0, 0.0, "x")
            .starts_with("neither design waits on vmap locks"));
        assert!(
            sentence(Design::Legacy, 5.0, 0.0, "x").contains("would cut vmap lock wait to nothing")
        );
        assert_eq!(
            model::recording::model_lock_name("vmap_node[12].lazy.lock"),
            "vmap_node.lazy.lock"
        );
        assert_eq!(
            model::recording::model_lock_name("vmap_purge_lock"),
            "vmap_purge_lock"
        );
        assert_eq!(variant_of("6.9.0-1-amd64"), KernelVariant::V6_9);
        assert_eq!(variant_of("6.12.8"), KernelVariant::V6_10);
        assert_eq!(variant_of("6.18.44-fc-v595"), KernelVariant::Mainline);
    }

    #[test]
    fn the_model_gives_a_verdict_on_a_real_load() {
        let mut p = sample_profile();
        p.meta.design = AllocatorDesign::NodeSharded;
        p.meta.kernel_release = "6.18.0".into();
        p.meta.duration_ns = 5_000_000_000;
        p.ops.size_pages = Log2Histogram::from_buckets(&[0, 0, 2000]);
        let v = assess(&measured_workload(&p).unwrap());
        let Verdict::Comparison(text) = &v else {
            panic!("{v:?}")
        };
        assert!(text.starts_with("legacy would"), "{text}");
        assert!(v.line().starts_with("model verdict: legacy would"));
    }

    #[test]
    fn the_worker_answers_off_thread_and_throttles() {
        let mut p = sample_profile();
        p.meta.duration_ns = 5_000_000_000;
        p.ops.size_pages = Log2Histogram::from_buckets(&[0, 0, 2000]);
        let mut worker = VerdictWorker::spawn().unwrap();
        let t0 = Instant::now();
        assert_eq!(worker.request(&p, t0), None);
        // one in flight: further requests wait
        assert_eq!(worker.request(&p, t0 + VERDICT_PERIOD * 2), None);
        let deadline = Instant::now() + Duration::from_secs(120);
        let verdict = loop {
            if let Some(v) = worker.poll() {
                break v;
            }
            assert!(Instant::now() < deadline, "no verdict");
            std::thread::sleep(Duration::from_millis(20));
        };
        let Verdict::Comparison(text) = &verdict else {
            panic!("{verdict:?}")
        };
        assert!(text.ends_with(", on 5.0 s)"), "{text}");
        // answered, but the period has not passed
        assert_eq!(worker.request(&p, t0 + Duration::from_secs(1)), None);
        assert!(worker.poll().is_none());
        // too little data is said at once
        let mut short = p.clone();
        short.meta.duration_ns = 100_000_000;
        let v = worker.request(&short, t0 + VERDICT_PERIOD * 3);
        assert_eq!(
            v,
            Some(Verdict::Unavailable(
                "needs 5 s of data since the last reset".into()
            ))
        );
        // an answer about a window from before a reset is dropped
        assert_eq!(worker.request(&p, t0 + VERDICT_PERIOD * 4), None);
        worker.reset();
        let deadline = Instant::now() + Duration::from_secs(120);
        while worker.busy {
            assert_eq!(worker.poll(), None);
            assert!(Instant::now() < deadline, "no answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
