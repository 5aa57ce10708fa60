//! The profile: everything a recording holds, as plain serializable data.
//!
//! No kernel access happens here: `collect` builds a `Profile` from the BPF maps, and every
//! view (report, flamegraph, top, metrics, the model) reads one. Stacks are symbolized at
//! record time so a recording can be reported on another machine.
pub mod attribution;
pub mod histogram;
pub mod recording;
pub mod sums;
pub mod verifier_log;

use serde::{Deserialize, Serialize};

pub use attribution::{Attribution, LockClass};
pub use histogram::{Log2Histogram, WaitHistogram};

/// How a hook is attached, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    Fentry,
    Kprobe,
    TpBtf,
    RawTracepoint,
    Tracepoint,
}

impl Mechanism {
    pub fn label(self) -> &'static str {
        match self {
            Mechanism::Fentry => "fentry",
            Mechanism::Kprobe => "kprobe",
            Mechanism::TpBtf => "tp_btf",
            Mechanism::RawTracepoint => "raw_tracepoint",
            Mechanism::Tracepoint => "tracepoint",
        }
    }
}

/// A better mechanism that was tried for a hook and why the kernel refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub mechanism: Mechanism,
    pub reason: String,
    /// The verifier's own log, when it is the verifier that refused the program (its end,
    /// at most `verifier_log::KEPT_BYTES`). Shown by `doctor`, `record` and `report`: the last
    /// lines, all of it with `--verbose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier_log: Option<String>,
}

impl Rejection {
    /// A refusal that is not the verifier's (no log).
    pub fn new(mechanism: Mechanism, reason: impl Into<String>) -> Self {
        Rejection {
            mechanism,
            reason: reason.into(),
            verifier_log: None,
        }
    }
}

/// What became of one hook (e.g. `lock:contention_begin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    pub hook: String,
    /// The mechanism in use, or None when the hook could not be attached at all.
    pub mechanism: Option<Mechanism>,
    /// Better mechanisms tried first, with the kernel's reason for refusing each.
    pub rejected: Vec<Rejection>,
}

/// The kernel's vmap allocator design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorDesign {
    /// Global vmap_area_lock / free_vmap_area_lock / purge_vmap_area_lock (5.11 .. 6.8).
    Legacy,
    /// Per-node busy/lazy trees and pools (6.9+).
    NodeSharded,
    /// Could not tell (no BTF).
    Unknown,
}

impl AllocatorDesign {
    pub fn label(self) -> &'static str {
        match self {
            AllocatorDesign::Legacy => "legacy (global vmap locks, <= 6.8)",
            AllocatorDesign::NodeSharded => "node-sharded (vmap_node, >= 6.9)",
            AllocatorDesign::Unknown => "unknown",
        }
    }
}

/// Where and how the recording was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingMeta {
    pub tool_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub design: AllocatorDesign,
    /// The design precisely (era, PREEMPT_RT) and the kernel facts it was told from; absent
    /// in recordings made before vmap-trace read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub design_detail: Option<crate::kernel::design::DesignDetail>,
    pub cpus: u32,
    /// Unix time (seconds) when recording started.
    pub started_unix_s: u64,
    pub duration_ns: u64,
    pub hooks: Vec<HookStatus>,
    /// Whether lock addresses could be named from kallsyms data symbols.
    pub lock_names_available: bool,
    /// Whether kallsyms addresses were visible (stacks symbolized).
    pub stacks_symbolized: bool,
    /// Things the user should know about this recording's limits.
    pub notes: Vec<String>,
    /// The vmap locks located in this kernel (names and addresses).
    #[serde(default)]
    pub vmap_locks: Vec<crate::kernel::vmap_locks::VmapLock>,
    /// What contended stacks were keyed by (`record --per-task`, `--user-stacks`).
    #[serde(default)]
    pub stack_keys: StackKeying,
    /// One contention in this many, per CPU, of locks other than the vmap locks was timed and
    /// counted this many times (`--sample-other-locks`); 1: every one (recordings made before
    /// the option timed every one).
    #[serde(default = "every_contention")]
    pub other_lock_period: u32,
    /// Where the lock wait times came from: the contention tracepoints or the kernel's lock
    /// slow paths (recordings made before the slow-path probes: the tracepoints).
    #[serde(default)]
    pub lock_waits: LockWaitSources,
}

/// Where one kind of lock wait was timed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitSource {
    /// lock:contention_begin/end.
    #[default]
    Tracepoints,
    /// Entry to return of the kernel's lock slow paths (fentry/fexit or kprobe/kretprobe).
    SlowPaths,
    /// Neither could be attached: these waits are not in the recording.
    Unavailable,
}

impl WaitSource {
    pub fn label(self) -> &'static str {
        match self {
            WaitSource::Tracepoints => "lock:contention_* tracepoints",
            WaitSource::SlowPaths => "lock slow-path probes",
            WaitSource::Unavailable => "not recorded",
        }
    }
}

/// Where the lock waits of a recording came from, and how often each probed slow path ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWaitSources {
    /// Spinlock waits (qspinlock; on PREEMPT_RT only raw spinlocks).
    pub spin: WaitSource,
    /// Mutex waits, and on PREEMPT_RT the rtmutex-based spinlock_t and mutex waits.
    pub sleeping: WaitSource,
    /// Why spinlock waits came from where they did (the `--spin-waits` choice).
    #[serde(default)]
    pub spin_reason: String,
    /// Each slow path attached, with its entries over the recording.
    #[serde(default)]
    pub slow_paths: Vec<SlowPathEntries>,
}

/// Entries of one probed lock slow path: which slow path the kernel runs, and for which locks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowPathEntries {
    pub function: String,
    /// The kernel's symbol (may carry a clone suffix such as `.constprop.0`).
    pub symbol: Option<String>,
    /// Entries on any lock.
    pub entries: u64,
    /// Entries on a vmap lock.
    pub vmap_lock_entries: u64,
}

fn every_contention() -> u32 {
    1
}

