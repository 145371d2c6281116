//! Forwarding behaviour of the daemon, seen from the clients: ARP/ping, flooding, learning,
//! non-IP EtherTypes, malformed frames. Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;

use std::time::Duration;

use common::*;

/// How long to listen when asserting that something does *not* arrive.
const QUIET: Duration = Duration::from_millis(700);
/// How long to wait for something that should arrive.
const ARRIVE: Duration = Duration::from_secs(2);

fn assert_no_loss(ping_output: &str, what: &str) {
    assert!(
        ping_output.contains(" 0% packet loss"),
        "{what}: ping lost packets:\n{ping_output}"
    );
}

/// A payload that identifies one test frame: a marker plus a pattern.
fn tagged_payload(marker: &[u8; 8], len: usize) -> Vec<u8> {
    let mut p = marker.to_vec();
    p.extend(pattern(u64::from_le_bytes(*marker), len.saturating_sub(8)));
    p
}

fn has_marker(frame: &[u8], marker: &[u8; 8]) -> bool {
    frame.len() >= 22 && &frame[14..22] == marker
}

/// Waits for the frame carrying `marker`, then listens a while longer for copies. Returns every
/// copy received (the caller asserts there is exactly one).
fn recv_marked(sock: &RawSocket, marker: &[u8; 8]) -> Vec<Vec<u8>> {
    let mut got = sock.recv_count_where(1, ARRIVE, |f| has_marker(f, marker));
    if !got.is_empty() {
        got.extend(sock.recv_frames_where(QUIET, |f| has_marker(f, marker)));
    }
    got
}

/// Asserts that the port's counter at `pointer` reaches `want` (counters may be published with
/// a delay).
fn assert_counter(daemon: &Daemon, port: &str, pointer: &str, want: u64, why: &str) {
    let mut last = 0;
    let ok = wait_until(ARRIVE, || {
        last = daemon.counter(port, pointer);
        last == want
    });
    assert!(
        ok,
        "{why}: counter {pointer} of port {port} is {last}, expected {want}\n{}",
        daemon.interfaces()
    );
}

fn assert_learned(daemon: &Daemon, client: &Client) {
    let mut entry = None;
    let ok = wait_until(ARRIVE, || {
        entry = daemon.fdb_entry(&client.mac);
        entry
            .as_ref()
            .is_some_and(|e| e["port"] == client.host_if.as_str())
    });
    assert!(
        ok,
        "fdb should map {} to port {}; entry: {entry:?}\nfdb: {}",
        mac_str(&client.mac),
        client.host_if,
        daemon.fdb()
    );
    let e = entry.expect("checked above");
    assert_eq!(e["domain"], "wire", "fdb entry domain: {e}");
    assert_eq!(e["static"], false, "learned entry must not be static: {e}");
}

#[test]
fn ping_both_ways_and_arp_resolves() {
    require_privileged!("ping_both_ways_and_arp_resolves");
    let topo = Topology::builder("ping", 1).build();
    let daemon = topo.start_daemon();
    let (a, b) = (topo.client(0), topo.client(1));

    let out = ns_run(&a.ns, &["ping", "-c", "3", "-W", "1", "-i", "0.2", &b.ip]);
    assert_no_loss(&out, "A -> B");
    let out = ns_run(&b.ns, &["ping", "-c", "3", "-W", "1", "-i", "0.2", &a.ip]);
    assert_no_loss(&out, "B -> A");

    let neigh = ns_run(&a.ns, &["ip", "neigh", "show", &b.ip, "dev", CLIENT_IF]);
    assert!(
        neigh.contains(&format!("lladdr {}", mac_str(&b.mac))),
        "A's neighbour entry for {} should carry B's MAC {}: {neigh:?}",
        b.ip,
        mac_str(&b.mac)
    );
    let neigh = ns_run(&b.ns, &["ip", "neigh", "show", &a.ip, "dev", CLIENT_IF]);
    assert!(
        neigh.contains(&format!("lladdr {}", mac_str(&a.mac))),
        "B's neighbour entry for {} should carry A's MAC: {neigh:?}",
        a.ip
    );
    assert_learned(&daemon, a);
    assert_learned(&daemon, b);
}

