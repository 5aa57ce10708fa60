//! Loading the embedded eBPF object and attaching every hook with the best mechanism the
//! running kernel accepts, recording why better ones were refused.
pub mod attach;
pub mod functions;
pub mod links;
pub mod lock_timing;
pub mod other_locks;
pub mod slowpath;

use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use vmap_trace_common::{EventArgs, ProbeConfig};

use crate::kernel::{btf::KernelBtf, kallsyms::DataSymbols, tracefs, vmap_locks::VmapLockTable};
use crate::profile::{HookStatus, LockWaitSources, Mechanism, OpSources, StackKeying};
use attach::{load_refusal, reason, MechanismChoice, Refusal};
pub use functions::FunctionProbe;
pub use other_locks::OtherLockSampling;

/// The committed object built by `cargo xtask build-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!("../../ebpf/vmap-trace.bpf.o");

/// One kernel event vmap-trace listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    AllocVmapArea,
    FreeVmapAreaNoflush,
    PurgeVmapAreaLazy,
    ContentionBegin,
    ContentionEnd,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::AllocVmapArea,
        Hook::FreeVmapAreaNoflush,
        Hook::PurgeVmapAreaLazy,
        Hook::ContentionBegin,
        Hook::ContentionEnd,
    ];

    /// `ALL` in the order they are attached: contention_end before contention_begin, so every
    /// begin the programs record has its end handler attached. The other way round, a spin wait
    /// that began between the two attaches held its CPU's slot until the slot went stale (1 s),
    /// and that CPU's spin waits went uncounted meanwhile (seen: 13% of a 3 s run missing).
    pub const ATTACH_ORDER: [Hook; 5] = [
        Hook::AllocVmapArea,
        Hook::FreeVmapAreaNoflush,
        Hook::PurgeVmapAreaLazy,
        Hook::ContentionEnd,
        Hook::ContentionBegin,
    ];

    /// (tracepoint category, event name)
    pub fn event(self) -> (&'static str, &'static str) {
        match self {
            Hook::AllocVmapArea => ("vmalloc", "alloc_vmap_area"),
            Hook::FreeVmapAreaNoflush => ("vmalloc", "free_vmap_area_noflush"),
            Hook::PurgeVmapAreaLazy => ("vmalloc", "purge_vmap_area_lazy"),
            Hook::ContentionBegin => ("lock", "contention_begin"),
            Hook::ContentionEnd => ("lock", "contention_end"),
        }
    }

    pub fn label(self) -> String {
        let (c, e) = self.event();
        format!("{c}:{e}")
    }

    /// Program names in the object, per mechanism, best first.
    fn programs(self) -> [(Mechanism, &'static str); 2] {
        match self {
            Hook::AllocVmapArea => [
                (Mechanism::TpBtf, "tpbtf_alloc_vmap_area"),
                (Mechanism::Tracepoint, "tp_alloc_vmap_area"),
            ],
            Hook::FreeVmapAreaNoflush => [
                (Mechanism::TpBtf, "tpbtf_free_vmap_area_noflush"),
                (Mechanism::Tracepoint, "tp_free_vmap_area_noflush"),
            ],
            Hook::PurgeVmapAreaLazy => [
                (Mechanism::TpBtf, "tpbtf_purge_vmap_area_lazy"),
                (Mechanism::Tracepoint, "tp_purge_vmap_area_lazy"),
            ],
            Hook::ContentionBegin => [
                (Mechanism::TpBtf, "tpbtf_contention_begin"),
                (Mechanism::Tracepoint, "tp_contention_begin"),
            ],
            Hook::ContentionEnd => [
                (Mechanism::TpBtf, "tpbtf_contention_end"),
                (Mechanism::Tracepoint, "tp_contention_end"),
            ],
        }
    }

    /// The vmalloc operation this hook counts (`ops_from_functions` bit), if any.
    pub fn op_bit(self) -> Option<u32> {
        use vmap_trace_common::ops_from_functions::{ALLOCS, FREES, PURGES};
        match self {
            Hook::AllocVmapArea => Some(ALLOCS),
            Hook::FreeVmapAreaNoflush => Some(FREES),
            Hook::PurgeVmapAreaLazy => Some(PURGES),
            Hook::ContentionBegin | Hook::ContentionEnd => None,
        }
    }

    /// What a user loses when this hook is unavailable.
    pub fn cost_if_missing(self) -> &'static str {
        match self {
            Hook::AllocVmapArea => {
                "no vmap allocation counts or sizes (vmalloc tracepoints exist since 6.2)"
            }
            Hook::FreeVmapAreaNoflush => {
                "no free counts or lazy backlog (vmalloc tracepoints exist since 6.2)"
            }
            Hook::PurgeVmapAreaLazy => "no purge counts (vmalloc tracepoints exist since 6.2)",
            Hook::ContentionBegin | Hook::ContentionEnd => {
                "no lock contention timing (lock tracepoints exist since 5.19)"
            }
        }
    }
}

