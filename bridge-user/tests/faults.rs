//! Faults: a port's interface deleted under load, a client that stops receiving, the daemon
//! killed with SIGKILL and started again, SIGTERM, and the UMEM running out of free frames.
//! In each, the clients not involved keep exchanging sequenced frames without loss.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod hardening;
mod support;

use std::time::{Duration, Instant};

use common::*;
use hardening::*;
use support::*;

/// Broadcast frames of this test from client `i`, sent as fast as the kernel takes them
/// (errors ignored: the interface may vanish under the sender), until stopped.
fn blast(topo: &Topology, i: usize, dst: [u8; 6], limit: u64, gap: Duration) -> Background {
    let sock = OneShot::client(topo, i);
    let src = topo.client(i).mac;
    let frame = eth_frame(dst, src, ETH_P_EXPERIMENTAL, &[0x42; 100]);
    Background::start(limit, move |n| {
        let _ = sock.send_once(&frame);
        if n % 64 == 63 && !gap.is_zero() {
            std::thread::sleep(gap);
        }
    })
}

/// The XDP program ids attached to a host end (`ip -d link` prints `prog/xdp id N`).
fn xdp_ids(topo: &Topology, i: usize) -> Vec<u32> {
    let text = topo.host_link_details(i);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
        .filter_map(|w| w[2].parse().ok())
        .collect()
}

fn port_present(daemon: &Daemon, name: &str) -> bool {
    daemon.interfaces()["interfaces"]
        .as_array()
        .is_some_and(|a| a.iter().any(|i| i["name"] == name))
}

#[test]
fn interface_deleted_under_load_others_lose_nothing() {
    require_privileged!("interface_deleted_under_load_others_lose_nothing");
    const TEST_ID: u8 = 62;
    let topo = Topology::builder("ifgone", TEST_ID).clients(3).build();
    let daemon = topo.start_daemon();
    announce(&topo, &[0, 1]);
    std::thread::sleep(Duration::from_millis(200));
    let flows = start_pair(&topo, 0, 1, TEST_ID, 0, 2000, Duration::from_millis(1));
    // Client 2 floods broadcasts through the bridge (to clients 0 and 1 too).
    let load = blast(&topo, 2, BROADCAST, 1_000_000, Duration::from_micros(500));
    std::thread::sleep(Duration::from_millis(600));
    let victim = topo.client(2).host_if.clone();
    run("ip", &["-n", &topo.node_ns, "link", "del", &victim]);
    let deleted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || !port_present(&daemon, &victim)),
        "port {victim} still listed 3 s after its interface was deleted"
    );
    eprintln!("port removed {:?} after its interface", deleted.elapsed());
    let sent = load.stop();
    for r in flows.map(Flow::finish) {
        r.assert_lossless();
    }
    assert!(daemon_alive(&daemon), "daemon died:\n{}", daemon.log());
    assert!(sent > 1000, "the load thread sent only {sent} frames");
    assert_umem_balanced(&daemon);
}

