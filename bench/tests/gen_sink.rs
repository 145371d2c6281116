//! The generator and the sink over a veth pair in a namespace of their own: every frame sent
//! is counted once, with its full length on the wire although the sink captures only the
//! first bytes of each, and none is reported missing.
//!
//! Privileged (namespaces, AF_PACKET): runs only with `BRIDGE_PRIVILEGED=1`, as root, which
//! `cargo xtask test` sets.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench::{gen::GenReport, sink::SinkReport};

const BIN: &str = env!("CARGO_BIN_EXE_vwire-bench");

/// A namespace holding a veth pair `a` <-> `b`, deleted on drop (panics included).
struct Pair {
    ns: String,
    a: String,
    b: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl Pair {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let p = Self {
            ns: format!("vwb-{tag}-{pid}"),
            a: format!("{tag}a{pid}"),
            b: format!("{tag}b{pid}"),
        };
        ip(&["netns", "add", &p.ns]);
        ip(&[
            "-n", &p.ns, "link", "add", &p.a, "type", "veth", "peer", "name", &p.b,
        ]);
        for dev in [&p.a, &p.b] {
            // No IPv6 chatter (router solicitations, MLD) next to the test frames.
            let sysctl = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
            let _ = Command::new("ip")
                .args(["netns", "exec", &p.ns, "sysctl", "-q", "-w", &sysctl])
                .status();
            ip(&["-n", &p.ns, "link", "set", dev, "up"]);
        }
        p
    }

    fn bench(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, BIN]).args(args);
        c
    }

    /// Packet sockets open in the namespace (`/proc/net/packet` minus its header line).
    fn packet_sockets(&self) -> usize {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "cat", "/proc/net/packet"])
            .output()
            .expect("read /proc/net/packet");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .count()
            .saturating_sub(1)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn privileged() -> bool {
    if std::env::var("BRIDGE_PRIVILEGED").as_deref() != Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED gen_sink: privileged test, set BRIDGE_PRIVILEGED=1 (as root) to run it"
        );
        return false;
    }
    true
}

/// Sends `count` frames of `size` bytes (with FCS) from `a` and returns what the sink on `b`
/// and the generator report.
fn send_and_count(pair: &Pair, size: usize, count: u64) -> (GenReport, SinkReport) {
    let sink = pair
        .bench(&[
            "sink",
            "--dev",
            &pair.b,
            "--duration",
            "20",
            "--idle-exit",
            "1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the sink");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pair.packet_sockets() == 0 {
        assert!(
            Instant::now() < deadline,
            "the sink never opened its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The socket exists before its ring is bound; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let (size, count) = (size.to_string(), count.to_string());
    let gen = pair
        .bench(&[
            "gen", "--dev", &pair.a, "--size", &size, "--count", &count, "--rate", "50000",
        ])
        .output()
        .expect("run the generator");
    assert!(gen.status.success(), "gen failed: {gen:?}");
    let sink = sink.wait_with_output().expect("wait for the sink");
    assert!(sink.status.success(), "sink failed: {sink:?}");
    (
        serde_json::from_slice(&gen.stdout).expect("gen's JSON"),
        serde_json::from_slice(&sink.stdout).expect("sink's JSON"),
    )
}

#[test]
fn every_frame_counted_with_its_wire_length() {
    if !privileged() {
        return;
    }
    let pair = Pair::new("gs");
    for (size, count) in [(64usize, 3000u64), (1518, 3000)] {
        let (gen, sink) = send_and_count(&pair, size, count);
        assert_eq!(gen.frames_sent, count, "{size} B: {gen:?}");
        assert_eq!(sink.frames, count, "{size} B: {sink:?}");
        assert_eq!(sink.missing, 0, "{size} B: {sink:?}");
        assert_eq!(sink.ring_drops, 0, "{size} B: {sink:?}");
        // Lengths on the wire, without the FCS: 60 and 1514 bytes.
        assert_eq!(sink.bytes, count * (size as u64 - 4), "{size} B: {sink:?}");
        assert_eq!(gen.bytes_sent, sink.bytes, "{size} B");
    }
}
