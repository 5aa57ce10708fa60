//! `vmap-trace top` (placeholder, being written).
/// Live full-screen view of vmap lock contention.
#[derive(Debug, clap::Args)]
pub struct TopArgs {}
pub fn run(_args: TopArgs) -> anyhow::Result<()> {
    anyhow::bail!("top is not implemented yet")
}
