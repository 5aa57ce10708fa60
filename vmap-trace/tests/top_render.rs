//! `vmap-trace top` drawn from synthetic profiles on ratatui's TestBackend: no root, no
//! kernel. Figures are asserted cell for cell, from windows the test computes by hand.
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;
use vmap_trace::profile::{
    attribution, AllocatorDesign, CpuWait, Frame, HookStatus, LockWait, Log2Histogram, Losses,
    Mechanism, Profile, RecordingMeta, StackWait, TaskWaitSummary, VmallocOps, VmapLockTiming,
    WaitHistogram,
};
use vmap_trace::top::verdict::Verdict;
use vmap_trace::top::{render, Action, App, SortKey, TopOptions, View};

const VMAP_LOCK: u64 = 0xffff_8880_0000_1000;
const TTY_MUTEX: u64 = 0xffff_8880_0000_2000;

fn frames(names: &[&str]) -> Vec<Frame> {
    names
        .iter()
        .map(|n| Frame {
            addr: 0xffff_ffff_8100_0000,
            function: Some(n.to_string()),
            offset: 0,
        })
        .collect()
}

fn hist(bucket: usize, count: u64) -> Log2Histogram {
    let mut raw = vec![0; bucket + 1];
    raw[bucket] = count;
    Log2Histogram::from_buckets(&raw)
}

fn hook(name: &str, mechanism: Option<Mechanism>) -> HookStatus {
    HookStatus {
        hook: name.into(),
        mechanism,
        rejected: vec![],
    }
}

/// The cumulative snapshot of a steady load after `k` seconds. Per second:
/// - free_vmap_area_lock (spinlock, vmap path): 100 waits, 700 us, 90 in the 4-8 us bucket and
///   10 in the 16-32 us bucket; its max rises every second (20 us, then 45 us);
/// - an unnamed tty mutex (not vmap): 4 waits, 900 us, all in the 128-256 us bucket; its max
///   stays 250 us, so from the second snapshot on the window's max is only a bound;
/// - CPU 0 waits 400 us per second, CPU 1 1.1 ms; sshd 1.3 ms, stress-pty-0 300 us;
/// - 1000 allocs (600 on CPU 0), 990 frees, 2 purges; a lazy backlog of 1200 of 16384 pages.
fn snapshot(k: u64) -> Profile {
    let vmap_frames = frames(&[
        "_raw_spin_lock",
        "alloc_vmap_area",
        "__get_vm_area_node",
        "__vmalloc_node_range_noprof",
    ]);
    let tty_frames = frames(&["__mutex_lock.constprop.0", "tty_lock", "tty_open"]);
    let stack = |lock_addr, flags, frames: Vec<Frame>, count, total_ns, max_ns| StackWait {
        task: None,
        user_frames: Vec::new(),
        lock_addr,
        flags,
        attribution: attribution::attribute(&frames),
        frames: frames.into(),
        count,
        total_ns,
        max_ns,
    };
    let mut vmap_hist = hist(14, 10 * k);
    vmap_hist.buckets[12] = 90 * k;
    Profile {
        meta: RecordingMeta { stack_keys: Default::default(),
            other_lock_period: 1,
            lock_waits: Default::default(),
            tool_version: "0.1.0".into(),
            kernel_release: "6.9.0-test".into(),
            hostname: "box".into(),
            design: AllocatorDesign::NodeSharded,
            design_detail: None,
            cpus: 2,
            started_unix_s: 1_700_000_000,
            duration_ns: k * 1_000_000_000,
            hooks: vec![
                hook("vmalloc:alloc_vmap_area", Some(Mechanism::TpBtf)),
                hook("vmalloc:free_vmap_area_noflush", Some(Mechanism::TpBtf)),
                hook("vmalloc:purge_vmap_area_lazy", Some(Mechanism::TpBtf)),
                hook("lock:contention_begin", Some(Mechanism::TpBtf)),
                hook("lock:contention_end", Some(Mechanism::TpBtf)),
                hook("fn:alloc_vmap_area", None),
            ],
            lock_names_available: true,
            stacks_symbolized: true,
            notes: vec!["lock:contention_* only report spinlock waits that reach the MCS queue (3+ contenders)".into()],
            vmap_locks: vec![],
        },
        ops: VmallocOps {
            allocs: 1000 * k,
            frees: 990 * k,
            purges: 2 * k,
            purged_areas: 500 * k,
            alloc_pages: 4000 * k,
            size_pages: hist(2, 1000 * k),
            allocs_per_cpu: vec![600 * k, 400 * k],
            lazy_pages_last: 1200,
            lazy_pages_max: 16384,
            lazy_pages_peak: 3000,
            ..Default::default()
        },
        locks: vec![
            LockWait {
                lock_addr: VMAP_LOCK,
                flags: 1,
                name: Some("free_vmap_area_lock".into()),
                wait: WaitHistogram {
                    count: 100 * k,
                    total_ns: 700_000 * k,
                    max_ns: if k == 1 { 20_000 } else { 45_000 },
                    hist: vmap_hist,
                },
            },
            LockWait {
                lock_addr: TTY_MUTEX,
                flags: 32,
                name: None,
                wait: WaitHistogram { count: 4 * k, total_ns: 900_000 * k, max_ns: 250_000, hist: hist(17, 4 * k) },
            },
        ],
        stacks: vec![
            stack(VMAP_LOCK, 1, vmap_frames, 100 * k, 700_000 * k, 45_000),
            stack(TTY_MUTEX, 32, tty_frames, 4 * k, 900_000 * k, 250_000),
        ],
        cpus: vec![
            CpuWait { cpu: 0, count: 60 * k, total_ns: 400_000 * k, max_ns: 250_000 },
            CpuWait { cpu: 1, count: 44 * k, total_ns: 1_100_000 * k, max_ns: 250_000 },
        ],
        tasks: vec![
            TaskWaitSummary {
                tid: 4242,
                tgid: 4240,
                comm: "stress-pty-0".into(),
                count: 50 * k,
                total_ns: 300_000 * k,
                max_ns: 20_000,
            },
            TaskWaitSummary { tid: 77, tgid: 77, comm: "sshd".into(), count: 54 * k, total_ns: 1_300_000 * k, max_ns: 250_000 },
        ],
        losses: Losses::default(),
        functions: vec![],
        lock_timing: vec![],
        stack_sampling: Default::default(),
    }
}

