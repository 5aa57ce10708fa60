//! vmap-trace's kernel side: aggregate vmap allocator activity and lock contention in BPF maps.
//!
//! Every hook exists in two variants, so the loader can pick the best the kernel allows:
//! `tp_btf` (typed arguments, cheapest) and the classic `tracepoint` (reads fields at offsets
//! taken from tracefs). Both variants feed the same `on_*` functions and the same maps.
//! Nothing is streamed to user space: everything is a counter or a histogram.
#![no_std]
#![no_main]
// The BPF target has no `AtomicU64::fetch_add`; the intrinsic lowers to BPF_ATOMIC add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_stack, bpf_jiffies64,
        bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext,
};
use vmap_trace_common::{
    is_err_or_null, lock_flags, log2_bucket, ops_from_functions, stack_hash, stack_options,
    CallEnter, ContentionStart, CpuContention, EventArgs, LazyGauge, LockEnter, LockKey,
    LockTiming, LossCounter, OpCounter, OpProbes, ProbeConfig, StackFrames, StackKey, StackSampler,
    TaskBatch, TaskWait, WaitStats, WaitTotals, DEFAULT_STACK_DEPTH, FUNC_SLOTS, HOT_LOCKS,
    HOT_LOCK_AFTER, LOSS_COUNTERS, MAX_INFLIGHT_CALLS, MAX_INFLIGHT_TASKS, MAX_LOCKS, MAX_STACKS,
    MAX_STACK_DEPTH, MAX_STACK_KEYS, MAX_TASKS, MAX_VMAP_LOCKS, MUTEX_SPIN_SLOT, OP_COUNTERS,
    SIZE_BUCKETS, SPIN_SLOT, STACK_SAMPLE_ALWAYS_NS, STACK_SAMPLE_WINDOW_NS, STATIC_VMAP_LOCKS,
    TALLY_FREES, TALLY_FREES_AT_LAST_PURGE, TIME_BUCKETS,
};

/// Written by the loader before the object is loaded (tracefs offsets, BTF argument indexes).
#[unsafe(no_mangle)]
static CONFIG: ProbeConfig = ProbeConfig {
    tp: NO_ARGS,
    btf: NO_ARGS,
    page_shift: 12,
    stack_options: 0,
    stack_depth: 0,
    stack_samples: 0,
    other_lock_period: 0,
    empty_programs: 0,
    vmap_lock_addrs: [0; STATIC_VMAP_LOCKS],
    vmap_nodes_start: 0,
    vmap_nodes_end: 0,
    ops: OpProbes::NONE,
};

const NO_ARGS: EventArgs = EventArgs {
    alloc_addr: 0,
    alloc_size: 0,
    alloc_failed: 0,
    free_nr_lazy: 0,
    free_nr_lazy_max: 0,
    purge_npurged: 0,
    contention_lock: 0,
    contention_flags: 0,
};

/// One field of CONFIG. Volatile: the compiler must not fold the placeholder values above.
/// One field, not the whole struct: every event would otherwise copy all 80 bytes of it.
macro_rules! config {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&CONFIG$(.$field)+) }
    };
}

/// First statement of every program: with `ProbeConfig::empty_programs` it returns at once.
macro_rules! return_if_empty {
    ($ret:expr) => {
        if config!(empty_programs) != 0 {
            return $ret;
        }
    };
}

#[map]
static OP_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OP_COUNTERS, 0);
#[map]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_COUNTERS, 0);
#[map]
static ALLOC_SIZE_HIST: PerCpuArray<u64> = PerCpuArray::with_max_entries(SIZE_BUCKETS as u32, 0);
#[map]
static LAZY_GAUGE: PerCpuArray<LazyGauge> = PerCpuArray::with_max_entries(1, 0);

/// The contention programs' per-CPU state: see `CpuContention`.
#[map]
pub(crate) static CPU_CONTENTION: PerCpuArray<CpuContention> = PerCpuArray::with_max_entries(1, 0);
/// A spin slot older than this is a begin whose end was never seen: replace it.
pub(crate) const SPIN_SLOT_STALE_NS: u64 = 1_000_000_000;
/// Sleeping waits in flight (mutex, rwsem...), per task id.
#[map]
static TASK_INFLIGHT: HashMap<u32, ContentionStart> =
    HashMap::with_max_entries(MAX_INFLIGHT_TASKS, 0);
/// Mutex waits in `TASK_INFLIGHT` (one counter for all CPUs, written only by sleeping mutex
/// waits, which are rare): while it is 0, a mutex's spin begin needs no task-map lookup (see
/// `on_contention_begin`).
#[map]
static SLEEPING_WAITS: Array<u64> = Array::with_max_entries(1, 0);

/// Waits per lock, per CPU: plain adds on lines only this CPU writes. (A shared map updated
/// with atomics made every contention_end pull the lock's line from the CPU that waited on
/// it last, and the CPUs contending on one lock are exactly the ones that wait on it.) The
/// loader sizes it by CPU count (`per_cpu_lock_slots`); locks first seen after it filled go
/// to `LOCK_WAITS`, and user space adds the two.
#[map]
static LOCK_WAITS_PER_CPU: PerCpuHashMap<LockKey, WaitStats> =
    PerCpuHashMap::with_max_entries(MAX_LOCKS, 0);
/// Waits per lock for locks that found `LOCK_WAITS_PER_CPU` full, shared by all CPUs. LRU,
/// like the per-stack map: per-object locks (every tty's, every inode's) keep bringing new
/// addresses, and in a daemon running for hours a table that refused new keys once full would
/// hide every lock that starts contending later; cold keys are evicted instead, and counted.
#[map]
static LOCK_WAITS: LruHashMap<LockKey, WaitStats> = LruHashMap::with_max_entries(MAX_LOCKS, 0);
#[map]
static STACK_WAITS: LruHashMap<StackKey, WaitTotals> =
    LruHashMap::with_max_entries(MAX_STACK_KEYS, 0);
