//! Harness for the privileged, black-box integration tests of the `vwire` daemon.
//!
//! Every test builds its own topology: one "node" namespace where the daemon runs, and one
//! namespace per client. A client wire is a veth pair: the host end lives in the node namespace
//! (it is a port of the bridge), the client end `nsm-1` lives in the client namespace with a fixed
//! MAC and IPv4 address. All names carry the pid, a per-process counter and the test's tag, so
//! tests run in parallel and reruns start clean. Everything is torn down on drop, panics included.
//!
//! The tests run only with `BRIDGE_PRIVILEGED=1` (and then must be root); otherwise they print
//! why they skip and return.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the harness"
)]

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Name of the client end of every wire, inside its client namespace.
pub const CLIENT_IF: &str = "nsm-1";
/// IEEE 802 "local experimental" EtherType 1: the kernel stacks ignore it.
pub const ETH_P_EXPERIMENTAL: u16 = 0x88b5;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// Returns true when privileged tests should run. Prints a visible notice and returns false
/// when `BRIDGE_PRIVILEGED=1` is not set; panics when it is set but we are not root.
pub fn privileged(test: &str) -> bool {
    if std::env::var("BRIDGE_PRIVILEGED").as_deref() != Ok("1") {
        // Written to fd 2 directly: eprintln! output is captured (hidden) for passing tests.
        let _ = writeln!(
            io::stderr(),
            "SKIPPED {test}: privileged test, set BRIDGE_PRIVILEGED=1 (as root) to run it"
        );
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "BRIDGE_PRIVILEGED=1 is set but the test does not run as root"
    );
    true
}

/// Skips (returns from) the calling test unless privileged tests are enabled.
#[macro_export]
macro_rules! require_privileged {
    ($name:expr) => {
        if !$crate::common::privileged($name) {
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------------
// Commands

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion and returns its output, without checking the status.
pub fn output(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&cmd)))
}

/// Runs a command, asserts it succeeds, and returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `args` inside network namespace `ns`, asserts success, and returns stdout.
pub fn ns_run(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Runs `args` inside network namespace `ns` and returns the raw output.
pub fn ns_output(ns: &str, args: &[&str]) -> Output {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    output("ip", &full)
}

/// Pings `ip` from namespace `ns`: `count` echoes 0.2 s apart, 1 s to wait for each reply.
/// The caller decides what counts as success (any reply, or no loss).
pub fn ping(ns: &str, ip: &str, count: u32) -> Output {
    ping_with(ns, ip, count, &[])
}

/// As [`ping`], with more options (e.g. `-M do -s 3300`: large and unfragmented).
pub fn ping_with(ns: &str, ip: &str, count: u32, options: &[&str]) -> Output {
    let count = count.to_string();
    let mut args = vec!["ping", "-c", &count, "-i", "0.2", "-W", "1"];
    args.extend_from_slice(options);
    args.push(ip);
    ns_output(ns, &args)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// Runs `f` on a fresh thread that has joined network namespace `ns`. Sockets created there keep
/// that namespace after the thread ends.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: the fd is a valid open netns file; setns only affects this thread, which
            // is a dedicated thread that never goes back to the original namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", io::Error::last_os_error());
            f()
        })
        .expect("spawn netns thread")
}