/// What each contended stack in a recording is keyed by, beyond lock and kernel stack, and
/// how stacks were captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackKeying {
    /// Stacks carry their process (`task`): flamegraphs can be filtered by task.
    pub per_task: bool,
    /// Stacks carry the user stack too (`user_frames`).
    pub user_stacks: bool,
    /// Kernel frames captured per stack at most (`--stack-depth`).
    #[serde(default = "default_stack_depth")]
    pub depth: u32,
    /// Stack captures per CPU and second at most (`--stack-samples`); 0: every contention's
    /// stack was captured. Recordings made before sampling existed captured every one.
    #[serde(default)]
    pub samples_per_cpu_s: u32,
    /// Entries of the kernel's per-(lock, stack) table (`--stack-keys`).
    #[serde(default = "default_stack_table")]
    pub table_entries: u32,
}

fn default_stack_depth() -> u32 {
    vmap_trace_common::DEFAULT_STACK_DEPTH
}

fn default_stack_table() -> u32 {
    vmap_trace_common::MAX_STACK_KEYS
}

impl Default for StackKeying {
    fn default() -> Self {
        StackKeying {
            per_task: false,
            user_stacks: false,
            depth: default_stack_depth(),
            samples_per_cpu_s: 0,
            table_entries: default_stack_table(),
        }
    }
}

/// How many contended stacks were captured and how many contentions the sampler passed over
/// (`--stack-samples`; waits of 50 us or more are always captured). Each captured stack stands
/// for itself and the short waits passed over before it on its CPU: the stack table's counts
/// and wait add up to the exact totals (less what was passed over after a CPU's last capture),
/// but how the short waits split between stacks is sampled. The per-lock and per-CPU figures
/// do not depend on it (they are exact but for other locks' sampled waits:
/// `RecordingMeta::other_lock_period`); a task enters the per-task table at its first sampled
/// contention and is counted exactly from then on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSampling {
    pub captured: u64,
    pub skipped: u64,
}

impl StackSampling {
    /// Whether stack figures are estimates rather than exact sums.
    pub fn is_sampled(&self) -> bool {
        self.skipped > 0
    }

    /// Contentions seen by the sampler.
    pub fn seen(&self) -> u64 {
        self.captured.saturating_add(self.skipped)
    }

    /// One stack captured in this many contentions.
    pub fn one_in(&self) -> f64 {
        self.seen() as f64 / self.captured.max(1) as f64
    }

    /// One line for reports, when stacks were sampled.
    pub fn describe(&self) -> Option<String> {
        self.is_sampled().then(|| {
            format!(
                "stacks sampled: {} of {} contentions captured (1 in {:.1}; waits of 50 us or more always); \
                 each capture also carries the short waits passed over before it on its CPU, so stack totals \
                 add up but short waits are split between stacks by sample; per-lock figures do not depend on it, per-task \
                 ones count from a task's first sampled contention; \
                 `--stack-samples 0` captures every stack",
                self.captured,
                self.seen(),
                self.one_in()
            )
        })
    }
}

impl RecordingMeta {
    pub fn duration_s(&self) -> f64 {
        self.duration_ns as f64 / 1e9
    }
}

/// Where a vmalloc operation figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpSource {
    /// The `vmalloc:*` tracepoints (6.2+).
    Tracepoint,
    /// The vmap function probes (entry arguments, return values, `vmap_lazy_nr`): kernels
    /// without the tracepoints, or `record --ops-from-functions`.
    FunctionProbe,
    /// Neither: the figure reads 0 because nothing counted it.
    Unavailable,
}

impl OpSource {
    pub fn label(self) -> &'static str {
        match self {
            OpSource::Tracepoint => "tracepoint",
            OpSource::FunctionProbe => "function probe",
            OpSource::Unavailable => "unavailable",
        }
    }
}

/// The source of each figure of `VmallocOps`, and why any is unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSources {
    /// `allocs`, `allocs_failed`, `alloc_pages`, `size_pages`, `allocs_per_cpu`.
    pub allocs: OpSource,
    /// `frees`.
    pub frees: OpSource,
    /// `lazy_pages_*`.
    pub lazy_backlog: OpSource,
    /// `purges`.
    pub purges: OpSource,
    /// `purged_areas`. From function probes: the lazy frees counted between one purge's start
    /// and the next, i.e. the areas each purge took as they were freed (6.1 merges adjacent
    /// lazy areas before purging, and the tracepoint's `npurged` counts them merged); areas
    /// freed before the recording began are not in it.
    pub purged_areas: OpSource,
    /// Why a figure is unavailable, or what to know about its source.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl OpSources {
    /// Every figure from the tracepoints.
    pub fn tracepoints() -> OpSources {
        OpSources {
            allocs: OpSource::Tracepoint,
            frees: OpSource::Tracepoint,
            lazy_backlog: OpSource::Tracepoint,
            purges: OpSource::Tracepoint,
            purged_areas: OpSource::Tracepoint,
            notes: Vec::new(),
        }
    }

    /// (figure, source), in report order.
    pub fn figures(&self) -> [(&'static str, OpSource); 5] {
        [
            ("allocations", self.allocs),
            ("frees", self.frees),
            ("lazy backlog", self.lazy_backlog),
            ("purges", self.purges),
            ("purged areas", self.purged_areas),
        ]
    }

    /// Whether any figure came from the function probes.
    pub fn any_from_functions(&self) -> bool {
        self.figures()
            .iter()
            .any(|(_, s)| *s == OpSource::FunctionProbe)
    }

    /// One line for reports: "allocations, frees: function probe; purges: tracepoint".
    pub fn describe(&self) -> String {
        let mut groups: Vec<(OpSource, Vec<&str>)> = Vec::new();
        for (figure, source) in self.figures() {
            match groups.iter_mut().find(|(s, _)| *s == source) {
                Some((_, names)) => names.push(figure),
                None => groups.push((source, vec![figure])),
            }
        }
        groups
            .iter()
            .map(|(s, names)| format!("{}: {}", names.join(", "), s.label()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// vmalloc operation counts: from the `vmalloc:*` tracepoints, or where a kernel has none
/// (before 6.2) from the vmap function probes (`sources`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmallocOps {
    pub allocs: u64,
    pub allocs_failed: u64,
    pub frees: u64,
    pub purges: u64,
    pub purged_areas: u64,
    pub alloc_pages: u64,
    /// Allocation sizes in pages, log2 buckets.
    pub size_pages: Log2Histogram,
    /// Allocations per CPU (index = CPU).
    pub allocs_per_cpu: Vec<u64>,
    /// Lazily freed pages waiting for a purge: last value seen, its limit, and the peak.
    pub lazy_pages_last: u64,
    pub lazy_pages_max: u64,
    pub lazy_pages_peak: u64,
    /// Where each figure came from. Absent in recordings made before function probes could
    /// count operations: there every figure came from the tracepoints, when they were attached
    /// (`Profile::op_sources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<OpSources>,
}

/// One kernel stack frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub addr: u64,
    pub function: Option<String>,
    pub offset: u64,
}

impl Frame {
    pub fn label(&self) -> String {
        match &self.function {
            Some(f) => f.clone(),
            None => format!("{:#x}", self.addr),
        }
    }
}

/// Waits on one lock (address + lock:contention_begin flags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockWait {
    pub lock_addr: u64,
    pub flags: u32,
    /// The lock's name when the kernel lists it (kallsyms data symbol) or vmap-trace can derive it.
    pub name: Option<String>,
    pub wait: WaitHistogram,
}

impl LockWait {
    pub fn kind(&self) -> &'static str {
        lock_kind(self.flags)
    }
}

