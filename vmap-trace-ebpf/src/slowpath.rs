//! Lock waits timed from the kernel's lock slow paths, entry to return, where
//! `lock:contention_*` misses them: qspinlock's two-way (pending bit) waits and the
//! test-and-set spinning of `virt_spin_lock` in VMs without paravirt spinlocks never reach
//! `contention_begin`, and 5.10 has no contention tracepoints at all.
//!
//! Spin waits (`native_queued_spin_lock_slowpath`, `__pv_queued_spin_lock_slowpath`) are
//! timed on per-CPU state only: the slow path is entered with preemption off, so entry and
//! return run on one CPU, nested at most four deep (task, softirq, hardirq, NMI: qspinlock's
//! own limit). A small per-CPU stack pairs them, which also serves kretprobes (no arguments
//! at return): the return is the innermost entry's. Other locks than the vmap locks are
//! sampled by `wait_weight` as on the tracepoint path, and every finished wait goes through
//! the same `record_contention`, so all tables come out the same.
//!
//! Sleeping waits (`__mutex_lock_slowpath`; on PREEMPT_RT `rtlock_slowlock_locked` and
//! `rt_mutex_slowlock`) may migrate, so they are keyed by task; only vmap locks are timed,
//! which keeps the hash insert off every other mutex's slow path. User space attaches these
//! only where the contention tracepoints are missing (they would count the same waits).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use vmap_trace_common::{lock_flags, slow_path, ContentionStart, LossCounter, MAX_INFLIGHT_TASKS};

use crate::{
    is_vmap_lock, lost_n, percpu_add, record_contention, wait_weight, CONFIG, CPU_CONTENTION,
    SPIN_SLOT_STALE_NS,
};

/// Set by the loader (`slow_path::SPIN_WAITS_MAP`) once a spin slow path is attached.
#[map]
static SPIN_WAITS_FROM_SLOWPATH: Array<u32> = Array::with_max_entries(1, 0);

/// Whether the slow-path programs time spinlock waits (then `contention_begin` leaves the
/// qspinlock's own begins to them). An array lookup, which the verifier inlines.
#[inline(always)]
pub(crate) fn times_spin_waits() -> bool {
    SPIN_WAITS_FROM_SLOWPATH.get(0).is_some_and(|v| *v != 0)
}

/// One CPU's spin waits in flight, innermost last.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SpinWaits {
    pub depth: u32,
    /// 1 while this CPU's return program records a wait: the map updates in
    /// `record_contention` take spinlocks whose own slow path would nest here. Their entries
    /// are not pushed (their fexit would be skipped by the kernel's recursion guard for the
    /// running program, leaving the entry on the stack).
    pub recording: u32,
    pub waits: [ContentionStart; slow_path::SPIN_NEST],
}

#[map]
static SLOWPATH_SPIN: PerCpuArray<SpinWaits> = PerCpuArray::with_max_entries(1, 0);
/// Sleeping vmap lock waits in flight, per task id.
#[map]
static SLOWPATH_SLEEPING: HashMap<u32, ContentionStart> =
    HashMap::with_max_entries(MAX_INFLIGHT_TASKS, 0);
/// Entries per slow path (`slow_path::entries_index`): which slow path this kernel runs, and
/// how often on vmap locks.
#[map]
static SLOWPATH_ENTRIES: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(slow_path::ENTRY_COUNTERS, 0);

#[inline(always)]
fn count_entry(source: u32, vmap: bool) {
    percpu_add(
        &SLOWPATH_ENTRIES,
        slow_path::entries_index(source, false),
        1,
    );
    if vmap {
        percpu_add(&SLOWPATH_ENTRIES, slow_path::entries_index(source, true), 1);
    }
}

