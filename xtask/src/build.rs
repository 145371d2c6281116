//! `cargo xtask build`: `cargo build -p bridge-user`. Its build.rs builds the XDP program with
//! nightly through aya-build and the daemon embeds it, so nothing else is needed.

use std::path::PathBuf;

use anyhow::Result;

use crate::util::{cargo, run, target_dir};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// Builds the daemon.
///
/// # Errors
/// If cargo fails.
pub fn build(opts: &Options) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "bridge-user"]);
    if opts.release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

/// The daemon binary [`build`] leaves behind.
pub fn vwire_binary(opts: &Options) -> PathBuf {
    target_dir()
        .join(if opts.release { "release" } else { "debug" })
        .join("vwire")
}
