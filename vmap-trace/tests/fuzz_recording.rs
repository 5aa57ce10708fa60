//! Fuzz campaign on recordings, bounded in time so that CI runs it with `cargo test`:
//!
//! - byte level: bit flips, insertions, deletions, truncations, splices of the committed
//!   recordings (tests/fixtures), whole files or bodies sealed again, into `recording::decode`;
//! - structure aware: a body's JSON with numbers at extremes, strings full of control
//!   characters, fields dropped or duplicated, arrays lengthened, histograms overfilled, sealed
//!   again (length and checksum) so that it reaches the decoder and, when it decodes, every
//!   view: report text, JSON and CSV, flamegraph (folded and SVG), diff, report --compare and
//!   model --from, through the library calls the commands make.
//!
//! Every case must end without a panic within `VMAP_TRACE_FUZZ_CASE_SECONDS` (default 2 s in
//! release builds). The campaign is seeded and deterministic; it stops after
//! `VMAP_TRACE_FUZZ_CASES` cases or `VMAP_TRACE_FUZZ_SECONDS` seconds (defaults: 100000 and
//! 30 s in release, 10 s in debug builds; at least 50 cases). `VMAP_TRACE_FUZZ_SEED` picks the seed and
//! `VMAP_TRACE_FUZZ_CASE=N` replays one case. A failing case's input is written to a file
//! named in the failure.
#[path = "fuzz/mutate.rs"]
mod mutate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use vmap_trace::flamegraph::{
    self, ClassFilter, DiffOptions, FoldOptions, Folded, Graph, Side, StackFilter, Weight,
};
use vmap_trace::model::{compare_measured, recording::measured_from_profile, ModelParams};
use vmap_trace::model::{Design, RunConfig};
use vmap_trace::profile::recording::{self, MAGIC};
use vmap_trace::profile::Profile;
use vmap_trace::report::csv::CsvTable;
use vmap_trace::report::{compare, csv, json, text, ReportOptions};

const DEFAULT_SEED: u64 = 0x1715_eed5;
/// Cases run whatever the time budget, so that a slow or busy machine still tests something.
const MIN_CASES: u64 = 50;

struct Config {
    seed: u64,
    cases: u64,
    budget: Duration,
    case_bound: Duration,
    only: Option<u64>,
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| -> Option<f64> {
            std::env::var(name).ok().map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
        };
        let release = !cfg!(debug_assertions);
        Config {
            seed: std::env::var("VMAP_TRACE_FUZZ_SEED")
                .ok()
                .map(|v| parse_seed(&v))
                .unwrap_or(DEFAULT_SEED),
            cases: var("VMAP_TRACE_FUZZ_CASES").map_or(100_000, |v| v as u64),
            budget: Duration::from_secs_f64(var("VMAP_TRACE_FUZZ_SECONDS").unwrap_or(if release {
                30.0
            } else {
                10.0
            })),
            // Unoptimized code is an order of magnitude slower at the same work.
            case_bound: Duration::from_secs_f64(
                var("VMAP_TRACE_FUZZ_CASE_SECONDS").unwrap_or(if release { 2.0 } else { 20.0 }),
            ),
            only: var("VMAP_TRACE_FUZZ_CASE").map(|v| v as u64),
        }
    }
}

fn parse_seed(v: &str) -> u64 {
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("VMAP_TRACE_FUZZ_SEED={v} is not a number"))
}

/// The committed recordings the mutations start from.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rec"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 2, "fixtures missing in {}", dir.display());
    out
}

/// Split a recording into its body (after the header line), if it has one.
fn body_of(rec: &[u8]) -> &[u8] {
    let rest = &rec[MAGIC.len()..];
    let nl = rest.iter().position(|&b| b == b'\n').unwrap();
    &rest[nl + 1..]
}

/// One generated input: its bytes and how it was made.
struct Case {
    index: u64,
    kind: &'static str,
    base: String,
    recipe: Vec<String>,
    bytes: Vec<u8>,
}

fn generate(seed: u64, index: u64, fixtures: &[(String, Vec<u8>)]) -> Case {
    // Each case has its own generator, so that one case replays without the others.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (base, rec) = &fixtures[rng.random_range(0..fixtures.len())];
    let other = &fixtures[rng.random_range(0..fixtures.len())].1;
    let (kind, recipe, bytes) = match rng.random_range(0..10) {
        0..=1 => {
            let mut bytes = rec.clone();
            let recipe = mutate::bytes(&mut rng, &mut bytes, other);
            ("bytes", recipe, bytes)
        }
        2..=3 => {
            let mut body = body_of(rec).to_vec();
            let recipe = mutate::bytes(&mut rng, &mut body, body_of(other));
            ("body bytes, sealed", recipe, recording::seal(&body))
        }
        _ => {
            let mut body: Value = serde_json::from_slice(body_of(rec)).unwrap();
            let recipe = mutate::json(&mut rng, &mut body);
            (
                "json, sealed",
                recipe,
                recording::seal(&mutate::to_text(&body)),
            )
        }
    };
    Case {
        index,
        kind,
        base: base.clone(),
        recipe,
        bytes,
    }
}

