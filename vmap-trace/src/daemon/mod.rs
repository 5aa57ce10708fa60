//! The production daemon: attach once, let the kernel keep aggregating, and serve Prometheus
//! metrics (OpenMetrics text) over HTTP, optionally writing rotated recordings.
//!
//! One module per concern, data flowing left to right:
//!
//! ```text
//!  sampler (own thread: owns the TraceSession)         server (tokio, hyper + axum router)
//!    snapshot -> lock_series (top-N, monotonic)  ──▶   GET /metrics ─▶ cached exposition text
//!             -> exposition (prometheus-client)       connections: cap, idle/header deadlines
//!             -> recorder (periodic + final recordings, rotation)
//!  run: flags -> bind -> attach -> serve until SIGTERM/SIGINT/SIGHUP -> final recording -> detach
//!  fds: descriptor limit raised, connection cap below it with a reserve for recordings
//!  log: journald-friendly stderr lines
//! ```
//!
//! The kernel maps are cumulative (they only add), so every metric is a cumulative counter or
//! histogram since the daemon attached; Prometheus' `rate()` / `increase()` make windows.
//! See docs/daemon.md for the metric reference and the cardinality rules.
pub mod connections;
pub mod exposition;
pub mod fds;
pub mod histogram;
pub mod lock_series;
pub mod log;
pub mod recorder;
pub mod run;
pub mod sampler;
pub mod server;

pub use connections::ServerLimits;
pub use run::{run, DaemonConfig, RecordConfig};
