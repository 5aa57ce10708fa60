//! `vmap-trace doctor`: what this kernel offers, what vmap-trace will use, and what each
//! missing piece costs the user.

use anyhow::Result;
use aya::{
    programs::{FEntry, KProbe},
    Btf, EbpfLoader,
};

use crate::probe::attach::reason;
use serde::Serialize;

use crate::escape::field;
use crate::kernel::{btf::KernelBtf, config, design, kallsyms, privileges, tracefs};
use crate::probe::{self, Hook, ProbeOptions};
use crate::profile::{verifier_log, HookStatus};
use crate::session::{self, TraceSession};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DoctorFormat {
    Text,
    Json,
}

/// Check what this kernel offers and which probe mechanism each hook will use.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[arg(short, long, value_enum, default_value_t = DoctorFormat::Text)]
    pub format: DoctorFormat,
    /// Text only: show the whole verifier log of each program the kernel refuses (by default
    /// its last lines, which hold the refusal; the JSON always carries the whole log).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Missing,
    Info,
}

/// One fact about the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub item: String,
    pub status: Status,
    pub detail: String,
    /// What the user loses when it is missing.
    pub cost: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub findings: Vec<Finding>,
    /// Per hook: the mechanism `record` will use (needs root to find out).
    pub hooks: Option<Vec<HookStatus>>,
}

impl DoctorReport {
    pub fn finding(&self, item: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.item == item)
    }
}

fn finding(item: &str, ok: bool, detail: impl Into<String>, cost: &str) -> Finding {
    Finding {
        item: item.into(),
        status: if ok { Status::Ok } else { Status::Missing },
        detail: detail.into(),
        cost: (!ok).then(|| cost.to_string()),
    }
}

fn info(item: &str, detail: impl Into<String>) -> Finding {
    Finding {
        item: item.into(),
        status: Status::Info,
        detail: detail.into(),
        cost: None,
    }
}

/// Functions to test kprobes and fentry on: in every kernel vmap-trace supports (5.10 to 7.x),
/// traceable (not `notrace`/`NOKPROBE`), rarely called, and never inlined away: the first two
/// are exported (`EXPORT_SYMBOL`), which keeps an out-of-line copy whatever the compiler
/// inlines, and `vfs_read` has callers in many files. A vmap function will not do: 5.10 and
/// 6.1 inline `find_vmap_area`, which the old check probed and so reported no kprobes or fentry
/// where both work. The first one this kernel lists is used.
pub const PROBE_TEST_FUNCTIONS: &[&str] = &["vfs_fsync_range", "vfs_statfs", "vfs_read"];

/// The kprobe PMU's perf type: where perf_event_open creates kprobes (`record` uses it).
const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";

/// The probe-test function this kernel has: in kallsyms (kprobes) and, for fentry, in BTF.
pub fn probe_test_function(
    symbols: &kallsyms::DataSymbols,
    in_btf: impl Fn(&str) -> bool,
    need_btf: bool,
) -> Option<&'static str> {
    PROBE_TEST_FUNCTIONS
        .iter()
        .copied()
        .find(|f| symbols.resolve_function(f).as_deref() == Some(*f) && (!need_btf || in_btf(f)))
}

/// Attach a kprobe through the kprobe PMU, as `record` does: the PMU's type, then a program
/// on a function every kernel has. The kernel's answer is the finding.
fn try_kprobe(symbols: Option<&kallsyms::DataSymbols>) -> Result<String, String> {
    let pmu = std::fs::read_to_string(KPROBE_PMU_TYPE).map_err(|e| {
        format!("no kprobe PMU ({KPROBE_PMU_TYPE}: {e}): CONFIG_KPROBES or CONFIG_KPROBE_EVENTS is not set")
    })?;
    let pmu = pmu.trim();
    let target = symbols
        .and_then(|s| probe_test_function(s, |_| true, false))
        .ok_or_else(|| {
            format!(
                "kprobe PMU (type {pmu}) present, but none of {} is in kallsyms to probe",
                PROBE_TEST_FUNCTIONS.join(", ")
            )
        })?;
    let mut ebpf = EbpfLoader::new()
        .load(probe::EBPF_OBJECT)
        .map_err(|e| reason(&e))?;
    let prog: &mut KProbe = probe::attach::program(&mut ebpf, "kprobe_fn0")?;
    prog.load().map_err(|e| reason(&e))?;
    prog.attach(target, 0).map_err(|e| {
        format!(
            "kprobe PMU (type {pmu}) present, but a probe on {target} was refused: {}",
            reason(&e)
        )
    })?;
    Ok(format!(
        "kprobe PMU (type {pmu}), probe on {target} attached"
    ))
}

