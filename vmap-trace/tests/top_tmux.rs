//! `vmap-trace top` for real: attached to the running kernel, inside tmux, while `stress`
//! loads the vmap allocator. Keys are sent with `tmux send-keys` and the screen is read with
//! `tmux capture-pane`, polling with a deadline rather than sleeping. Needs root.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{is_root, BIN};

/// A tmux session and the stress run behind it, torn down however the test ends.
struct Harness {
    session: String,
    stress: Option<Child>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
        if let Some(mut s) = self.stress.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Harness {
    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.session])
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", &self.session, keys]);
    }

    /// A pane variable such as `alternate_on` or `cursor_flag`.
    fn pane(&self, var: &str) -> String {
        self.tmux(&[
            "display-message",
            "-p",
            "-t",
            &self.session,
            &format!("#{{{var}}}"),
        ])
        .trim()
        .to_string()
    }

    /// Poll the pane until `ok` holds; fail with the last screen after `within`, or at once if
    /// top reported an error.
    fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        self.wait_until(what, within, ok, true)
    }

    fn wait_until(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
        errors_fail: bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                !(errors_fail && screen.contains("vmap-trace: error")),
                "top failed while waiting for {what}:\n{screen}"
            );
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `57k/s` -> 57000.0; `0/s` -> 0.0
fn parse_rate(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches("/s");
    let (num, scale) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1e3),
        'M' => (&s[..s.len() - 1], 1e6),
        _ => (s, 1.0),
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

/// allocs/s from the `vmalloc allocs 57k/s  frees ...` strip.
fn allocs_per_s(screen: &str) -> Option<f64> {
    let rest = screen
        .lines()
        .find_map(|l| l.strip_prefix("vmalloc allocs "))?;
    parse_rate(rest.split_whitespace().next()?)
}

/// The cont/s cells of the lock table, read under the header's `cont/s` (right-aligned).
fn lock_contention_rates(screen: &str) -> Vec<f64> {
    let lines: Vec<&str> = screen.lines().collect();
    let Some(h) = lines
        .iter()
        .position(|l| l.starts_with("lock ") && l.contains("cont/s"))
    else {
        return vec![];
    };
    let end = lines[h]
        .find("cont/s")
        .map(|b| lines[h][..b].chars().count() + "cont/s".len())
        .unwrap();
    lines[h + 1..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let cells: Vec<char> = l.chars().collect();
            let cell: String = cells.get(end.saturating_sub(7)..end)?.iter().collect();
            parse_rate(&cell)
        })
        .collect()
}

