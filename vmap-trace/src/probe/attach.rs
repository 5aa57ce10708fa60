//! Attaching entry/exit program pairs with fentry/fexit, falling back to kprobe/kretprobe.
use aya::{
    programs::{FEntry, FExit, KProbe, ProgramError},
    Btf, Ebpf,
};

use super::links::{LinkId, Links, Target};
use crate::profile::{verifier_log, Mechanism, Rejection};

/// Why the kernel refused one mechanism: its error on one line, and the verifier's own log
/// when it is the verifier that refused the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub verifier_log: Option<String>,
}

impl Refusal {
    pub fn into_rejection(self, mechanism: Mechanism) -> Rejection {
        Rejection {
            mechanism,
            reason: self.reason,
            verifier_log: self.verifier_log,
        }
    }
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal {
            reason,
            verifier_log: None,
        }
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

/// A program load's error, with the verifier's log when the verifier refused it (aya keeps
/// the log in `ProgramError::LoadError`; its message carries the whole log, which `reason`
/// cuts to the first line).
pub fn load_refusal(err: &ProgramError) -> Refusal {
    let verifier_log = match err {
        ProgramError::LoadError { verifier_log, .. } => {
            verifier_log::keep(&verifier_log.to_string())
        }
        _ => None,
    };
    Refusal {
        reason: reason(err),
        verifier_log,
    }
}

/// The kernel's error, with its causes, on one line.
pub fn reason(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let next = e.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        src = e.source();
    }
    // Verifier logs can be thousands of lines: keep the part that says what went wrong.
    let first = s.lines().next().unwrap_or("");
    let first = first
        .split(". Verifier output")
        .next()
        .unwrap_or(first)
        .trim_end_matches([':', ' ', '.'])
        .to_string();
    if first.len() > 300 {
        format!("{}...", &first[..300])
    } else {
        first
    }
}

/// The program `name` of the object, as type `T`; the error says which is wrong.
pub fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?;
    p.try_into().map_err(|e: ProgramError| reason(&e))
}

/// fentry on `target` with `entry`, fexit with `exit` (either may be None). Both or neither:
/// a lone entry program would fill the in-flight table with calls that never end. The links
/// made go into `links`.
pub fn fentry_pair(
    ebpf: &mut Ebpf,
    btf: &Btf,
    target: &str,
    entry: Option<&str>,
    exit: Option<&str>,
    links: &mut Links,
) -> Result<(), Refusal> {
    let mut entry_link = None;
    if let Some(entry) = entry {
        let p: &mut FEntry = program(ebpf, entry)?;
        if p.fd().is_err() {
            p.load(target, btf).map_err(|e| load_refusal(&e))?;
        }
        entry_link = Some(p.attach().map_err(|e| reason(&e))?);
    }
    let mut exit_link = None;
    if let Some(exit) = exit {
        let attached = (|| -> Result<_, Refusal> {
            let p: &mut FExit = program(ebpf, exit)?;
            if p.fd().is_err() {
                p.load(target, btf).map_err(|e| load_refusal(&e))?;
            }
            Ok(p.attach().map_err(|e| reason(&e))?)
        })();
        match attached {
            Ok(link) => exit_link = Some(link),
            Err(e) => {
                if let Some(entry) = entry {
                    let p: &mut FEntry = program(ebpf, entry)?;
                    let _ = p.unload();
                }
                return Err(e);
            }
        }
    }
    if let (Some(name), Some(link)) = (entry, entry_link) {
        links.add(name, Target::FEntry, LinkId::FEntry(link));
    }
    if let (Some(name), Some(link)) = (exit, exit_link) {
        links.add(name, Target::FExit, LinkId::FExit(link));
    }
    Ok(())
}

/// kprobe on `symbol` with `entry`, kretprobe with `exit`; programs may be shared by targets.
/// The links made go into `links`.
pub fn kprobe_pair(
    ebpf: &mut Ebpf,
    symbol: &str,
    entry: Option<&str>,
    exit: Option<&str>,
    links: &mut Links,
) -> Result<(), Refusal> {
    if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        return Err("no kprobe PMU: this kernel is built without CONFIG_KPROBES".into());
    }
    let mut attached_entry = None;
    if let Some(entry) = entry {
        let p: &mut KProbe = program(ebpf, entry)?;
        if p.fd().is_err() {
            p.load().map_err(|e| load_refusal(&e))?;
        }
        attached_entry = Some(p.attach(symbol, 0).map_err(|e| reason(&e))?);
    }
    let mut attached_exit = None;
    if let Some(exit) = exit {
        let attached = (|| -> Result<_, Refusal> {
            let p: &mut KProbe = program(ebpf, exit)?;
            if p.fd().is_err() {
                p.load().map_err(|e| load_refusal(&e))?;
            }
            Ok(p.attach(symbol, 0).map_err(|e| reason(&e))?)
        })();
        match attached {
            Ok(link) => attached_exit = Some(link),
            Err(e) => {
                if let (Some(entry), Some(link)) = (entry, attached_entry) {
                    let p: &mut KProbe = program(ebpf, entry)?;
                    let _ = p.detach(link);
                }
                return Err(e);
            }
        }
    }
    for (name, link) in [(entry, attached_entry), (exit, attached_exit)] {
        if let (Some(name), Some(link)) = (name, link) {
            let target = Target::KProbe {
                symbol: symbol.to_string(),
            };
            links.add(name, target, LinkId::KProbe(link));
        }
    }
    Ok(())
}

/// Which function-probe mechanisms to try, best first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MechanismChoice {
    /// Skip fentry/fexit, for this reason (to exercise or compare the kprobe path, or to keep
    /// BPF trampolines away from the lock-timing probes).
    pub skip_fentry: Option<&'static str>,
}

/// Try fentry/fexit then kprobe/kretprobe for one target; the mechanism used, or the
/// rejections of each.
pub fn attach_best(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    choice: MechanismChoice,
    fentry_target: Option<&str>,
    kprobe_symbol: Option<&str>,
    fentry_programs: (Option<&str>, Option<&str>),
    kprobe_programs: (Option<&str>, Option<&str>),
    links: &mut Links,
) -> (Option<Mechanism>, Vec<Rejection>) {
    let mut rejected = Vec::new();
    if let Some(why) = choice.skip_fentry {
        rejected.push(Rejection::new(
            Mechanism::Fentry,
            format!("skipped ({why})"),
        ));
    } else {
        let tried = match (btf, fentry_target) {
            (None, _) => Err(Refusal::from("no kernel BTF")),
            (_, None) => Err(Refusal::from(
                "function not in kernel BTF (inlined, static clone or absent)",
            )),
            (Some(btf), Some(t)) => {
                fentry_pair(ebpf, btf, t, fentry_programs.0, fentry_programs.1, links)
            }
        };
        match tried {
            Ok(()) => return (Some(Mechanism::Fentry), rejected),
            Err(refusal) => rejected.push(refusal.into_rejection(Mechanism::Fentry)),
        }
    }
    let tried = match kprobe_symbol {
        None => Err(Refusal::from(
            "function not in kallsyms (inlined or absent in this kernel)",
        )),
        Some(sym) => kprobe_pair(ebpf, sym, kprobe_programs.0, kprobe_programs.1, links),
    };
    match tried {
        Ok(()) => (Some(Mechanism::Kprobe), rejected),
        Err(refusal) => {
            rejected.push(refusal.into_rejection(Mechanism::Kprobe));
            (None, rejected)
        }
    }
}
