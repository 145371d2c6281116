//! The XDP fast path, seen from the clients and the daemon's counters: known unicast between
//! ports whose client end has GRO on goes straight from XDP to the egress port; a port whose
//! client end cannot take redirected frames stays on the forwarder's path; moves and GRO
//! changes are followed. Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod support;

use std::time::Duration;

use common::*;
use support::{assert_umem_balanced, ARRIVE};

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