/// Waits through one kernel stack on one lock (and, with `--per-task`/`--user-stacks`, from
/// one process and user stack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackWait {
    pub lock_addr: u64,
    pub flags: u32,
    /// Innermost frame first. Shared: many stacks (one per lock address, process, ...) have
    /// the same kernel frames, and profiles are copied by the live views.
    pub frames: std::sync::Arc<[Frame]>,
    /// The process that waited: only in `--per-task` / `--user-stacks` recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<StackTask>,
    /// The user stack, innermost first: only in `--user-stacks` recordings (empty for kernel
    /// threads, and where user code has no frame pointers it may hold only the syscall site).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_frames: Vec<Frame>,
    pub attribution: Attribution,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl StackWait {
    /// The longest wait of this row as views show it. With stack sampling, a captured stack
    /// also stands for the short waits (under `STACK_SAMPLE_ALWAYS_NS`) passed over before it:
    /// the kernel adds them to the row's count and total but does not know their longest, so
    /// a row whose captured waits are all short may have waited longer than its max, up to
    /// (never past) that threshold. Such a row's max is a lower bound: at least its mean.
    pub fn shown_max(&self, sampling: &StackSampling) -> ShownMax {
        let carried = sampling.is_sampled()
            && self.max_ns < vmap_trace_common::STACK_SAMPLE_ALWAYS_NS
            && self.count > 1;
        ShownMax::of(self.count, self.total_ns, self.max_ns, carried)
    }
}

/// A row's longest wait as the views show it: never below the row's mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShownMax {
    pub ns: u64,
    /// `ns` is a lower bound, not a measured maximum.
    pub estimated: bool,
}

impl ShownMax {
    /// The max of `count` waits totalling `total_ns` whose longest measured one was `max_ns`;
    /// `carried`: the row may hold waits that were not compared with `max_ns`. A max below the
    /// mean is impossible, so it is raised to the mean (rounded up) and marked: that happens
    /// with carried waits, and where two CPUs' racing updates of a shared max lost the larger.
    pub fn of(count: u64, total_ns: u64, max_ns: u64, carried: bool) -> ShownMax {
        let mean_up = if count == 0 {
            0
        } else {
            total_ns.div_ceil(count)
        };
        ShownMax {
            ns: max_ns.max(mean_up),
            estimated: carried || mean_up > max_ns,
        }
    }
}

/// The process a stack's waits came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackTask {
    pub tgid: u32,
    pub comm: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuWait {
    pub cpu: u32,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl CpuWait {
    /// The max as views show it (see `WaitHistogram::shown_max`).
    pub fn shown_max(&self) -> ShownMax {
        ShownMax::of(self.count, self.total_ns, self.max_ns, false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskWaitSummary {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl TaskWaitSummary {
    /// The max as views show it (see `WaitHistogram::shown_max`).
    pub fn shown_max(&self) -> ShownMax {
        ShownMax::of(self.count, self.total_ns, self.max_ns, false)
    }
}

/// Latency of one vmap function, entry to return (fentry/fexit or kprobe/kretprobe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLatency {
    pub function: String,
    /// The kernel symbol probed (may carry a clone suffix such as `.isra.0`).
    pub symbol: Option<String>,
    /// All CPUs together.
    pub latency: WaitHistogram,
    /// Each CPU with calls, by the CPU the call returned on (a call that slept may have
    /// started on another). Absent in recordings made before it existed.
    #[serde(default)]
    pub per_cpu: Vec<CpuLatency>,
}

/// One CPU's share of a function's latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuLatency {
    pub cpu: u32,
    pub latency: WaitHistogram,
}

/// Wait (lock call entry -> return) and hold (-> unlock) of one vmap lock, measured around the
/// lock calls themselves: includes the two-way spinlock waits lock:contention_* cannot see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmapLockTiming {
    pub name: String,
    pub lock_addr: u64,
    pub wait: WaitHistogram,
    pub hold: WaitHistogram,
}

/// Everything the kernel side could not record; all zero in a complete recording.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Losses {
    pub inflight_full: u64,
    pub lock_map_full: u64,
    pub stack_capture_failed: u64,
    pub stack_keys_full: u64,
    /// Function calls / lock acquisitions not timed: in-flight table full.
    #[serde(default)]
    pub calls_inflight_full: u64,
    /// Tasks dropped from the per-task table (LRU) to make room: their waits still count
    /// everywhere else, only their per-task line is gone.
    pub tasks_evicted: u64,
    /// Cold locks dropped from the shared per-lock table (LRU; locks first seen after the
    /// per-CPU table filled) to make room: their waits still count per CPU, but their rows
    /// and what they had counted are gone. Absent in recordings made before it existed.
    #[serde(default)]
    pub lock_keys_evicted: u64,
    /// Cold (lock, stack) keys dropped from the per-stack table (LRU) to make room: their
    /// waits still count per lock and CPU, but not in stacks and flamegraphs.
    #[serde(default)]
    pub stack_keys_evicted: u64,
}

impl Losses {
    /// Contention events lost from some table (not counting task evictions).
    pub fn total(&self) -> u64 {
        sums::saturating_sum([
            self.inflight_full,
            self.lock_map_full,
            self.stack_capture_failed,
            self.stack_keys_full,
            self.calls_inflight_full,
        ])
    }

    /// Human-readable lines for every non-zero counter.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |n: u64, what: &str| {
            if n > 0 {
                out.push(format!("{n} {what}"));
            }
        };
        push(
            self.inflight_full,
            "contentions not timed: in-flight table full",
        );
        push(
            self.lock_map_full,
            "contentions not counted per lock: lock map full",
        );
        push(
            self.stack_capture_failed,
            "stacks not captured: stack map full or hash collision",
        );
        push(
            self.stack_keys_full,
            "contentions without stack: per-stack map full",
        );
        push(
            self.calls_inflight_full,
            "function calls or lock acquisitions not timed: in-flight table full",
        );
        push(
            self.tasks_evicted,
            "tasks evicted from the per-task table (their waits still count per lock and CPU)",
        );
        push(
            self.lock_keys_evicted,
            "cold locks evicted from the per-lock table (their waits still count per CPU; their rows are gone)",
        );
        push(
            self.stack_keys_evicted,
            "cold stacks evicted from the per-stack table (their waits still count per lock and CPU)",
        );
        out
    }

    /// Whether some table evicted entries: per-lock or per-stack rows may then not add up to
    /// the per-CPU totals, though no event was lost outright.
    pub fn evicted(&self) -> bool {
        sums::saturating_sum([
            self.tasks_evicted,
            self.lock_keys_evicted,
            self.stack_keys_evicted,
        ]) > 0
    }
}

