//! `cargo xtask soak [--minutes N]`: mixed traffic through the daemon for N minutes (10 by
//! default, 1 in CI) while a port is added and removed over and over, checking every 10 s that
//! the UMEM accounting balances and that the daemon's memory stays flat.
//!
//! Topology (namespaces `vws-<pid>-*`, removed on exit, Ctrl-C included):
//! - domain `blue`: c1, c2 access VLAN 1; c3 trunk [100, 200] native 1; c4 access VLAN 100;
//! - domain `red`: c5, c6 access VLAN 1;
//! - c7's wire exists throughout and is added to / removed from `blue` every few seconds.
//!
//! Traffic: sequenced unicast c1 <-> c2 (1 frame/ms each way), tagged VLAN 100 frames c3 -> c4
//! (popped on the way), broadcasts c5 -> c6, ping c5 -> c6, and frames to c7 while it is a port.
//! c1 <-> c2 goes through the XDP fast path, the rest through the forwarder (see
//! [`forwarder_only`]).
//! Fails if a sequenced frame between stable ports is lost, the accounting does not balance,
//! the daemon dies, its RSS grows by more than 20 % over the first sample, or either path
//! carried nothing.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::libc;

use crate::util::{cargo, output, require_root, run as run_cmd, target_dir};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

const CHECK_EVERY: Duration = Duration::from_secs(10);
const CHURN_EVERY: Duration = Duration::from_secs(3);
const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

struct Topo {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    daemon: Option<Child>,
}

impl Topo {
    fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }
    fn ns(&self, i: usize) -> String {
        format!("{}-c{i}", self.prefix)
    }
    fn host_if(&self, i: usize) -> String {
        format!(
            "vs{}{}",
            std::process::id() % 100_000,
            char::from(b'a' + u8::try_from(i).expect("few clients"))
        )
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("vwire.sock")
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let pid = libc::pid_t::try_from(child.id()).unwrap_or(0);
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xfe, u8::try_from(i).expect("few clients")]
}

/// c5 and c6 keep GRO off, so their unicast (the pings) stays on the forwarder's path; the
/// other clients have it on, as the CNI plugin sets it, and their known unicast takes the XDP
/// fast path, c7 joining and leaving it with every add and remove.
fn forwarder_only(client: usize) -> bool {
    matches!(client, 5 | 6)
}

fn sh(program: &str, args: &[&str]) -> Result<String> {
    output(Command::new(program).args(args))
}

