//! The views add up a recording's counters (all locks' waits, a lock's stacks, a histogram's
//! buckets). Real counters are far from 2^64 (584 years of nanoseconds), so a recording whose
//! counters cannot be added up was crafted or corrupted: `recording::decode` refuses it here,
//! once, with a clear error, instead of each view wrapping or saturating to a wrong figure.
use super::{Log2Histogram, Profile, WaitHistogram};

/// Sum that stops at `u64::MAX` instead of wrapping: for sums over data that was not checked
/// (profiles built in memory).
pub fn saturating_sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0, u64::saturating_add)
}

/// Whether every family of counters the views add together fits in a u64; the error names the
/// first that does not.
pub fn check(p: &Profile) -> Result<(), String> {
    let lock_waits = || p.locks.iter().map(|l| &l.wait);
    let stacks = || p.stacks.iter();
    let timing = || p.lock_timing.iter();
    let functions = || p.functions.iter();
    histograms_fit("locks' waits", lock_waits())?;
    fits("stacks' wait counts", stacks().map(|s| s.count))?;
    fits("stacks' wait totals", stacks().map(|s| s.total_ns))?;
    fits("CPUs' wait counts", p.cpus.iter().map(|c| c.count))?;
    fits("CPUs' wait totals", p.cpus.iter().map(|c| c.total_ns))?;
    fits("tasks' wait counts", p.tasks.iter().map(|t| t.count))?;
    fits("tasks' wait totals", p.tasks.iter().map(|t| t.total_ns))?;
    for f in functions() {
        let what = || format!("function {}'s latency", f.function);
        histograms_fit(&what(), std::iter::once(&f.latency))?;
        histograms_fit(&what(), f.per_cpu.iter().map(|c| &c.latency))?;
    }
    histograms_fit("lock timing", timing().flat_map(|t| [&t.wait, &t.hold]))?;
    fits("allocations per CPU", p.ops.allocs_per_cpu.iter().copied())?;
    buckets_fit("allocation sizes", std::iter::once(&p.ops.size_pages))?;
    let l = &p.losses;
    fits(
        "loss counters",
        [
            l.inflight_full,
            l.lock_map_full,
            l.stack_capture_failed,
            l.stack_keys_full,
            l.calls_inflight_full,
            l.tasks_evicted,
            l.lock_keys_evicted,
            l.stack_keys_evicted,
        ],
    )?;
    let s = &p.stack_sampling;
    fits("stack sampling counts", [s.captured, s.skipped])
}

fn fits(what: &str, values: impl IntoIterator<Item = u64>) -> Result<(), String> {
    values
        .into_iter()
        .try_fold(0u64, |sum, v| sum.checked_add(v))
        .map(|_| ())
        .ok_or_else(|| format!("{what} add up to more than 2^64"))
}

/// The histograms' counts, totals and buckets, each summed over all of them (what the total
/// over all locks adds up).
fn histograms_fit<'a>(
    what: &str,
    hists: impl Iterator<Item = &'a WaitHistogram> + Clone,
) -> Result<(), String> {
    fits(what, hists.clone().map(|w| w.count))?;
    fits(what, hists.clone().map(|w| w.total_ns))?;
    buckets_fit(what, hists.map(|w| &w.hist))
}

/// All buckets of all `hists` together: then so does any part of that sum (one bucket over
/// all histograms, the running count a quantile walks).
fn buckets_fit<'a>(
    what: &str,
    hists: impl Iterator<Item = &'a Log2Histogram> + Clone,
) -> Result<(), String> {
    fits(what, hists.flat_map(|h| h.buckets.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    #[test]
    fn a_real_profile_adds_up() {
        assert_eq!(check(&sample_profile()), Ok(()));
    }

    #[test]
    fn counters_that_cannot_be_added_are_named() {
        let mut p = sample_profile();
        p.stacks[0].total_ns = u64::MAX;
        assert_eq!(
            check(&p),
            Err("stacks' wait totals add up to more than 2^64".into())
        );
        let mut p = sample_profile();
        p.locks[0].wait.hist.buckets[12] = u64::MAX;
        assert_eq!(
            check(&p),
            Err("locks' waits add up to more than 2^64".into())
        );
        let mut p = sample_profile();
        p.functions[0].per_cpu[1].latency.count = u64::MAX;
        assert!(check(&p).unwrap_err().contains("alloc_vmap_area"));
        let mut p = sample_profile();
        p.stack_sampling.captured = u64::MAX;
        p.stack_sampling.skipped = 1;
        assert!(check(&p).is_err());
        assert_eq!(saturating_sum([u64::MAX, 5]), u64::MAX);
    }

    #[test]
    fn unchecked_profiles_saturate_rather_than_wrap() {
        // Profiles built in memory skip `check`: their sums stop at the top instead of
        // wrapping to a small figure (or panicking in a debug build).
        let mut p = sample_profile();
        p.stacks[0].total_ns = u64::MAX;
        p.locks[0].wait.total_ns = u64::MAX;
        p.locks[0].wait.hist.buckets[12] = u64::MAX;
        p.losses.inflight_full = u64::MAX;
        p.losses.lock_map_full = 1;
        assert_eq!(p.vmap_wait_ns(), u64::MAX);
        assert_eq!(p.vmap_call_sites()[0].total_ns, u64::MAX);
        let total = p.total_wait();
        assert_eq!(total.total_ns, u64::MAX);
        assert_eq!(total.hist.total(), u64::MAX);
        assert_eq!(p.losses.total(), u64::MAX);
    }
}