/// A whole recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub meta: RecordingMeta,
    pub ops: VmallocOps,
    pub locks: Vec<LockWait>,
    pub stacks: Vec<StackWait>,
    pub cpus: Vec<CpuWait>,
    pub tasks: Vec<TaskWaitSummary>,
    pub losses: Losses,
    /// vmap function latencies (kernels with kprobes or fentry).
    #[serde(default)]
    pub functions: Vec<FunctionLatency>,
    /// vmap lock wait/hold around the lock calls (`record --lock-timing`).
    #[serde(default)]
    pub lock_timing: Vec<VmapLockTiming>,
    /// Stack captures against contentions passed over (`--stack-samples`).
    #[serde(default)]
    pub stack_sampling: StackSampling,
}

/// Wait aggregated by (vmap function, lock): the first table a user reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmapCallSite {
    pub vmap_function: String,
    /// True when the vmap function took the lock itself.
    pub direct: bool,
    pub call_site: Option<String>,
    pub lock_addr: u64,
    pub lock_name: Option<String>,
    pub flags: u32,
    pub count: u64,
    pub total_ns: u64,
    /// At least the mean; a lower bound when `estimated` (`StackWait::shown_max`).
    pub max_ns: u64,
    /// Some of the site's stacks carry waits the stack sampler passed over, whose longest is
    /// not known: `max_ns` is a lower bound.
    #[serde(default)]
    pub estimated: bool,
}

impl Profile {
    /// Where each vmalloc operation figure came from: as recorded, or for recordings made
    /// before that was recorded, the tracepoints (the only source then) unless the recording
    /// lists their hook as unattached.
    pub fn op_sources(&self) -> OpSources {
        if let Some(sources) = &self.ops.sources {
            return sources.clone();
        }
        let unattached = |event: &str| {
            self.meta
                .hooks
                .iter()
                .any(|h| h.hook == format!("vmalloc:{event}") && h.mechanism.is_none())
        };
        let source = |event: &str| {
            if unattached(event) {
                OpSource::Unavailable
            } else {
                OpSource::Tracepoint
            }
        };
        OpSources {
            allocs: source("alloc_vmap_area"),
            frees: source("free_vmap_area_noflush"),
            lazy_backlog: source("free_vmap_area_noflush"),
            purges: source("purge_vmap_area_lazy"),
            purged_areas: source("purge_vmap_area_lazy"),
            notes: Vec::new(),
        }
    }

    pub fn lock_name(&self, addr: u64) -> Option<&str> {
        self.locks
            .iter()
            .find(|l| l.lock_addr == addr)
            .and_then(|l| l.name.as_deref())
    }

    /// Why a probed function shows fewer calls than its callers imply, when the recording can
    /// tell: a function can be inlined into some callers (the probe sees only the out-of-line
    /// copy), or simply not be reached by the workload.
    pub fn explain_function(&self, function: &str) -> Option<String> {
        let f = self.functions.iter().find(|f| f.function == function)?;
        let calls = |name: &str| {
            self.functions
                .iter()
                .find(|f| f.function == name)
                .map_or(0, |f| f.latency.count)
        };
        match function {
            // Every find_vm_area() is a find_vmap_area() lookup in the source; fewer probe hits
            // mean the compiler inlined find_vmap_area into find_vm_area (Debian's 6.1 build
            // does), and only other callers (e.g. hardened usercopy) reach the probed copy.
            "find_vmap_area" if calls("find_vm_area") > f.latency.count => Some(format!(
                "{} direct calls, but find_vm_area made {}: in this kernel build find_vmap_area is inlined \
                 into find_vm_area, so those lookups do not hit this probe; find_vm_area's latency covers them",
                f.latency.count,
                calls("find_vm_area")
            )),
            _ if f.latency.count > 0 => None,
            "vm_map_ram" => Some("no calls: nothing used vm_map_ram during the recording (filesystems such as XFS, some GPU drivers)".into()),
            _ => Some(
                "probed but never called during the recording: the workload did not reach it, or its callers use an \
                 inlined copy"
                    .into(),
            ),
        }
    }

