//! Issue 18's checks of what each kernel lets vmap-trace see, one function per check, each
//! reading only `doctor --format json`, `report --format json` and the guest's other section
//! outputs. They are data-driven on purpose: the field names they read are in the tables and
//! small helpers below, so that a change of the report's schema is a one-line change here.
use std::collections::BTreeSet;

use serde_json::Value;

use super::checks::CheckResult;

fn result(name: &str, ok: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// The vmap locks the recording located: (address, name).
fn vmap_locks(report: &Value) -> Vec<(u64, String)> {
    report["profile"]["meta"]["vmap_locks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["addr"].as_u64()?, l["name"].as_str()?.to_string())))
        .collect()
}

/// The vmap lock table (`profile.locks`, the contended-wait table every mode records) shows
/// contended waits on vmap locks, by name. A row counts as a vmap lock's when its address is
/// one of the located vmap locks or its name is one of theirs; it counts as named when the
/// row carries that name.
pub fn vmap_lock_waits(report: &Value) -> CheckResult {
    const NAME: &str = "contended waits on named vmap locks";
    let located = vmap_locks(report);
    if located.is_empty() {
        return result(
            NAME,
            false,
            "no vmap lock located in this kernel (meta.vmap_locks empty)",
        );
    }
    let mut named = Vec::new();
    let mut unnamed = 0u64;
    let mut other = 0u64;
    for row in report["profile"]["locks"].as_array().into_iter().flatten() {
        let count = row["wait"]["count"].as_u64().unwrap_or(0);
        let addr = row["lock_addr"].as_u64();
        let name = row["name"].as_str();
        let is_vmap = located
            .iter()
            .any(|(a, n)| Some(*a) == addr || Some(n.as_str()) == name);
        match (is_vmap, name) {
            (true, Some(n)) if count > 0 => named.push((n.to_string(), count)),
            (true, None) => unnamed += count,
            _ => other += count,
        }
    }
    named.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let shown: Vec<String> = named
        .iter()
        .take(6)
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    result(
        NAME,
        !named.is_empty(),
        format!(
            "{} of {} located vmap locks with waits [{}]; unnamed vmap-lock waits {unnamed}; \
             other locks' waits {other}",
            named.len(),
            located.len(),
            shown.join(", ")
        ),
    )
}

/// An operation figure and the kernel function whose own kprobe hit count must equal it.
pub struct OpSource {
    /// Field of `profile.ops`.
    pub figure: &'static str,
    /// The function a kprobe event counts (`p:vtcheck/<function> <function>` in the guest).
    pub function: &'static str,
    /// Allowed difference: `relative` of the kernel's count plus `absolute`. Arming and
    /// disarming the kprobe events allocates vmap areas too; that footprint is measured in a
    /// window of its own and subtracted, and what is left of it varies by a few calls.
    pub relative: f64,
    pub absolute: u64,
    /// Also allowed: this share of vmap-trace's own footprint. Attaching the programs makes
    /// the kernel purge (BPF trampolines and maps free vmap areas): about 30 purges per
    /// attach on 6.1, varying by a few between the two windows (6.1: 34 in both, against 3
    /// purges of the stress itself), which a fixed slack of 1 cannot absorb.
    pub footprint_share: f64,
    /// The kernel's count must be non-zero: the window's stress always does this operation.
    pub must_happen: bool,
}

/// The op counts checked against the kernel's own kprobe_profile, over the same window.
/// One call of `alloc_vmap_area` is one allocation (its tracepoint fires once per call), one
/// call of `free_vmap_area_noflush` one lazy free, one call of `__purge_vmap_area_lazy` one
/// purge. `stress pty` always allocates and frees; a 2 s window may purge or not.
pub const OP_SOURCES: &[OpSource] = &[
    OpSource {
        figure: "allocs",
        function: "alloc_vmap_area",
        relative: 0.02,
        absolute: 10,
        footprint_share: 0.0,
        must_happen: true,
    },
    OpSource {
        figure: "frees",
        function: "free_vmap_area_noflush",
        relative: 0.02,
        absolute: 10,
        footprint_share: 0.0,
        must_happen: true,
    },
    OpSource {
        figure: "purges",
        function: "__purge_vmap_area_lazy",
        relative: 0.0,
        absolute: 1,
        footprint_share: 0.25,
        must_happen: false,
    },
];

/// kprobe_profile lines: `  alloc_vmap_area   <hits>   <misses>` (event name without group).
pub fn kprobe_hits(text: &str, event: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == event)
            .then(|| f.next()?.parse().ok())
            .flatten()
    })
}

