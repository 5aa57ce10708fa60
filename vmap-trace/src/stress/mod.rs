//! Real load on the kernel's vmalloc / vmap-area allocator, generated from user space.
//!
//! Each workload drives a kernel path that allocates and frees vmap areas:
//!
//! | workload  | kernel path                                                            | one op                    |
//! |-----------|------------------------------------------------------------------------|---------------------------|
//! | `threads` | VMAP_STACK: every new task gets a vmalloc'd kernel stack               | a thread created + joined |
//! | `fork`    | the same, for processes                                                | a child forked + reaped   |
//! | `pty`     | n_tty_open vzalloc's `n_tty_data` for both ends, close vfree's them    | a pty pair opened + closed|
//! | `bpfmap`  | BPF array maps > 32 KiB are vmalloc'd; close frees lazily, then purges | a map created + closed    |
//! | `mix`     | all of the above at once, the drivers split between them               | any of the above          |
//!
//! The kernel keeps two freed stacks per CPU in a cache, so a plain fork/exit loop hardly
//! touches the allocator. The `threads` and `fork` workloads therefore keep many tasks alive at
//! once (`live` per driver) and release them together, so most creations miss the cache.
//!
//! In-process callers (tests, benchmarks, `record -- stress`) use [`run_workload`]; the CLI
//! front end is [`run`] with [`StressArgs`].

mod bpfmap;
mod cli;
mod driver;
mod fork;
pub mod limits;
mod mix;
mod pty;
mod runner;
pub mod signal;
mod threads;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;

pub use cli::{run, StressArgs};
pub use runner::{run_workload, run_workload_with_progress, KindProgress, ProgressSample};

/// Which load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Many live processes at once (fork, wait until all exist, exit, reap): VMAP_STACK kernel stacks.
    Fork,
    /// Many live threads at once (spawn, wait until all exist, exit, join): VMAP_STACK kernel stacks.
    Threads,
    /// Open and close pty pairs: n_tty_data is vzalloc'd per side and vfree'd on close.
    Pty,
    /// Create and close large BPF array maps (vmalloc'd): alloc, lazy free and purges. Needs CAP_BPF.
    Bpfmap,
    /// All of the above at once, the driver threads split between them.
    Mix,
}