/// The index of the innermost entry, for a stack of depth 1..=SPIN_NEST. Read again and
/// masked, not derived from the caller's checked depth: from that the compiler addressed the
/// entry as `waits + 24 * depth - 16`, or indexed with a depth known to be != SPIN_NEST,
/// bounds that only verifiers refining `!=` branches can prove (6.1.0-47's and 5.10's
/// refused both: EACCES, map value access out of range). A mask bounds it for any verifier.
#[inline(always)]
fn top_index(st: &SpinWaits) -> usize {
    let depth = unsafe { core::ptr::read_volatile(&st.depth) };
    (depth.wrapping_sub(1) as usize) & (slow_path::SPIN_NEST - 1)
}

#[inline(always)]
fn spin_enter(source: u32, lock_addr: u64) {
    count_entry(source, is_vmap_lock(lock_addr));
    let Some(st) = SLOWPATH_SPIN.get_ptr_mut(0) else {
        return;
    };
    let st = unsafe { &mut *st };
    if st.recording != 0 {
        return;
    }
    let Some(cpu) = CPU_CONTENTION.get_ptr_mut(0) else {
        return;
    };
    let cpu = unsafe { &mut *cpu };
    // Every entry reads the clock, timed or not: a stale stack (a return that was never
    // seen, e.g. a kretprobe that found no free instance) is recognised by its age. Next to
    // a spin wait the read is noise.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut depth = st.depth as usize;
    if depth > slow_path::SPIN_NEST {
        depth = 0;
    }
    if depth > 0 {
        if let Some(top) = st.waits.get(top_index(st)) {
            if now.wrapping_sub(top.start_ns) > SPIN_SLOT_STALE_NS {
                depth = 0;
            }
        }
    }
    if depth == slow_path::SPIN_NEST {
        // Deeper than qspinlock nests: the stack lost returns. Start over.
        depth = 0;
    }
    let weight = wait_weight(cpu, lock_addr);
    st.depth = depth as u32 + 1;
    // Through `top_index` (masked), not `depth`: see there.
    let top = top_index(st);
    if let Some(w) = st.waits.get_mut(top) {
        *w = ContentionStart {
            lock_addr,
            start_ns: now,
            flags: lock_flags::SPIN,
            weight,
        };
    }
}