fn op(report: &Value, figure: &str) -> Option<u64> {
    report["profile"]["ops"][figure].as_u64()
}

/// One op figure of the cross-check window against the kernel's kprobe hits over it, both
/// less the footprint of arming the kprobe events (`*_toggle`: a window of its own).
pub fn op_matches_kprobe_profile(
    source: &OpSource,
    report: &Value,
    report_toggle: &Value,
    kprobe_profile: &str,
    kprobe_profile_toggle: &str,
) -> CheckResult {
    let name = format!("ops.{} = kprobe_profile {}", source.figure, source.function);
    let (Some(ours_all), Some(footprint)) =
        (op(report, source.figure), op(report_toggle, source.figure))
    else {
        return result(
            &name,
            false,
            format!("profile.ops.{} missing from the report", source.figure),
        );
    };
    let Some(theirs_all) = kprobe_hits(kprobe_profile, source.function) else {
        return result(
            &name,
            false,
            format!("no {} line in kprobe_profile", source.function),
        );
    };
    let theirs_footprint = kprobe_hits(kprobe_profile_toggle, source.function).unwrap_or(0);
    let ours = ours_all.saturating_sub(footprint);
    let theirs = theirs_all.saturating_sub(theirs_footprint);
    let slack = (theirs as f64 * source.relative) as u64
        + source.absolute
        + (footprint as f64 * source.footprint_share).ceil() as u64;
    let ok = ours.abs_diff(theirs) <= slack && (theirs > 0 || !source.must_happen);
    result(
        &name,
        ok,
        format!(
            "vmap-trace {ours}, kprobe_profile {theirs} (allowed difference {slack}; subtracted, \
             from a window that only arms and disarms the events: vmap-trace {footprint}, \
             kprobe_profile {theirs_footprint})"
        ),
    )
}

/// Where a figure lives in `report --format json`.
pub struct Figure {
    pub name: &'static str,
    /// JSON pointer into the report.
    pub pointer: &'static str,
    pub kind: FigureKind,
}

