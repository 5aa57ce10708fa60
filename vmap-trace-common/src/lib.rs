//! Types shared by the eBPF programs (`vmap-trace-ebpf`) and user space (`vmap-trace`).
//!
//! Everything here is `#[repr(C)]` plain data: it is the layout of BPF map keys and values and
//! of the read-only configuration the loader writes into the object before loading it.
//! Changing a type here changes the committed eBPF object: rebuild it with
//! `cargo xtask build-ebpf`.
#![no_std]

/// log2 buckets of a wait/hold/latency histogram in nanoseconds: bucket `i` counts values `v`
/// with `floor(log2(v)) == i` (bucket 0 also holds 0). 2^47 ns is about 39 hours.
pub const TIME_BUCKETS: usize = 48;
/// log2 buckets of allocation sizes in pages.
pub const SIZE_BUCKETS: usize = 32;
/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Max entries of the per-(lock, kind) wait maps: the per-CPU one (`LOCK_WAITS_PER_CPU`, at
/// most this, fewer on large machines: see `per_cpu_lock_slots`) and the shared overflow one
/// (`LOCK_WAITS`, exactly this).
pub const MAX_LOCKS: u32 = 4096;
/// Memory budget of the per-CPU wait map, all CPUs together.
pub const PER_CPU_LOCK_BUDGET_BYTES: u64 = 32 << 20;

/// Entries of the per-CPU wait map on a machine with `possible_cpus` CPUs: as many locks as
/// fit `PER_CPU_LOCK_BUDGET_BYTES` (each costs one `WaitStats` per CPU, preallocated), at
/// least 64, at most `MAX_LOCKS`. 2 CPUs: 4096; 64: 1285; 256: 321. Locks beyond go to the
/// shared map.
pub const fn per_cpu_lock_slots(possible_cpus: u32) -> u32 {
    let per_lock = core::mem::size_of::<WaitStats>() as u64
        * if possible_cpus == 0 {
            1
        } else {
            possible_cpus as u64
        };
    let slots = PER_CPU_LOCK_BUDGET_BYTES / per_lock;
    if slots < 64 {
        64
    } else if slots > MAX_LOCKS as u64 {
        MAX_LOCKS
    } else {
        slots as u32
    }
}
/// Max entries of the per-(lock, kind, stack) map.
pub const MAX_STACK_KEYS: u32 = 16384;
/// Max distinct stacks kept (kernel and user stacks share the table). Stacks are keyed by a
/// 64-bit hash of their frames computed in the program, so two stacks never evict or refuse
/// each other as in a `BPF_MAP_TYPE_STACK_TRACE` bucket; only a full table loses a stack.
pub const MAX_STACKS: u32 = 16384;
/// Frames kept per stack (innermost first). The unwinder stops there, which also bounds the
/// cost of a capture; vmap contention paths are 15-30 frames deep.
pub const MAX_STACK_DEPTH: usize = 48;
/// Max tasks tracked for the per-task summary (LRU: the least recently waiting are evicted).
pub const MAX_TASKS: u32 = 8192;
/// Max sleeping-lock waits in flight (one per waiting task).
pub const MAX_INFLIGHT_TASKS: u32 = 16384;

/// Function-latency slots: each vmap function probed gets one (fentry/fexit or
/// kprobe/kretprobe programs are compiled per slot; user space assigns functions to slots).
pub const FUNC_SLOTS: u32 = 12;
/// Max vmap locks timed by address (128 nodes x 3 locks + the globals).
pub const MAX_VMAP_LOCKS: u32 = 1024;
/// Max function calls / lock acquisitions in flight.
pub const MAX_INFLIGHT_CALLS: u32 = 16384;

/// Index into the per-CPU `OP_COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCounter {
    /// `vmalloc:alloc_vmap_area` hits (successful and failed).
    Allocs = 0,
    /// ... of which failed (`failed != 0`).
    AllocsFailed = 1,
    /// `vmalloc:free_vmap_area_noflush` hits.
    Frees = 2,
    /// `vmalloc:purge_vmap_area_lazy` hits.
    Purges = 3,
    /// Sum of `npurged` over the purges.
    PurgedAreas = 4,
    /// Sum of allocated sizes in pages (successful allocations).
    AllocPages = 5,
    /// Tasks added to the (LRU) per-task map; minus the entries left, the tasks evicted.
    TasksSeen = 6,
    /// Contended stacks captured (each stands for itself and the contentions passed over
    /// before it on its CPU).
    StacksCaptured = 7,
    /// Contentions whose stack the sampler passed over.
    StacksSkipped = 8,
    /// Keys added to the shared (LRU) per-lock map; minus the entries left, the keys evicted.
    SharedLockKeysSeen = 9,
    /// Keys added to the (LRU) per-stack map; minus the entries left, the keys evicted.
    StackKeysSeen = 10,
}
pub const OP_COUNTERS: u32 = 11;

