//! CSV export: one table per invocation, each row self-describing.
//!
//! Every row starts with `schema` (`vmap-trace-csv/1`) and `table` columns, so rows stay
//! identifiable after tools that drop comment lines, or after tables are concatenated. The
//! columns of each table are documented in docs/report-schema.md; within a schema version
//! columns are only ever appended, never renamed, removed or reordered.
//!
//! Text cells show control characters and bidi overrides escaped (`crate::escape`), so a row
//! stays on one line and a terminal showing the file interprets nothing. Quoting follows
//! RFC 4180. Free-text cells (task names, which any local user can set) that start with `=`,
//! `+`, `-`, `@`, tab or CR get a leading `'`, so a spreadsheet shows them instead of
//! evaluating them as formulas.
use std::borrow::Cow;

use crate::escape::field;
use crate::profile::{lock_kind, LockClass, Profile, WaitHistogram};

use super::per_second;

/// Version of the CSV schema (see docs/report-schema.md).
pub const SCHEMA: &str = "vmap-trace-csv/1";

/// The tables `report --format csv --table ...` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsvTable {
    /// Recording metadata and totals, as key/value rows.
    Summary,
    /// Contended locks (lock:contention_*), most wait first.
    Locks,
    /// vmap contention by the vmap function that took the lock.
    VmapSites,
    /// Every contended kernel stack with its lock and attribution.
    Stacks,
    /// vmalloc operation counts and rates.
    Ops,
    /// Lock wait per CPU.
    Cpus,
    /// Lock wait per task.
    Tasks,
    /// vmap function latency (kprobe/fentry recordings).
    Functions,
    /// vmap function latency per CPU (the CPU each call returned on).
    FunctionCpus,
    /// vmap lock wait and hold around the lock calls (`record --lock-timing`).
    LockTiming,
}

impl CsvTable {
    pub fn label(self) -> &'static str {
        match self {
            CsvTable::Summary => "summary",
            CsvTable::Locks => "locks",
            CsvTable::VmapSites => "vmap_sites",
            CsvTable::Stacks => "stacks",
            CsvTable::Ops => "ops",
            CsvTable::Cpus => "cpus",
            CsvTable::Tasks => "tasks",
            CsvTable::Functions => "functions",
            CsvTable::FunctionCpus => "function_cpus",
            CsvTable::LockTiming => "lock_timing",
        }
    }
}

/// One CSV cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text from the kernel or vmap-trace itself (symbols, kinds): quoted when needed.
    Text(String),
    /// Text anyone can set (task names): also guarded against spreadsheet formulas.
    UserText(String),
    Int(u64),
    /// Written with one decimal.
    Float(f64),
    Bool(bool),
    /// Absent (e.g. a lock without a name): an empty cell.
    Empty,
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    pub fn opt_text(s: Option<&str>) -> Cell {
        s.map_or(Cell::Empty, |s| Cell::Text(s.to_string()))
    }

    pub fn opt_int(v: Option<u64>) -> Cell {
        v.map_or(Cell::Empty, Cell::Int)
    }

    pub fn opt_float(v: Option<f64>) -> Cell {
        v.map_or(Cell::Empty, Cell::Float)
    }

    fn render(&self) -> Cow<'_, str> {
        match self {
            Cell::Text(s) => Cow::Owned(escape(&field(s)).into_owned()),
            Cell::UserText(s) => Cow::Owned(escape(&defuse_formula(&field(s))).into_owned()),
            Cell::Int(v) => Cow::Owned(v.to_string()),
            Cell::Float(v) if v.is_finite() => Cow::Owned(format!("{v:.1}")),
            Cell::Float(_) => Cow::Borrowed(""),
            Cell::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Cell::Empty => Cow::Borrowed(""),
        }
    }
}

