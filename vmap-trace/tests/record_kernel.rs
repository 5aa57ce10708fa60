//! Root integration tests on the running kernel: real eBPF programs, real load, compared with
//! independent counts from perf. Without root they print why they did not run.
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::{ensure_tracefs, is_root, run, BIN};

/// Every test here counts system-wide: two at once would see each other's load.
static SYSTEM_WIDE: std::sync::Mutex<()> = std::sync::Mutex::new(());

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root to load eBPF programs");
            return;
        }
        ensure_tracefs();
        let _serial = SYSTEM_WIDE.lock().unwrap_or_else(|e| e.into_inner());
    };
}

fn report_json(rec: &Path) -> Value {
    let out = run(Command::new(BIN)
        .args(["report", "--format", "json"])
        .arg(rec));
    serde_json::from_slice(&out.stdout).expect("report --format json is JSON")
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `perf stat -x,` output lines: `count,unit,event,...`
fn perf_stat_counts(path: &Path) -> std::collections::HashMap<String, u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let count = f.first()?.trim().parse::<u64>().ok()?;
            Some((f.get(2)?.trim().to_string(), count))
        })
        .collect()
}

/// vmap-trace records system-wide around perf stat, which counts around the stress run: our
/// window contains perf's, so we may see slightly more (perf's own start-up), never fewer.
fn assert_superset_within(ours: u64, perf: u64, what: &str, rel: f64, abs: u64) {
    let slack = ((perf as f64 * rel).ceil() as u64).max(abs);
    assert!(
        ours >= perf && ours - perf <= slack,
        "{what}: vmap-trace counted {ours}, perf stat {perf} (allowed: perf .. perf+{slack})"
    );
}

/// Our alloc, free and purge counts against perf stat's counts of the same tracepoints (1%;
/// purges are few and may start just inside our window: 2 more allowed).
fn assert_ops_match_perf_stat(ops: &Value, perf: &std::collections::HashMap<String, u64>) {
    for (ours, event, abs) in [
        ("allocs", "alloc_vmap_area", 0),
        ("frees", "free_vmap_area_noflush", 0),
        ("purges", "purge_vmap_area_lazy", 2),
    ] {
        assert_superset_within(
            ops[ours].as_u64().unwrap(),
            perf[&format!("vmalloc:{event}")],
            event,
            0.01,
            abs,
        );
    }
}

fn record_around_perf_stat(
    workload: &str,
    record_flags: &[&str],
) -> (Value, std::collections::HashMap<String, u64>) {
    let dir = scratch();
    let rec = dir.path().join("w.rec");
    let stat = dir.path().join("stat.csv");
    let mut cmd = Command::new(BIN);
    cmd.arg("record")
        .args(record_flags)
        .arg("-o")
        .arg(&rec)
        .arg("--")
        .args(["perf", "stat", "-x,", "-a", "-o"])
        .arg(&stat);
    cmd.args([
        "-e",
        "vmalloc:alloc_vmap_area,vmalloc:free_vmap_area_noflush,vmalloc:purge_vmap_area_lazy",
        "--",
    ]);
    cmd.args([BIN, "stress", workload, "--duration", "2", "--quiet"]);
    run(&mut cmd);
    (report_json(&rec), perf_stat_counts(&stat))
}

#[test]
fn vmalloc_counts_match_perf_stat_under_pty_stress() {
    require_root!();
    let (report, perf) = record_around_perf_stat("pty", &[]);
    let ops = &report["profile"]["ops"];
    let allocs = ops["allocs"].as_u64().unwrap();
    assert!(
        allocs > 1000,
        "pty stress should allocate thousands of vmap areas, got {allocs}"
    );
    assert_ops_match_perf_stat(ops, &perf);
}