#[test]
fn top_in_tmux_shows_live_figures_and_obeys_keys() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_top(
        &format!("vmap-trace-top-{}", std::process::id()),
        dir.path(),
        "--interval 0.5",
    );
    // Load once top is up (attaching is slower on a loaded machine); the harness kills it when
    // the test ends.
    h.wait_for("the view", Duration::from_secs(15), |s| {
        s.contains(" Locks  Ops  CPUs  Tasks ")
    });
    h.stress = Some(
        Command::new(BIN)
            .args(["stress", "mix", "--duration", "15"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stress starts"),
    );

    // Real figures: allocations per second and at least one contended lock.
    let screen = h.wait_for(
        "non-zero allocs/s and a contended lock",
        Duration::from_secs(10),
        |s| {
            allocs_per_s(s).is_some_and(|a| a > 0.0)
                && lock_contention_rates(s).iter().any(|&c| c > 0.0)
        },
    );
    assert!(screen.contains("vmap-trace top  kernel "), "{screen}");
    assert!(
        screen.contains("probes tp_btf") || screen.contains("probes tracepoint"),
        "{screen}"
    );
    // the measured interval (the first one also spans the symbolizer's start-up)
    assert!(
        screen.contains(" Locks  Ops  CPUs  Tasks   sort wait/s  window last "),
        "{screen}"
    );
    assert_eq!(h.pane("alternate_on"), "1");

    // tab: ops, CPUs, tasks, back to locks
    // generous: CI machines are loaded, and stress plus the model compete with the view for 2 CPUs
    let short = Duration::from_secs(6);
    h.keys("Tab");
    let ops = h.wait_for("the ops view", short, |s| {
        s.contains(" vmalloc operations ")
    });
    assert!(
        ops.lines().any(|l| l.starts_with("allocations ")
            && parse_rate(l.split_whitespace().nth(1).unwrap_or("")).is_some_and(|r| r > 0.0)),
        "{ops}"
    );
    h.keys("Tab");
    h.wait_for("the CPUs view", short, |s| {
        s.contains(" CPUs: lock wait per second of wall time ")
    });
    h.keys("Tab");
    h.wait_for("the tasks view", short, |s| {
        s.contains(" Tasks by lock wait (")
    });
    h.keys("Tab");
    h.wait_for("the locks view again", short, |s| {
        s.contains(" Contended locks ")
    });

    // s: next sort key
    h.keys("s");
    h.wait_for("sort by cont/s", short, |s| s.contains("sort cont/s"));

    // ?: help, Escape closes it
    h.keys("?");
    h.wait_for("the help", short, |s| s.contains("vmap-trace top: help"));
    h.keys("Escape");
    h.wait_for("the help to close", short, |s| {
        !s.contains("vmap-trace top: help")
    });

    // p: paused, the screen stops changing; p again resumes
    h.keys("p");
    // (capture-pane drops the tag's trailing blank at the right edge)
    let paused = h.wait_for("the pause indicator", short, |s| {
        s.lines().nth(2).is_some_and(|l| l.ends_with(" PAUSED"))
    });
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(h.capture(), paused, "the screen changed while paused");
    h.keys("p");
    h.wait_for("the pause to end", short, |s| !s.contains("PAUSED"));

    // f: the window since start, drawn on a background thread into top's working directory
    h.keys("f");
    let finished = |s: &str| {
        s.contains("wrote ./vmap-trace-top-")
            || s.contains("no flamegraph written")
            || s.contains("flamegraph not written")
    };
    // (the status says it is drawing, unless it has finished before the next capture)
    h.wait_for("the flamegraph to start", short, |s| {
        s.contains("drawing a flamegraph of the stacks since start") || finished(s)
    });
    let status = h.wait_for("the flamegraph status", Duration::from_secs(30), finished);
    assert!(
        status.contains("wrote ./vmap-trace-top-"),
        "stress ran and locks were contended, yet:\n{status}"
    );
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(
        written[0].extension().is_some_and(|e| e == "svg"),
        "{written:?}"
    );
    let svg = std::fs::read_to_string(&written[0]).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("[spinlock"),
        "not a flamegraph of lock waits"
    );

    // The reference model has run on the measured load (on its own thread, so the keys above
    // were never blocked by it).
    let verdict = h.wait_for("the model's verdict", Duration::from_secs(15), |s| {
        s.contains(" at this load ")
    });
    let line = verdict
        .lines()
        .find(|l| l.starts_with("model verdict: "))
        .unwrap_or_default();
    assert!(
        line.contains(" would ") || line.contains("neither design"),
        "{verdict}"
    );

    // q: exits 0 and gives the terminal back (main screen, cooked mode, cursor shown)
    h.keys("q");
    assert_terminal_restored(&h);
}

/// Start `top` in a fresh tmux session; the shell reports top's exit status and the terminal
/// mode once it ends.
fn start_top(session: &str, dir: &std::path::Path, top_args: &str) -> Harness {
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is needed for this test (`cargo xtask test` installs it)"
    );
    let h = Harness {
        session: session.to_string(),
        stress: None,
    };
    let script =
        format!("{BIN} top {top_args}; echo top-exited=$?; stty -a; echo stty-done; sleep 30");
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-c",
            dir.to_str().unwrap(),
            "-s",
            session,
            &script,
        ])
        .status()
        .unwrap();
    assert!(started.success(), "tmux new-session failed");
    h
}

/// After top ended: exit status 0, main screen, cooked mode with echo, cursor shown.
fn assert_terminal_restored(h: &Harness) {
    // (a debug build on a loaded machine can take seconds per refresh)
    let after = h.wait_for("top to exit", Duration::from_secs(15), |s| {
        s.contains("stty-done")
    });
    assert!(after.contains("top-exited=0"), "{after}");
    assert!(
        !after.contains(" Contended locks "),
        "the full-screen view is still shown:\n{after}"
    );
    let words: Vec<&str> = after.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "terminal left in raw mode:\n{after}"
    );
    assert_eq!(h.pane("alternate_on"), "0");
    assert_eq!(h.pane("cursor_flag"), "1");
}

