//! What the system allows a stress run to hold at once: tasks, file descriptors, ptys and
//! BPF map memory. A run that asks for more than half of what is free is refused before it
//! starts, so a typo (`--threads 1024 --live 4096`: 4 M tasks) cannot exhaust the pid space
//! or the memory of the machine it is meant to measure.
use super::{mix, StressConfig, WorkloadKind};

/// The share of each free resource one stress run may take: the rest keeps the machine (and
/// the tracer recording it) usable.
const SHARE: f64 = 0.5;

/// The system's limits and current use, as read from /proc and getrlimit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemLimits {
    /// Tasks (threads and processes) that can still be created: min of pid_max and
    /// threads-max, less the tasks that exist now; RLIMIT_NPROC too unless privileged.
    pub free_tasks: u64,
    /// This process's RLIMIT_NOFILE soft limit.
    pub open_files: u64,
    /// ptys that can still be opened (kernel.pty.max less kernel.pty.nr).
    pub free_ptys: u64,
    /// MemAvailable, in bytes.
    pub available_memory: u64,
}

/// What a run would hold at once, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    pub tasks: u64,
    pub open_files: u64,
    pub ptys: u64,
    pub map_bytes: u64,
}

/// A run that would take more than its share of one resource.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "this run would hold {asked} {what} at once, but the system has {free} free and one stress \
     run may take at most {allowed} (half): lower --threads or --live"
)]
pub struct TooLarge {
    pub what: &'static str,
    pub asked: u64,
    pub free: u64,
    pub allowed: u64,
}

/// Refuse a run of `kind` with `config` that this system cannot hold (see [`Demand::check`]).
pub fn check_system(kind: WorkloadKind, config: &StressConfig) -> Result<(), TooLarge> {
    Demand::of(kind, config).check(&SystemLimits::read())
}

impl Demand {
    /// The most a run of `kind` with `config` holds at once. Each driver is a thread; a fork
    /// driver adds a helper process and a release pipe; a pty pair is two fds and one pty.
    pub fn of(kind: WorkloadKind, config: &StressConfig) -> Demand {
        let mut d = Demand::default();
        for (k, drivers) in mix::driver_plan(kind, config.drivers) {
            let (drivers, live) = (drivers as u64, config.live_for(k) as u64);
            let objects = drivers.saturating_mul(live);
            d.tasks = d.tasks.saturating_add(drivers);
            match k {
                WorkloadKind::Threads => d.tasks = d.tasks.saturating_add(objects),
                WorkloadKind::Fork => {
                    d.tasks = d.tasks.saturating_add(objects.saturating_add(drivers));
                    d.open_files = d.open_files.saturating_add(drivers.saturating_mul(2));
                }
                WorkloadKind::Pty => {
                    d.ptys = d.ptys.saturating_add(objects);
                    d.open_files = d.open_files.saturating_add(objects.saturating_mul(2));
                }
                WorkloadKind::Bpfmap => {
                    d.open_files = d.open_files.saturating_add(objects);
                    d.map_bytes = d
                        .map_bytes
                        .saturating_add(objects.saturating_mul(config.bpf_map.data_bytes()));
                }
                WorkloadKind::Mix => unreachable!("driver_plan splits mix into basic workloads"),
            }
        }
        d
    }

    /// Refuse a demand over [`SHARE`] of any free resource.
    pub fn check(&self, limits: &SystemLimits) -> Result<(), TooLarge> {
        let checks = [
            (
                "tasks (threads and processes)",
                self.tasks,
                limits.free_tasks,
            ),
            (
                "open files (RLIMIT_NOFILE)",
                self.open_files,
                limits.open_files,
            ),
            ("ptys (kernel.pty.max)", self.ptys, limits.free_ptys),
            (
                "bytes of BPF map memory",
                self.map_bytes,
                limits.available_memory,
            ),
        ];
        for (what, asked, free) in checks {
            let allowed = (free as f64 * SHARE) as u64;
            if asked > allowed {
                return Err(TooLarge {
                    what,
                    asked,
                    free,
                    allowed,
                });
            }
        }
        Ok(())
    }
}

