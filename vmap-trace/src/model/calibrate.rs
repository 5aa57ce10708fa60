//! Calibration: derive the one free parameter, `cost_scale`, from one measured point.
//!
//! The measured point is a single-thread latency of an allocate-then-free pair of `pages`
//! pages on the measured kernel (what test_vmalloc's fix_size test reports with one thread).
//! The simulated latency is `scale * cpu_part + fixed_part` (DRAM and cache-line costs do not
//! scale), so a secant search on the scale converges in a few runs; with the seed fixed the
//! simulated latency is a smooth function of the scale.

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

use crate::model::params::{ModelParams, COST_SCALE_RANGE};
use crate::model::run::{simulate, RunConfig};
use crate::model::workload::{Drive, SizeClass, ThreadGroup, Workload};
use crate::model::{Design, KernelVariant};

/// A measured single-thread latency to calibrate on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationTarget {
    /// The design of the measured kernel.
    pub design: Design,
    pub variant: KernelVariant,
    /// Pages per allocation.
    pub pages: u32,
    /// Mean latency of one allocate + free pair with one thread, ns.
    pub pair_latency_ns: f64,
}

/// Simulated time of each calibration run (single thread, after the first purge).
const CALIBRATION_MS: f64 = 40.0;
/// Relative agreement at which the search stops.
const TOLERANCE: f64 = 0.002;

/// The single-thread pair workload used for calibration.
pub fn single_pair(pages: u32) -> Workload {
    Workload {
        name: format!("calibration: one thread, vmalloc({pages} pages) + vfree"),
        drive: Drive::Closed {
            threads: Some(1),
            groups: vec![ThreadGroup {
                name: "pair".into(),
                sizes: vec![SizeClass {
                    pages,
                    align_pages: 1,
                    weight: 1.0,
                }],
                ..ThreadGroup::default()
            }],
        },
    }
}

/// Simulated single-thread pair latency at `scale`, ns.
fn pair_latency(
    params: &ModelParams,
    target: &CalibrationTarget,
    scale: f64,
    seed: u64,
) -> anyhow::Result<f64> {
    let cfg = RunConfig {
        design: target.design,
        variant: target.variant,
        seed,
        warmup_ms: 2.0,
        duration_ms: CALIBRATION_MS,
    };
    let run = simulate(
        &params.with_cost_scale(scale),
        &single_pair(target.pages),
        &cfg,
    )?;
    Ok(run.iteration_mean_ns())
}

/// The `cost_scale` at which the model reproduces `target` (other parameters as given).
pub fn calibrate_pair(
    params: &ModelParams,
    target: &CalibrationTarget,
    seed: u64,
) -> anyhow::Result<f64> {
    ensure!(
        target.pair_latency_ns.is_finite() && target.pair_latency_ns > 0.0,
        "the calibration latency must be a positive number of ns, got {}",
        target.pair_latency_ns
    );
    ensure!(
        target.pages >= 1,
        "calibration needs at least one page per allocation"
    );
    let goal = target.pair_latency_ns;
    let mut s0 = 1.0;
    let mut f0 = pair_latency(params, target, s0, seed)? - goal;
    let mut s1 = goal / (f0 + goal);
    for _ in 0..12 {
        check_scale(s1, goal)?;
        let f1 = pair_latency(params, target, s1, seed)? - goal;
        if f1.abs() / goal < TOLERANCE {
            return Ok(s1);
        }
        let slope = (f1 - f0) / (s1 - s0);
        if !slope.is_finite() || slope <= 0.0 {
            break;
        }
        let next = s1 - f1 / slope;
        if next <= 0.0 {
            bail!(
                "a pair latency of {goal:.0} ns is below what the model's fixed hardware costs \
                 (cache misses, line transfers) allow at this configuration"
            );
        }
        check_scale(next, goal)?;
        (s0, f0, s1) = (s1, f1, next);
    }
    bail!("calibration did not converge on a pair latency of {goal:.0} ns")
}

/// A scale outside [`COST_SCALE_RANGE`] means the target is not a vmalloc latency this model
/// can represent; say so before simulating at it (a near-zero scale never ends).
fn check_scale(scale: f64, goal_ns: f64) -> anyhow::Result<()> {
    if !(scale.is_finite() && COST_SCALE_RANGE.contains(&scale)) {
        bail!(
            "a pair latency of {goal_ns:.3e} ns would need a cost scale of {scale:.3e}, outside \
             the {}..{} the model represents (published figures are 0.5 to 50 us)",
            COST_SCALE_RANGE.start(),
            COST_SCALE_RANGE.end()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_reproduces_the_target() {
        let params = ModelParams::default();
        let target = CalibrationTarget {
            design: Design::Legacy,
            variant: KernelVariant::V6_10,
            pages: 1,
            pair_latency_ns: 900.0,
        };
        let scale = calibrate_pair(&params, &target, 3).unwrap();
        assert!(
            scale > 1.0,
            "a slower machine needs a larger scale, got {scale}"
        );
        let got = pair_latency(&params, &target, scale, 3).unwrap();
        assert!((got - 900.0).abs() / 900.0 < TOLERANCE, "got {got}");
        let bad = CalibrationTarget {
            pair_latency_ns: -1.0,
            ..target
        };
        assert!(calibrate_pair(&params, &bad, 3).is_err());
    }

    #[test]
    fn absurd_targets_fail_at_once() {
        // 1e-300 us used to drive the scale to ~1e-300, where simulated time stands still.
        let params = ModelParams::default();
        for ns in [1e-297, 1e-3, 1e15] {
            let target = CalibrationTarget {
                design: Design::Legacy,
                variant: KernelVariant::V6_10,
                pages: 1,
                pair_latency_ns: ns,
            };
            let started = std::time::Instant::now();
            let err = calibrate_pair(&params, &target, 3).unwrap_err().to_string();
            assert!(err.contains("cost scale"), "{ns}: {err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{ns}"
            );
        }
    }
}
