//! tracefs: where it is mounted, which events exist, and their record layouts.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

const CANDIDATES: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs mount point, mounting it at /sys/kernel/tracing if nothing is mounted (as perf
/// does): classic tracepoints and their `format` files live there.
pub fn ensure_mounted() -> Result<PathBuf> {
    if let Some(p) = mounted() {
        return Ok(p);
    }
    let target = Path::new(CANDIDATES[0]);
    let cstr = |s: &str| std::ffi::CString::new(s).unwrap();
    // SAFETY: plain mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            cstr("nodev").as_ptr(),
            cstr(CANDIDATES[0]).as_ptr(),
            cstr("tracefs").as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it at {} failed: {err}",
            target.display()
        );
    }
    Ok(target.to_path_buf())
}

/// The tracefs mount point if one is mounted.
pub fn mounted() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mount_point_from(&mounts)
}

fn mount_point_from(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(dir))
    })
}

pub fn event_exists(root: &Path, category: &str, name: &str) -> bool {
    root.join("events")
        .join(category)
        .join(name)
        .join("format")
        .exists()
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLayout {
    pub offset: u32,
    pub size: u32,
}

/// Parse a tracefs `format` file into field name -> layout.
pub fn parse_format(text: &str) -> HashMap<String, FieldLayout> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = "";
        let (mut offset, mut size) = (None, None);
        for part in rest.split(';') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.trim().parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.trim().parse().ok();
            } else if decl.is_empty() {
                decl = part;
            }
        }
        // The name is the last identifier of the declaration ("unsigned long addr",
        // "void * lock_addr", "char comm[16]").
        let name = decl
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '['))
            .filter(|s| !s.is_empty())
            .next_back()
            .map(|s| s.split('[').next().unwrap_or(s));
        if let (Some(name), Some(offset), Some(size)) = (name, offset, size) {
            fields.insert(name.to_string(), FieldLayout { offset, size });
        }
    }
    fields
}

/// The layout of `field` in event `category:name`, read from tracefs.
pub fn field(root: &Path, category: &str, name: &str, field: &str) -> Result<FieldLayout> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_format(&text).get(field).copied().ok_or_else(|| {
        anyhow!(
            "tracepoint {category}:{name} has no field `{field}` in {}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOC_FORMAT: &str = "name: alloc_vmap_area
ID: 716
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long addr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long size;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * lock_addr;\toffset:24;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:32;\tsize:16;\tsigned:1;
\tfield:int failed;\toffset:48;\tsize:4;\tsigned:1;

print fmt: \"va_start: %lu\", REC->addr
";

    #[test]
    fn parses_field_offsets() {
        let f = parse_format(ALLOC_FORMAT);
        assert_eq!(f["addr"], FieldLayout { offset: 8, size: 8 });
        assert_eq!(
            f["size"],
            FieldLayout {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(
            f["lock_addr"],
            FieldLayout {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(
            f["comm"],
            FieldLayout {
                offset: 32,
                size: 16
            }
        );
        assert_eq!(
            f["failed"],
            FieldLayout {
                offset: 48,
                size: 4
            }
        );
        assert_eq!(f["common_pid"].offset, 4);
    }

    #[test]
    fn finds_mount_point() {
        let mounts = "proc /proc proc rw 0 0\nnodev /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(
            mount_point_from(mounts),
            Some(PathBuf::from("/sys/kernel/tracing"))
        );
        assert_eq!(mount_point_from("proc /proc proc rw 0 0\n"), None);
    }
}
