//! Latency of the vmap allocator's own functions (fentry/fexit, else kprobe/kretprobe).
use aya::{maps::PerCpuArray, Btf, Ebpf};
use vmap_trace_common::FUNC_SLOTS;

use super::attach::{attach_best, MechanismChoice};
use crate::kernel::{btf::KernelBtf, kallsyms::DataSymbols};
use crate::profile::HookStatus;

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
    links: &mut super::links::Links,
) -> (Vec<FunctionProbe>, Vec<HookStatus>) {
    let mut probes = Vec::new();
    let mut hooks = Vec::new();
    for (slot, &function) in VMAP_FUNCTIONS.iter().enumerate() {
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