/// `OpProbes::from_functions` bits: the vmalloc operations the vmap function probes count.
/// Set only for operations whose `vmalloc:*` tracepoint is not attached (kernels before 6.2,
/// or `record --ops-from-functions`), so no operation is ever counted twice.
pub mod ops_from_functions {
    /// `alloc_vmap_area` calls: allocations, failures (an ERR_PTR return), sizes.
    pub const ALLOCS: u32 = 1 << 0;
    /// `free_vmap_area_noflush` calls: lazy frees, and the lazy backlog (`vmap_lazy_nr`).
    pub const FREES: u32 = 1 << 1;
    /// `__purge_vmap_area_lazy` calls: purges, and the areas freed lazily before each.
    pub const PURGES: u32 = 1 << 2;
}

/// How the vmap function probes count vmalloc operations (`ProbeConfig::ops`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpProbes {
    /// `ops_from_functions` bits.
    pub from_functions: u32,
    /// Function-latency slots of `alloc_vmap_area`, `free_vmap_area_noflush` and
    /// `__purge_vmap_area_lazy` (`FUNC_SLOTS`: not probed).
    pub alloc_slot: u32,
    pub free_slot: u32,
    pub purge_slot: u32,
    /// Where fexit finds `alloc_vmap_area`'s return value in its context: after the
    /// arguments, so at the parameter count (6 on 5.10, 8 on 6.1), from BTF.
    pub alloc_ret_index: u32,
    /// Byte offsets of `va_start` and `va_end` in `struct vmap_area` (BTF).
    pub va_start_offset: u32,
    pub va_end_offset: u32,
    pub _pad: u32,
    /// Address of `vmap_lazy_nr` (kallsyms), read at each free for the lazy backlog; 0: not
    /// located, no backlog.
    pub lazy_nr_addr: u64,
    /// `lazy_max_pages()`, computed as the kernel does: fls(online CPUs) * 32 MiB in pages.
    pub lazy_max_pages: u64,
}

impl OpProbes {
    /// Nothing counted from function probes.
    pub const NONE: OpProbes = OpProbes {
        from_functions: 0,
        alloc_slot: FUNC_SLOTS,
        free_slot: FUNC_SLOTS,
        purge_slot: FUNC_SLOTS,
        alloc_ret_index: 0,
        va_start_offset: 0,
        va_end_offset: 8,
        _pad: 0,
        lazy_nr_addr: 0,
        lazy_max_pages: 0,
    };
}

impl Default for OpProbes {
    fn default() -> Self {
        OpProbes::NONE
    }
}

/// A vmap function call in flight: when it began and its first argument (`alloc_vmap_area`'s
/// size, which the return decides whether to count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallEnter {
    pub start_ns: u64,
    pub arg0: u64,
}

/// `alloc_vmap_area` failed: it returned an ERR_PTR (the last 4095 addresses) or NULL.
#[inline(always)]
pub fn is_err_or_null(ret: u64) -> bool {
    ret == 0 || ret >= (-4095i64) as u64
}

/// Index into `LAZY_FREE_TALLY`.
pub const TALLY_FREES: u32 = 0;
/// ... the frees tallied when the latest purge began.
pub const TALLY_FREES_AT_LAST_PURGE: u32 = 1;