/// The classic-tracepoint fallback path (fields read at tracefs offsets) counts the same.
#[test]
fn classic_tracepoints_count_the_same() {
    require_root!();
    let (report, perf) = record_around_perf_stat("pty", &["--classic-tracepoints"]);
    let hooks = report["profile"]["meta"]["hooks"].as_array().unwrap();
    for h in hooks
        .iter()
        .filter(|h| h["hook"].as_str().unwrap().starts_with("vmalloc:"))
    {
        assert_eq!(h["mechanism"], "tracepoint", "{h}");
    }
    let ops = &report["profile"]["ops"];
    assert!(ops["allocs"].as_u64().unwrap() > 1000);
    assert_ops_match_perf_stat(ops, &perf);
    // Sizes and the lazy gauge come from fields at tracefs offsets: they must be filled.
    assert!(
        ops["alloc_pages"].as_u64().unwrap()
            >= ops["allocs"].as_u64().unwrap() - ops["allocs_failed"].as_u64().unwrap()
    );
    assert!(ops["lazy_pages_max"].as_u64().unwrap() > 0);
}

#[test]
fn vmalloc_counts_match_perf_stat_under_bpfmap_stress() {
    require_root!();
    let (report, perf) = record_around_perf_stat("bpfmap", &[]);
    let ops = &report["profile"]["ops"];
    let purges = ops["purges"].as_u64().unwrap();
    assert!(
        purges > 0,
        "bpfmap stress frees enough lazily to force purges"
    );
    assert!(ops["purged_areas"].as_u64().unwrap() > 0);
    assert!(
        ops["lazy_pages_max"].as_u64().unwrap() > 0,
        "lazy limit gauge is filled"
    );
    assert!(ops["lazy_pages_peak"].as_u64().unwrap() > 0);
    assert_ops_match_perf_stat(ops, &perf);
    // The size histogram holds every successful allocation.
    let sized: u64 = ops["size_pages"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        sized,
        ops["allocs"].as_u64().unwrap() - ops["allocs_failed"].as_u64().unwrap()
    );
}