#[map]
static STACKS: HashMap<u64, StackFrames> = HashMap::with_max_entries(MAX_STACKS, 0);
/// Per-CPU scratch for a capture (slot 0: kernel stack, 1: user stack): too big for the
/// 512-byte BPF stack.
#[map]
static STACK_SCRATCH: PerCpuArray<StackFrames> = PerCpuArray::with_max_entries(2, 0);
/// LRU: short-lived tasks (fork storms) must not fill it and starve new ones.
#[map]
static TASK_WAITS: LruHashMap<u32, TaskWait> = LruHashMap::with_max_entries(MAX_TASKS, 0);

#[inline(always)]
fn atomic_add(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
fn racy_max(p: *mut u64, v: u64) {
    unsafe {
        if *p < v {
            *p = v;
        }
    }
}

#[inline(always)]
pub(crate) fn percpu_add(map: &PerCpuArray<u64>, idx: u32, v: u64) {
    if let Some(p) = map.get_ptr_mut(idx) {
        unsafe { *p += v };
    }
}

#[inline(always)]
fn lost(what: LossCounter) {
    lost_n(what, 1);
}

/// `n` contentions lost (a sampled wait stands for `weight` of them: see `wait_weight`).
#[inline(always)]
pub(crate) fn lost_n(what: LossCounter, n: u64) {
    percpu_add(&LOSSES, what as u32, n);
}

// ---------------------------------------------------------------- vmalloc:* tracepoints

#[inline(always)]
fn on_alloc_vmap_area(size_bytes: u64, failed: i32) {
    percpu_add(&OP_COUNTS, OpCounter::Allocs as u32, 1);
    if failed != 0 {
        percpu_add(&OP_COUNTS, OpCounter::AllocsFailed as u32, 1);
        return;
    }
    let pages = size_bytes >> (config!(page_shift) & 63);
    percpu_add(&OP_COUNTS, OpCounter::AllocPages as u32, pages);
    percpu_add(&ALLOC_SIZE_HIST, log2_bucket(pages, SIZE_BUCKETS) as u32, 1);
}

#[inline(always)]
fn on_free_vmap_area_noflush(nr_lazy: u64, nr_lazy_max: u64) {
    percpu_add(&OP_COUNTS, OpCounter::Frees as u32, 1);
    set_lazy_gauge(nr_lazy, nr_lazy_max);
}

#[inline(always)]
fn set_lazy_gauge(nr_lazy: u64, nr_lazy_max: u64) {
    if let Some(g) = LAZY_GAUGE.get_ptr_mut(0) {
        let g = unsafe { &mut *g };
        g.nr_lazy = nr_lazy;
        g.nr_lazy_max = nr_lazy_max;
        // jiffies, not bpf_ktime_get_ns: the verifier inlines it into one load, and user
        // space only needs which CPU's reading is the most recent.
        g.updated_jiffies = unsafe { bpf_jiffies64() };
        if nr_lazy > g.nr_lazy_peak {
            g.nr_lazy_peak = nr_lazy;
        }
    }
}

#[inline(always)]
fn on_purge_vmap_area_lazy(npurged: u64) {
    percpu_add(&OP_COUNTS, OpCounter::Purges as u32, 1);
    percpu_add(&OP_COUNTS, OpCounter::PurgedAreas as u32, npurged);
}

/// tp_btf arguments must be read at constant offsets: map the runtime index onto constants.
#[inline(always)]
fn btf_arg(ctx: &BtfTracePointContext, idx: u32) -> u64 {
    match idx {
        0 => ctx.arg(0),
        1 => ctx.arg(1),
        2 => ctx.arg(2),
        3 => ctx.arg(3),
        4 => ctx.arg(4),
        5 => ctx.arg(5),
        _ => 0,
    }
}

#[btf_tracepoint(function = "alloc_vmap_area")]
pub fn tpbtf_alloc_vmap_area(ctx: BtfTracePointContext) -> i32 {
    return_if_empty!(0);
    on_alloc_vmap_area(
        btf_arg(&ctx, config!(btf.alloc_size)),
        btf_arg(&ctx, config!(btf.alloc_failed)) as i32,
    );
    0
}

#[btf_tracepoint(function = "free_vmap_area_noflush")]
pub fn tpbtf_free_vmap_area_noflush(ctx: BtfTracePointContext) -> i32 {
    return_if_empty!(0);
    on_free_vmap_area_noflush(
        btf_arg(&ctx, config!(btf.free_nr_lazy)),
        btf_arg(&ctx, config!(btf.free_nr_lazy_max)),
    );
    0
}

#[btf_tracepoint(function = "purge_vmap_area_lazy")]
pub fn tpbtf_purge_vmap_area_lazy(ctx: BtfTracePointContext) -> i32 {
    return_if_empty!(0);
    on_purge_vmap_area_lazy(btf_arg(&ctx, config!(btf.purge_npurged)) as u32 as u64);
    0
}

/// What classic tracepoint programs return. 0 would make the kernel drop the event for every
/// perf user of the tracepoint (perf_trace_run_bpf_submit): `perf stat` or `perf record`
/// running beside vmap-trace would count nothing. 1 lets it through.
const PASS_ON: u32 = 1;

/// aya's `#[tracepoint]` always returns 0 (see PASS_ON), so classic tracepoint programs are
/// declared by hand.
macro_rules! classic_tracepoint {
    ($section:literal, fn $name:ident($ctx:ident) $body:block) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(raw: *mut core::ffi::c_void) -> u32 {
            return_if_empty!(PASS_ON);
            let $ctx = TracePointContext::new(raw);
            $body
            PASS_ON
        }
    };
}

#[inline(always)]
fn tp_field<T: Default>(ctx: &TracePointContext, off: u32) -> T {
    unsafe { ctx.read_at::<T>(off as usize) }.unwrap_or_default()
}

classic_tracepoint!("tracepoint/vmalloc/alloc_vmap_area", fn tp_alloc_vmap_area(ctx) {
    on_alloc_vmap_area(tp_field::<u64>(&ctx, config!(tp.alloc_size)), tp_field::<i32>(&ctx, config!(tp.alloc_failed)));
});

classic_tracepoint!("tracepoint/vmalloc/free_vmap_area_noflush", fn tp_free_vmap_area_noflush(ctx) {
    on_free_vmap_area_noflush(tp_field::<u64>(&ctx, config!(tp.free_nr_lazy)), tp_field::<u64>(&ctx, config!(tp.free_nr_lazy_max)));
});

