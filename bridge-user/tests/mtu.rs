//! MTUs. A port whose MTU needs bigger UMEM frames is refused with advice, and with
//! `frame_size = 4096` the same MTU works end to end; a peer MTU XDP cannot take is refused
//! with the reason; a frame longer than the egress port's MTU is dropped and counted
//! (`mtu_exceeded`) instead of being handed to a kernel that would drop it uncounted.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod hardening;
mod support;

use std::time::Duration;

use common::*;
use hardening::*;
use support::*;

const TEST_ID: u8 = 71;

/// Sets the MTU of both ends of client `i`'s wire.
fn set_mtu(topo: &Topology, i: usize, mtu: u32) {
    let c = topo.client(i);
    let mtu = mtu.to_string();
    run(
        "ip",
        &["-n", &topo.node_ns, "link", "set", &c.host_if, "mtu", &mtu],
    );
    ns_run(&c.ns, &["ip", "link", "set", CLIENT_IF, "mtu", &mtu]);
}

#[test]
fn a_frame_longer_than_the_egress_mtu_is_counted_not_lost_silently() {
    require_privileged!("a_frame_longer_than_the_egress_mtu_is_counted_not_lost_silently");
    let topo = Topology::builder("mtuegress", TEST_ID).clients(2).build();
    set_mtu(&topo, 1, 1000);
    let daemon = topo.start_daemon();
    announce(&topo, &[0, 1]);
    std::thread::sleep(Duration::from_millis(200));
    let (sender, receiver) = (VlanSocket::client(&topo, 0), VlanSocket::client(&topo, 1));
    receiver.drain();
    let (src, dst) = (topo.client(0).mac, topo.client(1).mac);
    const N: u32 = 20;
    for n in 0..N {
        // 1214 bytes: over client 1's 1000 + 18. 914 bytes: under it.
        let long = payload(&marker(TEST_ID, n), 1200);
        sender.send(&eth_frame(dst, src, ETH_P_EXPERIMENTAL, &long));
        let short = payload(&marker(TEST_ID, 1000 + n), 900);
        sender.send(&eth_frame(dst, src, ETH_P_EXPERIMENTAL, &short));
    }
    let got = receiver.recv_where(ARRIVE, |f| f.windows(3).any(|w| w == [b'V', b'W', TEST_ID]));
    let long = got.iter().filter(|f| f.len() > 1018).count();
    assert_eq!(long, 0, "no frame over the egress MTU reaches the wire");
    assert_eq!(got.len(), N as usize, "every frame under the MTU arrives");
    let port = &topo.client(1).host_if;
    assert_eq!(daemon.counter(port, "/mtu"), 1000);
    assert_eq!(daemon.counter(port, "/drops/mtu_exceeded"), u64::from(N));
    assert_eq!(
        daemon.counter(&topo.client(0).host_if, "/drops/mtu_exceeded"),
        0
    );
    // Raised at run time, the MTU is followed within a housekeeping pass.
    set_mtu(&topo, 1, 1500);
    std::thread::sleep(Duration::from_millis(1500));
    let long = payload(&marker(TEST_ID, 2000), 1200);
    sender.send(&eth_frame(dst, src, ETH_P_EXPERIMENTAL, &long));
    let got = receiver.recv_marked(&marker(TEST_ID, 2000));
    assert_eq!(got.len(), 1, "after the MTU went up the long frame passes");
    assert_eq!(daemon.counter(port, "/mtu"), 1500);
    assert_eq!(daemon.counter(port, "/drops/mtu_exceeded"), u64::from(N));
}

#[test]
fn a_port_needing_bigger_frames_is_refused_and_works_with_frame_size_4096() {
    require_privileged!("a_port_needing_bigger_frames_is_refused_and_works_with_frame_size_4096");
    let topo = Topology::builder("mtujumbo", TEST_ID + 1)
        .clients(3)
        .build();
    for i in 0..3 {
        set_mtu(&topo, i, 3400);
    }
    // Default frames (2048 bytes) hold MTU 1774 at most: the daemon refuses the config's ports
    // before touching anything, and `port add` says what to change.
    write_config_with(&topo, "", &[("wire", ports_toml(&topo, &[], ""))]);
    let daemon = topo.start_daemon();
    let p = topo.client(0).host_if.clone();
    let message = cli_refused(&daemon, &["port", "add", &p, "--domain", "wire"]);
    assert!(
        message.contains(
            "has MTU 3400, but frame_size = 2048 carries MTU 1774 at most; set frame_size = 4096"
        ),
        "{message}"
    );
    assert_eq!(
        daemon.interfaces()["interfaces"].as_array().map(Vec::len),
        Some(0)
    );
    drop(daemon);

    write_config_with(
        &topo,
        "frame_size = 4096\numem_frames = 4096",
        &[("wire", ports_toml(&topo, &[0, 1, 2], ""))],
    );
    let daemon = topo.start_daemon();
    for (from, to) in [(0, 1), (1, 0), (2, 0)] {
        let (ns, ip) = (&topo.client(from).ns, &topo.client(to).ip);
        let out = ping_with(ns, ip, 3, &["-M", "do", "-s", "3300"]);
        assert!(
            out.status.success(),
            "3328-byte IP packets {from} -> {to}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            daemon.log()
        );
    }
    assert_eq!(
        daemon.counter(&topo.client(1).host_if, "/drops/mtu_exceeded"),
        0
    );
}

#[test]
fn a_peer_mtu_too_large_for_xdp_is_refused_with_the_reason() {
    require_privileged!("a_peer_mtu_too_large_for_xdp_is_refused_with_the_reason");
    let topo = Topology::builder("mtupeer", TEST_ID + 2).clients(2).build();
    write_config_with(
        &topo,
        "frame_size = 4096\numem_frames = 4096",
        &[("wire", ports_toml(&topo, &[0], ""))],
    );
    let daemon = topo.start_daemon();
    // 3600 fits a 4096-byte frame, but XDP without frags takes a veth peer MTU of 3506 at most.
    set_mtu(&topo, 1, 3600);
    let p = topo.client(1).host_if.clone();
    let message = cli_refused(&daemon, &["port", "add", &p, "--domain", "wire"]);
    assert!(
        message.contains("the MTU at the other end of this veth is larger than XDP allows"),
        "{message}"
    );
    // Nothing is left half made: lowered, the same port goes in and carries traffic.
    set_mtu(&topo, 1, 1500);
    cli_ok(&daemon, &["port", "add", &p, "--domain", "wire"]);
    let out = ping(&topo.client(0).ns, &topo.client(1).ip, 2);
    assert!(out.status.success(), "{}", daemon.log());
}