/// Sum of the "contended" column of `perf lock contention`.
fn perf_lock_contentions(data: &Path) -> u64 {
    let out = run(Command::new("perf")
        .args(["lock", "contention", "-E", "1000000", "-i"])
        .arg(data));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn contention_counts_match_perf_lock_and_stacks_symbolize() {
    require_root!();
    let dir = scratch();
    let rec = dir.path().join("c.rec");
    let data = dir.path().join("perf-lock.data");
    // perf lock record runs outside (its window contains ours). The other way round, perf
    // lock record, as a child of `vmap-trace record`, captured a fraction of the events that
    // perf stat and bpftrace counted on the same tracepoints (seen on 6.18; not understood).
    let mut cmd = Command::new("perf");
    cmd.args(["lock", "record", "-a", "-o"])
        .arg(&data)
        .args(["--", BIN, "record", "-o"])
        .arg(&rec);
    cmd.args(["--", BIN, "stress", "mix", "--duration", "3", "--quiet"]);
    run(&mut cmd);
    let report = report_json(&rec);
    let p = &report["profile"];
    let ours: u64 = p["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["wait"]["count"].as_u64().unwrap())
        .sum();
    let perf = perf_lock_contentions(&data);
    assert!(
        ours > 1000,
        "the mix stress should produce thousands of contentions, vmap-trace saw {ours}"
    );
    let diff = (ours as f64 - perf as f64).abs() / perf as f64;
    eprintln!(
        "contentions: vmap-trace {ours}, perf lock {perf} ({:.2}% apart)",
        diff * 100.0
    );
    assert!(
        diff <= 0.05,
        "contentions: vmap-trace {ours}, perf lock {perf} ({:.1}% apart)",
        diff * 100.0
    );

    // Losses are reported, and small.
    let losses = p["losses"].as_object().unwrap();
    let lost: u64 = losses
        .iter()
        .filter(|(k, _)| *k != "tasks_evicted")
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert!(
        lost * 100 <= ours,
        "more than 1% of contentions lost: {lost}"
    );

    // Stacks symbolize to functions that exist in this kernel.
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
    let known: std::collections::HashSet<&str> = kallsyms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let stacks = p["stacks"].as_array().unwrap();
    assert!(!stacks.is_empty());
    let (mut named, mut total) = (0, 0);
    for s in stacks {
        for f in s["frames"].as_array().unwrap() {
            total += 1;
            if let Some(name) = f["function"].as_str() {
                // BPF programs are in kallsyms only while loaded (ours are gone by now).
                assert!(
                    known.contains(name) || name.starts_with("bpf_prog_"),
                    "frame {name} is not a kallsyms symbol"
                );
                named += 1;
            }
        }
    }
    assert!(
        named * 100 >= total * 95,
        "only {named} of {total} frames symbolized"
    );
    let all_frames: Vec<&str> = stacks
        .iter()
        .flat_map(|s| {
            s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f["function"].as_str())
        })
        .collect();
    assert!(
        all_frames
            .iter()
            .any(|f| f.contains("spin_lock") || f.contains("mutex_lock") || f.contains("rwsem")),
        "contended stacks go through a lock primitive"
    );
}

/// Sum of `field` over the recording's stack rows, and over its lock rows' waits.
fn stack_and_lock_sums(p: &Value, field: &str) -> (u64, u64) {
    let stacks = p["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum();
    let locks = p["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["wait"][field].as_u64().unwrap())
        .sum();
    (stacks, locks)
}

#[test]
fn sampled_stacks_still_account_for_every_contention() {
    require_root!();
    let dir = scratch();
    let stress = [BIN, "stress", "mix", "--duration", "3", "--quiet"];
    // Heavy sampling (one capture per CPU per 100 ms) and shallow stacks.
    let sampled = dir.path().join("sampled.rec");
    run(Command::new(BIN)
        .args(["record", "--stack-samples", "1", "--stack-depth", "6", "-o"])
        .arg(&sampled)
        .arg("--")
        .args(stress));
    let report = report_json(&sampled);
    let p = &report["profile"];
    let (captured, skipped) = (
        p["stack_sampling"]["captured"].as_u64().unwrap(),
        p["stack_sampling"]["skipped"].as_u64().unwrap(),
    );
    let (stack_count, lock_count) = stack_and_lock_sums(p, "count");
    eprintln!("sampled: {captured} captured, {skipped} passed over, {lock_count} contentions, stacks count {stack_count}");
    assert!(
        lock_count > 1000,
        "the mix stress should contend thousands of times, saw {lock_count}"
    );
    assert!(
        skipped > captured && captured > 0,
        "one capture per CPU per 100 ms must pass most over: {captured} / {skipped}"
    );
    // Every contention went through the sampler (the per-lock table and the sampler's counters
    // are read moments apart while the system runs on: 2% slack).
    assert!(
        (captured + skipped).abs_diff(lock_count) * 50 <= lock_count,
        "sampler saw {} of {lock_count}",
        captured + skipped
    );
    // Captures carry what was passed over: the stack table still adds up (less what each CPU
    // passed over after its last capture).
    assert!(
        stack_count <= lock_count + lock_count / 50 && stack_count * 10 >= lock_count * 9,
        "stacks count {stack_count} of {lock_count}"
    );
    let (stack_wait, lock_wait) = stack_and_lock_sums(p, "total_ns");
    assert!(
        stack_wait.abs_diff(lock_wait) * 10 <= lock_wait,
        "stack wait {stack_wait} vs lock wait {lock_wait}"
    );
    assert!(
        p["stacks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["frames"].as_array().unwrap().len() <= 6),
        "--stack-depth 6"
    );
    assert_eq!(p["meta"]["stack_keys"]["samples_per_cpu_s"], 1);
    let text =
        String::from_utf8(run(Command::new(BIN).arg("report").arg(&sampled)).stdout).unwrap();
    assert!(
        text.contains("stacks sampled:"),
        "the text report says stacks were sampled"
    );

    // --stack-samples 0: every stack captured, nothing passed over, counts equal.
    let exact = dir.path().join("exact.rec");
    run(Command::new(BIN)
        .args(["record", "--stack-samples", "0", "-o"])
        .arg(&exact)
        .arg("--")
        .args(stress));
    let report = report_json(&exact);
    let p = &report["profile"];
    assert_eq!(p["stack_sampling"]["skipped"], 0);
    let (stack_count, lock_count) = stack_and_lock_sums(p, "count");
    assert!(
        stack_count.abs_diff(lock_count) * 100 <= lock_count,
        "every stack: {stack_count} vs {lock_count}"
    );
}

/// Sum of `field` over the recording's per-task rows and over its per-CPU rows.
fn task_and_cpu_sums(p: &Value, field: &str) -> (u64, u64) {
    let sum = |rows: &str| -> u64 {
        p[rows]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_u64().unwrap())
            .sum()
    };
    (sum("tasks"), sum("cpus"))
}

#[test]
fn per_task_and_per_lock_waits_add_up_to_the_per_cpu_waits() {
    require_root!();
    let dir = scratch();
    // --stack-samples 0: every task is counted from its first wait. The kernel side gathers a
    // task's consecutive waits per CPU and adds them to the task's entry when another task
    // waits there; the recording adds the batches still open. pty has a handful of tasks, so
    // the table does not evict.
    let rec = dir.path().join("tasks.rec");
    run(Command::new(BIN)
        .args(["record", "--stack-samples", "0", "-o"])
        .arg(&rec)
        .args(["--", BIN, "stress", "pty", "--duration", "2", "--quiet"]));
    let report = report_json(&rec);
    let p = &report["profile"];
    assert_eq!(p["losses"]["tasks_evicted"], 0, "{}", p["losses"]);
    let (task_count, cpu_count) = task_and_cpu_sums(p, "count");
    let (task_wait, cpu_wait) = task_and_cpu_sums(p, "total_ns");
    eprintln!("tasks: {task_count} waits {task_wait} ns; CPUs: {cpu_count} waits {cpu_wait} ns");
    assert!(
        cpu_count > 1000,
        "stress pty should contend thousands of times, saw {cpu_count}"
    );
    // Read moments apart while the system runs on: 1% slack.
    assert!(
        task_count <= cpu_count && task_count * 100 >= cpu_count * 99,
        "per-task count {task_count} vs per-CPU {cpu_count}"
    );
    assert!(
        task_wait <= cpu_wait && task_wait * 100 >= cpu_wait * 99,
        "per-task wait {task_wait} vs per-CPU {cpu_wait}"
    );
    // Per lock: tty_mutex and the like pass HOT_LOCK_AFTER waits on each CPU within
    // milliseconds and are counted in the CPUs' hot slots from then on; the recording adds
    // those to the per-lock map entries.
    let (_, lock_count) = stack_and_lock_sums(p, "count");
    let (_, lock_wait) = stack_and_lock_sums(p, "total_ns");
    assert!(
        lock_count.abs_diff(cpu_count) * 100 <= cpu_count,
        "per-lock count {lock_count} vs per-CPU {cpu_count}"
    );
    assert!(
        lock_wait.abs_diff(cpu_wait) * 100 <= cpu_wait,
        "per-lock wait {lock_wait} vs per-CPU {cpu_wait}"
    );
}

/// `--sample-other-locks`: by default one contention in `DEFAULT_OTHER_LOCK_PERIOD` (64) of
/// other locks timed and counted that many times. The totals must still match perf lock's
/// count, and every table must add up as before.
/// `--sample-unlocated`, because kernels without data symbols in kallsyms (this one, often)
/// cannot tell the vmap locks apart in the kernel; where they can be told apart, the plain
/// default samples too, and a second recording checks that.
#[test]
fn sampled_other_locks_still_count_every_contention() {
    require_root!();
    let dir = scratch();
    let rec = dir.path().join("sampled.rec");
    let data = dir.path().join("perf-lock.data");
    let mut cmd = Command::new("perf");
    cmd.args(["lock", "record", "-a", "-o"])
        .arg(&data)
        .args([
            "--",
            BIN,
            "record",
            "--sample-unlocated",
            "--stack-samples",
            "0",
            "-o",
        ])
        .arg(&rec)
        .args(["--", BIN, "stress", "pty", "--duration", "2", "--quiet"]);
    run(&mut cmd);
    let report = report_json(&rec);
    let p = &report["profile"];
    let period = u64::from(vmap_trace_common::DEFAULT_OTHER_LOCK_PERIOD);
    assert_eq!(p["meta"]["other_lock_period"], period, "{}", p["meta"]);
    let notes = p["meta"]["notes"].to_string();
    assert!(
        notes.contains(&format!("one contention in {period}")),
        "{notes}"
    );
    let (_, ours) = stack_and_lock_sums(p, "count");
    let perf = perf_lock_contentions(&data);
    let diff = (ours as f64 - perf as f64).abs() / perf as f64;
    eprintln!(
        "contentions: vmap-trace {ours} (other locks 1 in {period}), perf lock {perf} ({:.2}% apart)",
        diff * 100.0
    );
    assert!(ours > 10_000, "stress pty should contend, saw {ours}");
    assert!(
        diff <= 0.05,
        "contentions: vmap-trace {ours}, perf lock {perf} ({:.1}% apart)",
        diff * 100.0
    );
    // Only the sampled waits reach the tables, each counted `period` times: with no vmap lock
    // located (always timed, counted once) the per-CPU counts are multiples of it. Per-task,
    // per-stack (every sampled wait's stack: --stack-samples 0), per-CPU and per-lock totals
    // agree.
    if p["meta"]["vmap_locks"]
        .as_array()
        .is_none_or(|l| l.is_empty())
    {
        for cpu in p["cpus"].as_array().unwrap() {
            assert_eq!(cpu["count"].as_u64().unwrap() % period, 0, "{cpu}");
        }
    }
    let (task_count, cpu_count) = task_and_cpu_sums(p, "count");
    assert!(
        task_count <= cpu_count && task_count * 100 >= cpu_count * 99,
        "per-task count {task_count} vs per-CPU {cpu_count}"
    );
    assert!(
        ours.abs_diff(cpu_count) * 100 <= cpu_count,
        "per-lock count {ours} vs per-CPU {cpu_count}"
    );
    let (stack_count, _) = stack_and_lock_sums(p, "count");
    assert!(
        stack_count.abs_diff(ours) * 100 <= ours,
        "stacks count {stack_count} of {ours}"
    );

    // The default: sampled where the kernel's vmap locks can all be located, else every
    // contention timed, and the recording says which.
    let plain = dir.path().join("plain.rec");
    run(Command::new(BIN)
        .args(["record", "-o"])
        .arg(&plain)
        .args(["--", "sleep", "0.2"]));
    let meta = &report_json(&plain)["profile"]["meta"];
    let notes = meta["notes"].to_string();
    if notes.contains("not all vmap locks could be located")
        || notes.contains("no vmap lock could be located")
    {
        assert_eq!(meta["other_lock_period"], 1, "{meta}");
        assert!(
            notes.contains("every lock's contentions were timed"),
            "{notes}"
        );
    } else {
        assert_eq!(meta["other_lock_period"], period, "{meta}");
        assert!(notes.contains("the vmap locks are exact"), "{notes}");
    }
}

fn doctor() -> Value {
    serde_json::from_slice(&run(Command::new(BIN).args(["doctor", "--format", "json"])).stdout)
        .unwrap()
}

fn finding<'a>(d: &'a Value, item: &str) -> &'a Value {
    d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == item)
        .unwrap_or_else(|| panic!("no finding {item}"))
}

