//! `cargo xtask vm-test`: boot Debian's 6.1 (legacy vmap design) and 6.12 (node-sharded)
//! kernels under QEMU (TCG) with a static vmap-trace in the initramfs, run it for real with
//! kprobes/fentry, and check the results read back from the serial console.
mod checks;
mod guest;
mod matrix;

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::ebpf::workspace_root;

/// Debian kernel series under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSeries {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelSeries {
    fn expand(self) -> Vec<KernelSeries> {
        match self {
            KernelSeries::All => vec![KernelSeries::V6_1, KernelSeries::V6_12],
            k => vec![k],
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            KernelSeries::V6_1 => "6.1",
            KernelSeries::V6_12 => "6.12",
            KernelSeries::All => "all",
        }
    }

    /// Package name pattern (apt-cache search regex) of the newest image in the series.
    fn package_regex(self) -> &'static str {
        match self {
            KernelSeries::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
            KernelSeries::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
            KernelSeries::All => unreachable!(),
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
    /// Per-guest time limit in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u32,
    /// Also regenerate docs/kernels.md from these runs (and this machine's `doctor`).
    #[arg(long)]
    pub write_docs: bool,
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
        overhead: None,
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
) -> Result<Option<String>> {
    for attempt in 1..=MAX_BOOTS {
        match guest::boot(series, kernel, initrd, args.cpus, args.timeout)? {
            Ok(serial) => {
                if attempt > 1 {
                    println!("NOTE {}: boot {attempt} of {MAX_BOOTS} finished after {} failed (logs: target/vm/*-{}.failed-*.log)", series.label(), attempt - 1, series.label());
                }
                return Ok(Some(serial));
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
    Ok(None)
}

pub fn vm_dir() -> PathBuf {
    workspace_root().join("target/vm")
}

pub fn run(args: VmTestArgs) -> Result<()> {
    crate::setup::install_apt(&["qemu-system-x86", "busybox-static", "cpio", "gzip"])?;
    let binary = guest::build_static_binary()?;
    let initrd = guest::build_initramfs(&binary)?;
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    if args.write_docs {
        runs.push(local_run(&binary)?);
    }
    for series in args.kernel.expand() {
        let kernel = guest::fetch_kernel(series)?;
        let Some(serial) = boot_with_retries(series, &kernel, &initrd, &args)? else {
            failures.push(format!(
                "{}: guest did not finish ({MAX_BOOTS} boots)",
                series.label()
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
        if let Some(doctor) = checks::json(&sections, "doctor") {
            runs.push(matrix::KernelRun {
                label: format!("Debian {} (QEMU)", series.label()),
                doctor,
                report: checks::json(&sections, "report"),
                overhead: checks::overhead(&sections),
            });
        }
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
