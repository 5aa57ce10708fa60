//! The flamegraph, diff and report-export commands end to end, on recordings written by the
//! library (no root needed): outputs, and clear errors with non-zero exits on bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmap_trace::profile::{
    attribution, recording, AllocatorDesign, Frame, LockWait, Log2Histogram, Losses, Profile,
    RecordingMeta, StackWait, TaskWaitSummary, VmallocOps, WaitHistogram,
};

const BIN: &str = env!("CARGO_BIN_EXE_vmap-trace");

fn frames(names: &[&str]) -> Vec<Frame> {
    names
        .iter()
        .map(|n| Frame {
            addr: 0xffffffff81000000,
            function: Some(n.to_string()),
            offset: 0x10,
        })
        .collect()
}

fn stack(lock_addr: u64, flags: u32, names: &[&str], count: u64, total_ns: u64) -> StackWait {
    let frames = frames(names);
    StackWait {
        task: None,
        user_frames: Vec::new(),
        lock_addr,
        flags,
        attribution: attribution::attribute(&frames),
        frames: frames.into(),
        count,
        total_ns,
        max_ns: total_ns / count,
    }
}

fn wait(count: u64, total_ns: u64) -> WaitHistogram {
    WaitHistogram {
        count,
        total_ns,
        max_ns: total_ns / count.max(1),
        hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, count]),
    }
}

/// A vmap spinlock path and a tty mutex path, on a 6.1 (legacy) kernel.
fn profile(kernel: &str, vmap_ns: u64) -> Profile {
    Profile {
        meta: RecordingMeta {
            stack_keys: Default::default(),
            other_lock_period: 1,
            lock_waits: Default::default(),
            tool_version: "0.1.0".into(),
            kernel_release: kernel.into(),
            hostname: "host".into(),
            design: AllocatorDesign::Legacy,
            design_detail: None,
            cpus: 8,
            started_unix_s: 1_700_000_000,
            duration_ns: 5_000_000_000,
            hooks: vec![],
            lock_names_available: true,
            stacks_symbolized: true,
            notes: vec![],
            vmap_locks: vec![],
        },
        ops: VmallocOps {
            allocs: 5000,
            frees: 4990,
            purges: 5,
            ..Default::default()
        },
        locks: vec![
            LockWait {
                lock_addr: 0xffffffff82001000,
                flags: 1,
                name: Some("vmap_area_lock".into()),
                wait: wait(100, vmap_ns),
            },
            LockWait {
                lock_addr: 0xffff888100002000,
                flags: 32,
                name: None,
                wait: wait(5, 300_000),
            },
        ],
        stacks: vec![
            stack(
                0xffffffff82001000,
                1,
                &[
                    "native_queued_spin_lock_slowpath",
                    "_raw_spin_lock",
                    "alloc_vmap_area",
                    "__vmalloc_node_range_noprof",
                    "do_syscall_64",
                ],
                100,
                vmap_ns,
            ),
            stack(
                0xffff888100002000,
                32,
                &[
                    "__mutex_lock.constprop.0",
                    "tty_lock",
                    "tty_open",
                    "do_syscall_64",
                ],
                5,
                300_000,
            ),
        ],
        cpus: vec![],
        tasks: vec![TaskWaitSummary {
            tid: 7,
            tgid: 7,
            comm: "sshd".into(),
            count: 105,
            total_ns: vmap_ns + 300_000,
            max_ns: 90_000,
        }],
        losses: Losses::default(),
        functions: vec![],
        lock_timing: vec![],
        stack_sampling: Default::default(),
    }
}

fn save(dir: &Path, name: &str, p: &Profile) -> PathBuf {
    let path = dir.join(name);
    recording::save(p, &path).unwrap();
    path
}

