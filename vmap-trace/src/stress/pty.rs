//! `pty`: open and close pseudo-terminal pairs.
//!
//! Opening /dev/ptmx creates both ends of a pty and opens the n_tty line discipline on each;
//! n_tty_open vzalloc's its ~8.6 KiB `struct n_tty_data`, so one pair is two vmap-area
//! allocations, and the last close vfree's both. Each round opens `live` pairs (master, then
//! the slave by name, as a terminal program would) and then closes them all, so several
//! buffers are live at once.

use std::ffi::CStr;
use std::os::fd::{FromRawFd, OwnedFd};

use super::driver::{drive, DriverContext, OpError};

const NO_PTMX_HINT: &str =
    "cannot open /dev/ptmx: is devpts mounted (mount -t devpts devpts /dev/pts)?";

pub(super) fn run_driver(ctx: &DriverContext<'_>) -> anyhow::Result<()> {
    let mut open_pairs = Vec::with_capacity(ctx.live);
    drive(ctx, |ctx| open_then_close_pairs(ctx, &mut open_pairs))
}

/// One open pty: the master and the slave end.
struct PtyPair {
    _master: OwnedFd,
    _slave: OwnedFd,
}

fn open_then_close_pairs(
    ctx: &DriverContext<'_>,
    open_pairs: &mut Vec<PtyPair>,
) -> Result<(), OpError> {
    let mut result = Ok(());
    for _ in 0..ctx.live {
        if ctx.should_stop() {
            break;
        }
        match open_pair() {
            Ok(pair) => open_pairs.push(pair),
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    let opened = open_pairs.len() as u64;
    open_pairs.clear(); // closes both ends: vfree of both n_tty_data
    ctx.count_ops(opened);
    result
}

fn open_pair() -> Result<PtyPair, OpError> {
    // SAFETY: plain libc calls on a descriptor we own; the name buffer is large enough and
    // ptsname_r NUL-terminates it on success.
    unsafe {
        let master_fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if master_fd < 0 {
            return Err(OpError::last_os("posix_openpt", Some(NO_PTMX_HINT)));
        }
        let master = OwnedFd::from_raw_fd(master_fd);
        if libc::grantpt(master_fd) != 0 {
            return Err(OpError::last_os("grantpt", None));
        }
        if libc::unlockpt(master_fd) != 0 {
            return Err(OpError::last_os("unlockpt", None));
        }
        let mut name = [0 as libc::c_char; 64];
        let rc = libc::ptsname_r(master_fd, name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(OpError::from_os(
                "ptsname_r",
                std::io::Error::from_raw_os_error(rc),
                None,
            ));
        }
        let slave_name = CStr::from_ptr(name.as_ptr());
        let slave_fd = libc::open(
            slave_name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave_fd < 0 {
            return Err(OpError::last_os("opening the pty slave", None));
        }
        Ok(PtyPair {
            _master: master,
            _slave: OwnedFd::from_raw_fd(slave_fd),
        })
    }
}