impl SystemLimits {
    /// Read them from this system; a value that cannot be read does not limit.
    pub fn read() -> SystemLimits {
        let number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let max_tasks = number("/proc/sys/kernel/pid_max")
            .unwrap_or(u64::MAX)
            .min(number("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX));
        let mut free_tasks = max_tasks.saturating_sub(tasks_now(&loadavg).unwrap_or(0));
        if !crate::kernel::privileges::can_exceed_nproc() {
            free_tasks = free_tasks.min(rlimit(libc::RLIMIT_NPROC));
        }
        let free_ptys = number("/proc/sys/kernel/pty/max")
            .unwrap_or(u64::MAX)
            .saturating_sub(number("/proc/sys/kernel/pty/nr").unwrap_or(0));
        SystemLimits {
            free_tasks,
            open_files: rlimit(libc::RLIMIT_NOFILE),
            free_ptys,
            available_memory: mem_available(
                &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            )
            .unwrap_or(u64::MAX),
        }
    }
}

/// The fourth field of /proc/loadavg is `running/total` scheduling entities (tasks).
fn tasks_now(loadavg: &str) -> Option<u64> {
    loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

fn rlimit(resource: libc::__rlimit_resource_t) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return u64::MAX;
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn roomy() -> SystemLimits {
        SystemLimits {
            free_tasks: 32_000,
            open_files: 1_048_576,
            free_ptys: 4_000,
            available_memory: 16 << 30,
        }
    }

    fn config(drivers: usize, live: usize) -> StressConfig {
        let mut c = StressConfig::new(Duration::from_secs(1));
        c.drivers = drivers;
        c.live_per_driver = Some(live);
        c
    }

    #[test]
    fn the_issue_case_is_refused_with_the_numbers() {
        // 1024 drivers x 4096 live threads against a pid_max of 32768.
        let err = Demand::of(WorkloadKind::Threads, &config(1024, 4096))
            .check(&roomy())
            .unwrap_err();
        assert_eq!(err.asked, 1024 * 4096 + 1024);
        assert_eq!(err.allowed, 16_000);
        let text = err.to_string();
        assert!(
            text.contains("tasks") && text.contains("--threads"),
            "{text}"
        );
    }

    #[test]
    fn defaults_fit_a_small_machine() {
        for kind in [
            WorkloadKind::Threads,
            WorkloadKind::Fork,
            WorkloadKind::Pty,
            WorkloadKind::Bpfmap,
            WorkloadKind::Mix,
        ] {
            let c = StressConfig::new(Duration::from_secs(1));
            assert_eq!(Demand::of(kind, &c).check(&roomy()), Ok(()), "{kind}");
        }
    }

    #[test]
    fn each_resource_is_counted_for_its_workload() {
        let pty = Demand::of(WorkloadKind::Pty, &config(4, 100));
        assert_eq!((pty.ptys, pty.open_files, pty.tasks), (400, 800, 4));
        let limits = SystemLimits {
            free_ptys: 500,
            ..roomy()
        };
        assert_eq!(
            pty.check(&limits).unwrap_err().what,
            "ptys (kernel.pty.max)"
        );
        let fork = Demand::of(WorkloadKind::Fork, &config(2, 10));
        assert_eq!(fork.tasks, 2 + 20 + 2);
        let mut big_maps = config(8, 64);
        big_maps.bpf_map.max_entries = 1 << 20; // 8 MiB a map: 4 GiB in all
        let maps = Demand::of(WorkloadKind::Bpfmap, &big_maps);
        let limits = SystemLimits {
            available_memory: 4 << 30,
            ..roomy()
        };
        assert!(maps
            .check(&limits)
            .unwrap_err()
            .what
            .contains("BPF map memory"));
    }

    #[test]
    fn parses_proc_files() {
        assert_eq!(tasks_now("0.10 0.20 0.30 2/345 6789\n"), Some(345));
        assert_eq!(
            mem_available("MemTotal: 100 kB\nMemAvailable:   2048 kB\n"),
            Some(2048 * 1024)
        );
        let here = SystemLimits::read();
        assert!(here.free_tasks > 0 && here.open_files > 0 && here.available_memory > 0);
    }
}
