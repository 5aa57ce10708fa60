//! Building the guest (static binary, initramfs), fetching Debian kernels, booting QEMU.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use super::{vm_dir, KernelSeries};
use crate::ebpf::workspace_root;
use crate::setup::run_checked;

const GUEST_INIT: &str = include_str!("guest-init.sh");

/// A static vmap-trace (no shared libraries in the initramfs), in its own target dir so the
/// RUSTFLAGS change does not rebuild the normal one; its `tracing_toggle` example, which
/// detaches and attaches the programs, is built beside it (`examples/`).
pub fn build_static_binary() -> Result<PathBuf> {
    let root = workspace_root();
    let target_dir = root.join("target/vm-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run_checked(
        Command::new(cargo)
            .current_dir(&root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "vmap-trace",
                "--bins",
                "--example",
                "tracing_toggle",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
            ])
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
    let toggle = binary
        .parent()
        .map(|dir| dir.join("examples/tracing_toggle"))
        .ok_or_else(|| anyhow!("{} has no directory", binary.display()))?;
    fs::copy(&toggle, stage.join("bin/tracing_toggle"))
        .with_context(|| format!("copying {}", toggle.display()))?;
    let init = stage.join("init");
    fs::write(&init, GUEST_INIT)?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    for bin in ["bin/vmap-trace", "bin/tracing_toggle"] {
        fs::set_permissions(stage.join(bin), fs::Permissions::from_mode(0o755))?;
    }
    let out = vm_dir().join("initrd.gz");
    run_checked(
        Command::new("sh")
            .current_dir(&stage)
            .arg("-c")
            .arg(format!(
                "find . | cpio -o -H newc --quiet | gzip -1 > {}",
                out.display()
            )),
    )?;
    Ok(out)
}

/// QEMU's TCG in one thread for all vCPUs. With the default multi-threaded TCG, probing the
/// lock primitives (`record --lock-timing`) oopsed or froze Debian's 6.1 about once per 5-30
/// attach/detach cycles (calls through NULL in the code being patched: `scheduler_tick` ->
/// `_raw_spin_lock`), the same loop ran clean under `thread=single`: kernel text patching
/// (int3, ftrace, kprobes) races with vCPUs on other host threads. On this 2-CPU host the
/// single thread is also not slower for 4 vCPUs. See docs/kernels.md.
const ACCEL: &str = "tcg,thread=single";

/// The guest writes a heartbeat to the kernel-log port every few seconds (guest-init.sh): a
/// guest whose logs do not grow for this long has frozen (all vCPUs stuck, e.g. in a deadlocked
/// oops), however much of its overall time limit is left.
pub const STALL_SECS: u64 = 90;

/// Why a boot did not finish, with what the logs show.
#[derive(Debug)]
pub struct BootFailure {
    pub summary: String,
    pub details: String,
}

impl std::fmt::Display for BootFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.summary, self.details)
    }
}

/// Boot and return the serial console output.
pub fn boot(
    series: KernelSeries,
    kernel: &Path,
    initrd: &Path,
    cpus: u32,
    timeout_s: u32,
) -> Result<Result<String, BootFailure>> {
    let log = vm_dir().join(format!("serial-{}.log", series.label()));
    let kernel_log = vm_dir().join(format!("kernel-{}.log", series.label()));
    eprintln!(
        "vm-test: booting {} with {cpus} vCPUs (TCG, one thread), results {}, kernel log {}",
        kernel.display(),
        log.display(),
        kernel_log.display()
    );
    let started = Instant::now();
    let file = fs::File::create(&log)?;
    let _ = fs::remove_file(&kernel_log);
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            ACCEL,
            "-cpu",
            "max",
            "-m",
            "2G",
            "-smp",
            &cpus.to_string(),
        ])
        // ttyS0 (stdout): the test script's results; ttyS1: the kernel console and heartbeat.
        .args([
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-serial",
        ])
        .arg(format!("file:{}", kernel_log.display()))
        .args(["-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS1 panic=-1 loglevel=5 nokaslr"])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run qemu-system-x86_64")?;
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (mut last_sizes, mut last_growth) = ((0, 0), Instant::now());
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            break format!("{status}");
        }
        let sizes = (size(&log), size(&kernel_log));
        if sizes != last_sizes {
            (last_sizes, last_growth) = (sizes, Instant::now());
        }
        let stalled = last_growth.elapsed().as_secs() >= STALL_SECS;
        if stalled || started.elapsed().as_secs() >= u64::from(timeout_s) {
            let _ = child.kill();
            let _ = child.wait();
            break if stalled {
                format!("froze: no output and no heartbeat for {STALL_SECS} s")
            } else {
                format!("still running after the {timeout_s} s limit")
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let serial = fs::read_to_string(&log).map(|s| s.replace('\r', ""))?;
    eprintln!(
        "vm-test: {} finished in {:.0} s ({outcome})",
        series.label(),
        started.elapsed().as_secs_f64()
    );
    if !serial.contains("@@VT-DONE@@") {
        let kernel_text = fs::read_to_string(&kernel_log)
            .unwrap_or_default()
            .replace('\r', "");
        let during = match running_section(&serial) {
            Some(s) => format!("during section `{s}`"),
            None if serial.contains("@@VT-BEGIN") => "between sections".to_string(),
            None => "before the first section (boot or /init)".to_string(),
        };
        return Ok(Err(BootFailure {
            summary: format!(
                "guest {} did not finish {during} ({outcome})",
                series.label()
            ),
            details: format!(
                "last results:\n{}\nlast kernel messages:\n{}",
                tail(&serial, 30),
                tail(&without_heartbeats(&kernel_text), 60)
            ),
        }));
    }
    Ok(Ok(serial))
}

/// The section that began and never ended, if any.
fn running_section(serial: &str) -> Option<String> {
    let begun = serial.rfind("@@VT-BEGIN ")?;
    let name = serial[begun + 11..].split("@@").next()?.to_string();
    (!serial[begun..].contains(&format!("@@VT-END {name} "))).then_some(name)
}

fn without_heartbeats(kernel_log: &str) -> String {
    kernel_log
        .lines()
        .filter(|l| !l.starts_with("@@VT-ALIVE"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keep a failed boot's logs beside the next attempt's (`serial-6.1.failed-1.log`, ...).
pub fn keep_failed_logs(series: KernelSeries, attempt: u32) {
    for kind in ["serial", "kernel"] {
        let from = vm_dir().join(format!("{kind}-{}.log", series.label()));
        let _ = fs::rename(&from, from.with_extension(format!("failed-{attempt}.log")));
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
        assert_eq!(
            t,
            vec![("doctor".to_string(), 12.5), ("record".to_string(), 40.01)]
        );
    }

    #[test]
    fn names_the_section_a_guest_froze_in() {
        let done = "@@VT-BEGIN a@@\nx\n@@VT-END a rc=0@@\n";
        assert_eq!(super::running_section(done), None);
        assert_eq!(
            super::running_section(&format!("{done}@@VT-BEGIN record@@\npartial")),
            Some("record".to_string())
        );
        assert_eq!(super::running_section(""), None);
    }
}
