//! `cargo xtask bench [--short]`: build vwire and the benchmark tool in release mode, then
//! run the side-by-side scenarios (vwire next to the Linux bridge on the same veths) and
//! write `bench/results/<timestamp>.{md,json,png}` and `latest.{md,png}`.
//!
//! `--short` (one repetition, 2 s per measurement) is the CI smoke test: it proves the
//! scenarios run end to end and asserts nothing about timing.

use std::process::Command;

use anyhow::Result;

use crate::{
    setup,
    util::{cargo, require_root, run, target_dir, workspace_root},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// One repetition of 2 s per measurement instead of three of 5 s.
    #[arg(long)]
    short: bool,
    /// Also run the criterion microbenchmarks of the per-frame path.
    #[arg(long)]
    micro: bool,
    /// Also count the per-frame path's instructions with Callgrind (installs valgrind and
    /// iai-callgrind-runner if missing).
    #[arg(long)]
    callgrind: bool,
    /// Extra arguments for `vwire-bench run`, e.g. `-- --only rate64,ping_p50`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// # Errors
/// Setup, the build or a benchmark run failed, or we are not root.
pub fn bench(opts: &Options) -> Result<()> {
    require_root("the benchmarks build namespaces and veths and attach XDP")?;
    setup::ensure()?;
    run(cargo().args(["build", "--release", "-p", "bridge-user", "-p", "bench"]))?;
    let release = target_dir().join("release");
    let out = workspace_root().join("bench").join("results");
    run(Command::new(release.join("vwire-bench"))
        .arg("run")
        .arg(if opts.short { "--short" } else { "--full" })
        .arg("--vwire")
        .arg(release.join("vwire"))
        .arg("--out")
        .arg(&out)
        .args(&opts.args))?;
    if opts.micro {
        run(cargo().args(["bench", "-p", "bench", "--bench", "datapath"]))?;
    }
    if opts.callgrind {
        setup::callgrind_tools()?;
        run(cargo().args(["bench", "-p", "bench", "--bench", "callgrind"]))?;
    }
    println!("report: {}", out.join("latest.md").display());
    Ok(())
}
