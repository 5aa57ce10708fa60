//! `cargo xtask test`: the whole suite, as CI runs it.
use std::process::Command;

use anyhow::Result;

use crate::ebpf::workspace_root;
use crate::setup::run_checked;

pub fn run(no_setup: bool, no_vm: bool) -> Result<()> {
    if !no_setup {
        crate::setup::run()?;
    }
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
    if !no_vm {
        // Real kprobe/fentry kernels of both allocator designs (this machine has neither).
        crate::vm::run(crate::vm::VmTestArgs {
            kernel: crate::vm::KernelSeries::All,
            cpus: 4,
            timeout: 600,
            write_docs: false,
            refresh_apt: false,
        })?;
    }
    Ok(())
}
