//! `mix`: every basic workload at once, so stack allocations, n_tty buffers and large map
//! areas contend for the same vmap locks (the busy/free trees, the lazy list and the purge).

use super::WorkloadKind;

/// How many drivers each basic workload of a run gets.
///
/// A basic workload gets all `drivers`. `mix` splits them evenly over
/// [`WorkloadKind::BASIC`] (the first workloads get the remainder) and gives each at least
/// one, so it uses `max(drivers, 4)` drivers.
pub(super) fn driver_plan(kind: WorkloadKind, drivers: usize) -> Vec<(WorkloadKind, usize)> {
    if kind != WorkloadKind::Mix {
        return vec![(kind, drivers)];
    }
    let parts = WorkloadKind::BASIC.len();
    let drivers = drivers.max(parts);
    let (base, extra) = (drivers / parts, drivers % parts);
    WorkloadKind::BASIC
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, base + usize::from(i < extra)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkloadKind::*;

    #[test]
    fn basic_workload_gets_every_driver() {
        assert_eq!(driver_plan(Pty, 7), vec![(Pty, 7)]);
    }

    #[test]
    fn mix_splits_evenly_and_never_starves_a_workload() {
        assert_eq!(
            driver_plan(Mix, 1),
            vec![(Threads, 1), (Fork, 1), (Pty, 1), (Bpfmap, 1)]
        );
        assert_eq!(
            driver_plan(Mix, 6),
            vec![(Threads, 2), (Fork, 2), (Pty, 1), (Bpfmap, 1)]
        );
        let plan = driver_plan(Mix, 10);
        assert_eq!(plan.iter().map(|p| p.1).sum::<usize>(), 10);
    }
}
