//! /proc/kallsyms: whether addresses are visible, and the symbols that name locks.
//!
//! Stack frames are symbolized with blazesym (see `symbolize`); this module only answers what
//! blazesym does not: is kallsyms usable at all (kptr_restrict hides addresses as zeros), are
//! data symbols listed (CONFIG_KALLSYMS_ALL), and which symbol starts exactly at a lock address.
//!
//! Names are looked up whatever their type letter: the letter is the ELF section's flags as nm
//! saw them, not what the symbol is. 7.x links code into `.data` (`KEXEC_RELOCATE_KERNEL`), so
//! every `.data` variable there (`vmap_nodes`, `nr_vmap_nodes`, `vmap_lazy_nr`) is typed `t`.
use std::collections::HashMap;

use anyhow::{Context, Result};

pub const KALLSYMS: &str = "/proc/kallsyms";

/// Data symbols needed at most in one kernel without KALLSYMS_ALL; more means it is set.
const KALLSYMS_ALL_THRESHOLD: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KallsymsVisibility {
    /// False when every address reads as zero (kptr_restrict, or not root).
    pub addresses_visible: bool,
    /// Number of data/bss symbols listed.
    pub data_symbols: usize,
    /// CONFIG_KALLSYMS_ALL, inferred from the number of data symbols.
    pub kallsyms_all: bool,
}

/// Kernel symbols by address and by name, of any type: what a lock address is called, where a
/// variable lives. Also the names of text symbols, to resolve probe targets per kernel.
#[derive(Debug, Default)]
pub struct DataSymbols {
    by_addr: HashMap<u64, Named>,
    by_name: HashMap<String, Named>,
    functions: std::collections::HashSet<String>,
}

/// One symbol as kallsyms lists it.
#[derive(Debug, Clone)]
struct Named {
    name: String,
    addr: u64,
    /// Typed data, bss or read-only data (`d`, `b`, `r`, either case). A name listed twice
    /// (statics of two files) prefers such a symbol; other types are accepted when there is
    /// none (7.x's `.data` variables are typed `t`).
    data_typed: bool,
}

impl DataSymbols {
    /// The symbol starting at `addr`, of any type (a data-typed one where several start there).
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        self.by_addr.get(&addr).map(|n| n.name.as_str())
    }
    /// Where symbol `name` is, whatever its type letter.
    pub fn addr_of(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).map(|n| n.addr)
    }
    /// The first name (in sort order) starting with `prefix`: a function-local static is
    /// listed as `name.N`, N chosen by the compiler.
    pub fn first_with_prefix(&self, prefix: &str) -> Option<String> {
        self.by_name
            .keys()
            .filter(|n| n.starts_with(prefix))
            .min()
            .cloned()
    }
    /// Whether kallsyms lists a symbol `name` (function or variable, any type).
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
    /// The kernel's name for function `name`: itself, its `_noprof` variant (6.10+ memory
    /// profiling renames), or a compiler clone (`name.isra.0`, `name.constprop.0`,
    /// `name.part.0`; never `.cold`, which is not an entry point).
    pub fn resolve_function(&self, name: &str) -> Option<String> {
        if self.functions.contains(name) {
            return Some(name.to_string());
        }
        let noprof = format!("{name}_noprof");
        if self.functions.contains(&noprof) {
            return Some(noprof);
        }
        let prefix = format!("{name}.");
        self.functions
            .iter()
            .filter(|f| f.starts_with(&prefix) && !f.ends_with(".cold"))
            .min_by_key(|f| (f.len(), (*f).clone()))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.by_addr.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// Parse kallsyms text (`address type name [module]` per line).
pub fn parse(text: &str) -> (KallsymsVisibility, DataSymbols) {
    let mut vis = KallsymsVisibility::default();
    let mut data = DataSymbols::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if addr != 0 {
            vis.addresses_visible = true;
        }
        // A fourth field is a module's name: module symbols are never vmap locks or targets.
        let in_vmlinux = f.next().is_none();
        if matches!(kind, "t" | "T") && in_vmlinux {
            data.functions.insert(name.to_string());
        }
        let data_typed = matches!(kind, "d" | "D" | "b" | "B" | "r" | "R");
        if matches!(kind, "d" | "D" | "b" | "B") {
            vis.data_symbols += 1;
        }
        if addr != 0 && in_vmlinux {
            let named = Named {
                name: name.to_string(),
                addr,
                data_typed,
            };
            keep_preferred(&mut data.by_addr, addr, &named);
            keep_preferred(&mut data.by_name, name.to_string(), &named);
        }
    }
    vis.kallsyms_all = vis.data_symbols >= KALLSYMS_ALL_THRESHOLD;
    (vis, data)
}