    /// vmap contention grouped by the vmap function that took the lock, most wait first.
    pub fn vmap_call_sites(&self) -> Vec<VmapCallSite> {
        type Key<'a> = (&'a str, u64, u32, Option<&'a str>);
        let mut index: std::collections::HashMap<Key<'_>, usize> = Default::default();
        let mut sites: Vec<VmapCallSite> = Vec::new();
        // Per site: the largest max of rows whose max is measured, and of those whose max is
        // a lower bound (`StackWait::shown_max`).
        let mut maxima: Vec<(u64, u64)> = Vec::new();
        for s in self
            .stacks
            .iter()
            .filter(|s| s.attribution.class == LockClass::Vmap)
        {
            let a = &s.attribution;
            let func = a.vmap_function.as_deref().unwrap_or_default();
            let key = (func, s.lock_addr, s.flags, a.call_site.as_deref());
            let i = *index.entry(key).or_insert_with(|| {
                sites.push(VmapCallSite {
                    vmap_function: func.to_string(),
                    direct: a.is_direct(),
                    call_site: a.call_site.clone(),
                    lock_addr: s.lock_addr,
                    lock_name: self.lock_name(s.lock_addr).map(str::to_string),
                    flags: s.flags,
                    count: 0,
                    total_ns: 0,
                    max_ns: 0,
                    estimated: false,
                });
                maxima.push((0, 0));
                sites.len() - 1
            });
            let site = &mut sites[i];
            site.count = site.count.saturating_add(s.count);
            site.total_ns = site.total_ns.saturating_add(s.total_ns);
            let shown = s.shown_max(&self.stack_sampling);
            site.max_ns = site.max_ns.max(shown.ns);
            site.estimated |= shown.estimated;
            let (exact, bound) = &mut maxima[i];
            if shown.estimated {
                *bound = (*bound).max(shown.ns);
            } else {
                *exact = (*exact).max(shown.ns);
            }
        }
        for (site, (exact, bound)) in sites.iter_mut().zip(maxima) {
            // Waits passed over are shorter than the always-captured threshold: a measured
            // max at or past it (and past every lower bound) is the site's max.
            let threshold = vmap_trace_common::STACK_SAMPLE_ALWAYS_NS;
            site.estimated &= exact < threshold.max(bound);
            // Rows at least their own means still leave the site below its mean when a row
            // has wait but no count (only a damaged recording has one): hold the site to it.
            let whole = ShownMax::of(site.count, site.total_ns, site.max_ns, false);
            site.max_ns = whole.ns;
            site.estimated |= whole.estimated;
        }
        sites.sort_by(|a, b| b.total_ns.cmp(&a.total_ns));
        sites
    }

    /// The part of `lock`'s wait whose stacks pass through a vmap function.
    pub fn lock_vmap_wait_ns(&self, lock: &LockWait) -> u64 {
        sums::saturating_sum(
            self.stacks
                .iter()
                .filter(|s| {
                    s.lock_addr == lock.lock_addr
                        && s.flags == lock.flags
                        && s.attribution.class == LockClass::Vmap
                })
                .map(|s| s.total_ns),
        )
    }

    /// Wait on each lock that went through non-vmap stacks, most first (lock totals minus
    /// their vmap share).
    pub fn other_locks(&self) -> Vec<(LockWait, u64)> {
        let mut out: Vec<(LockWait, u64)> = self
            .locks
            .iter()
            .map(|l| {
                (
                    l.clone(),
                    l.wait.total_ns.saturating_sub(self.lock_vmap_wait_ns(l)),
                )
            })
            .filter(|(_, other_ns)| *other_ns > 0)
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1));
        out
    }

    pub fn total_wait(&self) -> WaitHistogram {
        let mut t = WaitHistogram::default();
        for l in &self.locks {
            t.add(&l.wait);
        }
        t
    }

    /// Total wait through vmap stacks.
    pub fn vmap_wait_ns(&self) -> u64 {
        sums::saturating_sum(
            self.stacks
                .iter()
                .filter(|s| s.attribution.class == LockClass::Vmap)
                .map(|s| s.total_ns),
        )
    }
}