classic_tracepoint!("tracepoint/vmalloc/purge_vmap_area_lazy", fn tp_purge_vmap_area_lazy(ctx) {
    on_purge_vmap_area_lazy(tp_field::<u32>(&ctx, config!(tp.purge_npurged)) as u64);
});

// ---------------------------------------------------------------- lock:contention_* tracepoints

/// Like perf's lock_contention.bpf.c, spinning waits use a per-CPU slot and anything that may
/// sleep is keyed by task; unlike it, a mutex's optimistic spin (SPIN|MUTEX, preemption off)
/// also uses a per-CPU slot, and only a wait that then sleeps (its second begin, MUTEX) moves
/// to the task map, keeping its first timestamp and flags. A nested begin for a wait already
/// in flight keeps the first one. Waits on other locks than the vmap locks are mostly not
/// timed (see `wait_weight`): no clock read, and their ends are skipped.
#[inline(always)]
fn on_contention_begin(lock_addr: u64, flags: u32) {
    let Some(cpu) = CPU_CONTENTION.get_ptr_mut(0) else {
        return;
    };
    let cpu = unsafe { &mut *cpu };
    if cpu.in_contention_end != 0 {
        return; // our own maps' locks, inside contention_end: see CpuContention
    }
    if flags & lock_flags::SPIN != 0 {
        let idx = if flags & lock_flags::MUTEX != 0 {
            // A mutex waiter woken at the head of the queue spins again with this same begin
            // (__mutex_lock_common). Its wait began before it slept and is in the task map,
            // where its end will find it: this begin is not a new wait.
            if sleeping_waits() != 0 && task_waits_on(lock_addr) {
                return;
            }
            MUTEX_SPIN_SLOT
        } else {
            SPIN_SLOT
        };
        // A qspinlock's own begin (flags exactly SPIN) while the slow-path probes time spin
        // waits (slowpath.rs): they count it, so here it only leaves the marker that makes
        // its end skip cheaply.
        let weight = if flags == lock_flags::SPIN && slowpath::times_spin_waits() {
            0
        } else {
            wait_weight(cpu, lock_addr)
        };
        let slot = &mut cpu.spin[idx];
        if weight == 0 {
            // Not timed: no clock read. The marker lets contention_end skip the wait without
            // a task map lookup; a timed begin may overwrite it (its start_ns of 0 is stale).
            if slot.lock_addr == 0 {
                *slot = ContentionStart {
                    lock_addr,
                    start_ns: 0,
                    flags,
                    weight: 0,
                };
            }
            return;
        }
        let start_ns = unsafe { bpf_ktime_get_ns() };
        if slot.lock_addr == 0 || start_ns.wrapping_sub(slot.start_ns) > SPIN_SLOT_STALE_NS {
            *slot = ContentionStart {
                lock_addr,
                start_ns,
                flags,
                weight,
            };
        }
        return;
    }
    // `start` is written on every path, not an Option: with an Option the compiler spilled
    // the carried start only on the branch that had one and reloaded it on every path, and
    // verifiers without the CVE-2023-52452 fix (Debian's 6.1.0-47..-54) refuse reading a
    // stack slot no path wrote ("invalid read from stack", EACCES).
    let mut start = ContentionStart {
        lock_addr,
        start_ns: 0,
        flags,
        weight: 0,
    };
    let mut carried = false;
    if flags & lock_flags::MUTEX != 0 {
        // The optimistic spin failed and the task is about to sleep: carry its start (and
        // whether it is timed at all) over.
        let slot = &mut cpu.spin[MUTEX_SPIN_SLOT];
        if slot.lock_addr == lock_addr {
            start = *slot;
            slot.lock_addr = 0;
            carried = true;
        }
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let replaced_mutex = match TASK_INFLIGHT.get_ptr(tid) {
        // The same wait (a woken mutex waiter going back to sleep): keep its start, and do
        // not draw it again.
        Some(slot) if unsafe { (*slot).lock_addr } == lock_addr => return,
        // A task sleeps on one lock at a time: an entry for another is stale (its end was
        // never seen) and is replaced.
        Some(slot) => (unsafe { (*slot).flags } & lock_flags::MUTEX) != 0,
        None => false,
    };
    if !carried {
        start.weight = wait_weight(cpu, lock_addr);
        if start.weight != 0 {
            start.start_ns = unsafe { bpf_ktime_get_ns() };
        }
    }
    // Every sleeping wait gets an entry, timed or not (weight 0): its end may come on another
    // CPU, the woken waiter may spin again (above), and next to a sleep the insert is cheap.
    if TASK_INFLIGHT.insert(tid, start, 0).is_ok() {
        let is_mutex = start.flags & lock_flags::MUTEX != 0;
        if is_mutex && !replaced_mutex {
            sleeping_waits_add(1);
        } else if replaced_mutex && !is_mutex {
            sleeping_waits_add(u64::MAX);
        }
    } else {
        lost_n(LossCounter::InflightFull, start.weight as u64);
    }
}

/// `SLEEPING_WAITS`' value: mutex waits asleep, all tasks.
#[inline(always)]
fn sleeping_waits() -> u64 {
    SLEEPING_WAITS.get(0).copied().unwrap_or(0)
}

/// Add `delta` (wrapping: `u64::MAX` is -1) to `SLEEPING_WAITS`.
#[inline(always)]
fn sleeping_waits_add(delta: u64) {
    if let Some(p) = SLEEPING_WAITS.get_ptr_mut(0) {
        atomic_add(p, delta);
    }
}

/// Whether the current task has a sleeping wait on `lock_addr` in flight.
#[inline(always)]
fn task_waits_on(lock_addr: u64) -> bool {
    let tid = bpf_get_current_pid_tgid() as u32;
    match TASK_INFLIGHT.get_ptr(tid) {
        Some(s) => unsafe { (*s).lock_addr == lock_addr },
        None => false,
    }
}

/// Whether a vmap lock: one of the static ones or in the `vmap_nodes` array.
#[inline(always)]
pub(crate) fn is_vmap_lock(lock_addr: u64) -> bool {
    let statics = config!(vmap_lock_addrs);
    for a in statics {
        if a == lock_addr {
            return true;
        }
    }
    lock_addr >= config!(vmap_nodes_start) && lock_addr < config!(vmap_nodes_end)
}

/// How many contentions a new wait on `lock_addr` stands for: 1 for a vmap lock (or when
/// nothing is filtered); for other locks, one wait in `other_lock_period` per CPU stands for
/// `other_lock_period` and the rest for 0 (not timed). Per CPU and over all other locks, so
/// the counts add up to within a period per CPU, and a lock's share is sampled.
#[inline(always)]
pub(crate) fn wait_weight(cpu: &mut CpuContention, lock_addr: u64) -> u32 {
    let period = config!(other_lock_period);
    if period <= 1 || is_vmap_lock(lock_addr) {
        return 1;
    }
    cpu.other_seen += 1;
    if cpu.other_seen < period {
        return 0;
    }
    cpu.other_seen = 0;
    period
}

/// The two operations the hash maps share (aya-ebpf gives each map type its own methods).
trait KeyedMap<K, V> {
    fn lookup(&self, key: &K) -> Option<*mut V>;
    /// Insert `value` under a key not yet present; false if it was (EEXIST) or if there is no
    /// room.
    fn insert_new(&self, key: &K, value: &V) -> bool;
}

macro_rules! keyed_map {
    ($($map:ident),*) => {$(
        impl<K, V> KeyedMap<K, V> for $map<K, V> {
            #[inline(always)]
            fn lookup(&self, key: &K) -> Option<*mut V> {
                self.get_ptr_mut(key)
            }
            #[inline(always)]
            fn insert_new(&self, key: &K, value: &V) -> bool {
                self.insert(key, value, BPF_NOEXIST as u64).is_ok()
            }
        }
    )*};
}
keyed_map!(HashMap, LruHashMap, PerCpuHashMap);

/// Look up `key`, inserting `zero` first if absent: the entry (None when the map has no room
/// for it) and whether this call inserted it.
#[inline(always)]
fn get_or_insert<K, V>(map: &impl KeyedMap<K, V>, key: &K, zero: &V) -> (Option<*mut V>, bool) {
    if let Some(p) = map.lookup(key) {
        return (Some(p), false);
    }
    // A failed insert may be EEXIST (another CPU inserted it meanwhile): look it up again.
    let inserted = map.insert_new(key, zero);
    (map.lookup(key), inserted)
}

/// `get_or_insert` for an LRU map: a full map evicts its coldest key rather than refusing,
/// so each key this inserts is counted in `seen` (user space: seen minus the keys left =
/// keys evicted). A loss is counted only if the insert failed outright.
#[inline(always)]
fn lru_get_or_insert<K, V>(
    map: &LruHashMap<K, V>,
    key: &K,
    zero: &V,
    seen: OpCounter,
    failed: LossCounter,
    weight: u64,
) -> Option<*mut V> {
    let (p, inserted) = get_or_insert(map, key, zero);
    if inserted {
        percpu_add(&OP_COUNTS, seen as u32, 1);
    }
    if p.is_none() {
        lost_n(failed, weight);
    }
    p
}

/// The hot slot of `key` on this CPU (see `CpuContention::hot_keys`), if it has one. Slots
/// are taken in order, so the first free one ends the search.
#[inline(always)]
fn hot_lock_slot(cpu: &CpuContention, key: &LockKey) -> Option<usize> {
    for i in 0..HOT_LOCKS {
        let k = &cpu.hot_keys[i];
        if k.lock_addr == key.lock_addr && k.flags == key.flags {
            return Some(i);
        }
        if k.lock_addr == 0 {
            return None;
        }
    }
    None
}

/// Give `key` (not in a hot slot) this CPU's first free hot slot, if any is left.
#[inline(always)]
fn take_hot_slot(cpu: &mut CpuContention, key: &LockKey) {
    for k in cpu.hot_keys.iter_mut() {
        if k.lock_addr == 0 {
            *k = *key;
            return;
        }
    }
}

/// This CPU's stats of `key` in `LOCK_WAITS_PER_CPU`, inserted if new; None once it is full
/// and `key` is not in it.
#[inline(always)]
fn per_cpu_lock_stats(cpu: &mut CpuContention, key: &LockKey) -> Option<*mut WaitStats> {
    if cpu.lock_map_full != 0 {
        return LOCK_WAITS_PER_CPU.lookup(key);
    }
    let (p, _) = get_or_insert(&LOCK_WAITS_PER_CPU, key, &WaitStats::ZERO);
    if p.is_none() {
        cpu.lock_map_full = 1;
    }
    p
}

/// Capture the current kernel (`slot` 0) or user (`slot` 1, `BPF_F_USER_STACK`) stack into the
/// stack table; its key, or None when there is none or the table is full.
#[inline(always)]
fn capture_stack<C: EbpfContext>(ctx: &C, slot: u32, flags: u64) -> Option<u64> {
    let buf = unsafe { &mut *STACK_SCRATCH.get_ptr_mut(slot)? };
    // User stacks are cheap to walk (frame pointers); kernel stacks use the configured depth.
    let depth = if slot == 0 {
        config!(stack_depth)
    } else {
        MAX_STACK_DEPTH as u32
    };
    let depth = if depth == 0 || depth > MAX_STACK_DEPTH as u32 {
        DEFAULT_STACK_DEPTH
    } else {
        depth
    };
    let size = depth * 8;
    let n = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            buf.ips.as_mut_ptr() as *mut core::ffi::c_void,
            size,
            flags,
        )
    };
    if n <= 0 {
        return None;
    }
    let len = (n as usize / 8).min(MAX_STACK_DEPTH);
    buf.len = len as u32;
    let key = stack_hash(&buf.ips, len);
    if STACKS.get_ptr(&key).is_none() {
        // EEXIST: another CPU stored the same stack meanwhile, fine; otherwise the table is full.
        if STACKS.insert(&key, buf, BPF_NOEXIST as u64).is_err() && STACKS.get_ptr(&key).is_none() {
            return None;
        }
    }
    Some(key)
}

