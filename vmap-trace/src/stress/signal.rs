//! Ctrl-C / SIGTERM / SIGHUP handling for the CLI: the first signal asks the run to stop (so it still
//! reaps its children, closes its fds and prints its summary); a second one terminates.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the SIGINT / SIGTERM handler. Pass it as the `stop` flag of
/// [`super::run_workload`].
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Install the handler for SIGINT, SIGTERM and SIGHUP (a closed terminal).
///
/// SA_RESETHAND restores the default action after the first delivery, so a second Ctrl-C
/// kills a run that does not stop fast enough. SA_RESTART keeps blocking calls (waitpid,
/// read) from failing with EINTR. Forked children inherit the handler, which is harmless:
/// they only wait on a pipe and exit.
pub fn install_stop_handlers() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
        // touches an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
