//! The running kernel's BTF: tracepoint argument positions and struct layouts.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use btf_rs::{Btf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let btf = Btf::from_file(path)
            .with_context(|| format!("cannot parse BTF from {}", path.display()))?;
        Ok(KernelBtf { btf })
    }

    /// Position of argument `arg` in the tp_btf context of tracepoint `event`. The names come
    /// from the prototype of `__bpf_trace_<event>`, the kernel's BPF probe function for the
    /// event (the `btf_trace_<event>` typedef has the same parameters but no names). Its first
    /// parameter is the probe's private `void *__data`, which the BPF context does not include.
    pub fn tracepoint_arg_index(&self, event: &str, arg: &str) -> Result<u32> {
        let params = self.tracepoint_params(event)?;
        params
            .iter()
            .skip(1)
            .position(|p| p == arg)
            .map(|i| i as u32)
            .ok_or_else(|| {
                anyhow!(
                    "BTF prototype of tracepoint {event} has no argument `{arg}` (has {params:?})"
                )
            })
    }

    /// Parameter names of `__bpf_trace_<event>`, including the leading `__data`.
    pub fn tracepoint_params(&self, event: &str) -> Result<Vec<String>> {
        let name = format!("__bpf_trace_{event}");
        let types = self
            .btf
            .resolve_types_by_name(&name)
            .with_context(|| format!("no {name} in kernel BTF"))?;
        let func = types
            .into_iter()
            .find_map(|t| if let Type::Func(f) = t { Some(f) } else { None })
            .ok_or_else(|| anyhow!("{name} is not a function in kernel BTF"))?;
        let proto = match self.btf.resolve_chained_type(&func)? {
            Type::FuncProto(p) => p,
            other => return Err(anyhow!("{name} has no prototype ({})", other.name())),
        };
        proto
            .parameters
            .iter()
            .map(|p| Ok(self.btf.resolve_name(p)?))
            .collect()
    }

    /// Whether the kernel defines `struct name`.
    pub fn has_struct(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .map(|ts| ts.iter().any(|t| matches!(t, Type::Struct(_))))
            .unwrap_or(false)
    }

    /// Whether the kernel has a function `name` in BTF (not inlined away, attachable by fentry).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .map(|ts| ts.iter().any(|t| matches!(t, Type::Func(_))))
            .unwrap_or(false)
    }

    /// Parameter count of function `name`: where fexit finds its return value.
    pub fn function_param_count(&self, name: &str) -> Result<u32> {
        let func = self
            .btf
            .resolve_types_by_name(name)
            .with_context(|| format!("no {name} in kernel BTF"))?
            .into_iter()
            .find_map(|t| if let Type::Func(f) = t { Some(f) } else { None })
            .ok_or_else(|| anyhow!("{name} is not a function in kernel BTF"))?;
        match self.btf.resolve_chained_type(&func)? {
            Type::FuncProto(p) => Ok(p.parameters.len() as u32),
            other => Err(anyhow!("{name} has no prototype ({})", other.name())),
        }
    }

    /// Byte offset of member `member` in `struct name` (top-level members only).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32> {
        let types = self.btf.resolve_types_by_name(name)?;
        let s = types
            .iter()
            .find_map(|t| {
                if let Type::Struct(s) = t {
                    Some(s)
                } else {
                    None
                }
            })
            .ok_or_else(|| anyhow!("no struct {name} in kernel BTF"))?;
        for m in &s.members {
            if self.btf.resolve_name(m).ok().as_deref() == Some(member) {
                return Ok(m.bit_offset() / 8);
            }
        }
        Err(anyhow!(
            "struct {name} has no member {member} in kernel BTF"
        ))
    }

    /// Whether `struct name` has a member `member`, at top level or inside its anonymous
    /// unions and structs (5.10's `struct vmap_area` keeps `purge_list` in one).
    pub fn has_member(&self, name: &str, member: &str) -> bool {
        let Ok(types) = self.btf.resolve_types_by_name(name) else {
            return false;
        };
        types.iter().any(|t| match t {
            Type::Struct(s) => self.members_include(&s.members, member, 0),
            _ => false,
        })
    }

    fn members_include(&self, members: &[btf_rs::Member], member: &str, depth: u32) -> bool {
        members.iter().any(|m| {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name == member {
                return true;
            }
            // Anonymous aggregates only, and not deeper than the kernel nests them.
            if !name.is_empty() || depth > 4 {
                return false;
            }
            match self.btf.resolve_chained_type(m) {
                Ok(Type::Struct(inner)) | Ok(Type::Union(inner)) => {
                    self.members_include(&inner.members, member, depth + 1)
                }
                _ => false,
            }
        })
    }

    /// Size of `struct name` in bytes.
    pub fn struct_size(&self, name: &str) -> Result<usize> {
        let types = self.btf.resolve_types_by_name(name)?;
        types
            .iter()
            .find_map(|t| {
                if let Type::Struct(s) = t {
                    Some(s.size())
                } else {
                    None
                }
            })
            .ok_or_else(|| anyhow!("no struct {name} in kernel BTF"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel BTF when it has one (every supported kernel does).
    fn kernel_btf() -> Option<KernelBtf> {
        Path::new(VMLINUX_BTF)
            .exists()
            .then(|| KernelBtf::load().expect("parse vmlinux BTF"))
    }

    #[test]
    fn contention_begin_arguments() {
        let Some(btf) = kernel_btf() else {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        };
        assert_eq!(
            btf.tracepoint_params("contention_begin").unwrap(),
            ["__data", "lock", "flags"]
        );
        assert_eq!(
            btf.tracepoint_arg_index("contention_begin", "lock")
                .unwrap(),
            0
        );
        assert_eq!(
            btf.tracepoint_arg_index("contention_begin", "flags")
                .unwrap(),
            1
        );
        assert!(btf
            .tracepoint_arg_index("contention_begin", "nope")
            .is_err());
        assert!(btf.has_struct("task_struct"));
        assert!(!btf.has_struct("no_such_struct_vmap_trace"));
        assert_eq!(btf.member_offset("list_head", "next").unwrap(), 0);
        assert_eq!(btf.member_offset("list_head", "prev").unwrap(), 8);
        assert!(btf.has_member("list_head", "prev"));
        assert!(!btf.has_member("list_head", "no_such_member"));
        // `struct vmap_area`'s `vm` sits in an anonymous union in every kernel since 5.4.
        assert!(btf.has_member("vmap_area", "vm"));
    }
}