/// Index into the per-CPU `LOSS_COUNTERS` array: everything the kernel side could not record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossCounter {
    /// A contention could not get a start slot (task map full).
    InflightFull = 0,
    /// The per-lock wait map was full: the contention was not counted per lock.
    LockMapFull = 1,
    /// A kernel stack could not be captured, or the stack table was full.
    StackCaptureFailed = 2,
    /// The per-stack map was full.
    StackKeysFull = 3,
    /// A function call or lock acquisition could not be timed (in-flight table full).
    CallsInflightFull = 4,
}
pub const LOSS_COUNTERS: u32 = 5;

/// `lock:contention_begin` flags (include/trace/events/lock.h).
pub mod lock_flags {
    pub const SPIN: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const RT: u32 = 1 << 3;
    pub const PERCPU: u32 = 1 << 4;
    pub const MUTEX: u32 = 1 << 5;
}

/// Where each needed argument of the hooked events is: a byte offset in the classic
/// tracepoint record (from tracefs `format` files) or an argument index of the tp_btf context
/// (from the kernel's BTF). Both are read at run time: layouts differ between kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventArgs {
    pub alloc_addr: u32,
    pub alloc_size: u32,
    pub alloc_failed: u32,
    pub free_nr_lazy: u32,
    pub free_nr_lazy_max: u32,
    pub purge_npurged: u32,
    pub contention_lock: u32,
    pub contention_flags: u32,
}

/// Read-only configuration written into the object's `.rodata` by the loader.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Byte offsets in classic tracepoint records.
    pub tp: EventArgs,
    /// Argument indexes of tp_btf contexts.
    pub btf: EventArgs,
    /// Page size, to turn byte sizes into pages.
    pub page_shift: u32,
    /// `stack_options::*` bits: what each contended stack is keyed by.
    pub stack_options: u32,
    /// Kernel frames kept per contended stack, 1..=MAX_STACK_DEPTH (0: the default). Measured
    /// here, the capture costs about the same whatever the depth: fewer frames save map space.
    pub stack_depth: u32,
    /// Contended stacks captured per CPU and second, at most (0: every contention). Capturing
    /// a stack is most of what a contention costs to trace (about 2 us here, whatever the
    /// depth); beyond this rate one short wait in N is captured and stands for N (waits of
    /// `STACK_SAMPLE_ALWAYS_NS` and more are always captured).
    pub stack_samples: u32,
    /// Contentions of locks that are not vmap locks: one in `other_lock_period` per CPU is
    /// timed and counted `other_lock_period` times (0 or 1: every one, nothing filtered).
    /// Under a workload whose contention is on other locks (tty_mutex under `stress pty`),
    /// timing every wait was most of what tracing cost; the vmap locks are always timed.
    pub other_lock_period: u32,
    /// Nonzero: every program returns at once, recording nothing. The dispatch of the hooks
    /// alone, the floor any eBPF tool on them pays (`cargo xtask bench toggle`). Normal loads
    /// pay a load and a branch never taken for it.
    pub empty_programs: u32,
    /// The static vmap locks' addresses (0: unused), and the `vmap_nodes` array's locks as
    /// the address range `[vmap_nodes_start, vmap_nodes_end)` (empty when there is none).
    pub vmap_lock_addrs: [u64; STATIC_VMAP_LOCKS],
    pub vmap_nodes_start: u64,
    pub vmap_nodes_end: u64,
    /// vmalloc operations counted by the vmap function probes.
    pub ops: OpProbes,
}

/// Static vmap locks `ProbeConfig` can name (legacy: four; node-sharded: two).
pub const STATIC_VMAP_LOCKS: usize = 4;
/// `--sample-other-locks` by default: one contention in 64 of locks other than the vmap locks.
/// Under `stress pty` (1.3 tty-mutex contentions per operation) timing one in 8, with the
/// stacks of those waits, cost about 0.5% of the workload's CPU beyond timing none; one in 64
/// times an eighth as many waits, and a CPU still times thousands per second where other locks
/// contend that much. On pty the gain is not resolved (docs/performance.md, seventh round): the
/// stack captures, budgeted per second whatever the period, are most of that 0.5%.
pub const DEFAULT_OTHER_LOCK_PERIOD: u32 = 64;