impl WorkloadKind {
    /// The single-path workloads, in the order `mix` assigns drivers to them.
    pub const BASIC: [WorkloadKind; 4] = [
        WorkloadKind::Threads,
        WorkloadKind::Fork,
        WorkloadKind::Pty,
        WorkloadKind::Bpfmap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Fork => "fork",
            WorkloadKind::Threads => "threads",
            WorkloadKind::Pty => "pty",
            WorkloadKind::Bpfmap => "bpfmap",
            WorkloadKind::Mix => "mix",
        }
    }

    /// What one counted operation is, for output.
    pub fn op_description(self) -> &'static str {
        match self {
            WorkloadKind::Fork => "child forked and reaped",
            WorkloadKind::Threads => "thread spawned and joined",
            WorkloadKind::Pty => "pty pair opened and closed",
            WorkloadKind::Bpfmap => "BPF array map created and closed",
            WorkloadKind::Mix => "any of the above",
        }
    }

    /// How many objects one driver keeps alive at once unless told otherwise.
    ///
    /// threads/fork: enough live tasks that the 2-per-CPU stack cache covers only a small
    /// fraction of creations. pty: a few pairs, so several n_tty buffers are live together.
    /// bpfmap: with 4 MiB maps and a few drivers, a few dozen MiB live at once, so closes push
    /// the lazy-free backlog over lazy_max_pages and the kernel purges regularly.
    pub fn default_live_per_driver(self) -> usize {
        match self {
            WorkloadKind::Fork => 32,
            WorkloadKind::Threads => 64,
            WorkloadKind::Pty => 8,
            WorkloadKind::Bpfmap => 4,
            WorkloadKind::Mix => 1, // never used: mix resolves per component
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shape of the BPF array maps the `bpfmap` workload creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BpfMapShape {
    /// Bytes per element (`value_size` of BPF_MAP_CREATE).
    pub value_size: u32,
    /// Number of elements (`max_entries`).
    pub max_entries: u32,
}

impl BpfMapShape {
    /// Maps at or below this size are kmalloc'd by the kernel (bpf_map_area_alloc uses
    /// kmalloc up to PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER), so they would not touch vmalloc.
    pub const KMALLOC_LIMIT_BYTES: u64 = 32 * 1024;

    /// A map of about `size_bytes`, in elements of `value_size` bytes (rounded up to whole
    /// elements).
    pub fn for_size(size_bytes: u64, value_size: u32) -> Result<Self, ConfigError> {
        if value_size == 0 || value_size > MAX_BPF_VALUE_SIZE {
            return Err(ConfigError::BpfValueSize(value_size));
        }
        let max_entries = size_bytes.div_ceil(u64::from(value_size)).max(1);
        let max_entries =
            u32::try_from(max_entries).map_err(|_| ConfigError::BpfMapTooLarge(size_bytes))?;
        Ok(BpfMapShape {
            value_size,
            max_entries,
        })
    }

    /// Bytes of element storage (what the kernel vmallocs, give or take the header).
    pub fn data_bytes(self) -> u64 {
        u64::from(self.value_size).next_multiple_of(8) * u64::from(self.max_entries)
    }
}

impl Default for BpfMapShape {
    fn default() -> Self {
        // 4 MiB: 1024 pages per vmalloc, so 16 closed maps reach the 64 MiB lazy limit of a
        // 2-CPU machine and trigger a purge.
        BpfMapShape {
            value_size: 4096,
            max_entries: 1024,
        }
    }
}

/// The kernel's KMALLOC_MAX_SIZE-derived cap on an array map value is far above this; we
/// keep a sane upper bound so bad input gives a clear error instead of an EINVAL or E2BIG.
pub const MAX_BPF_VALUE_SIZE: u32 = 1 << 20;
/// Upper bound on one map's size, to keep a typo from asking the kernel for terabytes.
pub const MAX_BPF_MAP_BYTES: u64 = 1 << 30;
/// Upper bound on drivers and live objects per driver (tasks, fds).
pub const MAX_DRIVERS: usize = 1024;
pub const MAX_LIVE_PER_DRIVER: usize = 4096;

/// Everything a stress run needs to know.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StressConfig {
    /// Driver threads in total (for `mix`, split between the basic workloads).
    pub drivers: usize,
    /// How long to run; a stop request ends the run earlier.
    #[serde(rename = "duration_secs", serialize_with = "serialize_secs")]
    pub duration: Duration,
    /// Objects (tasks, pty pairs, maps) each driver keeps alive at once; `None` means each
    /// workload's [`WorkloadKind::default_live_per_driver`].
    pub live_per_driver: Option<usize>,
    /// Shape of the maps for `bpfmap`.
    pub bpf_map: BpfMapShape,
    /// How often the progress callback is called.
    #[serde(rename = "progress_interval_secs", serialize_with = "serialize_secs")]
    pub progress_interval: Duration,
}

impl StressConfig {
    /// Defaults: 2 drivers per online CPU, 5 s, per-workload live counts, 4 MiB maps.
    pub fn new(duration: Duration) -> Self {
        StressConfig {
            drivers: default_drivers(),
            duration,
            live_per_driver: None,
            bpf_map: BpfMapShape::default(),
            progress_interval: Duration::from_secs(1),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.drivers == 0 || self.drivers > MAX_DRIVERS {
            return Err(ConfigError::Drivers(self.drivers));
        }
        if self.duration.is_zero() {
            return Err(ConfigError::ZeroDuration);
        }
        if let Some(live) = self.live_per_driver {
            if live == 0 || live > MAX_LIVE_PER_DRIVER {
                return Err(ConfigError::Live(live));
            }
        }
        let shape = self.bpf_map;
        if shape.value_size == 0 || shape.value_size > MAX_BPF_VALUE_SIZE {
            return Err(ConfigError::BpfValueSize(shape.value_size));
        }
        if shape.max_entries == 0 || shape.data_bytes() > MAX_BPF_MAP_BYTES {
            return Err(ConfigError::BpfMapTooLarge(shape.data_bytes()));
        }
        if self.progress_interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        Ok(())
    }

    /// Live objects per driver for `kind`.
    pub fn live_for(&self, kind: WorkloadKind) -> usize {
        self.live_per_driver
            .unwrap_or_else(|| kind.default_live_per_driver())
    }
}

impl Default for StressConfig {
    fn default() -> Self {
        StressConfig::new(Duration::from_secs(5))
    }
}

/// Twice the CPUs this process may run on (at least 2): enough drivers that every CPU is busy
/// and that task exits often happen on a different CPU than the creation.
pub fn default_drivers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).clamp(2, MAX_DRIVERS)
}

/// Invalid [`StressConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--threads must be between 1 and {MAX_DRIVERS}, got {0}")]
    Drivers(usize),
    #[error("--duration must be greater than zero")]
    ZeroDuration,
    #[error("--live must be between 1 and {MAX_LIVE_PER_DRIVER}, got {0}")]
    Live(usize),
    #[error("BPF map value size must be between 1 and {MAX_BPF_VALUE_SIZE} bytes, got {0}")]
    BpfValueSize(u32),
    #[error("BPF map size must be between 1 byte and {MAX_BPF_MAP_BYTES} bytes, got {0}")]
    BpfMapTooLarge(u64),
    #[error("the progress interval must be greater than zero")]
    ZeroInterval,
}

