//! A tracing session: the attached probes plus what is needed to turn map contents into a
//! `Profile` (lock names, symbolizer, metadata). Shared by `record`, `top` and `daemon`.
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::collect::{self, StackResolver};
use crate::kernel::{btf::KernelBtf, design, kallsyms, vmap_locks};
use crate::probe::{self, ProbeOptions, Probes};
use crate::profile::{
    AllocatorDesign, HookStatus, LockWaitSources, Profile, RecordingMeta, WaitSource,
};

pub struct TraceSession {
    probes: Probes,
    data_symbols: kallsyms::DataSymbols,
    vmap_locks: vmap_locks::VmapLockTable,
    resolver: StackResolver,
    started: Instant,
    meta: RecordingMeta,
}

/// The allocator design in the model's two kinds, from the kernel's BTF alone: `struct
/// vmap_node` exists from 6.9 on. `kernel::design::detect` names it precisely.
pub fn detect_design(btf: Option<&KernelBtf>) -> AllocatorDesign {
    match btf {
        Some(b) if b.has_struct("vmap_node") => AllocatorDesign::NodeSharded,
        Some(b) if b.has_struct("vmap_area") => AllocatorDesign::Legacy,
        _ => AllocatorDesign::Unknown,
    }
}

pub fn kernel_release() -> String {
    read_trimmed("/proc/sys/kernel/osrelease")
}

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn online_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Notes a user must read to interpret the recording correctly.
fn limitation_notes(
    hooks: &[HookStatus],
    lock_waits: &LockWaitSources,
    vis: &kallsyms::KallsymsVisibility,
    cpus: u32,
    op_sources: Option<&crate::profile::OpSources>,
) -> Vec<String> {
    let mut notes = Vec::new();
    for h in hooks
        .iter()
        .filter(|h| h.mechanism.is_none() && !h.hook.starts_with("fn:"))
    {
        let why = h
            .rejected
            .last()
            .map(|r| r.reason.as_str())
            .unwrap_or("unknown");
        notes.push(format!("{} is not recorded: {why}", h.hook));
    }
    if let Some(sources) = op_sources.filter(|s| s.any_from_functions()) {
        notes.push(format!(
            "vmalloc operations without their tracepoint are counted by the vmap function probes: {}",
            sources.describe()
        ));
    }
    if !vis.addresses_visible {
        notes.push(kallsyms::hidden_addresses_hint());
    } else if !vis.kallsyms_all {
        notes.push(
            "kallsyms lists no data symbols (CONFIG_KALLSYMS_ALL unset): locks are named by the vmap function \
             that took them, not by variable name"
                .into(),
        );
    }
    if lock_waits.spin == WaitSource::Tracepoints {
        notes.push(format!(
            "lock:contention_* only report spinlock waits that reach the MCS queue (3+ contenders); two-way \
             spinlock waits are invisible to them{}",
            if cpus <= 2 { ", so on this 2-CPU machine vmap spinlock contention is almost invisible" } else { "" }
        ));
    }
    notes
}

impl TraceSession {
    /// Attach everything and start the clock.
    /// Attach with the default options (tracepoints and vmap function latency).
    pub fn start() -> Result<Self> {
        Self::start_with(ProbeOptions::default())
    }

    pub fn start_with(options: ProbeOptions) -> Result<Self> {
        crate::kernel::privileges::require_bpf()?;
        let (vis, data_symbols) = kallsyms::load()?;
        let btf = KernelBtf::load().ok();
        let design_detail = design::detect(btf.as_ref(), &data_symbols, vis.kallsyms_all);
        let design = design_detail.era.design();
        let vmap_locks = vmap_locks::discover(design, &data_symbols, btf.as_ref());
        let probes = probe::attach_all(options, &data_symbols, btf.as_ref(), &vmap_locks)?;
        let cpus = online_cpus();
        let mut notes = limitation_notes(
            &probes.hooks,
            &probes.lock_waits,
            &vis,
            cpus,
            Some(&probes.op_sources),
        );
        notes.extend(probes.other_locks.note());
        if options.lock_timing {
            notes.extend(
                vmap_locks
                    .problems
                    .iter()
                    .map(|p| format!("vmap lock naming: {p}")),
            );
        }
        let meta = RecordingMeta {
            stack_keys: options.stack_keying(),
            other_lock_period: probes.other_locks.period,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: kernel_release(),
            hostname: hostname(),
            design,
            design_detail: Some(design_detail),
            cpus,
            started_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            duration_ns: 0,
            lock_names_available: vis.kallsyms_all,
            stacks_symbolized: vis.addresses_visible,
            notes,
            hooks: probes.hooks.clone(),
            vmap_locks: vmap_locks.locks.clone(),
            lock_waits: probes.lock_waits.clone(),
        };
        Ok(TraceSession {
            probes,
            data_symbols,
            vmap_locks,
            resolver: StackResolver::default(),
            started: Instant::now(),
            meta,
        })
    }

    pub fn vmap_locks(&self) -> &vmap_locks::VmapLockTable {
        &self.vmap_locks
    }

    pub fn hooks(&self) -> &[HookStatus] {
        &self.probes.hooks
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Everything recorded since `start`.
    /// Symbolize the user stacks seen so far while their processes are alive (a no-op unless
    /// user stacks are captured).
    pub fn resolve_user_stacks(&mut self) -> Result<()> {
        if !self.meta.stack_keys.user_stacks {
            return Ok(());
        }
        self.resolver.resolve_user_stacks(&self.probes)
    }

    pub fn snapshot(&mut self) -> Result<Profile> {
        self.snapshot_after(self.started.elapsed())
    }

    /// The last snapshot: the programs are detached first, so the tables stop changing while
    /// they are read (a live walk of an LRU table can meet keys inserted during the walk, more
    /// than it holds at any one time). The recording ends when the detaching starts. A failed
    /// detach still reads the maps: what was recorded is never dropped for it.
    pub fn finish(mut self) -> Result<Profile> {
        let duration = self.started.elapsed();
        if let Err(e) = self.probes.detach_all() {
            log::warn!("detaching before the final read failed ({e:#}); reading the maps live");
        }
        self.snapshot_after(duration)
    }

    fn snapshot_after(&mut self, duration: std::time::Duration) -> Result<Profile> {
        let duration_ns = duration.as_nanos() as u64;
        let mut meta = self.meta.clone();
        meta.duration_ns = duration_ns;
        probe::slowpath::read_entries(&self.probes.ebpf, &mut meta.lock_waits)?;
        collect::read(
            &self.probes,
            meta,
            &self.data_symbols,
            &self.vmap_locks,
            &mut self.resolver,
        )
    }
}
