//! The vmap allocator's design, named precisely from what the running kernel exposes (BTF
//! types and members, kallsyms names), never from its version number: distributions backport
//! (RHEL 9's 5.14 carries parts of the node design), so a version says little.
//!
//! Each boundary and the fact that marks it (sources and how each was checked:
//! docs/lab/design-facts-2026-12-03.md):
//! - 5.10 era: `struct vmap_area` has `purge_list` (an `llist_node`: lazily freed areas go on
//!   the lock-free `vmap_purge_list`, and the freeing task purges synchronously through
//!   `try_purge_vmap_area_lazy`). 5.11 replaced the list by a tree under `purge_vmap_area_lock`.
//! - node-sharded (6.9 on): `struct vmap_node` exists.
//! - 6.10 on: the allocation-profiling renames (`__vmalloc_node_range_noprof`).
//! - 6.16 on (`alloc_vmap_area`'s tracepoint addr is an errno on failure): the same patch
//!   series made `purge_nodes` a function-local static (kallsyms `purge_nodes.N` instead of
//!   `purge_nodes`, a data symbol); `vrealloc_node_align_noprof` (6.17) implies it too.
//! - PREEMPT_RT: `rt_spin_lock` exists (every `spinlock_t` is an rtmutex).
use serde::{Deserialize, Serialize};

use super::btf::KernelBtf;
use super::kallsyms::DataSymbols;
use crate::profile::AllocatorDesign;

/// Which generation of the vmap allocator the kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesignEra {
    /// Global locks; lazily freed areas on a lock-free llist; the freeing task purges.
    #[serde(rename = "legacy_5_10")]
    Legacy510,
    /// Global `vmap_area_lock`, `free_vmap_area_lock`, `purge_vmap_area_lock`.
    #[serde(rename = "legacy_5_11_to_6_8")]
    Legacy511To68,
    /// Per-node busy/lazy trees and pools, before the 6.10 changes.
    #[serde(rename = "node_sharded_6_9")]
    NodeSharded69,
    #[serde(rename = "node_sharded_6_10_to_6_15")]
    NodeSharded610To615,
    /// The `alloc_vmap_area` tracepoint's addr is a negative errno on failure.
    #[serde(rename = "node_sharded_6_16_on")]
    NodeSharded616On,
    /// Node-sharded, 6.10 or later, but whether 6.16 or later could not be told.
    #[serde(rename = "node_sharded_6_10_on")]
    NodeSharded610On,
    #[serde(rename = "unknown")]
    Unknown,
}

impl DesignEra {
    /// The model's design (`vmap-trace model` has two).
    pub fn design(self) -> AllocatorDesign {
        match self {
            DesignEra::Legacy510 | DesignEra::Legacy511To68 => AllocatorDesign::Legacy,
            DesignEra::NodeSharded69
            | DesignEra::NodeSharded610To615
            | DesignEra::NodeSharded616On
            | DesignEra::NodeSharded610On => AllocatorDesign::NodeSharded,
            DesignEra::Unknown => AllocatorDesign::Unknown,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            DesignEra::Legacy510 => {
                "legacy, 5.10 era: global vmap_area_lock and free_vmap_area_lock; the lazy list \
                 is lock-free (vmap_purge_list) and the freeing task purges synchronously \
                 (try_purge_vmap_area_lazy)"
            }
            DesignEra::Legacy511To68 => {
                "legacy, 5.11 to 6.8: global vmap_area_lock, free_vmap_area_lock and \
                 purge_vmap_area_lock; purges run from a workqueue"
            }
            DesignEra::NodeSharded69 => "node-sharded, as 6.9 (vmap_node)",
            DesignEra::NodeSharded610To615 => "node-sharded, 6.10 to 6.15 (vmap_node)",
            DesignEra::NodeSharded616On => {
                "node-sharded, 6.16 or later (vmap_node; the alloc_vmap_area tracepoint's addr \
                 is an errno on failure)"
            }
            DesignEra::NodeSharded610On => "node-sharded, 6.10 or later (vmap_node)",
            DesignEra::Unknown => "unknown",
        }
    }
}