/// Attach an fentry program (a BPF trampoline) to a function every kernel has.
fn try_fentry(
    btf: &Btf,
    kernel_btf: Option<&KernelBtf>,
    symbols: Option<&kallsyms::DataSymbols>,
) -> Result<String, String> {
    let kernel_btf = kernel_btf.ok_or("no kernel BTF")?;
    let target = symbols
        .and_then(|s| probe_test_function(s, |f| kernel_btf.has_function(f), true))
        .ok_or_else(|| {
            format!(
                "none of {} is both in kallsyms and in kernel BTF",
                PROBE_TEST_FUNCTIONS.join(", ")
            )
        })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .load(probe::EBPF_OBJECT)
        .map_err(|e| reason(&e))?;
    let prog: &mut FEntry = probe::attach::program(&mut ebpf, "fentry_fn0")?;
    prog.load(target, btf)
        .map_err(|e| format!("fentry on {target} refused at load: {}", reason(&e)))?;
    prog.attach()
        .map_err(|e| format!("fentry on {target} refused at attach: {}", reason(&e)))?;
    Ok(format!("fentry on {target} attached (BPF trampoline)"))
}

pub fn examine() -> DoctorReport {
    let mut f = Vec::new();
    let release = session::kernel_release();
    let cpus = session::online_cpus();
    f.push(info("kernel", format!("{release}, {cpus} CPUs online")));

    let root = privileges::can_trace();
    f.push(finding(
        "privileges",
        root,
        if root {
            "can load tracing programs"
        } else {
            "not root and no CAP_BPF+CAP_PERFMON"
        },
        "nothing can be recorded: run with sudo",
    ));

    let btf = KernelBtf::load();
    f.push(finding(
        "btf",
        btf.is_ok(),
        match &btf {
            Ok(_) => "kernel BTF at /sys/kernel/btf/vmlinux".to_string(),
            Err(e) => format!("{e:#}"),
        },
        "no tp_btf/fentry (falls back to classic tracepoints), allocator design unknown",
    ));
    let btf = btf.ok();

    let symbols = kallsyms::load().ok();
    let design = match &symbols {
        Some((vis, syms)) => design::detect(btf.as_ref(), syms, vis.kallsyms_all),
        None => design::detect(btf.as_ref(), &kallsyms::DataSymbols::default(), false),
    };
    f.push(info("design", design.label()));
    f.push(info("design facts", design.evidence.join("; ")));

    let tfs = if root {
        tracefs::ensure_mounted().ok()
    } else {
        tracefs::mounted()
    };
    f.push(finding(
        "tracefs",
        tfs.is_some(),
        tfs.as_ref()
            .map(|p| format!("mounted at {}", p.display()))
            .unwrap_or_else(|| "not mounted".into()),
        "no classic tracepoints or field layouts",
    ));
    for hook in Hook::ALL {
        let (cat, ev) = hook.event();
        let exists = tfs
            .as_ref()
            .is_some_and(|r| tracefs::event_exists(r, cat, ev))
            || btf
                .as_ref()
                .is_some_and(|b| b.tracepoint_params(ev).is_ok());
        f.push(finding(
            &format!("tracepoint {cat}:{ev}"),
            exists,
            if exists { "present" } else { "absent" },
            hook.cost_if_missing(),
        ));
    }

    let aya_btf = Btf::from_sys_fs().ok();
    if root {
        let syms = symbols.as_ref().map(|(_, s)| s);
        let kprobe = try_kprobe(syms);
        f.push(finding(
            "kprobes",
            kprobe.is_ok(),
            kprobe.clone().unwrap_or_else(|e| e),
            "no latency of vmap functions and no two-way spinlock waits; vmap locks seen only via lock:contention_*",
        ));
        let fentry = match &aya_btf {
            Some(b) => try_fentry(b, btf.as_ref(), syms),
            None => Err("no kernel BTF".into()),
        };
        f.push(finding(
            "fentry",
            fentry.is_ok(),
            fentry.clone().unwrap_or_else(|e| e),
            "kprobes are used instead where present (slightly higher overhead)",
        ));
    } else {
        f.push(info("kprobes", "not tested: needs root"));
        f.push(info("fentry", "not tested: needs root"));
    }

    if root {
        f.push(info(
            "lock timing",
            if f.iter().any(|x| x.item == "kprobes" && x.status == Status::Ok) {
                "available with `record --lock-timing` (experimental, not attached by doctor: entry kprobes on every spin_lock/mutex_lock call)"
            } else {
                "unavailable: needs kprobes"
            },
        ));
    }

    let lockdown = privileges::lockdown_mode();
    f.push(finding(
        "lockdown",
        lockdown.as_deref() != Some("confidentiality"),
        lockdown.clone().unwrap_or_else(|| "unknown (no securityfs)".into()),
        "confidentiality mode forbids reading kernel memory from BPF: classic tracepoints fail, tp_btf still works",
    ));

    match symbols {
        Some((vis, _)) => {
            f.push(finding(
                "kallsyms addresses",
                vis.addresses_visible,
                format!(
                    "visible: {} (kptr_restrict={})",
                    vis.addresses_visible,
                    kallsyms::kptr_restrict().map_or("?".into(), |v| v.to_string())
                ),
                &kallsyms::hidden_addresses_hint(),
            ));
            f.push(finding(
                "kallsyms data symbols",
                vis.kallsyms_all,
                format!("{} data symbols listed", vis.data_symbols),
                "CONFIG_KALLSYMS_ALL unset: vmap locks cannot be named by variable; they are attributed by the vmap function in the stack",
            ));
        }
        None => f.push(finding(
            "kallsyms addresses",
            false,
            format!("cannot read {}", kallsyms::KALLSYMS),
            "stacks cannot be symbolized",
        )),
    }

    match config::load(&release) {
        Some((src, cfg)) => {
            for (key, cost) in [
                ("CONFIG_VMAP_STACK", "kernel stacks are not vmalloc'd: fork/thread creation does not load the vmap allocator"),
                ("CONFIG_HARDENED_USERCOPY", "copy_{to,from}_user on vmalloc buffers does not call find_vmap_area"),
                ("CONFIG_KALLSYMS_ALL", "lock variables are not in kallsyms"),
            ] {
                let on = cfg.get(key).is_some_and(|v| v == "y");
                let mut item = finding(key, on, format!("{} ({src})", if on { "y" } else { "not set" }), cost);
                if key != "CONFIG_KALLSYMS_ALL" {
                    // These describe where load comes from, not something vmap-trace needs.
                    item.status = Status::Info;
                    if !on {
                        item.detail = format!("not set: {cost}");
                    }
                    item.cost = None;
                }
                f.push(item);
            }
        }
        None => f.push(info(
            "kernel config",
            "not readable (/proc/config.gz, /boot/config-*)",
        )),
    }

    // Attach for real, with everything `record` uses by default. Not the experimental
    // lock-timing probes: kprobes on the lock primitives have crashed test guests
    // (docs/kernels.md), and a health check must not risk that; their availability follows
    // from the kprobes finding above.
    let hooks = root.then(|| match TraceSession::start_with(ProbeOptions::default()) {
        Ok(session) => {
            let table = session.vmap_locks();
            let named: Vec<&str> = table.locks.iter().map(|l| l.name.as_str()).collect();
            let shown = if named.len() > 8 { format!("{} ... ({} in all)", named[..8].join(", "), named.len()) } else { named.join(", ") };
            f.push(finding(
                "vmap locks located",
                !table.locks.is_empty(),
                [shown].into_iter().filter(|s| !s.is_empty()).chain(table.problems.iter().cloned()).collect::<Vec<_>>().join("; "),
                "lock-timing cannot filter by address; contention is attributed by the vmap function in the stack",
            ));
            session.hooks().to_vec()
        }
        Err(e) => vec![HookStatus { hook: format!("(load failed: {e:#})"), mechanism: None, rejected: vec![] }],
    });
    DoctorReport { findings: f, hooks }
}

