//! The table a user reads first.
use std::fmt::Write;

use super::{
    format_max, format_ns, lock_label, per_second, ReportOptions, ESTIMATED_MAX_NOTE,
    RAISED_MAX_NOTE,
};
use crate::escape::field;
use crate::profile::{Log2Histogram, Profile, ShownMax};

pub fn render(p: &Profile, opts: &ReportOptions) -> String {
    let mut o = String::new();
    let secs = p.meta.duration_s();
    let m = &p.meta;
    let _ = writeln!(
        o,
        "vmap-trace report: {} on {}, {} CPUs, {:.2} s",
        field(&m.kernel_release),
        field(&m.hostname),
        m.cpus,
        secs
    );
    match &m.design_detail {
        Some(d) => {
            let _ = writeln!(o, "allocator design: {}", d.label());
            if !d.evidence.is_empty() {
                let _ = writeln!(o, "  (from: {})", d.evidence.join("; "));
            }
        }
        None => {
            let _ = writeln!(o, "allocator design: {}", m.design.label());
        }
    }
    let hooks: Vec<String> = m
        .hooks
        .iter()
        .map(|h| {
            format!(
                "{}={}",
                field(&h.hook),
                h.mechanism.map(|m| m.label()).unwrap_or("unavailable")
            )
        })
        .collect();
    let _ = writeln!(o, "probes: {}", hooks.join(", "));
    o += &crate::profile::verifier_log::render_refusals(&m.hooks, opts.verbose, "");
    lock_wait_sources(&mut o, &m.lock_waits);
    if p.losses.total() > 0 {
        let _ = writeln!(o, "LOST: {}", p.losses.describe().join("; "));
    } else {
        let _ = writeln!(o, "lost events: none");
        if p.losses.evicted() {
            let _ = writeln!(o, "note: {}", p.losses.describe().join("; "));
        }
    }
    for n in &m.notes {
        let _ = writeln!(o, "note: {}", field(n));
    }
    if let Some(line) = p.stack_sampling.describe() {
        let _ = writeln!(o, "note: {line}");
    }

    // 1. vmap contention
    let total = p.total_wait();
    let vmap_ns = p.vmap_wait_ns();
    let _ = writeln!(
        o,
        "\n== vmap lock contention (by the vmap function that took the lock) =="
    );
    let _ = writeln!(
        o,
        "vmap share of all lock wait: {:.1}% ({} of {} over {} contentions)",
        if total.total_ns > 0 {
            100.0 * vmap_ns as f64 / total.total_ns as f64
        } else {
            0.0
        },
        format_ns(vmap_ns as f64),
        format_ns(total.total_ns as f64),
        total.count
    );
    let sites = p.vmap_call_sites();
    if sites.is_empty() {
        let _ = writeln!(
            o,
            "no contended lock waits went through vmap functions in this recording"
        );
    } else {
        let _ = writeln!(
            o,
            "{:<28} {:<34} {:>10} {:>12} {:>10} {:>10}",
            "vmap function", "lock", "count", "total wait", "avg", "max"
        );
        for s in &sites {
            let func = if s.direct {
                field(&s.vmap_function).into_owned()
            } else {
                format!(
                    "{} (via {})",
                    field(&s.vmap_function),
                    field(s.call_site.as_deref().unwrap_or("?"))
                )
            };
            let _ = writeln!(
                o,
                "{:<28} {:<34} {:>10} {:>12} {:>10} {:>10}",
                func,
                lock_label(s.lock_name.as_deref(), s.lock_addr, s.flags),
                s.count,
                format_ns(s.total_ns as f64),
                format_ns(s.total_ns as f64 / s.count.max(1) as f64),
                format_max(ShownMax {
                    ns: s.max_ns,
                    estimated: s.estimated
                })
            );
        }
        if sites.iter().any(|s| s.estimated) {
            let _ = writeln!(o, "{ESTIMATED_MAX_NOTE}");
        }
    }

    // 1b. lock wait/hold measured around the lock calls
    if !p.lock_timing.is_empty() {
        let _ = writeln!(o, "\n== vmap lock wait and hold (around every lock call: includes uncontended and two-way waits) ==");
        let _ = writeln!(
            o,
            "{:<26} {:>10} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10}",
            "lock",
            "acquired",
            "wait total",
            "wait avg",
            "wait p99<=",
            "hold total",
            "hold avg",
            "hold p99<="
        );
        for t in &p.lock_timing {
            let p99 = |w: &crate::profile::WaitHistogram| {
                w.p99_ns()
                    .map(|v| format_ns(v as f64))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                o,
                "{:<26} {:>10} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10}",
                field(&t.name),
                t.wait.count,
                format_ns(t.wait.total_ns as f64),
                format_ns(t.wait.mean_ns().unwrap_or(0.0)),
                p99(&t.wait),
                format_ns(t.hold.total_ns as f64),
                format_ns(t.hold.mean_ns().unwrap_or(0.0)),
                p99(&t.hold)
            );
        }
    }

    // 1c. vmap function latency
    if !p.functions.is_empty() {
        let _ = writeln!(o, "\n== vmap function latency ==");
        let _ = writeln!(
            o,
            "{:<26} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "function", "calls", "calls/s", "avg", "p99<=", "max"
        );
        for f in &p.functions {
            if f.latency.count == 0 {
                let why = p.explain_function(&f.function).unwrap_or_default();
                let _ = writeln!(o, "{:<26} {:>10}  {why}", field(&f.function), 0);
                continue;
            }
            let _ = writeln!(
                o,
                "{:<26} {:>10} {:>10.1} {:>10} {:>10} {:>10}",
                field(&f.function),
                f.latency.count,
                per_second(f.latency.count, secs),
                format_ns(f.latency.mean_ns().unwrap_or(0.0)),
                f.latency
                    .p99_ns()
                    .map(|v| format_ns(v as f64))
                    .unwrap_or_default(),
                format_max(f.latency.shown_max())
            );
            if f.per_cpu.len() > 1 {
                let _ = writeln!(o, "  per CPU: {}", per_cpu_line(&f.per_cpu));
            }
            if let Some(why) = p.explain_function(&f.function) {
                let _ = writeln!(o, "  note: {why}");
            }
        }
        raised_note(&mut o, p.functions.iter().map(|f| f.latency.shown_max()));
    }
    let missing: Vec<_> = m
        .hooks
        .iter()
        .filter(|h| h.hook.starts_with("fn:") && h.mechanism.is_none())
        .map(|h| field(h.hook.trim_start_matches("fn:")))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(
            o,
            "not timed (no kprobe/fentry or absent in this kernel): {}",
            missing.join(", ")
        );
    }

    // 2. vmalloc operations
    let ops = &p.ops;
    let _ = writeln!(o, "\n== vmalloc operations ==");
    let _ = writeln!(
        o,
        "allocs {} ({:.1}/s, {} failed)  frees {} ({:.1}/s)  purges {} ({:.2}/s, {} areas purged)",
        ops.allocs,
        per_second(ops.allocs, secs),
        ops.allocs_failed,
        ops.frees,
        per_second(ops.frees, secs),
        ops.purges,
        per_second(ops.purges, secs),
        ops.purged_areas
    );
    // Say where the figures came from whenever it is not simply the tracepoints: a 0 from
    // an unavailable source is not a measured 0.
    let sources = p.op_sources();
    if sources != crate::profile::OpSources::tracepoints() {
        let _ = writeln!(o, "counted by: {}", sources.describe());
        for note in &sources.notes {
            let _ = writeln!(o, "  {}", field(note));
        }
    }
    if ops.lazy_pages_max > 0 {
        let _ = writeln!(
            o,
            "lazy backlog: {} pages now, peak {} of limit {} ({:.0}%)",
            ops.lazy_pages_last,
            ops.lazy_pages_peak,
            ops.lazy_pages_max,
            100.0 * ops.lazy_pages_peak as f64 / ops.lazy_pages_max as f64
        );
    }
    if ops.size_pages.total() > 0 {
        let _ = writeln!(o, "allocation sizes (pages):");
        let max = *ops.size_pages.buckets.iter().max().unwrap_or(&1);
        for (i, &c) in ops.size_pages.buckets.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let lo = Log2Histogram::bucket_low(i).max(if i == 0 { 0 } else { 1 });
            let hi = Log2Histogram::bucket_high(i) - 1;
            let bar = "#".repeat(((c as f64 / max as f64) * 40.0).ceil() as usize);
            let _ = writeln!(o, "  {:>6}..{:<6} {:>10}  {bar}", lo, hi, c);
        }
    }

    // 3. other locks
    let others = p.other_locks();
    let _ = writeln!(o, "\n== top other contended locks (not through vmap) ==");
    if others.is_empty() {
        let _ = writeln!(o, "none");
    } else {
        let _ = writeln!(
            o,
            "{:<34} {:>8} {:>12} {:>10} {:>10} {:>10}  top caller",
            "lock", "count", "total wait", "avg", "p99<=", "max"
        );
        for (l, other_ns) in others.iter().take(opts.top) {
            let caller = p
                .stacks
                .iter()
                .filter(|s| s.lock_addr == l.lock_addr && s.flags == l.flags)
                .max_by_key(|s| s.total_ns)
                .and_then(|s| s.attribution.call_site.as_deref())
                .map_or_else(|| "?".into(), field);
            let _ = writeln!(
                o,
                "{:<34} {:>8} {:>12} {:>10} {:>10} {:>10}  {caller}",
                lock_label(l.name.as_deref(), l.lock_addr, l.flags),
                l.wait.count,
                format_ns(*other_ns as f64),
                format_ns(l.wait.mean_ns().unwrap_or(0.0)),
                l.wait
                    .p99_ns()
                    .map(|v| format_ns(v as f64))
                    .unwrap_or_default(),
                format_max(l.wait.shown_max())
            );
        }
        if others.len() > opts.top {
            let _ = writeln!(o, "... {} more locks", others.len() - opts.top);
        }
        let shown = others.iter().take(opts.top);
        raised_note(&mut o, shown.map(|(l, _)| l.wait.shown_max()));
    }

    // 4. per CPU
    let _ = writeln!(o, "\n== per CPU ==");
    let _ = writeln!(
        o,
        "{:>4} {:>10} {:>12} {:>10}",
        "cpu", "contended", "wait", "allocs"
    );
    for c in &p.cpus {
        let allocs = ops.allocs_per_cpu.get(c.cpu as usize).copied().unwrap_or(0);
        if c.count == 0 && allocs == 0 {
            continue;
        }
        let _ = writeln!(
            o,
            "{:>4} {:>10} {:>12} {:>10}",
            c.cpu,
            c.count,
            format_ns(c.total_ns as f64),
            allocs
        );
    }

    // 5. tasks
    let _ = writeln!(o, "\n== top tasks by lock wait ==");
    if p.tasks.is_empty() {
        let _ = writeln!(o, "none");
    }
    for t in p.tasks.iter().take(opts.top) {
        let _ = writeln!(
            o,
            "{:>8} {:<16} {:>8} waits {:>12}  max {}",
            t.tid,
            field(&t.comm),
            t.count,
            format_ns(t.total_ns as f64),
            format_max(t.shown_max())
        );
    }
    raised_note(&mut o, p.tasks.iter().take(opts.top).map(|t| t.shown_max()));
    o
}