/// Whether to capture this contention's stack, and if so the (count, wait) it stands for.
/// Waits of `STACK_SAMPLE_ALWAYS_NS` or more are always captured. Shorter ones: up to
/// `stack_samples / 10` captures per CPU per 100 ms window; a window's contention count sets
/// the next window's period (capture one in N), and a burst that uses up the budget within a
/// window doubles the period on the spot. A capture stands for itself and the short waits
/// passed over before it on this CPU, so the stack table's counts and wait totals add up to
/// the exact totals (less what was passed over after a CPU's last capture), while the short
/// waits' split between stacks is sampled.
#[inline(always)]
fn stack_sample(s: &mut StackSampler, now: u64, wait: u64, weight: u64) -> Option<(u64, u64)> {
    let per_s = config!(stack_samples);
    if per_s == 0 {
        return Some((weight, wait * weight));
    }
    let budget = if per_s < 10 { 1 } else { per_s / 10 };
    let since = now.wrapping_sub(s.window_start_ns);
    if since >= STACK_SAMPLE_WINDOW_NS {
        // After an idle stretch the last window says nothing about now: start over at 1.
        s.period = if since < 2 * STACK_SAMPLE_WINDOW_NS {
            (s.seen + budget - 1) / budget
        } else {
            1
        };
        if s.period == 0 {
            s.period = 1;
        }
        s.window_start_ns = now;
        s.seen = 0;
        s.captured = 0;
    }
    // Contentions, not timed waits: the budget is per contention like everything else.
    s.seen += weight as u32;
    if wait < STACK_SAMPLE_ALWAYS_NS && s.skipped + 1 < s.period {
        s.skipped += weight as u32;
        s.skipped_ns += wait * weight;
        percpu_add(&OP_COUNTS, OpCounter::StacksSkipped as u32, weight);
        return None;
    }
    let stands_for = (s.skipped as u64 + weight, s.skipped_ns + wait * weight);
    s.skipped = 0;
    s.skipped_ns = 0;
    s.captured += 1;
    if s.captured >= budget && s.period < (1 << 20) {
        s.period *= 2;
        s.captured = 0;
    }
    percpu_add(&OP_COUNTS, OpCounter::StacksCaptured as u32, weight);
    Some(stands_for)
}

