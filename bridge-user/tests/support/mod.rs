//! Helpers for the VLAN, port and CLI tests, on top of `common` (which they do not change).
//!
//! - [`VlanSocket`]: a raw AF_PACKET socket that sees 802.1Q tags. The kernel takes the outer
//!   tag off every received frame (`skb_vlan_untag`) and hands it over as `PACKET_AUXDATA`,
//!   even without the 8021q module, so a plain `recvfrom` never shows it. This socket puts
//!   the tag back into the bytes, as libpcap does, so tests can check TPID and VID.
//! - Frame builders for tagged and double-tagged frames, and markers to find test frames.
//! - Config files with VLAN modes and several bridge domains, CLI wrappers that assert on exit
//!   status and stderr, and a snapshot of the daemon's state to prove bad input changed nothing.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{
    collect_frames, eth_frame, in_netns, ns_run, open_packet_socket, run, send_frame,
    setsockopt_int, Daemon, Topology, CLIENT_IF,
};

/// How long to listen when asserting that something does *not* arrive.
pub const QUIET: Duration = Duration::from_millis(700);
/// How long to wait for something that should arrive.
pub const ARRIVE: Duration = Duration::from_secs(2);

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

// ---------------------------------------------------------------------------------------------
// Frames

/// An 8-byte marker that identifies one test frame wherever it sits in the frame.
pub fn marker(test_id: u8, n: u32) -> [u8; 8] {
    let mut m = *b"VW\0\0\0\0\0\0";
    m[2] = test_id;
    m[4..8].copy_from_slice(&n.to_be_bytes());
    m
}

/// A payload starting with `marker`, padded to `len` bytes with a pattern.
pub fn payload(marker: &[u8; 8], len: usize) -> Vec<u8> {
    let mut p = marker.to_vec();
    p.extend(crate::common::pattern(
        u64::from_le_bytes(*marker),
        len.saturating_sub(8),
    ));
    p
}

/// Whether `frame` carries `marker` anywhere.
pub fn has_marker(frame: &[u8], marker: &[u8; 8]) -> bool {
    frame.windows(8).any(|w| w == marker)
}

/// A frame with one tag: dst, src, `tpid`, TCI = `vid` (PCP 0), `ethertype`, payload.
pub fn tagged_frame(
    dst: [u8; 6],
    src: [u8; 6],
    tpid: u16,
    vid: u16,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut inner = Vec::with_capacity(4 + payload.len());
    inner.extend_from_slice(&vid.to_be_bytes());
    inner.extend_from_slice(&ethertype.to_be_bytes());
    inner.extend_from_slice(payload);
    eth_frame(dst, src, tpid, &inner)
}

/// A frame with two tags: outer (`outer_tpid`, `outer_vid`), inner 802.1Q `inner_vid`.
pub fn double_tagged_frame(
    dst: [u8; 6],
    src: [u8; 6],
    outer_tpid: u16,
    outer_vid: u16,
    inner_vid: u16,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut inner = Vec::with_capacity(8 + payload.len());
    inner.extend_from_slice(&outer_vid.to_be_bytes());
    inner.extend_from_slice(&TPID_8021Q.to_be_bytes());
    inner.extend_from_slice(&inner_vid.to_be_bytes());
    inner.extend_from_slice(&ethertype.to_be_bytes());
    inner.extend_from_slice(payload);
    eth_frame(dst, src, outer_tpid, &inner)
}

/// The outer tag of a frame as (TPID, VID), if it has an 802.1Q or 802.1ad one.
pub fn outer_tag(frame: &[u8]) -> Option<(u16, u16)> {
    let tpid = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if tpid != TPID_8021Q && tpid != TPID_8021AD {
        return None;
    }
    let tci = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
    Some((tpid, tci & 0x0fff))
}

/// Removes the outer tag (the frame as an access port would send it).
pub fn untag(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&frame[16..]);
    out
}

// ---------------------------------------------------------------------------------------------
// A raw socket that sees VLAN tags

const PACKET_OUTGOING: u8 = 4;

/// An AF_PACKET socket on a client's `nsm-1`, reporting received frames with their outer
/// VLAN tag back in the bytes.
pub struct VlanSocket {
    fd: OwnedFd,
    ns: String,
}

