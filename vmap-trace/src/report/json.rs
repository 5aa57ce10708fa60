//! Machine-readable report: the derived tables plus the full profile.
use std::borrow::Cow;

use serde::Serialize;

use crate::profile::{
    CpuWait, FunctionLatency, LockWait, Losses, OpSources, Profile, RecordingMeta, StackSampling,
    StackWait, TaskWaitSummary, VmallocOps, VmapCallSite, VmapLockTiming,
};

/// Version of the JSON report schema (see docs/report-schema.md).
pub const SCHEMA: &str = "vmap-trace-report/1";

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    vmap_wait_ns: u64,
    total_wait_ns: u64,
    vmap_call_sites: Vec<VmapCallSite>,
    /// Where each vmalloc operation figure came from, also for recordings that predate
    /// `profile.ops.sources` (`Profile::op_sources`).
    op_sources: OpSources,
    profile: ProfileJson<'a>,
}

/// The profile as recorded, except that a stack row whose max is only a lower bound
/// (`StackWait::shown_max`) shows that bound, never below its mean, with `"estimated": true`.
#[derive(Serialize)]
struct ProfileJson<'a> {
    meta: &'a RecordingMeta,
    ops: &'a VmallocOps,
    locks: &'a [LockWait],
    stacks: Vec<StackJson<'a>>,
    cpus: &'a [CpuWait],
    tasks: &'a [TaskWaitSummary],
    losses: &'a Losses,
    functions: &'a [FunctionLatency],
    lock_timing: &'a [VmapLockTiming],
    stack_sampling: &'a StackSampling,
}

#[derive(Serialize)]
struct StackJson<'a> {
    #[serde(flatten)]
    stack: Cow<'a, StackWait>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    estimated: bool,
}

impl<'a> ProfileJson<'a> {
    fn new(p: &'a Profile) -> Self {
        // Every field named, so that a new one cannot be left out of the report unnoticed.
        let Profile {
            meta,
            ops,
            locks,
            stacks,
            cpus,
            tasks,
            losses,
            functions,
            lock_timing,
            stack_sampling,
        } = p;
        let stacks = stacks
            .iter()
            .map(|s| {
                let max = s.shown_max(stack_sampling);
                let stack = if max.ns == s.max_ns {
                    Cow::Borrowed(s)
                } else {
                    Cow::Owned(StackWait {
                        max_ns: max.ns,
                        ..s.clone()
                    })
                };
                StackJson {
                    stack,
                    estimated: max.estimated,
                }
            })
            .collect();
        ProfileJson {
            meta,
            ops,
            locks,
            stacks,
            cpus,
            tasks,
            losses,
            functions,
            lock_timing,
            stack_sampling,
        }
    }
}

/// `max_rows` keeps only the heaviest stacks and tasks (all when None): stacks dominate the
/// size of a recording. Strings are exact; what serde_json leaves raw that a terminal would
/// interpret is `\u`-escaped (`crate::escape::json`).
pub fn render(p: &Profile, max_rows: Option<usize>) -> String {
    let whole = p;
    let trimmed;
    let p = match max_rows {
        None => p,
        Some(n) => {
            let mut t = p.clone();
            t.stacks.truncate(n);
            t.tasks.truncate(n);
            trimmed = t;
            &trimmed
        }
    };
    let report = JsonReport {
        schema: SCHEMA,
        vmap_wait_ns: whole.vmap_wait_ns(),
        total_wait_ns: whole.total_wait().total_ns,
        vmap_call_sites: whole.vmap_call_sites(),
        op_sources: whole.op_sources(),
        profile: ProfileJson::new(p),
    };
    crate::escape::json(serde_json::to_string_pretty(&report).expect("report serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    #[test]
    fn recorded_strings_are_exact_but_never_raw_controls() {
        use crate::escape::tests::{assert_inert, HOSTILE};
        let text = render(&crate::profile::tests::hostile_profile(), None);
        assert_inert(&text, false);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["profile"]["tasks"][0]["comm"], HOSTILE);
        assert_eq!(v["profile"]["meta"]["notes"][0], format!("note{HOSTILE}"));
    }

    #[test]
    fn json_has_schema_and_tables() {
        let v: serde_json::Value = serde_json::from_str(&render(&sample_profile(), None)).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["vmap_wait_ns"], 50_000);
        assert_eq!(v["vmap_call_sites"][0]["vmap_function"], "alloc_vmap_area");
        assert_eq!(v["profile"]["ops"]["allocs"], 2000);
        assert_eq!(v["op_sources"]["allocs"], "tracepoint");
        let fp = crate::profile::tests::function_probe_profile();
        let w: serde_json::Value = serde_json::from_str(&render(&fp, None)).unwrap();
        assert_eq!(w["op_sources"]["purged_areas"], "function_probe");
        assert_eq!(w["profile"]["ops"]["sources"]["allocs"], "function_probe");
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample_profile(), Some(1))).unwrap();
        assert_eq!(v["profile"]["stacks"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["vmap_wait_ns"], 50_000,
            "derived tables come from the whole profile"
        );
    }

    #[test]
    fn the_profile_is_the_recordings_body_when_no_max_is_estimated() {
        let p = sample_profile();
        let v: serde_json::Value = serde_json::from_str(&render(&p, None)).unwrap();
        assert_eq!(v["profile"], serde_json::to_value(&p).unwrap());
    }

    #[test]
    fn sampled_stacks_never_show_a_max_below_their_mean() {
        // `stress mix`, 6 s: alloc_vmap_area's stack showed avg 3.74 us, max 851 ns.
        let mut p = sample_profile();
        p.stack_sampling = StackSampling {
            captured: 100,
            skipped: 900,
        };
        p.stacks[0].count = 10;
        p.stacks[0].total_ns = 37_400;
        p.stacks[0].max_ns = 851;
        // A captured wait of 50 us or more is longer than any passed over: exact.
        p.stacks[1].count = 4;
        p.stacks[1].total_ns = 400_000;
        p.stacks[1].max_ns = 200_000;
        let v: serde_json::Value = serde_json::from_str(&render(&p, None)).unwrap();
        let stacks = &v["profile"]["stacks"];
        assert_eq!(stacks[0]["max_ns"], 3740);
        assert_eq!(stacks[0]["estimated"], true);
        assert_eq!(stacks[1]["max_ns"], 200_000);
        assert!(stacks[1].get("estimated").is_none(), "{}", stacks[1]);
        let site = &v["vmap_call_sites"][0];
        assert_eq!(site["max_ns"], 3740);
        assert_eq!(site["estimated"], true);
    }
}
