//! Which locks get their own Prometheus series, with bounded cardinality and counters that
//! never go backwards.
//!
//! The kernel keys waits by lock address (up to `MAX_LOCKS` keys): per-object locks (a tty's
//! mutex, an inode's rwsem) would give unbounded, meaningless address labels. So:
//!
//! * Each lock key gets an address-free **identity** `(class, lock, kind)` once its first stack
//!   is known: `lock` is the kernel symbol when kallsyms names it (`vmap_area_lock`), else
//!   `vmap:<innermost vmap function>` for locks taken on vmap paths (node-sharded kernels' per-
//!   node locks), else `caller:<function that took it>`. Many keys may share one identity
//!   (every tty's mutex taken in `tty_lock` is `caller:tty_lock`). Identities are sticky:
//!   relabelling a key later would move its counts between series.
//! * At most `top_n` identities have their own series, chosen by cumulative wait; everything
//!   else (and keys whose stack is not known yet) is summed into one `(other)` series.
//!   A challenger replaces the smallest series only when it has waited at least
//!   [`HYSTERESIS`] times as long, so the set does not flap.
//! * Monotonic accounting: when a key moves from `(other)` into its own series, the part of
//!   it `(other)` already showed stays frozen in `(other)` and the own series counts from
//!   there; when a series is demoted, `(other)` absorbs all of it. Every series is then a
//!   non-decreasing cumulative count (a demoted-then-promoted series restarts, which
//!   Prometheus treats as a counter reset), and all series always add up to the kernel total.
//! * Keys that leave the kernel map (today's maps only add, but an LRU or a periodic clear
//!   would remove them) or restart from zero are retired: what they had shown stays in their
//!   series as a retired sum, and the key's state is dropped. So the state stays bounded by the
//!   kernel map's live keys plus one sum per series, whatever the kernel side does.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::profile::{lock_kind, LockClass, LockWait, Profile, StackWait, WaitHistogram};

/// A challenger must have waited this many times longer than the smallest own series to take
/// its place.
pub const HYSTERESIS: u64 = 2;

/// Label value of the aggregate series.
pub const OTHER_LOCKS: &str = "(other)";
/// `class` and `kind` label value of the aggregate series, which mixes them.
pub const ANY: &str = "(any)";

/// The labels of one lock series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockIdentity {
    /// `vmap` or `other`.
    pub class: &'static str,
    pub lock: String,
    pub kind: &'static str,
}

impl LockIdentity {
    pub fn other_aggregate() -> Self {
        LockIdentity {
            class: ANY,
            lock: OTHER_LOCKS.to_string(),
            kind: ANY,
        }
    }

    /// The identity of a lock key, from its name or its stacks; None while no stack is known.
    pub fn resolve(lock: &LockWait, stacks: &[&StackWait]) -> Option<Self> {
        let heaviest = |class: Option<LockClass>| {
            stacks
                .iter()
                .filter(|s| class.is_none_or(|c| s.attribution.class == c))
                .max_by(|a, b| {
                    a.total_ns
                        .cmp(&b.total_ns)
                        .then_with(|| b.frames.len().cmp(&a.frames.len()))
                })
        };
        let any = heaviest(None)?;
        let vmap = heaviest(Some(LockClass::Vmap));
        let label = match (&lock.name, vmap) {
            (Some(name), _) => name.clone(),
            (None, Some(v)) => format!(
                "vmap:{}",
                v.attribution.vmap_function.as_deref().unwrap_or("unknown")
            ),
            (None, None) => format!(
                "caller:{}",
                any.attribution.call_site.as_deref().unwrap_or("unknown")
            ),
        };
        Some(LockIdentity {
            class: if vmap.is_some() { "vmap" } else { "other" },
            lock: label,
            kind: lock_kind(lock.flags),
        })
    }
}

/// What one refresh exposes: each own series and the aggregate, all cumulative.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LockSeriesView {
    /// Sorted by identity.
    pub series: Vec<(LockIdentity, WaitHistogram)>,
    pub other: WaitHistogram,
}