/// Explain `>=` under a table that printed one (rows other than stacks: see RAISED_MAX_NOTE).
fn raised_note(o: &mut String, mut maxima: impl Iterator<Item = ShownMax>) {
    if maxima.any(|m| m.estimated) {
        let _ = writeln!(o, "{RAISED_MAX_NOTE}");
    }
}

/// `cpu0 1500 x 2.0us, cpu1 500 x 2.0us, ...` (calls x mean), busiest first; long lists are cut.
fn per_cpu_line(cpus: &[crate::profile::CpuLatency]) -> String {
    const SHOWN: usize = 8;
    let mut sorted: Vec<_> = cpus.iter().collect();
    sorted.sort_by(|a, b| {
        b.latency
            .count
            .cmp(&a.latency.count)
            .then(a.cpu.cmp(&b.cpu))
    });
    let mut parts: Vec<String> = sorted
        .iter()
        .take(SHOWN)
        .map(|c| {
            format!(
                "cpu{} {} x {}",
                c.cpu,
                c.latency.count,
                format_ns(c.latency.mean_ns().unwrap_or(0.0))
            )
        })
        .collect();
    if sorted.len() > SHOWN {
        parts.push(format!(
            "+{} more CPUs (--format csv --table function-cpus)",
            sorted.len() - SHOWN
        ));
    }
    parts.join(", ")
}

