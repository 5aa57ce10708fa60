//! `cargo xtask test`: the whole suite, as CI runs it.
use std::process::Command;

use anyhow::Result;

use crate::ebpf::workspace_root;
use crate::setup::run_checked;

pub fn run(no_setup: bool) -> Result<()> {
    if !no_setup {
        crate::setup::run()?;
    }
    crate::ebpf::check()?;
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(Command::new(&cargo).current_dir(&root).args(["build", "--release", "--locked"]))?;
    // Root integration tests load programs into the running kernel; they share it, so they
    // run one at a time.
    run_checked(
        Command::new(&cargo)
            .current_dir(&root)
            .args(["test", "--release", "--locked", "--", "--test-threads=1"]),
    )?;
    Ok(())
}
