//! `vwire-bench`: generator, sink and scenario runner.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "vwire-bench",
    about = "vwire benchmarks: traffic generator, sink and side-by-side scenarios"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send UDP test frames from inside a client namespace; prints a JSON summary.
    Gen(bench::gen::GenArgs),
    /// Count test frames and measure one-way latency and loss; prints a JSON summary.
    Sink(bench::sink::SinkArgs),
    /// Build the topology, run every scenario on every device under test, write the report.
    Run(bench::runner::RunArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Gen(a) => println!("{}", serde_json::to_string(&bench::gen::run(&a)?)?),
        Cmd::Sink(a) => println!("{}", serde_json::to_string(&bench::sink::run(&a)?)?),
        Cmd::Run(a) => bench::runner::run(&a)?,
    }
    Ok(())
}
