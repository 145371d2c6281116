//! Helpers for the reliability and security tests (`malformed`, `faults`, `attacks`), on top of
//! `common` and `support` (which they do not change):
//!
//! - configs with global keys (`umem_frames`, `fdb_max_entries`, ...) beside the domains;
//! - sequenced flows: a sender thread and a receiver thread per direction, so a test can run
//!   "other clients exchange frames meanwhile" and assert that not one frame was lost;
//! - counters summed over ports, and small frame builders.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{eth_frame, pattern, Daemon, Topology, ETH_P_EXPERIMENTAL};
use crate::support::VlanSocket;

/// Replaces the topology's config: `globals` (TOML lines such as `umem_frames = 1024`), then
/// one `[[bridge_domain]]` per (name, port entries).
pub fn write_config_with(topo: &Topology, globals: &str, domains: &[(&str, Vec<String>)]) {
    let mut text = format!("fdb_max_age_secs = 300\n{globals}\n");
    for (name, ports) in domains {
        text += &format!(
            "\n[[bridge_domain]]\nname = {name:?}\nports = [{}]\n",
            ports.join(", ")
        );
    }
    std::fs::write(topo.config_path(), text).expect("write vwire.toml");
}

/// Host-end names of clients `idx`, as TOML port entries with `extra` (e.g. `vlan = 100`).
pub fn ports_toml(topo: &Topology, idx: &[usize], extra: &str) -> Vec<String> {
    idx.iter()
        .map(|&i| crate::support::port_toml(&topo.client(i).host_if, extra))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sequenced flows

/// A sequenced frame: `FLW`, test id, flow id, sequence number, then a pattern (100 bytes of
/// payload in all).
pub fn seq_frame(dst: [u8; 6], src: [u8; 6], test_id: u8, flow: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![b'F', b'L', b'W', test_id, flow];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend(pattern(u64::from(seq), 91));
    eth_frame(dst, src, ETH_P_EXPERIMENTAL, &p)
}

/// The sequence number of a frame built by [`seq_frame`] with this test and flow id.
pub fn seq_of(frame: &[u8], test_id: u8, flow: u8) -> Option<u32> {
    let p = frame.get(14..)?;
    if p.len() < 9 || p[..5] != [b'F', b'L', b'W', test_id, flow] {
        return None;
    }
    Some(u32::from_be_bytes(p[5..9].try_into().ok()?))
}

/// What one flow delivered.
#[derive(Debug)]
pub struct FlowResult {
    pub name: String,
    pub sent: u32,
    /// Distinct sequence numbers received.
    pub received: usize,
    /// Frames received in all (more than `received` means duplicates).
    pub frames: usize,
    pub missing_sample: Vec<u32>,
}

impl FlowResult {
    /// Panics unless every frame arrived exactly once.
    pub fn assert_lossless(&self) {
        assert!(
            self.received == self.sent as usize && self.frames == self.received,
            "flow {}: sent {}, received {} distinct ({} frames, so {} duplicates); first \
             missing: {:?}",
            self.name,
            self.sent,
            self.received,
            self.frames,
            self.frames.saturating_sub(self.received),
            self.missing_sample
        );
    }
}

/// A running flow of sequenced frames from one client to another.
pub struct Flow {
    name: String,
    count: u32,
    sender: JoinHandle<()>,
    receiver: JoinHandle<(BTreeSet<u32>, usize)>,
}

/// Starts `count` frames from client `from` to client `to`, one every `interval`, with
/// `flow` as the flow id. The receiver's socket is open before the first frame leaves.
pub fn start_flow(
    topo: &Topology,
    from: usize,
    to: usize,
    test_id: u8,
    flow: u8,
    count: u32,
    interval: Duration,
) -> Flow {
    let rx = VlanSocket::client(topo, to);
    let tx = VlanSocket::client(topo, from);
    let (src, dst) = (topo.client(from).mac, topo.client(to).mac);
    let duration = interval * count;
    let receiver = std::thread::spawn(move || {
        let deadline = Instant::now() + duration + Duration::from_secs(3);
        let mut seen = BTreeSet::new();
        let mut frames = 0;
        while seen.len() < count as usize && Instant::now() < deadline {
            for f in rx.recv_where(Duration::from_millis(50), |f| {
                seq_of(f, test_id, flow).is_some()
            }) {
                frames += 1;
                seen.insert(seq_of(&f, test_id, flow).expect("filtered"));
            }
        }
        // Duplicates would arrive right behind.
        for f in rx.recv_where(Duration::from_millis(300), |f| {
            seq_of(f, test_id, flow).is_some()
        }) {
            frames += 1;
            seen.insert(seq_of(&f, test_id, flow).expect("filtered"));
        }
        (seen, frames)
    });
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..count {
            let due = start + interval * seq;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            tx.send(&seq_frame(dst, src, test_id, flow, seq));
        }
    });
    Flow {
        name: format!("c{from}->c{to}"),
        count,
        sender,
        receiver,
    }
}

