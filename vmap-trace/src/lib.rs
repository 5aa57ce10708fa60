//! vmap-trace: an eBPF lock-contention profiler for the Linux vmalloc / vmap-area allocator.
//!
//! The pipeline, one module per stage (see docs/architecture.md):
//! kernel probes (`vmap-trace-ebpf`) -> `probe` (load/attach) -> `collect` (map reading)
//! -> `profile` (pure, serializable) -> views (`report`) and the `model`.
//! `session` ties probe and collect together; `commands` holds each CLI command.

pub mod collect;
pub mod commands;
pub mod daemon;
pub mod escape;
pub mod flamegraph;
pub mod input;
pub mod kernel;
pub mod model;
pub mod output;
pub mod probe;
pub mod profile;
pub mod report;
pub mod session;
pub mod stdout;
pub mod stress;
pub mod top;