/// Frames captured per contended stack by default (`--stack-depth`).
pub const DEFAULT_STACK_DEPTH: u32 = MAX_STACK_DEPTH as u32;
/// Stack captures per CPU and second by default (`--stack-samples`).
pub const DEFAULT_STACK_SAMPLES: u32 = 100;
/// The sampler's window: the rate in one window sets the sampling period of the next.
pub const STACK_SAMPLE_WINDOW_NS: u64 = 100_000_000;
/// Waits at least this long always have their stack captured: they are few, they dominate
/// wait-time flamegraphs, and next to the wait itself the capture costs little.
pub const STACK_SAMPLE_ALWAYS_NS: u64 = 50_000;

/// Per-CPU state of the stack sampler (`ProbeConfig::stack_samples`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StackSampler {
    pub window_start_ns: u64,
    /// Contentions seen in this window.
    pub seen: u32,
    /// Stacks captured since the window began or the period last doubled.
    pub captured: u32,
    /// One contention in `period` has its stack captured.
    pub period: u32,
    /// Contentions passed over since the last capture, and their wait: the next capture
    /// stands for them too.
    pub skipped: u32,
    pub _pad: u32,
    pub skipped_ns: u64,
}

/// Index of a spin slot in `CpuContention::spin`.
pub const SPIN_SLOT: usize = 0;
pub const MUTEX_SPIN_SLOT: usize = 1;

/// Everything the contention programs keep per CPU, in one map value: a contention then
/// touches two cache lines of per-CPU state instead of one per map (five before), which is
/// most of what it costs when contentions are rare and the lines are cold. Begins touch only
/// the first line. User space reads `totals`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuContention {
    /// 1 while this CPU runs the contention_end program's bookkeeping. Its map updates take
    /// spinlocks (hash buckets, the LRU list) that can themselves contend: the kernel runs our
    /// contention_begin for those, but skips the nested contention_end (a program does not
    /// recurse on a CPU), so the begin would hold the CPU's slot forever and every later spin
    /// wait on that CPU would go uncounted (seen: half of a 2-CPU machine's contentions
    /// missing). Begins are ignored while it is set.
    pub in_contention_end: u32,
    /// Set once an insert into the per-CPU lock map failed for lack of room: nothing is ever
    /// deleted from it, so it stays full and later new locks go straight to the shared map.
    pub lock_map_full: u32,
    /// Contentions of other locks than the vmap locks since this CPU last timed one
    /// (`ProbeConfig::other_lock_period`).
    pub other_seen: u32,
    pub _pad: u32,
    /// Spinning waits in flight (a spinning task cannot migrate): `SPIN_SLOT` for spinlocks
    /// and rwlocks, `MUTEX_SPIN_SLOT` for a mutex's optimistic spin, which runs with
    /// preemption off and is where nearly every mutex wait ends (tty_mutex under `stress
    /// pty`: 245688 of 246071 waits). A wait that goes on to sleep moves to the per-task map
    /// at its second begin; the rest never touch a hash map (an insert and a delete, about
    /// 150 ns).
    pub spin: [ContentionStart; 2],
    pub sampler: StackSampler,
    /// This CPU's waits, all locks.
    pub totals: WaitTotals,
    /// The current task's waits not yet added to its `TASK_WAITS` entry (see `TaskBatch`).
    pub task: TaskBatch,
    /// The keys of this CPU's hot locks, in one cache line (a `lock_addr` of 0: a free slot;
    /// slots are taken in order). The first `HOT_LOCKS` locks to reach `HOT_LOCK_AFTER` waits
    /// on this CPU count their later waits in `hot_waits`, found by comparing keys instead of
    /// hashing into `LOCK_WAITS_PER_CPU`. A slot is never given up, so its counts only grow;
    /// readers add slots and map entries.
    pub hot_keys: [LockKey; HOT_LOCKS],
    pub hot_waits: [WaitStats; HOT_LOCKS],
}

