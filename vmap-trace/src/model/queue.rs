//! The engine's pending events: at most one per actor, ordered by (time, actor).
//!
//! An actor is either running, waiting for one event, or not scheduled at all (asleep, parked,
//! finished), so the queue is a tournament tree over actor slots rather than a binary heap: each
//! leaf holds its actor's event key (or `EMPTY`), each inner node the minimum of its children.
//! Changing a leaf rewrites its path to the root with branch-free minimums; a binary heap's
//! sift-down instead makes a data-dependent, mostly mispredicted branch per level, and it was
//! the largest single cost of a simulation. The order is the same: the smallest key first, and
//! keys are unique because they contain the actor.
//!
//! Nearly every event ends with its actor scheduling its next one, so taking an event does not
//! clear the actor's leaf: [`EventQueue::start`] marks the actor as running and its next
//! [`EventQueue::push`] (or [`EventQueue::finish`] when it has none) rewrites the path once.
//! Meanwhile the running actor's old key, the smallest of all, is stale in the inner nodes of
//! its own path only; every other subtree is exact, and rewriting the path makes the whole tree
//! exact again. Whether the running actor's next event is the earliest of all (then the engine
//! runs it at once) is [`EventQueue::push`]'s answer, from the root it has just recomputed.

/// Key of an empty slot; larger than every event key.
const EMPTY: u64 = u64::MAX;

#[derive(Debug)]
pub struct EventQueue {
    /// `tree[1]` is the root, the children of `i` are `2i` and `2i + 1`, the leaf of actor `a`
    /// is `leaves + a`. `tree[0]` is unused.
    tree: Vec<u64>,
    leaves: usize,
    /// Leaf of the actor whose event is being run; its path is not up to date.
    running: Option<usize>,
}

impl EventQueue {
    pub fn new() -> Self {
        EventQueue::with_leaves(64)
    }

    fn with_leaves(leaves: usize) -> Self {
        EventQueue {
            tree: vec![EMPTY; 2 * leaves],
            leaves,
            running: None,
        }
    }

    /// The smallest key, if any; only between events (no actor running).
    pub fn first(&self) -> Option<u64> {
        debug_assert!(self.running.is_none());
        let root = self.tree[1];
        (root != EMPTY).then_some(root)
    }

    /// Run the event of `actor`, which must be the smallest ([`EventQueue::first`]): until its
    /// next [`EventQueue::push`] or [`EventQueue::finish`], it has no pending event.
    pub fn start(&mut self, actor: u32) {
        debug_assert!(self.running.is_none());
        self.running = Some(self.leaves + actor as usize);
    }

    /// Schedule `actor`'s event with `key` (the actor must have none pending). Returns whether
    /// it is now the earliest event, when `actor` is the running one (else false).
    pub fn push(&mut self, actor: u32, key: u64) -> bool {
        debug_assert!(key != EMPTY);
        let actor = actor as usize;
        if actor >= self.leaves {
            self.grow(actor + 1);
        }
        let leaf = self.leaves + actor;
        if self.running == Some(leaf) {
            self.running = None;
            // The whole tree is exact again.
            self.set(leaf, key) == key
        } else {
            debug_assert_eq!(self.tree[leaf], EMPTY, "actor {actor} already has an event");
            self.set(leaf, key);
            false
        }
    }

    /// The running actor's event is over; clear its leaf unless it scheduled a new event.
    pub fn finish(&mut self) {
        if let Some(leaf) = self.running.take() {
            self.set(leaf, EMPTY);
        }
    }

    /// Set a leaf and recompute its path to the root; returns the root.
    fn set(&mut self, leaf: usize, key: u64) -> u64 {
        // The length is a power of two: masking the indexes proves them in bounds.
        let mask = self.tree.len() - 1;
        let tree = &mut self.tree[..=mask];
        tree[leaf & mask] = key;
        // The path's new minimum stays in a register: each level only reads the sibling.
        let mut min = key;
        let mut i = leaf;
        while i > 1 {
            min = min.min(tree[(i ^ 1) & mask]);
            i >>= 1;
            tree[i & mask] = min;
        }
        min
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, actors: usize) {
        let mut bigger = EventQueue::with_leaves(actors.next_power_of_two());
        for (actor, &key) in self.tree[self.leaves..].iter().enumerate() {
            if key != EMPTY && self.running != Some(self.leaves + actor) {
                bigger.set(bigger.leaves + actor, key);
            }
        }
        bigger.running = self.running.map(|leaf| leaf - self.leaves + bigger.leaves);
        if let Some(leaf) = bigger.running {
            // Keep the running actor's stale key in its leaf so a later finish() clears it.
            bigger.tree[leaf] = self.tree[self.running.expect("running")];
        }
        *self = bigger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue against a binary heap: actors start their events in key order, and each either
    /// schedules its next event, or not, or schedules other actors meanwhile.
    #[test]
    fn runs_events_in_key_order_like_a_heap() {
        use rand::{Rng, SeedableRng};
        use std::cmp::Reverse;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut queue = EventQueue::new();
        let mut heap = std::collections::BinaryHeap::new();
        let mut pending = vec![false; 300];
        let actor_of = |k: u64| (k & 0xffff) as u32;
        let key = |t: u64, a: u32| (t << 16) | u64::from(a);
        let mut now = 0;
        for a in 0..40u32 {
            let k = key(rng.random_range(0..100), a);
            queue.push(a, k);
            heap.push(Reverse(k));
            pending[a as usize] = true;
        }
        for _ in 0..20_000 {
            let got = queue.first();
            assert_eq!(got, heap.pop().map(|r| r.0));
            let Some(k) = got else { break };
            let a = actor_of(k);
            now = now.max(k >> 16);
            queue.start(a);
            pending[a as usize] = false;
            // Wake a few others (actors up to 299: the tree grows).
            for _ in 0..rng.random_range(0..3) {
                let b: u32 = rng.random_range(0..300);
                if b != a && !pending[b as usize] {
                    let k = key(now + rng.random_range(0..50), b);
                    queue.push(b, k);
                    heap.push(Reverse(k));
                    pending[b as usize] = true;
                }
            }
            if rng.random_bool(0.8) {
                let k = key(now + rng.random_range(0..50), a);
                let first = queue.push(a, k);
                assert_eq!(first, heap.peek().is_none_or(|r| r.0 > k));
                heap.push(Reverse(k));
                pending[a as usize] = true;
                if first && rng.random_bool(0.5) {
                    // The engine runs it at once.
                    assert_eq!(heap.pop().map(|r| r.0), Some(k));
                    pending[a as usize] = false;
                    queue.start(a);
                }
            }
            queue.finish();
        }
    }
}