fn options() -> TopOptions {
    TopOptions {
        sort: SortKey::Wait,
        color: false,
        ..Default::default()
    }
}

/// The app after two snapshots one second apart: the interval window is [1 s, 2 s].
fn running_app(options: TopOptions) -> App {
    let mut app = App::new(options, snapshot(1));
    app.ingest(snapshot(2));
    app
}

fn draw(app: &mut App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| render::draw(f, app)).unwrap();
    terminal
}

/// The screen as lines of text, trailing spaces trimmed.
fn screen(app: &mut App, width: u16, height: u16) -> Vec<String> {
    let terminal = draw(app, width, height);
    let buf = terminal.backend().buffer();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", lines.join("\n")))
}

fn row_index(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.starts_with(needle))
        .unwrap_or_else(|| panic!("no row {needle:?} in\n{}", lines.join("\n")))
}

#[test]
fn top_header_says_what_is_measured_and_how() {
    let mut app = running_app(options());
    let lines = screen(&mut app, 120, 40);
    assert_eq!(
        lines[0],
        "vmap-trace top  kernel 6.9.0-test  design node-sharded (vmap_node, >= 6.9)  2 CPUs  elapsed 0:00:02  events lost 0"
    );
    assert_eq!(
        lines[1],
        "probes tp_btf (5 hooks)  fn latency n/a  refresh 1.0 s  notes 1 (press ?)"
    );
    assert_eq!(
        lines[2],
        " Locks  Ops  CPUs  Tasks   sort wait/s  window last 1.0 s"
    );
}

