//! Reading the BPF maps into a `Profile`.
//!
//! The kernel side only ever adds, so a read is a cumulative snapshot since attach; views that
//! need windows subtract two snapshots. Stacks are symbolized and attributed here, once.
use std::collections::{BTreeMap, HashMap as StdHashMap};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap},
    Ebpf, Pod,
};
use vmap_trace_common::{
    CpuContention, LazyGauge, LockKey, LossCounter, OpCounter, StackFrames, StackKey, TaskBatch,
    TaskWait, WaitStats, WaitTotals, MAX_STACK_DEPTH, OP_COUNTERS, SIZE_BUCKETS,
};

use crate::kernel::{
    kallsyms::DataSymbols,
    symbolize::{KernelSymbolizer, UserSymbolizer},
    vmap_locks::VmapLockTable,
};
use crate::probe::{functions, lock_timing, Probes};
use crate::profile::{
    attribution, CpuLatency, CpuWait, Frame, FunctionLatency, LockWait, Log2Histogram, Losses,
    Profile, RecordingMeta, StackSampling, StackTask, StackWait, TaskWaitSummary, VmallocOps,
    VmapLockTiming, WaitHistogram,
};

fn wait_histogram(v: &WaitStats) -> WaitHistogram {
    WaitHistogram {
        count: v.count,
        total_ns: v.total_ns,
        max_ns: v.max_ns,
        hist: Log2Histogram::from_buckets(&v.hist),
    }
}

/// All CPUs' stats of one slot as one histogram.
fn sum_cpus(cpus: &[WaitStats]) -> WaitHistogram {
    let mut total = WaitHistogram::default();
    for c in cpus {
        total.add(&wait_histogram(c));
    }
    total
}

/// The CPUs that saw calls, each with its own histogram.
fn cpu_latencies(cpus: &[WaitStats]) -> Vec<CpuLatency> {
    cpus.iter()
        .enumerate()
        .filter(|(_, s)| s.count > 0)
        .map(|(cpu, s)| CpuLatency {
            cpu: cpu as u32,
            latency: wait_histogram(s),
        })
        .collect()
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

fn per_cpu<'a, T: Pod>(ebpf: &'a Ebpf, name: &str) -> Result<PerCpuArray<&'a MapData, T>> {
    PerCpuArray::try_from(map(ebpf, name)?).with_context(|| format!("map {name}"))
}

/// Add each CPU's hot lock slots (`CpuContention::hot_keys`) to the per-lock waits.
fn add_hot_lock_waits(
    lock_waits: &mut BTreeMap<(u64, u32), WaitHistogram>,
    cpus: &[CpuContention],
) {
    for cpu in cpus {
        for (k, w) in cpu.hot_keys.iter().zip(&cpu.hot_waits) {
            if k.lock_addr != 0 && w.count > 0 {
                lock_waits
                    .entry((k.lock_addr, k.flags))
                    .or_default()
                    .add(&wait_histogram(w));
            }
        }
    }
}

/// Add each CPU's batch of not yet flushed waits (`TaskBatch`) to its task's entry. A batch
/// of a task not in the table is dropped, as the kernel side drops it when flushing.
fn add_task_batches(tasks: &mut [TaskWaitSummary], batches: impl Iterator<Item = TaskBatch>) {
    // A task that migrated can have a batch on several CPUs.
    let mut by_tid: StdHashMap<u32, WaitTotals> = StdHashMap::new();
    for b in batches.filter(|b| b.totals.count > 0) {
        let t = by_tid.entry(b.tid).or_default();
        t.count += b.totals.count;
        t.total_ns += b.totals.total_ns;
        t.max_ns = t.max_ns.max(b.totals.max_ns);
    }
    if by_tid.is_empty() {
        return;
    }
    for task in tasks {
        if let Some(b) = by_tid.get(&task.tid) {
            task.count += b.count;
            task.total_ns += b.total_ns;
            task.max_ns = task.max_ns.max(b.max_ns);
        }
    }
}

/// Per-CPU values of slot `idx`.
fn per_cpu_values<T: Pod>(arr: &PerCpuArray<&MapData, T>, idx: u32) -> Result<Vec<T>> {
    Ok(arr
        .get(&idx, 0)
        .with_context(|| format!("reading slot {idx}"))?
        .iter()
        .copied()
        .collect())
}