#[test]
fn broadcast_reaches_every_other_client_once() {
    require_privileged!("broadcast_reaches_every_other_client_once");
    let topo = Topology::builder("bcast", 2).clients(3).build();
    let _daemon = topo.start_daemon();
    let socks: Vec<RawSocket> = (0..3).map(|i| topo.raw_socket(i)).collect();
    let marker = *b"bcast-01";
    let frame = eth_frame(
        BROADCAST,
        topo.client(0).mac,
        ETH_P_EXPERIMENTAL,
        &tagged_payload(&marker, 100),
    );
    socks[0].send(&frame);

    for (i, name) in [(1, "B"), (2, "C")] {
        let got = recv_marked(&socks[i], &marker);
        assert_eq!(
            got.len(),
            1,
            "{name} should receive the broadcast exactly once, got {} copies",
            got.len()
        );
        assert_eq!(got[0], frame, "{name} received a modified broadcast frame");
    }
    let back = socks[0].recv_frames(QUIET);
    assert!(
        back.is_empty(),
        "the broadcast came back to its sender A: {back:02x?}"
    );
}

#[test]
fn unknown_unicast_floods_then_learned_unicast_goes_to_one_port() {
    require_privileged!("unknown_unicast_floods_then_learned_unicast_goes_to_one_port");
    let topo = Topology::builder("unkuc", 3).clients(3).build();
    let daemon = topo.start_daemon();
    let (a, b, c) = (topo.client(0), topo.client(1), topo.client(2));
    let socks: Vec<RawSocket> = (0..3).map(|i| topo.raw_socket(i)).collect();

    assert!(
        daemon.fdb_entry(&b.mac).is_none(),
        "B has sent nothing yet (IPv6 is off), the fdb must not know it: {}",
        daemon.fdb()
    );

    // 1. A -> B while B is unknown: flooded to B and C.
    let marker1 = *b"unkuc-01";
    let f1 = eth_frame(
        b.mac,
        a.mac,
        ETH_P_EXPERIMENTAL,
        &tagged_payload(&marker1, 64),
    );
    socks[0].send(&f1);
    for (i, name) in [(1, "B"), (2, "C")] {
        let got = recv_marked(&socks[i], &marker1);
        assert_eq!(
            got.len(),
            1,
            "unknown unicast should be flooded once to {name}, got {}",
            got.len()
        );
        assert_eq!(got[0], f1, "{name} received a modified frame");
    }
    assert!(
        socks[0].recv_frames(QUIET).is_empty(),
        "flooded frame came back to A"
    );
    assert_counter(&daemon, &a.host_if, "/rx_frames", 1, "A sent one frame");
    assert_counter(&daemon, &b.host_if, "/tx_frames", 1, "flood to B");
    assert_counter(&daemon, &c.host_if, "/tx_frames", 1, "flood to C");
    assert_learned(&daemon, a);

    // 2. B -> A: A is known, so only A gets it; B gets learned.
    let marker2 = *b"unkuc-02";
    let f2 = eth_frame(
        a.mac,
        b.mac,
        ETH_P_EXPERIMENTAL,
        &tagged_payload(&marker2, 64),
    );
    socks[1].send(&f2);
    let got = recv_marked(&socks[0], &marker2);
    assert_eq!(got, vec![f2], "A should receive B's frame once, intact");
    assert_learned(&daemon, b);
    let at_c = socks[2].recv_frames(QUIET);
    assert!(at_c.is_empty(), "B -> A (known) leaked to C: {at_c:02x?}");

    // 3. A -> B again: now B is known, only B receives it.
    let before = daemon.interfaces();
    let marker3 = *b"unkuc-03";
    let f3 = eth_frame(
        b.mac,
        a.mac,
        ETH_P_EXPERIMENTAL,
        &tagged_payload(&marker3, 64),
    );
    socks[0].send(&f3);
    let got = recv_marked(&socks[1], &marker3);
    assert_eq!(got, vec![f3], "B should receive A's frame once, intact");
    let at_c = socks[2].recv_frames(QUIET);
    assert!(
        at_c.is_empty(),
        "known unicast A -> B was also sent to C: {at_c:02x?}"
    );

    let b_tx = counter(find_interface(&before, &b.host_if), "/tx_frames");
    let c_tx = counter(find_interface(&before, &c.host_if), "/tx_frames");
    let a_rx = counter(find_interface(&before, &a.host_if), "/rx_frames");
    assert_counter(
        &daemon,
        &a.host_if,
        "/rx_frames",
        a_rx + 1,
        "A sent one more frame",
    );
    assert_counter(
        &daemon,
        &b.host_if,
        "/tx_frames",
        b_tx + 1,
        "one frame out to B",
    );
    assert_counter(
        &daemon,
        &c.host_if,
        "/tx_frames",
        c_tx,
        "nothing more out to C",
    );
}

