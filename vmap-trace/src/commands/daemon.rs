//! `vmap-trace daemon` (placeholder, being written).
/// Run as a daemon serving Prometheus metrics.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {}
pub fn run(_args: DaemonArgs) -> anyhow::Result<()> {
    anyhow::bail!("daemon is not implemented yet")
}
