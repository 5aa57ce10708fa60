//! The reference model against the published measurements (../shared/model-validation).
//!
//! Heavy (about 3 s of CPU in a release build, minutes in a debug build), so it runs in release
//! builds only: `cargo test --release -p vmap-trace --test model_validation -- --nocapture`
//! prints the validation table that docs/model.md shows.

use std::path::Path;

use vmap_trace::model::validate::{validate, Published, ValidationOptions, PUBLISHED_PATH};
use vmap_trace::model::ModelParams;

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "heavy: run with cargo test --release -p vmap-trace --test model_validation"
)]
fn model_reproduces_published_measurements() {
    let path = Path::new(PUBLISHED_PATH);
    let published = Published::load(path).unwrap_or_else(|e| {
        panic!("{e:#}\n(the published measurements are expected at {PUBLISHED_PATH}, beside the project checkout)")
    });
    let report = validate(
        &published,
        &ModelParams::default(),
        &ValidationOptions::default(),
    )
    .expect("validation runs");
    let table = report.render(&published);
    println!("{table}");
    for check in &report.pair_checks {
        if check.calibrated {
            assert!(
                check.error.abs() < 0.005,
                "calibration missed its target: {check:?}"
            );
        } else {
            assert!(
                check.error.abs() <= 0.30,
                "{} {:?}: {:+.1}% off\n{table}",
                check.what,
                check.design,
                100.0 * check.error
            );
        }
    }
    assert_eq!(
        report.pair_checks.iter().filter(|c| !c.calibrated).count(),
        12,
        "jobs 2..32, both designs"
    );
    assert!(
        (8.0..=18.0).contains(&report.speedup_predicted),
        "test_vmalloc 64-thread speedup {:.1}x outside 8x..18x\n{table}",
        report.speedup_predicted
    );
}
