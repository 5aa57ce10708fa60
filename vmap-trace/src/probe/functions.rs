//! Latency of the vmap allocator's own functions (fentry/fexit, else kprobe/kretprobe), and
//! the vmalloc operations they count where the `vmalloc:*` tracepoints are missing.
use aya::{maps::PerCpuArray, Btf, Ebpf};
use vmap_trace_common::{ops_from_functions, OpProbes, FUNC_SLOTS};

use super::attach::{attach_best, MechanismChoice};
use crate::kernel::{btf::KernelBtf, kallsyms::DataSymbols};
use crate::profile::{HookStatus, OpSource, OpSources};

/// The functions timed, across designs: some exist only in one (purge_vmap_node and
/// decay_va_pool_node are node-sharded only), some are inlined in some builds.
pub const VMAP_FUNCTIONS: &[&str] = &[
    "alloc_vmap_area",
    "find_vmap_area",
    "find_vm_area",
    "find_unlink_vmap_area",
    "remove_vm_area",
    "free_vmap_area_noflush",
    "__purge_vmap_area_lazy",
    "purge_vmap_node",
    "decay_va_pool_node",
    "vm_map_ram",
];
const _: () = assert!(VMAP_FUNCTIONS.len() <= FUNC_SLOTS as usize);

/// The functions that count vmalloc operations, with their `ops_from_functions` bit.
pub const ALLOC_FUNCTION: &str = "alloc_vmap_area";
pub const FREE_FUNCTION: &str = "free_vmap_area_noflush";
pub const PURGE_FUNCTION: &str = "__purge_vmap_area_lazy";
/// The lazy backlog counter (pages), an `atomic_long_t`.
pub const LAZY_NR_SYMBOL: &str = "vmap_lazy_nr";

fn slot_of(function: &str) -> u32 {
    VMAP_FUNCTIONS
        .iter()
        .position(|f| *f == function)
        .map_or(FUNC_SLOTS, |i| i as u32)
}

/// Which vmalloc operations the function probes count, and what they need from this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpPlan {
    pub config: OpProbes,
    /// Why the lazy backlog cannot be read, when counting frees from functions.
    pub lazy_backlog_problem: Option<String>,
}

/// `lazy_max_pages()` of mm/vmalloc.c (unchanged 5.10 .. 7.x): fls(num_online_cpus()) *
/// (32 MiB / PAGE_SIZE).
pub fn lazy_max_pages(online_cpus: u32, page_shift: u32) -> u64 {
    let fls = u64::from(u32::BITS - online_cpus.leading_zeros());
    fls * ((32u64 << 20) >> page_shift)
}

/// Plan the function probes' op counting: `missing` holds the `ops_from_functions` bits whose
/// tracepoint this kernel lacks (or the user set aside); the rest are left to the tracepoints.
pub fn op_plan(
    missing: u32,
    symbols: &DataSymbols,
    kernel_btf: Option<&KernelBtf>,
    online_cpus: u32,
    page_shift: u32,
) -> OpPlan {
    let mut config = OpProbes::NONE;
    if missing == 0 {
        return OpPlan {
            config,
            lazy_backlog_problem: None,
        };
    }
    config.from_functions = missing;
    config.alloc_slot = slot_of(ALLOC_FUNCTION);
    config.free_slot = slot_of(FREE_FUNCTION);
    config.purge_slot = slot_of(PURGE_FUNCTION);
    // fexit only (kretprobes read the return register); without BTF there is no fentry.
    if let Some(n) = kernel_btf.and_then(|b| b.function_param_count(ALLOC_FUNCTION).ok()) {
        config.alloc_ret_index = n;
    }
    let mut problem = None;
    if missing & ops_from_functions::FREES != 0 {
        let offsets = kernel_btf.map(|b| {
            (
                b.member_offset("vmap_area", "va_start"),
                b.member_offset("vmap_area", "va_end"),
            )
        });
        match (symbols.addr_of(LAZY_NR_SYMBOL), offsets) {
            (Some(addr), Some((Ok(start), Ok(end)))) => {
                config.lazy_nr_addr = addr;
                config.va_start_offset = start;
                config.va_end_offset = end;
                config.lazy_max_pages = lazy_max_pages(online_cpus, page_shift);
            }
            (None, _) => {
                problem = Some(format!(
                    "{LAZY_NR_SYMBOL} is not in kallsyms (data symbols hidden: CONFIG_KALLSYMS_ALL unset?)"
                ))
            }
            (Some(_), None) => {
                problem = Some("no kernel BTF for struct vmap_area's layout".to_string())
            }
            (Some(_), Some((Err(e), _) | (_, Err(e)))) => problem = Some(e.to_string()),
        }
    }
    OpPlan {
        config,
        lazy_backlog_problem: problem,
    }
}

