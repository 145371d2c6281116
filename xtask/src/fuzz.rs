//! `cargo xtask fuzz`: runs every cargo-fuzz target in `fuzz/` for a fixed time each.
//!
//! `fuzz/` is its own workspace (libFuzzer needs nightly and sanitizer flags), so this runs
//! `cargo +nightly fuzz run TARGET SCRATCH fuzz/corpus/TARGET -- -max_total_time=N` in it. The
//! seeds in `fuzz/corpus/` stay small and reviewed: libFuzzer writes what it discovers into the
//! first corpus directory, which is a scratch directory under `fuzz/target/`, and only reads
//! the second. A crash stops the run with the reproducer under `fuzz/artifacts/TARGET/`; turn
//! it into a test in `bridge-user/tests/fuzz_regressions.rs`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::util::{display, run as run_cmd, workspace_root};

/// The cargo-fuzz release this project pins (builds with stable 1.95).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every target in `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: &[&str] = &[
    "frame_classify",
    "vlan_push_pop",
    "forward_decision",
    "config_parse",
    "api_request",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

/// Whether `cargo fuzz` is installed at the pinned version.
#[must_use]
pub fn cargo_fuzz_installed() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)
        })
}

/// Installs cargo-fuzz from crates.io unless the pinned version is there. Meant as a step of
/// `cargo xtask setup` (about 1 minute on our machines).
///
/// # Errors
/// If `cargo install` fails.
pub fn install_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_installed() {
        println!("setup: cargo-fuzz {CARGO_FUZZ_VERSION}: present, skip");
        return Ok(());
    }
    println!("setup: cargo-fuzz {CARGO_FUZZ_VERSION}: installing");
    crate::setup::cargo_install("cargo-fuzz", CARGO_FUZZ_VERSION)
}

/// `cargo +nightly ...` in `fuzz/`, free of the toolchain choice of the cargo that runs us.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .current_dir(workspace_root().join("fuzz"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// The `Done N runs in S second(s)` count libFuzzer prints at the end.
fn runs_done(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Runs each target for `args.seconds` and prints how many inputs each one tried.
///
/// # Errors
/// If cargo-fuzz cannot be installed, a target does not build, or a target crashes.
pub fn run(args: Args) -> Result<()> {
    install_cargo_fuzz()?;
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| (*t).to_owned()).collect()
    } else {
        args.targets
    };
    let fuzz_dir = workspace_root().join("fuzz");
    let mut build = nightly_cargo();
    build.args(["fuzz", "build"]);
    run_cmd(&mut build)?;
    let mut results = Vec::new();
    for target in &targets {
        let scratch: PathBuf = fuzz_dir.join("target").join("corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("mkdir {}", scratch.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut cmd = nightly_cargo();
        cmd.args(["fuzz", "run", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-print_final_stats=1");
        println!("fuzz: {target}: {} s", args.seconds);
        let started = Instant::now();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("failed to start `{}`", display(&cmd)))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({}) after {:.0?}; reproducer under \
                 fuzz/artifacts/{target}/\n{}",
                out.status,
                started.elapsed(),
                tail.join("\n")
            );
        }
        let runs = runs_done(&log).unwrap_or(0);
        println!("fuzz: {target}: {runs} inputs, no failure");
        results.push((target.clone(), runs));
    }
    let total: u64 = results.iter().map(|(_, n)| n).sum();
    println!("fuzz summary ({} s per target):", args.seconds);
    for (target, runs) in &results {
        println!("  {target:<18} {runs:>12} inputs");
    }
    println!("  {:<18} {total:>12} inputs, 0 crashes", "total");
    Ok(())
}