/// What one case reached.
#[derive(Default, Clone, Copy)]
struct Reached {
    decoded: bool,
    graphs: u32,
    model: bool,
}

/// Decode, then run every view on what decodes. Panics (caught by the caller) on a broken
/// invariant of the output as well as on a crash.
fn run_case(bytes: &[u8], baseline: &Profile) -> Reached {
    let Ok(p) = recording::decode(bytes, "fuzz.rec") else {
        return Reached::default();
    };
    reports(&p);
    let graphs = flamegraphs(&p) + diffs(&p, baseline);
    comparisons(&p, baseline);
    Reached {
        decoded: true,
        graphs,
        model: model(&p),
    }
}

fn reports(p: &Profile) {
    for top in [0, 10, usize::MAX] {
        for verbose in [false, true] {
            text::render(p, &ReportOptions { top, verbose });
        }
    }
    for rows in [None, Some(1)] {
        let v: Value = serde_json::from_str(&json::render(p, rows)).expect("report JSON parses");
        check_max_at_least_mean(&v["vmap_call_sites"]);
        check_max_at_least_mean(&v["profile"]["stacks"]);
    }
    for table in CsvTable::value_variants() {
        check_rectangular(&csv::render(p, *table));
    }
}

/// No row of a report shows a max below its mean.
fn check_max_at_least_mean(rows: &Value) {
    for row in rows.as_array().expect("an array of rows") {
        let get = |k: &str| row[k].as_u64().expect("integer field") as u128;
        let (count, total, max) = (get("count"), get("total_ns"), get("max_ns"));
        assert!(
            count == 0 || max * count >= total,
            "max below the mean in {row}"
        );
    }
}

fn check_rectangular(table: &str) {
    let mut reader = ::csv::ReaderBuilder::new().from_reader(table.as_bytes());
    let width = reader.headers().expect("CSV header").len();
    for record in reader.records() {
        let record = record.expect("CSV row parses");
        assert_eq!(record.len(), width, "CSV row {record:?}");
    }
}

/// Flamegraphs with the options `flamegraph` offers; refusals are fine, output must be whole.
fn flamegraphs(p: &Profile) -> u32 {
    let option_sets = [
        FoldOptions::default(),
        FoldOptions {
            weight: Weight::Count,
            canonical_names: true,
            ..Default::default()
        },
        FoldOptions {
            user_stacks: true,
            filter: StackFilter {
                task: Some("sshd".into()),
                ..Default::default()
            },
            ..Default::default()
        },
        FoldOptions {
            weight: Weight::Hold,
            filter: StackFilter {
                class: Some(ClassFilter::Vmap),
                ..Default::default()
            },
            ..Default::default()
        },
    ];
    let mut drawn = 0;
    for opts in option_sets {
        if let Ok(g) = flamegraph::flamegraph(p, &opts) {
            let folded = written(|w| g.write_as(true, w));
            let parsed = Folded::parse(&folded).expect("folded output parses back");
            assert_eq!(parsed.total(), g.folded.total(), "folded totals");
            written(|w| g.write_as(false, w));
            drawn += 1;
        }
    }
    drawn
}

fn diffs(p: &Profile, baseline: &Profile) -> u32 {
    let mut drawn = 0;
    for negate in [false, true] {
        let opts = DiffOptions {
            negate,
            ..Default::default()
        };
        let (a, b) = (side("a.rec", p), side("b.rec", baseline));
        for (before, after) in [(a, b), (b, a)] {
            if let Ok(g) = flamegraph::diff(before, after, &opts) {
                written(|w| g.write_as(true, w));
                written(|w| g.write_as(false, w));
                drawn += 1;
            }
        }
    }
    drawn
}

fn side<'a>(name: &'a str, profile: &'a Profile) -> Side<'a> {
    Side { name, profile }
}

fn written(write: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<()>) -> String {
    let mut out = Vec::new();
    write(&mut out).expect("writing to memory");
    String::from_utf8(out).expect("UTF-8 output")
}

fn comparisons(p: &Profile, baseline: &Profile) {
    for (before, after) in [(p, baseline), (baseline, p)] {
        let c = compare::compare("a.rec", before, "b.rec", after);
        compare::render_text(&c, 10);
        let _: Value = serde_json::from_str(&compare::render_json(&c)).expect("compare JSON");
        check_rectangular(&compare::render_csv(&c));
    }
}

/// `model --from` as the command runs it, over a short simulated time and a small sweep.
fn model(p: &Profile) -> bool {
    let Ok(measured) = measured_from_profile(p) else {
        return false;
    };
    // Recordings of any rate now end (a rate too light to model is an error, and no CPU's
    // next allocation can push the engine past its clock). One slow case is left: with far
    // fewer frees than allocations nothing is purged, so the warm-up simulates its whole
    // second at the recorded rate, seconds of work at a million allocations/s per CPU. It ends,
    // but past this campaign's per-case bound; such profiles stay out of this step.
    let no_purge_to_wait_for = measured.frees_per_s < measured.allocs_per_s / 2.0;
    if no_purge_to_wait_for {
        return false;
    }
    let cfg = RunConfig {
        design: Design::Legacy,
        duration_ms: 1.0,
        warmup_ms: 0.0,
        ..RunConfig::default()
    };
    let _ = compare_measured(&measured, &ModelParams::default(), &[2], &cfg)
        .map(|report| report.render());
    true
}