/// The findings for people. Details quote the kernel (refusals, paths, symbols): shown
/// escaped, as every view shows text it did not write itself (`crate::escape`).
pub fn render_text(r: &DoctorReport, verbose: bool) -> String {
    let mut o = String::new();
    for f in &r.findings {
        let mark = match f.status {
            Status::Ok => "ok  ",
            Status::Missing => "NO  ",
            Status::Info => "    ",
        };
        o += &format!("{mark}{:<40} {}\n", field(&f.item), field(&f.detail));
        if let Some(c) = &f.cost {
            o += &format!("    {:<40} -> {c}\n", "");
        }
    }
    match &r.hooks {
        None => o += "\nhooks: not tested (needs root)\n",
        Some(hooks) => {
            o += "\nhooks (what `record` will use; lock-timing with --lock-timing):\n";
            // Hooks that failed for the same reasons are listed together.
            let mut i = 0;
            while i < hooks.len() {
                let h = &hooks[i];
                let mut j = i + 1;
                while j < hooks.len()
                    && h.mechanism.is_none()
                    && hooks[j].mechanism.is_none()
                    && hooks[j].rejected == h.rejected
                {
                    j += 1;
                }
                let names: Vec<_> = hooks[i..j].iter().map(|h| field(&h.hook)).collect();
                let label = if names.len() > 1 {
                    format!("{} (+{} more)", names[0], names.len() - 1)
                } else {
                    names[0].to_string()
                };
                o += &format!(
                    "  {:<40} {}\n",
                    label,
                    h.mechanism.map(|m| m.label()).unwrap_or("UNAVAILABLE")
                );
                if names.len() > 1 {
                    o += &format!("  {:<40}   {}\n", "", names[1..].join(", "));
                }
                for rej in &h.rejected {
                    o += &format!(
                        "  {:<40}   not {}: {}\n",
                        "",
                        rej.mechanism.label(),
                        field(&rej.reason)
                    );
                    if let Some(log) = &rej.verifier_log {
                        o += &verifier_log::render(log, verbose, &format!("  {:<40}     ", ""));
                    }
                }
                i = j;
            }
        }
    }
    o
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let report = examine();
    let text = match args.format {
        DoctorFormat::Text => render_text(&report, args.verbose),
        DoctorFormat::Json => crate::escape::json(serde_json::to_string_pretty(&report)?) + "\n",
    };
    crate::stdout::print(&text).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_costs_of_missing_items() {
        let r = DoctorReport {
            findings: vec![
                finding("kprobes", false, "CONFIG_KPROBES is not set", "no latency"),
                finding("btf", true, "present", "x"),
            ],
            hooks: None,
        };
        let t = render_text(&r, false);
        assert!(t.contains("NO  kprobes"));
        assert!(t.contains("-> no latency"));
        assert!(t.contains("ok  btf"));
        assert!(!t.contains("-> x"));
        assert!(t.contains("not tested (needs root)"));
    }

    #[test]
    fn probe_test_function_is_an_out_of_line_function_of_this_kernel() {
        let (_, syms) = kallsyms::parse(
            "ffffffff81000000 t vfs_fsync_range.cold\n\
             ffffffff81000100 T vfs_statfs\n\
             ffffffff81000200 T vfs_read\n\
             ffffffffc0000000 T vfs_fsync_range\t[some_module]\n",
        );
        // vfs_fsync_range exists here only as a .cold part and in a module: not a target.
        assert_eq!(
            probe_test_function(&syms, |_| true, false),
            Some("vfs_statfs")
        );
        assert_eq!(
            probe_test_function(&syms, |f| f == "vfs_read", true),
            Some("vfs_read"),
            "fentry needs the function in BTF too"
        );
        assert_eq!(probe_test_function(&syms, |_| false, true), None);
        let (_, none) = kallsyms::parse("ffffffff81000000 t alloc_vmap_area\n");
        assert_eq!(probe_test_function(&none, |_| true, false), None);
    }

    #[test]
    fn verifier_logs_follow_their_refusal_last_lines_unless_verbose() {
        let log: String = (0..30).map(|i| format!("{i}: insn\n")).collect::<String>()
            + "invalid read from stack R10 off=-56 size=8";
        let r = DoctorReport {
            findings: vec![],
            hooks: Some(vec![HookStatus {
                hook: "lock:contention_begin".into(),
                mechanism: None,
                rejected: vec![crate::profile::Rejection {
                    mechanism: crate::profile::Mechanism::TpBtf,
                    reason: "the BPF_PROG_LOAD syscall returned Permission denied (os error 13)"
                        .into(),
                    verifier_log: Some(log),
                }],
            }]),
        };
        let short = render_text(&r, false);
        let refusal = short.find("not tp_btf: the BPF_PROG_LOAD").expect(&short);
        let heading = short
            .find("verifier log, last 12 of 31 lines")
            .expect(&short);
        assert!(refusal < heading, "{short}");
        assert!(
            short.ends_with("invalid read from stack R10 off=-56 size=8\n"),
            "{short}"
        );
        assert!(!short.contains("  0: insn"), "{short}");
        let all = render_text(&r, true);
        assert!(
            all.contains("verifier log (31 lines):") && all.contains("  0: insn\n"),
            "{all}"
        );
    }

    #[test]
    fn kernel_text_is_shown_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        let r = DoctorReport {
            findings: vec![finding("kprobes", false, HOSTILE, "no latency")],
            hooks: Some(vec![HookStatus {
                hook: "fn:find_vmap_area".into(),
                mechanism: None,
                rejected: vec![crate::profile::Rejection::new(
                    crate::profile::Mechanism::Kprobe,
                    HOSTILE,
                )],
            }]),
        };
        let t = render_text(&r, false);
        assert_inert(&t, false);
        assert!(
            t.contains(&format!("NO  kprobes{:34}{HOSTILE_SHOWN}\n", "")),
            "{t}"
        );
        assert!(t.contains(&format!("not kprobe: {HOSTILE_SHOWN}\n")), "{t}");
    }
}