/// Runs `f` inside network namespace `ns` and returns its result (panics propagate).
pub fn in_netns<T, F>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match spawn_in_netns(ns, f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set; CPU_SET writes within it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity(cpu {cpu}): {}",
        io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------------------
// Topology

/// One client: its namespace, the host end (a bridge port in the node namespace), MAC and IP.
#[derive(Debug, Clone)]
pub struct Client {
    pub ns: String,
    pub host_if: String,
    pub mac: [u8; 6],
    /// IPv4 address without prefix length.
    pub ip: String,
}

pub struct TopologyBuilder {
    tag: String,
    test_id: u8,
    clients: usize,
    queues: u32,
    gro: bool,
    tx_checksum_offload: bool,
}

impl TopologyBuilder {
    /// Turn GRO on at every client end, which lets the host ends take XDP-redirected frames:
    /// the daemon's fast path then carries known unicast between them. Default: off, unless
    /// `VWIRE_TEST_FAST_PATH` is set (`cargo xtask test` runs every test both ways).
    pub fn gro(mut self, on: bool) -> Self {
        self.gro = on;
        self
    }

    /// Leave TX checksum offload on at every client end, as a veth comes: TCP and UDP then
    /// leave the clients with partial checksums, which vwire completes. Default: off, as the
    /// README asks of whoever creates client wires.
    pub fn tx_checksum_offload(mut self, on: bool) -> Self {
        self.tx_checksum_offload = on;
        self
    }

    /// Number of client wires (default 2).
    pub fn clients(mut self, n: usize) -> Self {
        assert!((1..=9).contains(&n), "1 to 9 clients");
        self.clients = n;
        self
    }

    /// Number of rx and tx queues of both ends of every veth (default 1).
    pub fn queues(mut self, q: u32) -> Self {
        self.queues = q;
        self
    }

    pub fn build(self) -> Topology {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale_namespaces);
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("vw-{pid}-{n}-{}", self.tag);
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut topo = Topology {
            node_ns: format!("{prefix}-node"),
            clients: Vec::new(),
            dir,
            namespaces: Vec::new(),
        };
        // From here on, a panic tears down whatever exists already.
        topo.add_ns(&topo.node_ns.clone());
        for i in 0..self.clients {
            let idx = u8::try_from(i + 1).expect("few clients");
            let client = Client {
                ns: format!("{prefix}-c{idx}"),
                host_if: format!("vw{}{n}{}", pid % 100_000, char::from(b'a' + idx - 1)),
                mac: [0x02, 0, 0, 0, self.test_id, idx],
                ip: format!("10.77.{}.{idx}", self.test_id),
            };
            assert!(
                client.host_if.len() <= 15,
                "ifname too long: {}",
                client.host_if
            );
            topo.add_ns(&client.ns);
            let q = self.queues.to_string();
            let mac = mac_str(&client.mac);
            #[rustfmt::skip]
            run("ip", &[
                "-n", &topo.node_ns, "link", "add", &client.host_if,
                "numtxqueues", &q, "numrxqueues", &q, "type", "veth",
                "peer", "name", CLIENT_IF, "numtxqueues", &q, "numrxqueues", &q,
                "address", &mac, "netns", &client.ns,
            ]);
            // Without this the client sends TCP/UDP with partial checksums, which vwire must
            // complete (see PLATFORM.md); with it, the clients segment TCP in software either way.
            if !self.tx_checksum_offload {
                ns_run(&client.ns, &["ethtool", "-K", CLIENT_IF, "tx", "off"]);
            }
            if self.gro {
                // The client end takes XDP-redirected frames: its port joins the fast path.
                ns_run(&client.ns, &["ethtool", "-K", CLIENT_IF, "gro", "on"]);
            }
            let cidr = format!("{}/24", client.ip);
            ns_run(&client.ns, &["ip", "addr", "add", &cidr, "dev", CLIENT_IF]);
            ns_run(&client.ns, &["ip", "link", "set", CLIENT_IF, "up"]);
            run(
                "ip",
                &["-n", &topo.node_ns, "link", "set", &client.host_if, "up"],
            );
            topo.clients.push(client);
        }
        let ports: Vec<String> = topo
            .clients
            .iter()
            .map(|c| format!("{:?}", c.host_if))
            .collect();
        let config = format!(
            "fdb_max_age_secs = 300\n\n[[bridge_domain]]\nname = \"wire\"\nports = [{}]\n",
            ports.join(", ")
        );
        std::fs::write(topo.config_path(), config).expect("write vwire.toml");
        topo
    }
}

