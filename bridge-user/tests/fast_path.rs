//! The XDP fast path, seen from the clients and the daemon's counters: known unicast between
//! ports whose client end has GRO on goes straight from XDP to the egress port; a port whose
//! client end cannot take redirected frames stays on the forwarder's path; moves and GRO
//! changes are followed. Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod support;

use std::time::Duration;

use common::*;
use support::{assert_umem_balanced, ARRIVE, TPID_8021AD, TPID_8021Q};

const QUIET: Duration = Duration::from_millis(700);

fn in_fast_path(daemon: &Daemon, port: &str) -> bool {
    daemon.interface(port)["fast_path"] == true
}

fn assert_pings(from: &Client, to: &Client, count: u32) {
    let out = ping(&from.ns, &to.ip, count);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "{} -> {}: ping lost packets:\n{text}",
        from.ip,
        to.ip
    );
}

fn set_gro(client: &Client, on: bool) {
    let on = if on { "on" } else { "off" };
    ns_run(&client.ns, &["ethtool", "-K", CLIENT_IF, "gro", on]);
}

#[test]
fn known_unicast_takes_the_fast_path_only_between_ports_that_can_take_it() {
    require_privileged!("known_unicast_takes_the_fast_path_only_between_ports_that_can_take_it");
    let topo = Topology::builder("fastpath", 90)
        .clients(3)
        .gro(true)
        .build();
    let (a, b, c) = (topo.client(0), topo.client(1), topo.client(2));
    set_gro(c, false);
    let daemon = topo.start_daemon();
    assert!(
        wait_until(ARRIVE, || in_fast_path(&daemon, &a.host_if)
            && in_fast_path(&daemon, &b.host_if)),
        "ports with GRO on at the client end join the fast path:\n{}",
        daemon.interfaces()
    );
    assert!(
        !in_fast_path(&daemon, &c.host_if),
        "a port whose client end has GRO off cannot take redirected frames:\n{}",
        daemon.interfaces()
    );

    // The first exchange floods and learns through the forwarder; the rest goes straight.
    assert_pings(a, b, 5);
    let fast_from_a = daemon.counter(&a.host_if, "/xdp/fast_rx_frames");
    let fast_to_b = daemon.counter(&b.host_if, "/xdp/fast_tx_frames");
    assert!(
        fast_from_a >= 3 && fast_to_b == fast_from_a,
        "echo requests after the first go A -> B in XDP (from A {fast_from_a}, to B {fast_to_b}):\n{}",
        daemon.interfaces()
    );
    // A tagged frame between those same learned stations is not the fast path's: tags on an
    // access port are dropped and counted, by the forwarder, not redirected to B.
    let b_sock = topo.raw_socket(1);
    let a_sock = topo.raw_socket(0);
    for (n, tpid) in [(1, TPID_8021Q), (2, TPID_8021AD)] {
        let m = support::marker(90, n);
        let fast_before = daemon.counter(&a.host_if, "/xdp/fast_rx_frames");
        let dropped_before = daemon.counter(&a.host_if, "/drops/tagged_on_access");
        let f = support::tagged_frame(
            b.mac,
            a.mac,
            tpid,
            1,
            ETH_P_EXPERIMENTAL,
            &support::payload(&m, 46),
        );
        a_sock.send(&f);
        let got = b_sock.recv_frames_where(QUIET, |f| support::has_marker(f, &m));
        assert!(
            got.is_empty(),
            "B received a tagged frame from an access port: {got:02x?}"
        );
        assert_eq!(
            daemon.counter(&a.host_if, "/drops/tagged_on_access"),
            dropped_before + 1,
            "TPID {tpid:#06x}: counted on A:\n{}",
            daemon.interfaces()
        );
        assert_eq!(
            daemon.counter(&a.host_if, "/xdp/fast_rx_frames"),
            fast_before,
            "TPID {tpid:#06x}: not the fast path's"
        );
    }
    // Interface counters count every frame, whichever path carried it.
    let rx = daemon.counter(&a.host_if, "/rx_frames");
    assert!(
        rx >= 6 && rx >= fast_from_a, // an ARP request and 5 echo requests
        "A's rx_frames {rx} include the fast path's {fast_from_a}"
    );

    // C cannot take redirected frames: traffic to it goes through the forwarder, and arrives.
    assert_pings(a, c, 5);
    assert_eq!(
        daemon.counter(&c.host_if, "/xdp/fast_tx_frames"),
        0,
        "nothing is redirected to a port without NAPI at the client end:\n{}",
        daemon.interfaces()
    );
    assert!(daemon.counter(&c.host_if, "/tx_frames") >= 5);
    // Frames from C to A go through the forwarder too: C is not in the fast path.
    assert_eq!(daemon.counter(&c.host_if, "/xdp/fast_rx_frames"), 0);
    assert_umem_balanced(&daemon);
}

