//! `vmap-trace flamegraph` (placeholder, being written).
/// Render a flamegraph of a recording's contended kernel stacks.
#[derive(Debug, clap::Args)]
pub struct FlamegraphArgs {}
pub fn run(_args: FlamegraphArgs) -> anyhow::Result<()> {
    anyhow::bail!("flamegraph is not implemented yet")
}