#[test]
fn doctor_reports_this_kernels_facts() {
    require_root!();
    let d = doctor();
    // Each claim is checked against an independent source.
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    assert_eq!(
        finding(&d, "kprobes")["status"] == "ok",
        kprobe_pmu,
        "kprobes: {}",
        finding(&d, "kprobes")
    );
    let tracefs = PathBuf::from("/sys/kernel/tracing/events");
    for ev in [
        "vmalloc/alloc_vmap_area",
        "vmalloc/free_vmap_area_noflush",
        "vmalloc/purge_vmap_area_lazy",
        "lock/contention_begin",
        "lock/contention_end",
    ] {
        let item = format!("tracepoint {}", ev.replace('/', ":"));
        assert_eq!(
            finding(&d, &item)["status"] == "ok",
            tracefs.join(ev).exists(),
            "{item}"
        );
    }
    // bpftrace's kfunc probes use the same fentry attach: it must agree with doctor.
    let bpftrace = Command::new("bpftrace")
        .args([
            "-e",
            "kfunc:find_vmap_area { exit(); } interval:ms:50 { exit(); }",
        ])
        .output();
    if let Ok(out) = bpftrace {
        let bpftrace_ok = out.status.success();
        assert_eq!(
            finding(&d, "fentry")["status"] == "ok",
            bpftrace_ok,
            "fentry: doctor {} vs bpftrace {:?}",
            finding(&d, "fentry"),
            out
        );
    }
    assert_eq!(
        finding(&d, "btf")["status"] == "ok",
        Path::new("/sys/kernel/btf/vmlinux").exists()
    );
    // Every tracepoint hook is attached, with tp_btf preferred when BTF exists; function and
    // lock-timing hooks use fentry or kprobes exactly when the kernel has them, and otherwise
    // say why not.
    let fentry_ok = finding(&d, "fentry")["status"] == "ok";
    for h in d["hooks"].as_array().unwrap() {
        let name = h["hook"].as_str().unwrap();
        if name.starts_with("vmalloc:") || name.starts_with("lock:") {
            assert_eq!(h["mechanism"], "tp_btf", "hook {h}");
        } else if !kprobe_pmu && !fentry_ok {
            assert!(h["mechanism"].is_null(), "hook {h} cannot be attached here");
            let reasons = h["rejected"].to_string();
            assert!(
                reasons.contains("CONFIG_KPROBES")
                    || reasons.contains("not in kallsyms")
                    || reasons.contains("no vmap lock"),
                "{h}"
            );
        } else {
            assert!(
                h["mechanism"] == "fentry"
                    || h["mechanism"] == "kprobe"
                    || h["mechanism"].is_null(),
                "{h}"
            );
        }
    }
}