/// RFC 4180: a field with a comma, a double quote, CR or LF is quoted, quotes doubled.
pub fn escape(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

fn defuse_formula(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A CSV table under construction: the header, then rows, each prefixed with schema and table.
pub struct CsvWriter {
    out: String,
    table: &'static str,
    columns: usize,
}

impl CsvWriter {
    pub fn new(table: &'static str, columns: &[&str]) -> Self {
        let mut out = String::from("schema,table");
        for c in columns {
            out.push(',');
            out.push_str(c);
        }
        out.push('\n');
        CsvWriter {
            out,
            table,
            columns: columns.len(),
        }
    }

    pub fn row(&mut self, cells: &[Cell]) {
        debug_assert_eq!(
            cells.len(),
            self.columns,
            "row width of table {}",
            self.table
        );
        self.out.push_str(SCHEMA);
        self.out.push(',');
        self.out.push_str(self.table);
        for c in cells {
            self.out.push(',');
            self.out.push_str(&c.render());
        }
        self.out.push('\n');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// One table of a recording as CSV.
pub fn render(p: &Profile, table: CsvTable) -> String {
    let name = table.label();
    match table {
        CsvTable::Summary => summary(p, name),
        CsvTable::Locks => locks(p, name),
        CsvTable::VmapSites => vmap_sites(p, name),
        CsvTable::Stacks => stacks(p, name),
        CsvTable::Ops => ops(p, name),
        CsvTable::Cpus => cpus(p, name),
        CsvTable::Tasks => tasks(p, name),
        CsvTable::Functions => functions(p, name),
        CsvTable::FunctionCpus => function_cpus(p, name),
        CsvTable::LockTiming => lock_timing(p, name),
    }
}

fn summary(p: &Profile, name: &'static str) -> String {
    let m = &p.meta;
    let total = p.total_wait();
    let mut w = CsvWriter::new(name, &["key", "value"]);
    let rows: Vec<(&str, Cell)> = vec![
        ("tool_version", Cell::text(&m.tool_version)),
        ("kernel_release", Cell::text(&m.kernel_release)),
        ("hostname", Cell::UserText(m.hostname.clone())),
        ("design", Cell::text(design_key(m.design))),
        ("cpus", Cell::Int(m.cpus as u64)),
        ("started_unix_s", Cell::Int(m.started_unix_s)),
        ("duration_ns", Cell::Int(m.duration_ns)),
        ("contentions", Cell::Int(total.count)),
        ("total_wait_ns", Cell::Int(total.total_ns)),
        ("vmap_wait_ns", Cell::Int(p.vmap_wait_ns())),
        ("lost_events", Cell::Int(p.losses.total())),
        ("tasks_evicted", Cell::Int(p.losses.tasks_evicted)),
        ("lock_keys_evicted", Cell::Int(p.losses.lock_keys_evicted)),
        ("stack_keys_evicted", Cell::Int(p.losses.stack_keys_evicted)),
        ("stacks_symbolized", Cell::Bool(m.stacks_symbolized)),
        ("lock_names_available", Cell::Bool(m.lock_names_available)),
    ];
    for (k, v) in rows {
        w.row(&[Cell::text(k), v]);
    }
    w.finish()
}

/// The design as a stable key (the JSON's spelling), not the prose label.
pub(crate) fn design_key(d: crate::profile::AllocatorDesign) -> &'static str {
    match d {
        crate::profile::AllocatorDesign::Legacy => "legacy",
        crate::profile::AllocatorDesign::NodeSharded => "node_sharded",
        crate::profile::AllocatorDesign::Unknown => "unknown",
    }
}

fn hex(addr: u64) -> Cell {
    Cell::Text(format!("{addr:#x}"))
}

fn locks(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "lock_name",
            "lock_addr",
            "lock_kind",
            "flags",
            "count",
            "total_ns",
            "mean_ns",
            "p99_le_ns",
            "max_ns",
            "vmap_wait_ns",
            "other_wait_ns",
            "max_estimated",
        ],
    );
    let mut locks: Vec<_> = p.locks.iter().collect();
    locks.sort_by_key(|l| std::cmp::Reverse(l.wait.total_ns));
    for l in locks {
        let vmap_ns = p.lock_vmap_wait_ns(l);
        w.row(&[
            Cell::opt_text(l.name.as_deref()),
            hex(l.lock_addr),
            Cell::text(lock_kind(l.flags)),
            Cell::Int(l.flags as u64),
            Cell::Int(l.wait.count),
            Cell::Int(l.wait.total_ns),
            Cell::opt_float(l.wait.mean_ns()),
            Cell::opt_int(l.wait.p99_ns()),
            Cell::Int(l.wait.shown_max().ns),
            Cell::Int(vmap_ns),
            Cell::Int(l.wait.total_ns.saturating_sub(vmap_ns)),
            Cell::Bool(l.wait.shown_max().estimated),
        ]);
    }
    w.finish()
}

fn vmap_sites(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "vmap_function",
            "direct",
            "call_site",
            "lock_name",
            "lock_addr",
            "lock_kind",
            "count",
            "total_ns",
            "mean_ns",
            "max_ns",
            "max_estimated",
        ],
    );
    for s in p.vmap_call_sites() {
        w.row(&[
            Cell::text(&s.vmap_function),
            Cell::Bool(s.direct),
            Cell::opt_text(s.call_site.as_deref()),
            Cell::opt_text(s.lock_name.as_deref()),
            hex(s.lock_addr),
            Cell::text(lock_kind(s.flags)),
            Cell::Int(s.count),
            Cell::Int(s.total_ns),
            Cell::Float(s.total_ns as f64 / s.count.max(1) as f64),
            Cell::Int(s.max_ns),
            Cell::Bool(s.estimated),
        ]);
    }
    w.finish()
}

