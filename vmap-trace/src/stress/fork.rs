//! `fork`: many live processes at once.
//!
//! Like `threads`, but each task is a process: every fork allocates a VMAP_STACK kernel stack
//! and every exit frees one. Each round forks `live` children that block reading a pipe; once
//! all exist the pipe's write end is closed, every child sees EOF and exits, and all are
//! reaped. No zombies are left behind, and if the forking process dies the pipe closes and the
//! children exit on their own.
//!
//! The forking happens in a single-threaded helper process (one per driver), not in this
//! process: fork write-locks the parent's mmap_lock (dup_mmap) and COW-faults its threads, so
//! forking from here would stall every other thread of a `mix` run on mmap_lock and bury the
//! vmap locks under mm contention in a lock profile. The helper reports its counts through a
//! shared anonymous page and stops when the driver raises a flag there.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use super::driver::{is_transient_errno, DriverContext, OpError};

const FORK_LIMIT_HINT: &str = "check `ulimit -u`, /proc/sys/kernel/pid_max and threads-max";

/// How often the driver copies the helper's counters into the run's counters.
const MIRROR_INTERVAL: Duration = Duration::from_millis(5);

/// What the helper process shares with its driver. Lives in a MAP_SHARED page, so only
/// atomics (zero bytes are a valid initial state for all of them).
#[repr(C)]
#[derive(Default)]
struct HelperState {
    /// Set by the driver: finish the current round and exit.
    halt: AtomicBool,
    /// Children forked and reaped.
    ops: AtomicU64,
    /// Rounds cut short by a transient fork/pipe2 failure.
    failed_ops: AtomicU64,
    /// errno of the latest transient failure.
    last_transient_errno: AtomicI32,
    /// errno that made the helper give up (0: none).
    fatal_errno: AtomicI32,
}

/// An anonymous shared mapping holding a [`HelperState`]; unmapped on drop.
struct SharedState {
    state: *mut HelperState,
}

impl SharedState {
    fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; the kernel zero-fills it, which is the
        // all-zero/false Default of HelperState.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<HelperState>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedState { state: addr.cast() })
    }

    fn get(&self) -> &HelperState {
        // SAFETY: mapped, zero-initialised and aligned (page aligned) for our lifetime.
        unsafe { &*self.state }
    }
}

impl Drop for SharedState {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(); nothing borrows it past self.
        unsafe { libc::munmap(self.state.cast(), std::mem::size_of::<HelperState>()) };
    }
}

pub(super) fn run_driver(ctx: &DriverContext<'_>) -> anyhow::Result<()> {
    let shared = SharedState::new()
        .map_err(|e| anyhow::Error::new(e).context("mmap of the fork helper's shared page"))?;
    // Allocated here: the helper must not allocate (it is a fork of a multi-threaded process).
    let mut child_pids: Vec<libc::pid_t> = vec![0; ctx.live];
    // SAFETY: getpid cannot fail.
    let driver_pid = unsafe { libc::getpid() };

    // Start the helper, retrying transient failures like any other op.
    let helper = loop {
        if ctx.should_stop() {
            return Ok(());
        }
        // SAFETY: the child runs helper_main, which makes only async-signal-safe system
        // calls and never returns into Rust code.
        match unsafe { libc::fork() } {
            0 => unsafe { helper_main(shared.get(), &mut child_pids, driver_pid) },
            -1 => {
                match OpError::last_os("fork (starting the fork helper)", Some(FORK_LIMIT_HINT)) {
                    OpError::Transient { what, error } => {
                        ctx.count_failures(1, &error, what);
                        std::thread::sleep(MIRROR_INTERVAL);
                    }
                    OpError::Fatal(error) => return Err(error),
                }
            }
            pid => break pid,
        }
    };

    let state = shared.get();
    let mut mirror = CounterMirror::default();
    let helper_status = loop {
        if ctx.should_stop() {
            state.halt.store(true, Ordering::SeqCst);
            break wait_for(helper);
        }
        if let Some(status) = try_wait_for(helper) {
            break status; // the helper gave up (fatal error) or was killed
        }
        mirror.update(ctx, state);
        std::thread::sleep(MIRROR_INTERVAL);
    };
    mirror.update(ctx, state);

    let fatal = state.fatal_errno.load(Ordering::SeqCst);
    if fatal != 0 {
        return Err(anyhow::Error::new(io::Error::from_raw_os_error(fatal))
            .context("fork (in the fork helper)")
            .context(FORK_LIMIT_HINT));
    }
    if !ctx.should_stop() {
        anyhow::bail!(
            "the fork helper process ended unexpectedly (wait status {helper_status:#x})"
        );
    }
    Ok(())
}

