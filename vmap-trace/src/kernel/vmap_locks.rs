//! Naming the vmap locks of the running kernel, by design.
//!
//! Legacy (<= 6.8): four static locks, found in kallsyms when it lists data symbols.
//! Node-sharded (6.9+): `free_vmap_area_lock` and `vmap_purge_lock` stay static; every node of
//! the kmalloc'd `vmap_nodes` array has `pool_lock`, `busy.lock` and `lazy.lock`, located from
//! the array's address (read from kernel memory), `nr_vmap_nodes`, and BTF offsets.
use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::btf::KernelBtf;
use super::kallsyms::DataSymbols;
use super::kcore::KernelMemory;
use crate::profile::AllocatorDesign;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmapLockKind {
    Spinlock,
    Mutex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmapLock {
    pub name: String,
    pub addr: u64,
    pub kind: VmapLockKind,
}

/// The vmap locks found, and why any could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmapLockTable {
    pub locks: Vec<VmapLock>,
    pub problems: Vec<String>,
}

impl VmapLockTable {
    pub fn name_at(&self, addr: u64) -> Option<&str> {
        self.locks
            .iter()
            .find(|l| l.addr == addr)
            .map(|l| l.name.as_str())
    }
}

const LEGACY_LOCKS: &[(&str, VmapLockKind)] = &[
    ("vmap_area_lock", VmapLockKind::Spinlock),
    ("free_vmap_area_lock", VmapLockKind::Spinlock),
    ("purge_vmap_area_lock", VmapLockKind::Spinlock),
    ("vmap_purge_lock", VmapLockKind::Mutex),
];
const LEGACY_510_LOCKS: &[(&str, VmapLockKind)] = &[
    ("vmap_area_lock", VmapLockKind::Spinlock),
    ("free_vmap_area_lock", VmapLockKind::Spinlock),
    ("vmap_purge_lock", VmapLockKind::Mutex),
];
const NODE_GLOBAL_LOCKS: &[(&str, VmapLockKind)] = &[
    ("free_vmap_area_lock", VmapLockKind::Spinlock),
    ("vmap_purge_lock", VmapLockKind::Mutex),
];

/// Byte offsets of the three locks inside `struct vmap_node`, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLayout {
    pub size: u64,
    pub pool_lock: u64,
    pub busy_lock: u64,
    pub lazy_lock: u64,
}

impl NodeLayout {
    pub fn from_btf(btf: &KernelBtf) -> Result<Self> {
        let list_lock = btf.member_offset("rb_list", "lock")? as u64;
        Ok(NodeLayout {
            size: btf.struct_size("vmap_node")? as u64,
            pool_lock: btf.member_offset("vmap_node", "pool_lock")? as u64,
            busy_lock: btf.member_offset("vmap_node", "busy")? as u64 + list_lock,
            lazy_lock: btf.member_offset("vmap_node", "lazy")? as u64 + list_lock,
        })
    }

    /// The three lock addresses of node `i` of an array at `base`.
    pub fn node_locks(&self, base: u64, i: u64) -> [VmapLock; 3] {
        let node = base + i * self.size;
        let lock = |field: &str, off: u64| VmapLock {
            name: format!("vmap_node[{i}].{field}"),
            addr: node + off,
            kind: VmapLockKind::Spinlock,
        };
        [
            lock("pool_lock", self.pool_lock),
            lock("busy", self.busy_lock),
            lock("lazy", self.lazy_lock),
        ]
    }
}

fn statics(table: &mut VmapLockTable, data: &DataSymbols, names: &[(&str, VmapLockKind)]) {
    for &(name, kind) in names {
        match data.addr_of(name) {
            Some(addr) => table.locks.push(VmapLock {
                name: name.into(),
                addr,
                kind,
            }),
            None => table.problems.push(format!(
                "{name}: not in kallsyms (data symbols hidden: CONFIG_KALLSYMS_ALL unset?)"
            )),
        }
    }
}