impl LockSeriesView {
    /// Own series first, then the aggregate.
    pub fn all(&self) -> impl Iterator<Item = (LockIdentity, &WaitHistogram)> {
        self.series
            .iter()
            .map(|(id, w)| (id.clone(), w))
            .chain(std::iter::once((
                LockIdentity::other_aggregate(),
                &self.other,
            )))
    }
}

#[derive(Debug, Default)]
struct KeyState {
    identity: Option<LockIdentity>,
    /// Counted in its identity's own series at the last refresh.
    in_own_series: bool,
    /// The part of this key that `(other)` showed before it moved to its own series.
    frozen_in_other: WaitHistogram,
    /// Value at the last refresh.
    last: WaitHistogram,
}

/// Sticky per-key state across refreshes; bounded by the kernel's lock map size.
#[derive(Debug)]
pub struct LockSeriesTable {
    top_n: usize,
    keys: HashMap<(u64, u32), KeyState>,
    promoted: BTreeSet<LockIdentity>,
    /// What retired keys had shown in an own series, per (promoted) identity.
    retired_own: BTreeMap<LockIdentity, WaitHistogram>,
    /// What retired keys had shown in `(other)`, and demoted series' retired sums.
    retired_other: WaitHistogram,
}

impl LockSeriesTable {
    pub fn new(top_n: usize) -> Self {
        LockSeriesTable {
            top_n,
            keys: HashMap::new(),
            promoted: BTreeSet::new(),
            retired_own: BTreeMap::new(),
            retired_other: WaitHistogram::default(),
        }
    }

    /// Fold in a new cumulative profile and return what to expose.
    pub fn update(&mut self, profile: &Profile) -> LockSeriesView {
        let mut current: HashMap<(u64, u32), WaitHistogram> = profile
            .locks
            .iter()
            .map(|l| ((l.lock_addr, l.flags), l.wait.clone()))
            .collect();
        self.retire_departed(&current);
        self.resolve_identities(profile);
        self.choose_promoted(&current);
        // A demoted series' retired sum joins (other), which therefore only grows.
        let demoted: Vec<LockIdentity> = self
            .retired_own
            .keys()
            .filter(|id| !self.promoted.contains(*id))
            .cloned()
            .collect();
        for id in demoted {
            let sum = self.retired_own.remove(&id).expect("listed");
            self.retired_other.add(&sum);
        }

        let mut own: BTreeMap<LockIdentity, WaitHistogram> = self
            .promoted
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    self.retired_own.get(id).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let mut other = self.retired_other.clone();
        for (key, state) in self.keys.iter_mut() {
            let now = current.remove(key).unwrap_or_default();
            let promoted = state
                .identity
                .as_ref()
                .filter(|id| self.promoted.contains(id));
            match promoted {
                Some(id) => {
                    if !state.in_own_series {
                        // Moving out of (other): what (other) showed last time stays there.
                        state.frozen_in_other = state.last.clone();
                        state.in_own_series = true;
                    }
                    own.get_mut(id)
                        .expect("promoted identity has a series")
                        .add(&minus(&now, &state.frozen_in_other));
                    other.add(&state.frozen_in_other);
                }
                None => {
                    state.in_own_series = false;
                    state.frozen_in_other = WaitHistogram::default();
                    other.add(&now);
                }
            }
            state.last = now;
        }
        LockSeriesView {
            series: own.into_iter().collect(),
            other,
        }
    }

