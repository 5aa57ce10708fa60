//! `report --compare BEFORE AFTER`: per-lock, per-vmap-function and per-op deltas between two
//! recordings, the table form of `vmap-trace diff`.
//!
//! Recordings rarely last equally long, so every comparison is of rates per second of
//! recording. Locks are matched by name (the kernel's or vmap-trace's), else by address and
//! kind: an address names a lock within one boot only (KASLR, heap), so unnamed locks of two
//! boots show as one "gone" and one "new" row. vmap functions are matched by canonical name,
//! which works across kernels and both allocator designs.
use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::escape::{self, field};
use crate::profile::attribution::canonical_function;
use crate::profile::{lock_kind, LockClass, Profile};

use super::csv::{design_key, op_counts, Cell, CsvWriter};
use super::{format_ns, per_second};

/// Version of the JSON comparison schema (see docs/report-schema.md).
pub const SCHEMA: &str = "vmap-trace-compare/1";

/// One recording of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideInfo {
    pub name: String,
    pub kernel_release: String,
    pub design: &'static str,
    pub cpus: u32,
    pub duration_ns: u64,
    pub lost_events: u64,
}

/// What one row measured in one recording.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Amount {
    pub count: u64,
    /// Total wait, for rows that measure time.
    pub total_ns: Option<u64>,
    pub count_per_s: f64,
    pub ns_per_s: Option<f64>,
}

impl Amount {
    fn new(count: u64, total_ns: Option<u64>, secs: f64) -> Amount {
        Amount {
            count,
            total_ns,
            count_per_s: per_second(count, secs),
            ns_per_s: total_ns.map(|ns| per_second(ns, secs)),
        }
    }

    /// The rate a change is computed on: time when measured, else events.
    fn primary_rate(&self) -> f64 {
        self.ns_per_s.unwrap_or(self.count_per_s)
    }
}

/// One compared row; a side is None when that recording does not have it at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    pub key: String,
    /// The lock kind (spinlock, mutex, ...) for lock rows.
    pub kind: Option<String>,
    pub before: Option<Amount>,
    pub after: Option<Amount>,
    /// Relative change of the per-second rate (wait ns when measured, else count), in percent;
    /// None when either side is missing or the before rate is zero.
    pub change_pct: Option<f64>,
}

impl Delta {
    fn new(
        key: String,
        kind: Option<String>,
        before: Option<Amount>,
        after: Option<Amount>,
    ) -> Delta {
        let change_pct = match (before, after) {
            (Some(b), Some(a)) if b.primary_rate() > 0.0 => {
                Some(100.0 * (a.primary_rate() - b.primary_rate()) / b.primary_rate())
            }
            _ => None,
        };
        Delta {
            key,
            kind,
            before,
            after,
            change_pct,
        }
    }

    /// Sort weight: the larger of the two rates.
    fn weight(&self) -> f64 {
        let r = |a: &Option<Amount>| a.map_or(0.0, |a| a.primary_rate());
        r(&self.before).max(r(&self.after))
    }

    /// `+12.5%`, `new`, `gone`, or `-` when there is nothing on either side.
    pub fn change_label(&self) -> String {
        let rate = |a: &Option<Amount>| a.map_or(0.0, |a| a.primary_rate());
        match (
            self.change_pct,
            rate(&self.before) > 0.0,
            rate(&self.after) > 0.0,
        ) {
            (Some(p), _, _) => format!("{p:+.1}%"),
            (None, false, false) => "-".into(),
            (None, false, true) => "new".into(),
            (None, true, _) => "gone".into(),
        }
    }
}

/// Two recordings side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub schema: &'static str,
    pub before: SideInfo,
    pub after: SideInfo,
    /// All contended wait, vmap-path wait, lost events.
    pub totals: Vec<Delta>,
    /// vmap contention by the vmap function that took the lock, summed over locks.
    pub vmap_functions: Vec<Delta>,
    /// Contended locks, by name (else address and kind).
    pub locks: Vec<Delta>,
    /// vmalloc operations.
    pub ops: Vec<Delta>,
}

