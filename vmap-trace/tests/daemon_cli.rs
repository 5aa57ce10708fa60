//! `vmap-trace daemon` on bad input: clear errors and non-zero exits, before anything is
//! attached. None of these need root (as root, the privilege test drops to `nobody`).
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vmap-trace");

fn daemon(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("daemon")
        .args(args)
        .output()
        .expect("run vmap-trace daemon")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn daemon_help_lists_every_flag_and_the_default_address() {
    let out = daemon(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "127.0.0.1:9464",
        "--record-dir",
        "--record-every",
        "--keep",
        "--per-task",
        "--top-locks",
        "--lock-timing",
        "--log-format",
        "SIGTERM",
        "SIGHUP",
        "--max-connections",
        "--header-timeout",
        "--idle-timeout",
        "loopback",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

#[test]
fn daemon_bad_listen_address_is_a_usage_error() {
    let out = daemon(&["--listen", "localhost-ish"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
}

#[test]
fn daemon_listen_accepts_a_host_name() {
    // The port is taken, so the daemon stops at the bind, before attaching: the error names
    // the address localhost was resolved to.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = daemon(&["--listen", &format!("localhost:{port}")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn daemon_warns_when_the_address_is_not_loopback() {
    // The unwritable --record-dir stops the daemon before it binds anything: nothing listens
    // beyond loopback, even for a moment.
    let run = |listen: &str| {
        daemon(&[
            "--listen",
            listen,
            "--log-format",
            "plain",
            "--record-dir",
            "/proc/vmap-trace-test",
        ])
    };
    let out = run("0.0.0.0:9464");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("vmap-trace: warning: --listen 0.0.0.0:9464 is not a loopback address")
            && err.contains("reachable from the network, without authentication"),
        "{err}"
    );
    let out = run("127.0.0.1:9464");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!stderr(&out).contains("loopback"), "{}", stderr(&out));
}

#[test]
fn daemon_keep_zero_is_a_usage_error() {
    let out = daemon(&["--record-dir", "/tmp", "--keep", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--keep"), "{}", stderr(&out));
}

#[test]
fn daemon_port_in_use_fails_fast_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = daemon(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails before attaching anything"
    );
}

#[test]
fn daemon_unwritable_record_dir_is_a_clear_error() {
    // Nobody, not even root, can create a directory in /proc.
    let out = daemon(&[
        "--listen",
        "127.0.0.1:0",
        "--record-dir",
        "/proc/vmap-trace-test",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--record-dir /proc/vmap-trace-test"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn daemon_without_privileges_the_error_says_so() {
    let mut cmd = Command::new(BIN);
    cmd.args(["daemon", "--listen", "127.0.0.1:0"]);
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534); // nobody
    }
    let out = cmd.output().expect("run vmap-trace daemon");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out).to_lowercase();
    assert!(
        err.contains("root") || err.contains("cap_bpf") || err.contains("permission"),
        "{err}"
    );
}