/// Slots of `CpuContention::hot_keys`.
pub const HOT_LOCKS: usize = 4;
/// Waits a lock must have had on a CPU (in its `LOCK_WAITS_PER_CPU` entry) before it may take
/// a free hot slot there: locks that contend once after attach do not take the slots for good.
pub const HOT_LOCK_AFTER: u64 = 64;

/// Consecutive waits of one task on one CPU, gathered before they go to the task's
/// `TASK_WAITS` entry: the entry is looked up once per run of waits instead of once per wait
/// (under `stress pty` only 16% of a CPU's contentions come from another task than its last
/// one). `contention_end` adds the batch to the entry when a different task waits on this CPU;
/// user space adds each CPU's batch to the entries it reads, so per-task totals stay exact.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskBatch {
    /// The task, when `totals.count > 0`.
    pub tid: u32,
    /// 1 once a wait of this batch was sampled, which puts the task in the table if it is not
    /// there yet (done once per batch).
    pub sampled: u32,
    pub totals: WaitTotals,
}

/// `ProbeConfig::stack_options` bits.
pub mod stack_options {
    /// Key contended stacks by process too (tgid and comm): flamegraphs can be filtered by task.
    pub const PER_TASK: u32 = 1 << 0;
    /// Capture the user stack of each contention as well (implies `PER_TASK`: user addresses
    /// mean something only within their process).
    pub const USER_STACKS: u32 = 1 << 1;
}

/// A contention in flight: set by `contention_begin`, consumed by `contention_end`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ContentionStart {
    pub lock_addr: u64,
    pub start_ns: u64,
    pub flags: u32,
    /// Contentions this wait stands for (`ProbeConfig::other_lock_period`); 0: a wait that is
    /// not timed, kept in a spin slot only so that its end is recognised and skipped cheaply.
    pub weight: u32,
}

/// Key of the per-lock wait map: one lock address seen with one set of flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LockKey {
    pub lock_addr: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// Aggregated wait of one lock key. Updated with atomic adds from all CPUs; `max_ns` is a
/// racy maximum (a concurrent larger value may very rarely be lost, never a count).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WaitStats {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub hist: [u64; TIME_BUCKETS],
}

impl Default for WaitStats {
    fn default() -> Self {
        WaitStats::ZERO
    }
}

impl WaitStats {
    pub const ZERO: WaitStats = WaitStats {
        count: 0,
        total_ns: 0,
        max_ns: 0,
        hist: [0; TIME_BUCKETS],
    };
}

/// Key of the per-stack wait map. `tgid`/`comm` are zero and `user_stack` is 0 unless the
/// corresponding `stack_options` are set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub lock_addr: u64,
    /// Key of the kernel stack in the stack table (0: not captured).
    pub kernel_stack: u64,
    /// Key of the user stack in the stack table (0: not captured or none).
    pub user_stack: u64,
    pub tgid: u32,
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

/// One captured stack: `len` frames of `ips`, innermost first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackFrames {
    pub len: u32,
    pub _pad: u32,
    pub ips: [u64; MAX_STACK_DEPTH],
}

/// The stack table's key for the first `len` frames of `ips` (never 0, which means "none").
/// The program and the tests share it, so the table's keys can be checked in user space.
#[inline(always)]
pub fn stack_hash(ips: &[u64; MAX_STACK_DEPTH], len: usize) -> u64 {
    // FNV-1a over 64-bit words with an extra shift-xor per word: cheap in BPF (no loops
    // over bytes) and well mixed for kernel addresses, which share their high bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ len as u64;
    let mut i = 0;
    while i < MAX_STACK_DEPTH {
        if i >= len {
            break;
        }
        h = (h ^ ips[i]).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
        i += 1;
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// Count, total and max of a set of waits (no histogram).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WaitTotals {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// Per-task wait summary.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskWait {
    pub totals: WaitTotals,
    pub tgid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

/// A vmap lock call in flight (between the lock call and the release).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LockEnter {
    pub start_ns: u64,
    pub lock_id: u32,
    pub _pad: u32,
}

/// Wait (lock call -> acquisition) and hold (acquisition -> release) of one vmap lock.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LockTiming {
    pub wait: WaitStats,
    pub hold: WaitStats,
}