fn stacks(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "lock_name",
            "lock_addr",
            "lock_kind",
            "class",
            "vmap_function",
            "call_site",
            "count",
            "total_ns",
            "max_ns",
            "stack",
            "max_estimated",
        ],
    );
    let mut stacks: Vec<_> = p.stacks.iter().collect();
    stacks.sort_by_key(|s| std::cmp::Reverse(s.total_ns));
    for s in stacks {
        let frames: Vec<String> = s.frames.iter().rev().map(|f| f.label()).collect();
        let max = s.shown_max(&p.stack_sampling);
        w.row(&[
            Cell::opt_text(p.lock_name(s.lock_addr)),
            hex(s.lock_addr),
            Cell::text(lock_kind(s.flags)),
            Cell::text(match s.attribution.class {
                LockClass::Vmap => "vmap",
                LockClass::Other => "other",
            }),
            Cell::opt_text(s.attribution.vmap_function.as_deref()),
            Cell::opt_text(s.attribution.call_site.as_deref()),
            Cell::Int(s.count),
            Cell::Int(s.total_ns),
            Cell::Int(max.ns),
            Cell::Text(frames.join(";")),
            Cell::Bool(max.estimated),
        ]);
    }
    w.finish()
}

/// The vmalloc operation counters, in report order.
pub(crate) fn op_counts(p: &Profile) -> [(&'static str, u64); 6] {
    let o = &p.ops;
    [
        ("allocs", o.allocs),
        ("allocs_failed", o.allocs_failed),
        ("frees", o.frees),
        ("purges", o.purges),
        ("purged_areas", o.purged_areas),
        ("alloc_pages", o.alloc_pages),
    ]
}

fn ops(p: &Profile, name: &'static str) -> String {
    let secs = p.meta.duration_s();
    let mut w = CsvWriter::new(name, &["op", "count", "per_second"]);
    for (op, n) in op_counts(p) {
        w.row(&[
            Cell::text(op),
            Cell::Int(n),
            Cell::Float(per_second(n, secs)),
        ]);
    }
    w.finish()
}

fn cpus(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "cpu",
            "count",
            "total_ns",
            "max_ns",
            "allocs",
            "max_estimated",
        ],
    );
    for c in &p.cpus {
        let allocs = p
            .ops
            .allocs_per_cpu
            .get(c.cpu as usize)
            .copied()
            .unwrap_or(0);
        let max = c.shown_max();
        w.row(&[
            Cell::Int(c.cpu as u64),
            Cell::Int(c.count),
            Cell::Int(c.total_ns),
            Cell::Int(max.ns),
            Cell::Int(allocs),
            Cell::Bool(max.estimated),
        ]);
    }
    w.finish()
}

fn tasks(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "tid",
            "tgid",
            "comm",
            "count",
            "total_ns",
            "max_ns",
            "max_estimated",
        ],
    );
    for t in &p.tasks {
        let max = t.shown_max();
        w.row(&[
            Cell::Int(t.tid as u64),
            Cell::Int(t.tgid as u64),
            Cell::UserText(t.comm.clone()),
            Cell::Int(t.count),
            Cell::Int(t.total_ns),
            Cell::Int(max.ns),
            Cell::Bool(max.estimated),
        ]);
    }
    w.finish()
}

fn functions(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "function",
            "symbol",
            "calls",
            "total_ns",
            "mean_ns",
            "p99_le_ns",
            "max_ns",
            "max_estimated",
        ],
    );
    for f in &p.functions {
        let mut row = vec![Cell::text(&f.function), Cell::opt_text(f.symbol.as_deref())];
        row.extend(latency_cells(&f.latency));
        w.row(&row);
    }
    w.finish()
}

fn function_cpus(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "function",
            "cpu",
            "calls",
            "total_ns",
            "mean_ns",
            "p99_le_ns",
            "max_ns",
            "max_estimated",
        ],
    );
    for f in &p.functions {
        for c in &f.per_cpu {
            let mut row = vec![Cell::text(&f.function), Cell::Int(c.cpu as u64)];
            row.extend(latency_cells(&c.latency));
            w.row(&row);
        }
    }
    w.finish()
}