/// Where each op figure comes from, once everything is attached: `tracepoint_attached(bit)`
/// says whether the tracepoint for that operation is in use.
pub fn op_sources(
    plan: &OpPlan,
    probes: &[FunctionProbe],
    tracepoint_attached: impl Fn(u32) -> bool,
) -> OpSources {
    let attached = |function: &str| probes.iter().any(|p| p.function == function && p.attached);
    let missing_probe =
        |function: &str| format!("{function} could not be probed (see its fn:{function} hook)");
    let mut notes = Vec::new();
    let mut source = |bit: u32, needs: &[&str]| {
        if plan.config.from_functions & bit == 0 {
            return if tracepoint_attached(bit) {
                OpSource::Tracepoint
            } else {
                OpSource::Unavailable
            };
        }
        match needs.iter().find(|f| !attached(f)) {
            None => OpSource::FunctionProbe,
            Some(f) => {
                let note = missing_probe(f);
                if !notes.contains(&note) {
                    notes.push(note);
                }
                OpSource::Unavailable
            }
        }
    };
    let allocs = source(ops_from_functions::ALLOCS, &[ALLOC_FUNCTION]);
    let frees = source(ops_from_functions::FREES, &[FREE_FUNCTION]);
    let purges = source(ops_from_functions::PURGES, &[PURGE_FUNCTION]);
    // The purged areas are the frees tallied between purges: they need the frees counted
    // by the function probes too (the vmalloc tracepoints come and go together, so a kernel
    // with the free tracepoint and without the purge one is not expected).
    let purged_areas = if plan.config.from_functions & ops_from_functions::FREES == 0
        && plan.config.from_functions & ops_from_functions::PURGES != 0
    {
        notes.push("purged areas: frees are not counted by the function probes".into());
        OpSource::Unavailable
    } else {
        source(ops_from_functions::PURGES, &[PURGE_FUNCTION, FREE_FUNCTION])
    };
    let mut lazy_backlog = frees;
    if plan.config.from_functions & ops_from_functions::FREES != 0 {
        if let Some(problem) = &plan.lazy_backlog_problem {
            lazy_backlog = OpSource::Unavailable;
            notes.push(format!("lazy backlog: {problem}"));
        }
    }
    if purged_areas == OpSource::FunctionProbe {
        notes.push(
            "purged areas: the lazy frees between one purge's start and the next (areas as freed; \
             the 6.2+ tracepoint counts them after merging neighbours); areas freed before recording \
             began are not counted"
                .into(),
        );
    }
    OpSources {
        allocs,
        frees,
        lazy_backlog,
        purges,
        purged_areas,
        notes,
    }
}

/// A function assigned to a latency slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionProbe {
    pub function: &'static str,
    /// The kernel's symbol for it (may carry a clone suffix), when it has one.
    pub symbol: Option<String>,
    pub slot: u32,
    pub attached: bool,
}

pub fn hook_label(function: &str) -> String {
    format!("fn:{function}")
}

pub fn attach(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    kernel_btf: Option<&KernelBtf>,
    symbols: &DataSymbols,
    choice: MechanismChoice,
    wanted: impl Fn(&str) -> bool,
    links: &mut super::links::Links,
) -> (Vec<FunctionProbe>, Vec<HookStatus>) {
    let mut probes = Vec::new();
    let mut hooks = Vec::new();
    for (slot, &function) in VMAP_FUNCTIONS.iter().enumerate() {
        if !wanted(function) {
            continue;
        }
        let symbol = symbols.resolve_function(function);
        // fentry needs the function in BTF under its own name (clones are not in BTF).
        let in_btf = kernel_btf.is_some_and(|b| b.has_function(function));
        let names = [
            format!("fentry_fn{slot}"),
            format!("fexit_fn{slot}"),
            format!("kprobe_fn{slot}"),
            format!("kretprobe_fn{slot}"),
        ];
        let (mechanism, rejected) = attach_best(
            ebpf,
            btf,
            choice,
            in_btf.then_some(function),
            symbol.as_deref(),
            (Some(&names[0]), Some(&names[1])),
            (Some(&names[2]), Some(&names[3])),
            links,
        );
        probes.push(FunctionProbe {
            function,
            symbol,
            slot: slot as u32,
            attached: mechanism.is_some(),
        });
        hooks.push(HookStatus {
            hook: hook_label(function),
            mechanism,
            rejected,
        });
    }
    (probes, hooks)
}