/// Field offsets and argument positions for this kernel. An event that does not exist keeps
/// zeros: its hook is reported unavailable and never attached.
pub fn probe_config(
    tracefs_root: &Path,
    btf: Option<&KernelBtf>,
    options: &ProbeOptions,
    other_locks: &OtherLockSampling,
    ops: vmap_trace_common::OpProbes,
) -> ProbeConfig {
    let off = |cat: &str, ev: &str, field: &str| {
        tracefs::field(tracefs_root, cat, ev, field)
            .map(|f| f.offset)
            .unwrap_or(0)
    };
    let arg = |ev: &str, name: &str| {
        btf.and_then(|b| b.tracepoint_arg_index(ev, name).ok())
            .unwrap_or(0)
    };
    ProbeConfig {
        tp: EventArgs {
            alloc_addr: off("vmalloc", "alloc_vmap_area", "addr"),
            alloc_size: off("vmalloc", "alloc_vmap_area", "size"),
            alloc_failed: off("vmalloc", "alloc_vmap_area", "failed"),
            free_nr_lazy: off("vmalloc", "free_vmap_area_noflush", "nr_lazy"),
            free_nr_lazy_max: off("vmalloc", "free_vmap_area_noflush", "nr_lazy_max"),
            purge_npurged: off("vmalloc", "purge_vmap_area_lazy", "npurged"),
            contention_lock: off("lock", "contention_begin", "lock_addr"),
            contention_flags: off("lock", "contention_begin", "flags"),
        },
        btf: EventArgs {
            alloc_addr: arg("alloc_vmap_area", "addr"),
            alloc_size: arg("alloc_vmap_area", "size"),
            alloc_failed: arg("alloc_vmap_area", "failed"),
            free_nr_lazy: arg("free_vmap_area_noflush", "nr_lazy"),
            free_nr_lazy_max: arg("free_vmap_area_noflush", "nr_lazy_max"),
            purge_npurged: arg("purge_vmap_area_lazy", "npurged"),
            contention_lock: arg("contention_begin", "lock"),
            contention_flags: arg("contention_begin", "flags"),
        },
        page_shift: page_shift(),
        stack_options: options.stack_options(),
        stack_depth: options.stack_keying().depth,
        stack_samples: options.stack_keying().samples_per_cpu_s,
        other_lock_period: other_locks.period,
        empty_programs: u32::from(options.empty_programs),
        vmap_lock_addrs: other_locks.static_locks,
        vmap_nodes_start: other_locks.nodes.start,
        vmap_nodes_end: other_locks.nodes.end,
        ops,
    }
}

fn page_shift() -> u32 {
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    page_size.trailing_zeros()
}

/// CPUs online now, as `lazy_max_pages()` counts them (not this process's affinity).
fn online_cpus() -> u32 {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u32
    } else {
        1
    }
}