/// `calls,total_ns,mean_ns,p99_le_ns,max_ns,max_estimated` of one latency histogram.
fn latency_cells(l: &WaitHistogram) -> [Cell; 6] {
    let max = l.shown_max();
    [
        Cell::Int(l.count),
        Cell::Int(l.total_ns),
        Cell::opt_float(l.mean_ns()),
        Cell::opt_int(l.p99_ns()),
        Cell::Int(max.ns),
        Cell::Bool(max.estimated),
    ]
}

fn lock_timing(p: &Profile, name: &'static str) -> String {
    let mut w = CsvWriter::new(
        name,
        &[
            "lock_name",
            "lock_addr",
            "acquired",
            "wait_total_ns",
            "wait_mean_ns",
            "wait_p99_le_ns",
            "wait_max_ns",
            "hold_total_ns",
            "hold_mean_ns",
            "hold_p99_le_ns",
            "hold_max_ns",
            "wait_max_estimated",
            "hold_max_estimated",
        ],
    );
    for t in &p.lock_timing {
        w.row(&[
            Cell::text(&t.name),
            hex(t.lock_addr),
            Cell::Int(t.wait.count),
            Cell::Int(t.wait.total_ns),
            Cell::opt_float(t.wait.mean_ns()),
            Cell::opt_int(t.wait.p99_ns()),
            Cell::Int(t.wait.shown_max().ns),
            Cell::Int(t.hold.total_ns),
            Cell::opt_float(t.hold.mean_ns()),
            Cell::opt_int(t.hold.p99_ns()),
            Cell::Int(t.hold.shown_max().ns),
            Cell::Bool(t.wait.shown_max().estimated),
            Cell::Bool(t.hold.shown_max().estimated),
        ]);
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::{hostile_profile, sample_profile};
    use crate::profile::TaskWaitSummary;

    /// A minimal RFC 4180 reader, to check what we write parses back to the same fields.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = vec![];
        let mut row = vec![];
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') if field.is_empty() => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        rows
    }

    #[test]
    fn escaping_follows_rfc_4180() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a,b"), "\"a,b\"");
        assert_eq!(escape("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(escape("two\nlines"), "\"two\nlines\"");
        assert_eq!(
            Cell::UserText("=HYPERLINK(\"x\")".into()).render(),
            "\"'=HYPERLINK(\"\"x\"\")\""
        );
        assert_eq!(Cell::UserText("-rf".into()).render(), "'-rf");
        assert_eq!(Cell::UserText("sshd".into()).render(), "sshd");
        assert_eq!(Cell::Float(1.25).render(), "1.2");
        assert_eq!(Cell::Float(f64::NAN).render(), "");
    }

    #[test]
    fn awkward_task_names_round_trip_through_a_csv_reader() {
        let mut p = sample_profile();
        // The line break is shown escaped, so the row stays on one line.
        p.tasks[0].comm = "a,\"b\"\nc".into();
        let rows = parse_csv(&render(&p, CsvTable::Tasks));
        assert_eq!(
            rows[0],
            [
                "schema",
                "table",
                "tid",
                "tgid",
                "comm",
                "count",
                "total_ns",
                "max_ns",
                "max_estimated"
            ]
        );
        assert_eq!(
            rows[1],
            [
                "vmap-trace-csv/1",
                "tasks",
                "42",
                "42",
                "a,\"b\"\\x0ac",
                "14",
                "450000",
                "200000",
                "false"
            ]
        );
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn recorded_strings_are_shown_escaped_and_still_defused() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        let mut p = hostile_profile();
        p.tasks.push(TaskWaitSummary {
            comm: format!("=cmd|{HOSTILE}"),
            ..p.tasks[0].clone()
        });
        for table in ALL_TABLES {
            let text = render(&p, table);
            assert_inert(&text, false);
            let rows = parse_csv(&text);
            assert!(rows.iter().all(|r| r.len() == rows[0].len()), "{text}");
        }
        let tasks = parse_csv(&render(&p, CsvTable::Tasks));
        assert_eq!(tasks[1][4], HOSTILE_SHOWN);
        assert_eq!(
            tasks[2][4],
            format!("'=cmd|{HOSTILE_SHOWN}"),
            "still a formula"
        );
        let stacks = render(&p, CsvTable::Stacks);
        assert!(
            stacks.contains(&format!(",entry{HOSTILE_SHOWN};__vmalloc")),
            "{stacks}"
        );
        let summary = render(&p, CsvTable::Summary);
        assert!(summary.contains(&format!(",hostname,host{HOSTILE_SHOWN}\n")));
    }

    const ALL_TABLES: [CsvTable; 10] = [
        CsvTable::Summary,
        CsvTable::Locks,
        CsvTable::VmapSites,
        CsvTable::Stacks,
        CsvTable::Ops,
        CsvTable::Cpus,
        CsvTable::Tasks,
        CsvTable::Functions,
        CsvTable::FunctionCpus,
        CsvTable::LockTiming,
    ];

    #[test]
    fn every_table_has_a_versioned_header_and_rectangular_rows() {
        for table in ALL_TABLES {
            let text = render(&sample_profile(), table);
            let rows = parse_csv(&text);
            assert_eq!(&rows[0][..2], ["schema", "table"], "{text}");
            for r in &rows[1..] {
                assert_eq!(r.len(), rows[0].len(), "{table:?}: {r:?}");
                assert_eq!(r[0], SCHEMA);
                assert_eq!(r[1], table.label());
            }
        }
    }

    #[test]
    fn locks_and_stacks_carry_the_figures() {
        let p = sample_profile();
        let rows = parse_csv(&render(&p, CsvTable::Locks));
        // Most wait first: the mutex (400 us) then vmap_area_lock (50 us, all of it vmap).
        assert_eq!(
            rows[1][2..],
            [
                "", "0x2000", "mutex", "32", "4", "400000", "100000.0", "131072", "200000", "0",
                "400000", "false"
            ]
        );
        assert_eq!(rows[2][2..6], ["vmap_area_lock", "0x1000", "spinlock", "1"]);
        assert_eq!(rows[2][11..], ["50000", "0", "false"]);

        let rows = parse_csv(&render(&p, CsvTable::Stacks));
        assert_eq!(
            rows[2][2..],
            [
                "vmap_area_lock",
                "0x1000",
                "spinlock",
                "vmap",
                "alloc_vmap_area",
                "alloc_vmap_area",
                "10",
                "50000",
                "5000",
                "__vmalloc_node_range_noprof;alloc_vmap_area;_raw_spin_lock",
                "false"
            ]
        );
        let rows = parse_csv(&render(&p, CsvTable::Ops));
        assert_eq!(rows[1][2..], ["allocs", "2000", "1000.0"]);
        let rows = parse_csv(&render(&p, CsvTable::Summary));
        let get = |k: &str| {
            rows.iter()
                .find(|r| r[2] == k)
                .map(|r| r[3].clone())
                .unwrap()
        };
        assert_eq!(get("design"), "legacy");
        assert_eq!(get("vmap_wait_ns"), "50000");
        assert_eq!(get("total_wait_ns"), "450000");
        let rows = parse_csv(&render(&p, CsvTable::FunctionCpus));
        assert_eq!(rows.len(), 3, "one row per CPU with calls");
        assert_eq!(
            rows[1][2..7],
            ["alloc_vmap_area", "0", "1500", "3000000", "2000.0"]
        );
        assert_eq!(rows[2][2..5], ["alloc_vmap_area", "1", "500"]);
    }

    #[test]
    fn a_max_below_the_mean_is_raised_and_marked() {
        // `stress mix`: alloc_vmap_area at avg 3.74 us, max 851 ns (sampled-over waits).
        let mut p = sample_profile();
        p.stack_sampling.captured = 100;
        p.stack_sampling.skipped = 900;
        (p.stacks[0].count, p.stacks[0].total_ns, p.stacks[0].max_ns) = (10, 37_400, 851);
        p.locks[1].wait.max_ns = 50_000; // below its mean of 100 us: a lost race
        let cells = |table, key: &str| -> Vec<String> {
            let rows = parse_csv(&render(&p, table));
            let header = rows[0].clone();
            let row = rows
                .into_iter()
                .find(|r| r.contains(&key.to_string()))
                .unwrap();
            let get = |c: &str| row[header.iter().position(|h| h == c).unwrap()].clone();
            vec![get("max_ns"), get("max_estimated")]
        };
        assert_eq!(
            cells(CsvTable::VmapSites, "alloc_vmap_area"),
            ["3740", "true"]
        );
        assert_eq!(cells(CsvTable::Stacks, "vmap_area_lock"), ["3740", "true"]);
        // Its captured waits reach 50 us, longer than any passed over: measured.
        assert_eq!(cells(CsvTable::Stacks, "0x2000"), ["100000", "false"]);
        assert_eq!(cells(CsvTable::Locks, "0x2000"), ["100000", "true"]);
        assert_eq!(cells(CsvTable::Locks, "vmap_area_lock"), ["9000", "false"]);
    }
}
