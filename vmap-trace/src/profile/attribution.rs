//! Is a contended kernel stack a vmap one? Which vmap function took the lock?
use serde::{Deserialize, Serialize};

use super::Frame;

/// The vmap allocator's functions (mm/vmalloc.c) across 5.11..mainline: a contended stack
/// through any of them is vmap contention.
const VMAP_FUNCTIONS: &[&str] = &[
    "alloc_vmap_area",
    "find_vmap_area",
    "find_vm_area",
    "find_unlink_vmap_area",
    "free_vmap_area",
    "free_vmap_area_noflush",
    "insert_vmap_area",
    "setup_vmalloc_vm",
    "__purge_vmap_area_lazy",
    "purge_vmap_area_lazy",
    "drain_vmap_area_work",
    "purge_vmap_node",
    "decay_va_pool_node",
    "purge_fragmented_blocks",
    "_vm_unmap_aliases",
    "vm_unmap_aliases",
    "vm_map_ram",
    "vm_unmap_ram",
    "vb_alloc",
    "vb_free",
    "new_vmap_block",
    "__get_vm_area_node",
    "get_vm_area",
    "get_vm_area_caller",
    "remove_vm_area",
    "vmap",
    "vunmap",
    "vfree",
    "vfree_atomic",
    "__vfree",
    "__vunmap",
    "vread_iter",
    "vread",
    "vmalloc_info_show",
    "vmalloc_dump_obj",
    "__vmalloc_node_range",
    "__vmalloc_node",
    "__vmalloc",
    "vmalloc",
    "vzalloc",
    "vmalloc_node",
    "vzalloc_node",
    "vmalloc_user",
    "vmalloc_32",
    "__vmalloc_area_node",
    "vmalloc_huge",
];

/// Frames of the locking and tracing machinery itself: never a "call site".
const LOCK_MACHINERY_PREFIXES: &[&str] = &[
    "queued_spin_lock_slowpath",
    "native_queued_spin_lock_slowpath",
    "__pv_queued_spin_lock_slowpath",
    "_raw_spin_lock",
    "_raw_read_lock",
    "_raw_write_lock",
    "queued_read_lock_slowpath",
    "queued_write_lock_slowpath",
    "__mutex_lock",
    "mutex_lock",
    "__mutex_lock_slowpath",
    "mutex_lock_killable",
    "mutex_lock_interruptible",
    "__rt_mutex",
    "rt_mutex",
    "rwsem_down_",
    "down_read",
    "down_write",
    "__down",
    "down",
    "percpu_down_",
    "__percpu_down_",
    "__traceiter_contention",
    "trace_contention",
    "__bpf_trace_contention",
    "bpf_trace_run",
    "bpf_prog_",
    "bpf_trampoline_",
    "perf_trace_",
    "trace_call_bpf",
    "perf_trace_run_bpf_submit",
];

/// Strip compiler/kernel suffixes so one function has one name across kernels:
/// `alloc_vmap_area.cold`, `vfree.part.0`, `__vmalloc_node_range_noprof`.
pub fn canonical_function(name: &str) -> &str {
    let base = name.split('.').next().unwrap_or(name);
    base.strip_suffix("_noprof").unwrap_or(base)
}

pub fn is_vmap_function(name: &str) -> bool {
    VMAP_FUNCTIONS.contains(&canonical_function(name))
}

fn is_lock_machinery(name: &str) -> bool {
    let n = canonical_function(name);
    LOCK_MACHINERY_PREFIXES.iter().any(|p| n.starts_with(p))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockClass {
    /// Contention on a path through the vmap allocator.
    Vmap,
    /// Everything else.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub class: LockClass,
    /// The innermost vmap function on the stack (the one closest to the lock).
    pub vmap_function: Option<String>,
    /// The function that called the lock primitive (first frame past the lock machinery).
    pub call_site: Option<String>,
}

impl Attribution {
    /// True when vmap code took the lock itself, rather than something it called (e.g. the
    /// page allocator under vmalloc).
    pub fn is_direct(&self) -> bool {
        matches!((&self.vmap_function, &self.call_site), (Some(v), Some(c)) if v == c)
    }
}

/// Classify a stack given innermost frame first.
pub fn attribute(frames: &[Frame]) -> Attribution {
    let names: Vec<&str> = frames
        .iter()
        .filter_map(|f| f.function.as_deref())
        .collect();
    let call_site = names
        .iter()
        .find(|n| !is_lock_machinery(n))
        .map(|n| canonical_function(n).to_string());
    let vmap_function = names
        .iter()
        .find(|n| is_vmap_function(n))
        .map(|n| canonical_function(n).to_string());
    Attribution {
        class: if vmap_function.is_some() {
            LockClass::Vmap
        } else {
            LockClass::Other
        },
        vmap_function,
        call_site,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Frame {
                addr: 0xffffffff81000000 + i as u64,
                function: Some(n.to_string()),
                offset: 0x10,
            })
            .collect()
    }

    #[test]
    fn canonical_names() {
        assert_eq!(
            canonical_function("alloc_vmap_area.cold"),
            "alloc_vmap_area"
        );
        assert_eq!(canonical_function("vfree.part.0"), "vfree");
        assert_eq!(
            canonical_function("__vmalloc_node_range_noprof"),
            "__vmalloc_node_range"
        );
        assert!(is_vmap_function("__vmalloc_node_range_noprof"));
        assert!(!is_vmap_function("vmalloc_fault"));
    }

    #[test]
    fn vmap_lock_taken_directly() {
        let a = attribute(&frames(&[
            "__bpf_trace_contention_end",
            "queued_spin_lock_slowpath",
            "_raw_spin_lock",
            "alloc_vmap_area",
            "__get_vm_area_node",
            "__vmalloc_node_range_noprof",
            "copy_process",
        ]));
        assert_eq!(a.class, LockClass::Vmap);
        assert_eq!(a.vmap_function.as_deref(), Some("alloc_vmap_area"));
        assert_eq!(a.call_site.as_deref(), Some("alloc_vmap_area"));
        assert!(a.is_direct());
    }

    #[test]
    fn lock_under_vmalloc_but_not_vmap() {
        let a = attribute(&frames(&[
            "__mutex_lock.constprop.0",
            "some_driver_fn",
            "vfree",
            "do_syscall_64",
        ]));
        assert_eq!(a.class, LockClass::Vmap);
        assert_eq!(a.call_site.as_deref(), Some("some_driver_fn"));
        assert!(!a.is_direct());
    }

    #[test]
    fn other_stack() {
        let a = attribute(&frames(&["_raw_spin_lock", "tty_port_open", "tty_open"]));
        assert_eq!(a.class, LockClass::Other);
        assert_eq!(a.vmap_function, None);
        assert_eq!(a.call_site.as_deref(), Some("tty_port_open"));
    }
}