#[test]
fn corrupt_and_foreign_recordings_are_clear_errors() {
    let dir = scratch();
    let foreign = dir.path().join("foreign.rec");
    std::fs::write(&foreign, b"\x7fELF not a recording").unwrap();
    let out = Command::new(BIN)
        .arg("report")
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a vmap-trace recording"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let missing = Command::new(BIN)
        .args(["report", "/nonexistent/x.rec"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
}

#[test]
fn sigterm_still_writes_the_recording() {
    require_root!();
    let dir = scratch();
    let rec = dir.path().join("term.rec");
    let mut child = Command::new(BIN)
        .args(["record", "-o"])
        .arg(&rec)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "record exits cleanly on SIGTERM: {status}"
    );
    let report = report_json(&rec);
    // Attaching takes part of the 2.5 s; what matters is that the time recorded was kept.
    assert!(report["profile"]["meta"]["duration_ns"].as_u64().unwrap() > 300_000_000);
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(stderr.contains("stopped by signal"), "{stderr}");
}

/// Start `record -o rec` and wait until its probes are attached (it prints "via" lines).
fn start_recording(rec: &Path, extra: &[&str]) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["record", "-o"])
        .arg(rec)
        .args(extra)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Attaching takes about a second here; the recording must have started by then.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    child
}