/// The innermost spin wait's return. `lock_addr` (fexit) must match the entry; kretprobes
/// have no arguments (None) and take the innermost entry.
#[inline(always)]
fn spin_exit<C: EbpfContext>(ctx: &C, lock_addr: Option<u64>) {
    let Some(st) = SLOWPATH_SPIN.get_ptr_mut(0) else {
        return;
    };
    let st = unsafe { &mut *st };
    if st.recording != 0 {
        return;
    }
    let depth = st.depth as usize;
    if depth == 0 || depth > slow_path::SPIN_NEST {
        st.depth = 0;
        return;
    }
    let Some(w) = st.waits.get(top_index(st)) else {
        return;
    };
    let w = *w;
    st.depth = depth as u32 - 1;
    if let Some(addr) = lock_addr {
        if addr != w.lock_addr {
            return; // its entry was not seen (a nested run skipped): nothing to pair
        }
    }
    if w.weight == 0 {
        return; // not timed (see wait_weight)
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(cpu) = CPU_CONTENTION.get_ptr_mut(0) else {
        return;
    };
    let cpu = unsafe { &mut *cpu };
    st.recording = 1;
    // Begins raised by our own map locks are ignored meanwhile, as in contention_end; kept
    // as found, in case this runs nested inside contention_end.
    let was_in_end = cpu.in_contention_end;
    cpu.in_contention_end = 1;
    record_contention(ctx, cpu, w.lock_addr, w, now);
    cpu.in_contention_end = was_in_end;
    st.recording = 0;
}

#[inline(always)]
fn sleeping_enter(source: u32, flags: u32, lock_addr: u64) {
    let vmap = is_vmap_lock(lock_addr);
    count_entry(source, vmap);
    if !vmap {
        return;
    }
    let start = ContentionStart {
        lock_addr,
        start_ns: unsafe { bpf_ktime_get_ns() },
        flags,
        weight: 1,
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    if SLOWPATH_SLEEPING.insert(&tid, &start, 0).is_err() {
        lost_n(LossCounter::InflightFull, 1);
    }
}

#[inline(always)]
fn sleeping_exit<C: EbpfContext>(ctx: &C, lock_addr: Option<u64>) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(s) = SLOWPATH_SLEEPING.get_ptr(&tid) else {
        return;
    };
    let s = unsafe { *s };
    let _ = SLOWPATH_SLEEPING.remove(&tid);
    if let Some(addr) = lock_addr {
        if addr != s.lock_addr {
            return;
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(cpu) = CPU_CONTENTION.get_ptr_mut(0) else {
        return;
    };
    let cpu = unsafe { &mut *cpu };
    let was_in_end = cpu.in_contention_end;
    cpu.in_contention_end = 1;
    record_contention(ctx, cpu, s.lock_addr, s, now);
    cpu.in_contention_end = was_in_end;
}

/// fentry programs are bound to one target at load: one entry/exit pair per slow path.
/// `$enter(args.., lock)` at entry, `$exit(ctx, Some(lock))` at return.
macro_rules! fentry_pair {
    ($fentry:ident, $fexit:ident, $enter:ident($($arg:expr),*), $exit:ident) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> i32 {
            return_if_empty!(0);
            $enter($($arg,)* ctx.arg::<u64>(0));
            0
        }
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> i32 {
            return_if_empty!(0);
            $exit(&ctx, Some(ctx.arg::<u64>(0)));
            0
        }
    };
}

use slow_path::{MUTEX, NATIVE_SPIN, PV_SPIN, RTLOCK, RT_MUTEX};
fentry_pair!(
    fentry_native_spin_slowpath,
    fexit_native_spin_slowpath,
    spin_enter(NATIVE_SPIN),
    spin_exit
);
fentry_pair!(
    fentry_pv_spin_slowpath,
    fexit_pv_spin_slowpath,
    spin_enter(PV_SPIN),
    spin_exit
);
fentry_pair!(
    fentry_mutex_slowpath,
    fexit_mutex_slowpath,
    sleeping_enter(MUTEX, lock_flags::MUTEX),
    sleeping_exit
);
fentry_pair!(
    fentry_rtlock_slowpath,
    fexit_rtlock_slowpath,
    sleeping_enter(RTLOCK, lock_flags::RT),
    sleeping_exit
);
fentry_pair!(
    fentry_rt_mutex_slowpath,
    fexit_rt_mutex_slowpath,
    sleeping_enter(RT_MUTEX, lock_flags::RT),
    sleeping_exit
);

/// kprobe entries, one per slow path (so each counts under its own name: 5.10 has neither
/// attach cookies nor `bpf_get_func_ip`); the returns are shared, as entries say what to pair.
macro_rules! kprobe_entry {
    ($name:ident, $enter:ident($($arg:expr),*)) => {
        #[kprobe]
        pub fn $name(ctx: ProbeContext) -> u32 {
            return_if_empty!(0);
            $enter($($arg,)* ctx.arg::<u64>(0).unwrap_or(0));
            0
        }
    };
}

kprobe_entry!(kprobe_native_spin_slowpath, spin_enter(NATIVE_SPIN));
kprobe_entry!(kprobe_pv_spin_slowpath, spin_enter(PV_SPIN));
kprobe_entry!(
    kprobe_mutex_slowpath,
    sleeping_enter(MUTEX, lock_flags::MUTEX)
);
kprobe_entry!(
    kprobe_rtlock_slowpath,
    sleeping_enter(RTLOCK, lock_flags::RT)
);
kprobe_entry!(
    kprobe_rt_mutex_slowpath,
    sleeping_enter(RT_MUTEX, lock_flags::RT)
);

#[kretprobe]
pub fn kretprobe_spin_slowpath(ctx: RetProbeContext) -> u32 {
    return_if_empty!(0);
    spin_exit(&ctx, None);
    0
}

#[kretprobe]
pub fn kretprobe_sleeping_slowpath(ctx: RetProbeContext) -> u32 {
    return_if_empty!(0);
    sleeping_exit(&ctx, None);
    0
}
