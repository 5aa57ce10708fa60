//! Real load on the vmap allocator from user space (placeholder).

/// `vmap-trace stress` arguments.
#[derive(Debug, clap::Args)]
pub struct StressArgs {}

pub fn run(_args: StressArgs) -> anyhow::Result<()> {
    anyhow::bail!("stress is not implemented yet")
}