/// Outcome of one basic workload within a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindResult {
    pub kind: WorkloadKind,
    /// What one op is (e.g. "pty pair opened and closed").
    pub op: &'static str,
    /// Driver threads that ran this workload.
    pub drivers: usize,
    /// Objects each driver kept alive at once.
    pub live_per_driver: usize,
    /// Completed operations.
    pub ops: u64,
    /// `ops` divided by the run's elapsed time.
    pub ops_per_sec: f64,
    /// Operations that failed with a transient error (EAGAIN, ENOMEM, EMFILE, ...) and were
    /// retried; a run with many of these is limited by a resource limit, not by the kernel.
    pub failed_ops: u64,
    /// The most recent transient error, if any.
    pub last_error: Option<String>,
}

/// Outcome of a stress run. Serializes to the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StressResult {
    pub workload: WorkloadKind,
    /// Completed operations over all basic workloads.
    pub ops: u64,
    /// Wall time from the first driver's start to the last driver's end.
    #[serde(rename = "elapsed_secs", serialize_with = "serialize_secs")]
    pub elapsed: Duration,
    pub ops_per_sec: f64,
    /// True when a stop request (Ctrl-C, SIGTERM, the caller's flag) ended the run before its
    /// duration.
    pub stopped_early: bool,
    pub failed_ops: u64,
    /// One entry per basic workload that ran (one for a single workload, four for `mix`).
    pub per_kind: Vec<KindResult>,
    /// The configuration of the run, so a JSON result is self-describing.
    pub config: StressConfig,
}

impl StressResult {
    /// The entry for `kind`, if it ran.
    pub fn kind(&self, kind: WorkloadKind) -> Option<&KindResult> {
        self.per_kind.iter().find(|k| k.kind == kind)
    }
}

/// `count / elapsed`, or 0 for an empty interval (never NaN or infinite, so JSON stays valid).
pub fn rate_per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Convenience for callers that have no stop flag of their own.
pub fn run_for(kind: WorkloadKind, config: &StressConfig) -> anyhow::Result<StressResult> {
    let never = AtomicBool::new(false);
    run_workload(kind, config, &never)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_map_is_4_mib_and_vmalloced() {
        let shape = BpfMapShape::default();
        assert_eq!(shape.data_bytes(), 4 << 20);
        assert!(shape.data_bytes() > BpfMapShape::KMALLOC_LIMIT_BYTES);
    }

    #[test]
    fn map_shape_rounds_up_to_whole_elements() {
        let shape = BpfMapShape::for_size(10_000, 4096).unwrap();
        assert_eq!(shape.max_entries, 3);
        let shape = BpfMapShape::for_size(0, 4096).unwrap();
        assert_eq!(shape.max_entries, 1);
    }

    #[test]
    fn map_shape_rejects_bad_value_sizes() {
        assert_eq!(
            BpfMapShape::for_size(1 << 20, 0),
            Err(ConfigError::BpfValueSize(0))
        );
        assert!(BpfMapShape::for_size(u64::MAX, 1).is_err());
    }

    #[test]
    fn config_validation() {
        let ok = StressConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        assert!(ok.drivers >= 2);

        let mut c = ok.clone();
        c.drivers = 0;
        assert_eq!(c.validate(), Err(ConfigError::Drivers(0)));
        let mut c = ok.clone();
        c.duration = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::ZeroDuration));
        let mut c = ok.clone();
        c.live_per_driver = Some(0);
        assert_eq!(c.validate(), Err(ConfigError::Live(0)));
        let mut c = ok.clone();
        c.bpf_map = BpfMapShape {
            value_size: 4096,
            max_entries: u32::MAX,
        };
        assert!(matches!(c.validate(), Err(ConfigError::BpfMapTooLarge(_))));
    }

    #[test]
    fn live_defaults_per_kind_unless_overridden() {
        let mut c = StressConfig::default();
        assert_eq!(c.live_for(WorkloadKind::Threads), 64);
        assert_eq!(c.live_for(WorkloadKind::Pty), 8);
        c.live_per_driver = Some(3);
        assert_eq!(c.live_for(WorkloadKind::Threads), 3);
    }

    #[test]
    fn rate_is_finite() {
        assert_eq!(rate_per_sec(10, Duration::ZERO), 0.0);
        assert_eq!(rate_per_sec(10, Duration::from_millis(500)), 20.0);
    }

    #[test]
    fn result_serializes_with_seconds() {
        let r = StressResult {
            workload: WorkloadKind::Pty,
            ops: 10,
            elapsed: Duration::from_millis(1500),
            ops_per_sec: rate_per_sec(10, Duration::from_millis(1500)),
            stopped_early: false,
            failed_ops: 0,
            per_kind: vec![],
            config: StressConfig::default(),
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["workload"], "pty");
        assert_eq!(v["elapsed_secs"], 1.5);
        assert_eq!(v["ops"], 10);
        assert_eq!(v["config"]["duration_secs"], 5.0);
        assert_eq!(v["config"]["bpf_map"]["value_size"], 4096);
    }
}
