//! 802.1Q VLANs and bridge domains, seen from the clients: who receives which frame, tagged how;
//! double tags (from access ports, and stacked on a trunk) and 802.1ad outer tags dropped and
//! counted; per-VLAN and per-domain learning.
//! Tagged frames are built by hand (this kernel has no VLAN interfaces) and received with
//! their tags (see `support::VlanSocket`). Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod support;

use common::*;
use support::*;

/// Payload length of the test frames (comfortably above the 60-byte minimum).
const LEN: usize = 100;

fn untagged(dst: [u8; 6], src: [u8; 6], marker: &[u8; 8]) -> Vec<u8> {
    eth_frame(dst, src, ETH_P_EXPERIMENTAL, &payload(marker, LEN))
}

fn tagged(dst: [u8; 6], src: [u8; 6], vid: u16, marker: &[u8; 8]) -> Vec<u8> {
    tagged_frame(
        dst,
        src,
        TPID_8021Q,
        vid,
        ETH_P_EXPERIMENTAL,
        &payload(marker, LEN),
    )
}

/// A drop counter of a port, e.g. `tagged_on_access`.
fn drops(daemon: &Daemon, port: &str, reason: &str) -> u64 {
    daemon.counter(port, &format!("/drops/{reason}"))
}

/// Waits until a drop counter reaches `want` and asserts it does not go past it.
fn assert_drops(daemon: &Daemon, port: &str, reason: &str, want: u64, why: &str) {
    let mut last = 0;
    wait_until(ARRIVE, || {
        last = drops(daemon, port, reason);
        last >= want
    });
    assert_eq!(
        last,
        want,
        "{why}: drops.{reason} of {port}\n{}",
        daemon.interfaces()
    );
}

