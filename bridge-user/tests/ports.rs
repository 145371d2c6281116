//! Ports that come and go under a running daemon: hot add and remove under traffic with zero
//! loss between the other ports, and an interface deleted underneath. Privileged: run with
//! `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use support::*;

/// A sequenced test frame: marker prefix `SEQ`, test id, direction, then the sequence number.
fn seq_frame(dst: [u8; 6], src: [u8; 6], test_id: u8, dir: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![b'S', b'E', b'Q', test_id, dir];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend(pattern(u64::from(seq), 91));
    eth_frame(dst, src, ETH_P_EXPERIMENTAL, &p)
}

/// The sequence number of a frame built by [`seq_frame`] with this test id and direction.
fn seq_of(frame: &[u8], test_id: u8, dir: u8) -> Option<u32> {
    let p = frame.get(14..)?;
    if p.len() < 9 || p[..5] != [b'S', b'E', b'Q', test_id, dir] {
        return None;
    }
    Some(u32::from_be_bytes(p[5..9].try_into().ok()?))
}

/// Sends `count` sequenced frames at a steady `interval`; runs on its own thread.
fn spawn_sender(
    sock: VlanSocket,
    dst: [u8; 6],
    src: [u8; 6],
    test_id: u8,
    dir: u8,
    count: u32,
    interval: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..count {
            let due = start + interval * seq;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sock.send(&seq_frame(dst, src, test_id, dir, seq));
        }
    })
}

/// Receives sequenced frames until `count` distinct ones arrived or `timeout` passed; returns
/// (distinct sequence numbers, total frames received).
fn receive_seqs(
    sock: &VlanSocket,
    test_id: u8,
    dir: u8,
    count: u32,
    timeout: Duration,
) -> (BTreeSet<u32>, usize) {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    while seen.len() < count as usize && Instant::now() < deadline {
        for f in sock.recv_where(Duration::from_millis(100), |f| {
            seq_of(f, test_id, dir).is_some()
        }) {
            total += 1;
            seen.insert(seq_of(&f, test_id, dir).expect("filtered"));
        }
    }
    // Duplicates would arrive right behind.
    for f in sock.recv_where(QUIET, |f| seq_of(f, test_id, dir).is_some()) {
        total += 1;
        seen.insert(seq_of(&f, test_id, dir).expect("filtered"));
    }
    (seen, total)
}

