//! The test topology and the devices under test, each torn down by its `Drop`.
//!
//! One node namespace holds the host-side veth ends `p0..pN-1` and the device under test
//! (a Linux bridge, the vwire daemon, or OVS). Client `i` lives in its own namespace with its
//! end named `nsm-1`, MAC `02:76:77:00:00:<i+1>`, address `10.77.0.<i+1>/24`, TX checksum
//! offload off and IPv6 disabled (no DAD/MLD/RS noise in the measurements).

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// Every command run, in order, for the report.
#[derive(Clone, Debug, Default)]
pub struct CmdLog(Arc<Mutex<Vec<String>>>);

impl CmdLog {
    pub fn push(&self, line: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(line);
        }
    }

    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Quotes a word for display only when needed.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command line as a shell would show it.
#[must_use]
pub fn display(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds a `Command` from argv and records it.
pub fn command(log: &CmdLog, args: &[String]) -> Command {
    log.push(display(args));
    let mut c = Command::new(&args[0]);
    c.args(&args[1..]);
    c
}

/// Runs argv to completion; fails with its stderr on a non-zero exit. Returns stdout.
pub fn run(log: &CmdLog, args: &[String]) -> anyhow::Result<String> {
    let out = command(log, args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {}", display(args)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// argv helper: `sv(&["ip", "link"])`.
#[must_use]
pub fn sv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// argv to run `args` inside namespace `ns`.
#[must_use]
pub fn in_ns(ns: &str, args: &[&str]) -> Vec<String> {
    let mut v = sv(&["ip", "netns", "exec", ns]);
    v.extend(args.iter().map(|s| (*s).to_owned()));
    v
}

/// One client namespace.
#[derive(Clone, Debug)]
pub struct Client {
    pub ns: String,
    /// Interface inside the client namespace.
    pub dev: String,
    /// Its peer in the node namespace.
    pub port: String,
    pub mac: String,
    pub ip: String,
}

/// The namespaces and veths; deleting the namespaces on drop deletes everything in them.
#[derive(Debug)]
pub struct Topology {
    pub node: String,
    pub clients: Vec<Client>,
    log: CmdLog,
    namespaces: Vec<String>,
}

impl Topology {
    /// Frames the node side's veth ends dropped so far on their way out to the clients (a
    /// client's queue full), over all client ports: loss in the kernel after any device.
    /// Not their receive drops: a veth counts there every frame its XDP program failed to
    /// deliver, which vwire counts by reason itself.
    #[must_use]
    pub fn port_tx_drops(&self) -> Option<u64> {
        let out = Command::new("ip")
            .args(["-n", &self.node, "-s", "-j", "link", "show"])
            .output()
            .ok()?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let mut drops = 0;
        for link in links.as_array()? {
            let name = link.get("ifname")?.as_str()?;
            if self.clients.iter().any(|c| c.port == name) {
                let stats = link.get("stats64")?;
                drops += stats.get("tx")?.get("dropped")?.as_u64()?;
            }
        }
        Some(drops)
    }

    /// Creates the node namespace and `n` clients, with names starting with `prefix`.
    pub fn create(prefix: &str, n: usize, log: &CmdLog) -> anyhow::Result<Self> {
        let node = format!("{prefix}-node");
        let mut topo = Self {
            node: node.clone(),
            clients: Vec::new(),
            log: log.clone(),
            namespaces: Vec::new(),
        };
        let ipv6_off = [
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ];
        run(log, &sv(&["ip", "netns", "add", &node]))?;
        topo.namespaces.push(node.clone());
        run(log, &sv(&["ip", "-n", &node, "link", "set", "lo", "up"]))?;
        run(log, &in_ns(&node, &ipv6_off))?;
        for i in 0..n {
            let ns = format!("{prefix}-c{i}");
            run(log, &sv(&["ip", "netns", "add", &ns]))?;
            topo.namespaces.push(ns.clone());
            run(log, &sv(&["ip", "-n", &ns, "link", "set", "lo", "up"]))?;
            run(log, &in_ns(&ns, &ipv6_off))?;
            let c = Client {
                ns: ns.clone(),
                dev: "nsm-1".to_owned(),
                port: format!("p{i}"),
                mac: format!("02:76:77:00:00:{:02x}", i + 1),
                ip: format!("10.77.0.{}", i + 1),
            };
            run(
                log,
                &sv(&[
                    "ip", "link", "add", &c.port, "netns", &node, "type", "veth", "peer", "name",
                    &c.dev, "netns", &ns,
                ]),
            )?;
            run(
                log,
                &sv(&["ip", "-n", &ns, "link", "set", &c.dev, "address", &c.mac]),
            )?;
            run(
                log,
                &sv(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", c.ip),
                    "dev",
                    &c.dev,
                ]),
            )?;
            run(
                log,
                &in_ns(&ns, &["ethtool", "-K", &c.dev, "tx", "off", "gro", "on"]),
            )?;
            run(log, &sv(&["ip", "-n", &ns, "link", "set", &c.dev, "up"]))?;
            run(log, &sv(&["ip", "-n", &node, "link", "set", &c.port, "up"]))?;
            topo.clients.push(c);
        }
        Ok(topo)
    }

    /// Sets the MTU of both ends of every client wire (before a device is started on them).
    ///
    /// # Errors
    /// `ip link set` fails.
    pub fn set_mtu(&self, mtu: u32) -> anyhow::Result<()> {
        let mtu = mtu.to_string();
        for c in &self.clients {
            run(
                &self.log,
                &sv(&["ip", "-n", &self.node, "link", "set", &c.port, "mtu", &mtu]),
            )?;
            run(
                &self.log,
                &sv(&["ip", "-n", &c.ns, "link", "set", &c.dev, "mtu", &mtu]),
            )?;
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = run(&self.log, &sv(&["ip", "netns", "del", ns]));
        }
    }
}

/// A child process killed (SIGTERM, then SIGKILL after 3 s) on drop.
#[derive(Debug)]
pub struct ChildGuard {
    pub child: Option<Child>,
    /// Signal the whole process group (for tools that fork, like trafgen).
    pub group: bool,
}

impl ChildGuard {
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig`, waits up to `grace`, then SIGKILLs. Returns stdout if it was piped.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Option<String> {
        let mut child = self.child.take()?;
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return None;
        };
        let target = if self.group { -pid } else { pid };
        // SAFETY: signalling our own child (or its process group), which has not been reaped.
        unsafe { libc::kill(target, sig) };
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    // SAFETY: as above.
                    unsafe { libc::kill(target, libc::SIGKILL) };
                    let _ = child.wait();
                    break;
                }
            }
        }
        if self.group {
            // Children of a forking tool may outlive the leader: make sure they are gone.
            // SAFETY: signalling a process group we created.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let mut out = String::new();
        child.stdout.take()?.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Waits for exit and returns stdout (which must be piped), killing it after `timeout`.
    pub fn wait_output(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().context("no child")?;
            if let Some(status) = child.try_wait()? {
                let mut out = String::new();
                if let Some(mut so) = child.stdout.take() {
                    so.read_to_string(&mut out)?;
                }
                let mut err = String::new();
                if let Some(mut se) = child.stderr.take() {
                    let _ = se.read_to_string(&mut err);
                }
                self.child = None;
                if !status.success() {
                    bail!("child failed ({status}): {}", err.trim());
                }
                return Ok(out);
            }
            if Instant::now() >= deadline {
                self.stop(libc::SIGTERM, Duration::from_secs(1));
                bail!("child did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(3));
    }
}

/// Spawns argv with stdout (and stderr) piped, guarded.
pub fn spawn_piped(log: &CmdLog, args: &[String], group: bool) -> anyhow::Result<ChildGuard> {
    use std::os::unix::process::CommandExt as _;
    let mut c = command(log, args);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if group {
        c.process_group(0);
    }
    let child = c
        .spawn()
        .with_context(|| format!("spawning {}", display(args)))?;
    Ok(ChildGuard {
        child: Some(child),
        group,
    })
}

/// The device under test, set up in the node namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DutKind {
    LinuxBridge,
    Vwire { bin: PathBuf },
    OvsAfxdp,
}

impl DutKind {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::LinuxBridge => "linux-bridge",
            Self::Vwire { .. } => "vwire",
            Self::OvsAfxdp => "ovs-afxdp",
        }
    }
}

/// A running device under test; stopping it (on drop) leaves the topology as it was.
#[derive(Debug)]
pub struct Dut {
    pub kind: DutKind,
    /// The forwarding process, if the bridge runs in user space.
    pub proc: Option<ChildGuard>,
    /// The Open vSwitch daemons (detached, so not children of ours).
    pub ovs: Option<Ovs>,
    pub workdir: PathBuf,
}

impl Dut {
    /// Starts `kind` on `topo`'s ports. `workdir` holds configs, sockets and logs.
    pub fn start(
        kind: &DutKind,
        topo: &Topology,
        workdir: &Path,
        log: &CmdLog,
        vwire_globals: &str,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(workdir)?;
        let node = &topo.node;
        let mut dut = Self {
            kind: kind.clone(),
            proc: None,
            ovs: None,
            workdir: workdir.to_owned(),
        };
        match kind {
            DutKind::LinuxBridge => {
                run(
                    log,
                    &sv(&["ip", "-n", node, "link", "add", "br0", "type", "bridge"]),
                )?;
                for c in &topo.clients {
                    run(
                        log,
                        &sv(&["ip", "-n", node, "link", "set", &c.port, "master", "br0"]),
                    )?;
                }
                run(log, &sv(&["ip", "-n", node, "link", "set", "br0", "up"]))?;
            }
            DutKind::Vwire { bin } => {
                let ports: Vec<String> = topo
                    .clients
                    .iter()
                    .map(|c| format!("{:?}", c.port))
                    .collect();
                let cfg = format!(
                    "{vwire_globals}\n[[bridge_domain]]\nname = \"vwire\"\nports = [{}]\n",
                    ports.join(", ")
                );
                let cfg_path = workdir.join("vwire.toml");
                fs::write(&cfg_path, &cfg)?;
                let sock = workdir.join("vwire.sock");
                let _ = fs::remove_file(&sock);
                let logf = fs::File::create(workdir.join("vwire.log"))?;
                let args = in_ns(
                    node,
                    &[
                        &bin.to_string_lossy(),
                        "run",
                        "--config",
                        &cfg_path.to_string_lossy(),
                        "--socket",
                        &sock.to_string_lossy(),
                    ],
                );
                let child = command(log, &args)
                    .stdin(Stdio::null())
                    .stdout(logf.try_clone()?)
                    .stderr(logf)
                    .spawn()
                    .context("spawning vwire")?;
                dut.proc = Some(ChildGuard {
                    child: Some(child),
                    group: false,
                });
                // Ready when the control socket answers.
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    let ok = Command::new(bin)
                        .args(["show", "interfaces", "--json", "--socket"])
                        .arg(&sock)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        break;
                    }
                    if let Some(Ok(Some(st))) = dut
                        .proc
                        .as_mut()
                        .and_then(|p| p.child.as_mut())
                        .map(Child::try_wait)
                    {
                        let logtxt =
                            fs::read_to_string(workdir.join("vwire.log")).unwrap_or_default();
                        bail!("vwire exited during start-up ({st}): {logtxt}");
                    }
                    if Instant::now() > deadline {
                        bail!("vwire did not come up within 15 s");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            DutKind::OvsAfxdp => dut.ovs = Some(Ovs::start(topo, workdir, log)?),
        }
        Ok(dut)
    }

    /// Process id of the forwarder, for CPU accounting.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.proc
            .as_ref()
            .and_then(ChildGuard::pid)
            .or_else(|| self.ovs.as_ref().and_then(|o| o.vswitchd_pid))
    }

    /// Forgets every learned station (static entries stay), between trials that each teach
    /// the device new ones.
    pub fn flush_fdb(&self, topo: &Topology, log: &CmdLog) -> anyhow::Result<()> {
        match &self.kind {
            DutKind::LinuxBridge => run(
                log,
                &sv(&[
                    "ip",
                    "-n",
                    &topo.node,
                    "link",
                    "set",
                    "br0",
                    "type",
                    "bridge",
                    "fdb_flush",
                ]),
            ),
            DutKind::Vwire { bin } => run(
                log,
                &sv(&[
                    &bin.to_string_lossy(),
                    "fdb",
                    "flush",
                    "--socket",
                    &self.workdir.join("vwire.sock").to_string_lossy(),
                ]),
            ),
            DutKind::OvsAfxdp => self
                .ovs
                .as_ref()
                .context("Open vSwitch is not running")?
                .appctl(&["fdb/flush", "br0"]),
        }
        .map(drop)
    }

    /// Frames lost so far, by reason: vwire's own counters summed over its ports (empty for
    /// other devices), and the ports' transmit drops as `port_tx_dropped`. Diffed around a
    /// measurement, they say where a row's loss happened.
    #[must_use]
    pub fn losses(&self, topo: &Topology) -> Losses {
        let mut losses = match self.kind {
            DutKind::Vwire { .. } => self
                .interfaces_json()
                .and_then(|j| vwire_losses(&j))
                .unwrap_or_default(),
            _ => Losses::new(),
        };
        if let Some(n) = topo.port_tx_drops() {
            losses.insert("port_tx_dropped".to_owned(), n);
        }
        losses
    }

    /// The control socket's `show interfaces --json`.
    fn interfaces_json(&self) -> Option<String> {
        let DutKind::Vwire { bin } = &self.kind else {
            return None;
        };
        let out = Command::new(bin)
            .args(["show", "interfaces", "--json", "--socket"])
            .arg(self.workdir.join("vwire.sock"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Loss counters by reason (`rx_fill_ring_empty`, `tx_ring_full`, ...), zeros left out.
pub type Losses = std::collections::BTreeMap<String, u64>;

/// Sums the counters of frames lost in `show interfaces --json` over all ports: the
/// forwarder's drops by reason, the kernel's AF_XDP socket drops and the XDP program's failed
/// redirects.
fn vwire_losses(json: &str) -> Option<Losses> {
    let status: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut sums = Losses::new();
    for port in status.get("interfaces")?.as_array()? {
        let mut add = |name: &str, n: u64| {
            if n > 0 {
                *sums.entry(name.to_owned()).or_default() += n;
            }
        };
        for (reason, n) in port.get("drops")?.as_object()? {
            add(reason, n.as_u64()?);
        }
        let kernel = |name: &str| port.get("kernel")?.get(name)?.as_u64();
        // The kernel counts a frame it found no fill ring slot for in `rx_dropped` as well.
        let fill_empty = kernel("rx_fill_ring_empty_descs")?;
        add("rx_fill_ring_empty", fill_empty);
        add(
            "rx_dropped_other",
            kernel("rx_dropped")?.saturating_sub(fill_empty),
        );
        for name in ["rx_ring_full", "rx_invalid_descs", "tx_invalid_descs"] {
            add(name, kernel(name)?);
        }
        add("xdp_aborted", port.get("xdp")?.get("aborted")?.as_u64()?);
    }
    Some(sums)
}

/// What grew from `before` to `after`, as `reason count` pairs, largest first.
#[must_use]
pub fn losses_between(before: &Losses, after: &Losses) -> Vec<(String, u64)> {
    let mut grown: Vec<(String, u64)> = after
        .iter()
        .map(|(k, &n)| {
            (
                k.clone(),
                n.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    grown.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    grown
}

impl Drop for Dut {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(libc::SIGTERM, Duration::from_secs(5));
        }
        // Ovs's own Drop stops its daemons.
        self.ovs.take();
    }
}

/// Where Debian's `openvswitch-common` puts the database schema.
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// `ovsdb-server` + `ovs-vswitchd` started by hand inside the node namespace, with every
/// file (database, sockets, pidfiles, logs) in a private directory: nothing touches the
/// host's `/var/run/openvswitch`. Bridge `br0` with `datapath_type=netdev` (the userspace
/// datapath) and one `type=afxdp options:xdp-mode=native` port per veth. Stopped (and the
/// AF_XDP sockets and XDP programs released) on drop.
#[derive(Debug)]
pub struct Ovs {
    dir: PathBuf,
    log: CmdLog,
    /// The forwarding process (its PMD threads included), for CPU accounting.
    pub vswitchd_pid: Option<u32>,
    ovsdb_pid: Option<u32>,
}

impl Ovs {
    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    /// `env OVS_*DIR=... <args>` so that no tool falls back to the system directories.
    fn env(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "env".to_owned(),
            format!("OVS_RUNDIR={}", self.path("run")),
            format!("OVS_DBDIR={}", self.path("db")),
            format!("OVS_LOGDIR={}", self.path("log")),
            format!("OVS_SYSCONFDIR={}", self.path("etc")),
        ];
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    }

    fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}", self.path("run/db.sock"));
        let mut a = vec!["ovs-vsctl", "--timeout=30", &db];
        a.extend_from_slice(args);
        run(&self.log, &self.env(&a))
    }

    fn appctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let ctl = self.path("run/ovs-vswitchd.ctl");
        let mut a = vec!["ovs-appctl", "--timeout=10", "-t", &ctl];
        a.extend_from_slice(args);
        run(&self.log, &self.env(&a))
    }

    fn read_pid(&self, name: &str) -> Option<u32> {
        fs::read_to_string(self.dir.join("run").join(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn log_tail(&self) -> String {
        let txt = fs::read_to_string(self.dir.join("log/ovs-vswitchd.log")).unwrap_or_default();
        let lines: Vec<&str> = txt
            .lines()
            .filter(|l| l.contains("|ERR|") || l.contains("|WARN|") || l.contains("|EMER|"))
            .collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Starts the daemons in `topo`'s node namespace and adds every port.
    pub fn start(topo: &Topology, workdir: &Path, log: &CmdLog) -> anyhow::Result<Self> {
        let dir = workdir.join("ovs");
        let _ = fs::remove_dir_all(&dir);
        for d in ["run", "db", "log", "etc"] {
            fs::create_dir_all(dir.join(d))?;
        }
        let mut ovs = Self {
            dir,
            log: log.clone(),
            vswitchd_pid: None,
            ovsdb_pid: None,
        };
        let node = &topo.node;
        let db = ovs.path("db/conf.db");
        run(log, &ovs.env(&["ovsdb-tool", "create", &db, OVS_SCHEMA]))?;
        let remote = format!("--remote=punix:{}", ovs.path("run/db.sock"));
        let pidfile = format!("--pidfile={}", ovs.path("run/ovsdb-server.pid"));
        let ctl = format!("--unixctl={}", ovs.path("run/ovsdb-server.ctl"));
        let logf = format!("--log-file={}", ovs.path("log/ovsdb-server.log"));
        let mut a = sv(&["ip", "netns", "exec", node]);
        a.extend(ovs.env(&[
            "ovsdb-server",
            &db,
            &remote,
            &pidfile,
            &ctl,
            &logf,
            "--no-chdir",
            "--detach",
        ]));
        run(log, &a).context("starting ovsdb-server")?;
        ovs.ovsdb_pid = ovs.read_pid("ovsdb-server");
        ovs.vsctl(&["--no-wait", "init"])?;
        let dbsock = format!("unix:{}", ovs.path("run/db.sock"));
        let pidfile = format!("--pidfile={}", ovs.path("run/ovs-vswitchd.pid"));
        let ctl = format!("--unixctl={}", ovs.path("run/ovs-vswitchd.ctl"));
        let logf = format!("--log-file={}", ovs.path("log/ovs-vswitchd.log"));
        let mut a = sv(&["ip", "netns", "exec", node]);
        a.extend(ovs.env(&[
            "ovs-vswitchd",
            &dbsock,
            &pidfile,
            &ctl,
            &logf,
            "--no-chdir",
            "--detach",
        ]));
        run(log, &a).context("starting ovs-vswitchd")?;
        ovs.vswitchd_pid = ovs.read_pid("ovs-vswitchd");
        let types = ovs.vsctl(&["get", "Open_vSwitch", ".", "iface_types"])?;
        if !types.contains("afxdp") {
            bail!(
                "this ovs-vswitchd has no AF_XDP support (iface_types {})",
                types.trim()
            );
        }
        ovs.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
            &format!(
                "other_config:mac-table-size={}",
                crate::runner::BENCH_STATIONS_PER_PORT
            ),
        ])?;
        for c in &topo.clients {
            ovs.vsctl(&[
                "add-port",
                "br0",
                &c.port,
                "--",
                "set",
                "interface",
                &c.port,
                "type=afxdp",
                "options:xdp-mode=native",
            ])?;
        }
        // ovs-vsctl waited for ovs-vswitchd to apply each change: any port it could not
        // open reports an error (and ofport -1) now.
        for c in &topo.clients {
            let err = ovs.vsctl(&["get", "interface", &c.port, "error"])?;
            let ofport = ovs.vsctl(&["get", "interface", &c.port, "ofport"])?;
            let err = err.trim();
            if (!err.is_empty() && err != "[]") || ofport.trim() == "-1" {
                bail!(
                    "ovs-vswitchd could not open {} as an AF_XDP port (ofport {}): {err}; log: {}",
                    c.port,
                    ofport.trim(),
                    ovs.log_tail()
                );
            }
        }
        run(log, &sv(&["ip", "-n", node, "link", "set", "br0", "up"]))?;
        Ok(ovs)
    }
}

/// Waits up to `grace` for `pid` (one of ours, named `name`) to exit, then SIGKILLs it.
fn reap(pid: u32, name: &str, grace: Duration) {
    let alive =
        || fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains(name));
    let deadline = Instant::now() + grace;
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive() {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            // SAFETY: a daemon this runner started (checked by its command line above).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        // `exit --cleanup` deletes the datapath and its ports: the AF_XDP sockets close and
        // the XDP programs come off the veths before the namespace goes.
        let _ = self.appctl(&["exit", "--cleanup"]);
        if let Some(p) = self.vswitchd_pid {
            reap(p, "ovs-vswitchd", Duration::from_secs(5));
        }
        let ctl = self.path("run/ovsdb-server.ctl");
        let _ = run(
            &self.log,
            &self.env(&["ovs-appctl", "--timeout=5", "-t", &ctl, "exit"]),
        );
        if let Some(p) = self.ovsdb_pid {
            reap(p, "ovsdb-server", Duration::from_secs(3));
        }
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11).context("short stat")?.parse()?;
    let stime: f64 = f.get(12).context("short stat")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[allow(
        clippy::cast_precision_loss,
        reason = "clock ticks per second is small"
    )]
    Ok((utime + stime) / tck.max(1) as f64)
}

/// The whole machine's CPU time so far, from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq + steal (guest time is inside user).
    pub busy: u64,
    /// `busy` + idle + iowait.
    pub total: u64,
    /// CPUs online (the `cpuN` lines).
    pub cpus: usize,
}

impl MachineCpu {
    /// Reads `/proc/stat` now.
    pub fn now() -> anyhow::Result<Self> {
        let stat = fs::read_to_string("/proc/stat")?;
        Self::parse(&stat).context("no aggregate cpu line in /proc/stat")
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal] =
            std::array::from_fn(|i| f.get(i).copied().unwrap_or(0));
        let busy = user + nice + system + irq + softirq + steal;
        let cpus = stat
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu")
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        Some(Self {
            busy,
            total: busy + idle + iowait,
            cpus,
        })
    }

    /// CPUs kept busy on average between `earlier` and `self` (0 to the number of CPUs).
    #[must_use]
    pub fn busy_cpus_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        #[allow(
            clippy::cast_precision_loss,
            reason = "tick counts and CPU counts are small"
        )]
        Some(busy as f64 / total as f64 * self.cpus as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::{losses_between, vwire_losses, MachineCpu};

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_not_busy() {
        let before = "cpu  100 5 50 1000 10 1 20 4 0 0\ncpu0 50 0 25 500 5 0 10 2 0 0\n\
                      cpu1 50 5 25 500 5 1 10 2 0 0\nintr 7\n";
        let after = "cpu  300 5 150 1100 10 1 120 4 0 0\ncpu0 150 0 75 550 5 0 60 2 0 0\n\
                     cpu1 150 5 75 550 5 1 60 2 0 0\nintr 9\n";
        let (a, b) = (
            MachineCpu::parse(before).unwrap(),
            MachineCpu::parse(after).unwrap(),
        );
        assert_eq!(a.busy, 100 + 5 + 50 + 1 + 20 + 4);
        assert_eq!(a.total, a.busy + 1000 + 10);
        assert_eq!(a.cpus, 2);
        // 400 busy ticks of 500 on two CPUs: 1.6 CPUs busy.
        let cpus = b.busy_cpus_since(&a).unwrap();
        assert!((cpus - 1.6).abs() < 1e-9, "{cpus}");
        assert_eq!(a.busy_cpus_since(&a), None, "no time passed");
        assert_eq!(MachineCpu::parse("intr 1 2 3\n"), None);
    }

    /// Two ports as `vwire show interfaces --json` prints them, trimmed to what matters.
    const STATUS: &str = r#"{"interfaces": [
        {"name": "a", "rx_frames": 100, "drops": {"runt": 2, "tx_ring_full": 0},
         "xdp": {"redirected": 90, "passed": 3, "aborted": 1},
         "kernel": {"rx_dropped": 9, "rx_ring_full": 4, "rx_fill_ring_empty_descs": 7,
                    "rx_invalid_descs": 0, "tx_invalid_descs": 0, "tx_ring_empty_descs": 50}},
        {"name": "b", "rx_frames": 5, "drops": {"runt": 1, "tx_ring_full": 6},
         "xdp": {"redirected": 5, "passed": 0, "aborted": 0},
         "kernel": {"rx_dropped": 3, "rx_ring_full": 0, "rx_fill_ring_empty_descs": 3,
                    "rx_invalid_descs": 0, "tx_invalid_descs": 0, "tx_ring_empty_descs": 9}}
    ], "umem": {"frames": 10}, "fdb_entries": 2}"#;

    #[test]
    fn losses_sum_ports_and_leave_out_what_is_not_a_loss() {
        let l = vwire_losses(STATUS).unwrap();
        let got: Vec<(&str, u64)> = l.iter().map(|(k, &n)| (k.as_str(), n)).collect();
        // Not `passed` (the kernel got those frames), not `tx_ring_empty` (an idle ring), and
        // a frame without a fill slot once although the kernel counts it twice.
        assert_eq!(
            got,
            [
                ("runt", 3),
                ("rx_dropped_other", 2),
                ("rx_fill_ring_empty", 10),
                ("rx_ring_full", 4),
                ("tx_ring_full", 6),
                ("xdp_aborted", 1)
            ]
        );
        assert_eq!(vwire_losses("not json"), None);
        assert_eq!(vwire_losses(r#"{"interfaces": [{"name": "a"}]}"#), None);
    }

    #[test]
    fn losses_between_lists_growth_largest_first() {
        let before = vwire_losses(STATUS).unwrap();
        let mut after = before.clone();
        *after.get_mut("runt").unwrap() += 1;
        *after.get_mut("rx_fill_ring_empty").unwrap() += 500;
        after.insert("mtu_exceeded".to_owned(), 2);
        assert_eq!(
            losses_between(&before, &after),
            [
                ("rx_fill_ring_empty".to_owned(), 500),
                ("mtu_exceeded".to_owned(), 2),
                ("runt".to_owned(), 1)
            ]
        );
        assert!(losses_between(&after, &after).is_empty());
    }
}
