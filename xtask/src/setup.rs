//! `cargo xtask setup`: install what building the eBPF object and running the tests needs.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages: Debian's Rust (whose library source `-Zbuild-std=core` needs), the LLVM
/// that bpf-linker links against, and the tools the integration tests compare against.
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "llvm-22-dev",
    "linux-perf",
    "bpftrace",
    "tmux",
    "chromium",
    "util-linux",
    // The daemon's SIGKILL test lists the kernel's BPF programs and links with it.
    "bpftool",
];
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where bpf-linker is installed (outside the repository, reused across clones).
pub fn tools_root() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    home.join(".local/vmap-trace-tools")
}

pub fn bpf_linker() -> PathBuf {
    tools_root().join("bin/bpf-linker")
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn run_checked(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub fn install_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {missing:?}");
    run_checked(Command::new("apt-get").arg("update").arg("-q"))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

fn bpf_linker_version_ok() -> bool {
    Command::new(bpf_linker())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
}

pub fn run() -> Result<()> {
    install_apt(APT_PACKAGES)?;
    if !bpf_linker_version_ok() {
        eprintln!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
        // Debian's cargo, so the build uses the same LLVM 22 as rustc-web; without
        // LLVM_PREFIX its build script picks llvm-14 and fails.
        run_checked(
            Command::new("/usr/bin/cargo")
                .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                ])
                .args(["--no-default-features", "--features", "llvm-22", "--root"])
                .arg(tools_root()),
        )?;
    }
    eprintln!("setup: eBPF toolchain ready (rustc-web, bpf-linker {BPF_LINKER_VERSION})");
    Ok(())
}