fn build(topo: &mut Topo, vwire: &str) -> Result<()> {
    let all: Vec<String> = std::iter::once(topo.node())
        .chain((1..=7).map(|i| topo.ns(i)))
        .collect();
    for ns in all {
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh("ip", &["netns", "add", &ns])?;
        topo.namespaces.push(ns.clone());
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ],
        )?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
    }
    for i in 1..=7 {
        let (ns, host) = (topo.ns(i), topo.host_if(i));
        let m = mac(i);
        let m = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        #[rustfmt::skip]
        sh("ip", &["-n", &topo.node(), "link", "add", &host, "type", "veth",
                   "peer", "name", "nsm-1", "address", &m, "netns", &ns])?;
        let gro = if forwarder_only(i) { "off" } else { "on" };
        #[rustfmt::skip]
        sh("ip", &["netns", "exec", &ns, "ethtool", "-K", "nsm-1", "tx", "off", "gro", gro])?;
        sh(
            "ip",
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.78.0.{i}/24"),
                "dev",
                "nsm-1",
            ],
        )?;
        sh("ip", &["-n", &ns, "link", "set", "nsm-1", "up"])?;
        sh("ip", &["-n", &topo.node(), "link", "set", &host, "up"])?;
    }
    let h = |i| format!("{:?}", topo.host_if(i));
    let config = format!(
        "fdb_max_age_secs = 300\n\n[[bridge_domain]]\nname = \"blue\"\nports = [{}, {}, \
         {{ name = {}, trunk = [100, 200], native = 1 }}, {{ name = {}, vlan = 100 }}]\n\n\
         [[bridge_domain]]\nname = \"red\"\nports = [{}, {}]\n",
        h(1),
        h(2),
        h(3),
        h(4),
        h(5),
        h(6)
    );
    let config_path = topo.dir.join("vwire.toml");
    std::fs::write(&config_path, config)?;
    let log = File::create(topo.dir.join("vwire.log"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &topo.node(), vwire, "run", "--config"])
        .arg(&config_path)
        .arg("--socket")
        .arg(topo.socket())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start vwire")?;
    topo.daemon = Some(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while cli(topo, vwire, &["show", "interfaces", "--json"]).is_err() {
        if Instant::now() > deadline {
            bail!(
                "vwire did not answer within 15 s; log:\n{}",
                daemon_log(topo)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn daemon_log(topo: &Topo) -> String {
    std::fs::read_to_string(topo.dir.join("vwire.log")).unwrap_or_default()
}

fn cli(topo: &Topo, vwire: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(vwire);
    cmd.args(args).arg("--socket").arg(topo.socket());
    output(&mut cmd)
}

/// An AF_PACKET socket on `nsm-1` of namespace `ns`.
fn packet_socket(ns: &str) -> Result<OwnedFd> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| -> Result<OwnedFd> {
            let file = File::open(&path).with_context(|| format!("open {path}"))?;
            // SAFETY: a valid netns fd; setns affects only this scoped thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {ns}: {}", std::io::Error::last_os_error());
            }
            let name = CString::new("nsm-1")?;
            // SAFETY: a valid C string.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            let proto = u16::try_from(libc::ETH_P_ALL)?.to_be();
            // SAFETY: plain socket(2).
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    proto.into(),
                )
            };
            if raw < 0 {
                bail!("socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: raw is a fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let big: libc::c_int = 8 << 20;
            // SAFETY: big lives across the call; the length is its size.
            unsafe {
                libc::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const big).cast(),
                    4,
                );
            }
            // SAFETY: sockaddr_ll is plain data.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = u16::try_from(libc::AF_PACKET)?;
            addr.sll_protocol = proto;
            addr.sll_ifindex = i32::try_from(ifindex)?;
            // SAFETY: addr is a valid sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    raw,
                    (&raw const addr).cast(),
                    libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())?,
                )
            };
            if rc != 0 {
                bail!("bind: {}", std::io::Error::last_os_error());
            }
            Ok(fd)
        })
        .join()
        .expect("socket thread")
    })
}

fn send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: the buffer is valid for its length.
    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
}

fn frame(dst: [u8; 6], src: [u8; 6], flow: u8, seq: u32, tag: Option<u16>) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = tag {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_EXPERIMENTAL.to_be_bytes());
    f.extend_from_slice(b"SOAK");
    f.push(flow);
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(f.len() + 80, 0x5a);
    f
}

/// One sequenced flow: a sender at `interval` until `stop`, a receiver counting distinct
/// sequence numbers.
struct Flow {
    name: &'static str,
    sent: Arc<AtomicU64>,
    sender: JoinHandle<()>,
    receiver: JoinHandle<u64>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site per flow, all named"
)]
fn flow(
    name: &'static str,
    tx: OwnedFd,
    rx: OwnedFd,
    dst: [u8; 6],
    src: [u8; 6],
    id: u8,
    tag: Option<u16>,
    interval: Duration,
    stop: Arc<AtomicBool>,
    max: u32,
) -> Flow {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let stop_tx = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..max {
            if stop_tx.load(Ordering::Relaxed) {
                break;
            }
            if let Some(wait) = (start + interval * seq).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            send(&tx, &frame(dst, src, id, seq, tag));
            counter.store(u64::from(seq) + 1, Ordering::Relaxed);
        }
    });
    let receiver = std::thread::spawn(move || {
        let mut seen = vec![false; max as usize];
        let mut distinct = 0u64;
        let mut buf = vec![0u8; 4096];
        let mut quiet_since: Option<Instant> = None;
        loop {
            let mut pfd = libc::pollfd {
                fd: rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: pfd is valid across the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, 100) };
            if rc <= 0 {
                if stop.load(Ordering::Relaxed) {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(1) {
                        return distinct;
                    }
                }
                continue;
            }
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    rx.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else { continue };
            let f = &buf[..n];
            // The kernel strips a received tag into auxdata: the payload is at 14.
            if n >= 23 && &f[14..18] == b"SOAK" && f[18] == id {
                let seq = u32::from_be_bytes([f[19], f[20], f[21], f[22]]) as usize;
                if seq < seen.len() && !seen[seq] {
                    seen[seq] = true;
                    distinct += 1;
                }
            }
        }
    });
    Flow {
        name,
        sent,
        sender,
        receiver,
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Frames received on `port` that the XDP fast path carried and that went to the forwarder,
/// from `show interfaces --json`.
fn frames_by_path(status: &serde_json::Value, port: &str) -> (u64, u64) {
    let row = status["interfaces"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == port));
    let count = |key: &str| row.and_then(|r| r["xdp"][key].as_u64()).unwrap_or(0);
    (count("fast_rx_frames"), count("redirected"))
}