#[test]
fn non_ip_frames_bridged_byte_for_byte() {
    require_privileged!("non_ip_frames_bridged_byte_for_byte");
    let topo = Topology::builder("nonip", 4).build();
    let _daemon = topo.start_daemon();
    let (a, b) = (topo.client(0), topo.client(1));
    let sa = topo.raw_socket(0);
    let sb = topo.raw_socket(1);

    // (what, ethertype/length field, total frame length)
    let cases: [(&str, u16, usize); 6] = [
        (
            "experimental 0x88b5, 22 bytes (shorter than the 60-byte minimum)",
            0x88b5,
            22,
        ),
        ("experimental 0x88b5, 60 bytes", 0x88b5, 60),
        ("experimental 0x88b5, 1514 bytes (full MTU)", 0x88b5, 1514),
        ("EtherType 0x9000 (loopback), 100 bytes", 0x9000, 100),
        ("EtherType 0xffff, 64 bytes", 0xffff, 64),
        ("802.3 length field 0x002e (LLC), 60 bytes", 0x002e, 60),
    ];
    for (n, (what, ethertype, len)) in cases.iter().enumerate() {
        let marker = *format!("nonip-{n:02}")
            .as_bytes()
            .first_chunk::<8>()
            .expect("8 bytes");
        let frame = eth_frame(b.mac, a.mac, *ethertype, &tagged_payload(&marker, len - 14));
        assert_eq!(frame.len(), *len);
        sa.send(&frame);
        let got = sb.recv_count_where(1, ARRIVE, |f| has_marker(f, &marker));
        assert_eq!(got.len(), 1, "{what}: not received at B");
        assert_eq!(got[0].len(), frame.len(), "{what}: length changed");
        assert!(
            got[0] == frame,
            "{what}: content changed\nsent {frame:02x?}\ngot  {:02x?}",
            got[0]
        );
    }
}

#[test]
fn invalid_source_macs_dropped_and_counted() {
    require_privileged!("invalid_source_macs_dropped_and_counted");
    let topo = Topology::builder("badsrc", 9).clients(3).build();
    let daemon = topo.start_daemon();
    let (a, b) = (topo.client(0), topo.client(1));
    let socks: Vec<RawSocket> = (0..3).map(|i| topo.raw_socket(i)).collect();

    let marker = *b"badsrc-0";
    let bad_sources: [[u8; 6]; 3] = [
        [0; 6],                               // all zero
        [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01], // IPv4 multicast
        [0xff; 6],                            // broadcast
    ];
    for src in bad_sources {
        for dst in [BROADCAST, b.mac] {
            socks[0].send(&eth_frame(
                dst,
                src,
                ETH_P_EXPERIMENTAL,
                &tagged_payload(&marker, 50),
            ));
        }
    }
    for (i, name) in [(1, "B"), (2, "C")] {
        let got = socks[i].recv_frames_where(QUIET, |f| has_marker(f, &marker));
        assert!(
            got.is_empty(),
            "frames with an invalid source MAC reached {name}: {got:02x?}"
        );
    }
    let n = u64::try_from(bad_sources.len() * 2).expect("small");
    assert_counter(
        &daemon,
        &a.host_if,
        "/drops/invalid_src_mac",
        n,
        "invalid source MACs",
    );
    for bad in bad_sources {
        assert!(
            daemon.fdb_entry(&bad).is_none(),
            "invalid MAC {} was learned: {}",
            mac_str(&bad),
            daemon.fdb()
        );
    }

    // Runts (< 14 bytes): AF_PACKET refuses frames shorter than the Ethernet header on an
    // Ethernet device (dev_validate_header), so they can only be tested if the kernel takes them.
    match socks[0].try_send(&[0xff; 10]) {
        Ok(()) => assert_counter(&daemon, &a.host_if, "/drops/runt", 1, "a 10-byte frame"),
        Err(e) => eprintln!("runt check skipped: the kernel refuses to send a 10-byte frame ({e})"),
    }

    // The daemon still forwards.
    let ok_marker = *b"badsrc-1";
    let frame = eth_frame(
        b.mac,
        a.mac,
        ETH_P_EXPERIMENTAL,
        &tagged_payload(&ok_marker, 50),
    );
    socks[0].send(&frame);
    let got = recv_marked(&socks[1], &ok_marker);
    assert_eq!(
        got,
        vec![frame],
        "a valid frame after the invalid ones should reach B once"
    );
    let out = ns_run(&a.ns, &["ping", "-c", "2", "-W", "1", "-i", "0.2", &b.ip]);
    assert_no_loss(&out, "ping after invalid frames");
}