impl VlanSocket {
    /// Opens the socket on client `i` of `topo` and drains what is queued.
    pub fn client(topo: &Topology, i: usize) -> VlanSocket {
        Self::open(&topo.client(i).ns, CLIENT_IF)
    }

    pub fn open(ns: &str, ifname: &str) -> VlanSocket {
        let ifname_owned = ifname.to_owned();
        let fd = in_netns(ns, move || {
            let fd = open_packet_socket(&ifname_owned);
            // The kernel moves received VLAN tags into auxdata; ask for it to put them back.
            setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1);
            fd
        });
        let sock = VlanSocket {
            fd,
            ns: ns.to_owned(),
        };
        while sock.recv_one(Duration::ZERO).is_some() {}
        sock
    }

    /// Sends one frame as given (tags included); panics on error.
    pub fn send(&self, frame: &[u8]) {
        send_frame(&self.fd, frame)
            .unwrap_or_else(|e| panic!("send of a {}-byte frame in {}: {e}", frame.len(), self.ns));
    }

    /// Every frame received until `timeout` passed, for which `keep` holds.
    pub fn recv_where(&self, timeout: Duration, keep: impl FnMut(&[u8]) -> bool) -> Vec<Vec<u8>> {
        collect_frames(timeout, |left| self.recv_one(left), keep)
    }

    /// Frames carrying `marker`: waits up to [`ARRIVE`] for the first, then listens
    /// [`QUIET`] longer for copies. Returns them all (the caller asserts how many).
    pub fn recv_marked(&self, marker: &[u8; 8]) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + ARRIVE;
        let mut got = Vec::new();
        while got.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_one(left) {
                Some(f) if has_marker(&f, marker) => got.push(f),
                Some(_) => {}
                None if left.is_zero() => return got,
                None => {}
            }
        }
        got.extend(self.recv_where(QUIET, |f| has_marker(f, marker)));
        got
    }

    /// Frames carrying `marker` within [`QUIET`] (for asserting that none arrive).
    pub fn recv_marked_quiet(&self, marker: &[u8; 8]) -> Vec<Vec<u8>> {
        self.recv_where(QUIET, |f| has_marker(f, marker))
    }

    /// Every frame queued right now, without waiting.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = self.recv_one(Duration::ZERO) {
            if !f.is_empty() {
                out.push(f);
            }
        }
        out
    }

    /// One frame, with its outer tag re-inserted; `Some(empty)` for our own transmissions.
    fn recv_one(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 65536];
        let mut cbuf = [0u64; 64];
        // SAFETY: sockaddr_ll and msghdr are plain data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw mut addr).cast();
        msg.msg_namelen = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("small");
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&cbuf);
        // SAFETY: msg points at buffers that live across the call, with their lengths.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let err = io::Error::last_os_error();
            assert!(
                matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)),
                "recvmsg: {err}"
            );
            return None;
        }
        if addr.sll_pkttype == PACKET_OUTGOING {
            return Some(Vec::new());
        }
        buf.truncate(n.unsigned_abs());
        // SAFETY: msg was filled in by recvmsg; the CMSG macros walk its control buffer.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: cmsg points at a header inside cbuf.
            let hdr = unsafe { &*cmsg };
            if hdr.cmsg_level == libc::SOL_PACKET && hdr.cmsg_type == libc::PACKET_AUXDATA {
                // SAFETY: a PACKET_AUXDATA message carries a tpacket_auxdata; it may be
                // unaligned inside the control buffer, hence read_unaligned.
                let aux: libc::tpacket_auxdata = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::tpacket_auxdata>())
                };
                let vlan_valid = aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0;
                if (vlan_valid || aux.tp_vlan_tci != 0) && buf.len() >= 12 {
                    let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        aux.tp_vlan_tpid
                    } else {
                        TPID_8021Q
                    };
                    let mut tag = tpid.to_be_bytes().to_vec();
                    tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                    buf.splice(12..12, tag);
                }
            }
            // SAFETY: msg and cmsg are valid as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        Some(buf)
    }
}

// ---------------------------------------------------------------------------------------------
// Config and topology

/// A port entry of the TOML config: `"name"`, or a table with `extra` (e.g. `vlan = 100`).
pub fn port_toml(name: &str, extra: &str) -> String {
    if extra.is_empty() {
        format!("{name:?}")
    } else {
        format!("{{ name = {name:?}, {extra} }}")
    }
}