#[inline(always)]
fn on_contention_end<C: EbpfContext>(ctx: &C, lock_addr: u64) {
    let Some(cpu) = CPU_CONTENTION.get_ptr_mut(0) else {
        return;
    };
    let cpu = unsafe { &mut *cpu };
    // From here on, begins on this CPU are our own maps' locks (see CpuContention).
    cpu.in_contention_end = 1;
    end_wait(ctx, cpu, lock_addr);
    cpu.in_contention_end = 0;
}

/// Take this CPU's slot `idx` if it holds a wait on `lock_addr`.
#[inline(always)]
fn take_spin_slot(cpu: &mut CpuContention, idx: usize, lock_addr: u64) -> Option<ContentionStart> {
    let slot = &mut cpu.spin[idx];
    if slot.lock_addr != lock_addr {
        return None;
    }
    let s = *slot;
    slot.lock_addr = 0;
    Some(s)
}

#[inline(always)]
fn end_wait<C: EbpfContext>(ctx: &C, cpu: &mut CpuContention, lock_addr: u64) {
    // contention_end carries no flags: the per-CPU slots are checked first (a CPU with a spin
    // wait in flight is not sleeping on another lock), then the task map.
    let spin = take_spin_slot(cpu, SPIN_SLOT, lock_addr)
        .or_else(|| take_spin_slot(cpu, MUTEX_SPIN_SLOT, lock_addr));
    let (start, now) = match spin {
        Some(s) => {
            if s.weight == 0 {
                return; // not timed (see wait_weight)
            }
            (s, unsafe { bpf_ktime_get_ns() })
        }
        None => {
            let tid = bpf_get_current_pid_tgid() as u32;
            let Some(slot) = TASK_INFLIGHT.get_ptr(tid) else {
                return;
            };
            let s = unsafe { *slot };
            if s.lock_addr != lock_addr {
                return;
            }
            if TASK_INFLIGHT.remove(tid).is_ok() && s.flags & lock_flags::MUTEX != 0 {
                sleeping_waits_add(u64::MAX);
            }
            if s.weight == 0 {
                return; // not timed (see wait_weight)
            }
            // After the lookup: this wait slept, next to which the lookup's time is noise.
            (s, unsafe { bpf_ktime_get_ns() })
        }
    };
    record_contention(ctx, cpu, lock_addr, start, now);
}