/// The design, precisely, and what it was told from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesignDetail {
    pub era: DesignEra,
    /// PREEMPT_RT: every vmap spinlock is an rtmutex (`rt_spin_lock`).
    pub preempt_rt: bool,
    /// The facts it was told from, each saying where it was read.
    pub evidence: Vec<String>,
    /// What could not be told, and why.
    pub undetermined: Option<String>,
}

impl DesignDetail {
    /// One line for people: era, RT, and what is unknown.
    pub fn label(&self) -> String {
        let mut s = self.era.label().to_string();
        if self.preempt_rt {
            s += ", PREEMPT_RT (spinlock_t is an rtmutex: vmap spinlock waits sleep)";
        }
        if let Some(why) = &self.undetermined {
            s += &format!("; {why}");
        }
        s
    }
}

/// The facts the classifier reads, gathered from BTF and kallsyms (`KernelFacts::read`) or
/// written down from a kernel's files (the tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFacts {
    /// /sys/kernel/btf/vmlinux was readable.
    pub btf: bool,
    pub btf_vmap_node: bool,
    pub btf_vmap_area: bool,
    /// `struct vmap_area` has `purge_list` (an `llist_node`, in an anonymous union).
    pub btf_vmap_area_purge_list: bool,
    /// kallsyms lists data symbols (CONFIG_KALLSYMS_ALL).
    pub data_symbols: bool,
    /// Names kallsyms (or BTF, for functions) lists among those the classifier asks about.
    pub symbols: Vec<String>,
}

/// The names whose presence the classifier asks about.
const ASKED: &[&str] = &[
    "rt_spin_lock",
    "__vmalloc_node_range_noprof",
    "vrealloc_node_align_noprof",
    "purge_nodes",
    "purge_vmap_node",
    "vmap_purge_list",
    "purge_vmap_area_lock",
];

impl KernelFacts {
    pub fn read(btf: Option<&KernelBtf>, symbols: &DataSymbols, data_symbols: bool) -> Self {
        let mut facts = KernelFacts {
            btf: btf.is_some(),
            data_symbols,
            ..Default::default()
        };
        if let Some(b) = btf {
            facts.btf_vmap_node = b.has_struct("vmap_node");
            facts.btf_vmap_area = b.has_struct("vmap_area");
            facts.btf_vmap_area_purge_list = b.has_member("vmap_area", "purge_list");
        }
        for &name in ASKED {
            if symbols.contains(name) || btf.is_some_and(|b| b.has_function(name)) {
                facts.symbols.push(name.to_string());
            }
        }
        // A function-local static is listed as `name.N`.
        if let Some(local) = symbols.first_with_prefix("purge_nodes.") {
            facts.symbols.push(local);
        }
        facts
    }

    fn has(&self, name: &str) -> bool {
        self.symbols.iter().any(|s| s == name)
    }

    fn has_prefix(&self, prefix: &str) -> Option<&str> {
        self.symbols
            .iter()
            .find(|s| s.starts_with(prefix))
            .map(String::as_str)
    }
}