/// Replaces the topology's config with these bridge domains: (name, port entries).
pub fn write_config(topo: &Topology, domains: &[(&str, Vec<String>)]) {
    let mut text = String::from("fdb_max_age_secs = 300\n");
    for (name, ports) in domains {
        text += &format!(
            "\n[[bridge_domain]]\nname = {name:?}\nports = [{}]\n",
            ports.join(", ")
        );
    }
    std::fs::write(topo.config_path(), text).expect("write vwire.toml");
}

/// Recreates client `i`'s wire after its host end was deleted (which deletes both ends):
/// same names, MAC and address.
pub fn recreate_wire(topo: &Topology, i: usize) {
    let c = topo.client(i);
    let mac = crate::common::mac_str(&c.mac);
    #[rustfmt::skip]
    run("ip", &[
        "-n", &topo.node_ns, "link", "add", &c.host_if, "type", "veth",
        "peer", "name", CLIENT_IF, "address", &mac, "netns", &c.ns,
    ]);
    ns_run(&c.ns, &["ethtool", "-K", CLIENT_IF, "tx", "off"]);
    let cidr = format!("{}/24", c.ip);
    ns_run(&c.ns, &["ip", "addr", "add", &cidr, "dev", CLIENT_IF]);
    ns_run(&c.ns, &["ip", "link", "set", CLIENT_IF, "up"]);
    run(
        "ip",
        &["-n", &topo.node_ns, "link", "set", &c.host_if, "up"],
    );
}

// ---------------------------------------------------------------------------------------------
// Daemon and CLI

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`vwire {}` exited with {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a CLI command that must succeed; returns its stdout.
pub fn cli_ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    assert!(
        out.status.success(),
        "{}\n--- daemon log ---\n{}",
        describe(args, &out),
        daemon.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a CLI command with `--json` that must succeed; returns the parsed answer.
pub fn cli_json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = cli_ok(daemon, &all);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`vwire {}` printed invalid JSON ({e}):\n{stdout}",
            all.join(" ")
        )
    })
}

/// Runs a CLI command that the daemon must refuse: non-zero exit, nothing on stdout, and
/// `vwire: <message>` on stderr. Returns the message.
pub fn cli_refused(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        describe(args, &out)
    );
    assert!(
        out.stdout.is_empty(),
        "a refused command printed to stdout: {}",
        describe(args, &out)
    );
    let message = stderr.strip_prefix("vwire: ").unwrap_or_else(|| {
        panic!(
            "stderr does not start with `vwire: `: {}",
            describe(args, &out)
        )
    });
    message.trim().to_owned()
}

/// Runs a CLI command that the argument parser must reject (clap: exit status 2, usage on
/// stderr). Returns stderr.
pub fn cli_usage_error(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.cli(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected a usage error: {}",
        describe(args, &out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What the operator can change: ports with their domains and modes, the domains, and the
/// FDB entries (without their ages). Counters are left out.
pub fn state(daemon: &Daemon) -> Value {
    let interfaces = daemon.interfaces();
    let mut ports: Vec<Value> = interfaces["interfaces"]
        .as_array()
        .expect("interfaces array")
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i["name"], "domain": i["domain"], "mode": i["mode"],
                "ifindex": i["ifindex"], "queues": i["queues"],
            })
        })
        .collect();
    ports.sort_by_key(|p| p["name"].as_str().unwrap_or_default().to_owned());
    let mut fdb = daemon.fdb();
    for e in fdb["entries"].as_array_mut().expect("entries array") {
        e.as_object_mut().expect("entry object").remove("age_secs");
    }
    serde_json::json!({
        "ports": ports,
        "bridge_domains": daemon.show_json("bridge-domains"),
        "fdb": fdb,
    })
}

