//! Turning a vmap-trace recording (a `Profile`, or a window of one) into the model's input:
//! `vmap-trace model --from REC` and the verdict line of `top` both go through here.
use std::collections::BTreeMap;

use crate::model::{Design, MeasuredWorkload};
use crate::profile::sums::saturating_sum;
use crate::profile::{AllocatorDesign, Log2Histogram, Profile, WaitHistogram};

/// What a recording (or a window of one) measured, as the model takes it, or why it cannot.
pub fn measured_from_profile(window: &Profile) -> Result<MeasuredWorkload, String> {
    let m = &window.meta;
    let design = match m.design {
        AllocatorDesign::Legacy => Design::Legacy,
        AllocatorDesign::NodeSharded => Design::NodeSharded,
        AllocatorDesign::Unknown => return Err("allocator design unknown (no kernel BTF)".into()),
    };
    let secs = m.duration_s();
    if secs <= 0.0 {
        return Err("the recording has no duration".into());
    }
    let ops = &window.ops;
    if ops.allocs == 0 {
        return Err("no vmalloc activity since the last reset".into());
    }
    let per_s = |n: u64| n as f64 / secs;
    // Lower bound of each log2 bucket, in pages (bucket 0 is a single page).
    let sizes: Vec<(u64, u64)> = ops
        .size_pages
        .buckets
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| (Log2Histogram::bucket_low(i).max(1), n))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![(1, ops.allocs)]
    } else {
        sizes
    };
    let cpus = m.cpus.max(1);
    let per_cpu = &ops.allocs_per_cpu;
    let per_cpu_total = saturating_sum(per_cpu.iter().copied());
    // Both come from the same per-CPU counters: a breakdown that does not add up to the total
    // is damage, and its shares could leave a CPU with a rate next to nothing.
    if per_cpu_total > 0 && per_cpu_total != ops.allocs {
        return Err(format!(
            "its allocations per CPU add up to {per_cpu_total}, not to its {} allocations (corrupt)",
            ops.allocs
        ));
    }
    let per_cpu_alloc_share = if per_cpu.len() <= cpus as usize && per_cpu_total > 0 {
        let total = per_cpu_total as f64;
        per_cpu.iter().map(|&n| n as f64 / total).collect()
    } else {
        Vec::new()
    };
    let lookups = window
        .functions
        .iter()
        .find(|f| f.function == "find_vmap_area")
        .map(|f| f.latency.count)
        .filter(|&n| n > 0);
    // Lock timing names per-node locks `vmap_node[3].busy.lock`; the model has one class per
    // kind over all nodes (`vmap_node.busy.lock`).
    let mut holds: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut waits: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for t in &window.lock_timing {
        let name = model_lock_name(&t.name);
        add_to(holds.entry(name.clone()).or_default(), &t.hold);
        add_to(waits.entry(name).or_default(), &t.wait);
    }
    Ok(MeasuredWorkload {
        design,
        kernel_release: m.kernel_release.clone(),
        cpus,
        duration_s: secs,
        allocs_per_s: per_s(ops.allocs),
        frees_per_s: per_s(ops.frees),
        lookups_per_s: lookups.map(per_s),
        size_pages_histogram: sizes,
        per_cpu_alloc_share,
        mean_lifetime_us: None,
        uncontended: None,
        lock_holds: holds
            .into_iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(
                |(lock, (n, total))| crate::model::measured::MeasuredLockHold {
                    lock,
                    mean_ns: total as f64 / n as f64,
                },
            )
            .collect(),
        lock_waits: waits
            .into_iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(
                |(lock, (count, total))| crate::model::measured::MeasuredLockWait {
                    lock,
                    count,
                    total_ns: total as f64,
                },
            )
            .collect(),
    })
}

/// Add one lock's (count, total) to a per-class sum, saturating (in-memory windows are not
/// checked as recordings are: `profile::sums`).
fn add_to(sum: &mut (u64, u64), w: &WaitHistogram) {
    sum.0 = sum.0.saturating_add(w.count);
    sum.1 = sum.1.saturating_add(w.total_ns);
}

