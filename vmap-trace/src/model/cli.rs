/// `vmap-trace model` arguments.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {}

pub fn run(_args: ModelArgs) -> anyhow::Result<()> {
    anyhow::bail!("the reference model is not implemented yet")
}
