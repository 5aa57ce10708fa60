//! Can this process load tracing BPF programs?
use anyhow::{bail, Result};

const CAP_SYSLOG: u32 = 34;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// True with CAP_SYS_ADMIN, or with both CAP_BPF and CAP_PERFMON (5.8+).
pub fn can_trace() -> bool {
    effective_caps()
        .is_some_and(|c| has(c, CAP_SYS_ADMIN) || (has(c, CAP_BPF) && has(c, CAP_PERFMON)))
}

/// CAP_SYSLOG lets /proc/kallsyms show addresses (unless kptr_restrict is 2).
pub fn has_cap_syslog() -> bool {
    effective_caps().is_some_and(|c| has(c, CAP_SYSLOG))
}

/// Whether RLIMIT_NPROC binds this process: the kernel's fork exempts root and CAP_SYS_ADMIN
/// or CAP_SYS_RESOURCE holders (copy_process).
pub fn can_exceed_nproc() -> bool {
    // SAFETY: getuid cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    root || effective_caps().is_some_and(|c| has(c, CAP_SYS_ADMIN) || has(c, CAP_SYS_RESOURCE))
}

pub fn require_bpf() -> Result<()> {
    if !can_trace() {
        bail!(
            "loading eBPF tracing programs needs root (or CAP_BPF and CAP_PERFMON): \
             run `sudo vmap-trace ...`"
        );
    }
    Ok(())
}

/// The kernel lockdown mode (`none`, `integrity`, `confidentiality`), if securityfs says.
pub fn lockdown_mode() -> Option<String> {
    let path = "/sys/kernel/security/lockdown";
    let text = std::fs::read_to_string(path).ok().or_else(|| {
        // securityfs may not be mounted; mounting it is harmless and lets us read the mode.
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings.
        unsafe {
            libc::mount(
                c("securityfs").as_ptr(),
                c("/sys/kernel/security").as_ptr(),
                c("securityfs").as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        std::fs::read_to_string(path).ok()
    })?;
    parse_lockdown(&text)
}

fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')?;
    Some(text[start + 1..start + end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_caps_and_lockdown() {
        let caps = parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n").unwrap();
        assert!(has(caps, CAP_SYS_ADMIN) && has(caps, CAP_BPF));
        assert_eq!(parse_cap_eff("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("garbage"), None);
    }
}
