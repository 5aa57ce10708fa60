//! `cargo xtask vm-test`: boot the kernel matrix (Debian 5.10, the oldest and newest 6.1,
//! 6.12, 6.12-rt, 7.x) under QEMU (TCG), two guests at a time, with a static vmap-trace in the
//! initramfs, run it for real with kprobes/fentry, and check the results read back from the
//! serial console (checks.rs, visibility.rs).
//! `cargo xtask vm-fetch`: only download and extract kernels (vmlinuz, config, System.map),
//! e.g. the whole matrix (`--kernel matrix`) for reading their symbols and configs.
mod apt;
mod checks;
mod guest;
mod kernels;
mod matrix;
mod visibility;

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::ebpf::workspace_root;

/// Debian kernel series, each chosen from the private apt lists (apt.rs): bullseye, bookworm,
/// trixie and sid, with their -updates and -security suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSeries {
    /// Debian 11 bullseye's newest 5.10 (legacy design, no purge lock, no lock tracepoints).
    #[value(name = "5.10")]
    V5_10,
    /// Bookworm's newest 6.1 (legacy design).
    #[value(name = "6.1")]
    V6_1,
    /// The oldest 6.1 bookworm still serves (its verifier is older than the newest's).
    #[value(name = "6.1-oldest")]
    V6_1Oldest,
    /// Bookworm's newest 6.12+deb12 backport (node-sharded design).
    #[value(name = "6.12")]
    V6_12,
    /// Trixie's newest 6.12+deb13.
    #[value(name = "6.12-deb13")]
    V6_12Deb13,
    /// Trixie's newest 6.12+deb13 PREEMPT_RT flavour (rt_mutex-based spinlocks).
    #[value(name = "6.12-rt")]
    V6_12Rt,
    /// Sid's newest 7.x.
    #[value(name = "7.x")]
    V7,
    /// What CI boots (`cargo xtask test`): the kernel matrix, as `matrix`.
    All,
    /// The kernel matrix: 5.10, 6.1-oldest, 6.1, 6.12-deb13, 6.12-rt and 7.x.
    Matrix,
}

impl KernelSeries {
    fn expand(self) -> Vec<KernelSeries> {
        use KernelSeries::*;
        match self {
            // Issue 18: every kernel users run is checked in CI, not only the two designs.
            All | Matrix => vec![V5_10, V6_1Oldest, V6_1, V6_12Deb13, V6_12Rt, V7],
            k => vec![k],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            KernelSeries::V5_10 => "5.10",
            KernelSeries::V6_1 => "6.1",
            KernelSeries::V6_1Oldest => "6.1-oldest",
            KernelSeries::V6_12 => "6.12",
            KernelSeries::V6_12Deb13 => "6.12-deb13",
            KernelSeries::V6_12Rt => "6.12-rt",
            KernelSeries::V7 => "7.x",
            KernelSeries::All => "all",
            KernelSeries::Matrix => "matrix",
        }
    }

    /// The node-sharded vmap design (6.9+) rather than the legacy global locks.
    pub fn node_sharded(self) -> bool {
        use KernelSeries::*;
        matches!(self, V6_12 | V6_12Deb13 | V6_12Rt | V7)
    }

