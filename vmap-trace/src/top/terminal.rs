//! The terminal: checked before anything is attached, put into full-screen raw mode, and put
//! back however the view ends (quit, error, Ctrl-C, SIGINT, SIGTERM, panic). When the terminal
//! itself goes away (SIGHUP, a hung-up tty) there is nothing to restore: the process ends, and
//! the probes detach as its file descriptors close.
use std::fs::File;
use std::io::{IsTerminal, Stdout};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossterm::cursor::{Hide, Show};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

/// Refuse to start unless stdout is a terminal: a full-screen view written to a pipe or file is
/// escape-sequence garbage, and `record` is the tool for non-interactive use.
pub fn require_terminal() -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "stdout is not a terminal: `vmap-trace top` is an interactive full-screen view. \
             To measure without a terminal, record and report instead: \
             `sudo vmap-trace record -d 10 -o vmap.rec && vmap-trace report vmap.rec`"
        );
    }
    Ok(())
}

/// True while the terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static PANIC_HOOK: Once = Once::new();
/// The thread that draws. Background threads (model, flamegraph writer) catch their own panics
/// and report them on screen, so a panic there must not tear the view down.
static UI_THREAD: OnceLock<ThreadId> = OnceLock::new();

/// Leave raw mode and the alternate screen and show the cursor; idempotent, so the panic hook,
/// the guard's drop and an error path can all call it.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// Restore the terminal before the panic message is printed, or it would be drawn on the
/// alternate screen (and lost) with the terminal left in raw mode. Background threads are the
/// exception while the view runs: they catch their panics and show them (verdict line, status
/// line), and the view goes on.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let background = UI_THREAD
                .get()
                .is_some_and(|ui| *ui != std::thread::current().id());
            if background && ACTIVE.load(Ordering::SeqCst) {
                return;
            }
            restore();
            previous(info);
        }));
    });
}

/// The full-screen terminal; dropping it restores the terminal.
pub struct TerminalGuard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    pub fn enter() -> Result<TerminalGuard> {
        let _ = UI_THREAD.set(std::thread::current().id());
        install_panic_hook();
        enable_raw_mode().context("cannot put the terminal into raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let setup = || -> Result<Terminal<CrosstermBackend<Stdout>>> {
            execute!(std::io::stdout(), EnterAlternateScreen, Hide)
                .context("cannot switch to the alternate screen")?;
            Terminal::new(CrosstermBackend::new(std::io::stdout()))
                .context("cannot size the terminal")
        };
        match setup() {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// A flag raised by SIGINT or SIGTERM. In raw mode Ctrl-C is a key, but `kill -INT` still
/// arrives as a signal. SIGHUP keeps its default action (terminate): the terminal is gone, and
/// a view that outlived it would keep its probes attached for nobody.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handler")?;
    }
    Ok(stop)
}

/// The terminal's input, watched with poll(2) before crossterm reads it: crossterm 0.29 reads a
/// hung-up tty in a loop that never returns (read(2) keeps returning 0), which would leave the
/// view spinning at 100% CPU with its probes attached.
pub struct TerminalInput {
    fd: RawFd,
    /// /dev/tty when stdin is not the terminal (crossterm reads the same).
    _tty: Option<File>,
}

impl TerminalInput {
    pub fn open() -> Result<TerminalInput> {
        if std::io::stdin().is_terminal() {
            return Ok(TerminalInput { fd: 0, _tty: None });
        }
        let tty = File::open("/dev/tty")
            .context("cannot open the terminal (/dev/tty) for keyboard input")?;
        Ok(TerminalInput {
            fd: tty.as_raw_fd(),
            _tty: Some(tty),
        })
    }

    /// Wait up to `timeout` for input; an error once the terminal has hung up. A signal
    /// (SIGWINCH on resize) ends the wait early.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return if err.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err).context("cannot wait for the terminal")
            };
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            bail!("the terminal went away");
        }
        Ok(pfd.revents & libc::POLLIN != 0)
    }
}