#[test]
fn top_header_shortens_to_fit_80_columns_and_flags_lost_events() {
    let mut later = snapshot(2);
    later.losses.stack_keys_full = 3;
    let mut app = App::new(options(), snapshot(1));
    app.ingest(later);
    let lines = screen(&mut app, 80, 24);
    assert_eq!(
        lines[0],
        "vmap-trace top  kernel 6.9.0-test  node-sharded  2 CPUs  up 0:00:02  lost 3"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
}

#[test]
fn top_lock_rows_show_the_interval_figures() {
    let mut app = running_app(options());
    let lines = screen(&mut app, 120, 40);
    let header = row_index(&lines, "lock ");
    assert_eq!(
        lines[header],
        "lock                kind           vmap cont/s wait/s    avg    p99     max top caller"
    );
    // per second over [1 s, 2 s]: 4 waits, 900 us; p99 is the 128-256 us bucket's bound capped by
    // the max, which did not rise (250 us from the first second): only a bound
    assert_eq!(
        lines[header + 1],
        "mutex in tty_lock   mutex             -   4.00  900us  225us  250us  ≤250us tty_lock ← tty_open"
    );
    // 100 waits, 700 us; p99 = the 16-32 us bucket's bound; the max rose to 45 us: measured
    assert_eq!(
        lines[header + 2],
        "free_vmap_area_lock spinlock       100%    100  700us 7.00us 32.8us  45.0us alloc_vmap_area ← __get_vm_area_node"
    );
    assert!(
        lines[header - 1].contains("Contended locks 2 locks, 1 mostly vmap"),
        "{}",
        lines[header - 1]
    );
    assert!(
        lines[header - 1].ends_with("── hold: n/a (needs --lock-timing and kprobe/fentry)"),
        "{}",
        lines[header - 1]
    );
}

#[test]
fn top_sort_key_cycles_and_reorders() {
    let mut app = running_app(options());
    let lines = screen(&mut app, 120, 40);
    assert!(row_index(&lines, "mutex in tty_lock") < row_index(&lines, "free_vmap_area_lock"));
    app.apply(Action::CycleSort);
    assert_eq!(app.sort, SortKey::Count);
    let lines = screen(&mut app, 120, 40);
    assert_eq!(
        lines[2],
        " Locks  Ops  CPUs  Tasks   sort cont/s  window last 1.0 s"
    );
    assert!(row_index(&lines, "free_vmap_area_lock") < row_index(&lines, "mutex in tty_lock"));
    for expected in [
        SortKey::Avg,
        SortKey::P99,
        SortKey::Max,
        SortKey::Name,
        SortKey::Wait,
    ] {
        app.apply(Action::CycleSort);
        assert_eq!(app.sort, expected);
    }
}

#[test]
fn top_tab_switches_views() {
    let mut app = running_app(options());
    app.apply(Action::NextView);
    assert_eq!(app.view, View::Ops);
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[3].starts_with(" vmalloc operations ─"),
        "{}",
        lines[3]
    );
    // 1000 allocs in the 1 s interval, 2000 since start
    assert_eq!(
        line_with(&lines, "operation "),
        "operation                 per s  since start"
    );
    assert_eq!(
        line_with(&lines, "allocations  "),
        "allocations                1.0k         2000"
    );
    assert_eq!(
        line_with(&lines, "purges  "),
        "purges                     2.00            4"
    );
    assert_eq!(
        line_with(&lines, "cpu1 "),
        format!("         cpu1 {}▋              400", "█".repeat(26))
    );
    // 1200 of 16384 pages: 7.3% of a 40-cell bar is 2 7/8 cells
    assert_eq!(
        line_with(&lines, "lazy backlog"),
        format!(
            "lazy backlog      1200/16384 pages ██▉{} 7.3%  peak 3000 (18%)",
            " ".repeat(37)
        )
    );
    assert_eq!(
        line_with(&lines, "  4-7 ").trim_start(),
        format!("4-7 {} 1.0k", "█".repeat(40))
    );

    app.apply(Action::NextView);
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[3].starts_with(" CPUs: lock wait per second of wall time ─"),
        "{}",
        lines[3]
    );
    // CPU 1 waited 1.1 ms in the second: 0.11% of it; 600 allocs/s on CPU 0
    let cpu1 = line_with(&lines, "   1 ");
    assert!(
        cpu1.ends_with("0.1% 1.10ms   44.0  ≤250us      400"),
        "{cpu1}"
    );
    assert!(line_with(&lines, "   0 ").ends_with("<0.1%  400us   60.0  ≤250us      600"));

    app.apply(Action::NextView);
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[3].starts_with(" Tasks by lock wait (2) ─"),
        "{}",
        lines[3]
    );
    let sshd = row_index(&lines, "     77");
    assert!(
        lines[sshd].starts_with("     77      77 sshd"),
        "{}",
        lines[sshd]
    );
    assert!(
        lines[sshd].ends_with("54.0 1.30ms 24.1us  ≤250us"),
        "{}",
        lines[sshd]
    );
    assert!(sshd < row_index(&lines, "   4242"));

    app.apply(Action::NextView);
    assert_eq!(app.view, View::Locks);
    app.apply(Action::PreviousView);
    assert_eq!(app.view, View::Tasks);
}

#[test]
fn top_help_overlay_opens_and_closes() {
    let mut app = running_app(options());
    app.apply(Action::ToggleHelp);
    let lines = screen(&mut app, 120, 40);
    assert!(line_with(&lines, "vmap-trace top: help").contains("┌ vmap-trace top: help ─"));
    assert!(line_with(&lines, "cycle the sort")
        .contains("│  s             cycle the sort: wait/s, cont/s, avg, p99, max, name"));
    assert!(line_with(&lines, "3+ contenders")
        .contains("- lock:contention_* only report spinlock waits"));
    // any other key closes it without acting
    app.apply(Action::CycleSort);
    assert!(!app.help);
    assert_eq!(app.sort, SortKey::Wait);
    let lines = screen(&mut app, 120, 40);
    assert!(!lines.iter().any(|l| l.contains("vmap-trace top: help")));
}