/// Where the lock waits came from, and which slow paths the kernel ran.
fn lock_wait_sources(o: &mut String, w: &crate::profile::LockWaitSources) {
    let reason = if w.spin_reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", field(&w.spin_reason))
    };
    let _ = writeln!(
        o,
        "lock waits from: spinlocks: {}{reason}; mutexes and PREEMPT_RT locks: {}",
        w.spin.label(),
        w.sleeping.label()
    );
    if !w.slow_paths.is_empty() {
        let entered: Vec<String> = w
            .slow_paths
            .iter()
            .map(|s| {
                format!(
                    "{} {} ({} on vmap locks)",
                    field(s.symbol.as_deref().unwrap_or(&s.function)),
                    s.entries,
                    s.vmap_lock_entries
                )
            })
            .collect();
        let _ = writeln!(o, "slow paths entered: {}", entered.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escape::tests::{assert_inert, HOSTILE_SHOWN};
    use crate::profile::tests::{hostile_profile, sample_profile};

    #[test]
    fn recorded_strings_are_shown_escaped_not_interpreted() {
        let text = render(&hostile_profile(), &ReportOptions::default());
        assert_inert(&text, false);
        for shown in [
            format!("6.1.0{HOSTILE_SHOWN} on host{HOSTILE_SHOWN}, 4 CPUs"),
            format!("probes: lock:contention_begin{HOSTILE_SHOWN}=tp_btf"),
            format!("note: note{HOSTILE_SHOWN}\n"),
            format!("alloc_vmap_area (via site{HOSTILE_SHOWN})"),
            format!("vmap_area_lock{HOSTILE_SHOWN} "),
            format!("fn{HOSTILE_SHOWN}          0  probed but never called"),
            format!("mutex{HOSTILE_SHOWN} "),
            format!("  caller{HOSTILE_SHOWN}\n"),
            format!("      42 {HOSTILE_SHOWN}       14 waits"),
        ] {
            assert!(text.contains(&shown), "{shown:?} not in\n{text}");
        }
    }

    #[test]
    fn header_names_the_precise_design_with_its_evidence_and_refusals_with_their_log() {
        use crate::kernel::design::{DesignDetail, DesignEra};
        use crate::profile::{Mechanism, Rejection};
        let mut p = sample_profile();
        let plain = render(&p, &ReportOptions::default());
        assert!(
            plain.contains("allocator design: legacy (global vmap locks, <= 6.8)\n"),
            "{plain}"
        );
        p.meta.design_detail = Some(DesignDetail {
            era: DesignEra::Legacy510,
            preempt_rt: false,
            evidence: vec!["BTF: vmap_area.purge_list (llist_node)".into()],
            undetermined: None,
        });
        let log: String = (0..20).map(|i| format!("{i}: insn\n")).collect::<String>()
            + "invalid read from stack R10 off=-56 size=8";
        p.meta.hooks[0].rejected = vec![Rejection {
            mechanism: Mechanism::TpBtf,
            reason: "refused".into(),
            verifier_log: Some(log),
        }];
        let text = render(&p, &ReportOptions::default());
        assert!(
            text.contains("allocator design: legacy, 5.10 era: "),
            "{text}"
        );
        assert!(
            text.contains("  (from: BTF: vmap_area.purge_list (llist_node))\n"),
            "{text}"
        );
        assert!(
            text.contains("verifier log, last 12 of 21 lines (--verbose shows all):"),
            "{text}"
        );
        assert!(!text.contains("    0: insn\n"), "{text}");
        let verbose = render(
            &p,
            &ReportOptions {
                verbose: true,
                ..Default::default()
            },
        );
        assert!(
            verbose.contains("verifier log (21 lines):") && verbose.contains("    0: insn\n"),
            "{verbose}"
        );
    }

    #[test]
    fn says_where_lock_waits_came_from_and_which_slow_path_ran() {
        use crate::profile::{LockWaitSources, SlowPathEntries, WaitSource};
        let mut p = sample_profile();
        let text = render(&p, &ReportOptions::default());
        // A recording without the field: its waits came from the tracepoints.
        assert!(
            text.contains("lock waits from: spinlocks: lock:contention_* tracepoints; mutexes and PREEMPT_RT locks: lock:contention_* tracepoints\n"),
            "{text}"
        );
        assert!(!text.contains("slow paths entered"), "{text}");
        p.meta.lock_waits = LockWaitSources {
            spin: WaitSource::SlowPaths,
            sleeping: WaitSource::Unavailable,
            spin_reason: "--spin-waits auto".into(),
            slow_paths: vec![
                SlowPathEntries {
                    function: "native_queued_spin_lock_slowpath".into(),
                    symbol: Some("native_queued_spin_lock_slowpath".into()),
                    entries: 120,
                    vmap_lock_entries: 7,
                },
                SlowPathEntries {
                    function: "__pv_queued_spin_lock_slowpath".into(),
                    symbol: None,
                    entries: 0,
                    vmap_lock_entries: 0,
                },
            ],
        };
        let text = render(&p, &ReportOptions::default());
        for line in [
            "lock waits from: spinlocks: lock slow-path probes (--spin-waits auto); mutexes and PREEMPT_RT locks: not recorded\n",
            "slow paths entered: native_queued_spin_lock_slowpath 120 (7 on vmap locks), __pv_queued_spin_lock_slowpath 0 (0 on vmap locks)\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn names_the_source_of_the_op_counts_when_not_the_tracepoints() {
        use crate::profile::tests::function_probe_profile;
        let text = render(&function_probe_profile(), &ReportOptions::default());
        assert!(text.contains("allocs 2000 (1000.0/s, 2 failed)"), "{text}");
        assert!(
            text.contains(
                "counted by: allocations, frees, lazy backlog, purges, purged areas: function probe"
            ),
            "{text}"
        );
        assert!(
            text.contains("  purged areas: the lazy frees between"),
            "{text}"
        );
        assert!(
            text.contains("lazy backlog: 4000 pages now, peak 24000 of limit 24576"),
            "{text}"
        );
        // Tracepoint counts need no such line.
        let plain = render(&sample_profile(), &ReportOptions::default());
        assert!(!plain.contains("counted by:"), "{plain}");
        // An old recording of a 6.1 kernel: its zeros were not measured, and it says so.
        let mut old = function_probe_profile();
        old.ops = crate::profile::VmallocOps::default();
        let text = render(&old, &ReportOptions::default());
        assert!(
            text.contains(
                "counted by: allocations, frees, lazy backlog, purges, purged areas: unavailable"
            ),
            "{text}"
        );
    }

    #[test]
    fn renders_every_section_with_figures() {
        let text = render(&sample_profile(), &ReportOptions::default());
        assert!(text.contains("6.1.0-test"), "{text}");
        assert!(text.contains("lost events: none"));
        assert!(
            text.contains(
                "vmap share of all lock wait: 11.1% (50.00 us of 450.00 us over 14 contentions)"
            ),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("alloc_vmap_area"))
            .expect("vmap row");
        assert!(
            row.contains("vmap_area_lock") && row.contains("50.00 us") && row.contains(" 10 "),
            "{row}"
        );
        assert!(text.contains("allocs 2000 (1000.0/s, 0 failed)"), "{text}");
        let other = text
            .lines()
            .find(|l| l.starts_with("0x2000 (mutex)"))
            .expect("other lock row");
        assert!(other.ends_with("tty_lock"), "{other}");
        assert!(text.contains("sshd"));
        let f = text
            .lines()
            .find(|l| l.starts_with("alloc_vmap_area") && l.contains("2000"))
            .expect("latency row");
        assert!(f.contains("2.00 us"), "{f}");
        assert!(
            text.contains("  per CPU: cpu0 1500 x 2.00 us, cpu1 500 x 2.00 us"),
            "{text}"
        );
        assert!(!text.contains(">="), "{text}");
    }

    #[test]
    fn a_max_below_the_mean_is_shown_as_a_bound() {
        // `stress mix`: alloc_vmap_area at avg 3.74 us, max 851 ns (sampled-over waits).
        let mut p = sample_profile();
        p.stack_sampling.captured = 100;
        p.stack_sampling.skipped = 900;
        (p.stacks[0].count, p.stacks[0].total_ns, p.stacks[0].max_ns) = (10, 37_400, 851);
        // A task whose recorded max lost a race.
        p.tasks[0].max_ns = 1_000;
        let text = render(&p, &ReportOptions::default());
        let row = text
            .lines()
            .find(|l| l.starts_with("alloc_vmap_area") && l.contains("vmap_area_lock"))
            .expect("vmap row");
        assert!(row.ends_with("3.74 us  >=3.74 us"), "{row}");
        assert!(!text.contains("851 ns"), "{text}");
        assert!(text.contains(ESTIMATED_MAX_NOTE), "{text}");
        let task = text.lines().find(|l| l.contains("sshd")).unwrap();
        assert!(task.ends_with("max >=32.14 us"), "{task}");
        assert!(text.ends_with(&format!("{RAISED_MAX_NOTE}\n")), "{text}");
    }
}