#[test]
fn client_that_stops_receiving_does_not_slow_the_others() {
    require_privileged!("client_that_stops_receiving_does_not_slow_the_others");
    const TEST_ID: u8 = 63;
    let topo = Topology::builder("stall", TEST_ID).clients(4).build();
    let daemon = topo.start_daemon();
    announce(&topo, &[0, 1, 2, 3]);
    std::thread::sleep(Duration::from_millis(200));
    // Client 2 stops receiving: its end goes down, so everything sent to it is dropped.
    ns_run(
        &topo.client(2).ns,
        &["ip", "link", "set", CLIENT_IF, "down"],
    );
    let flows = start_pair(&topo, 0, 1, TEST_ID, 0, 2000, Duration::from_millis(1));
    // Client 3 sends to client 2 (a learned unicast) as fast as it can.
    let load = blast(&topo, 3, topo.client(2).mac, 300_000, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = load.stop();
    let results: Vec<FlowResult> = flows.into_iter().map(Flow::finish).collect();
    let all = daemon.interfaces();
    let name = |i: usize| topo.client(i).host_if.clone();
    let report = format!(
        "{sent} frames sent to the stalled client; its port: tx {} drops {:?} kernel {}",
        find_interface(&all, &name(2))["tx_frames"],
        nonzero_drops(find_interface(&all, &name(2))),
        find_interface(&all, &name(2))["kernel"],
    );
    eprintln!("{report}");
    for r in &results {
        r.assert_lossless();
    }
    for i in [0, 1] {
        let d = nonzero_drops(find_interface(&all, &name(i)));
        assert!(d.is_empty(), "port of c{i} dropped {d:?}; {report}");
    }
    // Back up, it works again.
    ns_run(&topo.client(2).ns, &["ip", "link", "set", CLIENT_IF, "up"]);
    std::thread::sleep(Duration::from_millis(300));
    let reply = ping(&topo.client(0).ns, &topo.client(2).ip, 3);
    assert!(
        reply.status.success(),
        "ping to the client after it came back: {}",
        String::from_utf8_lossy(&reply.stdout)
    );
    assert_umem_balanced(&daemon);
}

#[test]
fn sigkill_then_restart_recovers_and_sigterm_detaches() {
    require_privileged!("sigkill_then_restart_recovers_and_sigterm_detaches");
    const TEST_ID: u8 = 64;
    let topo = Topology::builder("restart", TEST_ID).clients(2).build();
    let daemon = topo.start_daemon();
    let first: Vec<Vec<u32>> = (0..2).map(|i| xdp_ids(&topo, i)).collect();
    assert!(
        first.iter().all(|ids| ids.len() == 1),
        "XDP after start: {first:?}"
    );
    let status = daemon.stop_with(libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // The bpf_links die with the process: nothing stale stays on the ports.
    assert!(
        wait_until(Duration::from_secs(3), || (0..2)
            .all(|i| xdp_ids(&topo, i).is_empty())),
        "XDP left after SIGKILL: {}",
        topo.host_link_details(0)
    );
    // Same config, same socket path (the old socket file is still there).
    assert!(
        topo.socket_path().exists(),
        "SIGKILL cannot remove the socket file"
    );
    let daemon = topo.start_daemon();
    let second: Vec<Vec<u32>> = (0..2).map(|i| xdp_ids(&topo, i)).collect();
    for i in 0..2 {
        assert_eq!(
            second[i].len(),
            1,
            "one XDP program on port {i}: {second:?}"
        );
        assert_ne!(second[i], first[i], "a new program, not the old one");
    }
    let flows = start_pair(&topo, 0, 1, TEST_ID, 0, 500, Duration::from_millis(1));
    for r in flows.map(Flow::finish) {
        r.assert_lossless();
    }
    let reply = ping(&topo.client(0).ns, &topo.client(1).ip, 2);
    assert!(reply.status.success(), "ping after restart");
    // SIGTERM: exit 0 and nothing left on any port.
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    for i in 0..2 {
        let details = topo.host_link_details(i);
        assert!(
            !details.contains("xdp"),
            "XDP left after SIGTERM:\n{details}"
        );
    }
}

#[test]
fn umem_exhaustion_degrades_to_counted_drops_never_a_stall() {
    require_privileged!("umem_exhaustion_degrades_to_counted_drops_never_a_stall");
    const TEST_ID: u8 = 65;
    let topo = Topology::builder("umem", TEST_ID).clients(9).build();
    let ports: Vec<String> = ports_toml(&topo, &(0..9).collect::<Vec<_>>(), "");
    write_config_with(&topo, "umem_frames = 1024", &[("wire", ports)]);
    let daemon = topo.start_daemon();
    let frames = top(&daemon, "/umem/frames");
    assert_eq!(frames, 1024);
    // Before any flood: the last ports added must receive too.
    announce(&topo, &[7, 8]);
    std::thread::sleep(Duration::from_millis(100));
    let before: Vec<FlowResult> =
        start_pair(&topo, 7, 8, TEST_ID, 1, 200, Duration::from_millis(1))
            .into_iter()
            .map(Flow::finish)
            .collect();
    let all = daemon.interfaces();
    let fill: Vec<(String, u64)> = per_port(&all, "/kernel/rx_fill_ring_empty_descs");
    assert!(
        before.iter().all(|r| r.received == r.sent as usize),
        "with 1024 UMEM frames and 9 ports, before any flood: {before:?}\numem {}\nrx_fill_ring_empty_descs {fill:?}",
        all["umem"]
    );
    // Three clients flood broadcasts: each one becomes 8 frames (7 copies) in the UMEM.
    let loads: Vec<Background> = (0..3)
        .map(|i| blast(&topo, i, BROADCAST, 2_000_000, Duration::ZERO))
        .collect();
    let mut answered = 0;
    let flood_until = Instant::now() + Duration::from_millis(2000);
    while Instant::now() < flood_until {
        // The control path answers during the flood.
        let t = Instant::now();
        let _ = daemon.interfaces();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "show interfaces took {:?}",
            t.elapsed()
        );
        answered += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent: u64 = loads.into_iter().map(Background::stop).sum();
    let all = daemon.interfaces();
    let exhausted: u64 = per_port(&all, "/drops/umem_exhausted")
        .iter()
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "{sent} broadcasts sent, {exhausted} copies dropped as umem_exhausted, umem {}, {answered} \
         status answers during the flood",
        all["umem"]
    );
    assert!(
        exhausted > 0,
        "a 1024-frame UMEM never ran out under {sent} broadcasts to 8 ports: {}",
        all["umem"]
    );
    // Traffic resumes at once, without loss, and every frame is accounted for.
    assert_umem_balanced(&daemon);
    announce(&topo, &[3, 4]);
    std::thread::sleep(Duration::from_millis(100));
    let results: Vec<FlowResult> =
        start_pair(&topo, 3, 4, TEST_ID, 0, 500, Duration::from_millis(1))
            .into_iter()
            .map(Flow::finish)
            .collect();
    let after = daemon.interfaces();
    let state: Vec<String> = after["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .map(|i| {
            format!(
                "{} rx {} tx {} drops {:?} fill_empty {} xdp {}",
                i["name"],
                i["rx_frames"],
                i["tx_frames"],
                nonzero_drops(i),
                i["kernel"]["rx_fill_ring_empty_descs"],
                i["xdp"]
            )
        })
        .collect();
    let lost: Vec<&FlowResult> = results
        .iter()
        .filter(|r| r.received != r.sent as usize)
        .collect();
    assert!(
        lost.is_empty(),
        "after the flood stopped, traffic did not resume: {lost:?}\numem {}\n{}",
        after["umem"],
        state.join("\n")
    );
    for r in &results {
        r.assert_lossless();
    }
    assert_umem_balanced(&daemon);
}
