//! Reading the guest's results back and checking them against what each kernel must show.
use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::visibility::{self, kprobe_hits};
use super::KernelSeries;

#[derive(Debug)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn result(name: &str, ok: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// Sections printed by the guest's /init between `@@VT-BEGIN name@@` and `@@VT-END name rc=N@@`.
pub fn sections(serial: &str) -> HashMap<String, (String, i32)> {
    let mut out = HashMap::new();
    let mut rest = serial;
    while let Some(b) = rest.find("@@VT-BEGIN ") {
        let after = &rest[b + 11..];
        let Some(name_end) = after.find("@@") else {
            break;
        };
        let name = after[..name_end].to_string();
        let body_start = &after[name_end + 2..];
        let end_marker = format!("@@VT-END {name} rc=");
        let Some(e) = body_start.find(&end_marker) else {
            break;
        };
        let body = body_start[..e].trim_matches('\n').to_string();
        let rc_text = &body_start[e + end_marker.len()..];
        let rc = rc_text
            .split("@@")
            .next()
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or(-1);
        out.insert(name, (body, rc));
        rest = &body_start[e..];
    }
    out
}

pub fn json(sections: &HashMap<String, (String, i32)>, name: &str) -> Option<Value> {
    let (body, _) = sections.get(name)?;
    // The JSON document starts at the first '{'; stderr chatter may come before and after.
    serde_json::Deserializer::from_str(&body[body.find('{')?..])
        .into_iter::<Value>()
        .next()?
        .ok()
}

/// Median ops/s of `stress --json` runs per mode: (plain, record, record --lock-timing).
pub fn overhead(sections: &HashMap<String, (String, i32)>) -> Option<(f64, f64, f64)> {
    let median = |mode: &str| -> Option<f64> {
        let mut v: Vec<f64> = (1..=3)
            .filter_map(|r| {
                json(sections, &format!("overhead_{mode}_{r}"))?["ops_per_sec"].as_f64()
            })
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(v[v.len() / 2])
    };
    Some((median("plain")?, median("record")?, median("locktiming")?))
}

fn function_count(report: &Value, function: &str) -> Option<u64> {
    report["profile"]["functions"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == function)?["latency"]["count"]
        .as_u64()
}

fn hook_mechanism<'a>(report: &'a Value, hook: &str) -> Option<&'a str> {
    report["profile"]["meta"]["hooks"]
        .as_array()?
        .iter()
        .find(|h| h["hook"] == hook)?["mechanism"]
        .as_str()
}

fn timing<'a>(report: &'a Value, name: &str) -> Option<&'a Value> {
    report["profile"]["lock_timing"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
}

/// Issue 18's checks of what the kernel lets vmap-trace see (visibility.rs), on the default-mode
/// `record -- stress mix` run (`report_default`, `model_from`) and the kprobe_profile
/// cross-check window; independent of the other checks, so each runs even if another
/// section's JSON is missing.
fn visibility_checks(s: &HashMap<String, (String, i32)>) -> Vec<CheckResult> {
    let mut r = Vec::new();
    match json(s, "report_default") {
        Some(report) => {
            r.push(visibility::vmap_lock_waits(&report));
            r.extend(visibility::figures_nonzero_or_explained(&report));
        }
        None => r.push(result(
            "default-mode stress mix report",
            false,
            "report_default JSON missing or unparsable",
        )),
    }
    r.push(visibility::model_from(s.get("model_from")));
    match (json(s, "report_crosscheck"), json(s, "report_toggle")) {
        (Some(cross), Some(toggle)) => {
            let text = |name: &str| s.get(name).map(|(b, _)| b.as_str()).unwrap_or("");
            for source in visibility::OP_SOURCES {
                r.push(visibility::op_matches_kprobe_profile(
                    source,
                    &cross,
                    &toggle,
                    text("kprobe_profile"),
                    text("kprobe_profile_toggle"),
                ));
            }
        }
        _ => r.push(result(
            "op counts vs kprobe_profile",
            false,
            "report_crosscheck or report_toggle JSON missing or unparsable",
        )),
    }
    // Every hooks array the guest printed: doctor's and each recording's.
    let mut hooks = Vec::new();
    if let Some(doctor) = json(s, "doctor") {
        hooks.push(("doctor", doctor["hooks"].clone()));
    }
    for name in [
        "report",
        "report_default",
        "report_kprobe",
        "report_crosscheck",
    ] {
        if let Some(report) = json(s, name) {
            hooks.push((name, report["profile"]["meta"]["hooks"].clone()));
        }
    }
    let sources: Vec<(&str, &Value)> = hooks.iter().map(|(n, h)| (*n, h)).collect();
    let mut rejections = visibility::no_load_rejections(&sources);
    if sources.is_empty() {
        rejections.ok = false;
        rejections.detail = "no doctor or report JSON to look at".into();
    }
    r.push(rejections);
    r
}

