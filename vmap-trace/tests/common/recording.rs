//! A small recording for CLI tests that need no kernel: one vmap spinlock path and one tty
//! mutex path, per process, on a legacy (6.1) kernel, with `extra` appended to every text
//! field a recording carries (task, lock, frame, host and kernel names, notes).
use std::path::{Path, PathBuf};

use vmap_trace::profile::{
    attribution, recording, AllocatorDesign, Frame, LockWait, Log2Histogram, Losses, Profile,
    RecordingMeta, StackKeying, StackTask, StackWait, TaskWaitSummary, VmallocOps, WaitHistogram,
};

/// What a terminal hijacker would put in a task name (prctl(PR_SET_NAME) takes any bytes):
/// set the window title, ring the bell, clear the screen, a C1 CSI (U+009B), a right-to-left
/// override, a line break that fakes a report line, a carriage return, DEL.
pub const HOSTILE: &str = "\u{1b}]0;X\u{7}\u{1b}[2J\u{9b}31m\u{202e}evil\nLOST: none\r\u{7f}";

/// `HOSTILE` as the views show it.
pub const HOSTILE_SHOWN: &str = r"\x1b]0;X\x07\x1b[2J\u{9b}31m\u{202e}evil\x0aLOST: none\x0d\x7f";

fn frames(names: &[String]) -> Vec<Frame> {
    names
        .iter()
        .map(|n| Frame {
            addr: 0xffffffff81000000,
            function: Some(n.clone()),
            offset: 0x10,
        })
        .collect()
}

fn wait(count: u64, total_ns: u64) -> WaitHistogram {
    WaitHistogram {
        count,
        total_ns,
        max_ns: total_ns / count.max(1),
        hist: Log2Histogram::from_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, count]),
    }
}

fn stack(lock_addr: u64, flags: u32, names: &[String], comm: &str) -> StackWait {
    let frames = frames(names);
    StackWait {
        task: Some(StackTask {
            tgid: 7,
            comm: comm.into(),
        }),
        user_frames: Vec::new(),
        lock_addr,
        flags,
        attribution: attribution::attribute(&frames),
        frames: frames.into(),
        count: 10,
        total_ns: 100_000,
        max_ns: 20_000,
    }
}

pub fn profile(extra: &str) -> Profile {
    let x = |s: &str| format!("{s}{extra}");
    let comm = x("sshd");
    let vmap = [
        "_raw_spin_lock",
        "alloc_vmap_area",
        "__vmalloc_node_range_noprof",
    ];
    let mut vmap: Vec<String> = vmap.iter().map(|s| s.to_string()).collect();
    vmap.push(x("entry"));
    let tty = [x("__mutex_lock"), x("tty_lock"), x("tty_open")];
    Profile {
        meta: RecordingMeta {
            stack_keys: StackKeying {
                per_task: true,
                ..Default::default()
            },
            other_lock_period: 1,
            lock_waits: Default::default(),
            tool_version: "0.1.0".into(),
            kernel_release: x("6.1.0"),
            hostname: x("host"),
            design: AllocatorDesign::Legacy,
            design_detail: None,
            cpus: 2,
            started_unix_s: 1_700_000_000,
            duration_ns: 1_000_000_000,
            hooks: vec![],
            lock_names_available: true,
            stacks_symbolized: true,
            notes: vec![x("note")],
            vmap_locks: vec![],
        },
        ops: VmallocOps {
            allocs: 1000,
            frees: 990,
            size_pages: Log2Histogram::from_buckets(&[1000]),
            ..Default::default()
        },
        locks: vec![
            LockWait {
                lock_addr: 0x1000,
                flags: 1,
                name: Some(x("vmap_area_lock")),
                wait: wait(10, 100_000),
            },
            LockWait {
                lock_addr: 0x2000,
                flags: 32,
                name: Some(x("tty_mutex")),
                wait: wait(10, 100_000),
            },
        ],
        stacks: vec![
            stack(0x1000, 1, &vmap, &comm),
            stack(0x2000, 32, &tty, &comm),
        ],
        cpus: vec![],
        tasks: vec![TaskWaitSummary {
            tid: 7,
            tgid: 7,
            comm,
            count: 20,
            total_ns: 200_000,
            max_ns: 20_000,
        }],
        losses: Losses::default(),
        functions: vec![],
        lock_timing: vec![],
        stack_sampling: Default::default(),
    }
}

/// `profile(extra)` saved as `dir/name`.
pub fn save(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(name);
    recording::save(&profile(extra), &path).unwrap();
    path
}