#[test]
fn a_station_that_moves_is_followed_by_the_fast_path() {
    require_privileged!("a_station_that_moves_is_followed_by_the_fast_path");
    let topo = Topology::builder("fastmove", 91)
        .clients(3)
        .gro(true)
        .build();
    let (a, b, c) = (topo.client(0), topo.client(1), topo.client(2));
    let daemon = topo.start_daemon();
    assert!(wait_until(ARRIVE, || [a, b, c]
        .iter()
        .all(|x| in_fast_path(&daemon, &x.host_if))));
    let (sock_a, sock_b, sock_c) = (topo.raw_socket(0), topo.raw_socket(1), topo.raw_socket(2));
    let frame = |dst: [u8; 6], src: [u8; 6], n: u8| {
        eth_frame(
            dst,
            src,
            ETH_P_EXPERIMENTAL,
            &[0xfa, 0x57, n, 0, 0, 0, 0, 0],
        )
    };
    let carries = |n: u8| move |f: &[u8]| f.len() >= 17 && f[14..17] == [0xfa, 0x57, n];

    // Learn A and B; then A -> B goes straight.
    sock_a.send(&frame(b.mac, a.mac, 1));
    sock_b.send(&frame(a.mac, b.mac, 2));
    assert!(wait_until(ARRIVE, || daemon.fdb_entry(&a.mac).is_some()
        && daemon.fdb_entry(&b.mac).is_some()));
    sock_b.drain();
    let before = daemon.counter(&a.host_if, "/xdp/fast_rx_frames");
    sock_a.send(&frame(b.mac, a.mac, 3));
    assert_eq!(sock_b.recv_count_where(1, ARRIVE, carries(3)).len(), 1);
    assert_eq!(
        daemon.counter(&a.host_if, "/xdp/fast_rx_frames"),
        before + 1,
        "a known station's frame went through XDP"
    );

    // B's address now speaks from C's wire: the forwarder learns the move, the fast path
    // follows, and frames for it reach C, not B.
    sock_c.send(&frame(a.mac, b.mac, 4));
    assert!(
        wait_until(ARRIVE, || daemon
            .fdb_entry(&b.mac)
            .is_some_and(|e| e["port"] == c.host_if.as_str())),
        "the move is learned:\n{}",
        daemon.fdb()
    );
    sock_c.drain();
    sock_a.send(&frame(b.mac, a.mac, 5));
    assert_eq!(
        sock_c.recv_count_where(1, ARRIVE, carries(5)).len(),
        1,
        "the frame follows the moved station"
    );
    assert!(
        sock_b.recv_frames_where(QUIET, carries(5)).is_empty(),
        "the old port gets nothing"
    );
    assert_umem_balanced(&daemon);
}

#[test]
fn a_port_whose_client_turns_gro_off_leaves_the_fast_path_and_keeps_working() {
    require_privileged!("a_port_whose_client_turns_gro_off_leaves_the_fast_path_and_keeps_working");
    let topo = Topology::builder("fastgro", 92).gro(true).build();
    let (a, b) = (topo.client(0), topo.client(1));
    let daemon = topo.start_daemon();
    assert!(wait_until(ARRIVE, || in_fast_path(&daemon, &b.host_if)));
    assert_pings(a, b, 3);

    set_gro(b, false);
    assert!(
        wait_until(ARRIVE, || !in_fast_path(&daemon, &b.host_if)),
        "the daemon notices within a housekeeping pass:\n{}",
        daemon.interfaces()
    );
    let fast_to_b = daemon.counter(&b.host_if, "/xdp/fast_tx_frames");
    assert_pings(a, b, 5);
    assert_eq!(
        daemon.counter(&b.host_if, "/xdp/fast_tx_frames"),
        fast_to_b,
        "nothing more is redirected to B"
    );

    set_gro(b, true);
    assert!(
        wait_until(ARRIVE, || in_fast_path(&daemon, &b.host_if)),
        "and it rejoins when it can take redirected frames again"
    );
    assert_pings(a, b, 3);
    assert!(daemon.counter(&b.host_if, "/xdp/fast_tx_frames") > fast_to_b);
}