impl LockTiming {
    pub const ZERO: LockTiming = LockTiming {
        wait: WaitStats::ZERO,
        hold: WaitStats::ZERO,
    };
}

/// Last values seen on `vmalloc:free_vmap_area_noflush`: the lazy backlog and its limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LazyGauge {
    pub nr_lazy: u64,
    pub nr_lazy_max: u64,
    pub nr_lazy_peak: u64,
    /// When this CPU last saw the event (jiffies): the newest CPU holds the current value.
    pub updated_jiffies: u64,
}

/// The log2 bucket of `v` (0 for 0 and 1), clamped to `buckets - 1`.
#[inline(always)]
pub fn log2_bucket(v: u64, buckets: usize) -> usize {
    let b = if v == 0 {
        0
    } else {
        63 - v.leading_zeros() as usize
    };
    if b >= buckets {
        buckets - 1
    } else {
        b
    }
}

/// The kernel's lock slow paths probed for waits the contention tracepoints miss (two-way
/// spinlock waits, test-and-set spinning in VMs) or where they do not exist (5.10).
pub mod slow_path {
    /// `native_queued_spin_lock_slowpath`: qspinlock waits on bare metal and in VMs without
    /// paravirt spinlocks (QEMU TCG, KVM without PV_UNHALT).
    pub const NATIVE_SPIN: u32 = 0;
    /// `__pv_queued_spin_lock_slowpath`: qspinlock waits in KVM guests with PV spinlocks.
    pub const PV_SPIN: u32 = 1;
    /// `__mutex_lock_slowpath`: mutex waits (non-RT kernels).
    pub const MUTEX: u32 = 2;
    /// `rtlock_slowlock_locked`: `spinlock_t` waits on PREEMPT_RT.
    pub const RTLOCK: u32 = 3;
    /// `rt_mutex_slowlock` (a `.constprop` clone): mutex waits on PREEMPT_RT.
    pub const RT_MUTEX: u32 = 4;
    pub const SOURCES: u32 = 5;
    /// Entries of `SLOWPATH_ENTRIES`: per source, all its entries and those on vmap locks.
    pub const ENTRY_COUNTERS: u32 = 2 * SOURCES;
    /// The `SLOWPATH_ENTRIES` index of a source's entries (all locks, or vmap locks only).
    pub const fn entries_index(source: u32, vmap_locks_only: bool) -> u32 {
        2 * source + if vmap_locks_only { 1 } else { 0 }
    }
    /// Nesting of spin waits on one CPU the programs track: qspinlock's own limit
    /// (task, softirq, hardirq, NMI: `MAX_NODES` in kernel/locking/qspinlock.c).
    pub const SPIN_NEST: usize = 4;
    const _: () = assert!(
        SPIN_NEST.is_power_of_two(),
        "indexes are masked with SPIN_NEST - 1"
    );
    /// The object's one-entry u32 array that makes the slow-path probes the source of
    /// spinlock waits: nonzero, `contention_begin` leaves qspinlock begins (flags exactly
    /// `lock_flags::SPIN`) to them. A map, not load-time configuration: the loader sets it
    /// only once a slow path is attached, which it cannot know before loading.
    pub const SPIN_WAITS_MAP: &str = "SPIN_WAITS_FROM_SLOWPATH";
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for ProbeConfig {}
    unsafe impl aya::Pod for ContentionStart {}
    unsafe impl aya::Pod for LockKey {}
    unsafe impl aya::Pod for WaitStats {}
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for StackFrames {}
    unsafe impl aya::Pod for WaitTotals {}
    unsafe impl aya::Pod for TaskWait {}
    unsafe impl aya::Pod for LazyGauge {}
    unsafe impl aya::Pod for CpuContention {}
    unsafe impl aya::Pod for TaskBatch {}
    unsafe impl aya::Pod for LockEnter {}
    unsafe impl aya::Pod for LockTiming {}
    unsafe impl aya::Pod for StackSampler {}
    unsafe impl aya::Pod for OpProbes {}
    unsafe impl aya::Pod for CallEnter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_lock_slots_fit_the_budget() {
        assert_eq!(per_cpu_lock_slots(0), MAX_LOCKS);
        assert_eq!(per_cpu_lock_slots(2), MAX_LOCKS);
        assert_eq!(per_cpu_lock_slots(64), 1285);
        assert_eq!(per_cpu_lock_slots(256), 321);
        assert_eq!(per_cpu_lock_slots(8192), 64);
        for cpus in [1u32, 16, 20, 64, 96, 128, 256, 1024] {
            let bytes = u64::from(per_cpu_lock_slots(cpus))
                * core::mem::size_of::<WaitStats>() as u64
                * u64::from(cpus);
            assert!(
                bytes <= PER_CPU_LOCK_BUDGET_BYTES,
                "{cpus} CPUs: {bytes} bytes"
            );
        }
    }