/// The bookkeeping of one finished wait: per lock, per stack (sampled), per CPU, per task.
#[inline(always)]
pub(crate) fn record_contention<C: EbpfContext>(
    ctx: &C,
    cpu: &mut CpuContention,
    lock_addr: u64,
    start: ContentionStart,
    now: u64,
) {
    let wait = now.saturating_sub(start.start_ns);
    // The contentions this wait stands for (1 but for sampled other locks): every table
    // counts it that many times, so they all still add up.
    let weight = start.weight as u64;

    let key = LockKey {
        lock_addr,
        flags: start.flags,
        _pad: 0,
    };
    match hot_lock_slot(cpu, &key) {
        Some(i) => {
            if let Some(s) = cpu.hot_waits.get_mut(i) {
                add_wait_this_cpu(s, wait, weight);
            }
        }
        None => match per_cpu_lock_stats(cpu, &key) {
            Some(s) => {
                let s = unsafe { &mut *s };
                add_wait_this_cpu(s, wait, weight);
                if s.count >= HOT_LOCK_AFTER {
                    take_hot_slot(cpu, &key);
                }
            }
            None => {
                if let Some(s) = lru_get_or_insert(
                    &LOCK_WAITS,
                    &key,
                    &WaitStats::ZERO,
                    OpCounter::SharedLockKeysSeen,
                    LossCounter::LockMapFull,
                    weight,
                ) {
                    add_waits(unsafe { &mut *s }, wait, weight);
                }
            }
        },
    }

    let options = config!(stack_options);
    let sampled = stack_sample(&mut cpu.sampler, now, wait, weight);
    if let Some((count, wait_ns)) = sampled {
        match capture_stack(ctx, 0, 0) {
            Some(kernel_stack) => {
                let mut key = StackKey {
                    lock_addr,
                    kernel_stack,
                    flags: start.flags,
                    ..StackKey::default()
                };
                if options & (stack_options::PER_TASK | stack_options::USER_STACKS) != 0 {
                    key.tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
                    key.comm = bpf_get_current_comm().unwrap_or_default();
                }
                if options & stack_options::USER_STACKS != 0 {
                    // Kernel threads have no user stack: 0.
                    key.user_stack = capture_stack(ctx, 1, BPF_F_USER_STACK as u64).unwrap_or(0);
                }
                if let Some(t) = lru_get_or_insert(
                    &STACK_WAITS,
                    &key,
                    &WaitTotals::default(),
                    OpCounter::StackKeysSeen,
                    LossCounter::StackKeysFull,
                    count,
                ) {
                    let t = unsafe { &mut *t };
                    atomic_add(&mut t.count, count);
                    atomic_add(&mut t.total_ns, wait_ns);
                    racy_max(&mut t.max_ns, wait);
                }
            }
            None => lost_n(LossCounter::StackCaptureFailed, count),
        }
    }

    add_wait_totals(&mut cpu.totals, wait, weight);

    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let batch = &mut cpu.task;
    if batch.totals.count != 0 && batch.tid != tid {
        flush_task_batch(batch);
    }
    if batch.totals.count == 0 {
        batch.tid = tid;
        batch.sampled = 0;
    }
    add_wait_totals(&mut batch.totals, wait, weight);
    // A task enters the table at its first sampled contention: under a thread or fork storm
    // most contentions come from tasks not yet in it, and inserting each (an LRU eviction)
    // cost more than the rest of the contention's bookkeeping together. Heavy waiters are
    // sampled early; --stack-samples 0 counts every task from its first wait.
    if sampled.is_some() && batch.sampled == 0 {
        batch.sampled = 1;
        if TASK_WAITS.get_ptr(&tid).is_none() {
            let fresh = TaskWait {
                totals: WaitTotals::default(),
                tgid: (pid_tgid >> 32) as u32,
                _pad: 0,
                comm: bpf_get_current_comm().unwrap_or_default(),
            };
            percpu_add(&OP_COUNTS, OpCounter::TasksSeen as u32, 1);
            let _ = TASK_WAITS.insert(&tid, &fresh, BPF_NOEXIST as u64);
        }
    }
}

/// `weight` waits of `wait` into totals only this CPU writes (plain adds).
#[inline(always)]
fn add_wait_totals(t: &mut WaitTotals, wait: u64, weight: u64) {
    t.count += weight;
    t.total_ns += wait * weight;
    if wait > t.max_ns {
        t.max_ns = wait;
    }
}

/// Add a CPU's batch of one task's waits to the task's entry (dropped if the task is not in
/// the table: never sampled, or evicted) and empty it.
#[inline(always)]
fn flush_task_batch(batch: &mut TaskBatch) {
    if let Some(t) = TASK_WAITS.get_ptr_mut(&batch.tid) {
        // Locked adds: a task that migrated can have batches on two CPUs, flushed at once.
        // They cost once per batch, not per wait.
        let t = unsafe { &mut (*t).totals };
        atomic_add(&mut t.count, batch.totals.count);
        atomic_add(&mut t.total_ns, batch.totals.total_ns);
        racy_max(&mut t.max_ns, batch.totals.max_ns);
    }
    batch.totals = WaitTotals::default();
}

#[btf_tracepoint(function = "contention_begin")]
pub fn tpbtf_contention_begin(ctx: BtfTracePointContext) -> i32 {
    return_if_empty!(0);
    on_contention_begin(
        btf_arg(&ctx, config!(btf.contention_lock)),
        btf_arg(&ctx, config!(btf.contention_flags)) as u32,
    );
    0
}

#[btf_tracepoint(function = "contention_end")]
pub fn tpbtf_contention_end(ctx: BtfTracePointContext) -> i32 {
    return_if_empty!(0);
    on_contention_end(&ctx, btf_arg(&ctx, config!(btf.contention_lock)));
    0
}

classic_tracepoint!("tracepoint/lock/contention_begin", fn tp_contention_begin(ctx) {
    on_contention_begin(tp_field::<u64>(&ctx, config!(tp.contention_lock)), tp_field::<u32>(&ctx, config!(tp.contention_flags)));
});

classic_tracepoint!("tracepoint/lock/contention_end", fn tp_contention_end(ctx) {
    on_contention_end(&ctx, tp_field::<u64>(&ctx, config!(tp.contention_lock)));
});

// ---------------------------------------------------------------- vmap function latency

/// Calls in flight: key = tid << 32 | slot.
#[map]
static CALLS_INFLIGHT: HashMap<u64, CallEnter> = HashMap::with_max_entries(MAX_INFLIGHT_CALLS, 0);
/// Latency per function slot, per CPU (the CPU the call returned on): user space sums the
/// CPUs for the totals and keeps each CPU's histogram for the per-CPU breakdown.
#[map]
static FUNC_LATENCY: PerCpuArray<WaitStats> = PerCpuArray::with_max_entries(FUNC_SLOTS, 0);
/// Lazy frees counted from function probes (`TALLY_FREES`, atomic adds from all CPUs), and
/// that tally when the latest purge began (`TALLY_FREES_AT_LAST_PURGE`). A purge takes every
/// area queued before it (5.10: `llist_del_all`; 6.1: the whole purge list), so the frees
/// between two purge starts are the areas the second one purged, as freed (6.1 merges
/// adjacent ones in its purge tree, which the 6.2+ tracepoint's `npurged` counts merged).
#[map]
static LAZY_FREE_TALLY: Array<u64> = Array::with_max_entries(2, 0);

#[inline(always)]
fn add_wait(s: &mut WaitStats, v: u64) {
    add_waits(s, v, 1);
}

/// `weight` waits of `v` each (see `wait_weight`).
#[inline(always)]
fn add_waits(s: &mut WaitStats, v: u64, weight: u64) {
    atomic_add(&mut s.count, weight);
    atomic_add(&mut s.total_ns, v * weight);
    racy_max(&mut s.max_ns, v);
    let b = log2_bucket(v, TIME_BUCKETS);
    if b < TIME_BUCKETS {
        atomic_add(&mut s.hist[b], weight);
    }
}