#[test]
fn stations_heard_only_on_the_fast_path_stay_learned_and_age_out_once_silent() {
    require_privileged!(
        "stations_heard_only_on_the_fast_path_stay_learned_and_age_out_once_silent"
    );
    let topo = Topology::builder("fastage", 93).gro(true).build();
    let (a, b) = (topo.client(0), topo.client(1));
    std::fs::write(
        topo.config_path(),
        format!(
            "fdb_max_age_secs = 2\n\n[[bridge_domain]]\nname = \"wire\"\nports = [{:?}, {:?}]\n",
            a.host_if, b.host_if
        ),
    )
    .expect("write vwire.toml");
    let daemon = topo.start_daemon();
    assert!(wait_until(ARRIVE, || in_fast_path(&daemon, &a.host_if)
        && in_fast_path(&daemon, &b.host_if)));
    let aged_out = || counter(&daemon.interfaces(), "/fdb/aged_out");

    // Three age limits of pings, all but the first exchange in XDP: the forwarder sees none
    // of them, and still keeps both stations.
    assert_pings(a, b, 30);
    assert!(
        daemon.counter(&a.host_if, "/xdp/fast_rx_frames") >= 25,
        "the pings went through the fast path:\n{}",
        daemon.interfaces()
    );
    assert_eq!(
        aged_out(),
        0,
        "no station in use aged out:\n{}",
        daemon.fdb()
    );
    let macs = topo.client_macs();
    assert!(daemon.fdb_entry(&macs[0]).is_some() && daemon.fdb_entry(&macs[1]).is_some());

    // Silent, they age out as any station does.
    assert!(
        wait_until(Duration::from_secs(8), || aged_out() >= 2),
        "both stations age out once silent:\n{}",
        daemon.fdb()
    );
    assert!(daemon.fdb_entry(&macs[0]).is_none() && daemon.fdb_entry(&macs[1]).is_none());
}

#[test]
fn a_burst_of_new_stations_all_reach_the_fast_path() {
    require_privileged!("a_burst_of_new_stations_all_reach_the_fast_path");
    // Fewer than a port may learn by default (4096), sent back to back: the forwarder is busy
    // while it learns them, so their fast-path entries wait for it and then go in in batches.
    const STATIONS: u16 = 3000;
    let topo = Topology::builder("fastburst", 94)
        .clients(2)
        .gro(true)
        .build();
    let (a, b) = (topo.client(0), topo.client(1));
    let daemon = topo.start_daemon();
    assert!(wait_until(ARRIVE, || [a, b]
        .iter()
        .all(|x| in_fast_path(&daemon, &x.host_if))));
    let (sock_a, sock_b) = (topo.raw_socket(0), topo.raw_socket(1));
    sock_a.set_qdisc_bypass();
    let station = |i: u16| {
        let [hi, lo] = i.to_be_bytes();
        [0x02, 0x5a, 0x94, 0, hi, lo]
    };
    let frame = |dst: [u8; 6], src: [u8; 6], i: u16| {
        let [hi, lo] = i.to_be_bytes();
        eth_frame(
            dst,
            src,
            ETH_P_EXPERIMENTAL,
            &[0xb0, 0x57, hi, lo, 0, 0, 0, 0],
        )
    };
    // A's socket gets its full fill depth once it receives (a quiet one holds 256 frames),
    // so the burst fits in it even if the forwarder is slow to wake.
    sock_b.send(&frame(a.mac, b.mac, 0));
    sock_a.send(&frame(b.mac, a.mac, 0));
    assert!(wait_until(ARRIVE, || daemon.fdb_entry(&a.mac).is_some()
        && daemon.fdb_entry(&b.mac).is_some()));
    for i in 0..STATIONS {
        sock_a.send(&frame(b.mac, station(i), i));
    }
    assert!(
        wait_until(Duration::from_secs(5), || daemon
            .counter(&a.host_if, "/rx_frames")
            > u64::from(STATIONS)),
        "the burst arrived:\n{}",
        daemon.interfaces()
    );
    let entries = daemon.interfaces()["fdb_entries"].as_u64();
    assert_eq!(
        entries,
        Some(u64::from(STATIONS) + 2),
        "every station was learned, and A and B"
    );

    // Now one frame to each: all on the fast path, none through the forwarder, none lost.
    // 25 us apart: faster, the XDP program would call the CPU busy and hand them over. And
    // first a pause: the burst made the program stand aside for two 4 ms windows.
    std::thread::sleep(Duration::from_millis(100));
    sock_a.drain();
    let fast_before = daemon.counter(&a.host_if, "/xdp/fast_tx_frames");
    for i in 0..STATIONS {
        let next = std::time::Instant::now() + Duration::from_micros(25);
        sock_b.send(&frame(station(i), b.mac, i));
        while std::time::Instant::now() < next {
            std::hint::spin_loop();
        }
    }
    let got = sock_a.recv_count_where(usize::from(STATIONS), Duration::from_secs(5), |f| {
        f.len() >= 16
            && f[14..16] == [0xb0, 0x57]
            && f[..6] == station(u16::from_be_bytes([f[16], f[17]]))
    });
    assert_eq!(
        got.len(),
        usize::from(STATIONS),
        "every frame reached its station's port"
    );
    let fast = daemon.counter(&a.host_if, "/xdp/fast_tx_frames") - fast_before;
    assert_eq!(
        fast,
        u64::from(STATIONS),
        "every frame went port to port in XDP:\n{}",
        daemon.interfaces()
    );
    assert_umem_balanced(&daemon);
}