    #[test]
    fn log2_bucket_edges() {
        assert_eq!(log2_bucket(0, 48), 0);
        assert_eq!(log2_bucket(1, 48), 0);
        assert_eq!(log2_bucket(2, 48), 1);
        assert_eq!(log2_bucket(3, 48), 1);
        assert_eq!(log2_bucket(1024, 48), 10);
        assert_eq!(log2_bucket(u64::MAX, 48), 47);
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        // The kernel copies keys byte for byte: implicit padding would make equal keys differ.
        assert_eq!(core::mem::size_of::<LockKey>(), 16);
        assert_eq!(core::mem::size_of::<StackKey>(), 32 + COMM_LEN);
        assert_eq!(core::mem::size_of::<StackFrames>(), 8 + 8 * MAX_STACK_DEPTH);
        assert_eq!(core::mem::size_of::<ContentionStart>(), 24);
        assert_eq!(core::mem::size_of::<WaitStats>(), 8 * (3 + TIME_BUCKETS));
        assert_eq!(core::mem::size_of::<TaskWait>(), 24 + 8 + COMM_LEN);
        assert_eq!(
            core::mem::size_of::<ProbeConfig>(),
            4 * 22 + 8 * (STATIC_VMAP_LOCKS + 2) + core::mem::size_of::<OpProbes>()
        );
        assert_eq!(core::mem::size_of::<OpProbes>(), 4 * 8 + 8 * 2);
        assert_eq!(core::mem::size_of::<CallEnter>(), 16);
        assert_eq!(core::mem::align_of::<ProbeConfig>(), 8);
    }

    #[test]
    fn err_ptr_returns_are_failures() {
        assert!(is_err_or_null(0));
        assert!(is_err_or_null((-12i64) as u64)); // ERR_PTR(-ENOMEM)
        assert!(is_err_or_null((-4095i64) as u64));
        assert!(!is_err_or_null((-4096i64) as u64));
        assert!(!is_err_or_null(0xffff_8880_0123_4000)); // a struct vmap_area *
    }

    #[test]
    fn stack_hash_depends_on_the_frames_in_use_only() {
        let mut a = [0u64; MAX_STACK_DEPTH];
        a[0] = 0xffff_ffff_8100_0000;
        a[1] = 0xffff_ffff_8100_1000;
        let mut b = a;
        b[5] = 42; // beyond len: ignored
        assert_eq!(stack_hash(&a, 2), stack_hash(&b, 2));
        assert_ne!(stack_hash(&a, 2), stack_hash(&a, 1));
        b[1] += 8;
        assert_ne!(stack_hash(&a, 2), stack_hash(&b, 2));
        assert_ne!(stack_hash(&[0; MAX_STACK_DEPTH], 0), 0);
    }
}