#[test]
fn sighup_sigint_and_sigterm_each_leave_a_complete_recording() {
    require_root!();
    let dir = scratch();
    for (name, signal) in [
        ("hup", libc::SIGHUP),
        ("int", libc::SIGINT),
        ("term", libc::SIGTERM),
    ] {
        let rec = dir.path().join(format!("{name}.rec"));
        let mut child = start_recording(&rec, &[]);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
        assert!(status.success(), "SIG{name}: {status}\n{stderr}");
        assert!(stderr.contains("stopped by signal"), "SIG{name}: {stderr}");
        let report = report_json(&rec);
        assert!(
            report["profile"]["meta"]["duration_ns"].as_u64().unwrap() > 300_000_000,
            "SIG{name}"
        );
    }
}

/// The BPF objects (programs, maps, links) a process holds, from its fds' fdinfo.
fn bpf_ids(pid: u32) -> Vec<(&'static str, u32)> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let info = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        for line in info.lines() {
            for kind in ["prog_id", "map_id", "link_id"] {
                if let Some(id) = line
                    .strip_prefix(kind)
                    .and_then(|r| r.trim_start_matches(':').trim().parse().ok())
                {
                    ids.push((kind, id));
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether a BPF object of that kind and id still exists (BPF_*_GET_FD_BY_ID).
fn bpf_object_exists(kind: &str, id: u32) -> bool {
    let cmd = match kind {
        "prog_id" => 13,
        "map_id" => 14,
        _ => 30, // BPF_LINK_GET_FD_BY_ID
    };
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: bpf(2) reads `attr` (id, next_id, open_flags) of the size given.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 16) };
    if fd >= 0 {
        // SAFETY: closing the fd we were just given.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

#[test]
fn sigkill_leaves_no_program_map_or_link_behind() {
    require_root!();
    let dir = scratch();
    let mut child = start_recording(&dir.path().join("killed.rec"), &[]);
    let ids = bpf_ids(child.id());
    assert!(
        ids.iter().any(|(k, _)| *k == "prog_id") && ids.iter().any(|(k, _)| *k == "link_id"),
        "record holds programs and links: {ids:?}"
    );
    assert!(ids.iter().all(|&(k, id)| bpf_object_exists(k, id)));
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel frees them once the last fd is closed, after an RCU grace period.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left = ids.clone();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        left.retain(|&(k, id)| bpf_object_exists(k, id));
    }
    assert!(
        left.is_empty(),
        "still attached after SIGKILL: {left:?} of {ids:?}"
    );
}

#[test]
fn output_targets_are_checked_first_and_never_replaced() {
    require_root!();
    use std::os::unix::fs::FileTypeExt;
    let dir = scratch();
    // A directory fails before anything is attached, not after the recording.
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(["record", "-d", "30", "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a directory") && !err.contains(" via "),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // A device node of our own (the null device), never the system's /dev/null.
    let node = dir.path().join("null");
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; makedev(1, 3) is the null device.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    run(Command::new(BIN)
        .args(["record", "-d", "1", "-o"])
        .arg(&node));
    assert!(std::fs::metadata(&node)
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn a_full_disk_keeps_the_recording_elsewhere_and_still_reports() {
    require_root!();
    let dir = scratch();
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    // A 4 KiB tmpfs: room for the temporary file's name, not for a recording.
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4k", "tmpfs"])
        .arg(&full));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&full);
    let fallback = dir.path().join("tmp");
    std::fs::create_dir(&fallback).unwrap();
    let out = Command::new(BIN)
        .args(["record", "-d", "1", "--report", "-o"])
        .arg(full.join("x.rec"))
        .env("TMPDIR", &fallback)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("saved to"), "{err}");
    // The report was printed all the same.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("vmap"),
        "no report on stdout"
    );
    let kept: Vec<PathBuf> = std::fs::read_dir(&fallback)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(err.contains(kept[0].to_str().unwrap()), "{err}");
    report_json(&kept[0]);
}

#[test]
fn record_durations_take_units_and_reject_absurd_values() {
    // Argument errors come before any privilege check: no root needed.
    let out = Command::new(BIN)
        .args(["record", "-d", "1e30", "-o", "/nonexistent/x.rec"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("out of range") && !err.contains("panicked"),
        "{err}"
    );
    // "10s" parses: the run fails later, on the output directory.
    let out = Command::new(BIN)
        .args(["record", "-d", "10s", "-o", "/nonexistent/x.rec"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn unprivileged_record_is_a_clear_error() {
    require_root!(); // needs root to drop to another user
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            BIN,
            "record",
            "-d",
            "1",
            "-o",
            "/tmp/x.rec",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn user_stacks_and_per_task_stacks_reach_the_flamegraph() {
    require_root!();
    let dir = scratch();
    let rec = dir.path().join("u.rec");
    run(Command::new(BIN)
        .args(["record", "--user-stacks", "-o"])
        .arg(&rec)
        .args(["--", BIN, "stress", "threads", "--duration", "3", "--quiet"]));
    let report = report_json(&rec);
    let p = &report["profile"];
    assert_eq!(p["meta"]["stack_keys"]["user_stacks"], true);
    assert_eq!(
        p["losses"]["stack_capture_failed"], 0,
        "every contended stack captured: {}",
        p["losses"]
    );
    let stacks = p["stacks"].as_array().unwrap();
    // The stress threads (named stress-threads-N) contend on their process's locks.
    let stress: Vec<&Value> = stacks
        .iter()
        .filter(|s| {
            s["task"]["comm"]
                .as_str()
                .is_some_and(|c| c.starts_with("stress-"))
        })
        .collect();
    assert!(
        !stress.is_empty(),
        "no contended stack from the stress process: {:?}",
        stacks.iter().map(|s| &s["task"]).collect::<Vec<_>>()
    );
    let tgid = stress[0]["task"]["tgid"].as_u64().unwrap();
    let with_user: Vec<&&Value> = stress
        .iter()
        .filter(|s| s["user_frames"].as_array().is_some_and(|f| !f.is_empty()))
        .collect();
    assert!(
        with_user.len() * 2 >= stress.len(),
        "{} of {} stress stacks have user frames",
        with_user.len(),
        stress.len()
    );
    // Symbolized against the live process: glibc's exported syscall wrappers (Debian's glibc
    // has no frame pointers, so the innermost frame is often the only one) are named; its
    // internal functions (the thread-exit path) are not in its symbol table and stay addresses.
    let names: std::collections::HashSet<&str> = with_user
        .iter()
        .filter_map(|s| s["user_frames"][0]["function"].as_str())
        .collect();
    let wrappers = [
        "madvise",
        "mmap",
        "munmap",
        "mprotect",
        "__mprotect",
        "pthread_create",
        "syscall",
        "clone3",
        "__clone3",
    ];
    assert!(
        names.iter().any(|n| wrappers.contains(n)),
        "no libc syscall wrapper named among the user frames: {names:?}"
    );

    let out = run(Command::new(BIN).arg("flamegraph").arg(&rec).args([
        "-o",
        "-",
        "--folded",
        "--user-stacks",
        "--task",
        &tgid.to_string(),
    ]));
    let folded = String::from_utf8(out.stdout).unwrap();
    assert!(!folded.is_empty());
    for line in folded.lines() {
        let first = line.split(';').next().unwrap();
        assert!(
            first.ends_with(&format!("({tgid})")),
            "line from another process: {line}"
        );
        assert!(line.contains(";[kernel];"), "no kernel part: {line}");
    }
    // A kernel-only recording refuses --task and --user-stacks with a reason.
    let plain = dir.path().join("plain.rec");
    run(Command::new(BIN)
        .args(["record", "-o"])
        .arg(&plain)
        .args(["--", "true"]));
    let out = Command::new(BIN)
        .arg("flamegraph")
        .arg(&plain)
        .args(["-o", "-", "--folded", "--task", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--per-task"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_full_stack_table_evicts_cold_keys_and_counts_them() {
    require_root!();
    let dir = scratch();
    let rec = dir.path().join("small-table.rec");
    // Eight entries: mix contends on many more (lock, stack) pairs than that, so the LRU table
    // must evict; every stack captured so that each contention touches it.
    run(Command::new(BIN)
        .args(["record", "--stack-keys", "8", "--stack-samples", "0", "-o"])
        .arg(&rec)
        .args(["--", BIN, "stress", "mix", "--duration", "3", "--quiet"]));
    let report = report_json(&rec);
    let p = &report["profile"];
    let stacks = p["stacks"].as_array().unwrap();
    let losses = &p["losses"];
    let evicted = losses["stack_keys_evicted"].as_u64().unwrap();
    let (_, lock_count) = stack_and_lock_sums(p, "count");
    let cpu_count: u64 = p["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    eprintln!(
        "{} stack keys left, {evicted} evicted, {lock_count} contentions",
        stacks.len()
    );
    assert!(
        lock_count > 1000,
        "mix should contend thousands of times, saw {lock_count}"
    );
    assert!(
        stacks.len() <= 8,
        "{} stack keys in an 8-entry table",
        stacks.len()
    );
    assert!(
        evicted > 0,
        "an 8-entry table under mix must have evicted keys"
    );
    // Evicting is not losing: no insert failed, and the per-lock and per-CPU totals, which do
    // not depend on the stack table, still agree.
    assert_eq!(losses["stack_keys_full"], 0);
    // (read moments apart while the system runs on: 1% slack)
    assert!(
        lock_count.abs_diff(cpu_count) * 100 <= cpu_count,
        "per-lock {lock_count} and per-CPU {cpu_count} contention counts"
    );
    assert_eq!(p["meta"]["stack_keys"]["table_entries"], 8);
    let text = String::from_utf8(run(Command::new(BIN).arg("report").arg(&rec)).stdout).unwrap();
    assert!(
        text.contains("cold stacks evicted"),
        "the text report says stacks were evicted:\n{text}"
    );
}