#[test]
fn vlan_isolation_matrix() {
    require_privileged!("vlan_isolation_matrix");
    const TEST_ID: u8 = 31;
    let topo = Topology::builder("vlanmx", TEST_ID).clients(6).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    // Indices into the topology and the station list.
    const A: usize = 0;
    const A2: usize = 1;
    const B: usize = 2;
    const T: usize = 3;
    const N: usize = 4;
    const U: usize = 5;
    write_config(
        &topo,
        &[(
            "wire",
            vec![
                port_toml(&name(A), "vlan = 100"),
                port_toml(&name(A2), "vlan = 100"),
                port_toml(&name(B), "vlan = 200"),
                port_toml(&name(T), "trunk = [100, 200]"),
                port_toml(&name(N), "trunk = [100], native = 1"),
                port_toml(&name(U), "vlan = 1"),
            ],
        )],
    );
    let daemon = topo.start_daemon();
    let labels = [
        "A (access 100)",
        "A2 (access 100)",
        "B (access 200)",
        "T (trunk 100,200)",
        "N (trunk 100 native 1)",
        "U (access 1)",
    ];
    let st: Vec<Station> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| Station::new(&topo, i, l))
        .collect();
    let modes: Vec<String> = (0..6)
        .map(|i| {
            daemon.interface(&name(i))["mode"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(
        modes,
        [
            "access vlan 100",
            "access vlan 100",
            "access vlan 200",
            "trunk [100,200]",
            "trunk [100] native 1",
            "access vlan 1"
        ],
        "port modes from the config"
    );
    use Want::{Nothing as No, Tagged as Tg, Untagged as Un};
    let mut n = 0;
    let mut next = || {
        n += 1;
        marker(TEST_ID, n)
    };

    // Broadcasts: each stays in its VLAN, tagged on trunks, untagged on access and native.
    let m = next();
    let f = untagged(BROADCAST, mac(A), &m);
    #[rustfmt::skip]
    check_delivery("broadcast from access 100", &st, A, &f, &m,
        &[No, Un, No, Tg(100), Tg(100), No]);

    let m = next();
    let f = tagged(BROADCAST, mac(T), 200, &m);
    #[rustfmt::skip]
    check_delivery("tagged-200 broadcast from the trunk", &st, T, &f, &m,
        &[No, No, Un, No, No, No]);

    let m = next();
    let f = tagged(BROADCAST, mac(T), 100, &m);
    #[rustfmt::skip]
    check_delivery("tagged-100 broadcast from the trunk", &st, T, &f, &m,
        &[Un, Un, No, No, Tg(100), No]);

    let m = next();
    let f = untagged(BROADCAST, mac(N), &m);
    #[rustfmt::skip]
    check_delivery("untagged broadcast from the native-1 trunk", &st, N, &f, &m,
        &[No, No, No, No, No, Un]);

    let m = next();
    let f = untagged(BROADCAST, mac(U), &m);
    #[rustfmt::skip]
    check_delivery("broadcast from access 1", &st, U, &f, &m,
        &[No, No, No, No, Un, No]);

    let m = next();
    let f = untagged(BROADCAST, mac(B), &m);
    #[rustfmt::skip]
    check_delivery("broadcast from access 200", &st, B, &f, &m,
        &[No, No, No, Tg(200), No, No]);

    let m = next();
    let f = tagged(BROADCAST, mac(N), 100, &m);
    #[rustfmt::skip]
    check_delivery("tagged-100 broadcast from the native-1 trunk", &st, N, &f, &m,
        &[Un, Un, No, Tg(100), No, No]);

    // Frames the ports do not accept.
    let m = next();
    let f = untagged(BROADCAST, mac(T), &m);
    #[rustfmt::skip]
    check_delivery("untagged frame on a trunk without native VLAN", &st, T, &f, &m,
        &[No, No, No, No, No, No]);
    assert_drops(&daemon, &name(T), "untagged_no_native", 1, "untagged on T");

    let m = next();
    let f = tagged(BROADCAST, mac(T), 300, &m);
    #[rustfmt::skip]
    check_delivery("tag of a VLAN the trunk does not carry", &st, T, &f, &m,
        &[No, No, No, No, No, No]);
    let m = next();
    let f = tagged(BROADCAST, mac(N), 200, &m);
    #[rustfmt::skip]
    check_delivery("tag 200 on the trunk that carries only 100", &st, N, &f, &m,
        &[No, No, No, No, No, No]);
    assert_drops(&daemon, &name(T), "vlan_not_allowed", 1, "VLAN 300 on T");
    assert_drops(&daemon, &name(N), "vlan_not_allowed", 1, "VLAN 200 on N");

    // Unicast to learned stations goes to their port only, in their VLAN.
    let m = next();
    let f = untagged(mac(A), mac(A2), &m);
    #[rustfmt::skip]
    check_delivery("unicast A2 -> A", &st, A2, &f, &m,
        &[Un, No, No, No, No, No]);

    let m = next();
    let f = tagged(mac(A2), mac(T), 100, &m);
    #[rustfmt::skip]
    check_delivery("tagged-100 unicast T -> A2", &st, T, &f, &m,
        &[No, Un, No, No, No, No]);

    let m = next();
    let f = untagged(mac(T), mac(A), &m);
    #[rustfmt::skip]
    check_delivery("unicast A -> T (learned on VLAN 100)", &st, A, &f, &m,
        &[No, No, No, Tg(100), No, No]);

    let m = next();
    let f = untagged(mac(T), mac(B), &m);
    #[rustfmt::skip]
    check_delivery("unicast B -> T (learned on VLAN 200)", &st, B, &f, &m,
        &[No, No, No, Tg(200), No, No]);

    let m = next();
    let f = untagged(mac(U), mac(N), &m);
    #[rustfmt::skip]
    check_delivery("native unicast N -> U", &st, N, &f, &m,
        &[No, No, No, No, No, Un]);

    // B is known on VLAN 200 only: from VLAN 100 its MAC is unknown, so the frame floods
    // VLAN 100 and never reaches B.
    let m = next();
    let f = untagged(mac(B), mac(A), &m);
    #[rustfmt::skip]
    check_delivery("unicast from VLAN 100 to a MAC learned on VLAN 200", &st, A, &f, &m,
        &[No, Un, No, Tg(100), Tg(100), No]);

    // The same MAC on two VLANs is two entries: T's own MAC on 100 and 200, and a station
    // X that shows up on A (VLAN 100) and on B (VLAN 200).
    let x = [0x02, 0, 0, 0x77, TEST_ID, 0x58];
    let m = next();
    let f = untagged(BROADCAST, x, &m);
    check_delivery(
        "broadcast from X on A",
        &st,
        A,
        &f,
        &m,
        &[No, Un, No, Tg(100), Tg(100), No],
    );
    let m = next();
    let f = untagged(BROADCAST, x, &m);
    check_delivery(
        "broadcast from X on B",
        &st,
        B,
        &f,
        &m,
        &[No, No, No, Tg(200), No, No],
    );
    let entries = fdb_entries(&daemon);
    let of = |mac: [u8; 6]| -> Vec<(u64, String)> {
        entries
            .iter()
            .filter(|e| e.1 == mac_str(&mac))
            .map(|e| (e.2, e.3.clone()))
            .collect()
    };
    assert_eq!(
        of(x),
        [(100, name(A)), (200, name(B))],
        "X learned on two VLANs: {entries:?}"
    );
    assert_eq!(
        of(mac(T)),
        [(100, name(T)), (200, name(T))],
        "T's MAC learned on two VLANs: {entries:?}"
    );
    assert_eq!(
        of(mac(N)),
        [(1, name(N)), (100, name(N))],
        "N's MAC learned on its native VLAN and on 100: {entries:?}"
    );
    // Each entry directs its own VLAN's unicast.
    let m = next();
    let f = tagged(x, mac(T), 100, &m);
    #[rustfmt::skip]
    check_delivery("tagged-100 unicast to X", &st, T, &f, &m,
        &[Un, No, No, No, No, No]);
    let m = next();
    let f = tagged(x, mac(T), 200, &m);
    #[rustfmt::skip]
    check_delivery("tagged-200 unicast to X", &st, T, &f, &m,
        &[No, No, Un, No, No, No]);

    assert_umem_balanced(&daemon);
    assert!(daemon_alive(&daemon), "daemon died\n{}", daemon.log());
}

#[test]
fn double_tags_and_8021ad_are_dropped_and_counted() {
    require_privileged!("double_tags_and_8021ad_are_dropped_and_counted");
    const TEST_ID: u8 = 32;
    let topo = Topology::builder("dbltag", TEST_ID).clients(5).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    const A: usize = 0;
    const A2: usize = 1;
    const B: usize = 2;
    const T: usize = 3;
    const U: usize = 4;
    write_config(
        &topo,
        &[(
            "wire",
            vec![
                port_toml(&name(A), "vlan = 100"),
                port_toml(&name(A2), "vlan = 100"),
                port_toml(&name(B), "vlan = 200"),
                port_toml(&name(T), "trunk = [100, 200], native = 1"),
                port_toml(&name(U), ""),
            ],
        )],
    );
    let daemon = topo.start_daemon();
    let labels = [
        "A (access 100)",
        "A2 (access 100)",
        "B (access 200)",
        "T (trunk 100,200 native 1)",
        "U (access 1)",
    ];
    let st: Vec<Station> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| Station::new(&topo, i, l))
        .collect();
    let nobody = [Want::Nothing; 5];
    let body = |m: &[u8; 8]| payload(m, LEN);
    let mut n = 0;
    let mut next = || {
        n += 1;
        marker(TEST_ID, n)
    };

    // Double tag from an access port: outer = the port's own VLAN, inner = the target VLAN.
    const ROUNDS: u64 = 3;
    for _ in 0..ROUNDS {
        let m = next();
        #[rustfmt::skip]
        let f = double_tagged_frame(BROADCAST, mac(A), TPID_8021Q, 100, 200, ETH_P_EXPERIMENTAL, &body(&m));
        check_delivery(
            "[8100/100][8100/200] from access 100",
            &st,
            A,
            &f,
            &m,
            &nobody,
        );
        // To a unicast MAC on the target VLAN, too.
        let m = next();
        #[rustfmt::skip]
        let f = double_tagged_frame(mac(B), mac(A), TPID_8021Q, 100, 200, ETH_P_EXPERIMENTAL, &body(&m));
        check_delivery(
            "[8100/100][8100/200] unicast to B from access 100",
            &st,
            A,
            &f,
            &m,
            &nobody,
        );
    }
    assert_drops(
        &daemon,
        &name(A),
        "tagged_on_access",
        2 * ROUNDS,
        "double tags on A",
    );
    // The classic attack comes from the trunk's native VLAN: outer tag 1, inner 100.
    let m = next();
    #[rustfmt::skip]
    let f = double_tagged_frame(BROADCAST, mac(U), TPID_8021Q, 1, 100, ETH_P_EXPERIMENTAL, &body(&m));
    check_delivery("[8100/1][8100/100] from access 1", &st, U, &f, &m, &nobody);
    // A single tag on an access port, and an 802.1ad tag there.
    let m = next();
    let f = tagged_frame(
        BROADCAST,
        mac(U),
        TPID_8021Q,
        100,
        ETH_P_EXPERIMENTAL,
        &body(&m),
    );
    check_delivery("[8100/100] from access 1", &st, U, &f, &m, &nobody);
    let m = next();
    #[rustfmt::skip]
    let f = double_tagged_frame(BROADCAST, mac(U), TPID_8021AD, 1, 100, ETH_P_EXPERIMENTAL, &body(&m));
    check_delivery("[88a8/1][8100/100] from access 1", &st, U, &f, &m, &nobody);
    assert_drops(
        &daemon,
        &name(U),
        "tagged_on_access",
        3,
        "tagged frames on U",
    );

    // 802.1ad outer tags on the trunk, with VIDs it does carry.
    for outer in [100, 200] {
        let m = next();
        #[rustfmt::skip]
        let f = double_tagged_frame(BROADCAST, mac(T), TPID_8021AD, outer, 100, ETH_P_EXPERIMENTAL, &body(&m));
        check_delivery(
            &format!("[88a8/{outer}][8100/100] from the trunk"),
            &st,
            T,
            &f,
            &m,
            &nobody,
        );
    }
    let m = next();
    let f = tagged_frame(
        BROADCAST,
        mac(T),
        TPID_8021AD,
        200,
        ETH_P_EXPERIMENTAL,
        &body(&m),
    );
    check_delivery("[88a8/200] from the trunk", &st, T, &f, &m, &nobody);
    let t = daemon.interface(&name(T));
    let t_drops: u64 = t["drops"]
        .as_object()
        .expect("drops object")
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(
        t_drops, 3,
        "every 802.1ad frame on T dropped and counted once: {t}"
    );
    assert_drops(&daemon, &name(T), "vlan_not_allowed", 3, "802.1ad on T");
    // Nothing was learned from the dropped frames, and the ports still forward.
    let entries = fdb_entries(&daemon);
    assert!(
        entries.is_empty(),
        "learned from dropped frames: {entries:?}"
    );
    // Stacked 802.1Q tags on the trunk: outer the native VLAN (the classic hop: popped on the
    // way out, the inner tag would pick the next switch's VLAN), a priority tag, an allowed
    // VLAN. Every port of those VLANs here would pop the outer tag (U is access 1, A and A2
    // access 100), so nobody gets them, and each refusal is counted on the port refused. (The
    // trunk accepted them, so T's MAC is learned from here on.)
    for outer in [1, 0, 100] {
        let m = next();
        #[rustfmt::skip]
        let f = double_tagged_frame(BROADCAST, mac(T), TPID_8021Q, outer, 200, ETH_P_EXPERIMENTAL, &body(&m));
        check_delivery(
            &format!("[8100/{outer}][8100/200] from the trunk"),
            &st,
            T,
            &f,
            &m,
            &nobody,
        );
    }
    for (port, n) in [(U, 2), (A, 1), (A2, 1)] {
        assert_drops(
            &daemon,
            &name(port),
            "vlan_not_member",
            n,
            "stacked tags from T refused where the outer tag would be popped",
        );
    }

    let m = next();
    let f = tagged(BROADCAST, mac(T), 200, &m);
    #[rustfmt::skip]
    check_delivery("tagged-200 from the trunk afterwards", &st, T, &f, &m,
        &[Want::Nothing, Want::Nothing, Want::Untagged, Want::Nothing, Want::Nothing]);
    let m = next();
    let f = untagged(BROADCAST, mac(A), &m);
    #[rustfmt::skip]
    check_delivery("broadcast from A afterwards", &st, A, &f, &m,
        &[Want::Nothing, Want::Untagged, Want::Nothing, Want::Tagged(100), Want::Nothing]);
    assert_drops(
        &daemon,
        &name(A),
        "tagged_on_access",
        2 * ROUNDS,
        "A after a good frame",
    );
}

#[test]
fn bridge_domains_never_leak() {
    require_privileged!("bridge_domains_never_leak");
    const TEST_ID: u8 = 33;
    let topo = Topology::builder("domains", TEST_ID).clients(5).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    // Domain "wire": W1 access 100, W2 trunk [100], W3 access 1.
    // Domain "other": O1 access 100, O2 trunk [100]. Same VLANs, same modes.
    const W1: usize = 0;
    const W2: usize = 1;
    const W3: usize = 2;
    const O1: usize = 3;
    const O2: usize = 4;
    write_config(
        &topo,
        &[
            (
                "wire",
                vec![
                    port_toml(&name(W1), "vlan = 100"),
                    port_toml(&name(W2), "trunk = [100]"),
                    port_toml(&name(W3), ""),
                ],
            ),
            (
                "other",
                vec![
                    port_toml(&name(O1), "vlan = 100"),
                    port_toml(&name(O2), "trunk = [100]"),
                ],
            ),
        ],
    );
    let daemon = topo.start_daemon();
    let labels = [
        "W1 (wire, access 100)",
        "W2 (wire, trunk 100)",
        "W3 (wire, access 1)",
        "O1 (other, access 100)",
        "O2 (other, trunk 100)",
    ];
    let st: Vec<Station> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| Station::new(&topo, i, l))
        .collect();
    use Want::{Nothing as No, Tagged as Tg, Untagged as Un};
    let mut n = 0;
    let mut next = || {
        n += 1;
        marker(TEST_ID, n)
    };

    let domains = daemon.show_json("bridge-domains");
    let members = |d: &str| -> Vec<String> {
        domains["bridge_domains"]
            .as_array()
            .expect("bridge_domains array")
            .iter()
            .find(|x| x["name"] == d)
            .unwrap_or_else(|| panic!("no domain {d}: {domains}"))["ports"]
            .as_array()
            .expect("ports array")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(members("wire"), [name(W1), name(W2), name(W3)], "{domains}");
    assert_eq!(members("other"), [name(O1), name(O2)], "{domains}");

    // Broadcasts, and an unknown unicast (which floods), stay in their domain.
    let m = next();
    let f = untagged(BROADCAST, mac(W1), &m);
    check_delivery(
        "broadcast in wire",
        &st,
        W1,
        &f,
        &m,
        &[No, Tg(100), No, No, No],
    );
    let m = next();
    let f = untagged(BROADCAST, mac(O1), &m);
    check_delivery(
        "broadcast in other",
        &st,
        O1,
        &f,
        &m,
        &[No, No, No, No, Tg(100)],
    );
    let m = next();
    let f = tagged(BROADCAST, mac(O2), 100, &m);
    check_delivery(
        "tagged broadcast in other",
        &st,
        O2,
        &f,
        &m,
        &[No, No, No, Un, No],
    );
    let m = next();
    let f = untagged(BROADCAST, mac(W3), &m);
    check_delivery(
        "VLAN 1 broadcast in wire",
        &st,
        W3,
        &f,
        &m,
        &[No, No, No, No, No],
    );
    let unknown = [0x02, 0, 0, 0x66, TEST_ID, 1];
    let m = next();
    let f = tagged(unknown, mac(W2), 100, &m);
    check_delivery(
        "unknown unicast in wire",
        &st,
        W2,
        &f,
        &m,
        &[Un, No, No, No, No],
    );
    // A MAC learned in the other domain is unknown here: flooded within this domain only.
    let m = next();
    let f = untagged(mac(O1), mac(W1), &m);
    check_delivery(
        "unicast to other's MAC from wire",
        &st,
        W1,
        &f,
        &m,
        &[No, Tg(100), No, No, No],
    );

    // The same MAC in both domains: two independent entries, each directing its domain.
    let x = [0x02, 0, 0, 0x77, TEST_ID, 0x58];
    let m = next();
    let f = untagged(BROADCAST, x, &m);
    check_delivery("X in wire", &st, W1, &f, &m, &[No, Tg(100), No, No, No]);
    let m = next();
    let f = tagged(BROADCAST, x, 100, &m);
    check_delivery("X in other", &st, O2, &f, &m, &[No, No, No, Un, No]);
    let entries = fdb_entries(&daemon);
    let xs: Vec<_> = entries
        .iter()
        .filter(|e| e.1 == mac_str(&x))
        .cloned()
        .collect();
    assert_eq!(
        xs,
        [
            ("other".to_owned(), mac_str(&x), 100, name(O2), false),
            ("wire".to_owned(), mac_str(&x), 100, name(W1), false),
        ],
        "X in both domains: {entries:?}"
    );
    let m = next();
    let f = tagged(x, mac(W2), 100, &m);
    check_delivery(
        "unicast to X in wire",
        &st,
        W2,
        &f,
        &m,
        &[Un, No, No, No, No],
    );
    let m = next();
    let f = untagged(x, mac(O1), &m);
    check_delivery(
        "unicast to X in other",
        &st,
        O1,
        &f,
        &m,
        &[No, No, No, No, Tg(100)],
    );

    // Deleting one domain's entry leaves the other's.
    let x_str = mac_str(&x);
    cli_ok(
        &daemon,
        &["fdb", "del", &x_str, "--domain", "wire", "--vlan", "100"],
    );
    let xs: Vec<_> = fdb_entries(&daemon)
        .into_iter()
        .filter(|e| e.1 == x_str)
        .collect();
    assert_eq!(
        xs,
        [("other".to_owned(), x_str.clone(), 100, name(O2), false)],
        "after deleting X from wire"
    );
    // Flushing one domain leaves the other's entries.
    let before_other = fdb_entries(&daemon)
        .into_iter()
        .filter(|e| e.0 == "other")
        .count();
    assert!(before_other > 0);
    cli_ok(&daemon, &["fdb", "flush", "--domain", "wire"]);
    let after = fdb_entries(&daemon);
    assert!(after.iter().all(|e| e.0 == "other"), "{after:?}");
    assert_eq!(after.len(), before_other, "{after:?}");

    let per_domain = daemon.show_json("bridge-domains");
    for d in per_domain["bridge_domains"].as_array().expect("array") {
        let want = after.iter().filter(|e| e.0 == d["name"]).count() as u64;
        assert_eq!(d["fdb_entries"].as_u64(), Some(want), "{per_domain}");
    }
    assert_umem_balanced(&daemon);
}
