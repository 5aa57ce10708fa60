//! Reference model of the kernel's two vmap allocator designs (`vmap-trace model`).
//!
//! A deterministic discrete-event simulation of N CPUs running a vmalloc workload against:
//! - the legacy design (5.11 .. 6.8, [`legacy`]): global `free_vmap_area_lock`,
//!   `vmap_area_lock`, `purge_vmap_area_lock` and the `vmap_purge_lock` mutex;
//! - the node-sharded design (6.9+, [`node`]): per-node pools, busy and lazy locks, with the
//!   6.9 / 6.10+ / recent-mainline variants.
//!
//! Spinlocks are FIFO with a cache-line hand-off whose cost depends on where the line was
//! ([`lock`], [`env`]); rb-tree walks cost more as trees outgrow the caches; both designs share
//! the free tree, the global counters and lazy purging ([`common`]). The same seed gives the same
//! numbers. docs/model.md documents every parameter, the calibration and the validation.
//!
//! Entry points: [`simulate`] (one design, one configuration), [`compare`] (both designs side
//! by side), [`calibrate_pair`] (derive the cost scale from one measured latency),
//! [`compare_measured`] (a recording's figures against the model), [`validate`] (the published
//! measurements).

pub mod calibrate;
pub mod cli;
mod common;
mod draw;
mod engine;
mod env;
mod legacy;
mod lock;
pub mod measured;
mod node;
pub mod oracle;
mod pack;
pub mod params;
mod queue;
pub mod recording;
pub mod report;
mod run;
#[doc(hidden)]
pub mod skeleton;
pub mod space;
mod stats;
mod steps;
pub mod validate;
pub mod workload;

use serde::{Deserialize, Serialize};

pub use calibrate::{calibrate_pair, CalibrationTarget};
pub use engine::OpKind;
pub use lock::LockKind;
pub use measured::{compare_measured, ComparisonReport, MeasuredWorkload};
pub use params::ModelParams;
pub use run::{compare, simulate, Comparison, GroupSummary, OpSummary, RunConfig, RunResult};
pub use stats::{DesignCounters, LatencySummary, LockSummary};
pub use workload::Workload;

use workload::ThreadGroup;

/// Which allocator design to simulate.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// 5.11 .. 6.8: global locks.
    Legacy,
    /// 6.9+: per-node pools and locks.
    #[value(name = "node")]
    NodeSharded,
}

impl Design {
    pub fn name(self) -> &'static str {
        match self {
            Design::Legacy => "legacy",
            Design::NodeSharded => "node-sharded",
        }
    }

    pub fn other(self) -> Design {
        match self {
            Design::Legacy => Design::NodeSharded,
            Design::NodeSharded => Design::Legacy,
        }
    }
}

/// Node-sharded kernel variants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum KernelVariant {
    /// 6.9: `busy.lock` taken twice per vmalloc; forward lookup scan; pools shorter than four
    /// drained whole at each purge.
    #[value(name = "6.9")]
    #[serde(rename = "6.9")]
    V6_9,
    /// 6.10 .. 6.12: `busy.lock` once per vmalloc ("from twice to once"); otherwise as 6.9.
    #[default]
    #[value(name = "6.10")]
    #[serde(rename = "6.10")]
    V6_10,
    /// Recent mainline: as 6.10, with the lookup scan going backwards and the decay off-by-one
    /// fixed.
    #[value(name = "mainline")]
    #[serde(rename = "mainline")]
    Mainline,
}

impl KernelVariant {
    pub fn name(self) -> &'static str {
        match self {
            KernelVariant::V6_9 => "6.9",
            KernelVariant::V6_10 => "6.10",
            KernelVariant::Mainline => "mainline",
        }
    }

    fn busy_lock_twice(self) -> bool {
        self == KernelVariant::V6_9
    }

    fn reverse_lookup_scan(self) -> bool {
        self == KernelVariant::Mainline
    }

    fn drains_short_pools(self) -> bool {
        self != KernelVariant::Mainline
    }
}

/// Long-lived state created before a run (see [`common::lay_out_setup`]).
pub(crate) struct SetupPlan<'a> {
    /// Each closed-loop thread's CPU and group.
    pub threads: Vec<(u32, &'a ThreadGroup)>,
    pub boot_areas: u32,
    pub boot_area_pages: u32,
}
