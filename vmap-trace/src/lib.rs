//! vmap-trace: an eBPF lock-contention profiler for the Linux vmalloc / vmap-area allocator.
//!
//! The pipeline, one module per stage (see docs/architecture.md):
//! kernel probes (`vmap-trace-ebpf`) -> `probe` (load/attach) -> `collect` (map reading)
//! -> `profile` (pure, serializable) -> views (`report`, ...) and `model`.

pub mod model;
pub mod stress;
