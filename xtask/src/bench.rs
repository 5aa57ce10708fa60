//! `cargo xtask bench` (placeholder, being written).
use anyhow::Result;

/// Benchmarks: overhead of tracing, model speed, flamegraph rendering.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Which benchmark (`overhead`, `model`, `flamegraph`, or `all`).
    #[arg(default_value = "all")]
    pub which: String,
}

pub fn run(_args: BenchArgs) -> Result<()> {
    anyhow::bail!("bench is not implemented yet")
}