/// The pid of `top`, the child of the pane's shell.
fn top_pid(h: &Harness) -> i32 {
    let shell = h.pane("pane_pid");
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let top: i32 = children
        .split_whitespace()
        .next()
        .expect("top runs under the pane's shell")
        .parse()
        .unwrap();
    assert!(std::fs::read_to_string(format!("/proc/{top}/cmdline"))
        .unwrap()
        .contains("top"));
    top
}

#[test]
fn top_in_tmux_restores_the_terminal_on_sigterm() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let h = start_top(
        &format!("vmap-trace-top-term-{}", std::process::id()),
        dir.path(),
        "",
    );
    h.wait_for("the view", Duration::from_secs(15), |s| {
        s.contains(" Locks  Ops  CPUs  Tasks ")
    });
    assert_eq!(h.pane("alternate_on"), "1");
    assert_eq!(unsafe { libc::kill(top_pid(&h), libc::SIGTERM) }, 0);
    assert_terminal_restored(&h);
}

#[test]
fn top_in_tmux_ends_when_the_terminal_goes_away() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // A dropped SSH session: the terminal hangs up under the view. It must end (and detach its
    // probes), not linger or spin on a dead tty.
    let dir = tempfile::tempdir().unwrap();
    let h = start_top(
        &format!("vmap-trace-top-hup-{}", std::process::id()),
        dir.path(),
        "",
    );
    h.wait_for("the view", Duration::from_secs(15), |s| {
        s.contains(" Locks  Ops  CPUs  Tasks ")
    });
    let top = top_pid(&h);
    h.tmux(&["kill-session", "-t", &h.session]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{top}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{top}/stat")).unwrap_or_default();
        // a zombie has ended; its parent (the pane's shell) may simply not have reaped it yet
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        if Instant::now() > deadline {
            // do not leave it behind for the next test run
            unsafe { libc::kill(top, libc::SIGKILL) };
            panic!("top still runs 5 s after its terminal went away: {state}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn top_in_tmux_without_privileges_says_so() {
    if !is_root() {
        eprintln!("skipped: needs root (to drop to an unprivileged user)");
        return;
    }
    // On a terminal, as nobody: the privilege check fails before anything is attached.
    let session = format!("vmap-trace-top-nobody-{}", std::process::id());
    let h = Harness {
        session: session.clone(),
        stress: None,
    };
    let script = format!("setpriv --reuid=65534 --regid=65534 --clear-groups {BIN} top; echo top-exited=$?; sleep 30");
    assert!(Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "20",
            "-s",
            &session,
            &script
        ])
        .status()
        .unwrap()
        .success());
    let screen = h.wait_until(
        "top to refuse",
        Duration::from_secs(10),
        |s| s.contains("top-exited="),
        false,
    );
    assert!(screen.contains("top-exited=1"), "{screen}");
    assert!(
        screen.contains("vmap-trace: error: loading eBPF tracing programs needs root"),
        "{screen}"
    );
    assert!(!screen.contains("attaching"), "{screen}");
}

#[test]
fn top_refuses_without_a_terminal() {
    // Runs as any user: the terminal check comes before the privilege check and before attaching.
    let out = Command::new(BIN)
        .args(["top"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stdout is not a terminal"), "{err}");
    assert!(err.contains("vmap-trace record"), "{err}");
    assert!(!err.contains("attaching"), "{err}");
}

#[test]
fn top_rejects_a_bad_interval() {
    let out = Command::new(BIN)
        .args(["top", "--interval", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--interval must be between 0.1 and 60 seconds"));
}

#[test]
fn top_rate_parsing() {
    assert_eq!(parse_rate("57k/s"), Some(57_000.0));
    assert_eq!(parse_rate("0/s"), Some(0.0));
    assert_eq!(parse_rate("1.5M"), Some(1_500_000.0));
    assert_eq!(parse_rate("-"), None);
    let screen = "lock         vmap cont/s wait/s\nfoo          100%   1.2k  3.00ms\nbar             -      0      0\n\nvmalloc allocs 57k/s  frees 1/s";
    assert_eq!(lock_contention_rates(screen), vec![1200.0, 0.0]);
    assert_eq!(allocs_per_s(screen), Some(57_000.0));
}