/// `add_wait` for a value only this CPU writes (per-CPU maps): plain adds. Programs on one
/// hook do not nest on a CPU (the kernel's recursion guard skips a nested run).
#[inline(always)]
fn add_wait_this_cpu(s: &mut WaitStats, v: u64, weight: u64) {
    s.count += weight;
    s.total_ns += v * weight;
    if v > s.max_ns {
        s.max_ns = v;
    }
    let b = log2_bucket(v, TIME_BUCKETS);
    if b < TIME_BUCKETS {
        s.hist[b] += weight;
    }
}

/// Whether this slot's function counts a vmalloc operation (`OpProbes`).
#[inline(always)]
fn counts_op(slot: u32, role_slot: u32, bit: u32) -> bool {
    slot == role_slot && config!(ops.from_functions) & bit != 0
}

#[inline(always)]
fn func_enter(slot: u32, arg0: u64) {
    if counts_op(slot, config!(ops.free_slot), ops_from_functions::FREES) {
        on_free_call(arg0);
    } else if counts_op(slot, config!(ops.purge_slot), ops_from_functions::PURGES) {
        on_purge_call();
    }
    let key = (bpf_get_current_pid_tgid() << 32) | slot as u64;
    let enter = CallEnter {
        start_ns: unsafe { bpf_ktime_get_ns() },
        arg0,
    };
    if CALLS_INFLIGHT.insert(&key, &enter, 0).is_err() {
        lost(LossCounter::CallsInflightFull);
    }
}

#[inline(always)]
fn func_exit(slot: u32, ret: u64) {
    let key = (bpf_get_current_pid_tgid() << 32) | slot as u64;
    let Some(enter) = CALLS_INFLIGHT.get_ptr(&key) else {
        return;
    };
    let enter = unsafe { *enter };
    let latency = unsafe { bpf_ktime_get_ns() }.saturating_sub(enter.start_ns);
    let _ = CALLS_INFLIGHT.remove(&key);
    if let Some(s) = FUNC_LATENCY.get_ptr_mut(slot) {
        // This CPU's own slot: plain adds, no atomics (fexit/kretprobe programs do not nest
        // on one CPU: the kernel's recursion guard skips a nested run).
        add_wait_this_cpu(unsafe { &mut *s }, latency, 1);
    }
    // Counted at the return, which says whether it failed; the size was kept from the entry.
    if counts_op(slot, config!(ops.alloc_slot), ops_from_functions::ALLOCS) {
        on_alloc_vmap_area(enter.arg0, i32::from(is_err_or_null(ret)));
    }
}

/// `free_vmap_area_noflush(va)` entered: a lazy free. Its `vmalloc:free_vmap_area_noflush`
/// tracepoint (6.2+) reports `vmap_lazy_nr` just after adding the area's pages; here, before
/// the function runs, that is the counter plus the area's pages (5.10 may purge inside the
/// function, so its return would show the backlog after the purge instead of its peak).
#[inline(always)]
fn on_free_call(va: u64) {
    percpu_add(&OP_COUNTS, OpCounter::Frees as u32, 1);
    if let Some(tally) = LAZY_FREE_TALLY.get_ptr_mut(TALLY_FREES) {
        atomic_add(tally, 1);
    }
    let lazy_nr_addr = config!(ops.lazy_nr_addr);
    if lazy_nr_addr == 0 {
        return;
    }
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) };
    let (Ok(lazy), Ok(start), Ok(end)) = (
        read(lazy_nr_addr),
        read(va + config!(ops.va_start_offset) as u64),
        read(va + config!(ops.va_end_offset) as u64),
    ) else {
        return;
    };
    let pages = end.saturating_sub(start) >> (config!(page_shift) & 63);
    set_lazy_gauge(lazy.saturating_add(pages), config!(ops.lazy_max_pages));
}

/// `__purge_vmap_area_lazy` entered: a purge. Purges run under `vmap_purge_lock`, one at a
/// time, so the last-purge tally has one writer at a time.
#[inline(always)]
fn on_purge_call() {
    percpu_add(&OP_COUNTS, OpCounter::Purges as u32, 1);
    let (Some(frees), Some(at_last)) = (
        LAZY_FREE_TALLY.get_ptr_mut(TALLY_FREES),
        LAZY_FREE_TALLY.get_ptr_mut(TALLY_FREES_AT_LAST_PURGE),
    ) else {
        return;
    };
    let (frees_now, before) = unsafe { (*frees, *at_last) };
    unsafe { *at_last = frees_now };
    percpu_add(
        &OP_COUNTS,
        OpCounter::PurgedAreas as u32,
        frees_now.saturating_sub(before),
    );
}

/// Word `index` of a fentry/fexit context: the arguments, then (fexit) the return value,
/// whose index is the function's parameter count. Read with a helper rather than loaded from
/// the context: a loaded `struct vmap_area *` would be a typed kernel pointer, which the
/// verifier does not let the failure test do arithmetic and comparisons on as a number.
#[inline(always)]
fn trampoline_word(ctx: *mut core::ffi::c_void, index: u32) -> u64 {
    let word = (ctx as *const u64).wrapping_add((index & 15) as usize);
    unsafe { bpf_probe_read_kernel(word) }.unwrap_or(0)
}

/// Whether this slot's entry argument is used: `alloc_vmap_area`'s size, or
/// `free_vmap_area_noflush`'s area. Other slots do not read theirs.
#[inline(always)]
fn needs_arg0(slot: u32) -> bool {
    counts_op(slot, config!(ops.alloc_slot), ops_from_functions::ALLOCS)
        || counts_op(slot, config!(ops.free_slot), ops_from_functions::FREES)
}

