//! Machine-readable report: the derived tables plus the full profile.
use serde::Serialize;

use crate::profile::{Profile, VmapCallSite};

/// Version of the JSON report schema (see docs/report-schema.md).
pub const SCHEMA: &str = "vmap-trace-report/1";

#[derive(Serialize)]
struct JsonReport<'a> {
    schema: &'static str,
    vmap_wait_ns: u64,
    total_wait_ns: u64,
    vmap_call_sites: Vec<VmapCallSite>,
    profile: &'a Profile,
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
        profile: p,
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
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample_profile(), Some(1))).unwrap();
        assert_eq!(v["profile"]["stacks"].as_array().unwrap().len(), 1);
        assert_eq!(
            v["vmap_wait_ns"], 50_000,
            "derived tables come from the whole profile"
        );
    }
}
