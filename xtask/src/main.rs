//! `cargo xtask`: the project's tasks, one module per command (the shape of aya's xtask).
//!
//! Every command that needs the toolchain or the network tools (`run`, `demo`, `test`,
//! `integration-test`) first runs [`setup::ensure`], a cheap check that runs the full `setup`
//! only when something is missing, so a fresh machine needs no manual step.

mod bench;
mod build;
mod demo;
mod deploy;
mod fuzz;
mod run;
mod setup;
mod soak;
mod test;
mod util;

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "vwire project tasks")]
struct Options {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Install what this machine lacks: apt tools, nightly rust-src, bpf-linker.
    Setup,
    /// Build the daemon (`cargo build -p bridge-user`); its build.rs builds the XDP program.
    Build(build::Options),
    /// Build in release mode and exec `vwire run <ARGS>`, e.g. `cargo xtask run -- --config FILE`.
    Run(run::Options),
    /// End-to-end demo: three client namespaces on one virtual wire, pinged through the daemon.
    Demo(demo::Options),
    /// Run every test, privileged ones included (needs root). Extra args go to `cargo test`.
    Test(test::Options),
    /// Run only bridge-user's privileged integration tests (netns + veth).
    IntegrationTest(test::IntegrationOptions),
    /// Benchmarks: vwire next to the Linux bridge on the same veths; `--short` for CI.
    Bench(bench::Options),
    /// Render deploy/ (DaemonSet, ConfigMap, samples) for an image and a daemon config.
    Deploy(deploy::Args),
    /// Run every cargo-fuzz target in fuzz/ for a while each (nightly; installs cargo-fuzz).
    Fuzz(fuzz::Args),
    /// Mixed traffic for N minutes with ports added and removed; checks accounting and memory.
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let Options { command } = Options::parse();
    let result = match command {
        Command::Setup => setup::setup(),
        Command::Build(opts) => build::build(&opts),
        Command::Run(opts) => run::run(opts),
        Command::Demo(opts) => demo::demo(&opts),
        Command::Test(opts) => test::test(opts),
        Command::IntegrationTest(opts) => test::integration_test(opts),
        Command::Deploy(args) => deploy::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Bench(opts) => bench::bench(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
