//! Analytic oracle for the engine and the lock: one FIFO lock, N CPUs, exponential think and
//! service times is the closed machine-repairman queue (M/M/1//N), whose throughput and mean
//! wait have an exact formula. [`simulate_one_lock`] runs exactly that system through the same
//! engine and lock code the kernel designs use (with free cache-line hand-offs).

use rand_distr::{Distribution, Exp};
use serde::Serialize;

use crate::model::engine::{Cx, Design, Engine, Load, OpKind, Outcome, Step};
use crate::model::env::{ns, to_ns, Env, Ps};
use crate::model::lock::{LockId, LockKind, LockTable};
use crate::model::params::ModelParams;
use crate::model::workload::{Op, ThreadGroup};

/// Throughput and mean queueing wait of the one-lock system.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OneLockFigures {
    /// Critical sections per second.
    pub throughput_per_s: f64,
    /// Mean time from request to grant, ns.
    pub mean_wait_ns: f64,
}

/// Exact M/M/1//N: `n` customers, mean think `think_ns`, mean service `service_ns`.
pub fn machine_repairman(n: u32, think_ns: f64, service_ns: f64) -> OneLockFigures {
    let rho = service_ns / think_ns;
    // p0 = 1 / sum_k n!/(n-k)! rho^k
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..=n {
        term *= f64::from(n - k + 1) * rho;
        sum += term;
    }
    let p0 = 1.0 / sum;
    let throughput_per_ns = (1.0 - p0) / service_ns;
    let response = f64::from(n) / throughput_per_ns - think_ns;
    OneLockFigures {
        throughput_per_s: throughput_per_ns * 1e9,
        // One CPU never waits; keep rounding noise from showing as a negative wait.
        mean_wait_ns: (response - service_ns).max(0.0),
    }
}

/// Think, then one critical section of exponential length on the single lock.
struct OneLock {
    locks: LockTable,
    lock: LockId,
    think: Exp<f64>,
    service: Exp<f64>,
}

#[derive(Clone, Copy, Debug)]
struct Serve;

impl crate::model::pack::Pack for Serve {
    fn pack(self) -> u64 {
        0
    }

    fn unpack(_: u64) -> Self {
        Serve
    }
}

impl Design for OneLock {
    type Act = Serve;

    fn begin(&mut self, op: Op, cx: &mut Cx<'_, Serve>) {
        match op {
            Op::Vmalloc { .. } => {
                let think = ns(self.think.sample(cx.rng));
                cx.then([
                    Step::Work(think),
                    Step::Act(Serve),
                    Step::Done(OpKind::Vmalloc),
                ]);
            }
            _ => cx.then([Step::Done(OpKind::Vfree)]),
        }
    }

    fn act(&mut self, _: Serve, cx: &mut Cx<'_, Serve>) -> Outcome {
        let hold = ns(self.service.sample(cx.rng));
        Outcome::At(self.locks.section(cx, self.lock, hold, 0))
    }

    fn reset_stats(&mut self) {
        self.locks.reset_stats();
    }
}

/// Simulate the one-lock system for `duration_ms` of simulated time (after 5% warm-up).
pub fn simulate_one_lock(
    n: u32,
    think_ns: f64,
    service_ns: f64,
    seed: u64,
    duration_ms: f64,
) -> OneLockFigures {
    let mut params = ModelParams::default();
    params.machine.cpus = n;
    params.machine.threads_per_core = 1;
    params.hardware.transfer_smt_ns = 0.0;
    params.hardware.transfer_llc_ns = 0.0;
    params.hardware.transfer_remote_ns = 0.0;
    params.hardware.transfer_remote_idle_ns = 0.0;
    let cpus: Vec<u32> = (0..n).collect();
    let env = Env::new(&params, &cpus);
    let mut locks = LockTable::default();
    let lock = locks.add_class("lock", LockKind::Spinlock, 1);
    let design = OneLock {
        locks,
        lock,
        think: Exp::new(1.0 / think_ns).expect("positive think time"),
        service: Exp::new(1.0 / service_ns).expect("positive service time"),
    };
    let groups = [ThreadGroup::default()];
    let load = Load::Closed {
        groups: &groups,
        thread_groups: vec![0; n as usize],
        cpus,
    };
    let mut engine = Engine::new(design, env, load, seed);
    let measure: Ps = ns(duration_ms * 1e6);
    engine
        .run(measure / 20, measure / 20, |_| true, measure)
        .expect("validation runs of a few hundred ms stay far inside the horizon");
    let class = &engine.design.locks.classes()[0];
    OneLockFigures {
        throughput_per_s: class.acquisitions as f64 / (to_ns(measure) / 1e9),
        mean_wait_ns: to_ns(class.wait_total) / class.acquisitions.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_formula_limits() {
        // One customer never waits.
        let one = machine_repairman(1, 900.0, 100.0);
        assert!((one.throughput_per_s - 1e9 / 1000.0).abs() < 1e-6);
        assert!(one.mean_wait_ns.abs() < 1e-9);
        // Far past saturation the server is always busy.
        let many = machine_repairman(64, 100.0, 100.0);
        assert!((many.throughput_per_s - 1e7).abs() / 1e7 < 1e-9);
    }

    /// The simulated one-lock system matches the exact M/M/1//N within 3%, throughput and
    /// mean wait, from light load through the knee to deep saturation.
    #[test]
    fn simulation_matches_machine_repairman_within_3_percent() {
        for n in crate::model::validate::ORACLE_CPUS {
            let check = crate::model::validate::oracle_check(n, 7);
            let (x_err, w_err) = check.errors();
            assert!(
                x_err.abs() < 0.03,
                "N={n}: throughput off by {:+.2}%: {check:?}",
                100.0 * x_err
            );
            if n == 1 {
                assert_eq!(check.simulated_wait_ns, 0.0, "a single CPU never waits");
            } else {
                assert!(
                    w_err.abs() < 0.03,
                    "N={n}: mean wait off by {:+.2}%: {check:?}",
                    100.0 * w_err
                );
            }
        }
    }
}
