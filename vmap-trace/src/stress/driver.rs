//! What every workload driver shares: the halt flag, the per-workload counters, and the
//! retry-or-abort policy for failed operations.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Counters of one basic workload, shared by all its drivers and read by the supervisor.
#[derive(Debug, Default)]
pub(super) struct KindCounters {
    pub ops: AtomicU64,
    pub failed_ops: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// A driver's view of the run.
pub(super) struct DriverContext<'a> {
    /// Set by the supervisor at the deadline, on a stop request, or after a fatal error.
    halt: &'a AtomicBool,
    counters: &'a KindCounters,
    /// Objects to keep alive at once.
    pub live: usize,
}

impl<'a> DriverContext<'a> {
    pub fn new(halt: &'a AtomicBool, counters: &'a KindCounters, live: usize) -> Self {
        DriverContext {
            halt,
            counters,
            live,
        }
    }

    /// Checked before every new object, so a run ends within one op of its deadline.
    pub fn should_stop(&self) -> bool {
        self.halt.load(Ordering::Relaxed)
    }

    pub fn count_ops(&self, n: u64) {
        self.counters.ops.fetch_add(n, Ordering::Relaxed);
    }

    /// Count `n` failed ops; `error` from operation `what` is shown as the most recent one.
    pub fn count_failures(&self, n: u64, error: &io::Error, what: &str) {
        self.counters.failed_ops.fetch_add(n, Ordering::Relaxed);
        if let Ok(mut last) = self.counters.last_error.lock() {
            *last = Some(format!("{what}: {error}"));
        }
    }
}

/// Why one round of a workload failed.
#[derive(Debug)]
pub(super) enum OpError {
    /// A resource ran out (EAGAIN, ENOMEM, EMFILE, ...): count it, back off briefly, retry.
    Transient {
        what: &'static str,
        error: io::Error,
    },
    /// Retrying cannot help (EPERM, ENOENT, EINVAL, ...): end the run with this error.
    Fatal(anyhow::Error),
}

impl OpError {
    /// Classify an OS error from operation `what`. `hint` is added to fatal errors to tell the
    /// user how to fix them.
    pub fn from_os(what: &'static str, error: io::Error, hint: Option<&str>) -> OpError {
        if is_transient(&error) {
            return OpError::Transient { what, error };
        }
        let error = anyhow::Error::new(error).context(what);
        OpError::Fatal(match hint {
            Some(hint) => error.context(hint.to_owned()),
            None => error,
        })
    }

    /// The last OS error (errno) of operation `what`.
    pub fn last_os(what: &'static str, hint: Option<&str>) -> OpError {
        OpError::from_os(what, io::Error::last_os_error(), hint)
    }
}

/// Errors that mean "out of something for now", which a stress run hits by design when it
/// pushes a limit (pid_max, RLIMIT_NPROC, RLIMIT_NOFILE, memory, pty max).
pub(super) fn is_transient(error: &io::Error) -> bool {
    error.raw_os_error().is_some_and(is_transient_errno)
}

/// [`is_transient`] for a raw errno (usable in a forked child: no allocation).
pub(super) fn is_transient_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::EAGAIN
            | libc::ENOMEM
            | libc::EMFILE
            | libc::ENFILE
            | libc::ENOSPC
            | libc::EBUSY
            | libc::EINTR
    )
}

/// Pause after a transient failure so a driver stuck at a limit does not spin.
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(2);

/// Run `round` until the run halts. Each round creates up to `ctx.live` objects, releases them
/// and counts completed ops itself; transient failures are counted and retried, a fatal one
/// ends this driver with the error.
pub(super) fn drive(
    ctx: &DriverContext<'_>,
    mut round: impl FnMut(&DriverContext<'_>) -> Result<(), OpError>,
) -> anyhow::Result<()> {
    while !ctx.should_stop() {
        match round(ctx) {
            Ok(()) => {}
            Err(OpError::Transient { what, error }) => {
                ctx.count_failures(1, &error, what);
                std::thread::sleep(TRANSIENT_BACKOFF);
            }
            Err(OpError::Fatal(error)) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(is_transient(&io::Error::from_raw_os_error(libc::EAGAIN)));
        assert!(is_transient(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!is_transient(&io::Error::from_raw_os_error(libc::EPERM)));
        assert!(!is_transient(&io::Error::other("not an errno")));
    }

    #[test]
    fn fatal_error_carries_hint() {
        let e = OpError::from_os(
            "bpf(BPF_MAP_CREATE)",
            io::Error::from_raw_os_error(libc::EPERM),
            Some("needs CAP_BPF"),
        );
        let OpError::Fatal(e) = e else {
            panic!("EPERM must be fatal")
        };
        let text = format!("{e:#}");
        assert!(text.contains("needs CAP_BPF"), "{text}");
        assert!(text.contains("bpf(BPF_MAP_CREATE)"), "{text}");
    }

    #[test]
    fn drive_counts_transient_failures_and_stops_on_fatal() {
        let halt = AtomicBool::new(false);
        let counters = KindCounters::default();
        let ctx = DriverContext::new(&halt, &counters, 1);
        let mut calls = 0;
        let result = drive(&ctx, |ctx| {
            calls += 1;
            match calls {
                1 => {
                    ctx.count_ops(1);
                    Ok(())
                }
                2 => Err(OpError::from_os(
                    "fork",
                    io::Error::from_raw_os_error(libc::EAGAIN),
                    None,
                )),
                _ => Err(OpError::from_os(
                    "open",
                    io::Error::from_raw_os_error(libc::ENOENT),
                    None,
                )),
            }
        });
        assert!(result.is_err());
        assert_eq!(calls, 3);
        assert_eq!(counters.ops.load(Ordering::Relaxed), 1);
        assert_eq!(counters.failed_ops.load(Ordering::Relaxed), 1);
        assert!(counters
            .last_error
            .lock()
            .unwrap()
            .as_deref()
            .unwrap()
            .starts_with("fork:"));
    }

    #[test]
    fn drive_returns_when_halted() {
        let halt = AtomicBool::new(true);
        let counters = KindCounters::default();
        let ctx = DriverContext::new(&halt, &counters, 1);
        drive(&ctx, |_| panic!("must not run a round after halt")).unwrap();
    }
}