fn side_info(name: &str, p: &Profile) -> SideInfo {
    SideInfo {
        name: name.to_string(),
        kernel_release: p.meta.kernel_release.clone(),
        design: design_key(p.meta.design),
        cpus: p.meta.cpus,
        duration_ns: p.meta.duration_ns,
        lost_events: p.losses.total(),
    }
}

/// Pair rows of two recordings by key, most significant first.
fn pair(
    before: BTreeMap<(String, Option<String>), (u64, Option<u64>)>,
    after: BTreeMap<(String, Option<String>), (u64, Option<u64>)>,
    secs: (f64, f64),
) -> Vec<Delta> {
    let mut keys: Vec<_> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    let mut rows: Vec<Delta> = keys
        .into_iter()
        .map(|k| {
            let b = before.get(&k).map(|&(c, ns)| Amount::new(c, ns, secs.0));
            let a = after.get(&k).map(|&(c, ns)| Amount::new(c, ns, secs.1));
            Delta::new(k.0, k.1, b, a)
        })
        .collect();
    rows.sort_by(|x, y| {
        y.weight()
            .total_cmp(&x.weight())
            .then_with(|| x.key.cmp(&y.key))
    });
    rows
}

type Keyed = BTreeMap<(String, Option<String>), (u64, Option<u64>)>;

fn lock_rows(p: &Profile) -> Keyed {
    let mut m = Keyed::new();
    for l in &p.locks {
        let key = l
            .name
            .clone()
            .unwrap_or_else(|| format!("{:#x}", l.lock_addr));
        let e = m
            .entry((key, Some(lock_kind(l.flags).to_string())))
            .or_insert((0, Some(0)));
        add_to(e, l.wait.count, l.wait.total_ns);
    }
    m
}

fn vmap_function_rows(p: &Profile) -> Keyed {
    let mut m = Keyed::new();
    for s in p
        .stacks
        .iter()
        .filter(|s| s.attribution.class == LockClass::Vmap)
    {
        let f = s
            .attribution
            .vmap_function
            .as_deref()
            .map(canonical_function)
            .unwrap_or("?")
            .to_string();
        let e = m.entry((f, None)).or_insert((0, Some(0)));
        add_to(e, s.count, s.total_ns);
    }
    m
}

/// Add a count and a wait to a row, saturating: in-memory profiles are not checked as
/// recordings are (`profile::sums`).
fn add_to(row: &mut (u64, Option<u64>), count: u64, total_ns: u64) {
    row.0 = row.0.saturating_add(count);
    row.1 = Some(row.1.unwrap_or(0).saturating_add(total_ns));
}

fn total_rows(p: &Profile) -> Vec<(&'static str, u64, Option<u64>)> {
    let total = p.total_wait();
    let vmap = p
        .stacks
        .iter()
        .filter(|s| s.attribution.class == LockClass::Vmap);
    let (vmap_count, vmap_ns) = vmap.fold((0u64, 0u64), |(c, ns), s| {
        (c.saturating_add(s.count), ns.saturating_add(s.total_ns))
    });
    vec![
        ("all contended lock wait", total.count, Some(total.total_ns)),
        ("wait through vmap functions", vmap_count, Some(vmap_ns)),
        ("lost events", p.losses.total(), None),
    ]
}

/// Compare two recordings.
pub fn compare(
    before_name: &str,
    before: &Profile,
    after_name: &str,
    after: &Profile,
) -> Comparison {
    let secs = (before.meta.duration_s(), after.meta.duration_s());
    let totals = total_rows(before)
        .into_iter()
        .zip(total_rows(after))
        .map(|((key, bc, bns), (_, ac, ans))| {
            Delta::new(
                key.to_string(),
                None,
                Some(Amount::new(bc, bns, secs.0)),
                Some(Amount::new(ac, ans, secs.1)),
            )
        })
        .collect();
    let ops = op_counts(before)
        .into_iter()
        .zip(op_counts(after))
        .map(|((op, b), (_, a))| {
            Delta::new(
                op.to_string(),
                None,
                Some(Amount::new(b, None, secs.0)),
                Some(Amount::new(a, None, secs.1)),
            )
        })
        .collect();
    Comparison {
        schema: SCHEMA,
        before: side_info(before_name, before),
        after: side_info(after_name, after),
        totals,
        vmap_functions: pair(vmap_function_rows(before), vmap_function_rows(after), secs),
        locks: pair(lock_rows(before), lock_rows(after), secs),
        ops,
    }
}