/// What to attach beyond the tracepoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeOptions {
    /// Time the vmap locks around every lock call (opt-in: costs on every lock in the system).
    pub lock_timing: bool,
    /// Skip fentry/fexit, use kprobes (to compare, or where fentry misbehaves).
    pub prefer_kprobe: bool,
    /// Do not time the vmap functions.
    pub no_function_latency: bool,
    /// Use classic tracepoints even where tp_btf works (to compare, or to test that path).
    pub classic_tracepoints: bool,
    /// Key contended stacks by process too.
    pub per_task: bool,
    /// Capture user stacks too (implies per_task).
    pub user_stacks: bool,
    /// Kernel frames per contended stack; None: `DEFAULT_STACK_DEPTH`.
    pub stack_depth: Option<u32>,
    /// Stack captures per CPU and second (0: all); None: `DEFAULT_STACK_SAMPLES`.
    pub stack_samples: Option<u32>,
    /// Entries of the per-(lock, stack) table; None: `MAX_STACK_KEYS`.
    pub stack_keys: Option<u32>,
    /// Time one contention in N of locks other than the vmap locks (0 or 1: all); None:
    /// `DEFAULT_OTHER_LOCK_PERIOD`.
    pub other_lock_period: Option<u32>,
    /// Sample other locks even where the vmap locks cannot all be located.
    pub sample_unlocated: bool,
    /// Count vmalloc operations from the vmap function probes even where the `vmalloc:*`
    /// tracepoints exist (which are then not attached: nothing is counted twice).
    pub ops_from_functions: bool,
    /// Programs that return at once and record nothing: the hooks' dispatch cost alone, the
    /// floor of `cargo xtask bench toggle`. Never set by the commands.
    pub empty_programs: bool,
    /// Where spinlock waits are timed (`--spin-waits`).
    pub spin_waits: slowpath::SpinWaitChoice,
}

impl ProbeOptions {
    /// What contended stacks are keyed by and how they are captured, defaults resolved: the
    /// loader's configuration and the recording's metadata both come from here. User stacks
    /// imply per-task keys (user addresses mean something only within their process).
    pub fn stack_keying(&self) -> StackKeying {
        StackKeying {
            per_task: self.per_task || self.user_stacks,
            user_stacks: self.user_stacks,
            depth: self
                .stack_depth
                .unwrap_or(vmap_trace_common::DEFAULT_STACK_DEPTH),
            samples_per_cpu_s: self
                .stack_samples
                .unwrap_or(vmap_trace_common::DEFAULT_STACK_SAMPLES),
            table_entries: self.stack_keys.unwrap_or(vmap_trace_common::MAX_STACK_KEYS),
        }
    }

    /// `ProbeConfig::stack_options` bits for these options.
    pub fn stack_options(&self) -> u32 {
        use vmap_trace_common::stack_options::{PER_TASK, USER_STACKS};
        let keying = self.stack_keying();
        (if keying.per_task { PER_TASK } else { 0 })
            | (if keying.user_stacks { USER_STACKS } else { 0 })
    }
}

/// The loaded object and what each hook ended up using.
pub struct Probes {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    pub functions: Vec<FunctionProbe>,
    /// Which contentions are timed in full.
    pub other_locks: OtherLockSampling,
    /// Every link made, to detach and attach again ([`Probes::detach_all`]).
    pub links: links::Links,
    /// Where lock waits are timed (entry counts left at zero: `slowpath::read_entries`).
    pub lock_waits: LockWaitSources,
    /// Where each vmalloc operation figure comes from.
    pub op_sources: OpSources,
}

impl Probes {
    /// Stop every program (maps and loaded programs stay): tracing costs nothing until
    /// [`Probes::attach_again`].
    pub fn detach_all(&mut self) -> Result<()> {
        self.links.detach_all(&mut self.ebpf)
    }

    /// Attach again what [`Probes::detach_all`] detached, with the same mechanisms. For
    /// measuring what tracing costs (`cargo xtask bench toggle`), not for reading the maps
    /// afterwards: a wait in flight when the programs were detached keeps its start in the
    /// in-flight tables and may be paired with a later end of the same task or CPU.
    pub fn attach_again(&mut self) -> Result<()> {
        self.links.attach_again(&mut self.ebpf)
    }
}

