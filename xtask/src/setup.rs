//! `cargo xtask setup`: install, idempotently, everything a fresh machine lacks.
//!
//! Each step checks first and skips what is present, printing one line per step, so a second
//! run installs nothing and takes well under a second. The steps:
//! - Debian packages for the demo and the tests (`apt-get update` runs once, and only if a
//!   package is missing);
//! - `rust-src` for the preinstalled nightly toolchain, which builds the XDP program with
//!   `-Z build-std=core` (nightly itself is never installed here: a machine without it is not
//!   one of ours, and we say so);
//! - `rustfmt` for the default toolchain, which `.ci/run` uses;
//! - `bpf-linker` 0.13.0 linked against nightly's own libLLVM, the recipe verified in
//!   PLATFORM.md: no packaged LLVM matches nightly's, so we point `LLVM_PREFIX` at a directory
//!   of symlinks to the libLLVM inside the nightly sysroot. The binary keeps an rpath to that
//!   directory, so it lives under `$XDG_DATA_HOME/vwire/llvm` (default
//!   `~/.local/share/vwire/llvm`) and must not be deleted.

use std::{env, fs, io, os::unix::fs::symlink, path::Path, path::PathBuf, process::Command};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::util::{display, output, require_root, run};

/// Tools the demo and the privileged tests call.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "iputils-ping",
    "tcpdump",
    "netsniff-ng",
    "iperf3",
    "procps",
];

/// The newest bpf-linker that builds with our nightly (PLATFORM.md, "verified recipe").
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Runs every step, installing what is missing.
///
/// # Errors
/// If a step fails, if nightly is absent, or if installing needs root and we are not.
pub fn setup() -> Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    rustfmt()?;
    bpf_linker()?;
    python_packages()?;
    crate::fuzz::install_cargo_fuzz()?;
    Ok(())
}

/// The cheap check other commands run first: runs [`setup`] only if something is missing.
///
/// # Errors
/// As [`setup`].
pub fn ensure() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "setup: missing {}; running `cargo xtask setup`",
        missing.join(", ")
    );
    setup()
}

/// What [`setup`] would install, without installing anything.
fn missing() -> Vec<String> {
    let mut missing: Vec<String> = APT_PACKAGES
        .iter()
        .filter(|p| !dpkg_installed(p))
        .map(|p| (*p).to_owned())
        .collect();
    if !nightly_installed().unwrap_or(false) || !component_installed(Some("nightly"), "rust-src") {
        missing.push("nightly rust-src".to_owned());
    }
    if !component_installed(None, "rustfmt") {
        missing.push("rustfmt".to_owned());
    }
    if !bpf_linker_ok() {
        missing.push(format!("bpf-linker {BPF_LINKER_VERSION}"));
    }
    if !crate::fuzz::cargo_fuzz_installed() {
        missing.push("cargo-fuzz".to_owned());
    }
    missing.extend(
        PYTHON_PACKAGES
            .iter()
            .filter(|(_, module)| !python_module_present(module))
            .map(|(pkg, _)| (*pkg).to_owned()),
    );
    missing
}

fn step(what: &str, state: &str) {
    println!("setup: {what:<28} {state}");
}

fn apt_packages() -> Result<()> {
    apt_install(APT_PACKAGES)
}

/// Installs those of `packages` that are missing (`apt-get update` first, once).
fn apt_install(packages: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for pkg in packages {
        if dpkg_installed(pkg) {
            step(&format!("apt {pkg}"), "present, skip");
        } else {
            step(&format!("apt {pkg}"), "missing");
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    require_root("installing apt packages needs root")?;
    step(&format!("apt install {}", missing.join(" ")), "installing");
    run(apt_get().arg("update"))?;
    run(apt_get()
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))?;
    Ok(())
}

/// The iai-callgrind-runner release matching the `iai-callgrind` crate in `bench/Cargo.toml`
/// (the two must be the same version).
const IAI_CALLGRIND_RUNNER_VERSION: &str = "0.16.1";

/// What `cargo xtask bench --callgrind` needs and the other commands do not: valgrind, and
/// iai-callgrind's runner (about 2 minutes to build on our machines). Idempotent.
///
/// # Errors
/// An installation failed, or installing needs root and we are not.
pub fn callgrind_tools() -> Result<()> {
    apt_install(&["valgrind"])?;
    let what = format!("iai-callgrind-runner {IAI_CALLGRIND_RUNNER_VERSION}");
    // The runner has no --version of its own; cargo lists what it installed.
    let installed = output(Command::new("cargo").args(["install", "--list"])).is_ok_and(|list| {
        list.contains(&format!(
            "iai-callgrind-runner v{IAI_CALLGRIND_RUNNER_VERSION}:"
        ))
    });
    if installed {
        step(&what, "present, skip");
        return Ok(());
    }
    step(&what, "installing");
    cargo_install("iai-callgrind-runner", IAI_CALLGRIND_RUNNER_VERSION)
}

/// `cargo install --locked` of one pinned release of a tool from crates.io.
///
/// # Errors
/// If `cargo install` fails.
pub fn cargo_install(krate: &str, version: &str) -> Result<()> {
    run(Command::new("cargo").args(["install", krate, "--locked", "--version", version]))
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    // CI has no stdin: never prompt (iperf3 asks whether to start a daemon; the default is no).
    cmd.arg("-q").env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"install ok installed")
}

