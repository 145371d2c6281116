//! One wire across nodes: each "node" is a network namespace running its own `vwire` daemon
//! with its own clients, and the nodes are joined by an underlay (a Linux bridge in an
//! "underlay" namespace, one `ul0` veth into each node, 10.99.0.<node>/24). Each daemon's
//! domain has a VXLAN uplink (VNI 100) with the other nodes as peers. Client ends get MTU
//! 1450 (the underlay's 1500 minus VXLAN's 50) and addresses 10.88.0.<10·node + n>/24.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod support;

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use common::*;
use serde_json::Value;
use support::*;

const VNI: u32 = 100;
const DEVICE: &str = "vx100";

/// The underlay network: a namespace holding a Linux bridge; deleted on drop.
struct Underlay {
    ns: String,
}

impl Underlay {
    fn new(tag: &str) -> Underlay {
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "vw-{}-u{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let _ = output("ip", &["netns", "del", &ns]);
        run("ip", &["netns", "add", &ns]);
        let underlay = Underlay { ns };
        ns_run(&underlay.ns, &["ip", "link", "set", "lo", "up"]);
        ns_run(
            &underlay.ns,
            &["ip", "link", "add", "br0", "type", "bridge"],
        );
        ns_run(&underlay.ns, &["ip", "link", "set", "br0", "up"]);
        underlay
    }

    /// Plugs node `k`'s namespace in: `ul0` there with 10.99.0.<k>/24.
    fn plug(&self, node_ns: &str, k: u8) {
        let port = format!("ul{k}");
        #[rustfmt::skip]
        run("ip", &[
            "-n", &self.ns, "link", "add", &port, "type", "veth",
            "peer", "name", "ul0", "netns", node_ns,
        ]);
        ns_run(&self.ns, &["ip", "link", "set", &port, "master", "br0"]);
        ns_run(&self.ns, &["ip", "link", "set", &port, "up"]);
        let addr = format!("{}/24", underlay_ip(k));
        ns_run(node_ns, &["ip", "addr", "add", &addr, "dev", "ul0"]);
        ns_run(node_ns, &["ip", "link", "set", "ul0", "up"]);
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = output("ip", &["netns", "del", &self.ns]);
    }
}

fn underlay_ip(k: u8) -> String {
    format!("10.99.0.{k}")
}

/// Node `k` (1-based) of a test: its topology (node namespace and clients, re-addressed into
/// the shared subnet with MTU 1450), plugged into the underlay.
fn node(underlay: &Underlay, tag: &str, test_id: u8, k: u8, clients: usize) -> Topology {
    let mut topo = Topology::builder(&format!("{tag}{k}"), test_id + k)
        .clients(clients)
        .build();
    for (i, c) in topo.clients.iter_mut().enumerate() {
        let n = u8::try_from(i + 1).expect("few clients");
        c.ip = format!("10.88.0.{}", 10 * k + n);
        ns_run(&c.ns, &["ip", "addr", "flush", "dev", CLIENT_IF]);
        let cidr = format!("{}/24", c.ip);
        ns_run(&c.ns, &["ip", "addr", "add", &cidr, "dev", CLIENT_IF]);
        ns_run(&c.ns, &["ip", "link", "set", CLIENT_IF, "mtu", "1450"]);
    }
    underlay.plug(&topo.node_ns, k);
    topo
}

/// Writes node `k`'s config: its clients' ports (`extra[i]`, e.g. `vlan = 100`) and the uplink
/// with every other node of `nodes` as a peer.
fn write_vxlan_config(topo: &Topology, k: u8, nodes: &[u8], extra: &[&str]) {
    let ports: Vec<String> = topo
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| port_toml(&c.host_if, extra.get(i).copied().unwrap_or("")))
        .collect();
    let peers: Vec<String> = nodes
        .iter()
        .filter(|&&n| n != k)
        .map(|&n| format!("{:?}", underlay_ip(n)))
        .collect();
    let config = format!(
        "[[bridge_domain]]\nname = \"wire\"\nports = [{}]\nvxlan = {{ vni = {VNI}, local = {:?}, peers = [{}], underlay = \"ul0\" }}\n",
        ports.join(", "),
        underlay_ip(k),
        peers.join(", ")
    );
    std::fs::write(topo.config_path(), config).expect("write vwire.toml");
}