/// The FDB entries (domain, mac, vlan, port, static) sorted.
pub fn fdb_entries(daemon: &Daemon) -> Vec<(String, String, u64, String, bool)> {
    let fdb = daemon.fdb();
    let mut out: Vec<_> = fdb["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("fdb JSON has no `entries` array: {fdb}"))
        .iter()
        .map(|e| {
            (
                e["domain"].as_str().unwrap_or_default().to_owned(),
                e["mac"].as_str().unwrap_or_default().to_ascii_lowercase(),
                e["vlan"].as_u64().unwrap_or_default(),
                e["port"].as_str().unwrap_or_default().to_owned(),
                e["static"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Whether the daemon process is alive (not exited, not a zombie).
pub fn daemon_alive(daemon: &Daemon) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.pid()));
    stat.is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Asserts the UMEM accounting holds: `balanced`, and every frame is free, on a fill ring or
/// in a tx ring. Waits up to [`ARRIVE`] for in-flight frames to settle.
pub fn assert_umem_balanced(daemon: &Daemon) {
    let mut last = Value::Null;
    let ok = crate::common::wait_until(ARRIVE, || {
        last = daemon.interfaces()["umem"].clone();
        let n = |k: &str| last[k].as_u64().unwrap_or(u64::MAX / 4);
        last["balanced"] == true && n("free") + n("in_fill") + n("in_tx") == n("frames")
    });
    assert!(ok, "UMEM accounting does not balance: {last}");
}

// ---------------------------------------------------------------------------------------------
// Who receives what

/// What a client should receive of one test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Nothing,
    /// Exactly one copy, without a tag, byte for byte the frame sent minus its tag.
    Untagged,
    /// Exactly one copy with an 802.1Q tag (TPID 0x8100) of this VID, the rest intact.
    Tagged(u16),
}

/// A client with a name for messages and a tag-aware socket.
pub struct Station {
    pub name: String,
    pub sock: VlanSocket,
}

impl Station {
    pub fn new(topo: &Topology, i: usize, name: &str) -> Station {
        Station {
            name: name.to_owned(),
            sock: VlanSocket::client(topo, i),
        }
    }
}

/// Sends `frame` from `stations[sender]` and asserts what every other station receives
/// (`want` is indexed like `stations`; the sender's entry is ignored). The frame must carry
/// `marker`.
pub fn check_delivery(
    what: &str,
    stations: &[Station],
    sender: usize,
    frame: &[u8],
    marker: &[u8; 8],
    want: &[Want],
) {
    assert_eq!(stations.len(), want.len(), "{what}: one Want per station");
    assert!(
        has_marker(frame, marker),
        "{what}: frame without its marker"
    );
    for s in stations {
        s.sock.drain();
    }
    stations[sender].sock.send(frame);
    let bare = if outer_tag(frame).is_some() {
        untag(frame)
    } else {
        frame.to_vec()
    };
    let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); stations.len()];
    let collect = |got: &mut Vec<Vec<Vec<u8>>>| {
        for (i, s) in stations.iter().enumerate() {
            if i != sender {
                got[i].extend(s.sock.drain().into_iter().filter(|f| has_marker(f, marker)));
            }
        }
    };
    // Wait for every expected copy, then listen a while longer for unexpected ones.
    let deadline = Instant::now() + ARRIVE;
    loop {
        collect(&mut got);
        let missing = (0..stations.len())
            .any(|i| i != sender && want[i] != Want::Nothing && got[i].is_empty());
        if !missing || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(QUIET);
    collect(&mut got);
    let mut problems = Vec::new();
    for (i, s) in stations.iter().enumerate() {
        if i == sender {
            continue;
        }
        let frames = &got[i];
        let describe = |f: &Vec<u8>| match outer_tag(f) {
            Some((tpid, vid)) => format!("tagged {tpid:#06x}/{vid}, {} bytes", f.len()),
            None => format!("untagged, {} bytes", f.len()),
        };
        let seen: Vec<String> = frames.iter().map(describe).collect();
        let ok = match want[i] {
            Want::Nothing => frames.is_empty(),
            Want::Untagged => frames.len() == 1 && frames[0] == bare,
            Want::Tagged(vid) => {
                frames.len() == 1
                    && outer_tag(&frames[0]) == Some((TPID_8021Q, vid))
                    && untag(&frames[0]) == bare
            }
        };
        if !ok {
            problems.push(format!(
                "  {}: expected {:?}, received {} cop{}: {seen:?}",
                s.name,
                want[i],
                frames.len(),
                if frames.len() == 1 { "y" } else { "ies" },
            ));
            if let Some(f) = frames.first() {
                let n = f.len().min(32);
                problems.push(format!("    first bytes {:02x?}", &f[..n]));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{what} (sent from {}, {} bytes): wrong delivery\n{}",
        stations[sender].name,
        frame.len(),
        problems.join("\n")
    );
}