    /// Which packages make up the series and which one to take.
    fn spec(self) -> kernels::Spec {
        use kernels::{Layout::*, Pick::*};
        let (release_prefix, flavour, deb, pick, layout) = match self {
            KernelSeries::V5_10 => ("5.10.0-", "-amd64", None, Newest, Image),
            KernelSeries::V6_1 => ("6.1.0-", "-amd64", None, Newest, Image),
            KernelSeries::V6_1Oldest => ("6.1.0-", "-amd64", None, Oldest, Image),
            KernelSeries::V6_12 => ("6.12.", "-amd64", Some("deb12"), Newest, Image),
            KernelSeries::V6_12Deb13 => ("6.12.", "-amd64", Some("deb13"), Newest, Image),
            KernelSeries::V6_12Rt => ("6.12.", "-rt-amd64", Some("deb13"), Newest, Image),
            KernelSeries::V7 => ("7.", "-amd64", None, Newest, Split),
            KernelSeries::All | KernelSeries::Matrix => unreachable!("expand() first"),
        };
        kernels::Spec {
            release_prefix,
            flavour,
            deb,
            pick,
            layout,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct VmTestArgs {
    /// Which Debian kernel(s) to boot.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelSeries,
    /// vCPUs of each guest.
    #[arg(long, default_value_t = 4)]
    pub cpus: u32,
    /// Per-guest time limit in seconds (per boot).
    #[arg(long, default_value_t = 900)]
    pub timeout: u32,
    /// Guests booted at once. Each TCG guest runs on one host thread (`thread=single`), so two
    /// at once use both cores of a 2-CPU machine.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Boot nothing: check and render the serial logs of the last run (target/vm/serial-*.log,
    /// with the wall times in target/vm/time-*.txt), e.g. after changing a check.
    #[arg(long)]
    pub from_logs: bool,
    /// Also regenerate docs/kernels.md from these runs (and this machine's `doctor`).
    #[arg(long)]
    pub write_docs: bool,
    /// Refresh the private apt lists even if they are less than a day old.
    #[arg(long)]
    pub refresh_apt: bool,
}

#[derive(Debug, clap::Args)]
pub struct VmFetchArgs {
    /// Which Debian kernel(s) to download.
    #[arg(long, value_enum, default_value = "all")]
    pub kernel: KernelSeries,
    /// Refresh the private apt lists even if they are less than a day old.
    #[arg(long)]
    pub refresh_apt: bool,
    /// Also extract the real System.map, from the -dbg package (a 0.8-1.2 GB download each;
    /// vm-test does not need it).
    #[arg(long)]
    pub system_map: bool,
}

/// The private apt state (target/vm/apt/), its lists refreshed when due.
fn private_apt(refresh: bool) -> Result<apt::PrivateApt> {
    apt::PrivateApt::prepare(vm_dir().join("apt"), refresh)
}

/// `cargo xtask vm-fetch`: choose, download and extract the kernels without booting them.
pub fn fetch(args: VmFetchArgs) -> Result<()> {
    let apt = private_apt(args.refresh_apt)?;
    for series in args.kernel.expand() {
        let kernel = kernels::fetch(series, &apt, args.system_map)?;
        println!(
            "{}: {}: {}",
            series.label(),
            kernel.package,
            kernels::describe(&kernel)
        );
    }
    Ok(())
}

/// Download and unpack the kernels of `kernel` (no output but errors): `cargo xtask test`
/// runs this while the host tests build.
pub fn prefetch(kernel: KernelSeries) -> Result<()> {
    let apt = private_apt(false)?;
    for series in kernel.expand() {
        kernels::fetch(series, &apt, false)?;
    }
    Ok(())
}

/// This machine's own column: `doctor` only (no stress run here would show vmap locks).
fn local_run(binary: &std::path::Path) -> Result<matrix::KernelRun> {
    let out = std::process::Command::new(binary)
        .args(["doctor", "--format", "json"])
        .output()?;
    let doctor =
        serde_json::from_slice(&out.stdout).map_err(|e| anyhow::anyhow!("doctor JSON: {e}"))?;
    Ok(matrix::KernelRun {
        label: "this machine".into(),
        doctor,
        report: None,
        default_report: None,
        overhead: None,
        wall_secs: None,
        guest_secs: None,
        failed_checks: Vec::new(),
        checks: 0,
    })
}

/// Boots per kernel before its series fails. A guest that freezes or crashes is booted again,
/// loudly, keeping each failed attempt's logs: TCG guests on a shared 2-CPU host have frozen
/// in early boot without a trace (docs/kernels.md). Freezes are detected within
/// `guest::STALL_SECS`, so retries are cheap; a failure on every boot fails the series
/// without hiding the other series' results.
const MAX_BOOTS: u32 = 3;

fn boot_with_retries(
    series: KernelSeries,
    kernel: &std::path::Path,
    initrd: &std::path::Path,
    args: &VmTestArgs,
) -> Result<(Option<String>, u32)> {
    for attempt in 1..=MAX_BOOTS {
        match guest::boot(series, kernel, initrd, args.cpus, args.timeout)? {
            Ok(serial) => {
                if attempt > 1 {
                    println!("NOTE {}: boot {attempt} of {MAX_BOOTS} finished after {} failed (logs: target/vm/*-{}.failed-*.log)", series.label(), attempt - 1, series.label());
                }
                return Ok((Some(serial), attempt));
            }
            Err(failure) => {
                eprintln!("vm-test: BOOT {attempt} OF {MAX_BOOTS} FAILED: {failure}");
                println!(
                    "NOTE {}: boot {attempt} failed: {}",
                    series.label(),
                    failure.summary
                );
                guest::keep_failed_logs(series, attempt);
            }
        }
    }
    Ok((None, MAX_BOOTS))
}

pub fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

/// One guest's outcome: its serial output (None: no boot finished), and its wall time over
/// every boot.
struct GuestRun {
    series: KernelSeries,
    serial: Option<String>,
    wall_secs: f64,
    boots: u32,
}

fn time_file(series: KernelSeries) -> PathBuf {
    vm_dir().join(format!("time-{}.txt", series.label()))
}

/// Boot each series, `jobs` at a time, in the order given. A boot that cannot even start
/// (QEMU missing) stops the run; a guest that did not finish is a result (`serial: None`).
fn boot_all(
    kernels: Vec<(KernelSeries, PathBuf)>,
    initrd: &std::path::Path,
    args: &VmTestArgs,
) -> Result<Vec<GuestRun>> {
    let queue = std::sync::Mutex::new(kernels.into_iter());
    let results = std::sync::Mutex::new(Vec::new());
    let errors = std::sync::Mutex::new(Vec::new());
    let (queue, results, errors) = (&queue, &results, &errors);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            // The queue's lock is held only to take the next kernel, never across a boot.
            let next = || queue.lock().ok().and_then(|mut q| q.next());
            scope.spawn(move || {
                while let Some((series, kernel)) = next() {
                    let started = std::time::Instant::now();
                    match boot_with_retries(series, &kernel, initrd, args) {
                        Ok((serial, boots)) => {
                            let wall_secs = started.elapsed().as_secs_f64();
                            let _ = std::fs::write(
                                time_file(series),
                                format!("{wall_secs:.0} {boots}\n"),
                            );
                            if let Ok(mut r) = results.lock() {
                                r.push(GuestRun {
                                    series,
                                    serial,
                                    wall_secs,
                                    boots,
                                });
                            }
                        }
                        Err(e) => {
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(format!("{}: {e:#}", series.label()));
                            }
                        }
                    }
                }
            });
        }
    });
    let errors = std::mem::take(
        &mut *errors
            .lock()
            .map_err(|_| anyhow::anyhow!("a boot thread panicked"))?,
    );
    if !errors.is_empty() {
        bail!("vm-test could not run: {}", errors.join("; "));
    }
    let guests = std::mem::take(
        &mut *results
            .lock()
            .map_err(|_| anyhow::anyhow!("a boot thread panicked"))?,
    );
    Ok(guests)
}

