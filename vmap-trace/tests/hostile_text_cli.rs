//! Recorded strings reach the terminal escaped, never raw: a task that names itself
//! "\e]0;X\a\e[2J" must not retitle and clear the terminal of whoever reads the report. The
//! commands end to end on a recording whose every text field is hostile (no root needed).
mod common;

use std::process::{Command, Output};

use common::recording::{save, HOSTILE, HOSTILE_SHOWN};
use common::BIN;

fn vmap_trace(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// No byte below 0x20 but line breaks, no DEL, no C1 control (U+0080..U+009F), no bidi
/// override (U+202A..U+202E, U+2066..U+2069).
fn assert_inert(what: &str, bytes: &[u8]) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let raw = text.chars().find(|&c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    });
    assert_eq!(raw, None, "{what} writes a raw {raw:?}:\n{text}");
}

fn stdout_of(args: &[&str]) -> String {
    let out = vmap_trace(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_inert(&format!("{args:?} (stderr)"), &out.stderr);
    assert_inert(&format!("{args:?}"), &out.stdout);
    String::from_utf8(out.stdout).unwrap()
}

fn stderr_of_failure(args: &[&str]) -> String {
    let out = vmap_trace(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    assert_inert(&format!("{args:?} (stderr)"), &out.stderr);
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn reports_show_recorded_strings_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "h.rec", HOSTILE);
    let clean = save(dir.path(), "c.rec", "");
    let (rec, clean) = (rec.to_str().unwrap(), clean.to_str().unwrap());

    let text = stdout_of(&["report", rec]);
    assert!(
        text.contains(&format!("sshd{HOSTILE_SHOWN}"))
            && text.contains(&format!("note: note{HOSTILE_SHOWN}\n")),
        "{text}"
    );
    for table in ["summary", "locks", "stacks", "tasks"] {
        let csv = stdout_of(&["report", rec, "--format", "csv", "--table", table]);
        assert!(csv.contains(HOSTILE_SHOWN), "{table}: {csv}");
    }
    let json = stdout_of(&["report", rec, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["profile"]["tasks"][0]["comm"],
        format!("sshd{HOSTILE}"),
        "JSON is exact"
    );

    let compare = stdout_of(&["report", "--compare", clean, rec]);
    assert!(
        compare.contains(&format!("6.1.0{HOSTILE_SHOWN}")),
        "{compare}"
    );
    stdout_of(&["report", "--compare", clean, rec, "--format", "csv"]);
    stdout_of(&["report", "--compare", clean, rec, "--format", "json"]);

    let model = stdout_of(&[
        "model",
        "--from",
        rec,
        "--cpus",
        "2",
        "--duration-ms",
        "2",
        "--warmup-ms",
        "0",
    ]);
    assert!(
        model.contains(&format!("kernel 6.1.0{HOSTILE_SHOWN} on 2 CPUs")),
        "{model}"
    );
}

#[test]
fn flamegraphs_show_recorded_strings_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "h.rec", HOSTILE);
    let rec = rec.to_str().unwrap();
    let folded = stdout_of(&["flamegraph", rec, "-o", "-", "--folded"]);
    assert_eq!(folded.lines().count(), 2, "{folded}");
    let by_task = stdout_of(&[
        "flamegraph",
        rec,
        "-o",
        "-",
        "--folded",
        "--task",
        &format!("sshd{HOSTILE}"),
    ]);
    assert_eq!(
        by_task, folded,
        "per-task recordings filter on the raw name too"
    );
    // The SVG's own validity is checked in the library's tests; here, that it stays inert.
    let svg = stdout_of(&["flamegraph", rec, "-o", "-"]);
    assert!(
        svg.contains(&format!("entry{}", HOSTILE_SHOWN.replace(';', ":"))),
        "{svg}"
    );
    stdout_of(&["diff", rec, rec, "-o", "-", "--folded"]);
}

#[test]
fn errors_show_recorded_strings_and_file_names_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let rec = save(dir.path(), "h.rec", HOSTILE);
    let rec = rec.to_str().unwrap();
    // The lock list of an unknown --lock quotes every lock name of the recording.
    let err = stderr_of_failure(&["flamegraph", rec, "-o", "-", "--lock", "nosuch"]);
    assert!(err.contains(&format!("tty_mutex{HOSTILE_SHOWN}")), "{err}");
    // A file name found by a glob can hold anything. Errors keep their own line breaks, so a
    // line break in a name breaks the line there; every other control is shown escaped.
    let missing = dir.path().join(format!("{HOSTILE}.rec"));
    let err = stderr_of_failure(&["report", missing.to_str().unwrap()]);
    assert!(err.starts_with("vmap-trace: error: "), "{err}");
    let shown = HOSTILE_SHOWN.replace(r"\x0a", "\n");
    assert!(err.contains(&format!("{shown}.rec")), "{err}");
}