impl Flow {
    /// Waits for the flow to end and returns what arrived.
    pub fn finish(self) -> FlowResult {
        self.sender.join().expect("sender thread");
        let (seen, frames) = self.receiver.join().expect("receiver thread");
        FlowResult {
            name: self.name,
            sent: self.count,
            received: seen.len(),
            frames,
            missing_sample: (0..self.count)
                .filter(|s| !seen.contains(s))
                .take(10)
                .collect(),
        }
    }
}

/// Starts flows both ways between `a` and `b` (flow ids `2k` and `2k + 1`).
pub fn start_pair(
    topo: &Topology,
    a: usize,
    b: usize,
    test_id: u8,
    k: u8,
    count: u32,
    interval: Duration,
) -> [Flow; 2] {
    [
        start_flow(topo, a, b, test_id, 2 * k, count, interval),
        start_flow(topo, b, a, test_id, 2 * k + 1, count, interval),
    ]
}

/// Makes the daemon learn these clients: one broadcast from each (not checked).
pub fn announce(topo: &Topology, clients: &[usize]) {
    for &i in clients {
        let s = VlanSocket::client(topo, i);
        s.send(&eth_frame(
            crate::common::BROADCAST,
            topo.client(i).mac,
            ETH_P_EXPERIMENTAL,
            b"announce: learn my MAC",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Background load

/// A thread that calls `step` until stopped (or `limit` iterations), counting iterations.
/// Dropped without `stop` or `join` (a failed assertion), it is stopped, so its load does not
/// run on into other tests.
pub struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Background {
    pub fn start(limit: u64, mut step: impl FnMut(u64) + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut n = 0;
            while n < limit && !flag.load(Ordering::Relaxed) {
                step(n);
                n += 1;
            }
            n
        });
        Background {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the thread and returns how many steps it ran.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the thread to reach its limit.
    pub fn join(mut self) -> u64 {
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("background thread")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Counters

/// A counter of every port at a JSON pointer, by port name.
pub fn per_port(all: &Value, pointer: &str) -> Vec<(String, u64)> {
    all["interfaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no `interfaces` array in {all}"))
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap_or_default().to_owned(),
                i.pointer(pointer).and_then(Value::as_u64).unwrap_or(0),
            )
        })
        .collect()
}

/// The drops of one port by reason (only the non-zero ones).
pub fn nonzero_drops(iface: &Value) -> Vec<(String, u64)> {
    iface["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .filter(|(_, v)| *v > 0)
                .collect()
        })
        .unwrap_or_default()
}

/// A top-level number of `show interfaces --json` at a pointer such as `/fdb/moved`.
pub fn top(daemon: &Daemon, pointer: &str) -> u64 {
    crate::common::counter(&daemon.interfaces(), pointer)
}

/// The PID's resident set size in kB (`VmRSS` of /proc/PID/status).
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// A raw socket that sends each frame once

/// An AF_PACKET socket on a client's `nsm-1` whose `send_once` reports the kernel's answer
/// instead of retrying: `common::RawSocket` retries ENOBUFS forever, and ENOBUFS is exactly
/// what a veth answers for a frame it drops (for example one above the peer's MTU).
pub struct OneShot {
    fd: std::os::fd::OwnedFd,
}

impl OneShot {
    pub fn client(topo: &Topology, i: usize) -> OneShot {
        let ns = topo.client(i).ns.clone();
        let fd = crate::common::in_netns(&ns, || {
            use std::os::fd::FromRawFd;
            let name = std::ffi::CString::new(crate::common::CLIENT_IF).expect("no NUL");
            // SAFETY: name is a valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "no {}", crate::common::CLIENT_IF);
            // SAFETY: plain socket(2) call; protocol 0 receives nothing.
            let raw =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
            // SAFETY: raw is a fresh fd we own.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
            // SAFETY: sockaddr_ll is plain data; all-zero is valid.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = u16::try_from(libc::AF_PACKET).expect("small");
            addr.sll_ifindex = i32::try_from(ifindex).expect("fits");
            let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small");
            // SAFETY: addr is a valid sockaddr_ll of length len.
            let rc = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&raw const addr).cast(),
                    len,
                )
            };
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        });
        OneShot { fd }
    }

    /// Sends `frame` once; the kernel's error, if any.
    pub fn send_once(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: the buffer is valid for frame.len() bytes; the fd is an open socket.
        let n = unsafe {
            libc::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                frame.as_ptr().cast(),
                frame.len(),
                0,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// `ip -s link` counters of a link as (rx_dropped, tx_dropped), from `ip -j -s`.
pub fn link_drops(ns: &str, ifname: &str) -> (u64, u64) {
    let out = crate::common::run("ip", &["-n", ns, "-j", "-s", "link", "show", ifname]);
    let v: Value = serde_json::from_str(&out).expect("ip -j prints JSON");
    let s = &v[0]["stats64"];
    (
        s["rx"]["dropped"].as_u64().unwrap_or(0),
        s["tx"]["dropped"].as_u64().unwrap_or(0),
    )
}