fn vmap_trace(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A failure: exit code 1 (not a panic's 101), a message on stderr.
fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(err.starts_with("vmap-trace: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `-o` never destroys what it names: the inputs, a FIFO, a symlink, an existing file's
/// inode, mode and owner (output paths of the reliability issue; all in a temporary directory).
#[test]
fn output_paths_are_treated_as_the_users() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "a.rec", &profile("6.1.0-test", 2_000_000));
    let original = std::fs::read(&rec).unwrap();
    let r = rec.to_str().unwrap();

    // The input itself, directly and through a symlink: refused, input intact.
    let err = fails(&vmap_trace(&["flamegraph", r, "-o", r]));
    assert!(err.contains("it is the input"), "{err}");
    let alias = dir.path().join("alias.svg");
    std::os::unix::fs::symlink(&rec, &alias).unwrap();
    fails(&vmap_trace(&[
        "flamegraph",
        r,
        "-o",
        alias.to_str().unwrap(),
    ]));
    let b = save(dir.path(), "b.rec", &profile("6.12.0-test", 1_000_000));
    let err = fails(&vmap_trace(&["diff", r, b.to_str().unwrap(), "-o", r]));
    assert!(err.contains("it is the input"), "{err}");
    assert_eq!(std::fs::read(&rec).unwrap(), original);

    // A directory: refused with a hint.
    let err = fails(&vmap_trace(&[
        "flamegraph",
        r,
        "-o",
        dir.path().to_str().unwrap(),
    ]));
    assert!(err.contains("is a directory"), "{err}");

    // An existing file: same inode, mode and owner afterwards.
    let svg = dir.path().join("kept.svg");
    std::fs::write(&svg, b"old").unwrap();
    std::fs::set_permissions(&svg, std::fs::Permissions::from_mode(0o604)).unwrap();
    let before = std::fs::metadata(&svg).unwrap();
    ok(&vmap_trace(&["flamegraph", r, "-o", svg.to_str().unwrap()]));
    let after = std::fs::metadata(&svg).unwrap();
    assert_eq!((after.ino(), after.mode() & 0o777), (before.ino(), 0o604));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    // A FIFO: written through, still a FIFO.
    let fifo = dir.path().join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    ok(&vmap_trace(&[
        "flamegraph",
        r,
        "--folded",
        "-o",
        fifo.to_str().unwrap(),
    ]));
    let through = String::from_utf8(reader.join().unwrap()).unwrap();
    assert!(
        through.contains("[spinlock vmap_area_lock] 2000000"),
        "{through}"
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // A symlink to a new file: the link stays, its target is written.
    let link = dir.path().join("link.svg");
    std::os::unix::fs::symlink("target.svg", &link).unwrap();
    ok(&vmap_trace(&[
        "flamegraph",
        r,
        "-o",
        link.to_str().unwrap(),
    ]));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(dir.path().join("target.svg"))
        .unwrap()
        .contains("<svg"));
}

#[test]
fn folded_to_stdout_and_svg_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "a.rec", &profile("6.1.0-test", 2_000_000));
    let rec = rec.to_str().unwrap();
    let folded = ok(&vmap_trace(&["flamegraph", rec, "-o", "-", "--folded"]));
    assert_eq!(
        folded,
        "do_syscall_64;__vmalloc_node_range_noprof;alloc_vmap_area;_raw_spin_lock;native_queued_spin_lock_slowpath;[spinlock vmap_area_lock] 2000000\n\
         do_syscall_64;tty_open;tty_lock;__mutex_lock.constprop.0;[mutex 0xffff888100002000] 300000\n"
    );
    let counts = ok(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        "-",
        "--folded",
        "--weight",
        "count",
        "--lock",
        "vmap_area_lock",
    ]));
    assert!(
        counts.ends_with("[spinlock vmap_area_lock] 100\n") && counts.lines().count() == 1,
        "{counts}"
    );

    let svg = dir.path().join("a.svg");
    let out = vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        svg.to_str().unwrap(),
        "--class",
        "other",
    ]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(1 stacks, 300.00 us of lock wait time)")
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains(
        "6.1.0-test · legacy vmap locks · 5.00 s · weight: lock wait time (us) · class=other"
    ));
    assert!(text.contains("<title>tty_lock (300 us, 100.00%)</title>"));
    assert!(
        !text.contains("alloc_vmap_area"),
        "class=other leaves the vmap path out"
    );
}