/// The comparison as tables for people. `top` caps the per-function and per-lock tables.
pub fn render_text(c: &Comparison, top: usize) -> String {
    let mut o = String::new();
    let side = |s: &SideInfo| {
        format!(
            "{}  {} · {} · {:.2} s · {} CPUs{}",
            field(&s.name),
            field(&s.kernel_release),
            s.design,
            s.duration_ns as f64 / 1e9,
            s.cpus,
            if s.lost_events > 0 {
                format!(" · {} events LOST", s.lost_events)
            } else {
                String::new()
            }
        )
    };
    let _ = writeln!(o, "vmap-trace compare");
    let _ = writeln!(o, "before: {}", side(&c.before));
    let _ = writeln!(o, "after:  {}", side(&c.after));
    let _ = writeln!(o, "rates are per second of recording; change = after rate vs before rate (wait time where measured)");

    let header = |o: &mut String, first: &str| {
        let _ = writeln!(
            o,
            "{:<34} {:<13} {:>10} {:>10} {:>12} {:>12} {:>9}",
            first, "kind", "waits/s", "waits/s", "wait/s", "wait/s", "change"
        );
        let _ = writeln!(
            o,
            "{:<34} {:<13} {:>10} {:>10} {:>12} {:>12} {:>9}",
            "", "", "before", "after", "before", "after", ""
        );
    };
    let wait_row = |o: &mut String, d: &Delta| {
        let count =
            |a: &Option<Amount>| a.map_or("-".to_string(), |a| format!("{:.1}", a.count_per_s));
        let ns = |a: &Option<Amount>| {
            a.and_then(|a| a.ns_per_s)
                .map_or("-".to_string(), format_ns)
        };
        let _ = writeln!(
            o,
            "{:<34} {:<13} {:>10} {:>10} {:>12} {:>12} {:>9}",
            field(&d.key),
            d.kind.as_deref().unwrap_or(""),
            count(&d.before),
            count(&d.after),
            ns(&d.before),
            ns(&d.after),
            d.change_label()
        );
    };

    let _ = writeln!(o, "\n== totals ==");
    header(&mut o, "");
    for d in &c.totals {
        wait_row(&mut o, d);
    }

    for (title, rows, first) in [
        (
            "vmap contention by vmap function (summed over its locks)",
            &c.vmap_functions,
            "vmap function",
        ),
        ("contended locks", &c.locks, "lock"),
    ] {
        let _ = writeln!(o, "\n== {title} ==");
        if rows.is_empty() {
            let _ = writeln!(o, "none in either recording");
            continue;
        }
        header(&mut o, first);
        for d in rows.iter().take(top) {
            wait_row(&mut o, d);
        }
        if rows.len() > top {
            let _ = writeln!(
                o,
                "... {} more (--top N shows more; --format csv lists all)",
                rows.len() - top
            );
        }
    }
    if c.locks.iter().any(|d| d.key.starts_with("0x")) {
        let _ = writeln!(
            o,
            "(locks without a name go by address, which only matches within one boot)"
        );
    }

    let _ = writeln!(o, "\n== vmalloc operations ==");
    let _ = writeln!(
        o,
        "{:<34} {:>12} {:>12} {:>9}",
        "op", "per s before", "per s after", "change"
    );
    for d in &c.ops {
        let rate =
            |a: &Option<Amount>| a.map_or("-".to_string(), |a| format!("{:.1}", a.count_per_s));
        let _ = writeln!(
            o,
            "{:<34} {:>12} {:>12} {:>9}",
            d.key,
            rate(&d.before),
            rate(&d.after),
            d.change_label()
        );
    }
    o
}

