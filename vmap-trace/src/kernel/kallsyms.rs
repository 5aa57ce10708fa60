//! /proc/kallsyms: whether addresses are visible, and the data symbols that name locks.
//!
//! Stack frames are symbolized with blazesym (see `symbolize`); this module only answers what
//! blazesym does not: is kallsyms usable at all (kptr_restrict hides addresses as zeros), are
//! data symbols listed (CONFIG_KALLSYMS_ALL), and which symbol starts exactly at a lock address.
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

/// Data (and bss) symbols by address: what a lock address is called, when the kernel says.
/// Also the names of text symbols, to resolve probe targets per kernel.
#[derive(Debug, Default)]
pub struct DataSymbols {
    by_addr: HashMap<u64, String>,
    by_name: HashMap<String, u64>,
    functions: std::collections::HashSet<String>,
}

impl DataSymbols {
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        self.by_addr.get(&addr).map(String::as_str)
    }
    pub fn addr_of(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
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
        if matches!(kind, "t" | "T") && f.clone().next().is_none() {
            data.functions.insert(name.to_string());
        }
        if matches!(kind, "d" | "D" | "b" | "B") {
            vis.data_symbols += 1;
            if addr != 0 && f.next().is_none() {
                data.by_addr.entry(addr).or_insert_with(|| name.to_string());
                data.by_name.insert(name.to_string(), addr);
            }
        }
    }
    vis.kallsyms_all = vis.data_symbols >= KALLSYMS_ALL_THRESHOLD;
    (vis, data)
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
}
