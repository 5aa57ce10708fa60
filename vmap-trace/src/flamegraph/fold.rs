//! Folded stacks: `root;...;leaf WEIGHT` lines, the format FlameGraph, inferno and speedscope
//! read.
//!
//! Each contended stack becomes one line, outermost frame first, ending in a frame for the lock
//! itself (`[spinlock vmap_area_lock]`, or its address when the kernel does not name it), so
//! the top of every tower says which lock was waited for.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};

use crate::escape;
use crate::profile::attribution::canonical_function;
use crate::profile::sums::saturating_sum;
use crate::profile::{LockClass, Profile};

use super::error::FlamegraphError;
use super::filter::{lock_frame_label, StackFilter};
use super::weight::Weight;

/// How to fold a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldOptions {
    pub weight: Weight,
    pub filter: StackFilter,
    /// Strip compiler suffixes (`.constprop.0`, `.cold`, `_noprof`) so one function has one name
    /// across kernel builds; diffs between kernels need this.
    pub canonical_names: bool,
    /// User-space stacks under the kernel ones (from `record --user-stacks` recordings; asking
    /// on another recording is an error rather than a silently kernel-only graph).
    pub user_stacks: bool,
}

/// Folded stacks, merged and sorted by stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    stacks: BTreeMap<String, u64>,
}

impl Folded {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `weight` to `stack` (`;`-separated, outermost first).
    pub fn add(&mut self, stack: &str, weight: u64) {
        match self.stacks.get_mut(stack) {
            Some(w) => *w = w.saturating_add(weight),
            None => {
                self.stacks.insert(stack.to_string(), weight);
            }
        }
    }

    pub fn total(&self) -> u64 {
        saturating_sum(self.stacks.values().copied())
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.stacks.iter().map(|(s, &w)| (s.as_str(), w))
    }

    pub fn get(&self, stack: &str) -> Option<u64> {
        self.stacks.get(stack).copied()
    }

    /// The folded text: one `stack weight` line per stack, sorted.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<()> {
        for (stack, weight) in &self.stacks {
            writeln!(w, "{stack} {weight}")?;
        }
        w.flush()
    }

    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("stacks are strings")
    }

    /// Lines as inferno's renderer takes them.
    pub fn lines(&self) -> Vec<String> {
        self.stacks
            .iter()
            .map(|(s, w)| format!("{s} {w}"))
            .collect()
    }

    /// Read folded text (ours, or any tool's): `stack COUNT` per line, the count after the last
    /// space; blank lines and `# ` comments are skipped, as inferno does; repeated stacks merge.
    pub fn parse(text: &str) -> Result<Folded, FlamegraphError> {
        let mut folded = Folded::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with("# ") {
                continue;
            }
            let bad = || FlamegraphError::BadFoldedLine {
                line_no: i + 1,
                line: raw.chars().take(200).collect(),
            };
            let (stack, count) = line.rsplit_once(' ').ok_or_else(bad)?;
            let count: u64 = count.parse().map_err(|_| bad())?;
            let stack = stack.trim_end();
            if stack.is_empty() {
                return Err(bad());
            }
            folded.add(stack, count);
        }
        Ok(folded)
    }
}