    /// Drop the keys that left the kernel map or restarted from zero, keeping what they
    /// showed in the series that showed it.
    fn retire_departed(&mut self, current: &HashMap<(u64, u32), WaitHistogram>) {
        let departed: Vec<(u64, u32)> = self
            .keys
            .iter()
            .filter(|(key, state)| {
                current
                    .get(*key)
                    .is_none_or(|now| went_backwards(now, &state.last))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in departed {
            let state = self.keys.remove(&key).expect("listed");
            match state.identity.filter(|_| state.in_own_series) {
                Some(id) => {
                    self.retired_own
                        .entry(id)
                        .or_default()
                        .add(&minus(&state.last, &state.frozen_in_other));
                    self.retired_other.add(&state.frozen_in_other);
                }
                None => self.retired_other.add(&state.last),
            }
        }
    }

    fn resolve_identities(&mut self, profile: &Profile) {
        let unresolved: Vec<&LockWait> = profile
            .locks
            .iter()
            .filter(|l| {
                self.keys
                    .get(&(l.lock_addr, l.flags))
                    .is_none_or(|s| s.identity.is_none())
            })
            .collect();
        if unresolved.is_empty() {
            return;
        }
        let mut stacks_of: HashMap<(u64, u32), Vec<&StackWait>> = HashMap::new();
        for s in &profile.stacks {
            stacks_of.entry((s.lock_addr, s.flags)).or_default().push(s);
        }
        for l in unresolved {
            let identity = LockIdentity::resolve(
                l,
                stacks_of
                    .get(&(l.lock_addr, l.flags))
                    .map_or(&[][..], Vec::as_slice),
            );
            self.keys
                .entry((l.lock_addr, l.flags))
                .or_default()
                .identity = identity;
        }
    }

    /// Fill free slots with the identities that waited most, then let much bigger challengers
    /// replace the smallest.
    fn choose_promoted(&mut self, current: &HashMap<(u64, u32), WaitHistogram>) {
        let mut totals: BTreeMap<&LockIdentity, u64> = self
            .retired_own
            .iter()
            .map(|(id, w)| (id, w.total_ns))
            .collect();
        for (key, state) in &self.keys {
            if let (Some(id), Some(w)) = (&state.identity, current.get(key)) {
                *totals.entry(id).or_default() += w.total_ns;
            }
        }
        let total_of = |id: &LockIdentity| totals.get(id).copied().unwrap_or(0);
        let mut challengers: Vec<(&LockIdentity, u64)> = totals
            .iter()
            .filter(|(id, &t)| t > 0 && !self.promoted.contains(**id))
            .map(|(id, &t)| (*id, t))
            .collect();
        challengers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let mut promoted = self.promoted.clone();
        for (id, total) in challengers {
            if promoted.len() < self.top_n {
                promoted.insert(id.clone());
                continue;
            }
            let Some(smallest) = promoted
                .iter()
                .min_by(|a, b| total_of(a).cmp(&total_of(b)).then_with(|| b.cmp(a)))
                .cloned()
            else {
                break; // top_n == 0: nothing gets its own series
            };
            if total > total_of(&smallest).saturating_mul(HYSTERESIS) {
                promoted.remove(&smallest);
                promoted.insert(id.clone());
            } else {
                break; // challengers are sorted: no later one qualifies either
            }
        }
        self.promoted = promoted;
    }
}

/// True when `now` cannot be a later value of the same cumulative counter as `last`.
fn went_backwards(now: &WaitHistogram, last: &WaitHistogram) -> bool {
    now.count < last.count || now.total_ns < last.total_ns || now.hist.total() < last.hist.total()
}

/// `a - b` for cumulative wait histograms (b is an earlier value of a).
fn minus(a: &WaitHistogram, b: &WaitHistogram) -> WaitHistogram {
    WaitHistogram {
        count: a.count.saturating_sub(b.count),
        total_ns: a.total_ns.saturating_sub(b.total_ns),
        max_ns: a.max_ns,
        hist: a.hist.since(&b.hist),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::{frame, sample_profile};
    use crate::profile::{attribution, Frame, Log2Histogram};

    fn wait(count: u64, bucket: usize) -> WaitHistogram {
        let mut raw = vec![0u64; bucket + 1];
        raw[bucket] = count;
        WaitHistogram {
            count,
            total_ns: count << bucket,
            max_ns: 1 << bucket,
            hist: Log2Histogram::from_buckets(&raw),
        }
    }

    fn lock(addr: u64, name: Option<&str>, w: WaitHistogram) -> LockWait {
        LockWait {
            lock_addr: addr,
            flags: 32,
            name: name.map(str::to_string),
            wait: w,
        }
    }

    fn stack(addr: u64, frames: &[&str], total_ns: u64) -> StackWait {
        let frames: Vec<Frame> = frames.iter().map(|f| frame(f)).collect();
        StackWait {
            task: None,
            user_frames: Vec::new(),
            lock_addr: addr,
            flags: 32,
            attribution: attribution::attribute(&frames),
            frames: frames.into(),
            count: 1,
            total_ns,
            max_ns: total_ns,
        }
    }

    fn profile(locks: Vec<LockWait>, stacks: Vec<StackWait>) -> Profile {
        Profile {
            locks,
            stacks,
            ..sample_profile()
        }
    }

    fn series_total(view: &LockSeriesView) -> u64 {
        view.all().map(|(_, w)| w.hist.total()).sum()
    }

    fn count_of(view: &LockSeriesView, lock: &str) -> Option<u64> {
        view.series
            .iter()
            .find(|(id, _)| id.lock == lock)
            .map(|(_, w)| w.hist.total())
    }

    #[test]
    fn identities_from_name_vmap_function_and_caller() {
        let p = sample_profile();
        let mut table = LockSeriesTable::new(10);
        let view = table.update(&p);
        let ids: Vec<&LockIdentity> = view.series.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&&LockIdentity {
            class: "vmap",
            lock: "vmap_area_lock".into(),
            kind: "spinlock"
        }));
        assert!(ids.contains(&&LockIdentity {
            class: "other",
            lock: "caller:tty_lock".into(),
            kind: "mutex"
        }));

        let unnamed = lock(7, None, wait(1, 12));
        let vmap_stack = stack(
            7,
            &[
                "_raw_spin_lock",
                "alloc_vmap_area",
                "__vmalloc_node_range_noprof",
            ],
            10,
        );
        let id = LockIdentity::resolve(&unnamed, &[&vmap_stack]).unwrap();
        assert_eq!(id.lock, "vmap:alloc_vmap_area");
        assert_eq!(id.class, "vmap");
        assert_eq!(
            LockIdentity::resolve(&unnamed, &[]),
            None,
            "no stack yet: no identity"
        );
    }

    #[test]
    fn per_object_locks_share_one_address_free_series() {
        let locks: Vec<LockWait> = (0..50)
            .map(|i| lock(0x1000 + i, None, wait(2, 14)))
            .collect();
        let stacks: Vec<StackWait> = (0..50)
            .map(|i| {
                stack(
                    0x1000 + i,
                    &["__mutex_lock", "tty_lock", "tty_open"],
                    2 << 14,
                )
            })
            .collect();
        let view = LockSeriesTable::new(5).update(&profile(locks, stacks));
        assert_eq!(view.series.len(), 1);
        assert_eq!(count_of(&view, "caller:tty_lock"), Some(100));
        assert_eq!(view.other.hist.total(), 0);
    }

    #[test]
    fn top_n_bounds_series_and_the_rest_is_other() {
        let n = 3;
        let locks: Vec<LockWait> = (0..10u64)
            .map(|i| lock(i, Some(&format!("lock{i}")), wait(i + 1, 10)))
            .collect();
        let stacks: Vec<StackWait> = (0..10u64)
            .map(|i| stack(i, &["__mutex_lock", "f"], 1))
            .collect();
        let p = profile(locks, stacks);
        let view = LockSeriesTable::new(n).update(&p);
        assert_eq!(view.series.len(), n);
        let names: Vec<&str> = view.series.iter().map(|(id, _)| id.lock.as_str()).collect();
        assert_eq!(
            names,
            ["lock7", "lock8", "lock9"],
            "the three that waited most"
        );
        assert_eq!(view.other.hist.total(), (1..=7).sum::<u64>());
        assert_eq!(
            series_total(&view),
            (1..=10).sum::<u64>(),
            "nothing lost or double counted"
        );
    }

    #[test]
    fn promotion_keeps_every_series_monotonic() {
        let named = |i: u64| format!("lock{i}");
        let mk = |counts: &[u64]| {
            let locks = counts
                .iter()
                .enumerate()
                .map(|(i, &c)| lock(i as u64, Some(&named(i as u64)), wait(c, 10)))
                .collect();
            let stacks = (0..counts.len() as u64)
                .map(|i| stack(i, &["__mutex_lock", "f"], 1))
                .collect();
            profile(locks, stacks)
        };
        let mut table = LockSeriesTable::new(1);
        // lock0 leads; lock1 is in (other).
        let v1 = table.update(&mk(&[10, 5]));
        assert_eq!(count_of(&v1, "lock0"), Some(10));
        assert_eq!(v1.other.hist.total(), 5);
        // lock1 grows past HYSTERESIS x lock0: it takes the slot.
        let v2 = table.update(&mk(&[11, 40]));
        assert_eq!(
            count_of(&v2, "lock1"),
            Some(35),
            "counts from what (other) already showed"
        );
        assert_eq!(count_of(&v2, "lock0"), None);
        assert_eq!(
            v2.other.hist.total(),
            5 + 11,
            "(other) keeps lock1's old 5 and takes all of lock0"
        );
        assert!(v2.other.hist.total() >= v1.other.hist.total());
        assert!(v2.other.total_ns >= v1.other.total_ns);
        assert_eq!(series_total(&v2), 51);
        // Small growth of lock0 does not flip it back.
        let v3 = table.update(&mk(&[30, 41]));
        assert_eq!(count_of(&v3, "lock1"), Some(36));
        assert_eq!(v3.other.hist.total(), 5 + 30);
        assert_eq!(series_total(&v3), 71);
    }

    #[test]
    fn a_key_resolved_late_moves_out_of_other_without_going_back() {
        let mut table = LockSeriesTable::new(4);
        // Seen first without any stack: counted in (other).
        let v1 = table.update(&profile(vec![lock(9, None, wait(6, 12))], vec![]));
        assert!(v1.series.is_empty());
        assert_eq!(v1.other.hist.total(), 6);
        let v2 = table.update(&profile(
            vec![lock(9, None, wait(10, 12))],
            vec![stack(
                9,
                &["_raw_spin_lock", "find_vmap_area", "vfree"],
                10 << 12,
            )],
        ));
        assert_eq!(count_of(&v2, "vmap:find_vmap_area"), Some(4));
        assert_eq!(v2.other.hist.total(), 6);
        assert_eq!(series_total(&v2), 10);
    }

    #[test]
    fn keys_leaving_the_kernel_map_keep_what_they_showed_and_free_their_state() {
        let named = |i: u64, c: u64| lock(i, Some(&format!("lock{i}")), wait(c, 10));
        let stacks = |ids: &[u64]| {
            ids.iter()
                .map(|&i| stack(i, &["__mutex_lock", "f"], 1))
                .collect::<Vec<_>>()
        };
        let mut table = LockSeriesTable::new(1);
        let v1 = table.update(&profile(vec![named(0, 10), named(1, 3)], stacks(&[0, 1])));
        assert_eq!(
            (count_of(&v1, "lock0"), v1.other.hist.total()),
            (Some(10), 3)
        );
        // Both keys evicted (an LRU map, or a periodic clear): nothing goes back.
        let v2 = table.update(&profile(vec![], vec![]));
        assert_eq!(
            (count_of(&v2, "lock0"), v2.other.hist.total()),
            (Some(10), 3)
        );
        assert!(
            table.keys.is_empty(),
            "no state kept for keys the kernel dropped"
        );
        // lock0 comes back from zero; lock1 too, restarted.
        let v3 = table.update(&profile(vec![named(0, 2), named(1, 1)], stacks(&[0, 1])));
        assert_eq!(count_of(&v3, "lock0"), Some(12));
        assert_eq!(v3.other.hist.total(), 4);
        // A key that restarts while present (deleted and re-created between two reads).
        let v4 = table.update(&profile(vec![named(0, 1), named(1, 1)], stacks(&[0, 1])));
        assert_eq!(count_of(&v4, "lock0"), Some(13));
        assert_eq!(
            series_total(&v4),
            10 + 3 + 2 + 1 + 1,
            "every life of every key, once"
        );
        // lock1 overtakes by far: lock0 (with its retired 12) is demoted into (other).
        let v5 = table.update(&profile(vec![named(0, 1), named(1, 100)], stacks(&[0, 1])));
        assert_eq!(count_of(&v5, "lock1"), Some(99));
        assert_eq!(v5.other.hist.total(), 3 + 1 + 13);
        assert!(v5.other.hist.total() >= v4.other.hist.total());
        assert_eq!(series_total(&v5), 116);
    }

    #[test]
    fn top_zero_puts_everything_in_other() {
        let view = LockSeriesTable::new(0).update(&sample_profile());
        assert!(view.series.is_empty());
        assert_eq!(view.other.hist.total(), 14);
    }
}