pub enum FigureKind {
    /// A number.
    Number,
    /// An array of rows; the figure is the sum of `field` over them.
    RowSum(&'static str),
}

/// Every figure a `record -- stress mix` run makes on a kernel with kprobes, fentry and BTF
/// (all six of the matrix): each must be non-zero, or the report must say why not.
/// Left out, as zero is their normal value under this stress: `ops.allocs_failed`
/// (no allocation fails), `ops.lazy_pages_last` (zero right after a purge).
pub const FIGURES: &[Figure] = &[
    Figure {
        name: "allocs",
        pointer: "/profile/ops/allocs",
        kind: FigureKind::Number,
    },
    Figure {
        name: "frees",
        pointer: "/profile/ops/frees",
        kind: FigureKind::Number,
    },
    Figure {
        name: "purges",
        pointer: "/profile/ops/purges",
        kind: FigureKind::Number,
    },
    Figure {
        name: "purged_areas",
        pointer: "/profile/ops/purged_areas",
        kind: FigureKind::Number,
    },
    Figure {
        name: "alloc_pages",
        pointer: "/profile/ops/alloc_pages",
        kind: FigureKind::Number,
    },
    Figure {
        name: "lazy_pages_peak",
        pointer: "/profile/ops/lazy_pages_peak",
        kind: FigureKind::Number,
    },
    Figure {
        name: "lazy_pages_max",
        pointer: "/profile/ops/lazy_pages_max",
        kind: FigureKind::Number,
    },
    Figure {
        name: "lock waits",
        pointer: "/profile/locks",
        kind: FigureKind::RowSum("/wait/count"),
    },
    Figure {
        name: "per-CPU waits",
        pointer: "/profile/cpus",
        kind: FigureKind::RowSum("/count"),
    },
    Figure {
        name: "per-task waits",
        pointer: "/profile/tasks",
        kind: FigureKind::RowSum("/count"),
    },
    Figure {
        name: "stacks",
        pointer: "/profile/stacks",
        kind: FigureKind::RowSum("/count"),
    },
    Figure {
        name: "function calls",
        pointer: "/profile/functions",
        kind: FigureKind::RowSum("/latency/count"),
    },
];

/// The figure's value, None when the report lacks it.
pub fn figure_value(report: &Value, figure: &Figure) -> Option<u64> {
    let v = report.pointer(figure.pointer)?;
    match figure.kind {
        FigureKind::Number => v.as_u64(),
        FigureKind::RowSum(field) => Some(
            v.as_array()?
                .iter()
                .map(|row| row.pointer(field).and_then(Value::as_u64).unwrap_or(0))
                .sum(),
        ),
    }
}

/// Why the report says a figure is missing: a note (`meta.notes`) naming it as a word, or a
/// reason string at `profile.ops.sources.<name>` (where the recording says which source each
/// op figure came from, and why none). None: the report does not say.
pub fn figure_reason(report: &Value, figure: &str) -> Option<String> {
    if let Some(why) = report["profile"]["ops"]["sources"][figure]["reason"].as_str() {
        return Some(why.to_string());
    }
    let names_it = |note: &str| {
        note.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .any(|w| w == figure)
            || note.contains(&format!("`{figure}`"))
    };
    report["profile"]["meta"]["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|n| names_it(n))
        .map(str::to_string)
}

/// Every figure of `FIGURES` is non-zero, or the report says why not. One result per figure,
/// so the matrix shows exactly which are missing where.
pub fn figures_nonzero_or_explained(report: &Value) -> Vec<CheckResult> {
    FIGURES
        .iter()
        .map(|f| {
            let name = format!("figure {} non-zero or explained", f.name);
            match (figure_value(report, f), figure_reason(report, f.name)) {
                (None, _) => result(
                    &name,
                    false,
                    format!("{} missing from the report", f.pointer),
                ),
                (Some(n), _) if n > 0 => result(&name, true, format!("{n}")),
                (Some(_), Some(why)) => result(&name, true, format!("0, explained: {why}")),
                (Some(_), None) => result(&name, false, "0, and the report does not say why"),
            }
        })
        .collect()
}

/// `model --from` on the guest's recording: exits 0 and prints its JSON comparison.
pub fn model_from(section: Option<&(String, i32)>) -> CheckResult {
    const NAME: &str = "model --from the recording";
    let Some((body, rc)) = section else {
        return result(NAME, false, "section missing from serial output");
    };
    let last = body.lines().last().unwrap_or("").trim();
    if *rc != 0 {
        return result(NAME, false, format!("rc={rc}: {last}"));
    }
    let parsed = body.find(['{', '[']).and_then(|start| {
        serde_json::Deserializer::from_str(&body[start..])
            .into_iter::<Value>()
            .next()?
            .ok()
    });
    match parsed {
        Some(v) if !v.is_null() => result(NAME, true, format!("{} bytes of JSON", body.len())),
        _ => result(NAME, false, format!("rc=0 but no JSON: {last}")),
    }
}

/// A rejection the kernel's BPF_PROG_LOAD returned: the verifier refused the program (a load
/// error, as opposed to a missing function, tracepoint or a skipped mechanism). Also counts a
/// rejection that carries a verifier log.
pub fn is_load_rejection(rejection: &Value) -> bool {
    let reason = rejection["reason"].as_str().unwrap_or("");
    reason.contains("BPF_PROG_LOAD")
        || reason.to_ascii_lowercase().contains("verifier")
        || rejection
            .get("verifier_log")
            .is_some_and(|l| !l.is_null() && l != "")
}

/// Every (hook, mechanism, reason) the verifier rejected in a `hooks` array (doctor's, or a
/// recording's `meta.hooks`).
pub fn load_rejections(hooks: &Value) -> Vec<String> {
    hooks
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|h| {
            h["rejected"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| is_load_rejection(r))
                .map(move |r| {
                    format!(
                        "{} via {}: {}",
                        h["hook"].as_str().unwrap_or("?"),
                        r["mechanism"].as_str().unwrap_or("?"),
                        r["reason"].as_str().unwrap_or("")
                    )
                })
        })
        .collect()
}

/// No program of vmap-trace's object is rejected by the verifier, in `doctor` or in any
/// recording of the guest (`sources`: (what, its hooks array)).
pub fn no_load_rejections(sources: &[(&str, &Value)]) -> CheckResult {
    const NAME: &str = "no program rejected by the verifier";
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for (what, hooks) in sources {
        for r in load_rejections(hooks) {
            if seen.insert(r.clone()) {
                found.push(format!("{what}: {r}"));
            }
        }
    }
    let checked: Vec<&str> = sources.iter().map(|(w, _)| *w).collect();
    if found.is_empty() {
        result(NAME, true, format!("none in {}", checked.join(", ")))
    } else {
        result(NAME, false, found.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A 6.12-like report: the vmap locks located, one of them contended.
    fn report_612() -> Value {
        json!({"profile": {
            "meta": {
                "vmap_locks": [
                    {"name": "free_vmap_area_lock", "addr": 100, "kind": "spinlock"},
                    {"name": "vmap_node[0].busy", "addr": 200, "kind": "spinlock"}
                ],
                "notes": ["lock:contention_* only report spinlock waits that reach the MCS queue"],
                "hooks": [
                    {"hook": "vmalloc:alloc_vmap_area", "mechanism": "tp_btf", "rejected": []},
                    {"hook": "fn:alloc_vmap_area", "mechanism": "fentry", "rejected": []}
                ]
            },
            "ops": {"allocs": 500, "allocs_failed": 0, "frees": 490, "purges": 3,
                    "purged_areas": 400, "alloc_pages": 2000, "lazy_pages_last": 0,
                    "lazy_pages_max": 24576, "lazy_pages_peak": 9000},
            "locks": [
                {"lock_addr": 200, "flags": 1, "name": "vmap_node[0].busy", "wait": {"count": 12}},
                {"lock_addr": 999, "flags": 32, "name": "tty_mutex", "wait": {"count": 40}}
            ],
            "cpus": [{"cpu": 0, "count": 30}, {"cpu": 1, "count": 22}],
            "tasks": [{"tid": 5, "count": 52}],
            "stacks": [{"count": 52}],
            "functions": [{"function": "alloc_vmap_area", "latency": {"count": 500}}]
        }})
    }

    #[test]
    fn lock_waits_need_a_named_vmap_lock_with_waits() {
        let good = vmap_lock_waits(&report_612());
        assert!(
            good.ok && good.detail.contains("vmap_node[0].busy 12"),
            "{good:?}"
        );
        // 6.12.117 under stress mix: only tty_mutex waited.
        let mut only_tty = report_612();
        only_tty["profile"]["locks"][0]["wait"]["count"] = json!(0);
        let bad = vmap_lock_waits(&only_tty);
        assert!(
            !bad.ok && bad.detail.contains("other locks' waits 40"),
            "{bad:?}"
        );
        // 7.x: waits at a vmap lock's address, but the lock is not named.
        let mut unnamed = report_612();
        unnamed["profile"]["locks"][0]["name"] = Value::Null;
        let bad = vmap_lock_waits(&unnamed);
        assert!(
            !bad.ok && bad.detail.contains("unnamed vmap-lock waits 12"),
            "{bad:?}"
        );
        let mut none_located = report_612();
        none_located["profile"]["meta"]["vmap_locks"] = json!([]);
        assert!(!vmap_lock_waits(&none_located).ok);
    }

    #[test]
    fn op_counts_must_equal_the_kernels_kprobe_hits() {
        let toggle = json!({"profile": {"ops": {"allocs": 4, "frees": 3, "purges": 0}}});
        let kp_toggle = "  alloc_vmap_area  6  0\n  free_vmap_area_noflush  3  0\n  __purge_vmap_area_lazy  0  0\n";
        let kp = "  alloc_vmap_area  1006  0\n  free_vmap_area_noflush  803  0\n  __purge_vmap_area_lazy  2  0\n";
        let report = json!({"profile": {"ops": {"allocs": 1002, "frees": 800, "purges": 2}}});
        for source in OP_SOURCES {
            let r = op_matches_kprobe_profile(source, &report, &toggle, kp, kp_toggle);
            assert!(r.ok, "{r:?}");
        }
        // 6.1 on main: no vmalloc tracepoints, so allocs stay 0 although the kernel counted 1000.
        let zero = json!({"profile": {"ops": {"allocs": 0, "frees": 0, "purges": 0}}});
        let zero_toggle = json!({"profile": {"ops": {"allocs": 0, "frees": 0, "purges": 0}}});
        let r = op_matches_kprobe_profile(&OP_SOURCES[0], &zero, &zero_toggle, kp, kp_toggle);
        assert!(
            !r.ok && r.detail.contains("vmap-trace 0, kprobe_profile 1000"),
            "{r:?}"
        );
        // A purge the kernel did not count is a mismatch, however small.
        let extra = json!({"profile": {"ops": {"allocs": 1002, "frees": 800, "purges": 4}}});
        assert!(!op_matches_kprobe_profile(&OP_SOURCES[2], &extra, &toggle, kp, kp_toggle).ok);
        // Nothing allocated in the window at all: the cross-check proved nothing.
        let idle = "  alloc_vmap_area  6  0\n";
        let r = op_matches_kprobe_profile(&OP_SOURCES[0], &toggle, &toggle, idle, kp_toggle);
        assert!(!r.ok, "{r:?}");
        // The kprobe event is missing (it could not be created): fail, do not assume zero.
        assert!(!op_matches_kprobe_profile(&OP_SOURCES[2], &report, &toggle, "", kp_toggle).ok);
        assert_eq!(kprobe_hits(kp, "free_vmap_area_noflush"), Some(803));
    }

    #[test]
    fn every_figure_is_non_zero_or_explained() {
        let all = figures_nonzero_or_explained(&report_612());
        assert_eq!(all.len(), FIGURES.len());
        assert!(all.iter().all(|r| r.ok), "{all:?}");
        // 6.1 on main: the ops are all zero and no note names them.
        let mut r = report_612();
        for f in [
            "allocs",
            "frees",
            "purges",
            "purged_areas",
            "alloc_pages",
            "lazy_pages_peak",
            "lazy_pages_max",
        ] {
            r["profile"]["ops"][f] = json!(0);
        }
        r["profile"]["meta"]["notes"] = json!([
            "vmalloc:alloc_vmap_area is not recorded: tracepoint vmalloc:alloc_vmap_area does not exist in this kernel"
        ]);
        let failed: Vec<String> = figures_nonzero_or_explained(&r)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed.len(), 7, "{failed:?}");
        assert!(failed.contains(&"figure allocs non-zero or explained".to_string()));
        // A reason that names the figure, in a note or as the figure's source, explains it.
        r["profile"]["meta"]["notes"] = json!(["`purged_areas` is not counted: no purge hook"]);
        r["profile"]["ops"]["sources"] = json!({"allocs": {"reason": "no allocation hook"}});
        let by_name = |r: &Value, name: &str| {
            figures_nonzero_or_explained(r)
                .into_iter()
                .find(|c| c.name == format!("figure {name} non-zero or explained"))
                .unwrap()
        };
        assert!(by_name(&r, "purged_areas").ok);
        assert!(
            by_name(&r, "allocs").ok && by_name(&r, "allocs").detail.contains("no allocation hook")
        );
        assert!(
            !by_name(&r, "purges").ok,
            "a note about purged_areas does not explain purges"
        );
        // Lock waits: zero rows, or a missing table, fail.
        r["profile"]["locks"] = json!([]);
        assert!(!by_name(&r, "lock waits").ok);
        r["profile"].as_object_mut().unwrap().remove("cpus");
        assert!(by_name(&r, "per-CPU waits").detail.contains("missing"));
        assert!(!by_name(&r, "per-CPU waits").ok);
    }

    #[test]
    fn model_from_must_exit_zero_with_json() {
        let ok = ("{\"measured\": {\"design\": \"legacy\"}}".to_string(), 0);
        assert!(model_from(Some(&ok)).ok);
        let failed = (
            "Error: /tmp/m.rec: the model cannot use this recording: no vmalloc activity"
                .to_string(),
            1,
        );
        let r = model_from(Some(&failed));
        assert!(!r.ok && r.detail.contains("no vmalloc activity"), "{r:?}");
        assert!(!model_from(Some(&("nothing".to_string(), 0))).ok);
        assert!(!model_from(None).ok);
    }

    #[test]
    fn verifier_rejections_fail_the_run_other_refusals_do_not() {
        let doctor_hooks = json!([
            {"hook": "lock:contention_begin", "mechanism": null, "rejected": [
                {"mechanism": "tp_btf", "reason": "the BPF_PROG_LOAD syscall returned Permission denied (os error 13)"},
                {"mechanism": "tracepoint", "reason": "the BPF_PROG_LOAD syscall returned Permission denied (os error 13)"}
            ]},
            {"hook": "fn:find_unlink_vmap_area", "mechanism": null, "rejected": [
                {"mechanism": "fentry", "reason": "function not in kernel BTF (inlined, static clone or absent)"},
                {"mechanism": "kprobe", "reason": "function not in kallsyms (inlined or absent in this kernel)"}
            ]}
        ]);
        let report_hooks = json!([
            {"hook": "fn:alloc_vmap_area", "mechanism": "kprobe", "rejected": [
                {"mechanism": "fentry", "reason": "skipped (--prefer-kprobe)"}
            ]}
        ]);
        let bad = no_load_rejections(&[("doctor", &doctor_hooks), ("record", &report_hooks)]);
        assert!(!bad.ok, "{bad:?}");
        assert!(
            bad.detail.contains("lock:contention_begin via tp_btf"),
            "{bad:?}"
        );
        assert!(!bad.detail.contains("find_unlink_vmap_area"), "{bad:?}");
        let good = no_load_rejections(&[("record", &report_hooks)]);
        assert!(good.ok, "{good:?}");
        // A rejection that carries the verifier's log counts whatever its reason says.
        let logged = json!([{"hook": "x", "rejected": [
            {"mechanism": "kprobe", "reason": "refused", "verifier_log": "invalid read from stack R10 off=-56 size=8"}
        ]}]);
        assert!(!no_load_rejections(&[("doctor", &logged)]).ok);
    }
}