/// A short name for lock:contention_begin flags.
pub fn lock_kind(flags: u32) -> &'static str {
    use vmap_trace_common::lock_flags::*;
    if flags & MUTEX != 0 {
        if flags & SPIN != 0 {
            "mutex(spin)"
        } else {
            "mutex"
        }
    } else if flags & PERCPU != 0 {
        "percpu-rwsem"
    } else if flags & RT != 0 {
        "rtmutex"
    } else if flags & SPIN != 0 {
        if flags & READ != 0 {
            "rwlock(read)"
        } else if flags & WRITE != 0 {
            "rwlock(write)"
        } else {
            "spinlock"
        }
    } else if flags & READ != 0 {
        "rwsem(read)"
    } else if flags & WRITE != 0 {
        "rwsem(write)"
    } else {
        "lock"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn frame(name: &str) -> Frame {
        Frame {
            addr: 0xffffffff81000000,
            function: Some(name.into()),
            offset: 0,
        }
    }

    /// A small profile with one vmap and one other contention path on two locks.
    pub fn sample_profile() -> Profile {
        let vmap_frames = vec![
            frame("_raw_spin_lock"),
            frame("alloc_vmap_area"),
            frame("__vmalloc_node_range_noprof"),
        ];
        let other_frames = vec![
            frame("__mutex_lock.constprop.0"),
            frame("tty_lock"),
            frame("tty_open"),
        ];
        let stack = |frames: Vec<Frame>, addr, flags, count, total| StackWait {
            task: None,
            user_frames: Vec::new(),
            lock_addr: addr,
            flags,
            attribution: attribution::attribute(&frames),
            frames: frames.into(),
            count,
            total_ns: total,
            max_ns: total / count,
        };
        Profile {
            meta: RecordingMeta {
                stack_keys: Default::default(),
                other_lock_period: 1,
                lock_waits: Default::default(),
                tool_version: "0.1.0".into(),
                kernel_release: "6.1.0-test".into(),
                hostname: "test".into(),
                design: AllocatorDesign::Legacy,
                design_detail: None,
                cpus: 4,
                started_unix_s: 1_700_000_000,
                duration_ns: 2_000_000_000,
                hooks: vec![HookStatus {
                    hook: "lock:contention_begin".into(),
                    mechanism: Some(Mechanism::TpBtf),
                    rejected: vec![],
                }],
                lock_names_available: true,
                stacks_symbolized: true,
                notes: vec![],
                vmap_locks: vec![],
            },
            ops: VmallocOps {
                allocs: 2000,
                frees: 1990,
                purges: 3,
                purged_areas: 1500,
                ..Default::default()
            },
            locks: vec![
                LockWait {
                    lock_addr: 0x1000,
                    flags: 1,
                    name: Some("vmap_area_lock".into()),
                    wait: WaitHistogram {
                        count: 10,
                        total_ns: 50_000,
                        max_ns: 9_000,
                        hist: Log2Histogram::from_buckets(&[
                            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10,
                        ]),
                    },
                },
                LockWait {
                    lock_addr: 0x2000,
                    flags: 32,
                    name: None,
                    wait: WaitHistogram {
                        count: 4,
                        total_ns: 400_000,
                        max_ns: 200_000,
                        hist: Log2Histogram::from_buckets(&[
                            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4,
                        ]),
                    },
                },
            ],
            stacks: vec![
                stack(vmap_frames, 0x1000, 1, 10, 50_000),
                stack(other_frames, 0x2000, 32, 4, 400_000),
            ],
            cpus: vec![
                CpuWait {
                    cpu: 0,
                    count: 7,
                    total_ns: 250_000,
                    max_ns: 200_000,
                },
                CpuWait {
                    cpu: 1,
                    count: 7,
                    total_ns: 200_000,
                    max_ns: 9_000,
                },
            ],
            tasks: vec![TaskWaitSummary {
                tid: 42,
                tgid: 42,
                comm: "sshd".into(),
                count: 14,
                total_ns: 450_000,
                max_ns: 200_000,
            }],
            losses: Losses::default(),
            functions: vec![FunctionLatency {
                function: "alloc_vmap_area".into(),
                symbol: Some("alloc_vmap_area".into()),
                latency: WaitHistogram {
                    count: 2000,
                    total_ns: 4_000_000,
                    max_ns: 30_000,
                    hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2000]),
                },
                per_cpu: vec![
                    CpuLatency {
                        cpu: 0,
                        latency: WaitHistogram {
                            count: 1500,
                            total_ns: 3_000_000,
                            max_ns: 30_000,
                            hist: Log2Histogram::from_buckets(&[
                                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1500,
                            ]),
                        },
                    },
                    CpuLatency {
                        cpu: 1,
                        latency: WaitHistogram {
                            count: 500,
                            total_ns: 1_000_000,
                            max_ns: 20_000,
                            hist: Log2Histogram::from_buckets(&[
                                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 500,
                            ]),
                        },
                    },
                ],
            }],
            lock_timing: vec![],
            stack_sampling: Default::default(),
        }
    }

    /// `sample_profile` with a hostile string (`escape::tests::HOSTILE`) in every text field a
    /// recording carries, stacks keyed by process with user frames: what a crafted recording,
    /// or a task that renamed itself, puts in front of a view.
    pub fn hostile_profile() -> Profile {
        use crate::escape::tests::HOSTILE;
        let h = |prefix: &str| format!("{prefix}{HOSTILE}");
        let mut p = sample_profile();
        let m = &mut p.meta;
        (m.tool_version, m.kernel_release, m.hostname) = (h("0.1.0"), h("6.1.0"), h("host"));
        m.notes = vec![h("note")];
        m.hooks[0].hook = h("lock:contention_begin");
        m.hooks[0].rejected = vec![Rejection::new(Mechanism::Fentry, h("refused"))];
        m.vmap_locks = vec![crate::kernel::vmap_locks::VmapLock {
            name: h("vmap_node[0].busy"),
            addr: 0x1000,
            kind: crate::kernel::vmap_locks::VmapLockKind::Spinlock,
        }];
        m.stack_keys.per_task = true;
        m.stack_keys.user_stacks = true;
        p.locks[1].name = Some(h("mutex"));
        for s in &mut p.stacks {
            let mut frames = s.frames.to_vec();
            frames.push(frame(&h("entry")));
            s.frames = frames.into();
            s.user_frames = vec![frame(&h("main"))];
            s.task = Some(StackTask {
                tgid: 42,
                comm: HOSTILE.into(),
            });
        }
        // Taken under alloc_vmap_area, not by it: the report then names the call site too.
        p.stacks[0].attribution.call_site = Some(h("site"));
        p.stacks[1].attribution.call_site = Some(h("caller"));
        p.tasks[0].comm = HOSTILE.into();
        p.functions[0].symbol = Some(h("alloc_vmap_area"));
        p.functions.push(FunctionLatency {
            function: h("fn"),
            symbol: None,
            latency: WaitHistogram::default(),
            per_cpu: vec![],
        });
        p.lock_timing = vec![VmapLockTiming {
            name: h("vmap_area_lock"),
            lock_addr: 0x1000,
            wait: p.locks[0].wait.clone(),
            hold: p.locks[0].wait.clone(),
        }];
        p
    }

    /// A Debian 6.1 recording (no `vmalloc:*` tracepoints before 6.2): the operations were
    /// counted by the vmap function probes (kprobes), as `record` does on such kernels.
    pub fn function_probe_profile() -> Profile {
        let mut p = sample_profile();
        p.meta.kernel_release = "6.1.0-57-amd64".into();
        for event in [
            "alloc_vmap_area",
            "free_vmap_area_noflush",
            "purge_vmap_area_lazy",
        ] {
            p.meta.hooks.push(HookStatus {
                hook: format!("vmalloc:{event}"),
                mechanism: None,
                rejected: vec![Rejection::new(
                    Mechanism::Tracepoint,
                    format!("tracepoint vmalloc:{event} does not exist in this kernel"),
                )],
            });
        }
        for function in [
            "alloc_vmap_area",
            "free_vmap_area_noflush",
            "__purge_vmap_area_lazy",
        ] {
            p.meta.hooks.push(HookStatus {
                hook: format!("fn:{function}"),
                mechanism: Some(Mechanism::Kprobe),
                rejected: vec![],
            });
        }
        p.ops.allocs_per_cpu = vec![600, 500, 500, 400];
        p.ops.allocs_failed = 2;
        p.ops.alloc_pages = 9000;
        p.ops.size_pages = Log2Histogram::from_buckets(&[100, 1200, 690, 8]);
        p.ops.lazy_pages_last = 4000;
        p.ops.lazy_pages_max = 24576;
        p.ops.lazy_pages_peak = 24000;
        p.ops.sources = Some(OpSources {
            allocs: OpSource::FunctionProbe,
            frees: OpSource::FunctionProbe,
            lazy_backlog: OpSource::FunctionProbe,
            purges: OpSource::FunctionProbe,
            purged_areas: OpSource::FunctionProbe,
            notes: vec![
                "purged areas: the lazy frees between one purge's start and the next".into(),
            ],
        });
        p
    }

    #[test]
    fn op_sources_are_recorded_or_derived_for_old_recordings() {
        let p = function_probe_profile();
        assert_eq!(p.op_sources(), p.ops.sources.clone().unwrap());
        // The same recording as an older vmap-trace wrote it: no `sources`, and the vmalloc
        // hooks unattached, so its zero counts were not measured.
        let mut json: serde_json::Value = serde_json::to_value(&p).unwrap();
        json["ops"].as_object_mut().unwrap().remove("sources");
        let old: Profile = serde_json::from_value(json).unwrap();
        assert_eq!(old.ops.sources, None);
        let derived = old.op_sources();
        assert!(
            derived
                .figures()
                .iter()
                .all(|(_, s)| *s == OpSource::Unavailable),
            "{derived:?}"
        );
        // Recordings that did not list the vmalloc hooks had nothing but the tracepoints.
        let mut sample = sample_profile();
        sample.ops.sources = None;
        assert_eq!(sample.op_sources(), OpSources::tracepoints());
        // Written and read back, the sources survive.
        let back: Profile = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.ops.sources, p.ops.sources);
    }

    /// Every part of a recording filled in (node-sharded, sampled stacks with tasks and user
    /// stacks, lock timing, per-CPU latencies, losses, a stack whose measured max is below
    /// its mean): a seed for the fuzz campaign (tests/fuzz_recording.rs) that reaches every
    /// table of every view.
    pub fn rich_profile() -> Profile {
        use crate::kernel::vmap_locks::{VmapLock, VmapLockKind};
        let mut p = sample_profile();
        let m = &mut p.meta;
        m.design = AllocatorDesign::NodeSharded;
        m.kernel_release = "6.12.0-test".into();
        m.stack_keys = StackKeying {
            per_task: true,
            user_stacks: true,
            samples_per_cpu_s: 100,
            ..Default::default()
        };
        m.other_lock_period = 64;
        m.notes = vec!["lock:contention_* see only waits that reach the MCS queue".into()];
        m.hooks.push(HookStatus {
            hook: "fn:alloc_vmap_area".into(),
            mechanism: Some(Mechanism::Fentry),
            rejected: vec![],
        });
        m.hooks.push(HookStatus {
            hook: "fn:vm_map_ram".into(),
            mechanism: None,
            rejected: vec![Rejection::new(Mechanism::Kprobe, "kprobes are not enabled")],
        });
        m.vmap_locks = vec![VmapLock {
            name: "vmap_node[0].busy.lock".into(),
            addr: 0x1000,
            kind: VmapLockKind::Spinlock,
        }];
        p.locks[0].name = Some("vmap_node[0].busy.lock".into());
        p.ops.size_pages = Log2Histogram::from_buckets(&[1200, 500, 0, 250, 50]);
        p.ops.allocs_per_cpu = vec![1200, 800];
        p.ops.alloc_pages = 4100;
        (
            p.ops.lazy_pages_last,
            p.ops.lazy_pages_max,
            p.ops.lazy_pages_peak,
        ) = (30, 32768, 900);
        for s in &mut p.stacks {
            s.task = Some(StackTask {
                tgid: 42,
                comm: "sshd".into(),
            });
            s.user_frames = vec![frame("main"), frame("__libc_start_main")];
        }
        // `stress mix`: avg 3.74 us, max 851 ns, through the sampler's passed-over waits.
        (p.stacks[0].count, p.stacks[0].total_ns, p.stacks[0].max_ns) = (10, 37_400, 851);
        p.stack_sampling = StackSampling {
            captured: 120,
            skipped: 880,
        };
        p.losses = Losses {
            stack_keys_full: 2,
            tasks_evicted: 3,
            stack_keys_evicted: 1,
            ..Default::default()
        };
        let hist = |count, bucket: usize| {
            let mut raw = vec![0; bucket + 1];
            raw[bucket] = count;
            Log2Histogram::from_buckets(&raw)
        };
        p.lock_timing = vec![VmapLockTiming {
            name: "vmap_node[0].busy.lock".into(),
            lock_addr: 0x1000,
            wait: WaitHistogram {
                count: 500,
                total_ns: 250_000,
                max_ns: 4_000,
                hist: hist(500, 9),
            },
            hold: WaitHistogram {
                count: 500,
                total_ns: 400_000,
                max_ns: 9_000,
                hist: hist(500, 9),
            },
        }];
        // Mixed sources, so the fuzz campaign reaches the "counted by" line and its notes.
        p.ops.sources = Some(OpSources {
            allocs: OpSource::Tracepoint,
            frees: OpSource::FunctionProbe,
            lazy_backlog: OpSource::Unavailable,
            purges: OpSource::FunctionProbe,
            purged_areas: OpSource::FunctionProbe,
            notes: vec!["lazy backlog: vmap_lazy_nr is not in kallsyms".into()],
        });
        p
    }

    #[test]
    fn evictions_are_described_but_are_not_lost_events() {
        let mut l = Losses::default();
        assert!(!l.evicted() && l.describe().is_empty());
        l.lock_keys_evicted = 2;
        l.stack_keys_evicted = 5;
        assert!(l.evicted());
        assert_eq!(
            l.total(),
            0,
            "evicted keys' waits still count per CPU: not lost events"
        );
        let text = l.describe().join("; ");
        assert!(text.contains("2 cold locks evicted"), "{text}");
        assert!(text.contains("5 cold stacks evicted"), "{text}");
        // Recordings made before the fields existed still load.
        let old: Losses = serde_json::from_str(
            r#"{"inflight_full":0,"lock_map_full":0,"stack_capture_failed":0,"stack_keys_full":0,"tasks_evicted":1}"#,
        )
        .unwrap();
        assert_eq!(
            (
                old.tasks_evicted,
                old.lock_keys_evicted,
                old.stack_keys_evicted
            ),
            (1, 0, 0)
        );
    }

    #[test]
    fn vmap_sites_and_other_locks_split_the_wait() {
        let p = sample_profile();
        let sites = p.vmap_call_sites();
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].vmap_function, "alloc_vmap_area");
        assert!(sites[0].direct);
        assert_eq!(sites[0].lock_name.as_deref(), Some("vmap_area_lock"));
        assert_eq!(sites[0].total_ns, 50_000);
        let others = p.other_locks();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].0.lock_addr, 0x2000);
        assert_eq!(others[0].1, 400_000);
        assert_eq!(p.vmap_wait_ns(), 50_000);
        assert_eq!(p.total_wait().count, 14);
    }

    /// The stack sampler folds passed-over waits into the next capture's count and total,
    /// not its max: `stress mix` showed alloc_vmap_area at avg 3.74 us, max 851 ns.
    fn sampled_over(count: u64, total_ns: u64, max_ns: u64) -> Profile {
        let mut p = sample_profile();
        p.stack_sampling = StackSampling {
            captured: 100,
            skipped: 900,
        };
        (p.stacks[0].count, p.stacks[0].total_ns, p.stacks[0].max_ns) = (count, total_ns, max_ns);
        p
    }

    #[test]
    fn a_max_is_never_below_the_mean_and_a_bound_says_so() {
        let p = sampled_over(10, 37_400, 851);
        let shown = p.stacks[0].shown_max(&p.stack_sampling);
        assert_eq!(
            shown,
            ShownMax {
                ns: 3740,
                estimated: true
            }
        );
        let site = &p.vmap_call_sites()[0];
        assert_eq!((site.max_ns, site.estimated), (3740, true));
        // Below the mean but not sampled (a lost racing update): raised, and marked.
        let mut racy = sampled_over(10, 37_400, 851);
        racy.stack_sampling = StackSampling::default();
        let shown = racy.stacks[0].shown_max(&racy.stack_sampling);
        assert_eq!((shown.ns, shown.estimated), (3740, true));
        // Sampled, but the max could hold carried waits: a bound even above the mean.
        let p = sampled_over(10, 37_400, 9_000);
        let shown = p.stacks[0].shown_max(&p.stack_sampling);
        assert_eq!((shown.ns, shown.estimated), (9_000, true));
        // A captured wait past the always-captured threshold beats every passed-over one.
        let p = sampled_over(10, 370_000, 60_000);
        let shown = p.stacks[0].shown_max(&p.stack_sampling);
        assert_eq!((shown.ns, shown.estimated), (60_000, false));
        // Unsampled and consistent: as measured.
        let p = sample_profile();
        let shown = p.stacks[0].shown_max(&p.stack_sampling);
        assert_eq!((shown.ns, shown.estimated), (5_000, false));
        assert_eq!(ShownMax::of(0, 0, 0, false).ns, 0);
        assert_eq!(ShownMax::of(3, 10, 3, false).ns, 4, "the mean rounds up");
    }

    #[test]
    fn a_site_is_exact_when_a_measured_max_beats_every_bound() {
        let mut p = sampled_over(10, 37_400, 851);
        let mut long = p.stacks[0].clone();
        long.frames = vec![
            frame("_raw_spin_lock"),
            frame("alloc_vmap_area"),
            frame("vmalloc"),
        ]
        .into();
        (long.count, long.total_ns, long.max_ns) = (2, 130_000, 70_000);
        p.stacks.push(long);
        let site = &p.vmap_call_sites()[0];
        assert_eq!(site.count, 12);
        assert_eq!((site.max_ns, site.estimated), (70_000, false));
    }

    #[test]
    fn a_site_is_never_below_its_mean_even_with_a_row_of_no_count() {
        // Fuzz case 8737: a stack of the site with count 0 but wait time.
        let mut p = sample_profile();
        let mut empty = p.stacks[0].clone();
        (empty.count, empty.total_ns, empty.max_ns) = (0, 500_000, 0);
        p.stacks.push(empty);
        let site = &p.vmap_call_sites()[0];
        assert_eq!((site.count, site.total_ns), (10, 550_000));
        assert_eq!((site.max_ns, site.estimated), (55_000, true));
    }

    #[test]
    fn explains_inlined_find_vmap_area_and_idle_functions() {
        let mut p = sample_profile();
        let f = |name: &str, count| FunctionLatency {
            function: name.into(),
            symbol: Some(name.into()),
            latency: WaitHistogram {
                count,
                ..Default::default()
            },
            per_cpu: vec![],
        };
        p.functions = vec![
            f("find_vmap_area", 16),
            f("find_vm_area", 842),
            f("vm_map_ram", 0),
            f("alloc_vmap_area", 5),
        ];
        let why = p.explain_function("find_vmap_area").unwrap();
        assert!(why.contains("inlined") && why.contains("842"), "{why}");
        assert!(p
            .explain_function("vm_map_ram")
            .unwrap()
            .contains("no calls"));
        assert_eq!(p.explain_function("alloc_vmap_area"), None);
        p.functions[1].latency.count = 3;
        assert_eq!(p.explain_function("find_vmap_area"), None);
    }

    #[test]
    fn stack_sampling_is_stated_only_when_stacks_were_passed_over() {
        assert_eq!(
            StackSampling {
                captured: 500,
                skipped: 0
            }
            .describe(),
            None
        );
        let line = StackSampling {
            captured: 100,
            skipped: 900,
        }
        .describe()
        .unwrap();
        assert!(
            line.contains("100 of 1000 contentions captured (1 in 10.0"),
            "{line}"
        );
        assert!(
            line.contains("per-lock figures do not depend on it")
                && line.contains("--stack-samples 0"),
            "{line}"
        );
    }

    #[test]
    fn recordings_from_before_stack_sampling_read_as_every_stack_at_full_depth() {
        let old: StackKeying =
            serde_json::from_str(r#"{"per_task": true, "user_stacks": false}"#).unwrap();
        assert_eq!(
            old,
            StackKeying {
                per_task: true,
                user_stacks: false,
                depth: 48,
                samples_per_cpu_s: 0,
                table_entries: 16384
            }
        );
        let p: Profile = {
            let mut v = serde_json::to_value(sample_profile()).unwrap();
            v.as_object_mut().unwrap().remove("stack_sampling");
            serde_json::from_value(v).unwrap()
        };
        assert!(!p.stack_sampling.is_sampled());
    }

    #[test]
    fn lock_kinds() {
        assert_eq!(lock_kind(1), "spinlock");
        assert_eq!(lock_kind(32), "mutex");
        assert_eq!(lock_kind(33), "mutex(spin)");
        assert_eq!(lock_kind(2), "rwsem(read)");
        assert_eq!(lock_kind(1 | 4), "rwlock(write)");
    }
}