/// Runs the soak and prints a summary.
///
/// # Errors
/// If the topology cannot be built, the daemon dies, a frame between stable ports is lost, the
/// UMEM accounting fails, or RSS grows by more than 20 %.
pub fn run(args: Args) -> Result<()> {
    require_root("the soak creates network namespaces and veths and attaches XDP")?;
    crate::setup::ensure()?;
    run_cmd(cargo().args(["build", "--release", "-p", "bridge-user", "--bin", "vwire"]))?;
    let vwire = target_dir().join("release").join("vwire");
    let vwire = vwire.to_string_lossy().into_owned();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    let prefix = format!("vws-{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir)?;
    let mut topo = Topo {
        prefix,
        dir,
        namespaces: Vec::new(),
        daemon: None,
    };
    build(&mut topo, &vwire)?;
    let pid = topo.daemon.as_ref().map_or(0, Child::id);
    let duration = Duration::from_secs(args.minutes.max(1) * 60);
    let max = u32::try_from(duration.as_millis() + 10_000).unwrap_or(u32::MAX);
    println!(
        "soak: {} minute(s), daemon pid {pid}, namespaces {}-*",
        args.minutes, topo.prefix
    );

    let stop = Arc::new(AtomicBool::new(false));
    let ms = Duration::from_millis(1);
    let s = |i| packet_socket(&topo.ns(i));
    let flows = vec![
        flow(
            "unicast c1->c2",
            s(1)?,
            s(2)?,
            mac(2),
            mac(1),
            1,
            None,
            ms,
            Arc::clone(&stop),
            max,
        ),
        flow(
            "unicast c2->c1",
            s(2)?,
            s(1)?,
            mac(1),
            mac(2),
            2,
            None,
            ms,
            Arc::clone(&stop),
            max,
        ),
        flow(
            "vlan100 c3->c4",
            s(3)?,
            s(4)?,
            mac(4),
            mac(3),
            3,
            Some(100),
            ms * 2,
            Arc::clone(&stop),
            max,
        ),
        flow(
            "vlan100 c4->c3",
            s(4)?,
            s(3)?,
            mac(3),
            mac(4),
            4,
            None,
            ms * 2,
            Arc::clone(&stop),
            max,
        ),
        flow(
            "bcast c5->c6",
            s(5)?,
            s(6)?,
            [0xff; 6],
            mac(5),
            5,
            None,
            ms * 10,
            Arc::clone(&stop),
            max,
        ),
    ];
    // Frames to c7 (unicast, learned or flooded) whether or not it is a port right now.
    let to_c7 = s(1)?;
    let churn_stop = Arc::clone(&stop);
    let churn_tx = std::thread::spawn(move || {
        let mut seq = 0;
        while !churn_stop.load(Ordering::Relaxed) {
            send(&to_c7, &frame(mac(7), mac(1), 7, seq, None));
            seq += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let c7_tx = s(7)?;

    let started = Instant::now();
    let mut next_check = started + CHECK_EVERY;
    let mut next_churn = started + CHURN_EVERY;
    let mut c7_in = false;
    let (mut churns, mut checks, mut pings_ok, mut pings) = (0u32, 0u32, 0u32, 0u32);
    let mut rss: Vec<u64> = Vec::new();
    let mut paths = (0, 0);
    let mut failure: Option<String> = None;
    while started.elapsed() < duration && failure.is_none() {
        if INTERRUPTED.load(Ordering::Relaxed) {
            failure = Some("interrupted".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if now >= next_churn {
            next_churn = now + CHURN_EVERY;
            let host = topo.host_if(7);
            let r = if c7_in {
                cli(&topo, &vwire, &["port", "del", &host])
            } else {
                cli(&topo, &vwire, &["port", "add", &host, "--domain", "blue"])
            };
            match r {
                Ok(_) => {
                    c7_in = !c7_in;
                    churns += 1;
                    send(&c7_tx, &frame([0xff; 6], mac(7), 8, churns, None));
                }
                Err(e) => failure = Some(format!("port churn: {e:#}")),
            }
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            checks += 1;
            let status = match cli(&topo, &vwire, &["show", "interfaces", "--json"]) {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(format!("daemon not answering: {e:#}"));
                    break;
                }
            };
            let v: serde_json::Value = serde_json::from_str(&status)?;
            paths = frames_by_path(&v, &topo.host_if(1));
            if v["umem"]["balanced"] != true {
                failure = Some(format!("UMEM accounting does not balance: {}", v["umem"]));
            }
            let kb = rss_kb(pid);
            rss.push(kb);
            pings += 1;
            let ping = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &topo.ns(5),
                    "ping",
                    "-q",
                    "-c",
                    "3",
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    "10.78.0.6",
                ])
                .output()?;
            pings_ok += u32::from(ping.status.success());
            println!(
                "soak: {:>4} s  rss {kb} kB  umem {}  fdb {}  c7 {}",
                started.elapsed().as_secs(),
                v["umem"],
                v["fdb_entries"],
                if c7_in { "in" } else { "out" }
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = churn_tx.join();
    let mut lost = Vec::new();
    println!("soak summary after {:.0?}:", started.elapsed());
    for f in flows {
        let _ = f.sender.join();
        let got = f.receiver.join().unwrap_or(0);
        let sent = f.sent.load(Ordering::Relaxed);
        println!(
            "  {:<16} sent {sent:>8}  received {got:>8}  lost {}",
            f.name,
            sent.saturating_sub(got)
        );
        if got != sent {
            lost.push(format!(
                "{}: {} of {sent} lost",
                f.name,
                sent.saturating_sub(got)
            ));
        }
    }
    let (first, last, peak) = (
        rss.first().copied().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
        rss.iter().copied().max().unwrap_or(0),
    );
    println!("  port add/del cycles {churns}, checks {checks} (UMEM balanced each time), pings {pings_ok}/{pings}");
    println!("  daemon RSS: first {first} kB, last {last} kB, max {peak} kB");
    println!(
        "  c1 received: {} frames through the XDP fast path, {} through the forwarder",
        paths.0, paths.1
    );
    let alive = topo
        .daemon
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
    if failure.is_none() && !alive {
        failure = Some(format!("the daemon exited; log:\n{}", daemon_log(&topo)));
    }
    if failure.is_none() && !lost.is_empty() {
        failure = Some(format!(
            "frames lost between stable ports: {}",
            lost.join("; ")
        ));
    }
    if failure.is_none() && pings_ok != pings {
        failure = Some(format!("{} of {pings} pings failed", pings - pings_ok));
    }
    if failure.is_none() && (paths.0 == 0 || paths.1 == 0) {
        failure = Some(format!(
            "c1's frames did not take both paths (fast path {}, forwarder {})",
            paths.0, paths.1
        ));
    }
    if failure.is_none() && first > 0 && peak > first + first / 5 {
        failure = Some(format!("RSS grew from {first} kB to {peak} kB (> 20 %)"));
    }
    drop(topo);
    match failure {
        None => {
            println!("soak: ok");
            Ok(())
        }
        Some(f) => bail!("soak failed: {f}"),
    }
}