pub fn render_json(c: &Comparison) -> String {
    escape::json(serde_json::to_string_pretty(c).expect("comparison serializes"))
}

/// The comparison as one CSV table (`vmap-trace-csv/1`, table `compare`).
pub fn render_csv(c: &Comparison) -> String {
    let mut w = CsvWriter::new(
        "compare",
        &[
            "section",
            "key",
            "kind",
            "before_count",
            "after_count",
            "before_total_ns",
            "after_total_ns",
            "before_count_per_s",
            "after_count_per_s",
            "before_ns_per_s",
            "after_ns_per_s",
            "change_pct",
        ],
    );
    for (section, rows) in [
        ("total", &c.totals),
        ("vmap_function", &c.vmap_functions),
        ("lock", &c.locks),
        ("op", &c.ops),
    ] {
        for d in rows {
            let count = |a: &Option<Amount>| Cell::opt_int(a.map(|a| a.count));
            let total = |a: &Option<Amount>| Cell::opt_int(a.and_then(|a| a.total_ns));
            let count_rate = |a: &Option<Amount>| Cell::opt_float(a.map(|a| a.count_per_s));
            let ns_rate = |a: &Option<Amount>| Cell::opt_float(a.and_then(|a| a.ns_per_s));
            w.row(&[
                Cell::text(section),
                Cell::text(&d.key),
                Cell::opt_text(d.kind.as_deref()),
                count(&d.before),
                count(&d.after),
                total(&d.before),
                total(&d.after),
                count_rate(&d.before),
                count_rate(&d.after),
                ns_rate(&d.before),
                ns_rate(&d.after),
                Cell::opt_float(d.change_pct),
            ]);
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;
    use crate::profile::{LockWait, WaitHistogram};

    /// After: twice as long, vmap_area_lock waits 4x the rate, the mutex is gone, a new lock
    /// appears, allocations per second unchanged.
    fn before_after() -> (Profile, Profile) {
        let before = sample_profile();
        let mut after = sample_profile();
        after.meta.duration_ns *= 2;
        after.ops.allocs *= 2;
        after.locks[0].wait.count = 80;
        after.locks[0].wait.total_ns = 400_000;
        after.stacks[0].count = 80;
        after.stacks[0].total_ns = 400_000;
        after.locks.remove(1);
        after.stacks.remove(1);
        after.locks.push(LockWait {
            lock_addr: 0x4000,
            flags: 1,
            name: Some("vmap_node[0].busy.lock".into()),
            wait: WaitHistogram {
                count: 2,
                total_ns: 1_000,
                max_ns: 600,
                hist: Default::default(),
            },
        });
        (before, after)
    }

    #[test]
    fn deltas_are_rates_so_lengths_do_not_matter() {
        let (before, after) = before_after();
        let c = compare("a.rec", &before, "b.rec", &after);
        let lock = c.locks.iter().find(|d| d.key == "vmap_area_lock").unwrap();
        // 50 us in 2 s = 25 us/s before; 400 us in 4 s = 100 us/s after: +300%.
        assert_eq!(lock.before.unwrap().ns_per_s, Some(25_000.0));
        assert_eq!(lock.after.unwrap().ns_per_s, Some(100_000.0));
        assert_eq!(lock.change_pct, Some(300.0));
        assert_eq!(lock.kind.as_deref(), Some("spinlock"));

        let gone = c.locks.iter().find(|d| d.key == "0x2000").unwrap();
        assert!(gone.after.is_none());
        assert_eq!(gone.change_label(), "gone");
        let new = c
            .locks
            .iter()
            .find(|d| d.key == "vmap_node[0].busy.lock")
            .unwrap();
        assert!(new.before.is_none());
        assert_eq!(new.change_label(), "new");

        let allocs = c.ops.iter().find(|d| d.key == "allocs").unwrap();
        assert_eq!(
            allocs.change_pct,
            Some(0.0),
            "twice the allocs in twice the time"
        );
        let purges = c.ops.iter().find(|d| d.key == "purges").unwrap();
        assert_eq!(purges.change_pct, Some(-50.0));

        let vmap = &c.vmap_functions[0];
        assert_eq!(vmap.key, "alloc_vmap_area");
        assert_eq!(vmap.change_pct, Some(300.0));
        let all = &c.totals[0];
        // 450 us / 2 s = 225 us/s -> 401 us / 4 s = 100.25 us/s.
        assert_eq!(
            all.change_pct,
            Some(100.0 * (100_250.0 - 225_000.0) / 225_000.0)
        );
        // Heaviest first: the gone mutex (200 us/s) before vmap_area_lock (100 us/s).
        assert_eq!(c.locks[0].key, "0x2000");
    }

    #[test]
    fn text_csv_and_json_carry_the_same_deltas() {
        let (before, after) = before_after();
        let c = compare("a.rec", &before, "b.rec", &after);
        let text = render_text(&c, 10);
        let row = text
            .lines()
            .find(|l| l.starts_with("vmap_area_lock"))
            .expect(&text);
        assert!(
            row.contains("25.00 us") && row.contains("100.00 us") && row.ends_with("+300.0%"),
            "{row}"
        );
        assert!(
            text.contains("before: a.rec  6.1.0-test · legacy · 2.00 s · 4 CPUs"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("0x2000") && l.ends_with("gone")),
            "{text}"
        );
        assert!(text.contains("only matches within one boot"));
        let truncated = render_text(&c, 1);
        assert!(truncated.contains("... 2 more"), "{truncated}");

        let csv = render_csv(&c);
        let line = csv
            .lines()
            .find(|l| l.contains(",lock,vmap_area_lock,"))
            .expect(&csv);
        assert_eq!(line, "vmap-trace-csv/1,compare,lock,vmap_area_lock,spinlock,10,80,50000,400000,5.0,20.0,25000.0,100000.0,300.0");
        let gone = csv.lines().find(|l| l.contains(",lock,0x2000,")).unwrap();
        assert!(gone.ends_with(",4,,400000,,2.0,,200000.0,,"), "{gone}");

        let v: serde_json::Value = serde_json::from_str(&render_json(&c)).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["after"]["duration_ns"], 4_000_000_000u64);
        let lock = v["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"] == "vmap_area_lock")
            .unwrap();
        assert_eq!(lock["change_pct"], 300.0);
        assert!(v["locks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["after"].is_null()));
    }

    #[test]
    fn recorded_strings_and_file_names_are_shown_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        use crate::profile::tests::hostile_profile;
        let (before, after) = (sample_profile(), hostile_profile());
        let c = compare(&format!("{HOSTILE}.rec"), &before, "b.rec", &after);
        let text = render_text(&c, 10);
        assert_inert(&text, false);
        assert!(
            text.contains(&format!("before: {HOSTILE_SHOWN}.rec  6.1.0-test")),
            "{text}"
        );
        assert!(
            text.contains(&format!("after:  b.rec  6.1.0{HOSTILE_SHOWN} · legacy")),
            "{text}"
        );
        assert!(
            text.lines().any(
                |l| l.starts_with(&format!("mutex{HOSTILE_SHOWN} mutex")) && l.ends_with("new")
            ),
            "{text}"
        );
        let csv = render_csv(&c);
        assert_inert(&csv, false);
        assert!(
            csv.contains(&format!(",lock,mutex{HOSTILE_SHOWN},mutex,")),
            "{csv}"
        );
        // JSON stays exact: the escapes decode to the recorded strings.
        let json = render_json(&c);
        assert_inert(&json, false);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["before"]["name"], format!("{HOSTILE}.rec"));
        assert_eq!(v["after"]["kernel_release"], format!("6.1.0{HOSTILE}"));
    }

    #[test]
    fn identical_recordings_show_no_change() {
        let p = sample_profile();
        let c = compare("a", &p, "b", &p);
        for d in c.totals.iter().chain(&c.locks).chain(&c.vmap_functions) {
            if d.before.unwrap().primary_rate() > 0.0 {
                assert_eq!(d.change_pct, Some(0.0), "{d:?}");
            }
        }
        assert_eq!(c.totals[2].change_label(), "-", "no losses on either side");
    }
}
