//! What a flamegraph's widths measure.
use crate::profile::StackWait;

use super::units::Quantity;

/// The weight of each stack in a flamegraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Weight {
    /// Total time spent waiting for the lock, in nanoseconds (the default: what costs CPU or
    /// latency).
    #[default]
    Wait,
    /// Number of contended waits (how often, regardless of how long).
    Count,
    /// Time the lock was held by the waiter once it got it, in nanoseconds. Needs hold times
    /// per stack, which no recording has yet (`record --lock-timing` keeps them per lock).
    Hold,
}

impl Weight {
    /// The name used on the command line and in folded-file descriptions.
    pub fn label(self) -> &'static str {
        match self {
            Weight::Wait => "wait",
            Weight::Count => "count",
            Weight::Hold => "hold",
        }
    }

    /// What the widths mean, for titles.
    pub fn describe(self) -> &'static str {
        match self {
            Weight::Wait => "lock wait time",
            Weight::Count => "contended waits",
            Weight::Hold => "lock hold time",
        }
    }

    pub fn quantity(self) -> Quantity {
        match self {
            Weight::Wait | Weight::Hold => Quantity::Nanoseconds,
            Weight::Count => Quantity::Events,
        }
    }

    /// This stack's weight, or None when the recording does not carry the quantity.
    ///
    /// Hold times per stack are not recorded: `StackWait` has no hold field (lock:contention_*
    /// see when a wait ends, not when the lock is released), and `record --lock-timing` keeps
    /// holds per vmap lock only (`Profile::lock_timing`). When stacks gain a hold field, this
    /// arm reads it and `Hold` starts working.
    pub fn of(self, stack: &StackWait) -> Option<u64> {
        match self {
            Weight::Wait => Some(stack.total_ns),
            Weight::Count => Some(stack.count),
            Weight::Hold => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::tests::sample_profile;

    #[test]
    fn weights_read_the_right_field() {
        let p = sample_profile();
        let s = &p.stacks[0];
        assert_eq!(Weight::Wait.of(s), Some(50_000));
        assert_eq!(Weight::Count.of(s), Some(10));
        assert_eq!(
            Weight::Hold.of(s),
            None,
            "format-1 recordings carry no hold times"
        );
        assert_eq!(Weight::Wait.quantity(), Quantity::Nanoseconds);
        assert_eq!(Weight::Count.quantity(), Quantity::Events);
    }
}