/// Load the object and attach every hook. Fails only if nothing at all could be loaded; a
/// hook that cannot be attached is reported in `hooks` with the kernel's reasons.
pub fn attach_all(
    options: ProbeOptions,
    symbols: &DataSymbols,
    kernel_btf: Option<&KernelBtf>,
    vmap_locks: &VmapLockTable,
) -> Result<Probes> {
    crate::kernel::privileges::require_bpf()?;
    raise_memlock_limit();
    let tracefs_root = tracefs::ensure_mounted()?;
    let other_locks = OtherLockSampling::resolve(
        options
            .other_lock_period
            .unwrap_or(vmap_trace_common::DEFAULT_OTHER_LOCK_PERIOD),
        vmap_locks,
        options.sample_unlocated,
    );
    // vmalloc operations whose tracepoint is missing (before 6.2) are counted by the vmap
    // function probes instead; decided before loading, as the programs read it from .rodata.
    let missing_ops = Hook::ALL
        .iter()
        .filter_map(|&hook| {
            let (category, event) = hook.event();
            let counted_by_functions = options.ops_from_functions
                || !tracefs::event_exists(&tracefs_root, category, event);
            hook.op_bit().filter(|_| counted_by_functions)
        })
        .fold(0, |bits, bit| bits | bit);
    let op_plan = functions::op_plan(
        missing_ops,
        symbols,
        kernel_btf,
        online_cpus(),
        page_shift(),
    );
    let config = probe_config(
        &tracefs_root,
        kernel_btf,
        &options,
        &other_locks,
        op_plan.config,
    );
    let aya_btf = Btf::from_sys_fs().ok();
    // Possible CPUs, as the kernel allocates per-CPU map values for each of them.
    // Unreadable (it never is on a real kernel): assume a large machine, so the per-CPU table
    // stays within its memory budget; the shared table takes the locks it has no room for.
    let possible_cpus = aya::util::nr_cpus().map(|n| n as u32).unwrap_or(1024);
    let mut ebpf = EbpfLoader::new()
        .btf(aya_btf.as_ref())
        .override_global("CONFIG", &config, true)
        .map_max_entries("STACK_WAITS", options.stack_keying().table_entries)
        .map_max_entries(
            "LOCK_WAITS_PER_CPU",
            vmap_trace_common::per_cpu_lock_slots(possible_cpus),
        )
        .load(EBPF_OBJECT)
        .context("the kernel refused vmap-trace's eBPF object (maps or BTF)")?;

    let mut hooks = Vec::new();
    let mut links = links::Links::default();
    for hook in Hook::ATTACH_ORDER {
        let (category, event) = hook.event();
        let mut status = HookStatus {
            hook: hook.label(),
            mechanism: None,
            rejected: Vec::new(),
        };
        let event_exists = tracefs::event_exists(&tracefs_root, category, event);
        for (mechanism, prog_name) in hook.programs() {
            let result = if options.ops_from_functions && hook.op_bit().is_some() {
                Err(Refusal::from(
                    "skipped (--ops-from-functions: the vmap function probes count it)",
                ))
            } else if mechanism == Mechanism::TpBtf && options.classic_tracepoints {
                Err(Refusal::from("skipped (--classic-tracepoints)"))
            } else if mechanism == Mechanism::Tracepoint && !event_exists {
                Err(Refusal::from(format!(
                    "tracepoint {category}:{event} does not exist in this kernel"
                )))
            } else {
                try_attach(
                    &mut ebpf,
                    mechanism,
                    prog_name,
                    category,
                    event,
                    aya_btf.as_ref(),
                    &mut links,
                )
            };
            match result {
                Ok(()) => {
                    status.mechanism = Some(mechanism);
                    break;
                }
                Err(refusal) => status.rejected.push(refusal.into_rejection(mechanism)),
            }
        }
        log::info!("{}: {:?}", status.hook, status.mechanism);
        hooks.push((hook, status));
    }
    let tracepoint_attached = |bit: u32| {
        hooks
            .iter()
            .any(|(hook, status)| hook.op_bit() == Some(bit) && status.mechanism.is_some())
    };
    let tracepoint_bits = [
        vmap_trace_common::ops_from_functions::ALLOCS,
        vmap_trace_common::ops_from_functions::FREES,
        vmap_trace_common::ops_from_functions::PURGES,
    ]
    .into_iter()
    .filter(|&bit| tracepoint_attached(bit))
    .fold(0u32, |bits, bit| bits | bit);
    hooks.sort_by_key(|(hook, _)| Hook::ALL.iter().position(|h| h == hook));
    let mut hooks: Vec<HookStatus> = hooks.into_iter().map(|(_, status)| status).collect();

    // With --lock-timing, no BPF trampolines: attaching fentry/fexit replaces trampoline
    // images, and the old ones are vunmap'd later from a workqueue, through the vmap purge
    // path, whose vmap lock releases the lock-timing kprobes then fire on. Debian's 6.1
    // oopsed in exactly that path (kprobe_lock_release -> htab update -> call through NULL,
    // under __bpf_tramp_image_put_deferred -> __vunmap -> __purge_vmap_area_lazy).
    let skip_fentry = if options.prefer_kprobe {
        Some("--prefer-kprobe")
    } else if options.lock_timing {
        Some(
            "--lock-timing uses kprobes: BPF trampoline updates vunmap under the probed vmap locks",
        )
    } else {
        None
    };
    let choice = MechanismChoice { skip_fentry };
    // With --no-function-latency, the functions that count operations are still probed.
    let counts_ops = |function: &str| {
        use vmap_trace_common::ops_from_functions::{ALLOCS, FREES, PURGES};
        let bits = op_plan.config.from_functions;
        (function == functions::ALLOC_FUNCTION && bits & ALLOCS != 0)
            || (function == functions::FREE_FUNCTION && bits & (FREES | PURGES) != 0)
            || (function == functions::PURGE_FUNCTION && bits & PURGES != 0)
    };
    let (functions, fn_hooks) = functions::attach(
        &mut ebpf,
        aya_btf.as_ref(),
        kernel_btf,
        symbols,
        choice,
        |function| !options.no_function_latency || counts_ops(function),
        &mut links,
    );
    hooks.extend(fn_hooks);
    let op_sources = functions::op_sources(&op_plan, &functions, |bit| tracepoint_bits & bit != 0);
    let contention_tracepoints = [Hook::ContentionBegin, Hook::ContentionEnd]
        .iter()
        .all(|h| {
            hooks
                .iter()
                .any(|s| s.hook == h.label() && s.mechanism.is_some())
        });
    let slow = slowpath::attach(
        &mut ebpf,
        aya_btf.as_ref(),
        kernel_btf,
        symbols,
        options.spin_waits,
        choice,
        contention_tracepoints,
        &mut links,
    );
    hooks.extend(slow.hooks);
    if options.lock_timing {
        hooks.extend(lock_timing::attach(
            &mut ebpf, symbols, vmap_locks, &mut links,
        ));
    }
    Ok(Probes {
        ebpf,
        hooks,
        functions,
        other_locks,
        links,
        lock_waits: slow.sources,
        op_sources,
    })
}

