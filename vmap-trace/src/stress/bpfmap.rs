//! `bpfmap`: create and close large BPF array maps through the raw bpf(2) system call.
//!
//! bpf_map_area_alloc kmallocs up to 32 KiB and vmallocs anything larger, so a 4 MiB array
//! map is one 1024-page vmap area (plus the vmalloc'd pages themselves). Closing the last fd
//! frees the map from a workqueue: vfree puts the area on the lazy-free list, and once the
//! lazily freed pages pass lazy_max_pages (32 MiB per log2(CPUs)+1, i.e. 64 MiB on 2 CPUs)
//! the kernel purges them with a TLB flush. So this workload drives alloc, free and purge.

use std::os::fd::{FromRawFd, OwnedFd};

use super::driver::{drive, DriverContext, OpError};
use super::BpfMapShape;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_OBJ_NAME_LEN: usize = 16;

/// Shown with `ps`-like tools (`bpftool map`), so a stray map is recognisable.
const MAP_NAME: &[u8] = b"vmap_stress";

const NEEDS_CAP_BPF_HINT: &str = "creating BPF maps needs root or CAP_BPF \
    (kernel.unprivileged_bpf_disabled is usually set); run vmap-trace as root";
const BAD_SHAPE_HINT: &str =
    "the kernel rejected the map shape; try a smaller --map-size-mib or --map-value-size";

/// The BPF_MAP_CREATE part of `union bpf_attr` (include/uapi/linux/bpf.h). The kernel accepts
/// a prefix of the union and zero-fills the rest, so we pass only what we set.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; BPF_OBJ_NAME_LEN],
    map_ifindex: u32,
}

impl MapCreateAttr {
    fn array(shape: BpfMapShape) -> Self {
        let mut map_name = [0u8; BPF_OBJ_NAME_LEN];
        map_name[..MAP_NAME.len()].copy_from_slice(MAP_NAME);
        MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4, // array maps are indexed by u32
            value_size: shape.value_size,
            max_entries: shape.max_entries,
            map_name,
            ..Default::default()
        }
    }
}

/// Create one array map of `shape`; the returned fd owns it.
pub fn create_array_map(shape: BpfMapShape) -> std::io::Result<OwnedFd> {
    let attr = MapCreateAttr::array(shape);
    // SAFETY: attr is a valid, fully initialised prefix of union bpf_attr and we pass its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const MapCreateAttr,
            std::mem::size_of::<MapCreateAttr>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

pub(super) fn run_driver(ctx: &DriverContext<'_>, shape: BpfMapShape) -> anyhow::Result<()> {
    let mut open_maps = Vec::with_capacity(ctx.live);
    drive(ctx, |ctx| {
        create_then_close_maps(ctx, shape, &mut open_maps)
    })
}

fn create_then_close_maps(
    ctx: &DriverContext<'_>,
    shape: BpfMapShape,
    open_maps: &mut Vec<OwnedFd>,
) -> Result<(), OpError> {
    let mut result = Ok(());
    for _ in 0..ctx.live {
        if ctx.should_stop() {
            break;
        }
        match create_array_map(shape) {
            Ok(map) => open_maps.push(map),
            Err(error) => {
                result = Err(classify_create_error(error));
                break;
            }
        }
    }
    let created = open_maps.len() as u64;
    open_maps.clear(); // close: the kernel frees each map (vfree) from a workqueue
    ctx.count_ops(created);
    result
}

fn classify_create_error(error: std::io::Error) -> OpError {
    let hint = match error.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Some(NEEDS_CAP_BPF_HINT),
        Some(libc::EINVAL | libc::E2BIG) => Some(BAD_SHAPE_HINT),
        _ => None,
    };
    OpError::from_os("bpf(BPF_MAP_CREATE, BPF_MAP_TYPE_ARRAY)", error, hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout_matches_uapi() {
        // map_type..numa_node = 7 x u32, map_name[16], map_ifindex.
        assert_eq!(std::mem::size_of::<MapCreateAttr>(), 48);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_ifindex), 44);
        let attr = MapCreateAttr::array(BpfMapShape::default());
        assert_eq!(&attr.map_name[..MAP_NAME.len()], MAP_NAME);
        assert_eq!(attr.map_name[MAP_NAME.len()], 0);
    }

    #[test]
    fn eperm_is_fatal_with_a_hint() {
        let OpError::Fatal(e) =
            classify_create_error(std::io::Error::from_raw_os_error(libc::EPERM))
        else {
            panic!("EPERM must be fatal");
        };
        assert!(format!("{e:#}").contains("CAP_BPF"));
        assert!(matches!(
            classify_create_error(std::io::Error::from_raw_os_error(libc::ENOMEM)),
            OpError::Transient { .. }
        ));
    }
}
