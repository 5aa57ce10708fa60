//! `--stack-depth`, `--stack-samples`, `--sample-other-locks` and `--spin-waits`: how contentions are captured, for
//! every command that attaches (`record`, `daemon`).
use vmap_trace_common::{
    DEFAULT_OTHER_LOCK_PERIOD, DEFAULT_STACK_DEPTH, DEFAULT_STACK_SAMPLES, MAX_STACK_DEPTH,
    MAX_STACK_KEYS,
};

use crate::probe::{slowpath::SpinWaitChoice, ProbeOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct StackCaptureArgs {
    /// Kernel frames kept per contended stack (1-48). Fewer frames save map space and
    /// symbolization but cut the outer callers off flamegraphs; the capture itself costs about
    /// the same whatever the depth (docs/performance.md).
    #[arg(long, value_name = "FRAMES", default_value_t = DEFAULT_STACK_DEPTH,
          value_parser = clap::value_parser!(u32).range(1..=MAX_STACK_DEPTH as i64))]
    pub stack_depth: u32,
    /// Contended stacks captured per CPU and second, at most (0: every one). Capturing a stack
    /// is most of what a contention costs to trace. Waits of 50 us or more are always captured;
    /// each capture also carries the short waits passed over before it, so stack totals still
    /// add up, but how short waits split between stacks (flamegraphs, per-vmap-function
    /// tables) is sampled. Per-lock figures stay exact.
    #[arg(long, value_name = "PER_CPU_S", default_value_t = DEFAULT_STACK_SAMPLES,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub stack_samples: u32,
    /// Entries of the kernel's per-(lock, stack) table. When it is full its coldest entries
    /// are evicted (reported as evictions; their waits still count per lock and CPU):
    /// per-object locks (every tty's, every inode's) keep adding keys, about 2 per second
    /// under `stress mix`, so a daemon meant to run for days under such load may want more.
    /// About 120 bytes of kernel memory each.
    #[arg(long, value_name = "N", default_value_t = MAX_STACK_KEYS,
          value_parser = clap::value_parser!(u32).range(8..=4_194_304))]
    pub stack_keys: u32,
    /// Time one contention in N, per CPU, of locks other than the vmap locks, counted N times
    /// (1: time every one). The vmap locks are always timed exactly. Other locks' totals stay
    /// within N per CPU of the true count, their split between locks and their waits are
    /// estimates. Under workloads that contend on other locks (ttys, inodes), timing every one
    /// of their waits is most of what tracing costs (docs/performance.md). Ignored, with a
    /// note, where the vmap locks cannot all be located.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_OTHER_LOCK_PERIOD,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sample_other_locks: u32,
    /// Apply --sample-other-locks even where the vmap locks cannot all be located (kallsyms
    /// without data symbols): the vmap locks not located are then sampled like other locks,
    /// so their figures become estimates too. Without it such kernels time every contention.
    #[arg(long)]
    pub sample_unlocated: bool,
    /// Where spinlock wait times come from. `slow-path`: fentry/fexit (else kprobes) on the
    /// kernel's qspinlock slow path, entered for every contended spinlock: it sees the two-way
    /// waits lock:contention_* never report, and in VMs without paravirt spinlocks (QEMU
    /// TCG, KVM without PV_UNHALT) it is the only source of spinlock waits at all.
    /// `tracepoint`: lock:contention_begin/end only. `auto`: the slow path where kprobes or
    /// fentry work, else the tracepoints. The recording says which was used.
    #[arg(long, value_name = "SOURCE", value_enum, default_value_t = SpinWaitChoice::Auto)]
    pub spin_waits: SpinWaitChoice,
}

impl StackCaptureArgs {
    /// `options` with these stack settings.
    pub fn apply(&self, options: ProbeOptions) -> ProbeOptions {
        ProbeOptions {
            stack_depth: Some(self.stack_depth),
            stack_samples: Some(self.stack_samples),
            stack_keys: Some(self.stack_keys),
            other_lock_period: Some(self.sample_other_locks),
            sample_unlocated: self.sample_unlocated,
            spin_waits: self.spin_waits,
            ..options
        }
    }
}