fn port_names(daemon: &Daemon) -> Vec<String> {
    daemon.interfaces()["interfaces"]
        .as_array()
        .expect("interfaces array")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Learns both clients' MACs with a broadcast from each, so the test traffic is unicast.
fn learn(st: &[Station], macs: &[[u8; 6]], test_id: u8) {
    for (i, mac) in macs.iter().enumerate() {
        let m = marker(test_id, 1000 + u32::try_from(i).expect("few clients"));
        let f = eth_frame(BROADCAST, *mac, ETH_P_EXPERIMENTAL, &payload(&m, 64));
        let mut want = vec![Want::Untagged; st.len()];
        want[i] = Want::Nothing;
        check_delivery("learning broadcast", st, i, &f, &m, &want);
    }
}

#[test]
fn hot_add_and_remove_under_traffic_loses_nothing() {
    require_privileged!("hot_add_and_remove_under_traffic_loses_nothing");
    const TEST_ID: u8 = 34;
    /// Frames each way, one every `INTERVAL`: about 4 s of traffic.
    const COUNT: u32 = 4000;
    const INTERVAL: Duration = Duration::from_millis(1);
    const CYCLES: usize = 5;
    let topo = Topology::builder("hotadd", TEST_ID).clients(3).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    // Client 2's wire exists but is not a port yet.
    write_config(
        &topo,
        &[(
            "wire",
            vec![port_toml(&name(0), ""), port_toml(&name(1), "")],
        )],
    );
    let daemon = topo.start_daemon();
    assert_eq!(port_names(&daemon), [name(0), name(1)]);
    let st = vec![Station::new(&topo, 0, "c1"), Station::new(&topo, 1, "c2")];
    learn(&st, &[mac(0), mac(1)], TEST_ID);

    // Receivers: their own sockets, opened before the traffic starts.
    let rx0 = VlanSocket::client(&topo, 0);
    let rx1 = VlanSocket::client(&topo, 1);
    let third = VlanSocket::client(&topo, 2);
    let started = Instant::now();
    let s01 = spawn_sender(
        VlanSocket::client(&topo, 0),
        mac(1),
        mac(0),
        TEST_ID,
        1,
        COUNT,
        INTERVAL,
    );
    let s10 = spawn_sender(
        VlanSocket::client(&topo, 1),
        mac(0),
        mac(1),
        TEST_ID,
        2,
        COUNT,
        INTERVAL,
    );
    // Meanwhile the third wire comes and goes, in VLAN 1 of the same domain (it gets the
    // floods) and once as a trunk in another domain.
    let mut cycles = 0;
    std::thread::sleep(Duration::from_millis(300));
    while cycles < CYCLES {
        let args: Vec<&str> = if cycles % 2 == 0 {
            vec!["port", "add", &topo.client(2).host_if, "--domain", "wire"]
        } else {
            vec![
                "port",
                "add",
                &topo.client(2).host_if,
                "--domain",
                "spare",
                "--trunk",
                "10,20",
                "--native",
                "1",
            ]
        };
        cli_ok(&daemon, &args);
        assert!(port_names(&daemon).contains(&name(2)));
        std::thread::sleep(Duration::from_millis(250));
        cli_ok(&daemon, &["port", "del", &name(2)]);
        assert!(!port_names(&daemon).contains(&name(2)));
        std::thread::sleep(Duration::from_millis(250));
        cycles += 1;
    }
    let churn_done = started.elapsed();
    s01.join().expect("sender c1 -> c2");
    s10.join().expect("sender c2 -> c1");
    let sent_for = started.elapsed();
    assert!(
        churn_done < sent_for,
        "the port churn ({churn_done:?}) must happen while traffic flows ({sent_for:?})"
    );

    let (got1, total1) = receive_seqs(&rx1, TEST_ID, 1, COUNT, Duration::from_secs(5));
    let (got0, total0) = receive_seqs(&rx0, TEST_ID, 2, COUNT, Duration::from_secs(5));
    let missing = |got: &BTreeSet<u32>| -> Vec<u32> {
        (0..COUNT).filter(|s| !got.contains(s)).take(20).collect()
    };
    assert_eq!(
        (got1.len(), total1),
        (COUNT as usize, COUNT as usize),
        "c1 -> c2: distinct and total frames received of {COUNT} sent; first missing {:?}\n{}",
        missing(&got1),
        daemon.interfaces()
    );
    assert_eq!(
        (got0.len(), total0),
        (COUNT as usize, COUNT as usize),
        "c2 -> c1: distinct and total frames received of {COUNT} sent; first missing {:?}\n{}",
        missing(&got0),
        daemon.interfaces()
    );
    // Unicast between learned stations never went to the third wire.
    let leaked = third.recv_where(Duration::ZERO, |f| {
        seq_of(f, TEST_ID, 1).is_some() || seq_of(f, TEST_ID, 2).is_some()
    });
    assert!(
        leaked.is_empty(),
        "{} test frames reached the third wire",
        leaked.len()
    );

    let all = daemon.interfaces();
    for i in 0..2 {
        let row = find_interface(&all, &name(i));
        let dropped: u64 = row["drops"]
            .as_object()
            .expect("drops object")
            .values()
            .filter_map(serde_json::Value::as_u64)
            .sum();
        assert_eq!(dropped, 0, "drops on {}: {row}", name(i));
    }
    assert_eq!(port_names(&daemon), [name(0), name(1)]);
    assert_umem_balanced(&daemon);
    // The XDP program is off the removed port.
    let details = topo.host_link_details(2);
    assert!(
        !details
            .split_whitespace()
            .any(|w| w.starts_with("xdp") || w.starts_with("prog/xdp")),
        "XDP still attached to the removed port:\n{details}"
    );
    // The churned port's domain ("spare") may stay, but must hold no ports.
    let domains = daemon.show_json("bridge-domains");
    for d in domains["bridge_domains"].as_array().expect("array") {
        if d["name"] == "spare" {
            assert_eq!(d["ports"].as_array().map(Vec::len), Some(0), "{domains}");
        }
    }
}

#[test]
fn interface_deleted_under_a_running_daemon() {
    require_privileged!("interface_deleted_under_a_running_daemon");
    const TEST_ID: u8 = 35;
    let topo = Topology::builder("ifdel", TEST_ID).clients(3).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    write_config(
        &topo,
        &[(
            "wire",
            vec![
                port_toml(&name(0), ""),
                port_toml(&name(1), ""),
                port_toml(&name(2), "vlan = 1"),
            ],
        )],
    );
    let daemon = topo.start_daemon();
    let st = vec![
        Station::new(&topo, 0, "c1"),
        Station::new(&topo, 1, "c2"),
        Station::new(&topo, 2, "c3"),
    ];
    learn(&st, &[mac(0), mac(1), mac(2)], TEST_ID);
    assert!(
        fdb_entries(&daemon).iter().any(|e| e.3 == name(2)),
        "c3 learned before the deletion"
    );
    drop(st);

    let deleted = Instant::now();
    run("ip", &["-n", &topo.node_ns, "link", "del", &name(2)]);
    let gone = wait_until(Duration::from_secs(3), || {
        !port_names(&daemon).contains(&name(2))
    });
    assert!(
        gone,
        "port {} still in `show interfaces` 3 s after its interface was deleted\n{}",
        name(2),
        daemon.interfaces()
    );
    let noticed = deleted.elapsed();
    assert!(daemon_alive(&daemon), "daemon died\n{}", daemon.log());
    assert_eq!(
        port_names(&daemon),
        [name(0), name(1)],
        "noticed after {noticed:?}"
    );
    let entries = fdb_entries(&daemon);
    assert!(
        entries.iter().all(|e| e.3 != name(2)),
        "entries of the vanished port remain: {entries:?}"
    );
    let domains = daemon.show_json("bridge-domains");
    assert!(
        !domains.to_string().contains(&format!("\"{}\"", name(2))),
        "vanished port still in show bridge-domains: {domains}"
    );
    let log = daemon.log();
    assert!(
        log.contains(&name(2)) && log.contains("vanished"),
        "the removal is not reported in the daemon log:\n{log}"
    );
    assert_umem_balanced(&daemon);

    // The others still forward, both ways, unicast and broadcast.
    let st = vec![Station::new(&topo, 0, "c1"), Station::new(&topo, 1, "c2")];
    let m = marker(TEST_ID, 1);
    let f = eth_frame(mac(1), mac(0), ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "unicast c1 -> c2 after the deletion",
        &st,
        0,
        &f,
        &m,
        &[Want::Nothing, Want::Untagged],
    );
    let m = marker(TEST_ID, 2);
    let f = eth_frame(BROADCAST, mac(1), ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "broadcast c2 after the deletion",
        &st,
        1,
        &f,
        &m,
        &[Want::Untagged, Want::Nothing],
    );
    let reply = ping(&topo.client(0).ns, &topo.client(1).ip, 3);
    assert!(
        reply.status.success(),
        "ping c1 -> c2 after the deletion:\n{}",
        String::from_utf8_lossy(&reply.stdout)
    );

    // The same name can be added again, and forwards.
    recreate_wire(&topo, 2);
    cli_ok(&daemon, &["port", "add", &name(2), "--domain", "wire"]);
    assert_eq!(port_names(&daemon), [name(0), name(1), name(2)]);
    let st = vec![
        Station::new(&topo, 0, "c1"),
        Station::new(&topo, 1, "c2"),
        Station::new(&topo, 2, "c3 (re-added)"),
    ];
    let m = marker(TEST_ID, 3);
    let f = eth_frame(BROADCAST, mac(2), ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "broadcast from the re-added port",
        &st,
        2,
        &f,
        &m,
        &[Want::Untagged, Want::Untagged, Want::Nothing],
    );
    let m = marker(TEST_ID, 4);
    let f = eth_frame(mac(2), mac(0), ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "unicast to the re-added port",
        &st,
        0,
        &f,
        &m,
        &[Want::Nothing, Want::Nothing, Want::Untagged],
    );
    // And deleted again, it goes again.
    run("ip", &["-n", &topo.node_ns, "link", "del", &name(2)]);
    assert!(
        wait_until(Duration::from_secs(3), || !port_names(&daemon)
            .contains(&name(2))),
        "re-added port not removed after its second deletion"
    );
    assert!(daemon_alive(&daemon), "daemon died\n{}", daemon.log());
    assert_umem_balanced(&daemon);
}