/// Read the latency map: per slot, each possible CPU's kernel-side stats (index = CPU).
pub fn read(
    ebpf: &Ebpf,
) -> anyhow::Result<std::collections::HashMap<u32, Vec<vmap_trace_common::WaitStats>>> {
    let map = ebpf
        .map("FUNC_LATENCY")
        .ok_or_else(|| anyhow::anyhow!("map FUNC_LATENCY missing"))?;
    let map: PerCpuArray<_, vmap_trace_common::WaitStats> = PerCpuArray::try_from(map)?;
    let mut out = std::collections::HashMap::new();
    for slot in 0..FUNC_SLOTS {
        out.insert(slot, map.get(&slot, 0)?.iter().copied().collect());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lazy_max_pages_matches_the_kernel() {
        // mm/vmalloc.c's own figures: 4 CPUs 24576 pages, 8 -> 32768, 64 -> 57344, 128 -> 65536.
        assert_eq!(lazy_max_pages(4, 12), 24576);
        assert_eq!(lazy_max_pages(8, 12), 32768);
        assert_eq!(lazy_max_pages(64, 12), 57344);
        assert_eq!(lazy_max_pages(128, 12), 65536);
        assert_eq!(lazy_max_pages(1, 12), 8192);
    }

    #[test]
    fn op_slots_name_the_counting_functions() {
        assert_eq!(
            VMAP_FUNCTIONS[slot_of(ALLOC_FUNCTION) as usize],
            ALLOC_FUNCTION
        );
        assert_eq!(
            VMAP_FUNCTIONS[slot_of(FREE_FUNCTION) as usize],
            FREE_FUNCTION
        );
        assert_eq!(
            VMAP_FUNCTIONS[slot_of(PURGE_FUNCTION) as usize],
            PURGE_FUNCTION
        );
        assert_eq!(slot_of("no_such_function"), FUNC_SLOTS);
    }

    fn probe(function: &'static str, attached: bool) -> FunctionProbe {
        FunctionProbe {
            function,
            symbol: Some(function.into()),
            slot: slot_of(function),
            attached,
        }
    }

    #[test]
    fn nothing_missing_leaves_every_figure_to_the_tracepoints() {
        let plan = op_plan(0, &DataSymbols::default(), None, 4, 12);
        assert_eq!(plan.config, OpProbes::NONE);
        let sources = op_sources(&plan, &[probe(ALLOC_FUNCTION, true)], |_| true);
        assert_eq!(sources, OpSources::tracepoints());
    }

    #[test]
    fn missing_tracepoints_move_to_function_probes_and_say_what_is_unavailable() {
        let all =
            ops_from_functions::ALLOCS | ops_from_functions::FREES | ops_from_functions::PURGES;
        // No data symbols (this machine's kallsyms): no vmap_lazy_nr, so no backlog.
        let plan = op_plan(all, &DataSymbols::default(), None, 4, 12);
        assert_eq!(plan.config.from_functions, all);
        assert_eq!(plan.config.lazy_nr_addr, 0);
        assert!(plan
            .lazy_backlog_problem
            .as_deref()
            .is_some_and(|p| p.contains("vmap_lazy_nr is not in kallsyms")));
        let probes = [
            probe(ALLOC_FUNCTION, true),
            probe(FREE_FUNCTION, true),
            probe(PURGE_FUNCTION, false),
        ];
        let sources = op_sources(&plan, &probes, |_| false);
        assert_eq!(sources.allocs, OpSource::FunctionProbe);
        assert_eq!(sources.frees, OpSource::FunctionProbe);
        assert_eq!(sources.lazy_backlog, OpSource::Unavailable);
        assert_eq!(sources.purges, OpSource::Unavailable);
        assert_eq!(sources.purged_areas, OpSource::Unavailable);
        assert!(sources
            .notes
            .iter()
            .any(|n| n.contains("__purge_vmap_area_lazy could not be probed")));
        assert!(sources
            .notes
            .iter()
            .any(|n| n.starts_with("lazy backlog: vmap_lazy_nr")));
        assert_eq!(
            sources.describe(),
            "allocations, frees: function probe; lazy backlog, purges, purged areas: unavailable"
        );
    }

    #[test]
    fn purged_areas_need_the_frees_tallied_by_the_function_probes() {
        let plan = op_plan(
            ops_from_functions::PURGES,
            &DataSymbols::default(),
            None,
            4,
            12,
        );
        let probes = [probe(FREE_FUNCTION, true), probe(PURGE_FUNCTION, true)];
        let sources = op_sources(&plan, &probes, |bit| bit != ops_from_functions::PURGES);
        assert_eq!(sources.frees, OpSource::Tracepoint);
        assert_eq!(sources.purges, OpSource::FunctionProbe);
        assert_eq!(sources.purged_areas, OpSource::Unavailable);
        assert!(sources
            .notes
            .iter()
            .any(|n| n.contains("frees are not counted")));
    }
}