fn ping_once(from: &Client, to: &str) -> bool {
    ns_output(&from.ns, &["ping", "-c", "1", "-W", "1", "-q", to])
        .status
        .success()
}

/// Pings until one answer (the first may wait for ARP and learning), up to 10 s.
fn assert_pings(from: &Client, to: &Client, why: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || ping_once(from, &to.ip)),
        "{why}: {} ({}) cannot ping {} ({})",
        from.ns,
        from.ip,
        to.ns,
        to.ip
    );
}

/// Pings that must all fail (different VLAN, removed node).
fn assert_no_ping(from: &Client, to: &Client, why: &str) {
    let out = ns_output(&from.ns, &["ping", "-c", "2", "-W", "1", "-q", &to.ip]);
    assert!(
        !out.status.success(),
        "{why}: {} reached {}",
        from.ip,
        to.ip
    );
}

/// The MAC that `client`'s ARP cache holds for `ip`.
fn arp_entry(client: &Client, ip: &str) -> Option<String> {
    let out = ns_run(&client.ns, &["ip", "neigh", "show", ip, "dev", CLIENT_IF]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

/// The `show fdb` entry of `mac`.
fn fdb_row(daemon: &Daemon, mac: &[u8; 6]) -> Option<Value> {
    daemon.fdb_entry(mac)
}

/// `bridge fdb show dev vx100` in a node.
fn kernel_fdb(topo: &Topology) -> String {
    ns_run(&topo.node_ns, &["bridge", "fdb", "show", "dev", DEVICE])
}

#[test]
fn clients_on_two_nodes_ping_both_ways_and_resolve_arp() {
    require_privileged!("clients_on_two_nodes_ping_both_ways_and_resolve_arp");
    let underlay = Underlay::new("ping");
    let n1 = node(&underlay, "xping", 0x60, 1, 2);
    let n2 = node(&underlay, "xping", 0x60, 2, 2);
    write_vxlan_config(&n1, 1, &[1, 2], &[]);
    write_vxlan_config(&n2, 2, &[1, 2], &[]);
    let d1 = n1.start_daemon();
    let d2 = n2.start_daemon();

    // The uplink: a vxlan device with the configured settings, MTU 1500 - 50, up, with one
    // head-end replication entry, attached as a trunk port.
    let link = ns_run(&n1.node_ns, &["ip", "-d", "link", "show", DEVICE]);
    for want in [
        "mtu 1450",
        "vxlan id 100",
        "local 10.99.0.1",
        "dev ul0",
        "dstport 4789",
        "xdpgeneric",
    ] {
        assert!(link.contains(want), "{want:?} missing from:\n{link}");
    }
    let fdb = kernel_fdb(&n1);
    assert!(
        fdb.contains("00:00:00:00:00:00 dst 10.99.0.2"),
        "no flood entry for the peer:\n{fdb}"
    );
    let domains = d1.show_json("bridge-domains");
    assert!(
        domains.to_string().contains("\"vx100\""),
        "uplink not a port: {domains}"
    );

    let (a1, b1) = (n1.client(0), n1.client(1));
    let (a2, b2) = (n2.client(0), n2.client(1));
    assert_pings(a1, a2, "node 1 -> node 2");
    assert_pings(b2, b1, "node 2 -> node 1");
    assert_pings(a2, b1, "node 2 -> node 1, other client");
    assert_pings(a1, b1, "same node still works");

    // ARP resolved across the tunnel, to the remote client's own MAC.
    assert_eq!(
        arp_entry(a1, &a2.ip).as_deref(),
        Some(mac_str(&a2.mac).as_str())
    );
    assert_eq!(
        arp_entry(b2, &b1.ip).as_deref(),
        Some(mac_str(&b1.mac).as_str())
    );

    // Full-size frames: a 1450-byte IP packet (DF set) crosses.
    let out = ns_output(
        &a1.ns,
        &[
            "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &a2.ip,
        ],
    );
    assert!(
        out.status.success(),
        "1450-byte packet did not cross: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // show fdb: remote MACs are on the uplink, marked with their node; local ones are not.
    let row = fdb_row(&d1, &a2.mac).expect("remote MAC learned");
    assert_eq!(row["port"], DEVICE, "{row}");
    assert_eq!(row["remote"], "10.99.0.2", "{row}");
    let row = fdb_row(&d1, &a1.mac).expect("local MAC learned");
    assert!(row.get("remote").is_none(), "{row}");
    let table = cli_ok(&d1, &["show", "fdb"]);
    assert!(table.contains("remote 10.99.0.2"), "{table}");

    // show peers: the peer, the MACs behind it, and the device's counters.
    let peers = cli_json(&d1, &["show", "peers"]);
    let up = &peers["uplinks"][0];
    assert_eq!(up["device"], DEVICE, "{peers}");
    assert_eq!(up["mtu"], 1450, "{peers}");
    assert_eq!(up["peers"][0]["address"], "10.99.0.2", "{peers}");
    assert!(up["peers"][0]["remote_macs"].as_u64() >= Some(2), "{peers}");
    assert!(up["kernel"]["tx_packets"].as_u64() > Some(0), "{peers}");
    let uplink = d1.interface(DEVICE);
    assert!(counter(&uplink, "/rx_frames") > 0, "{uplink}");
    assert!(counter(&uplink, "/tx_frames") > 0, "{uplink}");

    // Shutdown deletes the device.
    assert!(d1.stop().success());
    let gone = ns_output(&n1.node_ns, &["ip", "link", "show", DEVICE]);
    assert!(!gone.status.success(), "vx100 left behind after SIGTERM");
    drop(d2);
}

#[test]
fn broadcast_reaches_every_client_on_every_node_exactly_once() {
    require_privileged!("broadcast_reaches_every_client_on_every_node_exactly_once");
    let underlay = Underlay::new("bcast");
    let nodes: Vec<Topology> = (1..=3)
        .map(|k| node(&underlay, "xbc", 0x64, k, 2))
        .collect();
    for (k, t) in (1..=3).zip(&nodes) {
        write_vxlan_config(t, k, &[1, 2, 3], &[]);
    }
    let _daemons: Vec<Daemon> = nodes.iter().map(Topology::start_daemon).collect();
    let all: Vec<&Client> = nodes.iter().flat_map(|t| t.clients.iter()).collect();
    let macs: Vec<[u8; 6]> = all.iter().map(|c| c.mac).collect();
    let sockets: Vec<RawSocket> = all
        .iter()
        .map(|c| RawSocket::open(&c.ns, CLIENT_IF, macs.clone()))
        .collect();

    // From a client of each node in turn: everyone else gets one copy, the sender none.
    for (sender, round) in [(0usize, 1u32), (3, 2), (5, 3)] {
        let mark = marker(0x64, round);
        let frame = eth_frame(
            BROADCAST,
            all[sender].mac,
            ETH_P_EXPERIMENTAL,
            &payload(&mark, 100),
        );
        sockets[sender].send(&frame);
        // Time for every copy, and for any duplicate or loop, to arrive; then read what came.
        std::thread::sleep(QUIET);
        for (i, s) in sockets.iter().enumerate() {
            let got = s
                .recv_frames_where(Duration::from_millis(50), |f| has_marker(f, &mark))
                .len();
            let want = usize::from(i != sender);
            assert_eq!(
                got, want,
                "broadcast from {} seen {got} times by {} (want {want})",
                all[sender].ip, all[i].ip
            );
        }
    }
}

#[test]
fn vlan_isolation_holds_across_nodes() {
    require_privileged!("vlan_isolation_holds_across_nodes");
    let underlay = Underlay::new("vlan");
    let n1 = node(&underlay, "xvl", 0x68, 1, 2);
    let n2 = node(&underlay, "xvl", 0x68, 2, 2);
    // Client 0 in VLAN 100, client 1 in VLAN 200, on both nodes.
    write_vxlan_config(&n1, 1, &[1, 2], &["vlan = 100", "vlan = 200"]);
    write_vxlan_config(&n2, 2, &[1, 2], &["vlan = 100", "vlan = 200"]);
    let d1 = n1.start_daemon();
    let _d2 = n2.start_daemon();
    let (a1, b1) = (n1.client(0), n1.client(1));
    let (a2, b2) = (n2.client(0), n2.client(1));

    assert_pings(a1, a2, "VLAN 100 across nodes");
    assert_pings(b2, b1, "VLAN 200 across nodes");
    assert_no_ping(a1, b2, "VLAN 100 must not reach VLAN 200 on the other node");
    assert_no_ping(b1, a2, "VLAN 200 must not reach VLAN 100 on the other node");
    assert_no_ping(a1, b1, "VLAN 100 must not reach VLAN 200 on the same node");

    // The VLAN travels inside the tunnel: the remote MAC is learned in its own VLAN only.
    let row = fdb_row(&d1, &a2.mac).expect("a2 learned");
    assert_eq!(
        (row["vlan"].as_u64(), &row["port"]),
        (Some(100), &DEVICE.into())
    );
    let row = fdb_row(&d1, &b2.mac).expect("b2 learned");
    assert_eq!(row["vlan"].as_u64(), Some(200), "{row}");

    // A tagged frame is 4 bytes longer in the tunnel; a full-size one still crosses
    // (the vxlan device leaves DF clear, so the underlay fragments it).
    let out = ns_output(
        &a1.ns,
        &["ping", "-c", "1", "-W", "2", "-s", "1422", &a2.ip],
    );
    assert!(
        out.status.success(),
        "full-size frame in VLAN 100 did not cross: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn node_removed_and_readded() {
    require_privileged!("node_removed_and_readded");
    let underlay = Underlay::new("churn");
    let nodes: Vec<Topology> = (1..=3)
        .map(|k| node(&underlay, "xch", 0x6c, k, 1))
        .collect();
    for (k, t) in (1..=3).zip(&nodes) {
        write_vxlan_config(t, k, &[1, 2, 3], &[]);
    }
    let d1 = nodes[0].start_daemon();
    let d2 = nodes[1].start_daemon();
    let d3 = nodes[2].start_daemon();
    let c = |k: usize| nodes[k].client(0);
    assert_pings(c(0), c(1), "1 -> 2");
    assert_pings(c(0), c(2), "1 -> 3");
    assert_pings(c(2), c(1), "3 -> 2");
    let learned = kernel_fdb(&nodes[0]);
    let c2_mac = mac_str(&c(1).mac);
    assert!(
        learned.contains(&format!("{c2_mac} dst 10.99.0.2")),
        "{learned}"
    );

    // Node 2 goes away: its daemon stops (deleting its device) and the others drop the peer.
    assert!(d2.stop().success());
    for d in [&d1, &d3] {
        let answer = cli_json(d, &["peer", "del", "10.99.0.2", "--domain", "wire"]);
        assert_eq!(answer["removed"], "10.99.0.2", "{answer}");
    }
    let fdb = kernel_fdb(&nodes[0]);
    assert!(
        !fdb.contains("10.99.0.2"),
        "node 2's entries remain:\n{fdb}"
    );
    assert!(
        fdb.contains("00:00:00:00:00:00 dst 10.99.0.3"),
        "node 3's flood entry was disturbed:\n{fdb}"
    );
    assert_pings(c(0), c(2), "1 -> 3 with node 2 gone");
    assert_pings(c(2), c(0), "3 -> 1 with node 2 gone");
    let peers = cli_json(&d1, &["show", "peers"]);
    let list = peers["uplinks"][0]["peers"]
        .as_array()
        .expect("peers")
        .clone();
    assert_eq!(list.len(), 1, "{peers}");
    assert_eq!(list[0]["address"], "10.99.0.3", "{peers}");
    let refused = cli_refused(&d1, &["peer", "del", "10.99.0.2", "--domain", "wire"]);
    assert!(refused.contains("not a peer"), "{refused}");
    let refused = cli_refused(&d1, &["peer", "add", "10.99.0.3", "--domain", "wire"]);
    assert!(refused.contains("already a peer"), "{refused}");
    let refused = cli_refused(&d1, &["peer", "add", "10.99.0.9", "--domain", "nope"]);
    assert!(refused.contains("no vxlan uplink"), "{refused}");

    // Node 2 comes back: a new daemon, and the others add the peer again.
    let _d2 = nodes[1].start_daemon();
    for d in [&d1, &d3] {
        cli_ok(d, &["peer", "add", "10.99.0.2", "--domain", "wire"]);
    }
    assert_pings(c(1), c(0), "2 -> 1 after re-add");
    assert_pings(c(2), c(1), "3 -> 2 after re-add");
    assert_pings(c(0), c(2), "1 -> 3 throughout");
}

#[test]
fn interoperates_with_a_linux_vxlan_device() {
    require_privileged!("interoperates_with_a_linux_vxlan_device");
    let underlay = Underlay::new("linux");
    let n1 = node(&underlay, "xlx", 0x70, 1, 1);
    let n2 = node(&underlay, "xlx", 0x70, 2, 2);
    write_vxlan_config(&n1, 1, &[1, 2], &[]);
    let d1 = n1.start_daemon();

    // Node 2: no vwire, a Linux bridge over a plain vxlan device.
    let ns = &n2.node_ns;
    ns_run(ns, &["ip", "link", "add", "br0", "type", "bridge"]);
    #[rustfmt::skip]
    ns_run(ns, &[
        "ip", "link", "add", DEVICE, "type", "vxlan", "id", "100", "local", "10.99.0.2",
        "dstport", "4789", "dev", "ul0",
    ]);
    ns_run(
        ns,
        &[
            "bridge",
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            DEVICE,
            "dst",
            "10.99.0.1",
        ],
    );
    ns_run(ns, &["ip", "link", "set", DEVICE, "master", "br0"]);
    for c in &n2.clients {
        ns_run(ns, &["ip", "link", "set", &c.host_if, "master", "br0"]);
    }
    ns_run(ns, &["ip", "link", "set", DEVICE, "up"]);
    ns_run(ns, &["ip", "link", "set", "br0", "up"]);

    let a1 = n1.client(0);
    let (a2, b2) = (n2.client(0), n2.client(1));
    assert_pings(a1, a2, "vwire -> Linux vxlan");
    assert_pings(b2, a1, "Linux vxlan -> vwire");
    assert_eq!(
        arp_entry(a1, &b2.ip).as_deref(),
        Some(mac_str(&b2.mac).as_str())
    );
    let row = fdb_row(&d1, &b2.mac).expect("b2 learned on the uplink");
    assert_eq!(row["remote"], "10.99.0.2", "{row}");
    // The Linux side learned vwire's client behind node 1.
    let theirs = ns_run(ns, &["bridge", "fdb", "show", "dev", DEVICE]);
    assert!(
        theirs.contains(&format!("{} dst 10.99.0.1", mac_str(&a1.mac))),
        "{theirs}"
    );
}
