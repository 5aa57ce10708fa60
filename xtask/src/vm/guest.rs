//! Building the guest (static binary, initramfs), fetching Debian kernels, booting QEMU.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::{vm_dir, KernelSeries};
use crate::ebpf::workspace_root;
use crate::setup::run_checked;

const GUEST_INIT: &str = include_str!("guest-init.sh");

/// A static vmap-trace (no shared libraries in the initramfs), in its own target dir so the
/// RUSTFLAGS change does not rebuild the normal one.
pub fn build_static_binary() -> Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/vm-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(
        Command::new(cargo)
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--release", "--locked", "-p", "vmap-trace", "--target", "x86_64-unknown-linux-gnu", "--target-dir"])
            .arg(&target_dir),
    )?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/vmap-trace"))
}

pub fn build_initramfs(binary: &Path) -> Result<PathBuf> {
    let stage = vm_dir().join("initramfs");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("busybox not found (apt-get install busybox-static)"))?;
    fs::copy(busybox, stage.join("bin/busybox"))?;
    fs::copy(binary, stage.join("bin/vmap-trace"))?;
    let init = stage.join("init");
    fs::write(&init, GUEST_INIT)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(stage.join("bin/vmap-trace"), fs::Permissions::from_mode(0o755))?;
    let out = vm_dir().join("initrd.gz");
    run_checked(
        Command::new("sh")
            .current_dir(&stage)
            .arg("-c")
            .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > {}", out.display())),
    )?;
    Ok(out)
}

/// The newest image package of the series, from apt's lists (refreshed when empty).
fn newest_package(series: KernelSeries) -> Result<String> {
    let search = || -> Result<Vec<String>> {
        let out = Command::new("apt-cache").args(["search", "--names-only", series.package_regex()]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
    };
    let mut names = search()?;
    if names.is_empty() {
        run_checked(Command::new("apt-get").args(["update", "-q"]))?;
        names = search()?;
    }
    names.sort_by_key(|n| version_key(n));
    names.pop().ok_or_else(|| anyhow!("no Debian kernel package matches {}", series.package_regex()))
}

/// Numeric parts of a package name, for version ordering (6.1.0-9 < 6.1.0-56).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or(0)).collect()
}

/// Download (cached) and extract the kernel image.
pub fn fetch_kernel(series: KernelSeries) -> Result<PathBuf> {
    let pkg = newest_package(series)?;
    let dir = vm_dir().join("kernels").join(&pkg);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(&dir)?;
    eprintln!("vm-test: downloading {pkg}");
    run_checked(Command::new("apt-get").current_dir(&dir).args(["download", "-q", &pkg]))?;
    let deb = fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", dir.display()))?;
    run_checked(Command::new("sh").current_dir(&dir).arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x --wildcards './boot/vmlinuz-*' './boot/config-*' && mv boot/vmlinuz-* vmlinuz && mv boot/config-* config",
        deb.display()
    )))?;
    fs::remove_file(&deb)?;
    Ok(vmlinuz)
}

/// Boot and return the serial console output.
pub fn boot(series: KernelSeries, kernel: &Path, initrd: &Path, cpus: u32, timeout_s: u32) -> Result<String> {
    let log = vm_dir().join(format!("serial-{}.log", series.label()));
    let kernel_log = vm_dir().join(format!("kernel-{}.log", series.label()));
    eprintln!(
        "vm-test: booting {} with {cpus} vCPUs (TCG), results {}, kernel log {}",
        kernel.display(),
        log.display(),
        kernel_log.display()
    );
    let started = Instant::now();
    let file = fs::File::create(&log)?;
    let status = Command::new("timeout")
        .arg(timeout_s.to_string())
        .args(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "2G", "-smp", &cpus.to_string()])
        // ttyS0 (stdout): the test script's results; ttyS1: the kernel console.
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-serial"])
        .arg(format!("file:{}", kernel_log.display()))
        .args(["-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS1 panic=-1 loglevel=5 nokaslr"])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run qemu-system-x86_64")?;
    let serial = fs::read_to_string(&log).map(|s| s.replace('\r', ""))?;
    eprintln!("vm-test: {} finished in {:.0} s ({status})", series.label(), started.elapsed().as_secs_f64());
    if !serial.contains("@@VT-DONE@@") {
        let kernel_text = fs::read_to_string(&kernel_log).unwrap_or_default().replace('\r', "");
        bail!(
            "guest {} did not finish (timeout or crash, {status}); last results:\n{}\nlast kernel messages:\n{}",
            series.label(),
            tail(&serial, 30),
            tail(&kernel_text, 60)
        );
    }
    Ok(serial)
}

/// Keep a failed boot's logs beside the next attempt's (`serial-6.1.failed.log`, ...).
pub fn keep_failed_logs(series: KernelSeries) {
    for kind in ["serial", "kernel"] {
        let from = vm_dir().join(format!("{kind}-{}.log", series.label()));
        let _ = fs::rename(&from, from.with_extension("failed.log"));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// `(section, guest uptime at its end)` from the `@@VT-TIME name secs@@` stamps.
pub fn section_times(serial: &str) -> Vec<(String, f64)> {
    serial
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("@@VT-TIME ")?.strip_suffix("@@")?;
            let (name, secs) = rest.rsplit_once(' ')?;
            Some((name.to_string(), secs.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_section_times() {
        let t = super::section_times("x\n@@VT-TIME doctor 12.50@@\n@@VT-TIME record 40.01@@\n");
        assert_eq!(t, vec![("doctor".to_string(), 12.5), ("record".to_string(), 40.01)]);
    }

    #[test]
    fn orders_debian_kernel_versions() {
        let mut v = vec!["linux-image-6.1.0-9-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.1.0-10-amd64-unsigned"];
        v.sort_by_key(|n| super::version_key(n));
        assert_eq!(v.last().unwrap(), &"linux-image-6.1.0-56-amd64-unsigned");
    }
}