/// `vmap_node[3].busy.lock` -> `vmap_node.busy.lock`; global locks keep their names.
pub fn model_lock_name(kernel_name: &str) -> String {
    match (kernel_name.find('['), kernel_name.find(']')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &kernel_name[..open], &kernel_name[close + 1..])
        }
        _ => kernel_name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    #[test]
    fn a_recording_becomes_the_models_input() {
        let p = sample_profile();
        let m = measured_from_profile(&p).unwrap();
        assert_eq!(m.design, Design::Legacy);
        assert_eq!(m.cpus, 4);
        assert_eq!(m.allocs_per_s, 1000.0, "2000 allocs over 2 s");
        assert_eq!(m.frees_per_s, 995.0);
        let mut unknown = p.clone();
        unknown.meta.design = AllocatorDesign::Unknown;
        assert!(measured_from_profile(&unknown)
            .unwrap_err()
            .contains("design unknown"));
        let mut idle = p;
        idle.ops.allocs = 0;
        assert!(measured_from_profile(&idle)
            .unwrap_err()
            .contains("no vmalloc activity"));
    }

    /// A kernel before 6.2 has no vmalloc tracepoints: its operations come from the function
    /// probes, and `model --from` runs on them as on tracepoint counts.
    #[test]
    fn a_function_probe_recording_gives_a_model_run() {
        use crate::model::measured::compare_measured;
        use crate::model::params::ModelParams;
        use crate::model::run::RunConfig;
        use crate::profile::tests::function_probe_profile;
        let p = function_probe_profile();
        let m = measured_from_profile(&p).unwrap();
        assert_eq!(m.allocs_per_s, 1000.0, "2000 allocs over 2 s");
        assert_eq!(m.frees_per_s, 995.0);
        assert_eq!(
            m.size_pages_histogram.iter().map(|(_, n)| n).sum::<u64>(),
            1998
        );
        let cfg = RunConfig {
            warmup_ms: 1.0,
            duration_ms: 5.0,
            ..RunConfig::default()
        };
        let report = compare_measured(&m, &ModelParams::default(), &[1, 4], &cfg).unwrap();
        assert!(report.recorded.legacy.simulated_ms >= cfg.duration_ms);
    }

    /// `model --from` on recordings of every extreme rate and duration ends within a bound,
    /// with a result or a clear error. Before the fix, 50 allocations in an hour spun forever
    /// (events were clamped at the simulated-time horizon, and the run's end lay past it).
    #[test]
    fn extreme_recordings_end_in_bounded_time() {
        use crate::model::measured::compare_measured;
        use crate::model::params::ModelParams;
        use crate::model::run::RunConfig;
        use std::time::{Duration, Instant};
        const BOUND: Duration = Duration::from_secs(60);
        let cfg = RunConfig {
            warmup_ms: 1.0,
            duration_ms: 5.0,
            ..RunConfig::default()
        };
        let durations_ns: [u64; 5] = [
            1,
            1_000_000,
            1_000_000_000,
            3_600_000_000_000,
            30 * 86_400_000_000_000,
        ];
        let rates_per_s = [1e-6, 1e-3, 0.05, 1.0, 1e3, 1e5, 1e7];
        let (mut results, mut errors) = (0, 0);
        for &duration_ns in &durations_ns {
            for &rate in &rates_per_s {
                let mut p = sample_profile();
                p.meta.duration_ns = duration_ns;
                let allocs = (rate * duration_ns as f64 / 1e9).round() as u64;
                p.ops.allocs = allocs;
                p.ops.frees = allocs;
                let started = Instant::now();
                let outcome = measured_from_profile(&p).and_then(|m| {
                    compare_measured(&m, &ModelParams::default(), &[1, 8], &cfg)
                        .map_err(|e| format!("{e:#}"))
                });
                let took = started.elapsed();
                let case = format!("{rate}/s over {duration_ns} ns ({allocs} allocs)");
                assert!(took < BOUND, "{case}: took {took:?}");
                match outcome {
                    Ok(report) => {
                        results += 1;
                        assert!(
                            report.recorded.legacy.simulated_ms >= cfg.duration_ms,
                            "{case}"
                        );
                    }
                    Err(why) => {
                        errors += 1;
                        // A clear error says what is wrong, in words.
                        assert!(why.len() > 20 && !why.contains("panicked"), "{case}: {why}");
                    }
                }
            }
        }
        // The ordinary cases give results; the absurd ones give errors.
        assert!(results >= 8, "{results} results, {errors} errors");
        assert!(errors >= 8, "{results} results, {errors} errors");
    }

    #[test]
    fn an_impossible_allocation_rate_is_refused_not_simulated() {
        // Found by the fuzz campaign: 2^60 allocations in 2 s made `model --from` simulate
        // at full load for seconds (and the 64-CPU sweep far longer).
        let mut p = sample_profile();
        p.ops.allocs = (1 << 60) + 1;
        let m = measured_from_profile(&p).unwrap();
        let cfg = crate::model::RunConfig {
            duration_ms: 1.0,
            ..Default::default()
        };
        let params = crate::model::ModelParams::default();
        let err = crate::model::compare_measured(&m, &params, &[2], &cfg).unwrap_err();
        assert!(
            err.to_string().contains("is more than a CPU can make"),
            "{err:#}"
        );
        // A busy but real rate, a million a second on each of the 4 CPUs, is accepted.
        let mut busy = m;
        busy.allocs_per_s = 4e6;
        busy.validate().unwrap();
    }

    #[test]
    fn allocations_per_cpu_must_add_up_to_the_total() {
        // Fuzz case 0xd0b9/6237: one CPU's count set to 2^59 left the other a share of 10^-15,
        // a rate so low that its next simulated allocation overflowed the model's clock.
        let mut p = sample_profile();
        p.ops.allocs_per_cpu = vec![1200, 1 << 59];
        let err = measured_from_profile(&p).unwrap_err();
        assert!(err.contains("add up to"), "{err}");
        p.ops.allocs_per_cpu = vec![1500, 500];
        let m = measured_from_profile(&p).unwrap();
        assert_eq!(m.per_cpu_alloc_share, vec![0.75, 0.25]);
    }

    #[test]
    fn an_impossible_lock_hold_is_refused_not_calibrated_on() {
        // Fuzz case 14494: a mean hold of 37 minutes scaled every cost by about 10^10 and the
        // simulation ran out of time (over a minute without an end, memory growing).
        let mut p = sample_profile();
        let hold = |count, total_ns| WaitHistogram {
            count,
            total_ns,
            max_ns: total_ns,
            hist: Default::default(),
        };
        p.lock_timing = vec![crate::profile::VmapLockTiming {
            name: "vmap_area_lock".into(),
            lock_addr: 0x1000,
            wait: hold(0, 0),
            hold: hold(500, 1 << 50),
        }];
        let err = measured_from_profile(&p).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("is not a real one"), "{err:#}");
        p.lock_timing[0].hold = hold(500, 500 * 400);
        measured_from_profile(&p).unwrap().validate().unwrap();
        // Real, but a million times the model's hold: no calibration, rather than a model
        // whose every operation lasts seconds.
        p.lock_timing[0].hold = hold(500, 500 * 900_000_000);
        let m = measured_from_profile(&p).unwrap();
        let cfg = crate::model::RunConfig {
            duration_ms: 1.0,
            ..Default::default()
        };
        let params = crate::model::ModelParams::default();
        let err = crate::model::compare_measured(&m, &params, &[2], &cfg).unwrap_err();
        assert!(err.to_string().contains("cannot calibrate"), "{err:#}");
    }

    /// A CPU with one allocation in 31 years: its next arrival lies far past the engine's
    /// clock (2^64 ps), and `t + work` used to overflow (a panic in debug builds).
    #[test]
    fn a_cpu_whose_next_allocation_is_decades_away_does_not_overflow_the_clock() {
        use crate::model::measured::compare_measured;
        use crate::model::params::ModelParams;
        use crate::model::run::RunConfig;
        let mut p = sample_profile();
        p.meta.duration_ns = 1_000_000_000_000_000_000;
        p.ops.allocs = 2_000_000_000;
        p.ops.frees = 2_000_000_000;
        p.ops.allocs_per_cpu = vec![1_999_999_999, 1, 0, 0];
        let m = measured_from_profile(&p).unwrap();
        let cfg = RunConfig {
            warmup_ms: 1.0,
            duration_ms: 5.0,
            ..RunConfig::default()
        };
        let report = compare_measured(&m, &ModelParams::default(), &[4], &cfg).unwrap();
        assert!(report.recorded.legacy.simulated_ms >= cfg.duration_ms);
    }

    #[test]
    fn per_node_lock_names_fold_into_one_class() {
        assert_eq!(model_lock_name("vmap_node[3].busy"), "vmap_node.busy");
        assert_eq!(
            model_lock_name("free_vmap_area_lock"),
            "free_vmap_area_lock"
        );
    }
}
