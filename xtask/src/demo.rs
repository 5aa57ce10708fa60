//! `cargo xtask demo`: the main job end to end on this machine.
use std::process::Command;

use anyhow::Result;

use crate::ebpf::workspace_root;
use crate::setup::run_checked;

pub fn run(seconds: u32) -> Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "vmap-trace",
    ]))?;
    let bin = root.join("target/release/vmap-trace");
    run_checked(Command::new(&bin).arg("doctor"))?;
    let rec = root.join("target/demo.rec");
    run_checked(
        Command::new(&bin)
            .args(["record", "--report", "-o"])
            .arg(&rec)
            .arg("--")
            .arg(&bin)
            .args(["stress", "mix", "--duration", &seconds.to_string()]),
    )?;
    eprintln!(
        "recording kept at {}; `{} report {}` prints it again",
        rec.display(),
        bin.display(),
        rec.display()
    );
    Ok(())
}
