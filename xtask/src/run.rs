//! `cargo xtask run -- <ARGS>`: build in release mode and exec `vwire run <ARGS>`.
//!
//! We exec rather than spawn, so the daemon replaces this process and gets the terminal's
//! SIGINT (or a supervisor's SIGTERM) directly, then detaches its XDP programs and exits 0.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};

use crate::{build, setup, util::display};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Arguments for `vwire run`, e.g. `--config FILE [--socket PATH]`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Never returns on success: the daemon replaces this process.
///
/// # Errors
/// If setup or the build fails, or the daemon cannot be executed.
pub fn run(opts: Options) -> Result<()> {
    setup::ensure()?;
    let release = build::Options { release: true };
    build::build(&release)?;
    let mut cmd = Command::new(build::vwire_binary(&release));
    cmd.arg("run").args(opts.args);
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to exec `{}`", display(&cmd)))
}