/// Load and attach one program; the error is the kernel's reason, on one line, with the
/// verifier's log when the verifier refused it.
fn try_attach(
    ebpf: &mut Ebpf,
    mechanism: Mechanism,
    prog_name: &str,
    category: &str,
    event: &str,
    btf: Option<&Btf>,
    links: &mut links::Links,
) -> Result<(), Refusal> {
    match mechanism {
        Mechanism::TpBtf => {
            let btf = btf.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux)")?;
            let prog: &mut BtfTracePoint = attach::program(ebpf, prog_name)?;
            prog.load(event, btf).map_err(|e| load_refusal(&e))?;
            let link = prog.attach().map_err(|e| reason(&e))?;
            links.add(prog_name, links::Target::TpBtf, links::LinkId::TpBtf(link));
        }
        Mechanism::Tracepoint => {
            let prog: &mut TracePoint = attach::program(ebpf, prog_name)?;
            prog.load().map_err(|e| load_refusal(&e))?;
            let link = prog.attach(category, event).map_err(|e| reason(&e))?;
            let target = links::Target::Tracepoint {
                category: category.to_string(),
                event: event.to_string(),
            };
            links.add(prog_name, target, links::LinkId::Tracepoint(link));
        }
        other => return Err(format!("{} is not compiled for this hook", other.label()).into()),
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; failure only matters on old kernels and then
    // surfaces as a map creation error.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

#[cfg(test)]
mod tests {
    use super::Hook;

    #[test]
    fn contention_end_is_attached_before_contention_begin() {
        let pos = |h| Hook::ATTACH_ORDER.iter().position(|x| *x == h).unwrap();
        assert!(pos(Hook::ContentionEnd) < pos(Hook::ContentionBegin));
        assert!(
            Hook::ALL.iter().all(|h| Hook::ATTACH_ORDER.contains(h)),
            "every hook is attached"
        );
    }
}