/// Turns stack-table keys into symbolized frames, caching per key. User stacks are
/// symbolized against their live process (`/proc/PID/maps`), so `record --user-stacks` calls
/// `resolve_user_stacks` periodically while the processes still run.
#[derive(Default)]
pub struct StackResolver {
    symbolizer: KernelSymbolizer,
    user_symbolizer: UserSymbolizer,
    kernel: StdHashMap<u64, Arc<[Frame]>>,
    user: StdHashMap<(u32, u64), Vec<Frame>>,
}

/// The frames stored under `key` in the stack table (empty if it is not there).
fn stack_ips(stacks: &HashMap<&MapData, u64, StackFrames>, key: u64) -> Vec<u64> {
    match stacks.get(&key, 0) {
        Ok(st) => st.ips[..(st.len as usize).min(MAX_STACK_DEPTH)].to_vec(),
        Err(_) => Vec::new(),
    }
}

impl StackResolver {
    fn frames(&mut self, stacks: &HashMap<&MapData, u64, StackFrames>, key: u64) -> Arc<[Frame]> {
        if let Some(f) = self.kernel.get(&key) {
            return Arc::clone(f);
        }
        let frames: Arc<[Frame]> =
            trim_tracing_frames(self.symbolizer.symbolize(&stack_ips(stacks, key))).into();
        self.kernel.insert(key, Arc::clone(&frames));
        frames
    }

    /// A user stack of process `tgid`. Cached once symbolized while the process was alive;
    /// otherwise bare addresses, retried on the next call.
    fn user_frames(
        &mut self,
        stacks: &HashMap<&MapData, u64, StackFrames>,
        tgid: u32,
        key: u64,
    ) -> Vec<Frame> {
        if key == 0 {
            return Vec::new();
        }
        if let Some(f) = self.user.get(&(tgid, key)) {
            return f.clone();
        }
        let ips = stack_ips(stacks, key);
        match self.user_symbolizer.symbolize(tgid, &ips) {
            Some(frames) => {
                self.user.insert((tgid, key), frames.clone());
                frames
            }
            None => ips
                .iter()
                .map(|&addr| Frame {
                    addr,
                    function: None,
                    offset: 0,
                })
                .collect(),
        }
    }

    /// Symbolize the user stacks captured so far whose processes are still alive: one
    /// blazesym call per process.
    pub fn resolve_user_stacks(&mut self, probes: &Probes) -> Result<()> {
        let stack_map: HashMap<&MapData, StackKey, WaitTotals> =
            HashMap::try_from(map(&probes.ebpf, "STACK_WAITS")?)?;
        let stack_table: HashMap<&MapData, u64, StackFrames> =
            HashMap::try_from(map(&probes.ebpf, "STACKS")?)?;
        let mut pending: StdHashMap<u32, Vec<u64>> = StdHashMap::new();
        for k in stack_map.keys().filter_map(|k| k.ok()) {
            if k.user_stack != 0 && !self.user.contains_key(&(k.tgid, k.user_stack)) {
                let keys = pending.entry(k.tgid).or_default();
                if !keys.contains(&k.user_stack) {
                    keys.push(k.user_stack);
                }
            }
        }
        for (tgid, keys) in pending {
            let stacks: Vec<Vec<u64>> = keys.iter().map(|&k| stack_ips(&stack_table, k)).collect();
            let all: Vec<u64> = stacks.iter().flatten().copied().collect();
            let Some(frames) = self.user_symbolizer.symbolize(tgid, &all) else {
                continue;
            };
            let mut frames = frames.into_iter();
            for (key, ips) in keys.into_iter().zip(&stacks) {
                self.user
                    .insert((tgid, key), frames.by_ref().take(ips.len()).collect());
            }
        }
        Ok(())
    }
}

/// A NUL-padded kernel `comm` as text.
fn comm_text(comm: &[u8]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// Drop the innermost frames that belong to the tracing machinery (our BPF program, the
/// tracepoint dispatch): they say nothing about the contention and the BPF program's symbol
/// disappears from kallsyms once it is unloaded.
fn trim_tracing_frames(frames: Vec<Frame>) -> Vec<Frame> {
    const TRACING: &[&str] = &[
        "bpf_prog_",
        "bpf_trace_run",
        "__bpf_trace_",
        "__traceiter_",
        "trace_contention_",
        "bpf_trampoline_",
    ];
    let skip = frames
        .iter()
        .take_while(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| TRACING.iter().any(|t| n.starts_with(t)))
        })
        .count();
    frames.into_iter().skip(skip).collect()
}

