//! Prometheus metrics built from cumulative `Profile`s, encoded with prometheus-client in the
//! OpenMetrics text format.
//!
//! Each refresh turns one snapshot into an [`Exposition`] (plain data, label sets already
//! bounded) and encodes it through a prometheus-client `Collector`, the library's mechanism for
//! exporters whose values come from elsewhere. Nothing is sampled here: counters and histogram
//! buckets are the kernel's cumulative counts (see `histogram` for the bucket mapping).
//!
//! Label cardinality is bounded by construction: lock series by `--top-locks` plus one
//! `(other)` aggregate (see `lock_series`), vmap functions by the fixed list of vmap allocator
//! functions, CPUs by the machine, reasons and hooks by the code; per-task series only with
//! `--per-task`, and then only the top [`TOP_TASKS`].
use std::fmt::Write as _;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use vmap_trace_common::{per_cpu_lock_slots, MAX_LOCKS, MAX_TASKS};

use super::histogram::PromHistogram;
use super::lock_series::{LockSeriesTable, LockSeriesView};
use crate::profile::{
    AllocatorDesign, CpuWait, LockClass, Losses, Profile, StackSampling, TaskWaitSummary,
    VmallocOps, WaitHistogram,
};

/// Tasks exposed with `--per-task`.
pub const TOP_TASKS: usize = 10;

/// The `Content-Type` of the encoded text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What to expose beyond the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Lock identities with their own series; the rest is summed into `(other)`.
    pub top_locks: usize,
    /// Expose the top [`TOP_TASKS`] tasks by wait, labelled by comm and tid.
    pub per_task: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            top_locks: 16,
            per_task: false,
        }
    }
}

/// Counters about the daemon itself, kept by the sampler.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonStats {
    /// Wall time of the last map read (snapshot), seconds.
    pub last_snapshot_seconds: f64,
    pub snapshots: u64,
    pub snapshot_failures: u64,
    pub recordings_written: u64,
    pub recording_failures: u64,
}

/// Turns successive cumulative profiles into expositions; keeps the lock-series state that
/// makes counters monotonic across refreshes.
#[derive(Debug)]
pub struct MetricsBuilder {
    options: MetricsOptions,
    locks: LockSeriesTable,
}

impl MetricsBuilder {
    pub fn new(options: MetricsOptions) -> Self {
        MetricsBuilder {
            options,
            locks: LockSeriesTable::new(options.top_locks),
        }
    }

    pub fn build(&mut self, profile: &Profile, stats: &DaemonStats) -> Exposition {
        let mut vmap_functions: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for s in profile
            .stacks
            .iter()
            .filter(|s| s.attribution.class == LockClass::Vmap)
        {
            let f = s
                .attribution
                .vmap_function
                .clone()
                .unwrap_or_else(|| "unknown".into());
            let e = vmap_functions.entry(f).or_default();
            e.0 += s.count;
            e.1 += s.total_ns;
        }
        let tasks = if self.options.per_task {
            let mut t = profile.tasks.clone();
            t.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.tid.cmp(&b.tid)));
            t.truncate(TOP_TASKS);
            t
        } else {
            Vec::new()
        };
        let functions = profile
            .functions
            .iter()
            .map(|f| (f.function.clone(), f.latency.clone()))
            .collect();
        let mut lock_timing: std::collections::BTreeMap<String, (WaitHistogram, WaitHistogram)> =
            Default::default();
        for t in &profile.lock_timing {
            let e = lock_timing.entry(vmap_lock_role(&t.name)).or_default();
            e.0.add(&t.wait);
            e.1.add(&t.hold);
        }
        Exposition {
            version: profile.meta.tool_version.clone(),
            kernel_release: profile.meta.kernel_release.clone(),
            design: match profile.meta.design {
                AllocatorDesign::Legacy => "legacy",
                AllocatorDesign::NodeSharded => "node_sharded",
                AllocatorDesign::Unknown => "unknown",
            },
            start_time_unix_s: profile.meta.started_unix_s,
            hooks: profile
                .meta
                .hooks
                .iter()
                .map(|h| (h.hook.clone(), h.mechanism.map_or("none", |m| m.label())))
                .collect(),
            ops: VmallocOps {
                sources: Some(profile.op_sources()),
                ..profile.ops.clone()
            },
            lock_waits: self.locks.update(profile),
            vmap_functions: vmap_functions
                .into_iter()
                .map(|(f, (c, t))| (f, c, t))
                .collect(),
            functions,
            lock_timing: lock_timing
                .into_iter()
                .map(|(lock, (wait, hold))| (lock, wait, hold))
                .collect(),
            cpus: profile.cpus.clone(),
            tasks,
            losses: profile.losses.clone(),
            stack_sampling: profile.stack_sampling,
            map_usage: vec![
                // The per-CPU map first, then the shared one (sized by possible CPUs at load;
                // the online count here differs only on machines with hot-pluggable CPUs).
                (
                    "locks",
                    profile.locks.len() as u64,
                    u64::from(per_cpu_lock_slots(profile.meta.cpus) + MAX_LOCKS),
                ),
                (
                    "stack_keys",
                    profile.stacks.len() as u64,
                    u64::from(profile.meta.stack_keys.table_entries),
                ),
                ("tasks", profile.tasks.len() as u64, u64::from(MAX_TASKS)),
            ],
            stats: stats.clone(),
        }
    }
}

