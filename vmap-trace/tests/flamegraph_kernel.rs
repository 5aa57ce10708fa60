//! Root integration tests of flamegraphs and exports on real recordings: record a real stress
//! run, render it, and check the SVG as XML, the folded text against inferno and the JSON
//! report, the picture in headless Chromium, and the diff/compare of two recordings. Without
//! root they print why they did not run.
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use serde_json::Value;

mod common;
use common::{ensure_tracefs, is_root, run, BIN};

/// Lock primitives a contended kernel stack goes through (names without compiler suffixes).
const LOCK_PRIMITIVES: &[&str] = &[
    "queued_spin_lock_slowpath",
    "native_queued_spin_lock_slowpath",
    "__pv_queued_spin_lock_slowpath",
    "_raw_spin_lock",
    "_raw_spin_lock_irqsave",
    "_raw_spin_lock_irq",
    "_raw_spin_lock_bh",
    "__mutex_lock",
    "rwsem_down_write_slowpath",
    "rwsem_down_read_slowpath",
    "queued_read_lock_slowpath",
    "queued_write_lock_slowpath",
];

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root to record (eBPF)");
            return;
        }
    };
}

/// A directory that lives as long as the test process: recordings are shared between tests.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// Record `stress WORKLOAD` for 2 s, once per workload per test run (recording is
/// system-wide, so tests share recordings instead of overlapping them).
fn recording(workload: &'static str) -> PathBuf {
    static RECORDINGS: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut recs = RECORDINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = recs.iter().find(|(w, _)| *w == workload) {
        return p.clone();
    }
    ensure_tracefs();
    let rec = scratch_dir().join(format!("{workload}.rec"));
    run(Command::new(BIN).args(["record", "-o"]).arg(&rec).args([
        "--",
        BIN,
        "stress",
        workload,
        "--duration",
        "2",
        "--quiet",
    ]));
    recs.push((workload, rec.clone()));
    rec
}

fn report_json(rec: &Path) -> Value {
    let out = run(Command::new(BIN)
        .args(["report", "--format", "json"])
        .arg(rec));
    serde_json::from_slice(&out.stdout).expect("report --format json is JSON")
}