/// How one case ended.
enum Outcome {
    Done(Reached, Duration),
    Panicked(String),
}

/// Run `case` on a worker thread: a panic is caught, and a case still running past `bound`
/// is reported (its thread is left behind; the test fails).
fn run_bounded(case: Vec<u8>, baseline: &Profile, bound: Duration) -> Option<Outcome> {
    let (tx, rx) = mpsc::channel();
    let baseline = baseline.clone();
    std::thread::spawn(move || {
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| run_case(&case, &baseline)));
        let outcome = match result {
            Ok(reached) => Outcome::Done(reached, started.elapsed()),
            Err(payload) => Outcome::Panicked(panic_message(payload)),
        };
        let _ = tx.send(outcome);
    });
    rx.recv_timeout(bound).ok()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

#[derive(Default)]
struct Tally {
    cases: u64,
    decoded: u64,
    graphs: u64,
    model_runs: u64,
    slowest: (Duration, u64),
    failures: Vec<String>,
}

fn save_failure(seed: u64, case: &Case, why: &str) -> String {
    let dir = std::env::temp_dir().join(format!("vmap-trace-fuzz-{seed:#x}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("case-{}.rec", case.index));
    std::fs::write(&path, &case.bytes).unwrap();
    format!(
        "case {} ({}, from {}: {}): {why}; input in {}; replay with VMAP_TRACE_FUZZ_SEED={seed:#x} VMAP_TRACE_FUZZ_CASE={}",
        case.index,
        case.kind,
        case.base,
        case.recipe.join("; "),
        path.display(),
        case.index
    )
}

#[test]
fn recordings_survive_mutation() {
    let cfg = Config::from_env();
    let fixtures = fixtures();
    let profiles: Vec<Profile> = fixtures
        .iter()
        .map(|(name, bytes)| recording::decode(bytes, name).expect("a fixture decodes"))
        .collect();
    // The unmutated fixtures reach every view, the model included: the campaign starts from
    // inputs that exercise them.
    for p in &profiles {
        let reached = run_case(&recording::encode(p), &profiles[0]);
        assert!(reached.decoded && reached.graphs > 0 && reached.model);
    }
    eprintln!(
        "fuzz: seed {:#x}, up to {} cases or {:?}, {:?} per case, {} fixtures",
        cfg.seed,
        cfg.cases,
        cfg.budget,
        cfg.case_bound,
        fixtures.len()
    );
    let started = Instant::now();
    let indices: Box<dyn Iterator<Item = u64>> = match cfg.only {
        Some(i) => Box::new(std::iter::once(i)),
        None => Box::new(0..cfg.cases),
    };
    let mut t = Tally::default();
    for index in indices {
        if started.elapsed() > cfg.budget && t.cases >= MIN_CASES {
            break;
        }
        let case = generate(cfg.seed, index, &fixtures);
        t.cases += 1;
        match run_bounded(case.bytes.clone(), &profiles[0], cfg.case_bound) {
            Some(Outcome::Done(reached, took)) => {
                t.decoded += reached.decoded as u64;
                t.graphs += reached.graphs as u64;
                t.model_runs += reached.model as u64;
                t.slowest = t.slowest.max((took, index));
            }
            Some(Outcome::Panicked(msg)) => {
                t.failures
                    .push(save_failure(cfg.seed, &case, &format!("panicked: {msg}")))
            }
            None => {
                let why = format!("still running after {:?}", cfg.case_bound);
                t.failures.push(save_failure(cfg.seed, &case, &why));
                // Its thread still holds a CPU: stop here rather than slow every later case.
                break;
            }
        }
    }
    eprintln!(
        "fuzz: {} cases in {:.1} s: {} decoded, {} graphs drawn, {} model runs; slowest case {} took {:?}",
        t.cases,
        started.elapsed().as_secs_f64(),
        t.decoded,
        t.graphs,
        t.model_runs,
        t.slowest.1,
        t.slowest.0
    );
    assert!(
        t.failures.is_empty(),
        "{} of {} cases failed (seed {:#x}):\n{}",
        t.failures.len(),
        t.cases,
        cfg.seed,
        t.failures.join("\n")
    );
    if cfg.only.is_none() && cfg.cases >= MIN_CASES {
        // A campaign that decoded nothing would pass while testing nothing.
        assert!(
            t.decoded * 10 >= t.cases && t.graphs > 0 && t.model_runs > 0,
            "the campaign reached too little: {} cases, {} decoded, {} model runs",
            t.cases,
            t.decoded,
            t.model_runs
        );
    }
}