fn nightly_installed() -> Result<bool> {
    let list = output(Command::new("rustup").args(["toolchain", "list"]))?;
    Ok(list.lines().any(|l| l.starts_with("nightly")))
}

/// Whether `component` is installed for `toolchain` (the directory's default if `None`).
fn component_installed(toolchain: Option<&str>, component: &str) -> bool {
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        cmd.args(["--toolchain", toolchain]);
    }
    // Lines are `rust-src` or `rustfmt-x86_64-unknown-linux-gnu`.
    output(&mut cmd).is_ok_and(|list| {
        list.lines()
            .any(|l| l == component || l.starts_with(&format!("{component}-")))
    })
}

fn nightly_rust_src() -> Result<()> {
    if !nightly_installed()? {
        bail!(
            "the `nightly` toolchain is not installed (`rustup toolchain list`). Our machines \
             come with it preinstalled and the XDP program needs it; on another machine run \
             `rustup toolchain install nightly --profile minimal` and then `cargo xtask setup`"
        );
    }
    step("nightly toolchain", "present, skip");
    if component_installed(Some("nightly"), "rust-src") {
        step("nightly rust-src", "present, skip");
        return Ok(());
    }
    step("nightly rust-src", "installing");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// PyPI packages the tests use: (package, module). kubernetes-validate checks the
/// rendered Kubernetes manifests against the API schemas offline.
const PYTHON_PACKAGES: &[(&str, &str)] = &[("kubernetes-validate", "kubernetes_validate")];

fn python_module_present(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn python_packages() -> Result<()> {
    for (pkg, module) in PYTHON_PACKAGES {
        if python_module_present(module) {
            step(pkg, "present, skip");
            continue;
        }
        step(pkg, "installing");
        run(Command::new("python3").args(["-m", "pip", "install", "--quiet", pkg]))?;
    }
    Ok(())
}

fn rustfmt() -> Result<()> {
    if component_installed(None, "rustfmt") {
        step("rustfmt", "present, skip");
        return Ok(());
    }
    step("rustfmt", "installing");
    run(Command::new("rustup").args(["component", "add", "rustfmt"]))
}

/// True if `bpf-linker --version` runs (so its libLLVM loads) and reports our version.
fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).trim()
                    == format!("bpf-linker {BPF_LINKER_VERSION}")
        })
}

fn bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        step(&format!("bpf-linker {BPF_LINKER_VERSION}"), "present, skip");
        return Ok(());
    }
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION}"),
        "installing (about 90 s)",
    );
    install_bpf_linker()?;
    if !bpf_linker_ok() {
        bail!(
            "installed bpf-linker, but `bpf-linker --version` does not report {BPF_LINKER_VERSION}: \
             is cargo's bin directory (~/.cargo/bin) on PATH?"
        );
    }
    Ok(())
}

/// PLATFORM.md's recipe, step 2.
fn install_bpf_linker() -> Result<()> {
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = llvm_major(&version)
        .ok_or_else(|| anyhow!("no `LLVM version: N` line in `rustc +nightly -vV`:\n{version}"))?;
    let lib = nightly_libllvm(&sysroot.join("lib"))?;
    let soname = lib
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", lib.display()))?;

    let prefix = llvm_prefix()?;
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    // libLLVM.so and libLLVM-N.so for the build; the soname for the loader at run time.
    for name in [
        "libLLVM.so".as_ref(),
        format!("libLLVM-{major}.so").as_ref(),
        soname,
    ] {
        symlink_force(&lib, &prefix_lib.join(name))?;
    }

    let mut install = Command::new("cargo");
    install
        .args([
            "+nightly",
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        // The check failed, so whatever bpf-linker is there (same version, broken libLLVM
        // link) gets replaced.
        .arg("--force")
        .env("LLVM_PREFIX", &prefix)
        // We run under `cargo run`; the nested cargo must pick its own rustc (nightly).
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        // Outside the workspace, so its .cargo/config.toml does not apply.
        .current_dir(env::temp_dir());
    println!(
        "setup: LLVM_PREFIX={} {}",
        prefix.display(),
        display(&install)
    );
    run(&mut install)
}

/// The major number in rustc's `LLVM version: 22.1.2` line.
fn llvm_major(rustc_vv: &str) -> Option<&str> {
    let version = rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    let major = version.split('.').next()?.trim();
    (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())).then_some(major)
}

/// The nightly sysroot's `libLLVM.so.*`, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
fn nightly_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    let mut libs: Vec<PathBuf> = fs::read_dir(lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .collect();
    libs.sort();
    libs.into_iter()
        .next()
        .ok_or_else(|| anyhow!("no libLLVM.so.* in {}", lib_dir.display()))
}

/// Where the libLLVM symlinks live; bpf-linker's rpath points here, so it must persist.
fn llvm_prefix() -> Result<PathBuf> {
    let data = match env::var_os("XDG_DATA_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".local/share"),
    };
    Ok(data.join("vwire/llvm"))
}

fn symlink_force(target: &Path, link: &Path) -> Result<()> {
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
    }
    symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (abc 2026-04-01)\nhost: x86_64-unknown-linux-gnu\n\
                  release: 1.97.0-nightly\nLLVM version: 22.1.2\n";
        assert_eq!(llvm_major(vv), Some("22"));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }
}