/// The first symbol seen for `key`, unless a later one is data-typed and it is not.
fn keep_preferred<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Named>, key: K, named: &Named) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, named.clone());
        }
        Some(kept) if named.data_typed && !kept.data_typed => *kept = named.clone(),
        Some(_) => {}
    }
}

pub fn load() -> Result<(KallsymsVisibility, DataSymbols)> {
    let text =
        std::fs::read_to_string(KALLSYMS).with_context(|| format!("cannot read {KALLSYMS}"))?;
    Ok(parse(&text))
}

pub fn kptr_restrict() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/kptr_restrict")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What to tell a user whose kallsyms shows only zeros.
pub fn hidden_addresses_hint() -> String {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    hidden_addresses_advice(
        kptr_restrict(),
        paranoid,
        crate::kernel::privileges::has_cap_syslog(),
    )
}

/// The kernel's rule (kallsyms_show_value): kptr_restrict 2 hides addresses from everyone;
/// 1 shows them to CAP_SYSLOG; 0 shows them to CAP_SYSLOG, or to anyone when
/// perf_event_paranoid is 1 or lower.
fn hidden_addresses_advice(kptr: Option<u32>, paranoid: Option<i32>, cap_syslog: bool) -> String {
    let lead = "/proc/kallsyms shows zero addresses: kernel stacks cannot be symbolized";
    match kptr {
        Some(v) if v >= 2 => format!(
            "{lead}. kptr_restrict is {v}, which hides them even from root:              `sysctl kernel.kptr_restrict=1` shows them to processes with CAP_SYSLOG"
        ),
        Some(v) if !cap_syslog => {
            let or_paranoid = if v == 0 {
                format!(
                    ", or lower kernel.perf_event_paranoid to 1 (it is {})",
                    paranoid.map_or("unknown".into(), |p| p.to_string())
                )
            } else {
                String::new()
            };
            format!(
                "{lead}. kptr_restrict is {v} and this process lacks CAP_SYSLOG: run as root \
                 or grant CAP_SYSLOG{or_paranoid}"
            )
        }
        Some(v) => format!(
            "{lead}, although kptr_restrict is {v} and this process has CAP_SYSLOG \
             (a security module may be hiding them)"
        ),
        None => format!("{lead}; /proc/sys/kernel/kptr_restrict cannot be read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_address_advice_follows_the_kernel_rule() {
        let strict = hidden_addresses_advice(Some(2), Some(2), true);
        assert!(strict.contains("kptr_restrict=1"), "{strict}");
        // kptr_restrict 0 without CAP_SYSLOG: the missing capability, not "set it to 0".
        let no_cap = hidden_addresses_advice(Some(0), Some(2), false);
        assert!(no_cap.contains("lacks CAP_SYSLOG"), "{no_cap}");
        assert!(
            no_cap.contains("perf_event_paranoid to 1 (it is 2)"),
            "{no_cap}"
        );
        assert!(!no_cap.contains("kptr_restrict=0"), "{no_cap}");
        let one = hidden_addresses_advice(Some(1), None, false);
        assert!(
            one.contains("lacks CAP_SYSLOG") && !one.contains("paranoid"),
            "{one}"
        );
        let odd = hidden_addresses_advice(Some(1), None, true);
        assert!(odd.contains("security module"), "{odd}");
    }

    #[test]
    fn hidden_addresses_detected() {
        let (vis, data) = parse("0000000000000000 T _text\n0000000000000000 d vmap_area_lock\n");
        assert!(!vis.addresses_visible);
        assert_eq!(vis.data_symbols, 1);
        assert!(data.is_empty(), "zero addresses must not name locks");
    }

    #[test]
    fn resolves_renamed_and_cloned_functions() {
        let text = "ffffffff81000000 t alloc_vmap_area\n\
                    ffffffff81000100 t alloc_vmap_area.cold\n\
                    ffffffff81000200 t purge_vmap_node.isra.0\n\
                    ffffffff81000300 t vfree.part.0\n\
                    ffffffff81000380 T vfree\n\
                    ffffffff81000400 T __vmalloc_node_range_noprof\n";
        let (_, syms) = parse(text);
        assert_eq!(
            syms.resolve_function("alloc_vmap_area").as_deref(),
            Some("alloc_vmap_area")
        );
        assert_eq!(
            syms.resolve_function("purge_vmap_node").as_deref(),
            Some("purge_vmap_node.isra.0")
        );
        assert_eq!(syms.resolve_function("vfree").as_deref(), Some("vfree"));
        assert_eq!(
            syms.resolve_function("__vmalloc_node_range").as_deref(),
            Some("__vmalloc_node_range_noprof")
        );
        assert_eq!(syms.resolve_function("decay_va_pool_node"), None);
    }

    #[test]
    fn data_symbols_name_locks() {
        let text = "ffffffff81000000 T _text\n\
                    ffffffff82a1b2c0 d vmap_area_lock\n\
                    ffffffff82a1b300 b free_vmap_area_lock\n\
                    ffffffffc0001000 d some_mod_var\t[mod]\n";
        let (vis, data) = parse(text);
        assert!(vis.addresses_visible);
        assert!(!vis.kallsyms_all);
        assert_eq!(data.name_at(0xffffffff82a1b2c0), Some("vmap_area_lock"));
        assert_eq!(
            data.addr_of("free_vmap_area_lock"),
            Some(0xffffffff82a1b300)
        );
        assert_eq!(
            data.name_at(0xffffffffc0001000),
            None,
            "module symbols are not kernel locks"
        );
    }

    /// Debian sid's 7.2.13 as kallsyms lists it: `.data` variables typed `t`, `.bss` ones `b`,
    /// beside real functions. The lines of `vmap_lazy_nr`, `vmap_nodes`, `_sdata` and `_edata`
    /// are copied from its System.map (docs/lab/kernel-matrix-facts-2026-12-03.md §4); the
    /// others have the types that file gives them at addresses made up in the same sections.
    const KALLSYMS_7_2: &str = "ffffffff81234560 t alloc_vmap_area\n\
                                ffffffff83200000 T _sdata\n\
                                ffffffff83209700 t vmap_lazy_nr\n\
                                ffffffff833ca8e0 t vmap_nodes\n\
                                ffffffff833ca8e8 t nr_vmap_nodes\n\
                                ffffffff833ca8f0 t vmap_zone_size\n\
                                ffffffff8355b900 T _edata\n\
                                ffffffff83a0c240 b free_vmap_area_lock\n\
                                ffffffff83a0c260 b vmap_purge_lock\n";

    #[test]
    fn variables_typed_as_text_are_found_by_name() {
        let (_, syms) = parse(KALLSYMS_7_2);
        assert_eq!(syms.addr_of("vmap_nodes"), Some(0xffffffff833ca8e0));
        assert_eq!(syms.addr_of("nr_vmap_nodes"), Some(0xffffffff833ca8e8));
        assert_eq!(syms.addr_of("vmap_lazy_nr"), Some(0xffffffff83209700));
        assert_eq!(
            syms.addr_of("free_vmap_area_lock"),
            Some(0xffffffff83a0c240)
        );
        assert_eq!(syms.name_at(0xffffffff833ca8e0), Some("vmap_nodes"));
        assert!(syms.contains("vmap_zone_size"));
        // Functions still resolve as probe targets.
        assert_eq!(
            syms.resolve_function("alloc_vmap_area").as_deref(),
            Some("alloc_vmap_area")
        );
    }

    #[test]
    fn a_data_typed_symbol_wins_over_a_text_one_of_the_same_name_or_address() {
        let text = "ffffffff81000000 t dup\n\
                    ffffffff82000000 d dup\n\
                    ffffffff82000000 t marker_at_same_address\n\
                    ffffffff82000100 d first\n\
                    ffffffff82000200 b first\n";
        let (_, syms) = parse(text);
        assert_eq!(syms.addr_of("dup"), Some(0xffffffff82000000));
        assert_eq!(syms.name_at(0xffffffff82000000), Some("dup"));
        // Two data-typed symbols of one name: the first listed is kept.
        assert_eq!(syms.addr_of("first"), Some(0xffffffff82000100));
    }
}