/// Fold a recording's contended stacks.
pub fn fold(profile: &Profile, opts: &FoldOptions) -> Result<Folded, FlamegraphError> {
    if opts.user_stacks && !profile.meta.stack_keys.user_stacks {
        return Err(FlamegraphError::NoUserStacks);
    }
    if opts.weight == Weight::Hold && profile.stacks.iter().all(|s| opts.weight.of(s).is_none()) {
        return Err(no_hold_times(profile));
    }
    let filter = opts.filter.resolve(profile)?;
    if profile.stacks.is_empty() {
        return Err(FlamegraphError::NoStacks {
            reason: why_no_stacks(profile),
        });
    }
    // One label per lock, not one lookup through the lock table per stack.
    let lock_labels: HashMap<(u64, u32), String> = profile
        .stacks
        .iter()
        .map(|s| (s.lock_addr, s.flags))
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|(addr, flags)| ((addr, flags), lock_frame_label(profile, addr, flags)))
        .collect();
    let mut folded = Folded::new();
    let mut line = String::new();
    for stack in profile.stacks.iter().filter(|s| filter.matches(s)) {
        let weight = opts.weight.of(stack).unwrap_or(0);
        if weight == 0 {
            continue;
        }
        line.clear();
        if opts.user_stacks {
            // Outermost first: the process, its user frames, then the kernel's.
            if let Some(t) = &stack.task {
                push_frame(&mut line, &format!("{} ({})", t.comm, t.tgid));
            }
            for frame in stack.user_frames.iter().rev() {
                push_frame(&mut line, &frame.label());
            }
            push_frame(&mut line, "[kernel]");
        }
        for frame in stack.frames.iter().rev() {
            match &frame.function {
                Some(f) if opts.canonical_names => push_frame(&mut line, canonical_function(f)),
                Some(f) => push_frame(&mut line, f),
                None => push_frame(&mut line, &frame.label()),
            }
        }
        push_frame(&mut line, &lock_labels[&(stack.lock_addr, stack.flags)]);
        folded.add(&line, weight);
    }
    if folded.is_empty() {
        if opts.filter.is_empty() {
            let reason = format!(
                "all {} of its stacks have zero {}",
                profile.stacks.len(),
                opts.weight.describe()
            );
            return Err(FlamegraphError::NoStacks { reason });
        }
        let hint = format!(
            "the recording has {} contended stacks in all ({} through vmap functions); try without filters",
            profile.stacks.len(),
            profile.stacks.iter().filter(|s| s.attribution.class == LockClass::Vmap).count()
        );
        return Err(FlamegraphError::NothingMatches {
            filters: opts.filter.describe(),
            hint,
        });
    }
    Ok(folded)
}

/// Append one frame, keeping the folded format intact: `;` separates frames and a line ends at
/// a newline, so neither may appear inside a name. Control characters (a line break among
/// them) and bidi overrides are shown escaped, as in every view (`crate::escape`).
fn push_frame(line: &mut String, name: &str) {
    if !line.is_empty() {
        line.push(';');
    }
    let escaped = escape::field(name);
    let name = escaped.trim();
    if name.is_empty() {
        line.push_str("[unknown]");
    } else if name.contains(';') {
        line.extend(name.chars().map(|c| if c == ';' { ':' } else { c }));
    } else {
        line.push_str(name);
    }
}

/// Why a hold-weighted graph cannot be drawn: no hold times at all, or only per lock.
fn no_hold_times(profile: &Profile) -> FlamegraphError {
    let timed: Vec<&str> = profile
        .lock_timing
        .iter()
        .filter(|t| t.hold.count > 0)
        .map(|t| t.name.as_str())
        .collect();
    if timed.is_empty() {
        return FlamegraphError::NoHoldTimes;
    }
    let mut locks = timed.iter().take(4).copied().collect::<Vec<_>>().join(", ");
    if timed.len() > 4 {
        locks.push_str(&format!(" and {} more", timed.len() - 4));
    }
    FlamegraphError::HoldTimesWithoutStacks { locks }
}

