//! One module per CLI command: its arguments and its orchestration. The work itself lives in
//! the pipeline modules (probe, collect, profile, report, flamegraph, top, daemon).
pub mod daemon;
pub mod diff;
pub mod doctor;
pub mod duration;
pub mod flamegraph;
pub mod record;
pub mod report;
pub mod stack_capture;
pub mod top;
