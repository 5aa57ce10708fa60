//! Thin CLI: parse arguments and dispatch to the library.
use clap::{Parser, Subcommand};
use vmap_trace::commands::{daemon, diff, doctor, flamegraph, record, report, top};
use vmap_trace::{model, stress};

#[derive(Parser)]
#[command(
    name = "vmap-trace",
    version,
    about = "Lock-contention profiler for the Linux vmalloc / vmap-area allocator",
    long_about = "Lock-contention profiler for the Linux vmalloc / vmap-area allocator.\n\n\
                  Start with `sudo vmap-trace doctor` to see what this kernel offers, then \
                  `sudo vmap-trace record -d 10` and `vmap-trace report vmap-trace.rec`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what this kernel offers and which probe mechanism each hook will use.
    Doctor(doctor::DoctorArgs),
    /// Record vmap allocator activity and lock contention to a file.
    Record(record::RecordArgs),
    /// Print a recording.
    Report(report::ReportArgs),
    /// Live full-screen view of vmap lock contention (like top).
    Top(top::TopArgs),
    /// Render a flamegraph (SVG or folded text) of a recording's contended stacks.
    Flamegraph(flamegraph::FlamegraphArgs),
    /// Differential flamegraph of two recordings (before/after).
    Diff(diff::DiffArgs),
    /// Run as a daemon: aggregate continuously, serve Prometheus metrics.
    Daemon(daemon::DaemonArgs),
    /// Generate real load on the vmap allocator from user space.
    Stress(stress::StressArgs),
    /// Simulate the kernel's legacy and node-sharded vmap allocator designs.
    Model(model::cli::ModelArgs),
}

fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => doctor::run(args),
        Command::Record(args) => record::run(args),
        Command::Report(args) => report::run(args),
        Command::Top(args) => top::run(args),
        Command::Flamegraph(args) => flamegraph::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Stress(args) => stress::run(args),
        Command::Model(args) => model::cli::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote recordings and file names: nothing in them may reach the terminal raw.
            let text = format!("{e:#}");
            eprintln!("vmap-trace: error: {}", vmap_trace::escape::message(&text));
            std::process::ExitCode::FAILURE
        }
    }
}
