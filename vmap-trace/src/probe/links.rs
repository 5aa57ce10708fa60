//! Every link [`super::attach_all`] made, kept so that the programs can be detached and
//! attached again with everything else intact (loaded programs, maps and their contents).
//!
//! The overhead bench's toggled A/B (`cargo xtask bench toggle`) needs this: it compares
//! windows of a fraction of a second with and without tracing inside one run, which cancels
//! the machine's drift that separate runs suffer from. Reloading instead would run the
//! verifier at every switch.

use anyhow::{Context, Result};
use aya::programs::{
    fentry::FEntryLinkId, fexit::FExitLinkId, kprobe::KProbeLinkId, tp_btf::BtfTracePointLinkId,
    trace_point::TracePointLinkId, BtfTracePoint, FEntry, FExit, KProbe, TracePoint,
};
use aya::Ebpf;

/// How a program was attached: what attaching it again needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    TpBtf,
    Tracepoint {
        category: String,
        event: String,
    },
    FEntry,
    FExit,
    /// kprobe or kretprobe (the program knows which).
    KProbe {
        symbol: String,
    },
}

/// aya's link ids have one type per program type.
#[derive(Debug)]
pub enum LinkId {
    TpBtf(BtfTracePointLinkId),
    Tracepoint(TracePointLinkId),
    FEntry(FEntryLinkId),
    FExit(FExitLinkId),
    KProbe(KProbeLinkId),
}

#[derive(Debug)]
struct Attachment {
    program: String,
    target: Target,
    /// None while detached.
    link: Option<LinkId>,
}

/// The links of one loaded object.
#[derive(Debug, Default)]
pub struct Links {
    attached: Vec<Attachment>,
}

/// [`super::attach::program`] with anyhow's error.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    super::attach::program(ebpf, name).map_err(anyhow::Error::msg)
}

impl Links {
    /// Note a link just made.
    pub fn add(&mut self, program: &str, target: Target, link: LinkId) {
        self.attached.push(Attachment {
            program: program.to_string(),
            target,
            link: Some(link),
        });
    }

    /// Links currently attached.
    pub fn attached(&self) -> usize {
        self.attached.iter().filter(|a| a.link.is_some()).count()
    }

    /// How many links of each kind, e.g. "tp_btf 5, fentry 6, fexit 6" (kprobe counts
    /// kretprobes too).
    pub fn summary(&self) -> String {
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for a in &self.attached {
            let kind = match a.target {
                Target::TpBtf => "tp_btf",
                Target::Tracepoint { .. } => "tracepoint",
                Target::FEntry => "fentry",
                Target::FExit => "fexit",
                Target::KProbe { .. } => "kprobe",
            };
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        parts.join(", ")
    }

    /// Links made by `add`, attached or not.
    pub fn len(&self) -> usize {
        self.attached.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attached.is_empty()
    }

    /// Detach and forget the links whose program `keep` refuses (the bench's per-hook variants).
    pub fn retain(&mut self, ebpf: &mut Ebpf, keep: impl Fn(&str) -> bool) -> Result<()> {
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut self.attached)
            .into_iter()
            .partition(|a| keep(&a.program));
        self.attached = dropped;
        let detached = self.detach_all(ebpf);
        self.attached = kept;
        detached
    }

    /// Detach every program (the kernel stops running them at once); maps keep their contents.
    pub fn detach_all(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        // Reverse order: the exits go before their entries, as attach_all added them after.
        for a in self.attached.iter_mut().rev() {
            let Some(link) = a.link.take() else { continue };
            let name = a.program.as_str();
            let detached = match link {
                LinkId::TpBtf(id) => program::<BtfTracePoint>(ebpf, name)?.detach(id),
                LinkId::Tracepoint(id) => program::<TracePoint>(ebpf, name)?.detach(id),
                LinkId::FEntry(id) => program::<FEntry>(ebpf, name)?.detach(id),
                LinkId::FExit(id) => program::<FExit>(ebpf, name)?.detach(id),
                LinkId::KProbe(id) => program::<KProbe>(ebpf, name)?.detach(id),
            };
            detached.with_context(|| format!("detaching {name}"))?;
        }
        Ok(())
    }

    /// Attach again every program [`Links::detach_all`] detached, in the original order (so
    /// `contention_end` is back before `contention_begin`, as [`super::Hook::ATTACH_ORDER`]
    /// wants).
    pub fn attach_again(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        for a in self.attached.iter_mut().filter(|a| a.link.is_none()) {
            let name = a.program.as_str();
            let link = match &a.target {
                Target::TpBtf => program::<BtfTracePoint>(ebpf, name)?
                    .attach()
                    .map(LinkId::TpBtf),
                Target::Tracepoint { category, event } => program::<TracePoint>(ebpf, name)?
                    .attach(category, event)
                    .map(LinkId::Tracepoint),
                Target::FEntry => program::<FEntry>(ebpf, name)?.attach().map(LinkId::FEntry),
                Target::FExit => program::<FExit>(ebpf, name)?.attach().map(LinkId::FExit),
                Target::KProbe { symbol } => program::<KProbe>(ebpf, name)?
                    .attach(symbol, 0)
                    .map(LinkId::KProbe),
            };
            a.link = Some(link.with_context(|| format!("attaching {name} again"))?);
        }
        Ok(())
    }
}