fn kernel_release() -> String {
    String::from_utf8(run(Command::new("uname").arg("-r")).stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// What an SVG holds, read with a real XML parser (a malformed document fails here).
#[derive(Default, Debug)]
struct SvgContents {
    root: String,
    /// Text of `<text id=...>` elements (title, subtitle, ...), by id.
    texts: Vec<(String, String)>,
    /// Frame tooltips: `<title>` texts.
    tooltips: Vec<String>,
    /// `total_samples` of the frames container.
    total_samples: Option<u64>,
}

fn parse_svg(path: &Path) -> SvgContents {
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = Reader::from_str(&xml);
    let mut out = SvgContents::default();
    // Open elements: name, id, and the text collected so far (quick-xml reports entity
    // references such as `&lt;` as separate events between text pieces).
    let mut open: Vec<(String, Option<String>, String)> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                let name = e.name().as_ref().to_string();
                let mut id = None;
                for a in e.attributes() {
                    let a = a.expect("well-formed attribute");
                    let value = a
                        .normalized_value(XmlVersion::Implicit1_0)
                        .unwrap()
                        .into_owned();
                    match a.key.as_ref() {
                        "id" => id = Some(value),
                        "total_samples" => out.total_samples = Some(value.parse().unwrap()),
                        _ => {}
                    }
                }
                if out.root.is_empty() {
                    out.root = name.clone();
                }
                open.push((name, id, String::new()));
            }
            Ok(Event::Text(t)) => {
                if let Some((_, _, text)) = open.last_mut() {
                    text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let resolved = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => match &*r {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => panic!("unknown entity &{other}; in {}", path.display()),
                    },
                };
                if let Some((_, _, text)) = open.last_mut() {
                    text.push_str(&resolved);
                }
            }
            Ok(Event::End(_)) => {
                let (name, id, text) = open.pop().expect("balanced elements");
                match (name.as_str(), id) {
                    ("title", _) => out.tooltips.push(text),
                    ("text", Some(id)) => out.texts.push((id, text)),
                    _ => {}
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!(
                "{} is not well-formed XML at {}: {e}",
                path.display(),
                reader.buffer_position()
            ),
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    out
}

impl SvgContents {
    fn text(&self, id: &str) -> &str {
        self.texts
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, t)| t.as_str())
            .unwrap_or_else(|| panic!("no text #{id}: {self:?}"))
    }

    /// Frame names: tooltips are `name (N unit, P%)`.
    fn frames(&self) -> HashSet<String> {
        self.tooltips
            .iter()
            .filter_map(|t| t.rsplit_once(" (").map(|(name, _)| name.to_string()))
            .collect()
    }
}

fn canonical(name: &str) -> &str {
    name.split('.').next().unwrap()
}

#[test]
fn svg_of_a_real_recording_is_xml_with_kernel_frames_and_titles() {
    require_root!();
    let rec = recording("mix");
    let svg = scratch_dir().join("mix.svg");
    run(Command::new(BIN)
        .arg("flamegraph")
        .arg(&rec)
        .arg("-o")
        .arg(&svg));
    let doc = parse_svg(&svg);
    assert_eq!(doc.root, "svg");
    assert_eq!(
        doc.text("title"),
        "vmap-trace: lock wait time by contended kernel stack"
    );
    let subtitle = doc.text("subtitle");
    assert!(
        subtitle.starts_with(&format!("{} · ", kernel_release())),
        "{subtitle}"
    );
    assert!(
        subtitle.contains("weight: lock wait time (us)"),
        "{subtitle}"
    );

    let frames = doc.frames();
    let primitives: Vec<&String> = frames
        .iter()
        .filter(|f| LOCK_PRIMITIVES.contains(&canonical(f)))
        .collect();
    assert!(
        !primitives.is_empty(),
        "no lock primitive among the frames: {frames:?}"
    );
    assert!(
        frames.iter().any(|f| f.starts_with("[spinlock ")
            || f.starts_with("[mutex")
            || f.starts_with("[rwsem")),
        "no lock frame: {frames:?}"
    );
    assert!(
        doc.tooltips
            .iter()
            .any(|t| t.starts_with("all (") && t.contains(" us, 100%)")),
        "tooltips in us: {:?}",
        &doc.tooltips[..3]
    );

    // The SVG's total is the recording's stack wait, in nanoseconds.
    let report = report_json(&rec);
    let stacks = report["profile"]["stacks"].as_array().unwrap();
    let stack_wait: u64 = stacks.iter().map(|s| s["total_ns"].as_u64().unwrap()).sum();
    assert_eq!(doc.total_samples, Some(stack_wait));

    // The vmap function with the most wait is in the vmap-only graph.
    if let Some(site) = report["vmap_call_sites"].as_array().unwrap().first() {
        let vmap_svg = scratch_dir().join("mix-vmap.svg");
        run(Command::new(BIN)
            .arg("flamegraph")
            .arg(&rec)
            .arg("-o")
            .arg(&vmap_svg)
            .args(["--class", "vmap", "--weight", "count"]));
        let vmap = parse_svg(&vmap_svg);
        let f = site["vmap_function"].as_str().unwrap();
        assert!(
            vmap.frames()
                .iter()
                .any(|n| canonical(n).trim_end_matches("_noprof") == f),
            "{f} missing: {:?}",
            vmap.frames()
        );
        assert!(vmap.text("subtitle").contains("class=vmap"));
        assert!(vmap
            .tooltips
            .iter()
            .any(|t| t.starts_with("all (") && t.contains(" waits, 100%)")));
    } else {
        eprintln!("note: this run caught no vmap contention; vmap-only graph not checked");
    }
}

#[test]
fn folded_output_round_trips_through_inferno() {
    require_root!();
    let rec = recording("mix");
    let report = report_json(&rec);
    let stacks = report["profile"]["stacks"].as_array().unwrap();
    for (weight, field) in [("wait", "total_ns"), ("count", "count")] {
        let folded_path = scratch_dir().join(format!("mix-{weight}.folded"));
        run(Command::new(BIN)
            .arg("flamegraph")
            .arg(&rec)
            .args(["--folded", "--weight", weight, "-o"])
            .arg(&folded_path));
        let folded = std::fs::read_to_string(&folded_path).unwrap();
        let mut total = 0u64;
        for line in folded.lines() {
            let (stack, n) = line.rsplit_once(' ').expect("`stack COUNT`");
            assert!(!stack.is_empty() && !stack.contains('\n'));
            total += n.parse::<u64>().expect("integer weight");
        }
        let expected: u64 = stacks.iter().map(|s| s[field].as_u64().unwrap()).sum();
        assert_eq!(total, expected, "folded {weight} total vs the recording");

        // inferno reads it back with its defaults and draws the same total.
        let mut svg = Vec::new();
        let mut opts = inferno::flamegraph::Options::default();
        inferno::flamegraph::from_reader(&mut opts, folded.as_bytes(), &mut svg)
            .expect("inferno renders our folded text");
        let svg_path = scratch_dir().join(format!("mix-{weight}-inferno.svg"));
        std::fs::write(&svg_path, &svg).unwrap();
        assert_eq!(parse_svg(&svg_path).total_samples, Some(expected));

        // And so does our own reader.
        let ours = vmap_trace::flamegraph::Folded::parse(&folded).unwrap();
        assert_eq!(ours.total(), expected);
        assert_eq!(
            ours.to_text(),
            folded,
            "folded text is already merged and sorted"
        );
    }
}

/// Decoded RGBA pixels of an 8-bit, non-interlaced PNG (what Chromium writes).
fn decode_png(path: &Path) -> (u32, u32, Vec<[u8; 4]>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let (mut pos, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut channels) = (0, 0, 0);
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!((data[8], data[12]), (8, 0), "8-bit, non-interlaced");
                channels = match data[9] {
                    6 => 4,
                    2 => 3,
                    t => panic!("unexpected PNG colour type {t}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = width as usize * channels;
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity((width * height) as usize);
    for row in raw.chunks(stride + 1).take(height as usize) {
        let (filter, line) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels {
                cur[i - channels] as i16
            } else {
                0
            };
            let b = prev[i] as i16;
            let c = if i >= channels {
                prev[i - channels] as i16
            } else {
                0
            };
            let predictor = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("bad PNG filter {f}"),
            };
            cur[i] = line[i].wrapping_add(predictor as u8);
        }
        for px in cur.chunks(channels) {
            pixels.push([px[0], px[1], px[2], if channels == 4 { px[3] } else { 255 }]);
        }
        prev = cur;
    }
    assert_eq!(pixels.len(), (width * height) as usize);
    (width, height, pixels)
}

fn chromium_screenshot(svg: &Path, png: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", svg.canonicalize().unwrap().display());
    let status = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .args(["--window-size=1200,800", &url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run chromium (install it: `cargo xtask setup` or `apt-get install chromium`): {e}"));
    assert!(
        status.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        png.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// Pixels in inferno's "hot" palette (red 205..255, blue 0..55): flame frames, which neither
/// the background gradient (blue >= 176), the text (black) nor a blank page has.
fn flame_pixels(pixels: &[[u8; 4]]) -> usize {
    pixels
        .iter()
        .filter(|p| p[0] >= 200 && p[2] <= 60 && p[3] > 0)
        .count()
}

#[test]
fn svg_renders_non_blank_in_headless_chromium() {
    require_root!();
    let rec = recording("mix");
    let svg = scratch_dir().join("chromium.svg");
    run(Command::new(BIN)
        .arg("flamegraph")
        .arg(&rec)
        .arg("-o")
        .arg(&svg));
    let png = scratch_dir().join("chromium.png");
    chromium_screenshot(&svg, &png);

    // The same-size blank SVG: proves the detector sees nothing where nothing is drawn.
    let blank_svg = scratch_dir().join("blank.svg");
    std::fs::write(
        &blank_svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="800"></svg>"#,
    )
    .unwrap();
    let blank_png = scratch_dir().join("blank.png");
    chromium_screenshot(&blank_svg, &blank_png);

    let (w, h, pixels) = decode_png(&png);
    let (_, _, blank) = decode_png(&blank_png);
    assert_eq!(
        flame_pixels(&blank),
        0,
        "a blank page has no flame-coloured pixels"
    );
    assert_eq!(
        blank.iter().collect::<HashSet<_>>().len(),
        1,
        "a blank page is one colour"
    );

    let flames = flame_pixels(&pixels);
    let colours = pixels.iter().collect::<HashSet<_>>().len();
    eprintln!("screenshot {w}x{h}: {flames} flame-coloured pixels, {colours} colours");
    assert!(
        flames * 50 > (w * h) as usize,
        "only {flames} of {} pixels are flame frames: {}",
        w * h,
        png.display()
    );
    assert!(
        colours > 20,
        "only {colours} distinct colours: {}",
        png.display()
    );
}

#[test]
fn diff_and_compare_of_two_real_recordings() {
    require_root!();
    let (a, b) = (recording("mix"), recording("pty"));
    let svg = scratch_dir().join("diff.svg");
    run(Command::new(BIN)
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .arg("-o")
        .arg(&svg));
    let doc = parse_svg(&svg);
    assert_eq!(
        doc.text("title"),
        "vmap-trace diff: lock wait time, mix.rec → pty.rec (red: more after, blue: less)"
    );
    assert!(doc.text("subtitle").contains("normalized"));
    // Differential tooltips carry a signed change.
    assert!(
        doc.tooltips
            .iter()
            .any(|t| t.contains("%; +") || t.contains("%; -")),
        "{:?}",
        &doc.tooltips[..5]
    );

    let out = run(Command::new(BIN)
        .arg("diff")
        .arg(&a)
        .arg(&b)
        .args(["-o", "-", "--folded"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut first, mut second) = (0u64, 0u64);
    for line in text.lines() {
        let mut f = line.rsplitn(3, ' ');
        second += f.next().unwrap().parse::<u64>().unwrap();
        first += f.next().unwrap().parse::<u64>().unwrap();
        assert!(!line.contains("0xffff"), "addresses are stripped: {line}");
    }
    let after_wait: u64 = report_json(&b)["profile"]["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["total_ns"].as_u64().unwrap())
        .sum();
    assert_eq!(second, after_wait);
    // Normalized: before is scaled to after's total (less at most one unit per line, from
    // truncation).
    assert!(
        first <= second && second - first <= text.lines().count() as u64,
        "{first} vs {second}"
    );

    let out = run(Command::new(BIN)
        .arg("report")
        .arg("--compare")
        .arg(&a)
        .arg(&b));
    let table = String::from_utf8(out.stdout).unwrap();
    for section in [
        "== totals ==",
        "== contended locks ==",
        "== vmalloc operations ==",
    ] {
        assert!(table.contains(section), "{table}");
    }
    let allocs = table
        .lines()
        .find(|l| l.starts_with("allocs "))
        .expect(&table);
    assert!(
        allocs.trim_end().ends_with('%'),
        "both recordings allocate: {allocs}"
    );
    let out = run(Command::new(BIN)
        .arg("report")
        .arg("--compare")
        .arg(&a)
        .arg(&b)
        .args(["--format", "csv"]));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("schema,table,section,key,kind,"));
    assert!(csv
        .lines()
        .skip(1)
        .all(|l| l.starts_with("vmap-trace-csv/1,compare,")));
}
