//! Build and test automation: `cargo xtask <command>`.
mod bench;
mod demo;
mod ebpf;
mod setup;
mod test;
mod toggle;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "vmap-trace build and test automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the eBPF toolchain (Debian rustc-web, llvm-22, bpf-linker 0.13.0) and the test
    /// tools (perf, bpftrace, tmux, chromium). A no-op when everything is present.
    Setup,
    /// Compile vmap-trace-ebpf and write the committed object and its input hash.
    BuildEbpf,
    /// Fail if the committed eBPF object is stale: rebuild it and compare the recorded input
    /// hash and the bytes.
    CheckEbpf,
    /// The main job: build, `doctor`, then record a `stress mix` run and print the report
    /// (needs root).
    Demo {
        /// Seconds of stress to record.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Benchmarks, reported as ratios measured in one run (see docs/performance.md).
    Bench(bench::BenchArgs),
    /// Boot the six-kernel matrix (Debian 5.10, 6.1 oldest and newest, 6.12, 6.12-rt, 7.x)
    /// under QEMU, two at a time, and check vmap-trace's probes, lock names, figures and
    /// `model --from` in each (installs QEMU, downloads the kernels through a private apt
    /// configuration in target/vm/apt/). `--kernel 6.1` etc. boots one.
    VmTest(vm::VmTestArgs),
    /// Download and extract Debian kernels (vmlinuz, config, System.map) into
    /// target/vm/kernels/ without booting them; `--kernel matrix` fetches all six of the matrix.
    VmFetch(vm::VmFetchArgs),
    /// Everything CI runs: setup, stale-object check, build, unit and root integration tests,
    /// then `vm-test` on the six-kernel matrix (downloaded while the host tests run).
    Test {
        /// Skip `setup` (the tools are known to be installed).
        #[arg(long)]
        no_setup: bool,
        /// Skip the QEMU kernels (`vm-test`), e.g. for a quick local run.
        #[arg(long)]
        no_vm: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::BuildEbpf => ebpf::build(),
        Command::CheckEbpf => ebpf::check(),
        Command::Demo { seconds } => demo::run(seconds),
        Command::Bench(args) => bench::run(args),
        Command::VmTest(args) => vm::run(args),
        Command::VmFetch(args) => vm::fetch(args),
        Command::Test { no_setup, no_vm } => test::run(no_setup, no_vm),
    }
}
