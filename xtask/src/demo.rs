//! `cargo xtask demo`: the NSM virtual-wire example, reproduced on a plain Linux host.
//!
//! Three network namespaces stand in for the example's client pods. Each gets a veth whose
//! client end is `nsm-1` (the name NSM gives the interface in a pod) with a fixed, locally
//! administered MAC and an address in 172.16.2.0/24; the host end stays in the root namespace
//! and becomes a port of the daemon's one bridge domain. We then check, printing one
//! `check: <what> ... ok|FAILED` line each, that the clients reach each other through the
//! daemon, that it learned their MACs, and that it detaches its XDP programs on SIGTERM.
//!
//! TX checksum offload is turned off on every `nsm-1` (`ethtool -K nsm-1 tx off`): a veth
//! peer sends TCP/UDP with a partial checksum, and forwarded through AF_XDP unchanged the
//! receiver drops it. Whatever creates a client wire must do this (see README, Known limits).
//! GRO is turned on there (`gro on`), as the CNI plugin does: then the host end takes
//! XDP-redirected frames and the daemon's fast path carries the clients' known unicast. TX
//! VLAN offload is turned off (`txvlan off`), as the CNI plugin does, so that a VLAN
//! interface a user adds in a client writes its tag into the frame, where vwire sees it.
//!
//! All names carry our pid, so runs never collide, and a [`Topology`] guard deletes the
//! namespaces, veths and temp dir however the demo ends; Ctrl-C ends it through the same path.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{self, Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nix::{
    sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal},
    unistd::Pid,
};
use serde::Deserialize;

use crate::{
    build, setup,
    util::{display, output, require_root, run},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Use this vwire binary instead of building target/release/vwire.
    #[arg(long, value_name = "PATH")]
    vwire: Option<PathBuf>,
}

/// One client pod of the example.
#[derive(Debug)]
struct Client {
    name: &'static str,
    suffix: char,
    ip: &'static str,
    mac: &'static str,
}