/// Copies the helper's counters into the run's, as deltas.
#[derive(Default)]
struct CounterMirror {
    ops: u64,
    failed_ops: u64,
}

impl CounterMirror {
    fn update(&mut self, ctx: &DriverContext<'_>, state: &HelperState) {
        let ops = state.ops.load(Ordering::Relaxed);
        ctx.count_ops(ops - self.ops);
        self.ops = ops;
        let failed = state.failed_ops.load(Ordering::Relaxed);
        if failed > self.failed_ops {
            let errno = state.last_transient_errno.load(Ordering::Relaxed);
            ctx.count_failures(
                failed - self.failed_ops,
                &io::Error::from_raw_os_error(errno),
                "fork",
            );
            self.failed_ops = failed;
        }
    }
}

/// The helper: fork rounds of `child_pids.len()` children until told to halt.
///
/// # Safety
/// Must only be called in a freshly forked child. Uses only async-signal-safe system calls
/// and atomics, no allocation and no locks, and never returns.
unsafe fn helper_main(
    state: &HelperState,
    child_pids: &mut [libc::pid_t],
    driver_pid: libc::pid_t,
) -> ! {
    // Die with the driver thread (e.g. if the tool is killed; the getppid check covers a
    // death before the prctl), and drop every inherited fd so pty and BPF map fds of other
    // drivers are not kept open by us or our children.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    if libc::getppid() != driver_pid {
        libc::_exit(1);
    }
    libc::syscall(
        libc::SYS_close_range,
        0 as libc::c_uint,
        libc::c_uint::MAX,
        0 as libc::c_uint,
    );

    while !state.halt.load(Ordering::SeqCst) {
        let mut release = [0 as libc::c_int; 2];
        if libc::pipe2(release.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            if !note_failure(state, errno()) {
                break;
            }
            continue;
        }
        let mut forked = 0;
        let mut fork_errno = 0;
        while forked < child_pids.len() && !state.halt.load(Ordering::Relaxed) {
            match libc::fork() {
                0 => wait_for_release_then_exit(release[0], release[1]),
                -1 => {
                    fork_errno = errno();
                    break;
                }
                pid => {
                    child_pids[forked] = pid;
                    forked += 1;
                }
            }
        }
        // EOF for every child: they all exit now.
        libc::close(release[1]);
        libc::close(release[0]);
        for &pid in &child_pids[..forked] {
            wait_for(pid);
        }
        state.ops.fetch_add(forked as u64, Ordering::Relaxed);
        if fork_errno != 0 && !note_failure(state, fork_errno) {
            break;
        }
    }
    libc::_exit(0)
}

/// Record a failure in the helper. Returns whether to go on (after a short pause).
unsafe fn note_failure(state: &HelperState, errno: i32) -> bool {
    if is_transient_errno(errno) {
        state.last_transient_errno.store(errno, Ordering::Relaxed);
        state.failed_ops.fetch_add(1, Ordering::Relaxed);
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        libc::nanosleep(&pause, std::ptr::null_mut());
        true
    } else {
        state.fatal_errno.store(errno, Ordering::SeqCst);
        false
    }
}

/// Body of a counted child: hold until the release pipe reaches EOF, then exit.
unsafe fn wait_for_release_then_exit(read_fd: libc::c_int, write_fd: libc::c_int) -> ! {
    // Our copy of the write end would keep the pipe open forever.
    libc::close(write_fd);
    let mut byte = 0u8;
    while libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) == -1 && errno() == libc::EINTR {}
    // EOF (released), a stray byte, or any other error: exit either way, without running the
    // parent's destructors or atexit handlers.
    libc::_exit(0)
}

fn errno() -> i32 {
    // SAFETY: reading the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Block until `pid` exits; returns its wait status. Retries EINTR; any other failure
/// (ECHILD: already reaped) means there is nothing left to wait for.
fn wait_for(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1 && errno() == libc::EINTR {}
    status
}

/// The wait status of `pid` if it has exited, without blocking.
fn try_wait_for(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: plain waitpid on our own child.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => None,
        -1 if errno() == libc::EINTR => None,
        _ => Some(status),
    }
}
