//! One module per CLI command: its arguments and its orchestration. The work itself lives in
//! the pipeline modules (probe, collect, profile, report).
pub mod doctor;
pub mod record;
pub mod report;