#[test]
fn top_help_says_when_stacks_are_sampled() {
    let mut app = App::new(options(), snapshot(1));
    let mut sampled = snapshot(2);
    sampled.stack_sampling = vmap_trace::profile::StackSampling {
        captured: 100,
        skipped: 900,
    };
    app.ingest(sampled);
    app.apply(Action::ToggleHelp);
    let lines = screen(&mut app, 120, 60);
    assert!(
        line_with(&lines, "stacks sampled:").contains("100 of 1000 contentions captured"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn top_help_scrolls_on_a_small_terminal() {
    let mut app = running_app(options());
    app.apply(Action::ToggleHelp);
    let before = screen(&mut app, 80, 24);
    assert!(before.iter().any(|l| l.contains("up/down scroll")));
    app.apply(Action::ScrollDown);
    assert!(app.help);
    let after = screen(&mut app, 80, 24);
    assert_ne!(before, after);
}

#[test]
fn top_pause_shows_an_indicator() {
    let mut app = running_app(options());
    app.apply(Action::TogglePause);
    let lines = screen(&mut app, 120, 40);
    // right-aligned: " PAUSED " fills the last 8 columns
    assert_eq!(lines[2].find(" PAUSED"), Some(112), "{}", lines[2]);
    assert!(lines[39].contains("p resume"), "{}", lines[39]);
    app.apply(Action::TogglePause);
    let lines = screen(&mut app, 120, 40);
    assert!(!lines[2].contains("PAUSED"));
    assert!(lines[39].contains("p pause"));
}

#[test]
fn top_window_toggle_and_reset() {
    let mut app = running_app(options());
    app.apply(Action::ToggleWindow);
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[2].ends_with("window since start 2.0 s"),
        "{}",
        lines[2]
    );
    // since start: 200 waits over 2 s is still 100/s, and the max of the whole period is exact
    let row = line_with(&lines, "free_vmap_area_lock");
    assert!(
        row.contains("100%    100  700us 7.00us 32.8us  45.0us"),
        "{row}"
    );
    let row = line_with(&lines, "mutex in tty_lock");
    assert!(row.contains("250us   250us"), "{row}");

    app.apply(Action::Reset);
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[2].ends_with("window since reset 0.0 s"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[39], "counters reset");
    // nothing since the reset: the table starts over
    assert!(line_with(&lines, "Contended locks").contains("0 locks"));
    assert!(line_with(&lines, "no lock contention recorded yet").contains("3+ contenders"));
    app.ingest(snapshot(3));
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[2].ends_with("window since reset 1.0 s"),
        "{}",
        lines[2]
    );
    assert!(line_with(&lines, "free_vmap_area_lock").contains("100%    100  700us"));
}

#[test]
fn top_first_frame_waits_for_an_interval() {
    let mut app = App::new(options(), snapshot(1));
    let lines = screen(&mut app, 120, 40);
    assert!(
        lines[2].ends_with("window first interval pending"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[39], "collecting the first interval...");
}

#[test]
fn top_vmap_only_filter() {
    let mut app = running_app(options());
    app.apply(Action::ToggleVmapOnly);
    let lines = screen(&mut app, 120, 40);
    assert!(line_with(&lines, "Contended locks").contains("vmap paths only: 1 of 2 locks (v: all)"));
    assert!(!lines.iter().any(|l| l.starts_with("mutex in tty_lock")));
    assert!(lines.iter().any(|l| l.starts_with("free_vmap_area_lock")));
}

#[test]
fn top_locks_view_at_120x40_has_cpu_bars_tasks_sparkline_and_verdict() {
    let mut app = running_app(options());
    let lines = screen(&mut app, 120, 40);
    let cpus = row_index(&lines, " CPUs: lock wait ");
    assert!(lines[cpus].contains(" Top tasks "), "{}", lines[cpus]);
    assert!(
        lines[cpus + 1].starts_with("cpu0  ▏"),
        "{}",
        lines[cpus + 1]
    );
    assert!(
        lines[cpus + 1].contains("<0.1%  400us"),
        "{}",
        lines[cpus + 1]
    );
    assert!(lines[cpus + 2].contains("0.1% 1.10ms"));
    assert!(line_with(&lines, "vmalloc allocs")
        .starts_with("vmalloc allocs 1.0k/s  frees 990/s  purges 2.00/s  lazy 1200/16384 pages █"));
    // one interval of history: 700 us of vmap wait out of 1.6 ms in all
    assert!(line_with(&lines, "vmap lock wait/s")
        .starts_with(" vmap lock wait/s now 700us (44% of all lock wait), peak 700us over 1.0 s"));
    // the model runs off the UI thread: until it answers, the line says so
    assert_eq!(
        lines[38],
        "model verdict: running the reference model on the measured load..."
    );
    app.set_verdict(Verdict::Comparison(
        "legacy would wait ~3.0x longer on vmap locks at this load".into(),
    ));
    assert_eq!(
        screen(&mut app, 120, 40)[38],
        "model verdict: legacy would wait ~3.0x longer on vmap locks at this load"
    );
    app.set_verdict(Verdict::Unavailable(
        "needs 5 s of data since the last reset".into(),
    ));
    assert_eq!(
        screen(&mut app, 120, 40)[38],
        "model verdict: unavailable (needs 5 s of data since the last reset)"
    );
    assert_eq!(
        lines[39],
        "q quit  ? help  tab view  s sort  p pause  r reset  f flamegraph  a window  v vmap only"
    );
}

#[test]
fn top_fits_80x24_and_says_so_below_the_minimum() {
    let mut app = running_app(options());
    let lines = screen(&mut app, 80, 24);
    assert!(lines.iter().any(|l| l.starts_with("free_vmap_area_lock")));
    assert_eq!(
        line_with(&lines, "Contended locks"),
        format!(
            " Contended locks 2 locks {} hold: n/a (see ?)",
            "─".repeat(36)
        )
    );
    assert_eq!(
        lines[row_index(&lines, "free_vmap_area_lock")],
        "free_vmap_area_lock  100%    100  700us 7.00us 32.8us  45.0us alloc_vmap_area ←…"
    );
    assert_eq!(
        lines[23],
        "q quit  ? help  tab view  s sort  p pause  r reset  f flamegraph  a window"
    );
    let lines = screen(&mut app, 50, 10);
    assert!(
        lines[0].starts_with("terminal too small (50x10)"),
        "{}",
        lines[0]
    );
}

#[test]
fn top_hold_columns_appear_with_lock_timing() {
    let timed = |k: u64| {
        let mut p = snapshot(k);
        p.meta
            .hooks
            .push(hook("lock-timing:spinlock", Some(Mechanism::Fentry)));
        p.lock_timing = vec![VmapLockTiming {
            name: "free_vmap_area_lock".into(),
            lock_addr: VMAP_LOCK,
            wait: WaitHistogram {
                count: 1000 * k,
                total_ns: 900_000 * k,
                max_ns: 45_000,
                hist: hist(9, 1000 * k),
            },
            hold: WaitHistogram {
                count: 1000 * k,
                total_ns: 1_500_000 * k,
                max_ns: 9_000,
                hist: hist(10, 1000 * k),
            },
        }];
        p
    };
    let mut app = App::new(options(), timed(1));
    app.ingest(timed(2));
    let lines = screen(&mut app, 140, 40);
    let header = &lines[row_index(&lines, "lock ")];
    assert!(
        header.contains("max hold avg hold p99 top caller"),
        "{header}"
    );
    // 1.5 ms of hold over 1000 acquisitions; p99 is the 1-2 us bucket's bound
    assert!(
        line_with(&lines, "free_vmap_area_lock")
            .contains(" 45.0us   1.50us   2.05us alloc_vmap_area"),
        "{lines:#?}"
    );
    assert!(line_with(&lines, "mutex in tty_lock").contains("≤250us        -        - tty_lock"));
    assert!(line_with(&lines, "probes").contains("lock timing fentry (1 hook)"));
    assert!(!lines.iter().any(|l| l.contains("hold: n/a")));
}

#[test]
fn top_no_color_draws_without_colours() {
    let mut app = running_app(options());
    app.apply(Action::TogglePause);
    let terminal = draw(&mut app, 120, 40);
    let buf = terminal.backend().buffer();
    assert!(buf
        .content()
        .iter()
        .all(|c| c.fg == Color::Reset && c.bg == Color::Reset));

    let mut app = running_app(TopOptions {
        color: true,
        ..options()
    });
    let terminal = draw(&mut app, 120, 40);
    let buf = terminal.backend().buffer();
    // vmap rows stand out in colour
    let y = (0..40)
        .find(|&y| {
            (0..19).map(|x| buf[(x, y)].symbol()).collect::<String>() == "free_vmap_area_lock"
        })
        .unwrap();
    assert_eq!(buf[(0, y)].fg, Color::Yellow);
}
