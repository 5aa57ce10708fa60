//! Thin CLI: parse arguments and dispatch to the library.
use clap::{Parser, Subcommand};
use vmap_trace::{model, stress};

#[derive(Parser)]
#[command(name = "vmap-trace", version, about = "Lock-contention profiler for the Linux vmalloc / vmap-area allocator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate real load on the vmap allocator from user space.
    Stress(stress::StressArgs),
    /// Simulate the kernel's legacy and node-sharded vmap allocator designs.
    Model(model::cli::ModelArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Stress(args) => stress::run(args),
        Command::Model(args) => model::cli::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmap-trace: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
