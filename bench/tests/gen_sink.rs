//! The generator and the sink over one client wire of the bench's own topology, with no
//! device on it: every frame sent from the host end is counted once at the client end, with
//! its full length on the wire although the sink captures only the first bytes of each, and
//! none is reported missing.
//!
//! Privileged (namespaces, AF_PACKET): runs only with `BRIDGE_PRIVILEGED=1`, as root, which
//! `cargo xtask test` sets.

use std::io::Write;
use std::time::{Duration, Instant};

use bench::{
    gen::GenReport,
    sink::SinkReport,
    topo::{self, in_ns, CmdLog, Topology},
};

const BIN: &str = env!("CARGO_BIN_EXE_vwire-bench");

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

/// Sends `count` frames of `size` bytes (with FCS) from the node end of client 0's wire and
/// returns what the generator and the sink at the client end report.
fn send_and_count(
    topo: &Topology,
    log: &CmdLog,
    size: usize,
    count: u64,
) -> anyhow::Result<(GenReport, SinkReport)> {
    let c = &topo.clients[0];
    let mut sink = topo::spawn_piped(
        log,
        &in_ns(
            &c.ns,
            &[
                BIN,
                "sink",
                "--dev",
                &c.dev,
                "--duration",
                "20",
                "--idle-exit",
                "1",
            ],
        ),
        false,
    )?;
    // Packet sockets open in the client namespace: the sink's, once it is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while topo::run(log, &in_ns(&c.ns, &["cat", "/proc/net/packet"]))?
        .lines()
        .count()
        < 2
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the sink never opened its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The socket exists before its ring is bound; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    let (size, count) = (size.to_string(), count.to_string());
    let gen = topo::run(
        log,
        &in_ns(
            &topo.node,
            &[
                BIN, "gen", "--dev", &c.port, "--size", &size, "--count", &count, "--rate", "50000",
            ],
        ),
    )?;
    let sink = sink.wait_output(Duration::from_secs(30))?;
    Ok((serde_json::from_str(&gen)?, serde_json::from_str(&sink)?))
}

#[test]
fn every_frame_counted_with_its_wire_length() {
    if !privileged() {
        return;
    }
    let log = CmdLog::default();
    let topo = Topology::create(&format!("vwb-gs{}", std::process::id()), 1, &log)
        .expect("namespaces and a veth pair");
    for (size, count) in [(64usize, 3000u64), (1518, 3000)] {
        let (gen, sink) = send_and_count(&topo, &log, size, count).expect("gen and sink");
        assert_eq!(gen.frames_sent, count, "{size} B: {gen:?}");
        assert_eq!(sink.frames, count, "{size} B: {sink:?}");
        assert_eq!(sink.missing, 0, "{size} B: {sink:?}");
        assert_eq!(sink.ring_drops, 0, "{size} B: {sink:?}");
        // Lengths on the wire, without the FCS: 60 and 1514 bytes.
        assert_eq!(sink.bytes, count * (size as u64 - 4), "{size} B: {sink:?}");
        assert_eq!(gen.bytes_sent, sink.bytes, "{size} B");
    }
}
