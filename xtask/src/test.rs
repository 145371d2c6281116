//! `cargo xtask test` (the README's test command) and `cargo xtask integration-test`.
//!
//! Both set `BRIDGE_PRIVILEGED=1`, so the privileged tests (network namespaces, veths, XDP)
//! run instead of skipping, and both therefore refuse to start unless we are root: a skipped
//! privileged test must never look like a passed one.
//!
//! `cargo xtask test` runs bridge-user's integration tests twice: once on the forwarder's path,
//! once with GRO on at every client end (`VWIRE_TEST_FAST_PATH=1`), where the XDP fast path
//! carries known unicast. Every behaviour must hold on both.

use std::ffi::OsString;

use anyhow::Result;

use crate::{
    setup,
    util::{cargo, require_root, run},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Extra arguments for `cargo test`, e.g. `-- fdb -- --nocapture`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct IntegrationOptions {
    /// Where the tests run: `local` is this machine's kernel.
    #[arg(value_enum, default_value_t = Mode::Local)]
    mode: Mode,
    /// Extra arguments for `cargo test`, after `--`.
    #[arg(last = true)]
    args: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Mode {
    /// On this machine, as root.
    Local,
}

const WHY_ROOT: &str = "the privileged tests create network namespaces and veths and attach \
                        XDP programs (BRIDGE_PRIVILEGED=1)";

/// `cargo test --workspace` with the privileged tests on.
///
/// `bridge-ebpf` is excluded: it only builds for `bpfel-unknown-none`, and bridge-user's
/// build.rs already builds it.
///
/// # Errors
/// If we are not root, setup fails, or a test fails.
pub fn test(opts: Options) -> Result<()> {
    require_root(WHY_ROOT)?;
    setup::ensure()?;
    run(cargo()
        .args(["test", "--workspace", "--exclude", "bridge-ebpf"])
        .args(&opts.args)
        .env("BRIDGE_PRIVILEGED", "1"))?;
    eprintln!("== bridge-user's integration tests again, on the XDP fast path");
    run(cargo()
        .args(["test", "-p", "bridge-user", "--test", "*"])
        .args(&opts.args)
        .env("BRIDGE_PRIVILEGED", "1")
        .env("VWIRE_TEST_FAST_PATH", "1"))
}

/// Only bridge-user's integration tests (`bridge-user/tests/`).
///
/// # Errors
/// As [`test()`].
pub fn integration_test(opts: IntegrationOptions) -> Result<()> {
    let IntegrationOptions {
        mode: Mode::Local,
        args,
    } = opts;
    require_root(WHY_ROOT)?;
    setup::ensure()?;
    run(cargo()
        .args(["test", "-p", "bridge-user", "--test", "*"])
        .args(args)
        .env("BRIDGE_PRIVILEGED", "1"))
}