const CLIENTS: [Client; 3] = [
    Client {
        name: "client-a",
        suffix: 'a',
        ip: "172.16.2.1",
        mac: "02:00:00:00:00:0a",
    },
    Client {
        name: "client-b",
        suffix: 'b',
        ip: "172.16.2.2",
        mac: "02:00:00:00:00:0b",
    },
    Client {
        name: "client-c",
        suffix: 'c',
        ip: "172.16.2.3",
        mac: "02:00:00:00:00:0c",
    },
];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// The interface name NSM gives the client end.
const CLIENT_IF: &str = "nsm-1";
const PREFIX_LEN: u8 = 24;
const DOMAIN: &str = "vwire";
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Set by SIGINT/SIGTERM; checked between steps so cleanup still runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the demo; fails, after cleaning up, if any check failed.
///
/// # Errors
/// If we are not root, setup, build or topology fail, the daemon does not come up, or a check
/// fails.
pub fn demo(opts: &Options) -> Result<()> {
    require_root("the demo creates network namespaces and veths and the daemon attaches XDP")?;
    catch_signals()?;
    setup::ensure()?;
    let vwire = if let Some(path) = &opts.vwire {
        path.clone()
    } else {
        let release = build::Options { release: true };
        build::build(&release)?;
        build::vwire_binary(&release)
    };

    let mut topo = Topology::new(process::id())?;
    for client in &CLIENTS {
        topo.add_client(client)?;
        interrupted()?;
    }
    let config = topo.write_config()?;
    topo.start_daemon(&vwire, &config)?;

    let mut checks = Checks::default();
    for (from, to) in [(A, B), (B, A), (C, A)] {
        interrupted()?;
        checks.check(
            &format!("ping {} -> {}", CLIENTS[from].name, CLIENTS[to].name),
            || topo.ping(from, to),
        );
    }
    for (of, peer) in [(A, B), (B, A)] {
        interrupted()?;
        checks.check(
            &format!(
                "ARP table of {} has {}'s MAC",
                CLIENTS[of].name, CLIENTS[peer].name
            ),
            || topo.neighbour(of, peer),
        );
    }
    for what in ["interfaces", "fdb"] {
        interrupted()?;
        checks.check(&format!("vwire show {what}"), || {
            let out = topo.show(&vwire, what, false)?;
            Ok(Some(out))
        });
    }
    interrupted()?;
    checks.check("the XDP fast path carried known unicast", || {
        let json = topo.show(&vwire, "interfaces", true)?;
        let status: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("parsing `vwire show interfaces --json`: {json}"))?;
        let fast: u64 = status["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["xdp"]["fast_rx_frames"].as_u64())
            .sum();
        if fast == 0 {
            bail!("no frame took the fast path: {json}");
        }
        Ok(Some(format!("{fast} frames went port to port in XDP")))
    });
    interrupted()?;
    match topo.fdb(&vwire) {
        Ok(fdb) => {
            for (i, client) in CLIENTS.iter().enumerate() {
                let port = topo.host_if(i);
                checks.check(&format!("FDB learned {} on {port}", client.mac), || {
                    check_learned(&fdb, client.mac, &port)
                });
            }
        }
        Err(e) => checks.fail("FDB has learned the client MACs", &e),
    }

    interrupted()?;
    checks.check("daemon exits 0 on SIGTERM", || {
        let status = topo.stop_daemon()?;
        if !status.success() {
            bail!("daemon {status}");
        }
        Ok(None)
    });
    for i in 0..CLIENTS.len() {
        let port = topo.host_if(i);
        checks.check(&format!("no XDP program left on {port}"), || {
            let link = output(Command::new("ip").args(["-d", "link", "show", "dev", &port]))?;
            if link.contains("xdp") {
                bail!("still attached:\n{link}");
            }
            Ok(None)
        });
    }

    if checks.failed > 0 {
        topo.print_log();
    }
    drop(topo);
    if checks.failed > 0 {
        bail!("{} of {} checks FAILED", checks.failed, checks.total);
    }
    println!("demo: all {} checks ok", checks.total);
    Ok(())
}

fn catch_signals() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::sigaction(sig, &action) }.with_context(|| format!("sigaction {sig}"))?;
    }
    Ok(())
}

/// Counts checks and prints `check: <what> ... ok|FAILED` for each.
#[derive(Debug, Default)]
struct Checks {
    total: usize,
    failed: usize,
}

impl Checks {
    /// Runs `f`; prints its `Some(output)` after the line, indented.
    fn check(&mut self, what: &str, f: impl FnOnce() -> Result<Option<String>>) {
        match f() {
            Ok(out) => {
                self.total += 1;
                println!("check: {what} ... ok");
                if let Some(out) = out {
                    print_indented(&out);
                }
            }
            Err(e) => self.fail(what, &e),
        }
    }

