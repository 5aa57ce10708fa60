//! Which contended stacks go into a flamegraph: by lock, by lock class, by task.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::str::FromStr;

use crate::escape;
use crate::profile::{lock_kind, LockClass, Profile, StackWait};
use crate::report::format_ns;

use super::error::FlamegraphError;

/// How many locks an "unknown lock" error lists before summarizing the rest.
const LOCKS_LISTED: usize = 15;

/// `--class`: vmap paths or everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassFilter {
    /// Stacks through a vmap allocator function (alloc_vmap_area, vfree, ...).
    Vmap,
    /// Every other contended stack.
    Other,
}

impl ClassFilter {
    pub fn class(self) -> LockClass {
        match self {
            ClassFilter::Vmap => LockClass::Vmap,
            ClassFilter::Other => LockClass::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ClassFilter::Vmap => "vmap",
            ClassFilter::Other => "other",
        }
    }
}

/// `--lock`: a lock by name (as the report prints it) or by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockSelector {
    Address(u64),
    Name(String),
}

impl FromStr for LockSelector {
    type Err = FlamegraphError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            return u64::from_str_radix(hex, 16)
                .map(LockSelector::Address)
                .map_err(|_| FlamegraphError::BadLockSelector(s.to_string()));
        }
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(FlamegraphError::BadLockSelector(s.to_string()));
        }
        Ok(LockSelector::Name(s.to_string()))
    }
}

impl std::fmt::Display for LockSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockSelector::Address(a) => write!(f, "{a:#x}"),
            LockSelector::Name(n) => f.write_str(n),
        }
    }
}

/// The user's filters, before they are checked against a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackFilter {
    /// Keep stacks waiting on any of these locks (all locks when empty).
    pub locks: Vec<LockSelector>,
    pub class: Option<ClassFilter>,
    /// A process id or command name. Needs a recording keyed by task (`record --per-task` or
    /// `--user-stacks`); other recordings are refused with the task's totals.
    pub task: Option<String>,
}

impl StackFilter {
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.class.is_none() && self.task.is_none()
    }

    /// `lock=vmap_area_lock, class=vmap`, for titles and messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.locks.is_empty() {
            let locks: Vec<String> = self.locks.iter().map(|l| l.to_string()).collect();
            parts.push(format!("lock={}", locks.join("|")));
        }
        if let Some(c) = self.class {
            parts.push(format!("class={}", c.label()));
        }
        if let Some(t) = &self.task {
            parts.push(format!("task={t}"));
        }
        parts.join(", ")
    }

    /// Check the filters against a recording: every lock and task must exist in it, and a
    /// task filter needs per-task stacks.
    pub fn resolve(&self, profile: &Profile) -> Result<ResolvedFilter, FlamegraphError> {
        let task = match &self.task {
            None => None,
            Some(task) if !profile.meta.stack_keys.per_task => {
                return Err(FlamegraphError::NoPerTaskStacks {
                    task: escape::field(task).into_owned(),
                    detail: describe_task(profile, task),
                });
            }
            Some(task) => {
                let selector = TaskSelector::parse(task);
                if !profile.stacks.iter().any(|s| selector.matches(s)) {
                    return Err(FlamegraphError::UnknownTask {
                        task: escape::field(task).into_owned(),
                        known: busiest_processes(profile),
                    });
                }
                Some(selector)
            }
        };
        let lock_addrs = if self.locks.is_empty() {
            None
        } else {
            let mut addrs = BTreeSet::new();
            for selector in &self.locks {
                let found = lock_addresses(profile, selector);
                if found.is_empty() {
                    return Err(FlamegraphError::UnknownLock {
                        requested: selector.to_string(),
                        available: list_locks(profile),
                    });
                }
                addrs.extend(found);
            }
            Some(addrs)
        };
        Ok(ResolvedFilter {
            lock_addrs,
            class: self.class.map(ClassFilter::class),
            task,
        })
    }
}

/// `--task`: a number is a process id (tgid), anything else a command name (`comm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskSelector {
    Pid(u32),
    Comm(String),
}

impl TaskSelector {
    pub fn parse(text: &str) -> Self {
        match text.parse() {
            Ok(pid) => TaskSelector::Pid(pid),
            Err(_) => TaskSelector::Comm(text.to_string()),
        }
    }

    pub fn matches(&self, stack: &StackWait) -> bool {
        match (self, &stack.task) {
            (TaskSelector::Pid(p), Some(t)) => t.tgid == *p,
            // The name as recorded, or as the views show it (escaped).
            (TaskSelector::Comm(c), Some(t)) => t.comm == *c || escape::field(&t.comm) == *c,
            (_, None) => false,
        }
    }
}

