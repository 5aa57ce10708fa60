//! Building the eBPF object and checking that the committed one is fresh.
//!
//! The object is committed (like cilium/ebpf's bpf2go output) so that a plain `cargo build`
//! works without the eBPF toolchain. Freshness is checked two ways: a SHA-256 over every input
//! (sources of the eBPF and common crates, Cargo.lock, workspace manifests, compiler and linker
//! versions) recorded beside the object, and a rebuild that must be byte-identical (paths are
//! remapped so the output does not depend on where the repository is checked out).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::setup::{bpf_linker, run_checked, tools_root};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn object_path() -> PathBuf {
    workspace_root().join("vmap-trace/ebpf/vmap-trace.bpf.o")
}

fn inputs_path() -> PathBuf {
    workspace_root().join("vmap-trace/ebpf/vmap-trace.bpf.o.inputs")
}

/// Compile into `target_dir` and return the path of the linked object.
fn compile(target_dir: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    if !bpf_linker().exists() {
        bail!(
            "bpf-linker is not installed at {}: run `cargo xtask setup`",
            bpf_linker().display()
        );
    }
    let path = format!(
        "{}:{}",
        tools_root().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or("/root".into())));
    // Remap absolute paths (they end up in BTF/debug info) so the bytes do not depend on the
    // checkout location or the machine's cargo home.
    let rustflags = [
        format!("--remap-path-prefix={}=/vmap-trace", root.display()),
        format!("--remap-path-prefix={home}=/cargo-home"),
        "--remap-path-prefix=/usr/lib/rustlib/src/rust=/rustlib".to_string(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(&root)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", "/usr/bin/rustc")
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .args(["build", "--locked", "-p", "vmap-trace-ebpf", "--release"])
        .args([
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(target_dir);
    run_checked(&mut cmd)
        .context("eBPF build failed (is the toolchain installed? `cargo xtask setup`)")?;
    Ok(target_dir.join("bpfel-unknown-none/release/vmap-trace"))
}

fn tool_version(cmd: &str, arg: &str) -> Result<String> {
    let out = Command::new(cmd)
        .arg(arg)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            collect_files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// The text recorded beside the object: one line per input, then the overall hash.
fn describe_inputs() -> Result<String> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["vmap-trace-ebpf", "vmap-trace-common"] {
        collect_files(&root.join(dir), &mut files)?;
    }
    for f in ["Cargo.lock", "Cargo.toml", ".cargo/config.toml"] {
        files.push(root.join(f));
    }
    let mut rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    rel.sort();
    let mut text = String::new();
    for r in &rel {
        let bytes = fs::read(root.join(r)).with_context(|| format!("cannot read {r}"))?;
        text += &format!("{:x}  {r}\n", Sha256::digest(&bytes));
    }
    text += &format!("rustc: {}\n", tool_version("/usr/bin/rustc", "-V")?);
    text += &format!(
        "bpf-linker: {}\n",
        tool_version(&bpf_linker().to_string_lossy(), "--version")?
    );
    let overall = format!("{:x}", Sha256::digest(text.as_bytes()));
    Ok(format!("{text}inputs-sha256: {overall}\n"))
}

pub fn build() -> Result<()> {
    let root = workspace_root();
    let built = compile(&root.join("ebpf-target"))?;
    let dest = object_path();
    fs::create_dir_all(dest.parent().unwrap())?;
    fs::copy(&built, &dest).with_context(|| format!("cannot write {}", dest.display()))?;
    fs::write(inputs_path(), describe_inputs()?)?;
    eprintln!(
        "wrote {} ({} bytes) and its input hash",
        dest.display(),
        fs::metadata(&dest)?.len()
    );
    Ok(())
}

pub fn check() -> Result<()> {
    let recorded = fs::read_to_string(inputs_path()).with_context(|| {
        format!(
            "{} is missing: run `cargo xtask build-ebpf`",
            inputs_path().display()
        )
    })?;
    let current = describe_inputs()?;
    if recorded != current {
        let diff: Vec<String> = current
            .lines()
            .filter(|l| !recorded.lines().any(|r| r == *l))
            .map(|l| format!("  changed: {l}"))
            .collect();
        bail!(
            "the committed eBPF object is stale (its inputs changed):\n{}\nrun `cargo xtask build-ebpf` and commit the result",
            diff.join("\n")
        );
    }
    let scratch = workspace_root().join("ebpf-target/check");
    let rebuilt = compile(&scratch)?;
    let (a, b) = (fs::read(object_path())?, fs::read(&rebuilt)?);
    if a != b {
        bail!(
            "rebuilding the eBPF object gave different bytes than the committed {} ({} vs {} bytes); \
             run `cargo xtask build-ebpf` and commit the result",
            object_path().display(),
            a.len(),
            b.len()
        );
    }
    eprintln!("eBPF object is fresh: input hash matches and the rebuild is byte-identical");
    Ok(())
}
