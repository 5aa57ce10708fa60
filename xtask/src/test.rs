//! `cargo xtask test`: the whole suite, as CI runs it.
use std::process::Command;

use anyhow::Result;

use crate::ebpf::workspace_root;
use crate::setup::run_checked;

/// The kernels CI boots: the matrix of docs/kernels.md.
const KERNELS: crate::vm::KernelSeries = crate::vm::KernelSeries::All;

pub fn run(no_setup: bool, no_vm: bool) -> Result<()> {
    if !no_setup {
        crate::setup::run()?;
    }
    // The guests' kernels download (and unpack) while the host builds and tests: the
    // network and xz, not the build, are their bottleneck.
    let prefetch = (!no_vm).then(|| std::thread::spawn(|| crate::vm::prefetch(KERNELS)));
    crate::ebpf::check()?;
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(
        Command::new(&cargo)
            .current_dir(&root)
            .args(["build", "--release", "--locked"]),
    )?;
    // Root integration tests load programs into the running kernel; they share it, so they
    // run one at a time.
    run_checked(Command::new(&cargo).current_dir(&root).args([
        "test",
        "--release",
        "--locked",
        "--",
        "--test-threads=1",
    ]))?;
    if let Some(prefetch) = prefetch {
        prefetch
            .join()
            .map_err(|_| anyhow::anyhow!("the kernel download thread panicked"))??;
        // Real kprobe/fentry kernels, the whole matrix (this machine has neither).
        crate::vm::run(crate::vm::VmTestArgs {
            kernel: KERNELS,
            cpus: 4,
            timeout: 900,
            jobs: 2,
            write_docs: false,
            refresh_apt: false,
            from_logs: false,
        })?;
    }
    Ok(())
}