fn node_locks(data: &DataSymbols, btf: &KernelBtf) -> Result<Vec<VmapLock>> {
    let layout = NodeLayout::from_btf(btf)?;
    let nodes_sym = data
        .addr_of("vmap_nodes")
        .ok_or_else(|| anyhow!("vmap_nodes is not in kallsyms"))?;
    let count_sym = data
        .addr_of("nr_vmap_nodes")
        .ok_or_else(|| anyhow!("nr_vmap_nodes is not in kallsyms"))?;
    let mem = KernelMemory::open()?;
    let base = mem.read_u64(nodes_sym)?;
    let count = mem.read_u32(count_sym)? as u64;
    if base == 0 || !(1..=128).contains(&count) {
        return Err(anyhow!(
            "implausible vmap_nodes={base:#x} nr_vmap_nodes={count}"
        ));
    }
    Ok((0..count)
        .flat_map(|i| layout.node_locks(base, i))
        .collect())
}

pub fn discover(
    design: AllocatorDesign,
    data: &DataSymbols,
    btf: Option<&KernelBtf>,
) -> VmapLockTable {
    let mut table = VmapLockTable::default();
    match design {
        // The 5.10 era has no purge_vmap_area_lock: its lazy list is the lock-free
        // vmap_purge_list, which kallsyms lists wherever it would list the lock.
        AllocatorDesign::Legacy if data.contains("vmap_purge_list") => {
            statics(&mut table, data, LEGACY_510_LOCKS)
        }
        AllocatorDesign::Legacy => statics(&mut table, data, LEGACY_LOCKS),
        AllocatorDesign::NodeSharded => {
            statics(&mut table, data, NODE_GLOBAL_LOCKS);
            match btf
                .ok_or_else(|| anyhow!("no kernel BTF"))
                .and_then(|b| node_locks(data, b))
            {
                Ok(locks) => table.locks.extend(locks),
                Err(e) => table.problems.push(format!("per-node vmap locks: {e:#}")),
            }
        }
        AllocatorDesign::Unknown => table
            .problems
            .push("allocator design unknown (no BTF): vmap locks not located".into()),
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lock_addresses_and_names() {
        let layout = NodeLayout {
            size: 0x1100,
            pool_lock: 0x1000,
            busy_lock: 0x1010 + 0x10,
            lazy_lock: 0x1038 + 0x10,
        };
        let locks = layout.node_locks(0xffff_8880_0000_0000, 7);
        assert_eq!(locks[0].name, "vmap_node[7].pool_lock");
        assert_eq!(locks[0].addr, 0xffff_8880_0000_0000 + 7 * 0x1100 + 0x1000);
        assert_eq!(locks[1].name, "vmap_node[7].busy");
        assert_eq!(locks[2].addr, 0xffff_8880_0000_0000 + 7 * 0x1100 + 0x1048);
    }

    #[test]
    fn hidden_symbols_are_problems_not_failures() {
        let t = discover(AllocatorDesign::Legacy, &DataSymbols::default(), None);
        assert!(t.locks.is_empty());
        assert_eq!(t.problems.len(), 4);
        assert!(t.problems[0].contains("vmap_area_lock"));
    }

    #[test]
    fn the_5_10_era_expects_no_purge_spinlock() {
        // Debian 5.10.0-46's lock symbols (System.map, docs/lab/kernel-matrix-facts §4).
        let (_, data) = super::super::kallsyms::parse(
            "ffffffff82a1b2c0 b vmap_area_lock\n\
             ffffffff82a1b2c4 b free_vmap_area_lock\n\
             ffffffff82a1b2c8 b vmap_purge_list\n\
             ffffffff8261c400 d vmap_purge_lock\n",
        );
        let t = discover(AllocatorDesign::Legacy, &data, None);
        assert!(t.problems.is_empty(), "{:?}", t.problems);
        let names: Vec<&str> = t.locks.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["vmap_area_lock", "free_vmap_area_lock", "vmap_purge_lock"]
        );
    }

    #[test]
    fn this_kernels_node_layout_when_node_sharded() {
        let Ok(btf) = KernelBtf::load() else {
            return eprintln!("skipped: no BTF");
        };
        if !btf.has_struct("vmap_node") {
            return eprintln!("skipped: legacy kernel");
        }
        let l = NodeLayout::from_btf(&btf).unwrap();
        // pool[256] of {list_head, long} comes first, so every lock lies past it and inside the node.
        assert!(l.pool_lock >= 256 * 24 && l.pool_lock < l.size);
        assert!(l.busy_lock > l.pool_lock && l.lazy_lock > l.busy_lock && l.lazy_lock < l.size);
    }
}