/// `comm (pid): wait, ...` of the processes with the most wait, for error messages.
fn busiest_processes(profile: &Profile) -> String {
    let mut by_process: BTreeMap<(u32, &str), u64> = BTreeMap::new();
    for s in &profile.stacks {
        if let Some(t) = &s.task {
            *by_process.entry((t.tgid, t.comm.as_str())).or_default() += s.total_ns;
        }
    }
    let mut v: Vec<_> = by_process.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1));
    if v.is_empty() {
        return "none (no contended stacks)".into();
    }
    v.iter()
        .take(10)
        .map(|((pid, comm), ns)| {
            format!("{} ({pid}): {}", escape::field(comm), format_ns(*ns as f64))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Filters checked against one recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFilter {
    lock_addrs: Option<BTreeSet<u64>>,
    class: Option<LockClass>,
    task: Option<TaskSelector>,
}

impl ResolvedFilter {
    pub fn matches(&self, stack: &StackWait) -> bool {
        self.lock_addrs
            .as_ref()
            .is_none_or(|a| a.contains(&stack.lock_addr))
            && self.class.is_none_or(|c| c == stack.attribution.class)
            && self.task.as_ref().is_none_or(|t| t.matches(stack))
    }
}

/// Addresses a selector means in this recording: a name may cover several locks (one per
/// lock kind or, once names are derived, per vmap node); an address must have been seen.
fn lock_addresses(profile: &Profile, selector: &LockSelector) -> BTreeSet<u64> {
    match selector {
        LockSelector::Name(name) => profile
            .locks
            .iter()
            .filter(|l| l.name.as_deref() == Some(name.as_str()))
            .map(|l| l.lock_addr)
            .collect(),
        LockSelector::Address(addr) => {
            let seen = profile.locks.iter().any(|l| l.lock_addr == *addr)
                || profile.stacks.iter().any(|s| s.lock_addr == *addr);
            if seen {
                BTreeSet::from([*addr])
            } else {
                BTreeSet::new()
            }
        }
    }
}

/// The locks a user can ask for, most wait first.
fn list_locks(profile: &Profile) -> String {
    if profile.locks.is_empty() {
        return "this recording has no contended locks at all".into();
    }
    let mut locks: Vec<_> = profile.locks.iter().collect();
    locks.sort_by_key(|l| std::cmp::Reverse(l.wait.total_ns));
    let mut out =
        String::from("locks in this recording, most wait first (give a name or an address):");
    for l in locks.iter().take(LOCKS_LISTED) {
        let _ = write!(
            out,
            "\n  {:<40} {:#x}  {}, {} waits, {}",
            escape::field(l.name.as_deref().unwrap_or("(unnamed)")),
            l.lock_addr,
            lock_kind(l.flags),
            l.wait.count,
            format_ns(l.wait.total_ns as f64)
        );
    }
    if locks.len() > LOCKS_LISTED {
        let _ = write!(
            out,
            "\n  ... and {} more (`vmap-trace report --format csv --table locks` lists all)",
            locks.len() - LOCKS_LISTED
        );
    }
    if !profile.meta.lock_names_available {
        out.push_str("\n  (this kernel lists no lock variable names, so most locks go by address)");
    }
    out
}

fn describe_task(profile: &Profile, task: &str) -> String {
    let matches: Vec<_> = profile
        .tasks
        .iter()
        .filter(|t| {
            t.comm == task
                || task
                    .parse::<u32>()
                    .is_ok_and(|id| id == t.tid || id == t.tgid)
        })
        .collect();
    if matches.is_empty() {
        let known: Vec<String> = profile
            .tasks
            .iter()
            .take(10)
            .map(|t| format!("{} ({})", escape::field(&t.comm), t.tid))
            .collect();
        return if known.is_empty() {
            "no task totals were recorded either".into()
        } else {
            format!(
                "no recorded task matches it either; tasks with the most wait: {}",
                known.join(", ")
            )
        };
    }
    let totals: Vec<String> = matches
        .iter()
        .map(|t| {
            format!(
                "{} (tid {}): {} waits, {}",
                escape::field(&t.comm),
                t.tid,
                t.count,
                format_ns(t.total_ns as f64)
            )
        })
        .collect();
    format!(
        "its totals: {} (see `vmap-trace report`)",
        totals.join("; ")
    )
}

/// A lock's display label in stack frames and messages.
pub(crate) fn lock_frame_label(profile: &Profile, addr: u64, flags: u32) -> String {
    match profile.lock_name(addr) {
        Some(name) => format!("[{} {name}]", lock_kind(flags)),
        None => format!("[{} {addr:#x}]", lock_kind(flags)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    #[test]
    fn selectors_parse_names_and_addresses() {
        assert_eq!(
            "vmap_area_lock".parse::<LockSelector>().unwrap(),
            LockSelector::Name("vmap_area_lock".into())
        );
        assert_eq!(
            "0x2000".parse::<LockSelector>().unwrap(),
            LockSelector::Address(0x2000)
        );
        assert!(matches!(
            "0xzz".parse::<LockSelector>(),
            Err(FlamegraphError::BadLockSelector(_))
        ));
        assert!(matches!(
            "two words".parse::<LockSelector>(),
            Err(FlamegraphError::BadLockSelector(_))
        ));
    }

    #[test]
    fn lock_and_class_filters_select_stacks() {
        let p = sample_profile();
        let by_name = StackFilter {
            locks: vec![LockSelector::Name("vmap_area_lock".into())],
            ..Default::default()
        };
        let r = by_name.resolve(&p).unwrap();
        assert!(r.matches(&p.stacks[0]));
        assert!(!r.matches(&p.stacks[1]));

        let by_addr = StackFilter {
            locks: vec![LockSelector::Address(0x2000)],
            ..Default::default()
        };
        let r = by_addr.resolve(&p).unwrap();
        assert!(!r.matches(&p.stacks[0]) && r.matches(&p.stacks[1]));

        let other = StackFilter {
            class: Some(ClassFilter::Other),
            ..Default::default()
        }
        .resolve(&p)
        .unwrap();
        assert!(!other.matches(&p.stacks[0]) && other.matches(&p.stacks[1]));
        let vmap = StackFilter {
            class: Some(ClassFilter::Vmap),
            ..Default::default()
        }
        .resolve(&p)
        .unwrap();
        assert!(vmap.matches(&p.stacks[0]) && !vmap.matches(&p.stacks[1]));

        // Both filters: the vmap lock is not in class "other".
        let both = StackFilter {
            locks: vec![LockSelector::Address(0x1000)],
            class: Some(ClassFilter::Other),
            task: None,
        };
        let r = both.resolve(&p).unwrap();
        assert!(!r.matches(&p.stacks[0]) && !r.matches(&p.stacks[1]));
        assert_eq!(both.describe(), "lock=0x1000, class=other");
    }

    #[test]
    fn unknown_lock_lists_the_locks_that_exist() {
        let p = sample_profile();
        let f = StackFilter {
            locks: vec![LockSelector::Name("purge_vmap_area_lock".into())],
            ..Default::default()
        };
        let msg = f.resolve(&p).unwrap_err().to_string();
        assert!(msg.contains("`purge_vmap_area_lock`"), "{msg}");
        // Most wait first: the unnamed mutex (400 us) before vmap_area_lock (50 us).
        let mutex = msg.find("0x2000  mutex, 4 waits, 400.00 us").expect(&msg);
        let spin = msg
            .find("vmap_area_lock                           0x1000  spinlock")
            .expect(&msg);
        assert!(mutex < spin, "{msg}");
        let f = StackFilter {
            locks: vec![LockSelector::Address(0xdead)],
            ..Default::default()
        };
        assert!(matches!(
            f.resolve(&p),
            Err(FlamegraphError::UnknownLock { .. })
        ));
    }

    #[test]
    fn messages_show_recorded_names_escaped_and_match_them_as_shown() {
        use crate::escape::tests::{assert_inert, HOSTILE, HOSTILE_SHOWN};
        let p = crate::profile::tests::hostile_profile();
        let unknown = |f: StackFilter| f.resolve(&p).unwrap_err().to_string();
        let locks = unknown(StackFilter {
            locks: vec![LockSelector::Name("nosuch".into())],
            ..Default::default()
        });
        assert_inert(&locks, false);
        assert!(
            locks.contains(&format!("\n  mutex{HOSTILE_SHOWN} 0x2000")),
            "{locks}"
        );
        let tasks = unknown(StackFilter {
            task: Some("nosuch".into()),
            ..Default::default()
        });
        assert_inert(&tasks, false);
        assert!(
            tasks.contains(&format!("{HOSTILE_SHOWN} (42): 450.00 us")),
            "{tasks}"
        );
        let mut totals_only = p.clone();
        totals_only.meta.stack_keys.per_task = false;
        let totals = StackFilter {
            task: Some(HOSTILE.into()),
            ..Default::default()
        }
        .resolve(&totals_only)
        .unwrap_err()
        .to_string();
        assert_inert(&totals, false);
        assert!(
            totals.contains(&format!("{HOSTILE_SHOWN} (tid 42): 14 waits")),
            "{totals}"
        );
        // A task is found by the name the views show as well as by the recorded one.
        for name in [HOSTILE, HOSTILE_SHOWN] {
            let f = StackFilter {
                task: Some(name.into()),
                ..Default::default()
            };
            assert!(f.resolve(&p).unwrap().matches(&p.stacks[0]), "{name:?}");
        }
    }

    #[test]
    fn task_filter_is_refused_with_the_tasks_totals() {
        let p = sample_profile();
        let f = StackFilter {
            task: Some("sshd".into()),
            ..Default::default()
        };
        let msg = f.resolve(&p).unwrap_err().to_string();
        assert!(
            msg.contains("per-task totals, not per-task stacks"),
            "{msg}"
        );
        assert!(msg.contains("sshd (tid 42): 14 waits, 450.00 us"), "{msg}");
        let f = StackFilter {
            task: Some("nginx".into()),
            ..Default::default()
        };
        let msg = f.resolve(&p).unwrap_err().to_string();
        assert!(
            msg.contains("no recorded task matches") && msg.contains("sshd (42)"),
            "{msg}"
        );
    }
}