/// The last run's logs and wall times, for `--from-logs`.
fn from_logs(series: &[KernelSeries]) -> Vec<GuestRun> {
    series
        .iter()
        .map(|&series| {
            let serial =
                std::fs::read_to_string(vm_dir().join(format!("serial-{}.log", series.label())))
                    .ok()
                    .map(|s| s.replace('\r', ""))
                    .filter(|s| s.contains("@@VT-DONE@@"));
            let time = std::fs::read_to_string(time_file(series)).unwrap_or_default();
            let mut fields = time.split_whitespace();
            let wall_secs = fields
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(f64::NAN);
            let boots = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            GuestRun {
                series,
                serial,
                wall_secs,
                boots,
            }
        })
        .collect()
}

pub fn run(args: VmTestArgs) -> Result<()> {
    let series: Vec<KernelSeries> = args.kernel.expand();
    let mut guests = if args.from_logs {
        from_logs(&series)
    } else {
        crate::setup::install_apt(&["qemu-system-x86", "busybox-static", "cpio", "gzip"])?;
        let binary = guest::build_static_binary()?;
        let initrd = guest::build_initramfs(&binary)?;
        let apt = private_apt(args.refresh_apt)?;
        let kernels = series
            .iter()
            .map(|&s| Ok((s, kernels::fetch(s, &apt, false)?.vmlinuz())))
            .collect::<Result<Vec<_>>>()?;
        let started = std::time::Instant::now();
        let guests = boot_all(kernels, &initrd, &args)?;
        eprintln!(
            "vm-test: {} guests, {} at a time, in {:.0} s",
            guests.len(),
            args.jobs,
            started.elapsed().as_secs_f64()
        );
        guests
    };
    guests.sort_by_key(|g| series.iter().position(|s| *s == g.series));
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    if args.write_docs {
        let binary = vm_dir().join("initramfs/bin/vmap-trace");
        runs.push(local_run(&binary)?);
    }
    for guest in guests {
        let series = guest.series;
        println!(
            "TIME {}: {:.0} s wall, {} boot(s)",
            series.label(),
            guest.wall_secs,
            guest.boots
        );
        let Some(serial) = guest.serial else {
            failures.push(format!(
                "{}: guest did not finish ({} boots)",
                series.label(),
                guest.boots
            ));
            continue;
        };
        let times = guest::section_times(&serial);
        let mut previous = 0.0;
        let timing: Vec<String> = times
            .iter()
            .map(|(name, end)| {
                let s = format!("{name} {:.0}s", end - previous);
                previous = *end;
                s
            })
            .collect();
        eprintln!(
            "vm-test: {} section times (guest clock): {}",
            series.label(),
            timing.join(", ")
        );
        let sections = checks::sections(&serial);
        let results = checks::check(series, &serial, &vm_dir().join(series.label()));
        for r in &results {
            println!(
                "{} {} {}: {}",
                if r.ok { "PASS" } else { "FAIL" },
                series.label(),
                r.name,
                r.detail
            );
        }
        if let Some(doctor) = checks::json(&sections, "doctor") {
            runs.push(matrix::KernelRun {
                label: format!("Debian {} (QEMU)", series.label()),
                doctor,
                report: checks::json(&sections, "report"),
                default_report: checks::json(&sections, "report_default"),
                overhead: checks::overhead(&sections),
                wall_secs: Some(guest.wall_secs),
                guest_secs: times.last().map(|(_, end)| *end),
                failed_checks: results
                    .iter()
                    .filter(|r| !r.ok)
                    .map(|r| r.name.clone())
                    .collect(),
                checks: results.len(),
            });
        }
        failures.extend(
            results
                .into_iter()
                .filter(|r| !r.ok)
                .map(|r| format!("{}: {}", series.label(), r.name)),
        );
    }
    if args.write_docs {
        let path = workspace_root().join("docs/kernels.md");
        std::fs::write(
            &path,
            matrix::render(&runs, "cargo xtask vm-test --write-docs"),
        )?;
        eprintln!("vm-test: wrote {}", path.display());
    }
    if !failures.is_empty() {
        bail!("vm-test failed: {}", failures.join(", "));
    }
    println!("vm-test: all checks passed");
    Ok(())
}
