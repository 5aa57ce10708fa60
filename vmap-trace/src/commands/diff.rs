//! `vmap-trace diff` (placeholder, being written).
/// Differential flamegraph of two recordings.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {}
pub fn run(_args: DiffArgs) -> anyhow::Result<()> {
    anyhow::bail!("diff is not implemented yet")
}
