//! `threads`: many live threads at once.
//!
//! With VMAP_STACK every new task's kernel stack is a 16 KiB vmalloc area (plus a guard page).
//! The kernel caches two freed stacks per CPU, so a spawn/join loop with one thread at a time
//! reuses cached stacks and hardly reaches the allocator. Each round here spawns `live`
//! threads that all block on a gate until the last one exists, then releases and joins them:
//! most of the spawns miss the cache (alloc_vmap_area), and most of the exits find the cache
//! full (vfree, lazily freed and later purged). Frees run from an RCU callback, often on the
//! other CPU, which also defeats the cache.

use std::ptr;
use std::sync::{Condvar, Mutex};

use super::driver::{drive, DriverContext, OpError};

/// User-space stack of the short-lived threads; they only wait on the gate. (The kernel stack
/// we are after is allocated regardless of this size.) glibc caches freed thread stacks, so
/// after the first round these need no mmap/munmap.
const USER_STACK_BYTES: usize = 64 * 1024;

/// A one-shot gate: threads wait until it opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        // A poisoned lock can only come from a panic while holding it, which none of these
        // short critical sections can do; treat it as open rather than hang.
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        while !*open {
            match self.opened.wait(open) {
                Ok(guard) => open = guard,
                Err(_) => return,
            }
        }
    }

    fn open(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = true;
        }
        self.opened.notify_all();
    }
}

/// Thread attributes: a small user stack, joinable.
struct ThreadAttr(libc::pthread_attr_t);

impl ThreadAttr {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: pthread_attr_t is a plain C type for which all-zero bytes are valid; init
        // prepares it, setstacksize only adjusts it, and destroy runs in Drop.
        let mut attr = ThreadAttr(unsafe { std::mem::zeroed() });
        let rc = unsafe { libc::pthread_attr_init(&mut attr.0) };
        if rc != 0 {
            // Nothing to destroy: forget the uninitialised attr.
            std::mem::forget(attr);
            anyhow::bail!(
                "pthread_attr_init: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        let rc = unsafe { libc::pthread_attr_setstacksize(&mut attr.0, USER_STACK_BYTES) };
        if rc != 0 {
            anyhow::bail!(
                "pthread_attr_setstacksize: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(attr)
    }
}

impl Drop for ThreadAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in new().
        unsafe { libc::pthread_attr_destroy(&mut self.0) };
    }
}

pub(super) fn run_driver(ctx: &DriverContext<'_>) -> anyhow::Result<()> {
    let attr = ThreadAttr::new()?;
    let mut live_threads = Vec::with_capacity(ctx.live);
    drive(ctx, |ctx| spawn_hold_join(ctx, &attr, &mut live_threads))
}

/// Body of every short-lived thread.
extern "C" fn wait_on_gate(gate: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `gate` points at the round's Gate, which LiveThreads keeps alive until this
    // thread has been joined.
    let gate = unsafe { &*(gate as *const Gate) };
    gate.wait();
    ptr::null_mut()
}

/// The threads of one round. Dropping it opens the gate and joins them all, so no thread can
/// outlive the gate it points to, whatever path leaves the round.
struct LiveThreads<'a> {
    gate: &'a Gate,
    threads: &'a mut Vec<libc::pthread_t>,
}

impl Drop for LiveThreads<'_> {
    fn drop(&mut self) {
        self.gate.open();
        for thread in self.threads.drain(..) {
            // SAFETY: a joinable thread we created and have not joined yet.
            unsafe { libc::pthread_join(thread, ptr::null_mut()) };
        }
    }
}

/// Spawn up to `ctx.live` threads that stay alive until all exist, then release and join them.
/// Every spawned thread is joined, also when a spawn fails or the run halts half way.
///
/// Raw pthreads rather than std::thread: std gives every thread a signal stack that it mmaps
/// and munmaps, whose mmap_lock traffic would drown the vmap locks in contention profiles.
fn spawn_hold_join(
    ctx: &DriverContext<'_>,
    attr: &ThreadAttr,
    threads: &mut Vec<libc::pthread_t>,
) -> Result<(), OpError> {
    let gate = Gate::default();
    let live = LiveThreads {
        gate: &gate,
        threads,
    };
    let mut spawn_error = None;
    for _ in 0..ctx.live {
        if ctx.should_stop() {
            break;
        }
        let mut thread: libc::pthread_t = 0;
        // SAFETY: valid attr; the argument outlives the thread (see LiveThreads).
        let rc = unsafe {
            libc::pthread_create(
                &mut thread,
                &attr.0,
                wait_on_gate,
                &gate as *const Gate as *mut libc::c_void,
            )
        };
        if rc != 0 {
            spawn_error = Some(std::io::Error::from_raw_os_error(rc));
            break;
        }
        live.threads.push(thread);
    }
    let spawned = live.threads.len() as u64;
    drop(live); // open the gate, join everyone
    ctx.count_ops(spawned);
    match spawn_error {
        Some(error) => Err(OpError::from_os(
            "pthread_create",
            error,
            Some("check `ulimit -u` and /proc/sys/kernel/threads-max"),
        )),
        None => Ok(()),
    }
}