/// Deletes the namespaces and directories left by test processes that died without cleaning up
/// (names `vw-<pid>-...` whose pid is gone).
fn sweep_stale_namespaces() {
    let stale = |name: &str| {
        let Some(rest) = name.strip_prefix("vw-") else {
            return false;
        };
        let pid = rest.split('-').next().unwrap_or("");
        pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
    };
    let list = run("ip", &["netns", "list"]);
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if stale(ns) {
            eprintln!("removing stale namespace {ns}");
            let _ = output("ip", &["netns", "del", ns]);
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten() {
            if e.file_name().to_str().is_some_and(stale) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A test's namespaces and temporary directory; deleted on drop.
pub struct Topology {
    pub node_ns: String,
    pub clients: Vec<Client>,
    pub dir: PathBuf,
    namespaces: Vec<String>,
}

impl Topology {
    /// `tag`: a short name of the test (goes into names); `test_id`: a byte unique among all
    /// tests, used in MACs (02:00:00:00:<id>:<n>) and IPs (10.77.<id>.<n>).
    pub fn builder(tag: &str, test_id: u8) -> TopologyBuilder {
        TopologyBuilder {
            tag: tag.to_owned(),
            test_id,
            clients: 2,
            queues: 1,
            gro: std::env::var_os("VWIRE_TEST_FAST_PATH").is_some(),
            tx_checksum_offload: false,
        }
    }

    fn add_ns(&mut self, ns: &str) {
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = output("ip", &["netns", "del", ns]);
        run("ip", &["netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        // No IPv6: no ND/MLD/RS noise, so clients send nothing unless a test makes them.
        #[rustfmt::skip]
        ns_run(ns, &[
            "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns_run(ns, &["ip", "link", "set", "lo", "up"]);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("vwire.toml")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("vwire.sock")
    }

    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// MACs of every client of this test.
    pub fn client_macs(&self) -> Vec<[u8; 6]> {
        self.clients.iter().map(|c| c.mac).collect()
    }

    /// Starts the daemon in the node namespace and waits until it answers on its socket.
    pub fn start_daemon(&self) -> Daemon {
        Daemon::start(self)
    }

    /// Opens a raw socket on client `i`'s `nsm-1`, receiving only frames from this test's
    /// clients.
    pub fn raw_socket(&self, i: usize) -> RawSocket {
        RawSocket::open(&self.clients[i].ns, CLIENT_IF, self.client_macs())
    }

    /// `ip -d link show <host end>` in the node namespace.
    pub fn host_link_details(&self, i: usize) -> String {
        run(
            "ip",
            &[
                "-n",
                &self.node_ns,
                "-d",
                "link",
                "show",
                &self.clients[i].host_if,
            ],
        )
    }

    /// `ethtool -S` counters of a host end, as (name, value) pairs.
    pub fn host_ethtool_stats(&self, i: usize) -> Vec<(String, u64)> {
        ns_run(&self.node_ns, &["ethtool", "-S", &self.clients[i].host_if])
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once(':')?;
                Some((k.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let out = output("ip", &["netns", "del", ns]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Daemon

/// A running `vwire run`. SIGTERM on drop (SIGKILL after 5 s).
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(topo: &Topology) -> Daemon {
        let log = topo.dir.join("vwire.log");
        let log_file = File::create(&log).expect("create daemon log");
        let bin = env!("CARGO_BIN_EXE_vwire");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.node_ns, bin, "run", "--config"])
            .arg(topo.config_path())
            .arg("--socket")
            .arg(topo.socket_path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log fd"))
            .stderr(log_file);
        // If the test process dies (killed by a timeout), the daemon gets SIGTERM too.
        // SAFETY: prctl is async-signal-safe; the closure touches no shared state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        // `ip netns exec` execs the program in place, so the child pid is the daemon's.
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{}`: {e}", describe(&cmd)));
        let mut daemon = Daemon {
            child: Some(child),
            socket: topo.socket_path(),
            log,
        };
        daemon.wait_ready(Duration::from_secs(15));
        daemon
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "vwire exited during startup with {status}\n--- log ---\n{}",
                    self.log()
                );
            }
            let out = self.cli(&["show", "interfaces", "--json"]);
            if out.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "vwire did not answer `show interfaces` within {timeout:?}; last CLI stderr: {}\n--- daemon log ---\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// The daemon's stderr/stdout so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Runs `vwire <args> --socket S` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vwire"));
        cmd.args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null());
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe(&cmd)))
    }

    /// Runs a `show ... --json` command and parses its output.
    pub fn show_json(&self, what: &str) -> Value {
        let out = self.cli(&["show", what, "--json"]);
        assert!(
            out.status.success(),
            "`vwire show {what} --json` failed with {}: {}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`vwire show {what} --json` printed invalid JSON ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `show interfaces --json`.
    pub fn interfaces(&self) -> Value {
        self.show_json("interfaces")
    }

    /// `show fdb --json`.
    pub fn fdb(&self) -> Value {
        self.show_json("fdb")
    }

    /// The `show interfaces` entry of port `name`.
    pub fn interface(&self, name: &str) -> Value {
        let all = self.interfaces();
        find_interface(&all, name).clone()
    }

    /// A counter of port `name`, at a JSON pointer such as `/rx_frames` or `/drops/runt`.
    pub fn counter(&self, name: &str, pointer: &str) -> u64 {
        counter(&self.interface(name), pointer)
    }

    /// The fdb entry for `mac`, if any.
    pub fn fdb_entry(&self, mac: &[u8; 6]) -> Option<Value> {
        let want = mac_str(mac);
        let fdb = self.fdb();
        let entries = fdb["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("fdb JSON has no `entries` array: {fdb}"));
        entries
            .iter()
            .find(|e| {
                e["mac"]
                    .as_str()
                    .is_some_and(|m| m.eq_ignore_ascii_case(&want))
            })
            .cloned()
    }

    /// Sends SIGTERM and waits (SIGKILL after 5 s); returns the exit status.
    pub fn stop(self) -> ExitStatus {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `signal` and waits (SIGKILL after 5 s); returns the exit status.
    pub fn stop_with(mut self, signal: libc::c_int) -> ExitStatus {
        self.terminate(signal).unwrap_or_else(|| {
            panic!(
                "daemon did not stop within 5 s of signal {signal}\n--- log ---\n{}",
                self.log()
            )
        })
    }

    /// Sends `signal`, waits up to 5 s, then SIGKILL. Returns the status if it exited in time.
    fn terminate(&mut self, signal: libc::c_int) -> Option<ExitStatus> {
        terminate_child(self.child.take()?, signal)
    }
}

/// Sends `signal` to a child and reaps it; `None` if it had not exited 5 s later, when it is
/// killed (a daemon that hangs on shutdown must not hang the test, or leave its namespaces).
pub fn terminate_child(mut child: Child, signal: libc::c_int) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child.
    unsafe { libc::kill(pid, signal) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let running = self.child.is_some();
        let status = self.terminate(libc::SIGTERM);
        if running && status.is_none() {
            eprintln!("vwire ignored SIGTERM for 5 s and was killed");
        }
        if std::thread::panicking() {
            eprintln!(
                "--- vwire log (test failed) ---\n{}\n--- end of vwire log ---",
                self.log()
            );
        }
    }
}

/// The entry of port `name` in a `show interfaces --json` document.
pub fn find_interface<'a>(all: &'a Value, name: &str) -> &'a Value {
    all["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no `interfaces` array in {all}"))
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("port {name} not in `show interfaces`: {all}"))
}

/// A numeric field at a JSON pointer (e.g. `/xdp/passed`); panics with the document if absent.
pub fn counter(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no counter at {pointer} in {v}"))
}

// ---------------------------------------------------------------------------------------------
// Frames

pub fn mac_str(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Builds an Ethernet II frame.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn frame_dst(f: &[u8]) -> [u8; 6] {
    f[0..6].try_into().expect("6 bytes")
}

pub fn frame_src(f: &[u8]) -> [u8; 6] {
    f[6..12].try_into().expect("6 bytes")
}

pub fn frame_ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

/// A deterministic byte pattern (xorshift), different for each seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_OUTGOING: u8 = 4;

/// An AF_PACKET raw socket bound to one interface of a client namespace.
pub struct RawSocket {
    fd: OwnedFd,
    ns: String,
    /// `recv_frames` keeps only frames whose source MAC is in this list.
    accept_src: Vec<[u8; 6]>,
}

impl RawSocket {
    pub fn open(ns: &str, ifname: &str, accept_src: Vec<[u8; 6]>) -> RawSocket {
        let ifname_owned = ifname.to_owned();
        let fd = in_netns(ns, move || open_packet_socket(&ifname_owned));
        let sock = RawSocket {
            fd,
            ns: ns.to_owned(),
            accept_src,
        };
        sock.drain();
        sock
    }

    /// Bypasses the qdisc, so the tx queue is picked from the sending CPU (cpu % queues).
    pub fn set_qdisc_bypass(&self) {
        setsockopt_int(&self.fd, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1);
    }

    /// Sends one frame; panics on error.
    pub fn send(&self, frame: &[u8]) {
        self.try_send(frame)
            .unwrap_or_else(|e| panic!("send of a {}-byte frame in {}: {e}", frame.len(), self.ns));
    }

    pub fn try_send(&self, frame: &[u8]) -> io::Result<()> {
        send_frame(&self.fd, frame)
    }

    /// Discards everything queued so far.
    pub fn drain(&self) {
        while self.recv_one(Duration::ZERO).is_some() {}
    }

    /// Collects, until `timeout` has passed, the received frames whose source MAC is one of the
    /// test's clients.
    pub fn recv_frames(&self, timeout: Duration) -> Vec<Vec<u8>> {
        self.recv_frames_where(timeout, |f| self.accept_src.contains(&frame_src(f)))
    }

    /// Collects, until `timeout` has passed, the received frames for which `keep` holds.
    pub fn recv_frames_where(
        &self,
        timeout: Duration,
        keep: impl FnMut(&[u8]) -> bool,
    ) -> Vec<Vec<u8>> {
        collect_frames(timeout, |left| self.recv_one(left), keep)
    }

    /// Receives until `count` frames matching `keep` arrived or `timeout` passed.
    pub fn recv_count_where(
        &self,
        count: usize,
        timeout: Duration,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        while frames.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_one(left) {
                Some(f) if f.len() >= 14 && keep(&f) => frames.push(f),
                Some(_) => {}
                None if left.is_zero() => break,
                None => {}
            }
        }
        frames
    }

    /// One incoming frame, waiting at most `timeout`.
    fn recv_one(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EINTR), "poll: {err}");
            return None;
        }
        if rc == 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        // SAFETY: sockaddr_ll is plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut alen = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small");
        // SAFETY: buf and addr are valid for their lengths for the duration of the call.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&raw mut addr).cast(),
                &mut alen,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            assert!(
                matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)),
                "recvfrom: {err}"
            );
            return None;
        }
        if addr.sll_pkttype == PACKET_OUTGOING {
            // Our own transmissions (PACKET_IGNORE_OUTGOING should already hide them).
            return Some(Vec::new());
        }
        buf.truncate(n.unsigned_abs());
        Some(buf)
    }
}

pub fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: libc::c_int) {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).expect("small");
    // SAFETY: val lives across the call and len is its size.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (&raw const val).cast(), len) };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {opt}): {}",
        io::Error::last_os_error()
    );
}

/// Collects, until `timeout` has passed, the whole Ethernet frames `recv_one` returns for
/// which `keep` holds. `recv_one(left)` waits at most `left` and returns `None` on timeout.
pub fn collect_frames(
    timeout: Duration,
    mut recv_one: impl FnMut(Duration) -> Option<Vec<u8>>,
    mut keep: impl FnMut(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_one(left) {
            Some(f) if f.len() >= 14 && keep(&f) => frames.push(f),
            Some(_) => {}
            None if left.is_zero() => return frames,
            None => {}
        }
    }
}

/// Sends one frame on a raw socket. A full queue (`ENOBUFS`/`EAGAIN`) is retried for up to
/// 2 s, then returned: a veth answers `ENOBUFS` for every frame it will never take (too
/// large, link down), so retrying forever would hang the test.
pub fn send_frame(fd: &OwnedFd, frame: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: the buffer is valid for frame.len() bytes; the fd is an open socket.
        let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n >= 0 {
            assert_eq!(n.unsigned_abs(), frame.len(), "short send");
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::ENOBUFS | libc::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            _ => return Err(err),
        }
    }
}

/// A raw AF_PACKET socket bound to `ifname` that ignores its own transmissions.
pub fn open_packet_socket(ifname: &str) -> OwnedFd {
    let cname = CString::new(ifname).expect("ifname has no NUL");
    // SAFETY: cname is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert_ne!(
        ifindex,
        0,
        "no interface {ifname}: {}",
        io::Error::last_os_error()
    );
    // Protocol 0: receive nothing until bound to the interface below.
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        raw >= 0,
        "socket(AF_PACKET): {}",
        io::Error::last_os_error()
    );
    // SAFETY: raw is a fresh fd that we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1);
    // Room for a few thousand frames: tests send bursts and read them afterwards.
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20);
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = u16::try_from(libc::AF_PACKET).expect("small");
    addr.sll_protocol = u16::try_from(libc::ETH_P_ALL).expect("small").to_be();
    addr.sll_ifindex = i32::try_from(ifindex).expect("ifindex fits i32");
    let alen = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small");
    // SAFETY: addr is a valid sockaddr_ll of length alen.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), alen) };
    assert_eq!(
        rc,
        0,
        "bind AF_PACKET to {ifname}: {}",
        io::Error::last_os_error()
    );
    fd
}