pub fn check(series: KernelSeries, serial: &str, out_dir: &Path) -> Vec<CheckResult> {
    let s = sections(serial);
    let _ = std::fs::create_dir_all(out_dir);
    for (name, (body, _)) in &s {
        let _ = std::fs::write(out_dir.join(format!("{name}.txt")), body);
    }
    let mut r = Vec::new();
    for name in [
        "doctor",
        "record",
        "report",
        "record_default",
        "report_default",
        "record_kprobe",
        "report_kprobe",
        "record_toggle",
        "record_crosscheck",
        "report_crosscheck",
    ] {
        match s.get(name) {
            Some((_, 0)) => {}
            Some((body, rc)) => r.push(result(
                &format!("{name} exit"),
                false,
                format!("rc={rc}: {}", body.lines().last().unwrap_or("")),
            )),
            None => r.push(result(
                &format!("{name} ran"),
                false,
                "section missing from serial output",
            )),
        }
    }
    r.extend(visibility_checks(&s));
    let (Some(doctor), Some(report), Some(kreport), Some(creport), Some(treport)) = (
        json(&s, "doctor"),
        json(&s, "report"),
        json(&s, "report_kprobe"),
        json(&s, "report_crosscheck"),
        json(&s, "report_toggle"),
    ) else {
        r.push(result(
            "results parse",
            false,
            "doctor/report JSON missing or unparsable",
        ));
        return r;
    };
    r.push(links_toggle(s.get("links_toggle")));
    let cpus = s
        .get("nproc")
        .map(|(b, _)| b.trim().to_string())
        .unwrap_or_default();
    r.push(result(
        "guest",
        true,
        format!(
            "kernel {}, {cpus} CPUs",
            s.get("uname").map(|(b, _)| b.trim()).unwrap_or("?")
        ),
    ));

    let finding = |item: &str| {
        doctor["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|x| x["item"] == item))
            .cloned()
            .unwrap_or(Value::Null)
    };
    r.push(result(
        "doctor shows kprobes",
        finding("kprobes")["status"] == "ok",
        finding("kprobes")["detail"].to_string(),
    ));
    let fentry_ok = finding("fentry")["status"] == "ok";
    // Default mode (the cross-check recording) picks fentry where it works; --lock-timing
    // (the main recording) keeps BPF trampolines out and uses kprobes.
    let fn_mech = hook_mechanism(&creport, "fn:alloc_vmap_area").unwrap_or("none");
    r.push(result(
        "fentry used where it works",
        (fentry_ok && fn_mech == "fentry") || (!fentry_ok && fn_mech == "kprobe"),
        format!(
            "doctor fentry: {}; fn:alloc_vmap_area via {fn_mech}",
            finding("fentry")["detail"]
        ),
    ));
    let timed_mech = hook_mechanism(&report, "fn:alloc_vmap_area").unwrap_or("none");
    r.push(result(
        "--lock-timing times functions with kprobes",
        timed_mech == "kprobe",
        format!("fn:alloc_vmap_area via {timed_mech}"),
    ));

    let design = report["profile"]["meta"]["design"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let want_design = if series.node_sharded() {
        "node_sharded"
    } else {
        "legacy"
    };
    r.push(result("design detected", design == want_design, design));

    // Function latency: the always-exercised ones must have calls; every probed function with
    // none must be explained in the text report.
    for f in [
        "alloc_vmap_area",
        "free_vmap_area_noflush",
        "__purge_vmap_area_lazy",
    ] {
        let n = function_count(&report, f);
        r.push(result(
            &format!("latency {f}"),
            n.unwrap_or(0) > 0,
            format!("{n:?} calls"),
        ));
    }
    // Contended kernel stacks are captured (bpf_get_stack into the hashed stack table) and
    // symbolized on this kernel too, with none lost.
    let stacks = report["profile"]["stacks"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let named = report["profile"]["stacks"][0]["frames"]
        .as_array()
        .map(|f| f.iter().filter(|x| x["function"].is_string()).count())
        .unwrap_or(0);
    let failed = report["profile"]["losses"]["stack_capture_failed"].as_u64();
    r.push(result(
        "contended stacks captured",
        stacks > 0 && named > 0 && failed == Some(0),
        format!(
            "{stacks} stacks (top one with {named} named frames), stack_capture_failed {failed:?}"
        ),
    ));
    // Per CPU: the CPUs' histograms add up to the total, and the threads of `stress mix`
    // spread over more than one of the 4 vCPUs.
    if let Some(f) = report["profile"]["functions"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["function"] == "alloc_vmap_area"))
    {
        let total = f["latency"]["count"].as_u64().unwrap_or(0);
        let cpus: Vec<(u64, u64)> = f["per_cpu"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["cpu"].as_u64().unwrap_or(u64::MAX),
                    c["latency"]["count"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let sum: u64 = cpus.iter().map(|c| c.1).sum();
        r.push(result(
            "latency alloc_vmap_area per CPU",
            total > 0 && sum == total && cpus.len() > 1 && cpus.iter().all(|c| c.0 < 4 && c.1 > 0),
            format!("total {total}, per CPU (cpu, calls) {cpus:?}"),
        ));
    }
    if series.node_sharded() {
        for f in ["purge_vmap_node", "decay_va_pool_node"] {
            let n = function_count(&report, f);
            r.push(result(
                &format!("latency {f} (node design only)"),
                n.unwrap_or(0) > 0,
                format!("{n:?} calls"),
            ));
        }
    }
    let text = s.get("report_text").map(|(b, _)| b.as_str()).unwrap_or("");
    for f in report["profile"]["functions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if f["latency"]["count"] == 0 {
            let name = f["function"].as_str().unwrap_or("?");
            let line = text
                .lines()
                .find(|l| l.starts_with(name) && l.split_whitespace().nth(1) == Some("0"))
                .unwrap_or("");
            r.push(result(
                &format!("zero-call {name} explained"),
                line.len() > name.len() + 20,
                line.trim().to_string(),
            ));
        }
    }

    // Cross-check with the kernel's own kprobe hit counts: both minus the footprint of arming
    // and disarming the kprobe events (measured in a run of its own).
    let kp = s
        .get("kprobe_profile")
        .map(|(b, _)| b.as_str())
        .unwrap_or("");
    let kp_toggle = s
        .get("kprobe_profile_toggle")
        .map(|(b, _)| b.as_str())
        .unwrap_or("");
    for f in ["alloc_vmap_area", "free_vmap_area_noflush"] {
        let toggle = function_count(&treport, f).unwrap_or(0);
        let ours = function_count(&creport, f)
            .unwrap_or(0)
            .saturating_sub(toggle);
        let theirs = kprobe_hits(kp, f)
            .unwrap_or(0)
            .saturating_sub(kprobe_hits(kp_toggle, f).unwrap_or(0));
        let slack = (theirs as f64 * 0.02) as u64 + 10;
        let ok = theirs > 0 && ours.abs_diff(theirs) <= slack;
        r.push(result(
            &format!("{f} calls vs kprobe_profile"),
            ok,
            format!("vmap-trace {ours}, kprobe_profile {theirs} (after subtracting {toggle} from arming the kprobes)"),
        ));
    }

    // Lock names, wait and hold.
    let active = |t: &Value| {
        t["wait"]["count"].as_u64().unwrap_or(0) > 0 && t["hold"]["count"].as_u64().unwrap_or(0) > 0
    };
    let describe = |t: Option<&Value>| {
        t.map_or("absent".to_string(), |t| {
            format!(
                "{} acquisitions, {} holds",
                t["wait"]["count"], t["hold"]["count"]
            )
        })
    };
    let globals: &[&str] = if series.node_sharded() {
        &["free_vmap_area_lock"]
    } else {
        &["vmap_area_lock", "free_vmap_area_lock"]
    };
    // A kernel that inlines the spin unlock (5.10) cannot time spinlock holds: the report
    // must say so, and then that is the expected answer for the spinlocks.
    let spin_unprobeable = spin_unlock_inlined(&report);
    for name in globals {
        let t = timing(&report, name);
        let (ok, detail) = match (&spin_unprobeable, t) {
            (Some(reason), None) => (true, format!("not timed, as the report says: {reason}")),
            _ => (t.is_some_and(active), describe(t)),
        };
        r.push(result(&format!("lock {name} wait+hold"), ok, detail));
    }
    if series.node_sharded() {
        let nodes: std::collections::BTreeSet<String> = report["profile"]["lock_timing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| active(t))
            .filter_map(|t| {
                t["name"]
                    .as_str()?
                    .strip_prefix("vmap_node[")
                    .and_then(|n| n.split(']').next())
                    .map(str::to_string)
            })
            .collect();
        r.push(result(
            "per-node locks active on >1 node",
            nodes.len() > 1,
            format!("nodes with activity: {nodes:?}"),
        ));
        let names: Vec<&str> = report["profile"]["meta"]["vmap_locks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["name"].as_str())
            .collect();
        r.push(result(
            "per-node locks named",
            names.iter().any(|n| n.ends_with("].busy"))
                && names.iter().any(|n| n.ends_with("].lazy"))
                && names.iter().any(|n| n.ends_with("].pool_lock")),
            format!("{} locks located", names.len()),
        ));
    }

    // Debian's kernels list data symbols, so the vmap locks are located and only other locks'
    // contentions are sampled (--sample-other-locks, by default one in
    // DEFAULT_OTHER_LOCK_PERIOD); the local kernel cannot show this path (no data symbols in
    // its kallsyms).
    let meta = &report["profile"]["meta"];
    let notes = meta["notes"].to_string();
    let period = vmap_trace_common::DEFAULT_OTHER_LOCK_PERIOD;
    r.push(result(
        &format!("other locks sampled 1 in {period}, vmap locks exact"),
        meta["other_lock_period"] == period && notes.contains("the vmap locks are exact"),
        format!("other_lock_period {}", meta["other_lock_period"]),
    ));

    // The forced kprobe path works too.
    let kmech = hook_mechanism(&kreport, "fn:alloc_vmap_area");
    let kcount = function_count(&kreport, "alloc_vmap_area");
    r.push(result(
        "kprobe fallback: function latency",
        kmech == Some("kprobe") && kcount.unwrap_or(0) > 0,
        format!("{kmech:?}, {kcount:?} calls"),
    ));
    // Lock timing always uses kprobes: the main run covers it.
    let lmech = hook_mechanism(&report, "lock-timing:spinlock");
    r.push(result(
        "lock timing via kprobes",
        lmech == Some("kprobe") || (lmech.is_none() && spin_unprobeable.is_some()),
        match &spin_unprobeable {
            Some(reason) if lmech.is_none() => format!("spinlocks: {reason}"),
            _ => format!("{lmech:?}"),
        },
    ));

    let cycles = s
        .get("locktiming_cycles")
        .map(|(b, _)| b.as_str())
        .unwrap_or("");
    let (ok_cycles, all_cycles) = lock_timing_cycles(cycles);
    r.push(result(
        "--lock-timing attach/detach cycles",
        all_cycles == LOCK_TIMING_CYCLES && ok_cycles == all_cycles,
        format!("{ok_cycles} of {all_cycles} recordings succeeded (of {LOCK_TIMING_CYCLES} run)"),
    ));

    match overhead(&s) {
        Some((plain, rec, lt)) => r.push(result(
            "overhead measured (stress threads ops/s, median of 3; --lock-timing: one run)",
            plain > 0.0 && rec > 0.0 && lt > 0.0,
            format!(
                "plain {plain:.0}, record {rec:.0} ({:.3}x), --lock-timing {lt:.0} ({:.3}x)",
                rec / plain,
                lt / plain
            ),
        )),
        None => r.push(result(
            "overhead measured",
            false,
            "overhead sections missing or unparsable",
        )),
    }
    r
}

/// The reason the report gives for not timing spinlocks when the kernel inlines the spin
/// unlock (5.10: no out-of-line `_raw_spin_unlock` to probe), if that is why.
fn spin_unlock_inlined(report: &Value) -> Option<String> {
    let hook = report["profile"]["meta"]["hooks"]
        .as_array()?
        .iter()
        .find(|h| h["hook"] == "lock-timing:spinlock")?;
    if !hook["mechanism"].is_null() {
        return None;
    }
    hook["rejected"]
        .as_array()?
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .find(|r| r.contains("is not an out-of-line function here (inlined)"))
        .map(str::to_string)
}

/// The guest's `links_toggle` section: `tracing_toggle` switching the default programs
/// (fentry/fexit where the kernel allows) and the kprobe variant on and off. Detached, nothing
/// may be counted; attached again, allocations and vmap function calls must be.
fn links_toggle(section: Option<&(String, i32)>) -> CheckResult {
    let ran_default = section.is_some_and(|(b, _)| b.contains("variant default: "));
    // On 5.10 the guest switches only the kprobe links (guest-init.sh says why).
    let name = if ran_default || section.is_none() {
        "programs detach and attach again (fentry and kprobe links)"
    } else {
        "programs detach and attach again (kprobe links only: fentry switching is not run on 5.10)"
    };
    let verdict = |ok: bool, detail: &str| result(name, ok, detail.to_string());
    let Some((body, rc)) = section else {
        return verdict(false, "section missing from serial output");
    };
    if *rc != 0 {
        return verdict(
            false,
            &format!("rc={rc}: {}", body.lines().last().unwrap_or("")),
        );
    }
    let variant = |name: &str| {
        body.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("variant {name}: ")))
            .unwrap_or("")
            .to_string()
    };
    let (default, kprobe) = (variant("default"), variant("kprobe"));
    if !kprobe.contains("kprobe ") {
        return verdict(
            false,
            &format!("kprobe variant made no kprobe links: {kprobe:?}"),
        );
    }
    let windows: Vec<Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v["window"].is_u64())
        .collect();
    let count = |w: &Value, key: &str| w[key].as_u64().unwrap_or(u64::MAX);
    let mut problems = Vec::new();
    for w in &windows {
        let state = w["state"].as_str().unwrap_or("?");
        let (allocs, calls) = (count(w, "allocs"), count(w, "fn_calls"));
        let untraced = state == "off" || state == "sham";
        if untraced && (allocs, calls) != (0, 0) {
            problems.push(format!(
                "{state} window {} counted {allocs} allocations, {calls} calls",
                w["window"]
            ));
        }
        // 6.1 has no vmalloc tracepoints (they came in 6.2): there only the function probes
        // count.
        if !untraced && (allocs == u64::MAX || calls == u64::MAX || allocs + calls == 0) {
            problems.push(format!("{state} window {} counted nothing", w["window"]));
        }
    }
    let states: &[&str] = if ran_default {
        &["default", "kprobe"]
    } else {
        &["kprobe"]
    };
    for state in states {
        let traced: Vec<&Value> = windows.iter().filter(|w| w["state"] == *state).collect();
        if traced.is_empty() {
            problems.push(format!("no {state} window"));
        } else if !traced
            .iter()
            .any(|w| count(w, "fn_calls") > 0 && count(w, "fn_calls") != u64::MAX)
        {
            problems.push(format!("{state} windows timed no vmap function call"));
        }
    }
    let detail = format!(
        "{} windows; default: {default}; kprobe: {kprobe}",
        windows.len()
    );
    if problems.is_empty() {
        verdict(true, &detail)
    } else {
        verdict(false, &format!("{}; {detail}", problems.join("; ")))
    }
}

/// Cycles of the guest's `locktiming_cycles` loop.
const LOCK_TIMING_CYCLES: usize = 10;

/// (succeeded, reported) from the loop's `cycle N rc=X` lines.
fn lock_timing_cycles(text: &str) -> (usize, usize) {
    let rcs: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("cycle ")?
                .split_once(" rc=")
                .map(|(_, rc)| rc)
        })
        .collect();
    (rcs.iter().filter(|rc| **rc == "0").count(), rcs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinlock_timing_is_excused_only_by_an_inlined_unlock() {
        let report = |mechanism: serde_json::Value, reason: &str| {
            serde_json::json!({"profile": {"meta": {"hooks": [{
                "hook": "lock-timing:spinlock",
                "mechanism": mechanism,
                "rejected": [{"mechanism": "kprobe", "reason": reason}],
            }]}}})
        };
        let inlined = "_raw_spin_unlock is not an out-of-line function here (inlined)";
        assert!(spin_unlock_inlined(&report(serde_json::Value::Null, inlined)).is_some());
        assert!(spin_unlock_inlined(&report("kprobe".into(), inlined)).is_none());
        assert!(
            spin_unlock_inlined(&report(serde_json::Value::Null, "map VMAP_LOCKS missing"))
                .is_none()
        );
    }

    #[test]
    fn links_toggle_needs_nothing_counted_while_detached() {
        let ok = "variant default: 29 links (tp_btf 5, fentry 12, fexit 12), other locks timed 1 in 8\n\
                  variant kprobe: 29 links (tp_btf 5, kprobe 24), other locks timed 1 in 8\n\
                  {\"window\":0,\"state\":\"off\",\"ops\":5,\"secs\":0.25,\"allocs\":0,\"fn_calls\":0}\n\
                  {\"window\":1,\"state\":\"default\",\"ops\":5,\"secs\":0.25,\"allocs\":40,\"fn_calls\":90}\n\
                  {\"window\":2,\"state\":\"off\",\"ops\":5,\"secs\":0.25,\"allocs\":0,\"fn_calls\":0}\n\
                  {\"window\":3,\"state\":\"kprobe\",\"ops\":5,\"secs\":0.25,\"allocs\":30,\"fn_calls\":70}\n\
                  10 windows, 20 ops";
        let good = links_toggle(Some(&(ok.to_string(), 0)));
        assert!(good.ok, "{good:?}");
        let leaked = ok.replace(
            "\"state\":\"off\",\"ops\":5,\"secs\":0.25,\"allocs\":0",
            "\"state\":\"off\",\"ops\":5,\"secs\":0.25,\"allocs\":3",
        );
        let bad = links_toggle(Some(&(leaked, 0)));
        assert!(!bad.ok && bad.detail.contains("off window"), "{bad:?}");
        let no_kprobes = ok.replace("kprobe 24", "fentry 24");
        assert!(!links_toggle(Some(&(no_kprobes, 0))).ok);
        let no_calls = ok.replace("\"fn_calls\":70", "\"fn_calls\":0");
        assert!(!links_toggle(Some(&(no_calls, 0))).ok);
        // 6.1: no vmalloc tracepoints, only the function probes count.
        let no_tracepoints = ok
            .replace("\"allocs\":40", "\"allocs\":0")
            .replace("\"allocs\":30", "\"allocs\":0");
        assert!(links_toggle(Some(&(no_tracepoints.clone(), 0))).ok);
        let nothing = no_tracepoints.replace("\"fn_calls\":90", "\"fn_calls\":0");
        let bad = links_toggle(Some(&(nothing, 0)));
        assert!(!bad.ok && bad.detail.contains("counted nothing"), "{bad:?}");
        assert!(!links_toggle(Some(&(ok.to_string(), 1))).ok);
        assert!(!links_toggle(None).ok);
        // 5.10: only the kprobe links are switched; the result says so, and those windows
        // are still held to the same rules.
        let kprobe_only: String = ok
            .lines()
            .filter(|l| !l.contains("variant default") && !l.contains("\"state\":\"default\""))
            .collect::<Vec<_>>()
            .join("\n");
        let r = links_toggle(Some(&(kprobe_only.clone(), 0)));
        assert!(r.ok && r.name.contains("kprobe links only"), "{r:?}");
        let leaked = kprobe_only.replace("\"allocs\":0", "\"allocs\":3");
        assert!(!links_toggle(Some(&(leaked, 0))).ok);
        let silent = kprobe_only.replace("\"fn_calls\":70", "\"fn_calls\":0");
        assert!(!links_toggle(Some(&(silent, 0))).ok);
    }

    #[test]
    fn splits_sections_with_chatter_around() {
        let serial = "boot noise\n@@VT-BEGIN a@@\nline1\nline2\n@@VT-END a rc=0@@\n[  1.0] kernel msg\n@@VT-BEGIN b@@\n{\"x\":1}\n@@VT-END b rc=3@@\n";
        let s = sections(serial);
        assert_eq!(s["a"], ("line1\nline2".to_string(), 0));
        assert_eq!(s["b"].1, 3);
        assert_eq!(json(&s, "b").unwrap()["x"], 1);
        let s = sections("@@VT-BEGIN c@@\nattached\n{\"y\":2}\nwrote x\n@@VT-END c rc=0@@\n");
        assert_eq!(json(&s, "c").unwrap()["y"], 2);
        assert_eq!(
            kprobe_hits("  alloc_vmap_area    1234    0\n", "alloc_vmap_area"),
            Some(1234)
        );
        assert_eq!(
            kprobe_hits("  alloc_vmap_area    1234    0\n", "alloc"),
            None
        );
    }

    #[test]
    fn visibility_checks_fail_when_the_guest_printed_nothing() {
        let results = visibility_checks(&HashMap::new());
        assert!(results.len() >= 4, "{results:?}");
        assert!(results.iter().all(|r| !r.ok), "{results:?}");
        // A guest whose sections all exist but whose recording shows nothing still fails.
        let empty = "{\"profile\": {\"meta\": {\"hooks\": [], \"vmap_locks\": [], \"notes\": []}, \"ops\": {}}}";
        let mut s = HashMap::new();
        for name in [
            "doctor",
            "report_default",
            "report_crosscheck",
            "report_toggle",
        ] {
            s.insert(name.to_string(), (empty.to_string(), 0));
        }
        s.insert("model_from".to_string(), ("{\"ok\": 1}".to_string(), 0));
        let results = visibility_checks(&s);
        let passed: Vec<&str> = results
            .iter()
            .filter(|r| r.ok)
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            passed,
            [
                "model --from the recording",
                "no program rejected by the verifier"
            ],
            "{results:?}"
        );
    }

    #[test]
    fn counts_lock_timing_cycles() {
        assert_eq!(
            lock_timing_cycles("cycle 1 rc=0\ncycle 2 rc=1\n[ 3.2] noise\ncycle 3 rc=0\n"),
            (2, 3)
        );
        assert_eq!(lock_timing_cycles(""), (0, 0));
    }
}