fn why_no_stacks(profile: &Profile) -> String {
    let total = profile.total_wait();
    let mut reason = if total.count == 0 {
        "no lock contention was recorded".to_string()
    } else {
        format!(
            "{} contended waits were counted but none with a stack",
            total.count
        )
    };
    let lost = profile.losses.stack_capture_failed + profile.losses.stack_keys_full;
    if lost > 0 {
        reason.push_str(&format!(" ({lost} stacks were lost: stack maps full)"));
    }
    if !profile.meta.stacks_symbolized {
        reason.push_str("; kallsyms addresses were hidden while recording (record as root)");
    }
    reason.push_str("; `vmap-trace report` shows what was recorded");
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flamegraph::filter::{ClassFilter, LockSelector};
    use crate::profile::tests::{frame, sample_profile};
    use crate::profile::{attribution, StackWait};

    #[test]
    fn folds_outermost_first_with_the_lock_on_top() {
        let folded = fold(&sample_profile(), &FoldOptions::default()).unwrap();
        assert_eq!(
            folded.to_text(),
            "__vmalloc_node_range_noprof;alloc_vmap_area;_raw_spin_lock;[spinlock vmap_area_lock] 50000\n\
             tty_open;tty_lock;__mutex_lock.constprop.0;[mutex 0x2000] 400000\n"
        );
        assert_eq!(folded.total(), 450_000, "wait weights are nanoseconds");
    }

    #[test]
    fn count_weight_and_canonical_names() {
        let opts = FoldOptions {
            weight: Weight::Count,
            canonical_names: true,
            ..Default::default()
        };
        let folded = fold(&sample_profile(), &opts).unwrap();
        assert_eq!(
            folded.get(
                "__vmalloc_node_range;alloc_vmap_area;_raw_spin_lock;[spinlock vmap_area_lock]"
            ),
            Some(10)
        );
        assert_eq!(
            folded.get("tty_open;tty_lock;__mutex_lock;[mutex 0x2000]"),
            Some(4)
        );
        assert_eq!(folded.total(), 14);
    }

    #[test]
    fn hold_weight_and_user_stacks_are_refused_clearly() {
        let p = sample_profile();
        let err = fold(
            &p,
            &FoldOptions {
                weight: Weight::Hold,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "this recording has no hold times (needs kprobe/fentry mode); use --weight wait or --weight count");
        // `record --lock-timing` holds are per lock: still no per-stack weight, said precisely.
        let mut timed = p.clone();
        timed.lock_timing.push(crate::profile::VmapLockTiming {
            name: "vmap_node[0].busy.lock".into(),
            lock_addr: 0x3000,
            wait: Default::default(),
            hold: crate::profile::WaitHistogram {
                count: 5,
                total_ns: 500,
                max_ns: 200,
                hist: Default::default(),
            },
        });
        let msg = fold(
            &timed,
            &FoldOptions {
                weight: Weight::Hold,
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(msg.starts_with("this recording has hold times per vmap lock (vmap_node[0].busy.lock), not per stack"), "{msg}");
        let err = fold(
            &p,
            &FoldOptions {
                user_stacks: true,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, FlamegraphError::NoUserStacks));
    }

    #[test]
    fn per_task_recordings_filter_by_task_and_fold_user_frames_first() {
        use crate::profile::{Frame, StackTask};
        let mut p = sample_profile();
        p.meta.stack_keys = crate::profile::StackKeying {
            per_task: true,
            user_stacks: true,
            ..Default::default()
        };
        let user = |name: &str| Frame {
            addr: 0x7f00_0000_1000,
            function: Some(name.into()),
            offset: 0,
        };
        p.stacks[0].task = Some(StackTask {
            tgid: 42,
            comm: "sshd".into(),
        });
        p.stacks[0].user_frames = vec![user("__clone3"), user("main")];
        p.stacks[1].task = Some(StackTask {
            tgid: 7,
            comm: "kworker/0:1".into(),
        });

        let by_pid = FoldOptions {
            filter: StackFilter {
                task: Some("42".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let folded = fold(&p, &by_pid).unwrap();
        assert_eq!(folded.total(), p.stacks[0].total_ns);
        let by_comm = FoldOptions {
            filter: StackFilter {
                task: Some("kworker/0:1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(fold(&p, &by_comm).unwrap().total(), p.stacks[1].total_ns);
        let unknown = FoldOptions {
            filter: StackFilter {
                task: Some("nginx".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let msg = fold(&p, &unknown).unwrap_err().to_string();
        assert!(
            msg.contains("no contended stack")
                && msg.contains("kworker/0:1 (7)")
                && msg.contains("sshd (42)"),
            "{msg}"
        );

        let folded = fold(
            &p,
            &FoldOptions {
                user_stacks: true,
                ..by_pid
            },
        )
        .unwrap();
        let (line, _) = folded.iter().next().unwrap();
        assert!(
            line.starts_with("sshd (42);main;__clone3;[kernel];"),
            "{line}"
        );
        // Kernel-only and per-task-less recordings refuse precisely.
        p.meta.stack_keys = Default::default();
        let msg = fold(&p, &by_comm).unwrap_err().to_string();
        assert!(msg.contains("record with --per-task"), "{msg}");
    }

    #[test]
    fn filters_apply_and_empty_results_explain_themselves() {
        let p = sample_profile();
        let vmap = FoldOptions {
            filter: StackFilter {
                class: Some(ClassFilter::Vmap),
                ..Default::default()
            },
            ..Default::default()
        };
        let folded = fold(&p, &vmap).unwrap();
        assert_eq!(folded.len(), 1);
        assert_eq!(folded.total(), 50_000);

        let none = FoldOptions {
            filter: StackFilter {
                locks: vec![LockSelector::Address(0x2000)],
                class: Some(ClassFilter::Vmap),
                task: None,
            },
            ..Default::default()
        };
        let msg = fold(&p, &none).unwrap_err().to_string();
        assert!(
            msg.starts_with("no contended stacks match lock=0x2000, class=vmap;"),
            "{msg}"
        );
        assert!(
            msg.contains("2 contended stacks in all (1 through vmap functions)"),
            "{msg}"
        );

        let mut zero = p.clone();
        zero.stacks.iter_mut().for_each(|s| s.total_ns = 0);
        let msg = fold(&zero, &FoldOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.ends_with(
                "no contended kernel stacks to draw: all 2 of its stacks have zero lock wait time"
            ),
            "{msg}"
        );

        let mut empty = p.clone();
        empty.stacks.clear();
        let msg = fold(&empty, &FoldOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("14 contended waits were counted but none with a stack"),
            "{msg}"
        );
    }

    #[test]
    fn identical_paths_merge_and_zero_weights_drop() {
        let mut p = sample_profile();
        // Same functions at other offsets, same lock: one folded line.
        let mut twin = p.stacks[0].clone();
        twin.frames = twin
            .frames
            .iter()
            .map(|f| crate::profile::Frame {
                offset: f.offset + 4,
                ..f.clone()
            })
            .collect();
        twin.total_ns = 7;
        p.stacks.push(twin);
        let frames = vec![frame("_raw_spin_lock"), frame("vfree")];
        p.stacks.push(StackWait {
            task: None,
            user_frames: Vec::new(),
            lock_addr: 0x1000,
            flags: 1,
            attribution: attribution::attribute(&frames),
            frames: frames.into(),
            count: 1,
            total_ns: 0,
            max_ns: 0,
        });
        let folded = fold(&p, &FoldOptions::default()).unwrap();
        assert_eq!(folded.len(), 2);
        assert_eq!(folded.get("__vmalloc_node_range_noprof;alloc_vmap_area;_raw_spin_lock;[spinlock vmap_area_lock]"), Some(50_007));
    }

    #[test]
    fn frame_names_cannot_break_the_format() {
        let mut p = sample_profile();
        let mut frames = p.stacks[0].frames.to_vec();
        frames[1].function = Some("odd;name\nhere".into());
        frames[2].function = None;
        frames[2].addr = 0xffffffff81234567;
        p.stacks[0].frames = frames.into();
        let folded = fold(&p, &FoldOptions::default()).unwrap();
        let text = folded.to_text();
        assert!(
            text.contains("0xffffffff81234567;odd:name\\x0ahere;_raw_spin_lock;"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2);
        assert_eq!(Folded::parse(&text).unwrap(), folded);
    }

    #[test]
    fn hostile_task_frame_and_lock_names_are_shown_escaped() {
        use crate::escape::tests::{assert_inert, HOSTILE_SHOWN};
        let opts = FoldOptions {
            user_stacks: true,
            ..Default::default()
        };
        let text = fold(&crate::profile::tests::hostile_profile(), &opts)
            .unwrap()
            .to_text();
        assert_inert(&text, false);
        assert_eq!(text.lines().count(), 2, "{text}");
        // `;` separates frames, so the `;` of an escape sequence reads `:`.
        let shown = HOSTILE_SHOWN.replace(';', ":");
        assert!(
            text.starts_with(&format!(
                "{shown} (42);main{shown};[kernel];entry{shown};__vmalloc_node_range_noprof;"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(";[mutex mutex{shown}] 400000\n")),
            "{text}"
        );
    }

    #[test]
    fn parse_merges_skips_comments_and_rejects_garbage() {
        let f = Folded::parse("# comment\na;b 3\n\na;b 4\nc 1\n").unwrap();
        assert_eq!(f.get("a;b"), Some(7));
        assert_eq!(f.total(), 8);
        let err = Folded::parse("a;b 3\na;b three\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("a;b three"), "{err}");
        assert!(Folded::parse("12\n").is_err(), "a count without a stack");
    }
}