#[test]
fn bad_requests_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "a.rec", &profile("6.1.0-test", 2_000_000));
    let rec = rec.to_str().unwrap();
    let out_svg = dir.path().join("x.svg");
    let out_svg = out_svg.to_str().unwrap();

    let err = fails(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        out_svg,
        "--lock",
        "purge_vmap_area_lock",
    ]));
    assert!(
        err.contains("no lock in this recording matches `purge_vmap_area_lock`"),
        "{err}"
    );
    assert!(
        err.contains("vmap_area_lock ") && err.contains("0xffff888100002000  mutex, 5 waits"),
        "lists the locks: {err}"
    );

    let err = fails(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        out_svg,
        "--weight",
        "hold",
    ]));
    assert!(
        err.contains("this recording has no hold times (needs kprobe/fentry mode)"),
        "{err}"
    );
    let err = fails(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        out_svg,
        "--task",
        "sshd",
    ]));
    assert!(
        err.contains("per-task totals, not per-task stacks") && err.contains("sshd (tid 7)"),
        "{err}"
    );
    let err = fails(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        out_svg,
        "--user-stacks",
    ]));
    assert!(err.contains("no user stacks"), "{err}");
    let err = fails(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        out_svg,
        "--lock",
        "0xffff888100002000",
        "--class",
        "vmap",
    ]));
    assert!(
        err.contains("no contended stacks match lock=0xffff888100002000, class=vmap"),
        "{err}"
    );
    let err = fails(&vmap_trace(&[
        "flamegraph",
        "/nonexistent.rec",
        "-o",
        out_svg,
    ]));
    assert!(err.contains("/nonexistent.rec: cannot read"), "{err}");
    let err = fails(&vmap_trace(&[
        "flamegraph",
        rec,
        "-o",
        "/nonexistent/dir/x.svg",
    ]));
    assert!(
        err.contains("directory /nonexistent/dir does not exist"),
        "{err}"
    );
    assert!(!Path::new(out_svg).exists(), "failed runs write nothing");

    let mut empty = profile("6.1.0-test", 1);
    empty.stacks.clear();
    let empty = save(dir.path(), "empty.rec", &empty);
    let err = fails(&vmap_trace(&[
        "diff",
        rec,
        empty.to_str().unwrap(),
        "-o",
        out_svg,
    ]));
    assert!(
        err.contains("empty.rec: this recording has no contended kernel stacks"),
        "{err}"
    );

    let err = fails(&vmap_trace(&["report", rec, "--table", "stacks"]));
    assert!(
        err.contains("--table only applies to --format csv"),
        "{err}"
    );
}

#[test]
fn diff_and_compare_show_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let a = save(dir.path(), "6.1.rec", &profile("6.1.0-test", 2_000_000));
    let mut after = profile("6.12.0-test", 8_000_000);
    let mut renamed = after.stacks[1].frames.to_vec();
    renamed[0].function = Some("__mutex_lock.constprop.1".into());
    after.stacks[1].frames = renamed.into();
    let b = save(dir.path(), "6.12.rec", &after);
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let folded = ok(&vmap_trace(&[
        "diff",
        a,
        b,
        "-o",
        "-",
        "--folded",
        "--no-normalize",
    ]));
    // Build suffixes dropped and addresses stripped, so the mutex path pairs up across kernels.
    assert_eq!(
        folded,
        "do_syscall_64;__vmalloc_node_range;alloc_vmap_area;_raw_spin_lock;native_queued_spin_lock_slowpath;[spinlock vmap_area_lock] 2000000 8000000\n\
         do_syscall_64;tty_open;tty_lock;__mutex_lock;[mutex 0x...] 300000 300000\n"
    );
    let svg = dir.path().join("d.svg");
    ok(&vmap_trace(&["diff", a, b, "-o", svg.to_str().unwrap()]));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("vmap-trace diff: lock wait time, 6.1.rec → 6.12.rec"),
        "{}",
        &text[..2000]
    );

    let table = ok(&vmap_trace(&["report", "--compare", a, b]));
    let row = table
        .lines()
        .find(|l| l.starts_with("vmap_area_lock"))
        .expect(&table);
    assert!(
        row.contains("400.00 us") && row.contains("1.60 ms") && row.ends_with("+300.0%"),
        "{row}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&vmap_trace(&[
        "report",
        "--compare",
        a,
        b,
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(json["schema"], "vmap-trace-compare/1");
    assert_eq!(json["after"]["kernel_release"], "6.12.0-test");
}

#[test]
fn csv_tables_are_versioned_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "a.rec", &profile("6.1.0-test", 2_000_000));
    let rec = rec.to_str().unwrap();
    let locks = ok(&vmap_trace(&["report", rec, "--format", "csv"]));
    let mut lines = locks.lines();
    assert_eq!(
        lines.next(),
        Some("schema,table,lock_name,lock_addr,lock_kind,flags,count,total_ns,mean_ns,p99_le_ns,max_ns,vmap_wait_ns,other_wait_ns,max_estimated")
    );
    assert!(lines.next().unwrap().starts_with(
        "vmap-trace-csv/1,locks,vmap_area_lock,0xffffffff82001000,spinlock,1,100,2000000,"
    ));
    assert_eq!(lines.count(), 1);
    let stacks = ok(&vmap_trace(&[
        "report", rec, "--format", "csv", "--table", "stacks",
    ]));
    assert!(
        stacks.contains(",vmap,alloc_vmap_area,alloc_vmap_area,100,2000000,20000,do_syscall_64;__vmalloc_node_range_noprof;"),
        "{stacks}"
    );
}