/// One refresh's worth of metrics, label sets resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposition {
    pub version: String,
    pub kernel_release: String,
    pub design: &'static str,
    pub start_time_unix_s: u64,
    /// (hook, mechanism or "none").
    pub hooks: Vec<(String, &'static str)>,
    pub ops: VmallocOps,
    pub lock_waits: LockSeriesView,
    /// (vmap function, waits, total ns), by function name.
    pub vmap_functions: Vec<(String, u64, u64)>,
    /// (vmap function, entry-to-return latency), for the functions probed (kprobes/fentry).
    pub functions: Vec<(String, WaitHistogram)>,
    /// (vmap lock role, acquire time, hold time), with `--lock-timing`.
    pub lock_timing: Vec<(String, WaitHistogram, WaitHistogram)>,
    pub cpus: Vec<CpuWait>,
    pub tasks: Vec<TaskWaitSummary>,
    pub losses: Losses,
    pub stack_sampling: StackSampling,
    /// (kernel map, entries in use, capacity).
    pub map_usage: Vec<(&'static str, u64, u64)>,
    pub stats: DaemonStats,
}

impl Exposition {
    /// The OpenMetrics text (ends with `# EOF`).
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The label of a vmap lock in the lock-timing families: per-node locks of node-sharded
/// kernels (`vmap_node[7].busy`, up to 128 nodes x 3 locks) are summed per role
/// (`vmap_node[*].busy`), so the series count does not grow with the machine. Recordings keep
/// the per-node detail.
pub fn vmap_lock_role(name: &str) -> String {
    match name
        .strip_prefix("vmap_node[")
        .and_then(|rest| rest.split_once("]."))
    {
        Some((node, field)) if !node.is_empty() && node.bytes().all(|b| b.is_ascii_digit()) => {
            format!("vmap_node[*].{field}")
        }
        _ => name.to_string(),
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

type Labels = Vec<(&'static str, String)>;

/// Writes metric families to a descriptor encoder, skipping families with no series.
struct Families<'a, 'e> {
    encoder: &'a mut DescriptorEncoder<'e>,
}

impl Families<'_, '_> {
    /// A labelled family; nothing at all when it has no series.
    fn family<M: EncodeMetric>(
        &mut self,
        name: &'static str,
        help: &'static str,
        metric_type: MetricType,
        series: impl IntoIterator<Item = (Labels, M)>,
    ) -> std::fmt::Result {
        let mut series = series.into_iter().peekable();
        if series.peek().is_none() {
            return Ok(());
        }
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, metric_type)?;
        for (labels, m) in series {
            debug_assert!(
                !labels.is_empty(),
                "{name}: unlabelled series go through `single`"
            );
            m.encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// An unlabelled metric (no `{}`: some parsers reject empty braces).
    fn single<M: EncodeMetric>(
        &mut self,
        name: &'static str,
        help: &'static str,
        m: M,
    ) -> std::fmt::Result {
        m.encode(
            self.encoder
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    fn counters<V: EncodeCounterValue>(
        &mut self,
        name: &'static str,
        help: &'static str,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> std::fmt::Result {
        self.family(
            name,
            help,
            MetricType::Counter,
            series.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
        )
    }

    fn counter<V: EncodeCounterValue>(
        &mut self,
        name: &'static str,
        help: &'static str,
        value: V,
    ) -> std::fmt::Result {
        self.single(name, help, ConstCounter::new(value))
    }

    fn gauges<V: EncodeGaugeValue>(
        &mut self,
        name: &'static str,
        help: &'static str,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> std::fmt::Result {
        self.family(
            name,
            help,
            MetricType::Gauge,
            series.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
        )
    }

    fn gauge<V: EncodeGaugeValue>(
        &mut self,
        name: &'static str,
        help: &'static str,
        value: V,
    ) -> std::fmt::Result {
        self.single(name, help, ConstGauge::new(value))
    }

    /// A per-lock histogram family (wait today; hold times use the same shape when measured).
    fn lock_histograms(
        &mut self,
        name: &'static str,
        help: &'static str,
        view: &LockSeriesView,
    ) -> std::fmt::Result {
        self.family(
            name,
            help,
            MetricType::Histogram,
            view.all().map(|(id, w)| {
                (
                    vec![
                        ("class", id.class.to_string()),
                        ("lock", id.lock),
                        ("kind", id.kind.to_string()),
                    ],
                    PromHistogram::seconds(w),
                )
            }),
        )
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut f = Families {
            encoder: &mut encoder,
        };
        let ops = &self.ops;

        f.counter(
            "vmap_trace_vmalloc_allocs",
            "vmap area allocations, failed ones included (vmalloc:alloc_vmap_area, or alloc_vmap_area calls where the tracepoint is missing: vmap_trace_vmalloc_op_source).",
            ops.allocs,
        )?;
        f.counter(
            "vmap_trace_vmalloc_alloc_failures",
            "vmap area allocations that failed.",
            ops.allocs_failed,
        )?;
        f.counter(
            "vmap_trace_vmalloc_frees",
            "vmap areas freed lazily (vmalloc:free_vmap_area_noflush, or calls of that function where the tracepoint is missing).",
            ops.frees,
        )?;
        f.counter(
            "vmap_trace_vmalloc_purges",
            "Lazy-free purges (vmalloc:purge_vmap_area_lazy, or __purge_vmap_area_lazy calls where the tracepoint is missing).",
            ops.purges,
        )?;
        f.counter(
            "vmap_trace_vmalloc_purged_areas",
            "vmap areas released by purges.",
            ops.purged_areas,
        )?;
        f.single(
            "vmap_trace_vmalloc_alloc_size_pages",
            "Sizes of successful vmap area allocations, in pages (bounds 2^k-1: exact for whole pages).",
            PromHistogram::pages(&ops.size_pages, ops.alloc_pages),
        )?;
        f.gauge(
            "vmap_trace_vmalloc_lazy_pages",
            "Lazily freed pages waiting for a purge, as last reported by the kernel.",
            ops.lazy_pages_last,
        )?;
        f.gauge(
            "vmap_trace_vmalloc_lazy_pages_limit",
            "The kernel's lazy_max_pages: backlog size that triggers a purge.",
            ops.lazy_pages_max,
        )?;
        f.gauge(
            "vmap_trace_vmalloc_lazy_pages_peak",
            "Largest lazy backlog seen since the daemon attached.",
            ops.lazy_pages_peak,
        )?;

        if let Some(sources) = &ops.sources {
            f.gauges(
                "vmap_trace_vmalloc_op_source",
                "Where each vmalloc operation figure comes from (value 1): source=\"tracepoint\" (vmalloc:*, 6.2+), \"function_probe\" (vmap function probes, kernels without the tracepoints) or \"unavailable\" (the figure stays 0).",
                sources.figures().into_iter().map(|(figure, source)| {
                    (
                        vec![
                            ("figure", figure.replace(' ', "_")),
                            ("source", source.label().replace(' ', "_")),
                        ],
                        1u64,
                    )
                }),
            )?;
        }

        f.lock_histograms(
            "vmap_trace_lock_wait_seconds",
            "Lock contention wait time (lock:contention_begin to _end) per lock; the top locks by wait have their own series, the rest is lock=\"(other)\".",
            &self.lock_waits,
        )?;
        f.counters(
            "vmap_trace_vmap_function_lock_waits",
            "Contended lock acquisitions on kernel stacks through a vmap allocator function, by innermost such function.",
            self.vmap_functions.iter().map(|(func, count, _)| (vec![("function", func.clone())], *count)),
        )?;
        f.counters(
            "vmap_trace_vmap_function_lock_wait_seconds",
            "Lock wait on kernel stacks through a vmap allocator function, by innermost such function.",
            self.vmap_functions.iter().map(|(func, _, ns)| (vec![("function", func.clone())], seconds(*ns))),
        )?;
        f.family(
            "vmap_trace_vmap_function_latency_seconds",
            "Latency of vmap allocator functions, entry to return (fentry/fexit or kprobes; absent where neither works).",
            MetricType::Histogram,
            self.functions.iter().map(|(func, w)| (vec![("function", func.clone())], PromHistogram::seconds(w))),
        )?;
        f.family(
            "vmap_trace_vmap_lock_acquire_seconds",
            "Time inside the lock call for vmap locks, contended or not (--lock-timing; per-node locks summed per role).",
            MetricType::Histogram,
            self.lock_timing.iter().map(|(lock, wait, _)| (vec![("lock", lock.clone())], PromHistogram::seconds(wait))),
        )?;
        f.family(
            "vmap_trace_vmap_lock_hold_seconds",
            "Time vmap locks are held, lock return to unlock (--lock-timing; per-node locks summed per role).",
            MetricType::Histogram,
            self.lock_timing.iter().map(|(lock, _, hold)| (vec![("lock", lock.clone())], PromHistogram::seconds(hold))),
        )?;
        f.counters(
            "vmap_trace_cpu_lock_waits",
            "Contended lock acquisitions per CPU.",
            self.cpus
                .iter()
                .map(|c| (vec![("cpu", c.cpu.to_string())], c.count)),
        )?;
        f.counters(
            "vmap_trace_cpu_lock_wait_seconds",
            "Lock wait time per CPU.",
            self.cpus
                .iter()
                .map(|c| (vec![("cpu", c.cpu.to_string())], seconds(c.total_ns))),
        )?;
        // Gauges, not counters: a task leaves the top list or the kernel's LRU task table, and
        // its tid may be reused by an unrelated task.
        f.gauges(
            "vmap_trace_task_lock_wait_seconds",
            "Lock wait time of the tasks that waited most, since the daemon attached (--per-task only).",
            self.tasks.iter().map(|t| (vec![("comm", t.comm.clone()), ("tid", t.tid.to_string())], seconds(t.total_ns))),
        )?;
        f.gauges(
            "vmap_trace_task_lock_waits",
            "Contended lock acquisitions of the tasks that waited most, since the daemon attached (--per-task only).",
            self.tasks.iter().map(|t| (vec![("comm", t.comm.clone()), ("tid", t.tid.to_string())], t.count)),
        )?;

        let l = &self.losses;
        f.counters(
            "vmap_trace_lost_events",
            "Events the kernel side could not record, by reason (contentions; calls_inflight_full: function calls or lock acquisitions not timed); 0 in a complete data set.",
            [
                ("inflight_full", l.inflight_full),
                ("lock_map_full", l.lock_map_full),
                ("stack_capture_failed", l.stack_capture_failed),
                ("stack_keys_full", l.stack_keys_full),
                ("calls_inflight_full", l.calls_inflight_full),
            ]
            .map(|(reason, n)| (vec![("reason", reason.to_string())], n)),
        )?;
        f.counters(
            "vmap_trace_contention_stacks",
            "Contentions by whether their kernel stack was captured (--stack-samples): each capture also stands for the short waits passed over before it, so the per-vmap-function series are sampled where passed_over grows.",
            [("captured", self.stack_sampling.captured), ("passed_over", self.stack_sampling.skipped)]
                .map(|(outcome, n)| (vec![("outcome", outcome.to_string())], n)),
        )?;
        f.counter(
            "vmap_trace_tasks_evicted",
            "Tasks evicted from the kernel's LRU per-task table (their waits still count per lock and CPU).",
            l.tasks_evicted,
        )?;
        f.counters(
            "vmap_trace_kernel_map_evictions",
            "Cold keys evicted from the kernel's LRU per-lock (locks first seen after the per-CPU table filled) and per-stack tables to make room: their waits still count per CPU (and per lock, for stacks); the daemon's series keep what they had shown.",
            [("locks", l.lock_keys_evicted), ("stack_keys", l.stack_keys_evicted)]
                .map(|(map, n)| (vec![("map", map.to_string())], n)),
        )?;
        f.gauges(
            "vmap_trace_kernel_map_entries",
            "Entries in use in the kernel-side maps that can fill up.",
            self.map_usage
                .iter()
                .map(|(map, used, _)| (vec![("map", map.to_string())], *used)),
        )?;
        f.gauges(
            "vmap_trace_kernel_map_capacity",
            "Capacity of the kernel-side maps: when entries reach it, cold entries are evicted (tasks, shared locks, stacks).",
            self.map_usage.iter().map(|(map, _, cap)| (vec![("map", map.to_string())], *cap)),
        )?;

        f.gauges(
            "vmap_trace_info",
            "vmap-trace version, kernel release and vmap allocator design (value 1).",
            [(
                vec![
                    ("version", self.version.clone()),
                    ("kernel_release", self.kernel_release.clone()),
                    ("design", self.design.to_string()),
                ],
                1u64,
            )],
        )?;
        f.gauges(
            "vmap_trace_hook_attached",
            "1 when the kernel hook is attached (mechanism = how), 0 when unavailable (mechanism=\"none\").",
            self.hooks
                .iter()
                .map(|(hook, mech)| (vec![("hook", hook.clone()), ("mechanism", mech.to_string())], u64::from(*mech != "none"))),
        )?;
        f.gauge(
            "vmap_trace_start_time_seconds",
            "Unix time when the daemon attached its probes.",
            self.start_time_unix_s,
        )?;
        let s = &self.stats;
        f.gauge(
            "vmap_trace_snapshot_duration_seconds",
            "Wall time of the last read of the kernel maps.",
            s.last_snapshot_seconds,
        )?;
        f.counter(
            "vmap_trace_snapshots",
            "Reads of the kernel maps (scrapes reuse a read younger than 1 s).",
            s.snapshots,
        )?;
        f.counter(
            "vmap_trace_snapshot_failures",
            "Reads of the kernel maps that failed.",
            s.snapshot_failures,
        )?;
        f.counter(
            "vmap_trace_recordings_written",
            "Recordings written to --record-dir.",
            s.recordings_written,
        )?;
        f.counter(
            "vmap_trace_recording_failures",
            "Recordings that could not be written.",
            s.recording_failures,
        )?;
        Ok(())
    }
}

/// Human-readable one-line summary of an exposition, for logs.
pub fn summary(e: &Exposition) -> String {
    let mut out = String::new();
    let waits: u64 = e.lock_waits.all().map(|(_, w)| w.hist.total()).sum();
    let _ = write!(
        out,
        "{} allocs, {} frees, {} purges, {} contentions",
        e.ops.allocs, e.ops.frees, e.ops.purges, waits
    );
    if e.losses.total() > 0 {
        let _ = write!(out, ", {} events LOST", e.losses.total());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use crate::profile::{Log2Histogram, VmapLockTiming};

    fn parse(text: &str) -> Vec<prometheus_parse::Sample> {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap()
            .samples
    }

    fn value(
        samples: &[prometheus_parse::Sample],
        metric: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => panic!("{metric} is not a scalar"),
            })
    }

    fn histogram<'a>(
        samples: &'a [prometheus_parse::Sample],
        metric: &str,
        labels: &[(&str, &str)],
    ) -> &'a [prometheus_parse::HistogramCount] {
        samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(h) => h.as_slice(),
                _ => panic!("{metric} is not a histogram"),
            })
            .unwrap_or_else(|| panic!("no {metric} {labels:?}"))
    }

    fn render(profile: &Profile, options: MetricsOptions) -> String {
        MetricsBuilder::new(options)
            .build(profile, &DaemonStats::default())
            .render()
    }

    #[test]
    fn counters_gauges_and_info_from_the_sample_profile() {
        let mut p = sample_profile();
        p.ops.lazy_pages_last = 300;
        p.ops.lazy_pages_max = 16384;
        p.losses.stack_keys_full = 7;
        p.losses.lock_keys_evicted = 3;
        p.losses.stack_keys_evicted = 11;
        p.stack_sampling = crate::profile::StackSampling {
            captured: 40,
            skipped: 360,
        };
        let text = render(&p, MetricsOptions::default());
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
        let s = parse(&text);
        assert_eq!(
            value(&s, "vmap_trace_vmalloc_allocs_total", &[]),
            Some(2000.0)
        );
        assert_eq!(
            value(&s, "vmap_trace_vmalloc_frees_total", &[]),
            Some(1990.0)
        );
        assert_eq!(value(&s, "vmap_trace_vmalloc_purges_total", &[]), Some(3.0));
        assert_eq!(
            value(&s, "vmap_trace_vmalloc_purged_areas_total", &[]),
            Some(1500.0)
        );
        assert_eq!(value(&s, "vmap_trace_vmalloc_lazy_pages", &[]), Some(300.0));
        assert_eq!(
            value(&s, "vmap_trace_vmalloc_lazy_pages_limit", &[]),
            Some(16384.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_lost_events_total",
                &[("reason", "stack_keys_full")]
            ),
            Some(7.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_lost_events_total",
                &[("reason", "lock_map_full")]
            ),
            Some(0.0)
        );
        let evictions = |map| value(&s, "vmap_trace_kernel_map_evictions_total", &[("map", map)]);
        assert_eq!(evictions("locks"), Some(3.0));
        assert_eq!(evictions("stack_keys"), Some(11.0));
        assert_eq!(
            value(
                &s,
                "vmap_trace_contention_stacks_total",
                &[("outcome", "captured")]
            ),
            Some(40.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_contention_stacks_total",
                &[("outcome", "passed_over")]
            ),
            Some(360.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_info",
                &[("design", "legacy"), ("kernel_release", "6.1.0-test")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_hook_attached",
                &[("hook", "lock:contention_begin"), ("mechanism", "tp_btf")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "vmap_trace_kernel_map_entries", &[("map", "locks")]),
            Some(2.0)
        );
        // 4 CPUs: the per-CPU map holds all MAX_LOCKS, the shared one as many again.
        assert_eq!(
            value(&s, "vmap_trace_kernel_map_capacity", &[("map", "locks")]),
            Some(8192.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_cpu_lock_wait_seconds_total",
                &[("cpu", "0")]
            ),
            Some(250e-6)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_function_lock_waits_total",
                &[("function", "alloc_vmap_area")]
            ),
            Some(10.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_function_lock_wait_seconds_total",
                &[("function", "alloc_vmap_area")]
            ),
            Some(50e-6)
        );
    }

    #[test]
    fn lock_wait_histograms_are_cumulative_and_match_count_and_sum() {
        let text = render(&sample_profile(), MetricsOptions::default());
        let s = parse(&text);
        let labels = [
            ("lock", "vmap_area_lock"),
            ("class", "vmap"),
            ("kind", "spinlock"),
        ];
        let buckets = histogram(&s, "vmap_trace_lock_wait_seconds", &labels);
        assert!(buckets
            .windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite());
        assert_eq!(inf.count, 10.0);
        assert_eq!(
            value(&s, "vmap_trace_lock_wait_seconds_count", &labels),
            Some(10.0)
        );
        assert_eq!(
            value(&s, "vmap_trace_lock_wait_seconds_sum", &labels),
            Some(50e-6)
        );
        // All 10 waits are in kernel bucket 12, [4096, 8192) ns.
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
        assert_eq!(at(4096e-9), 0.0);
        assert_eq!(at(8192e-9), 10.0);
        // The aggregate series is always there, empty here.
        assert_eq!(
            value(
                &s,
                "vmap_trace_lock_wait_seconds_count",
                &[("lock", "(other)")]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn top_locks_limits_series_and_other_gets_the_rest() {
        let text = render(
            &sample_profile(),
            MetricsOptions {
                top_locks: 1,
                per_task: false,
            },
        );
        let s = parse(&text);
        let lock_series: Vec<&str> = s
            .iter()
            .filter(|x| x.metric == "vmap_trace_lock_wait_seconds")
            .map(|x| x.labels.get("lock").unwrap())
            .collect();
        assert_eq!(lock_series.len(), 2, "{lock_series:?}");
        // The mutex waited 400 us, the spinlock 50 us: the mutex keeps its series.
        assert!(lock_series.contains(&"caller:tty_lock"));
        assert!(lock_series.contains(&"(other)"));
        assert_eq!(
            value(
                &s,
                "vmap_trace_lock_wait_seconds_count",
                &[("lock", "(other)")]
            ),
            Some(10.0)
        );
    }

    #[test]
    fn function_latency_and_lock_timing_appear_when_measured() {
        let mut p = sample_profile();
        let text = render(&p, MetricsOptions::default());
        assert!(
            !text.contains("vmap_trace_vmap_lock_hold_seconds"),
            "no lock timing in the profile: no family"
        );
        let s = parse(&text);
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_function_latency_seconds_count",
                &[("function", "alloc_vmap_area")]
            ),
            Some(2000.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_function_latency_seconds_sum",
                &[("function", "alloc_vmap_area")]
            ),
            Some(0.004)
        );

        let timing = |name: &str, n: u64| VmapLockTiming {
            name: name.into(),
            lock_addr: 0,
            wait: WaitHistogram {
                count: n,
                total_ns: n * 100,
                max_ns: 100,
                hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, n]),
            },
            hold: WaitHistogram {
                count: n,
                total_ns: n * 3000,
                max_ns: 3000,
                hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]),
            },
        };
        p.lock_timing = vec![
            timing("vmap_node[0].busy", 5),
            timing("vmap_node[1].busy", 7),
            timing("free_vmap_area_lock", 2),
        ];
        let s = parse(&render(&p, MetricsOptions::default()));
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_lock_hold_seconds_count",
                &[("lock", "vmap_node[*].busy")]
            ),
            Some(12.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_lock_acquire_seconds_count",
                &[("lock", "free_vmap_area_lock")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &s,
                "vmap_trace_vmap_lock_hold_seconds_sum",
                &[("lock", "free_vmap_area_lock")]
            ),
            Some(6e-6)
        );
        assert_eq!(
            s.iter()
                .filter(|x| x.metric == "vmap_trace_vmap_lock_hold_seconds")
                .count(),
            2,
            "nodes summed per role"
        );
    }

    #[test]
    fn op_sources_are_exported() {
        use crate::profile::tests::function_probe_profile;
        let text = render(&function_probe_profile(), MetricsOptions::default());
        let samples = parse(&text);
        let sources: Vec<(String, String)> = samples
            .iter()
            .filter(|s| s.metric == "vmap_trace_vmalloc_op_source")
            .map(|s| {
                (
                    s.labels.get("figure").unwrap().to_string(),
                    s.labels.get("source").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(sources.len(), 5, "{text}");
        assert!(
            sources.iter().all(|(_, s)| s == "function_probe"),
            "{sources:?}"
        );
        assert!(sources.contains(&("lazy_backlog".into(), "function_probe".into())));
        // A recording of tracepoint counts says so too.
        let text = render(&sample_profile(), MetricsOptions::default());
        let tracepoint = parse(&text)
            .into_iter()
            .filter(|s| s.metric == "vmap_trace_vmalloc_op_source")
            .filter(|s| s.labels.get("source") == Some("tracepoint"))
            .count();
        assert_eq!(tracepoint, 5, "{text}");
    }

    #[test]
    fn vmap_lock_roles() {
        assert_eq!(vmap_lock_role("vmap_node[12].lazy"), "vmap_node[*].lazy");
        assert_eq!(
            vmap_lock_role("vmap_node[0].pool_lock"),
            "vmap_node[*].pool_lock"
        );
        assert_eq!(vmap_lock_role("vmap_area_lock"), "vmap_area_lock");
        assert_eq!(vmap_lock_role("vmap_node[x].busy"), "vmap_node[x].busy");
    }

    #[test]
    fn size_histogram_sum_is_allocated_pages() {
        let mut p = sample_profile();
        p.ops.size_pages = Log2Histogram::from_buckets(&[0, 0, 1000]);
        p.ops.alloc_pages = 4000;
        let s = parse(&render(&p, MetricsOptions::default()));
        assert_eq!(
            value(&s, "vmap_trace_vmalloc_alloc_size_pages_sum", &[]),
            Some(4000.0)
        );
        assert_eq!(
            value(&s, "vmap_trace_vmalloc_alloc_size_pages_count", &[]),
            Some(1000.0)
        );
    }

    #[test]
    fn no_per_task_series_unless_asked() {
        let p = sample_profile();
        let plain = render(&p, MetricsOptions::default());
        assert!(
            !plain.contains("vmap_trace_task_"),
            "no per-task family by default"
        );
        assert!(!plain.contains("tid="));
        let s = parse(&render(
            &p,
            MetricsOptions {
                top_locks: 16,
                per_task: true,
            },
        ));
        assert_eq!(
            value(
                &s,
                "vmap_trace_task_lock_waits",
                &[("comm", "sshd"), ("tid", "42")]
            ),
            Some(14.0)
        );
    }

    #[test]
    fn per_task_series_are_bounded() {
        let mut p = sample_profile();
        p.tasks = (0..100)
            .map(|i| TaskWaitSummary {
                tid: i,
                tgid: i,
                comm: format!("t{i}"),
                count: 1,
                total_ns: u64::from(i),
                max_ns: 1,
            })
            .collect();
        let s = parse(&render(
            &p,
            MetricsOptions {
                top_locks: 16,
                per_task: true,
            },
        ));
        let tasks = s
            .iter()
            .filter(|x| x.metric == "vmap_trace_task_lock_waits")
            .count();
        assert_eq!(tasks, TOP_TASKS);
        assert!(
            value(&s, "vmap_trace_task_lock_waits", &[("tid", "99")]).is_some(),
            "the heaviest is kept"
        );
    }

    #[test]
    fn successive_builds_never_decrease() {
        let mut builder = MetricsBuilder::new(MetricsOptions {
            top_locks: 1,
            per_task: false,
        });
        let mut p = sample_profile();
        let first = parse(&builder.build(&p, &DaemonStats::default()).render());
        // The spinlock overtakes the mutex by far: it takes the only slot.
        p.locks[0].wait = WaitHistogram {
            count: 1000,
            total_ns: 5_000_000,
            max_ns: 9_000,
            hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1000]),
        };
        p.stacks[0].total_ns = 5_000_000;
        let second = parse(&builder.build(&p, &DaemonStats::default()).render());
        let count = |s: &[prometheus_parse::Sample], lock| {
            value(s, "vmap_trace_lock_wait_seconds_count", &[("lock", lock)])
        };
        assert_eq!(count(&first, "(other)"), Some(10.0));
        assert_eq!(
            count(&second, "vmap_area_lock"),
            Some(990.0),
            "the 10 (other) showed stay there"
        );
        assert_eq!(
            count(&second, "(other)"),
            Some(14.0),
            "10 frozen + the demoted mutex's 4"
        );
    }
}