    fn fail(&mut self, what: &str, e: &anyhow::Error) {
        self.total += 1;
        self.failed += 1;
        println!("check: {what} ... FAILED");
        print_indented(&format!("{e:#}"));
    }
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// `vwire show fdb --json`: `{"entries":[{"domain":..,"mac":..,"port":..,..}]}`.
#[derive(Debug, Deserialize)]
struct FdbDump {
    entries: Vec<FdbEntry>,
}

#[derive(Debug, Deserialize)]
struct FdbEntry {
    domain: String,
    mac: String,
    port: String,
}

fn check_learned(fdb: &FdbDump, mac: &str, port: &str) -> Result<Option<String>> {
    let found: BTreeMap<&str, &str> = fdb
        .entries
        .iter()
        .filter(|e| e.domain == DOMAIN && e.mac.eq_ignore_ascii_case(mac))
        .map(|e| (e.port.as_str(), e.mac.as_str()))
        .collect();
    match found.keys().copied().collect::<Vec<_>>()[..] {
        [p] if p == port => Ok(None),
        [] => bail!("no entry for {mac} in domain {DOMAIN}"),
        ref ports => bail!("{mac} is on {ports:?}, expected {port}"),
    }
}

/// The demo's namespaces, veths, temp dir and daemon; dropping it removes them all.
#[derive(Debug)]
struct Topology {
    pid: u32,
    dir: PathBuf,
    /// Clients whose namespace we created (possibly only partly set up).
    clients: Vec<&'static Client>,
    daemon: Option<Child>,
}

impl Topology {
    fn new(pid: u32) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("vwire-demo-{pid}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            pid,
            dir,
            clients: Vec::new(),
            daemon: None,
        })
    }

    fn netns(&self, i: usize) -> String {
        format!("vw-demo-{}-{}", self.pid, CLIENTS[i].suffix)
    }

    /// The host end: `vwd<pid><suffix>` fits IFNAMSIZ (15) for any pid up to 2^22.
    fn host_if(&self, i: usize) -> String {
        format!("vwd{}{}", self.pid, CLIENTS[i].suffix)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("vwire.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("vwire.log")
    }

    fn add_client(&mut self, client: &'static Client) -> Result<()> {
        let i = self.clients.len();
        let (ns, host) = (self.netns(i), self.host_if(i));
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.clients.push(client);
        let ip_ns = |args: &[&str]| run(Command::new("ip").args(["-n", &ns]).args(args));
        // The peer is created directly inside the namespace, so `nsm-1` never clashes with
        // an interface of the root namespace or of another client.
        run(Command::new("ip")
            .args(["link", "add", &host, "type", "veth", "peer", "name"])
            .args([CLIENT_IF, "netns", &ns]))?;
        ip_ns(&["link", "set", "dev", CLIENT_IF, "address", client.mac])?;
        ip_ns(&[
            "addr",
            "add",
            &format!("{}/{PREFIX_LEN}", client.ip),
            "dev",
            CLIENT_IF,
        ])?;
        ip_ns(&["link", "set", "dev", "lo", "up"])?;
        ip_ns(&["link", "set", "dev", CLIENT_IF, "up"])?;
        run(Command::new("ip").args(["link", "set", "dev", &host, "up"]))?;
        // Required: see the module doc.
        run(Command::new("ip")
            .args([
                "netns", "exec", &ns, "ethtool", "-K", CLIENT_IF, "tx", "off", "gro", "on",
                "txvlan", "off",
            ])
            .stdout(Stdio::null()))?;
        println!(
            "demo: {} = netns {ns}, {CLIENT_IF} {} {}/{PREFIX_LEN}, host end {host}",
            client.name, client.mac, client.ip
        );
        Ok(())
    }

    fn write_config(&self) -> Result<PathBuf> {
        let ports = (0..self.clients.len())
            .map(|i| format!("\"{}\"", self.host_if(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "fdb_max_age_secs = 300\n\n[[bridge_domain]]\nname = \"{DOMAIN}\"\nports = [{ports}]\n"
        );
        let path = self.dir.join("vwire.toml");
        fs::write(&path, &config).with_context(|| format!("writing {}", path.display()))?;
        println!("demo: config {}:", path.display());
        print_indented(&config);
        Ok(path)
    }

    fn start_daemon(&mut self, vwire: &Path, config: &Path) -> Result<()> {
        let log = File::create(self.log())
            .with_context(|| format!("creating {}", self.log().display()))?;
        let mut cmd = Command::new(vwire);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(self.socket())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: the terminal's Ctrl-C reaches only us, and the guard
            // stops the daemon with SIGTERM like any supervisor would.
            .process_group(0);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        println!(
            "demo: starting `{}` (log {})",
            display(&cmd),
            self.log().display()
        );
        self.daemon = Some(
            cmd.spawn()
                .with_context(|| format!("starting `{}`", display(&cmd)))?,
        );

        let start = Instant::now();
        loop {
            interrupted()?;
            if let Some(status) = self.daemon.as_mut().and_then(|d| d.try_wait().transpose()) {
                self.daemon = None;
                self.print_log();
                bail!("the daemon exited during startup: {}", status?);
            }
            if self.show(vwire, "interfaces", false).is_ok() {
                println!(
                    "demo: daemon ready after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                self.print_log();
                bail!(
                    "`vwire show interfaces --socket {}` did not succeed within {} s",
                    self.socket().display(),
                    READY_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `vwire show <what> [--json] --socket <ours>`.
    fn show(&self, vwire: &Path, what: &str, json: bool) -> Result<String> {
        let mut cmd = Command::new(vwire);
        cmd.args(["show", what]);
        if json {
            cmd.arg("--json");
        }
        output(cmd.arg("--socket").arg(self.socket()))
    }

    fn fdb(&self, vwire: &Path) -> Result<FdbDump> {
        let json = self.show(vwire, "fdb", true)?;
        serde_json::from_str(&json)
            .with_context(|| format!("parsing `vwire show fdb --json`: {json}"))
    }

    fn ping(&self, from: usize, to: usize) -> Result<Option<String>> {
        let ns = self.netns(from);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "ping",
                "-c",
                "4",
                "-W",
                "1",
                "-i",
                "0.2",
                CLIENTS[to].ip,
            ])
            .stdin(Stdio::null())
            .output()
            .context("starting ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .filter(|l| l.contains("packets transmitted") || l.starts_with("rtt"));
        let summary = summary.collect::<Vec<_>>().join("\n");
        if !out.status.success() {
            bail!("{text}{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Some(summary))
    }

    /// Prints `of`'s neighbour table and checks it holds `peer`'s MAC.
    fn neighbour(&self, of: usize, peer: usize) -> Result<Option<String>> {
        let ns = self.netns(of);
        let table = output(Command::new("ip").args([
            "netns", "exec", &ns, "ip", "neigh", "show", "dev", CLIENT_IF,
        ]))?;
        let want = CLIENTS[peer].mac;
        let has = table.lines().any(|l| {
            l.starts_with(&format!("{} ", CLIENTS[peer].ip))
                && l.to_ascii_lowercase().contains(want)
        });
        if !has {
            bail!("no {} lladdr {want} in:\n{table}", CLIENTS[peer].ip);
        }
        Ok(Some(table))
    }

    /// SIGTERM, then wait up to [`STOP_TIMEOUT`]; SIGKILL if it does not exit.
    fn stop_daemon(&mut self) -> Result<ExitStatus> {
        let Some(mut daemon) = self.daemon.take() else {
            bail!("the daemon is not running");
        };
        let pid = Pid::from_raw(i32::try_from(daemon.id()).context("pid out of range")?);
        signal::kill(pid, Signal::SIGTERM).context("kill -TERM")?;
        let start = Instant::now();
        loop {
            if let Some(status) = daemon.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > STOP_TIMEOUT {
                let _ = daemon.kill();
                let _ = daemon.wait();
                bail!(
                    "no exit within {} s of SIGTERM; killed",
                    STOP_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn print_log(&self) {
        match fs::read_to_string(self.log()) {
            Ok(log) => {
                println!("--- daemon log ({}) ---", self.log().display());
                print!("{log}");
                println!("--- end of daemon log ---");
            }
            Err(e) => println!("demo: no daemon log at {}: {e}", self.log().display()),
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            if let Err(e) = self.stop_daemon() {
                println!("cleanup: stopping the daemon: {e:#}");
            }
        }
        let quiet = |args: &[&str]| {
            // Best effort: a half-built topology lacks some of these.
            let _ = Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for i in 0..self.clients.len() {
            quiet(&["link", "del", "dev", &self.host_if(i)]);
            quiet(&["netns", "del", &self.netns(i)]);
        }
        let _ = fs::remove_dir_all(&self.dir);
        println!(
            "cleanup: removed {} namespaces vw-demo-{}-*, their veths and {}",
            self.clients.len(),
            self.pid,
            self.dir.display()
        );
    }
}