/// One fentry/fexit and one kprobe/kretprobe pair per slot: fentry programs are bound to
/// their target at load, so each function needs its own; the loader picks one pair per slot.
/// Only the op-counting slots read an argument or the return value (`OpProbes`).
macro_rules! latency_slots {
    ($($slot:literal => $fe:ident, $fx:ident, $kp:ident, $krp:ident;)*) => {$(
        #[fentry]
        pub fn $fe(ctx: FEntryContext) -> i32 {
            return_if_empty!(0);
            let arg0 = if needs_arg0($slot) { trampoline_word(ctx.as_ptr(), 0) } else { 0 };
            func_enter($slot, arg0);
            0
        }
        #[fexit]
        pub fn $fx(ctx: FExitContext) -> i32 {
            return_if_empty!(0);
            let ret = if counts_op($slot, config!(ops.alloc_slot), ops_from_functions::ALLOCS) {
                trampoline_word(ctx.as_ptr(), config!(ops.alloc_ret_index))
            } else {
                0
            };
            func_exit($slot, ret);
            0
        }
        #[kprobe]
        pub fn $kp(ctx: ProbeContext) -> u32 {
            return_if_empty!(0);
            let arg0 = if needs_arg0($slot) { ctx.arg(0).unwrap_or(0) } else { 0 };
            func_enter($slot, arg0);
            0
        }
        #[kretprobe]
        pub fn $krp(ctx: RetProbeContext) -> u32 {
            return_if_empty!(0);
            let ret = if counts_op($slot, config!(ops.alloc_slot), ops_from_functions::ALLOCS) {
                ctx.ret()
            } else {
                0
            };
            func_exit($slot, ret);
            0
        }
    )*};
}

latency_slots! {
    0 => fentry_fn0, fexit_fn0, kprobe_fn0, kretprobe_fn0;
    1 => fentry_fn1, fexit_fn1, kprobe_fn1, kretprobe_fn1;
    2 => fentry_fn2, fexit_fn2, kprobe_fn2, kretprobe_fn2;
    3 => fentry_fn3, fexit_fn3, kprobe_fn3, kretprobe_fn3;
    4 => fentry_fn4, fexit_fn4, kprobe_fn4, kretprobe_fn4;
    5 => fentry_fn5, fexit_fn5, kprobe_fn5, kretprobe_fn5;
    6 => fentry_fn6, fexit_fn6, kprobe_fn6, kretprobe_fn6;
    7 => fentry_fn7, fexit_fn7, kprobe_fn7, kretprobe_fn7;
    8 => fentry_fn8, fexit_fn8, kprobe_fn8, kretprobe_fn8;
    9 => fentry_fn9, fexit_fn9, kprobe_fn9, kretprobe_fn9;
    10 => fentry_fn10, fexit_fn10, kprobe_fn10, kretprobe_fn10;
    11 => fentry_fn11, fexit_fn11, kprobe_fn11, kretprobe_fn11;
}

// ---------------------------------------------------------------- vmap lock wait and hold

/// vmap lock address -> lock id, filled by user space. Every other lock costs one lookup.
#[map]
static VMAP_LOCKS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_VMAP_LOCKS, 0);
/// Lock calls in flight: key = tid << 32 | lock id (a task can wait for or hold several vmap
/// locks at once, e.g. vmap_purge_lock around free_vmap_area_lock).
#[map]
static LOCKS_INFLIGHT: HashMap<u64, LockEnter> = HashMap::with_max_entries(MAX_INFLIGHT_CALLS, 0);
/// When each lock was last released.
#[map]
static LOCK_LAST_RELEASE: HashMap<u32, u64> = HashMap::with_max_entries(MAX_VMAP_LOCKS, 0);
#[map]
static LOCK_TIMING: HashMap<u32, LockTiming> = HashMap::with_max_entries(MAX_VMAP_LOCKS, 0);

/// Only entry probes, no return probes: return probes on the lock primitives crashed test
/// kernels. The acquisition time follows from the release times instead: while a task holds a
/// lock nobody else releases it, so when the holder releases, the previous release of that
/// lock happened before it acquired, and it acquired at max(its lock call, that release).
#[inline(always)]
fn lock_acquire_enter(lock_addr: u64) {
    let Some(id) = (unsafe { VMAP_LOCKS.get(&lock_addr) }) else {
        return;
    };
    let key = (bpf_get_current_pid_tgid() << 32) | *id as u64;
    let enter = LockEnter {
        start_ns: unsafe { bpf_ktime_get_ns() },
        lock_id: *id,
        _pad: 0,
    };
    if LOCKS_INFLIGHT.insert(&key, &enter, 0).is_err() {
        lost(LossCounter::CallsInflightFull);
    }
}

#[inline(always)]
fn lock_release_enter(lock_addr: u64) {
    let Some(id) = (unsafe { VMAP_LOCKS.get(&lock_addr) }) else {
        return;
    };
    let id = *id;
    let now = unsafe { bpf_ktime_get_ns() };
    let previous_release = unsafe { LOCK_LAST_RELEASE.get(&id) }.copied().unwrap_or(0);
    let _ = LOCK_LAST_RELEASE.insert(&id, &now, 0);
    let key = (bpf_get_current_pid_tgid() << 32) | id as u64;
    // No lock call seen (taken before attach, or by trylock): only the release time counts.
    let Some(enter) = LOCKS_INFLIGHT.get_ptr(&key) else {
        return;
    };
    let called = unsafe { (*enter).start_ns };
    let _ = LOCKS_INFLIGHT.remove(&key);
    let acquired = if previous_release > called {
        previous_release
    } else {
        called
    };
    let (timing, _) = get_or_insert(&LOCK_TIMING, &id, &LockTiming::ZERO);
    if timing.is_none() {
        lost(LossCounter::LockMapFull);
    }
    if let Some(t) = timing {
        let t = unsafe { &mut *t };
        add_wait(&mut t.wait, acquired - called);
        add_wait(&mut t.hold, now.saturating_sub(acquired));
    }
}

// kprobe programs can be attached to several functions: one serves spin_lock and mutex_lock,
// one their unlocks. (No fentry variant: see vmap-trace/src/probe/lock_timing.rs for why.)
#[kprobe]
pub fn kprobe_lock_acquire(ctx: ProbeContext) -> u32 {
    return_if_empty!(0);
    lock_acquire_enter(ctx.arg(0).unwrap_or(0));
    0
}
#[kprobe]
pub fn kprobe_lock_release(ctx: ProbeContext) -> u32 {
    return_if_empty!(0);
    lock_release_enter(ctx.arg(0).unwrap_or(0));
    0
}

// After every helper and macro above: the slow-path programs use them.
mod slowpath;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