/// Name the design from the facts.
pub fn classify(f: &KernelFacts) -> DesignDetail {
    let mut evidence = Vec::new();
    let mut undetermined = None;
    let preempt_rt = f.has("rt_spin_lock");
    if preempt_rt {
        evidence.push("rt_spin_lock exists (PREEMPT_RT)".to_string());
    }
    let node = if f.btf_vmap_node {
        evidence.push("BTF: struct vmap_node".to_string());
        true
    } else if f.has("purge_vmap_node") {
        evidence.push("kallsyms: purge_vmap_node".to_string());
        true
    } else {
        false
    };
    let era = if node {
        if !f.has("__vmalloc_node_range_noprof") {
            evidence.push(
                "no __vmalloc_node_range_noprof (the 6.10 allocation-profiling renames)".into(),
            );
            DesignEra::NodeSharded69
        } else {
            evidence.push("__vmalloc_node_range_noprof (6.10 on)".to_string());
            if let Some(local) = f.has_prefix("purge_nodes.") {
                evidence.push(format!(
                    "kallsyms: {local} (purge_nodes made a local static with the 6.16 errno series)"
                ));
                DesignEra::NodeSharded616On
            } else if f.has("vrealloc_node_align_noprof") {
                evidence.push("vrealloc_node_align_noprof (6.17 on)".to_string());
                DesignEra::NodeSharded616On
            } else if f.has("purge_nodes") {
                evidence.push("kallsyms: purge_nodes is a file-level static (before 6.16)".into());
                DesignEra::NodeSharded610To615
            } else {
                undetermined = Some(if f.data_symbols {
                    "whether 6.16 or later cannot be told: kallsyms lists data symbols but no \
                     purge_nodes"
                        .to_string()
                } else {
                    "whether 6.16 or later cannot be told: kallsyms lists no data symbols \
                     (CONFIG_KALLSYMS_ALL unset), so purge_nodes cannot be seen, and \
                     vrealloc_node_align_noprof (6.17) is absent"
                        .to_string()
                });
                DesignEra::NodeSharded610On
            }
        }
    } else if f.btf_vmap_area {
        evidence.push("BTF: struct vmap_area, no struct vmap_node".to_string());
        if f.btf_vmap_area_purge_list {
            evidence.push("BTF: vmap_area.purge_list (llist_node)".to_string());
            DesignEra::Legacy510
        } else {
            evidence.push("BTF: no vmap_area.purge_list".to_string());
            DesignEra::Legacy511To68
        }
    } else if f.has("vmap_purge_list") {
        evidence.push("kallsyms: vmap_purge_list".to_string());
        DesignEra::Legacy510
    } else if f.has("purge_vmap_area_lock") {
        evidence.push("kallsyms: purge_vmap_area_lock".to_string());
        DesignEra::Legacy511To68
    } else {
        undetermined = Some(if f.btf {
            "kernel BTF has neither struct vmap_node nor struct vmap_area".to_string()
        } else {
            "no kernel BTF, and kallsyms names none of the design's markers".to_string()
        });
        DesignEra::Unknown
    };
    DesignDetail {
        era,
        preempt_rt,
        evidence,
        undetermined,
    }
}