/// Everything aggregated since attach, as a `Profile` carrying `meta`.
pub fn read(
    probes: &Probes,
    meta: RecordingMeta,
    data_symbols: &DataSymbols,
    vmap_locks: &VmapLockTable,
    resolver: &mut StackResolver,
) -> Result<Profile> {
    let ebpf = &probes.ebpf;
    // vmalloc op counters, summed over CPUs; allocations also kept per CPU.
    let counters = per_cpu::<u64>(ebpf, "OP_COUNTS")?;
    let mut sums = [0u64; OP_COUNTERS as usize];
    let mut allocs_per_cpu = Vec::new();
    for (i, sum) in sums.iter_mut().enumerate() {
        let values = per_cpu_values(&counters, i as u32)?;
        *sum = values.iter().sum();
        if i == OpCounter::Allocs as usize {
            allocs_per_cpu = values;
        }
    }
    let sizes = per_cpu::<u64>(ebpf, "ALLOC_SIZE_HIST")?;
    let mut size_buckets = [0u64; SIZE_BUCKETS];
    for (i, b) in size_buckets.iter_mut().enumerate() {
        *b = per_cpu_values(&sizes, i as u32)?.iter().sum();
    }
    let lazy: Vec<LazyGauge> = per_cpu_values(&per_cpu::<LazyGauge>(ebpf, "LAZY_GAUGE")?, 0)?;
    let newest = lazy
        .iter()
        .max_by_key(|g| g.updated_jiffies)
        .copied()
        .unwrap_or_default();
    let ops = VmallocOps {
        allocs: sums[OpCounter::Allocs as usize],
        allocs_failed: sums[OpCounter::AllocsFailed as usize],
        frees: sums[OpCounter::Frees as usize],
        purges: sums[OpCounter::Purges as usize],
        purged_areas: sums[OpCounter::PurgedAreas as usize],
        alloc_pages: sums[OpCounter::AllocPages as usize],
        size_pages: Log2Histogram::from_buckets(&size_buckets),
        allocs_per_cpu,
        lazy_pages_last: newest.nr_lazy,
        lazy_pages_max: newest.nr_lazy_max,
        lazy_pages_peak: lazy.iter().map(|g| g.nr_lazy_peak).max().unwrap_or(0),
        sources: Some(probes.op_sources.clone()),
    };

    let task_map: HashMap<&MapData, u32, TaskWait> = HashMap::try_from(map(ebpf, "TASK_WAITS")?)?;
    let mut tasks = Vec::new();
    for entry in task_map.iter() {
        let (tid, t) = entry.context("reading TASK_WAITS")?;
        tasks.push(TaskWaitSummary {
            tid,
            tgid: t.tgid,
            comm: comm_text(&t.comm),
            count: t.totals.count,
            total_ns: t.totals.total_ns,
            max_ns: t.totals.max_ns,
        });
    }
    let cpu_contention = per_cpu_values(&per_cpu::<CpuContention>(ebpf, "CPU_CONTENTION")?, 0)?;
    let cpu_values: Vec<WaitTotals> = cpu_contention.iter().map(|c| c.totals).collect();
    let cpus = cpu_values
        .iter()
        .enumerate()
        .map(|(cpu, t)| CpuWait {
            cpu: cpu as u32,
            count: t.count,
            total_ns: t.total_ns,
            max_ns: t.max_ns,
        })
        .collect();

    // CPU_CONTENTION is read after the task table: a batch flushed in between is missed by
    // this read (the next read has it), never counted twice.
    add_task_batches(&mut tasks, cpu_contention.iter().map(|c| c.task));
    tasks.sort_by(|a, b| b.total_ns.cmp(&a.total_ns));

    // Per lock: all CPUs of the per-CPU map, their hot slots in CPU_CONTENTION, plus the shared
    // map for locks that found it full.
    let mut lock_waits: BTreeMap<(u64, u32), WaitHistogram> = BTreeMap::new();
    let per_cpu_map: PerCpuHashMap<&MapData, LockKey, WaitStats> =
        PerCpuHashMap::try_from(map(ebpf, "LOCK_WAITS_PER_CPU")?)?;
    for entry in per_cpu_map.iter() {
        let (k, cpus) = entry.context("reading LOCK_WAITS_PER_CPU")?;
        lock_waits
            .entry((k.lock_addr, k.flags))
            .or_default()
            .add(&sum_cpus(&cpus));
    }
    add_hot_lock_waits(&mut lock_waits, &cpu_contention);
    let shared_map: HashMap<&MapData, LockKey, WaitStats> =
        HashMap::try_from(map(ebpf, "LOCK_WAITS")?)?;
    let mut shared_keys = 0u64;
    for entry in shared_map.iter() {
        shared_keys += 1;
        let (k, v) = entry.context("reading LOCK_WAITS")?;
        lock_waits
            .entry((k.lock_addr, k.flags))
            .or_default()
            .add(&wait_histogram(&v));
    }
    let mut locks: Vec<LockWait> = lock_waits
        .into_iter()
        .map(|((lock_addr, flags), wait)| LockWait {
            lock_addr,
            flags,
            name: vmap_locks
                .name_at(lock_addr)
                .or_else(|| data_symbols.name_at(lock_addr))
                .map(str::to_string),
            wait,
        })
        .collect();
    locks.sort_by(|a, b| b.wait.total_ns.cmp(&a.wait.total_ns));

    let stack_map: HashMap<&MapData, StackKey, WaitTotals> =
        HashMap::try_from(map(ebpf, "STACK_WAITS")?)?;
    let stack_table: HashMap<&MapData, u64, StackFrames> = HashMap::try_from(map(ebpf, "STACKS")?)?;
    let mut stacks = Vec::new();
    for entry in stack_map.iter() {
        let (k, v) = entry.context("reading STACK_WAITS")?;
        let frames = resolver.frames(&stack_table, k.kernel_stack);
        let task = (meta.stack_keys.per_task || meta.stack_keys.user_stacks).then(|| StackTask {
            tgid: k.tgid,
            comm: comm_text(&k.comm),
        });
        let user_frames = resolver.user_frames(&stack_table, k.tgid, k.user_stack);
        stacks.push(StackWait {
            task,
            user_frames,
            lock_addr: k.lock_addr,
            flags: k.flags,
            attribution: attribution::attribute(&frames),
            frames,
            count: v.count,
            total_ns: v.total_ns,
            max_ns: v.max_ns,
        });
    }
    stacks.sort_by(|a, b| b.total_ns.cmp(&a.total_ns));

    let loss_arr = per_cpu::<u64>(ebpf, "LOSSES")?;
    let loss =
        |c: LossCounter| -> Result<u64> { Ok(per_cpu_values(&loss_arr, c as u32)?.iter().sum()) };
    let losses = Losses {
        inflight_full: loss(LossCounter::InflightFull)?,
        lock_map_full: loss(LossCounter::LockMapFull)?,
        stack_capture_failed: loss(LossCounter::StackCaptureFailed)?,
        stack_keys_full: loss(LossCounter::StackKeysFull)?,
        calls_inflight_full: loss(LossCounter::CallsInflightFull)?,
        tasks_evicted: sums[OpCounter::TasksSeen as usize].saturating_sub(tasks.len() as u64),
        lock_keys_evicted: sums[OpCounter::SharedLockKeysSeen as usize].saturating_sub(shared_keys),
        stack_keys_evicted: sums[OpCounter::StackKeysSeen as usize]
            .saturating_sub(stacks.len() as u64),
    };

    let latencies = functions::read(ebpf)?;
    let functions = probes
        .functions
        .iter()
        .filter(|f| f.attached)
        .map(|f| FunctionLatency {
            function: f.function.to_string(),
            symbol: f.symbol.clone(),
            latency: latencies
                .get(&f.slot)
                .map(|cpus| sum_cpus(cpus))
                .unwrap_or_default(),
            per_cpu: latencies
                .get(&f.slot)
                .map(|cpus| cpu_latencies(cpus))
                .unwrap_or_default(),
        })
        .collect();
    let timings = lock_timing::read(ebpf)?;
    let mut lock_timing: Vec<VmapLockTiming> = vmap_locks
        .locks
        .iter()
        .enumerate()
        .filter_map(|(id, l)| {
            timings.get(&(id as u32)).map(|t| VmapLockTiming {
                name: l.name.clone(),
                lock_addr: l.addr,
                wait: wait_histogram(&t.wait),
                hold: wait_histogram(&t.hold),
            })
        })
        .collect();
    lock_timing.sort_by(|a, b| b.wait.total_ns.cmp(&a.wait.total_ns));

    let stack_sampling = StackSampling {
        captured: sums[OpCounter::StacksCaptured as usize],
        skipped: sums[OpCounter::StacksSkipped as usize],
    };
    Ok(Profile {
        meta,
        ops,
        locks,
        stacks,
        cpus,
        tasks,
        losses,
        functions,
        lock_timing,
        stack_sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Frame {
        Frame {
            addr: 1,
            function: Some(name.into()),
            offset: 0,
        }
    }

    #[test]
    fn trims_only_leading_tracing_frames() {
        let frames = vec![
            f("bpf_prog_129c_tpbtf_contentio"),
            f("bpf_trace_run2"),
            f("__bpf_trace_contention_end"),
            f("queued_spin_lock_slowpath"),
            f("bpf_prog_x"),
        ];
        let trimmed = trim_tracing_frames(frames);
        assert_eq!(trimmed.len(), 2);
        assert_eq!(
            trimmed[0].function.as_deref(),
            Some("queued_spin_lock_slowpath")
        );
    }

    #[test]
    fn task_batches_add_to_their_tasks_entries_only() {
        let task = |tid, count, total_ns, max_ns| TaskWaitSummary {
            tid,
            tgid: tid,
            comm: "t".into(),
            count,
            total_ns,
            max_ns,
        };
        let batch = |tid, count, total_ns, max_ns| TaskBatch {
            tid,
            sampled: 0,
            totals: WaitTotals {
                count,
                total_ns,
                max_ns,
            },
        };
        let mut tasks = vec![task(10, 5, 500, 200), task(11, 1, 50, 50)];
        let batches = [
            batch(10, 2, 300, 250), // CPU 0
            batch(12, 7, 700, 100), // a task not in the table: dropped
            batch(10, 1, 10, 10),   // CPU 2: task 10 migrated
            batch(11, 0, 0, 0),     // an empty batch (tid is stale)
        ];
        add_task_batches(&mut tasks, batches.into_iter());
        assert_eq!(
            (tasks[0].count, tasks[0].total_ns, tasks[0].max_ns),
            (8, 810, 250)
        );
        assert_eq!(
            (tasks[1].count, tasks[1].total_ns, tasks[1].max_ns),
            (1, 50, 50)
        );
        assert_eq!(tasks.len(), 2);
    }

    #[test]
    fn hot_lock_slots_add_to_the_per_lock_waits() {
        let stats = |count, total_ns, max_ns, bucket: usize| {
            let mut w = WaitStats::ZERO;
            (w.count, w.total_ns, w.max_ns) = (count, total_ns, max_ns);
            w.hist[bucket] = count;
            w
        };
        let key = |lock_addr, flags| LockKey {
            lock_addr,
            flags,
            _pad: 0,
        };
        let mut cpu0 = CpuContention::default();
        cpu0.hot_keys[0] = key(0x1000, 2);
        cpu0.hot_waits[0] = stats(3, 300, 150, 7);
        cpu0.hot_keys[1] = key(0x2000, 1);
        cpu0.hot_waits[1] = stats(0, 0, 0, 0); // taken, no wait yet
        let mut cpu1 = CpuContention::default();
        cpu1.hot_keys[0] = key(0x1000, 2);
        cpu1.hot_waits[0] = stats(2, 50, 40, 5);
        // The same lock in the per-CPU hash map (its waits before it took the slots).
        let mut waits = BTreeMap::new();
        waits.insert((0x1000, 2), wait_histogram(&stats(64, 640, 30, 3)));
        add_hot_lock_waits(&mut waits, &[cpu0, cpu1]);
        assert_eq!(waits.len(), 1, "{waits:?}");
        let w = &waits[&(0x1000, 2)];
        assert_eq!((w.count, w.total_ns, w.max_ns), (69, 990, 150));
        assert_eq!(w.hist.total(), 69);
    }
}