/// The running kernel's design.
pub fn detect(btf: Option<&KernelBtf>, symbols: &DataSymbols, data_symbols: bool) -> DesignDetail {
    classify(&KernelFacts::read(btf, symbols, data_symbols))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of the six matrix kernels, read from their System.map and source
    /// (docs/lab/kernel-matrix-facts-2026-12-03.md §3/§4, docs/lab/design-facts-2026-12-03.md).
    fn kernel(node: bool, purge_list: bool, symbols: &[&str]) -> KernelFacts {
        KernelFacts {
            btf: true,
            btf_vmap_node: node,
            btf_vmap_area: true,
            btf_vmap_area_purge_list: purge_list,
            data_symbols: true,
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn debian_5_10_is_the_lock_free_lazy_list_era() {
        let d = classify(&kernel(false, true, &["vmap_purge_list"]));
        assert_eq!(d.era, DesignEra::Legacy510);
        assert_eq!(d.era.design(), AllocatorDesign::Legacy);
        assert!(!d.preempt_rt && d.undetermined.is_none());
        assert!(
            d.label().contains("try_purge_vmap_area_lazy"),
            "{}",
            d.label()
        );
    }

    #[test]
    fn debian_6_1_is_legacy_5_11_to_6_8() {
        let d = classify(&kernel(false, false, &["purge_vmap_area_lock"]));
        assert_eq!(d.era, DesignEra::Legacy511To68);
        assert_eq!(d.era.design(), AllocatorDesign::Legacy);
    }

    #[test]
    fn debian_6_12_is_node_sharded_6_10_to_6_15_and_its_rt_flavour_says_so() {
        let facts = kernel(
            true,
            false,
            &[
                "__vmalloc_node_range_noprof",
                "purge_vmap_node",
                "purge_nodes",
            ],
        );
        let d = classify(&facts);
        assert_eq!(d.era, DesignEra::NodeSharded610To615);
        assert!(!d.preempt_rt);
        let mut rt = facts.clone();
        rt.symbols.push("rt_spin_lock".into());
        let d = classify(&rt);
        assert_eq!(d.era, DesignEra::NodeSharded610To615);
        assert!(
            d.preempt_rt && d.label().contains("PREEMPT_RT"),
            "{}",
            d.label()
        );
    }

    #[test]
    fn sid_7_2_is_node_sharded_6_16_on() {
        let d = classify(&kernel(
            true,
            false,
            &[
                "__vmalloc_node_range_noprof",
                "vrealloc_node_align_noprof",
                "purge_vmap_node",
                "purge_nodes.1",
            ],
        ));
        assert_eq!(d.era, DesignEra::NodeSharded616On);
        assert!(d.label().contains("errno"), "{}", d.label());
        // Without data symbols, the 6.17 function alone still places it.
        let d = classify(&KernelFacts {
            data_symbols: false,
            ..kernel(
                true,
                false,
                &["__vmalloc_node_range_noprof", "vrealloc_node_align_noprof"],
            )
        });
        assert_eq!(d.era, DesignEra::NodeSharded616On);
    }

    #[test]
    fn node_design_without_the_6_10_renames_is_reported_as_6_9() {
        // As a 6.9 kernel, or a backport of the node design onto an older base.
        let d = classify(&kernel(true, false, &["purge_vmap_node"]));
        assert_eq!(d.era, DesignEra::NodeSharded69);
    }

    #[test]
    fn hidden_data_symbols_leave_the_6_16_boundary_open_and_say_why() {
        // This machine's 6.18: no CONFIG_KALLSYMS_ALL, no vrealloc_node_align_noprof seen.
        let d = classify(&KernelFacts {
            data_symbols: false,
            ..kernel(true, false, &["__vmalloc_node_range_noprof"])
        });
        assert_eq!(d.era, DesignEra::NodeSharded610On);
        let why = d.undetermined.as_deref().unwrap();
        assert!(why.contains("CONFIG_KALLSYMS_ALL"), "{why}");
        assert!(d.label().contains("cannot be told"), "{}", d.label());
    }

    #[test]
    fn without_btf_kallsyms_markers_decide_or_it_is_unknown() {
        let no_btf = |symbols: &[&str]| KernelFacts {
            symbols: symbols.iter().map(|s| s.to_string()).collect(),
            data_symbols: true,
            ..Default::default()
        };
        assert_eq!(
            classify(&no_btf(&["vmap_purge_list"])).era,
            DesignEra::Legacy510
        );
        assert_eq!(
            classify(&no_btf(&["purge_vmap_area_lock"])).era,
            DesignEra::Legacy511To68
        );
        let d = classify(&no_btf(&[]));
        assert_eq!(d.era, DesignEra::Unknown);
        assert_eq!(d.era.design(), AllocatorDesign::Unknown);
        assert!(d.undetermined.unwrap().contains("no kernel BTF"));
    }

    #[test]
    fn eras_serialize_as_stable_keys() {
        let key = |e: DesignEra| serde_json::to_string(&e).unwrap();
        assert_eq!(key(DesignEra::Legacy510), "\"legacy_5_10\"");
        assert_eq!(
            key(DesignEra::NodeSharded610To615),
            "\"node_sharded_6_10_to_6_15\""
        );
        assert_eq!(key(DesignEra::NodeSharded616On), "\"node_sharded_6_16_on\"");
        let back: DesignEra = serde_json::from_str("\"legacy_5_11_to_6_8\"").unwrap();
        assert_eq!(back, DesignEra::Legacy511To68);
    }

    #[test]
    fn facts_are_read_from_kallsyms_whatever_the_type() {
        // The names 7.2.13 lists (its vm-test guest's doctor found `purge_nodes.1`); types
        // as its System.map (purge_vmap_node `t`) and this machine's 6.18 (the two `T`) give
        // them; the addresses are made up.
        let (_, syms) = super::super::kallsyms::parse(
            "ffffffff81300000 T vrealloc_node_align_noprof\n\
             ffffffff81300100 T __vmalloc_node_range_noprof\n\
             ffffffff81300200 t purge_vmap_node\n\
             ffffffff83a0c300 b purge_nodes.1\n",
        );
        let f = KernelFacts::read(None, &syms, true);
        assert!(f.has("vrealloc_node_align_noprof") && f.has("purge_vmap_node"));
        assert_eq!(f.has_prefix("purge_nodes."), Some("purge_nodes.1"));
        assert_eq!(classify(&f).era, DesignEra::NodeSharded616On);
    }
}
