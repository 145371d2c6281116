//! Attacks from a client: a MAC flood against the per-port limit and the global FDB cap,
//! spoofing another port's MAC, and VLAN hopping with fuzzed tags. Known hosts keep working
//! and nothing crosses a VLAN. Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod hardening;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use hardening::*;
use support::*;

/// A small deterministic PRNG (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random locally administered unicast MAC.
    fn mac(&mut self) -> [u8; 6] {
        let b = self.next().to_le_bytes();
        [0x06 | (b[0] & 0xf0), b[1], b[2], b[3], b[4], b[5]]
    }
}

#[test]
fn mac_flood_is_capped_and_known_hosts_keep_working() {
    require_privileged!("mac_flood_is_capped_and_known_hosts_keep_working");
    const TEST_ID: u8 = 66;
    const PER_ATTACKER: u32 = 1000;
    let topo = Topology::builder("macflood", TEST_ID).clients(7).build();
    let ports = ports_toml(&topo, &(0..7).collect::<Vec<_>>(), "");
    write_config_with(
        &topo,
        "fdb_max_entries = 1024\nmax_macs_per_port = 256",
        &[("wire", ports)],
    );
    let daemon = topo.start_daemon();
    // Clients 5 and 6 are known hosts; 0-4 each send 1000 frames from random source MACs.
    announce(&topo, &[5, 6]);
    std::thread::sleep(Duration::from_millis(200));
    let flows = start_pair(&topo, 5, 6, TEST_ID, 0, 2500, Duration::from_millis(1));
    let victim = topo.client(5).mac;
    let attack = |i: usize| {
        let sock = OneShot::client(&topo, i);
        let mut rng = Rng(0x5eed_0000 + i as u64);
        Background::start(u64::from(PER_ATTACKER), move |n| {
            let f = eth_frame(victim, rng.mac(), ETH_P_EXPERIMENTAL, &[0x66; 64]);
            sock.send_once(&f).expect("send an attack frame");
            if n % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    // First one port alone (it hits its 256-MAC limit), then four at once (the table fills).
    let mut sent = attack(0).join();
    let mut limited = 0;
    wait_until(Duration::from_secs(2), || {
        limited = top(&daemon, "/fdb/port_limit");
        limited >= u64::from(PER_ATTACKER - 256)
    });
    let attackers: Vec<Background> = (1..5).map(attack).collect();
    sent += attackers.into_iter().map(Background::join).sum::<u64>();
    for r in flows.map(Flow::finish) {
        r.assert_lossless();
    }
    let all = daemon.interfaces();
    let fdb = &all["fdb"];
    let entries = counter(&all, "/fdb_entries");
    eprintln!("{sent} random source MACs from 5 ports: fdb {fdb}, {entries} entries");
    assert!(entries <= 1024, "FDB above its cap: {entries}");
    assert_eq!(
        limited,
        u64::from(PER_ATTACKER - 256),
        "one port alone: all but 256 of its MACs refused: {fdb}"
    );
    assert!(counter(&all, "/fdb/port_limit") >= limited, "{fdb}");
    assert!(
        counter(&all, "/fdb/table_full") > 0,
        "global cap never hit: {fdb}"
    );
    let mut by_port: BTreeMap<String, u64> = BTreeMap::new();
    for (_, _, _, port, _) in fdb_entries(&daemon) {
        *by_port.entry(port).or_default() += 1;
    }
    for (port, n) in &by_port {
        assert!(*n <= 256, "port {port} holds {n} learned MACs (limit 256)");
    }
    for i in [5, 6] {
        let e = daemon
            .fdb_entry(&topo.client(i).mac)
            .unwrap_or_else(|| panic!("known host c{i} forgotten during the flood"));
        assert_eq!(
            e["port"],
            topo.client(i).host_if.as_str(),
            "c{i} entry: {e}"
        );
    }
    assert_umem_balanced(&daemon);
}

#[test]
fn mac_spoofing_is_a_counted_move() {
    require_privileged!("mac_spoofing_is_a_counted_move");
    const TEST_ID: u8 = 67;
    let topo = Topology::builder("spoof", TEST_ID).clients(3).build();
    let daemon = topo.start_daemon();
    let st: Vec<Station> = (0..3)
        .map(|i| Station::new(&topo, i, &format!("c{i}")))
        .collect();
    announce(&topo, &[0, 1, 2]);
    std::thread::sleep(Duration::from_millis(200));
    let (a, b, c) = (topo.client(0), topo.client(1), topo.client(2));
    let port_of = |mac: &[u8; 6]| daemon.fdb_entry(mac).map(|e| e["port"].clone());
    assert_eq!(port_of(&a.mac), Some(a.host_if.as_str().into()));
    let moved = top(&daemon, "/fdb/moved");

    // c (client 2) sends with a's MAC: a's entry moves to c's port, counted.
    let m = marker(TEST_ID, 1);
    let spoofed = eth_frame(BROADCAST, a.mac, ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "spoofed broadcast",
        &st,
        2,
        &spoofed,
        &m,
        &[Want::Untagged, Want::Untagged, Want::Nothing],
    );
    assert_eq!(port_of(&a.mac), Some(c.host_if.as_str().into()));
    assert_eq!(top(&daemon, "/fdb/moved"), moved + 1, "the move is counted");
    // Until a speaks again, frames for a go to the spoofer (that is what a move means).
    let m = marker(TEST_ID, 2);
    let to_a = eth_frame(a.mac, b.mac, ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "unicast to the spoofed MAC",
        &st,
        1,
        &to_a,
        &m,
        &[Want::Nothing, Want::Nothing, Want::Untagged],
    );
    // a speaks: the entry moves back, counted again, and a gets its traffic.
    let m = marker(TEST_ID, 3);
    let from_a = eth_frame(b.mac, a.mac, ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "a reclaims its MAC",
        &st,
        0,
        &from_a,
        &m,
        &[Want::Nothing, Want::Untagged, Want::Nothing],
    );
    assert_eq!(port_of(&a.mac), Some(a.host_if.as_str().into()));
    assert_eq!(top(&daemon, "/fdb/moved"), moved + 2);
    let m = marker(TEST_ID, 4);
    let to_a = eth_frame(a.mac, b.mac, ETH_P_EXPERIMENTAL, &payload(&m, 64));
    check_delivery(
        "unicast to a after it reclaimed its MAC",
        &st,
        1,
        &to_a,
        &m,
        &[Want::Untagged, Want::Nothing, Want::Nothing],
    );
}

/// A port of the isolation test: its mode in the config and how it carries VLANs.
struct Member {
    /// VLANs it sends tagged.
    tagged: &'static [u16],
    /// The VLAN it sends untagged, if any.
    untagged: Option<u16>,
}

impl Member {
    fn egress(&self, vlan: u16) -> Option<bool> {
        if self.untagged == Some(vlan) {
            Some(false)
        } else if self.tagged.contains(&vlan) {
            Some(true)
        } else {
            None
        }
    }
}

#[test]
fn vlan_isolation_holds_under_fuzzed_tags() {
    require_privileged!("vlan_isolation_holds_under_fuzzed_tags");
    const TEST_ID: u8 = 68;
    const FRAMES: u32 = 3000;
    let topo = Topology::builder("vlanfuzz", TEST_ID).clients(6).build();
    // c0: trunk [100, 200] (no native) and c1: access 100 are the attackers; c2 access 200,
    // c3 access 300, c4 trunk [100, 300] native 200, c5 access 1 only listen.
    let members = [
        Member {
            tagged: &[100, 200],
            untagged: None,
        },
        Member {
            tagged: &[],
            untagged: Some(100),
        },
        Member {
            tagged: &[],
            untagged: Some(200),
        },
        Member {
            tagged: &[],
            untagged: Some(300),
        },
        Member {
            tagged: &[100, 300],
            untagged: Some(200),
        },
        Member {
            tagged: &[],
            untagged: Some(1),
        },
    ];
    let modes = [
        "trunk = [100, 200]",
        "vlan = 100",
        "vlan = 200",
        "vlan = 300",
        "trunk = [100, 300], native = 200",
        "",
    ];
    let ports: Vec<String> = (0..6)
        .map(|i| port_toml(&topo.client(i).host_if, modes[i]))
        .collect();
    write_config_with(&topo, "", &[("wire", ports)]);
    let daemon = topo.start_daemon();
    let rx: Vec<VlanSocket> = (0..6).map(|i| VlanSocket::client(&topo, i)).collect();
    let tx: Vec<VlanSocket> = (0..2).map(|i| VlanSocket::client(&topo, i)).collect();

    // Which VLAN the bridge must put each frame in (None: dropped), from the README's rules.
    let mut rng = Rng(0x7a65_0068);
    let mut sent: Vec<(usize, Vec<u8>, Option<u16>)> = Vec::new();
    for n in 0..FRAMES {
        let from = usize::from(n % 2 == 1);
        let tpid = match rng.below(8) {
            0..=3 => TPID_8021Q,
            4 => TPID_8021AD,
            5 => 0x9100,
            6 => ETH_P_EXPERIMENTAL,
            _ => u16::try_from(rng.below(0x10000)).expect("u16"),
        };
        let vid = match rng.below(8) {
            0 => 100,
            1 => 200,
            2 => 300,
            3 => 1,
            4 => 4095,
            _ => u16::try_from(1 + rng.below(4094)).expect("u16"),
        };
        let pcp_dei = u16::try_from(rng.below(16)).expect("small") << 12;
        let dst = if rng.below(4) == 0 {
            rng.mac()
        } else {
            BROADCAST
        };
        let src = rng.mac();
        let m = marker(TEST_ID, n);
        let body = payload(&m, 60);
        let stacked = rng.below(4) == 0;
        let frame = if tpid == ETH_P_EXPERIMENTAL {
            eth_frame(dst, src, tpid, &body)
        } else if stacked {
            let inner = u16::try_from(rng.below(4096)).expect("u16");
            double_tagged_frame(
                dst,
                src,
                tpid,
                vid | pcp_dei,
                inner,
                ETH_P_EXPERIMENTAL,
                &body,
            )
        } else {
            tagged_frame(dst, src, tpid, vid | pcp_dei, ETH_P_EXPERIMENTAL, &body)
        };
        let vlan = match (from, tpid) {
            (0, TPID_8021Q) => [100, 200].contains(&vid).then_some(vid),
            (0, _) => None, // untagged or 802.1ad on a trunk without a native VLAN
            (_, TPID_8021Q | TPID_8021AD) => None, // tagged on an access port
            _ => Some(100),
        };
        tx[from].send(&frame);
        sent.push((from, frame, vlan));
        if n % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // A frame with a second tag behind its outer 802.1Q tag never leaves where the outer tag
    // would be popped (README, VLANs: double-tag hopping); it stays whole on tagged egress.
    let bares_inner_tag = |orig: &[u8]| {
        outer_tag(orig).is_some_and(|(tpid, _)| tpid == TPID_8021Q)
            && matches!(
                u16::from_be_bytes([orig[16], orig[17]]),
                TPID_8021Q | TPID_8021AD
            )
    };
    let mut problems = Vec::new();
    let mut delivered = 0;
    for (i, sock) in rx.iter().enumerate() {
        let mut seen: BTreeSet<u32> = BTreeSet::new();
        for f in sock.recv_where(Duration::from_millis(1500), |f| {
            f.windows(4).any(|w| w == [b'V', b'W', TEST_ID, 0])
        }) {
            let p = f
                .windows(4)
                .position(|w| w == [b'V', b'W', TEST_ID, 0])
                .expect("marked");
            let n = u32::from_be_bytes(f[p + 4..p + 8].try_into().expect("4 bytes"));
            let (from, orig, vlan) = &sent[n as usize];
            let Some(vlan) = *vlan else {
                problems.push(format!(
                    "c{i} got frame {n} that must be dropped: {:02x?}",
                    &orig[..18]
                ));
                continue;
            };
            let Some(tagged) = members[i].egress(vlan) else {
                problems.push(format!(
                    "c{i} got frame {n} of VLAN {vlan}, which it does not carry"
                ));
                continue;
            };
            if i == *from {
                problems.push(format!("c{i} got its own frame {n} back"));
            }
            if !tagged && bares_inner_tag(orig) {
                problems.push(format!(
                    "c{i} got frame {n} of VLAN {vlan} with its outer tag popped onto a second one"
                ));
            }
            if !seen.insert(n) {
                problems.push(format!("c{i} got frame {n} twice"));
            }
            let in_tag = outer_tag(orig).is_some();
            let out_tag = outer_tag(&f);
            let bare = |x: &[u8], t: bool| if t { untag(x) } else { x.to_vec() };
            if tagged && out_tag != Some((TPID_8021Q, vlan)) {
                problems.push(format!(
                    "c{i} got frame {n} of VLAN {vlan} with tag {out_tag:?}"
                ));
            } else if bare(&f, tagged) != bare(orig, in_tag) {
                problems.push(format!("c{i} got frame {n} altered"));
            }
            delivered += 1;
        }
        // Everything of a VLAN it carries reached it.
        for (n, (from, orig, vlan)) in sent.iter().enumerate() {
            let n = u32::try_from(n).expect("few");
            if let Some(v) = vlan {
                let due = match members[i].egress(*v) {
                    Some(tagged) => tagged || !bares_inner_tag(orig),
                    None => false,
                };
                if *from != i && due && !seen.contains(&n) {
                    problems.push(format!("c{i} missed frame {n} of VLAN {v}"));
                }
            }
        }
    }
    let accepted = sent.iter().filter(|s| s.2.is_some()).count();
    eprintln!(
        "{FRAMES} fuzzed frames, {accepted} accepted into a VLAN, {delivered} copies delivered, \
         {} problems",
        problems.len()
    );
    problems.truncate(30);
    assert!(
        problems.is_empty(),
        "VLAN isolation broken:\n{}",
        problems.join("\n")
    );
    let all = daemon.interfaces();
    for (i, member) in members.iter().enumerate().skip(2) {
        // The only drops a listening port may count: stacked tags refused on untagged egress.
        let refused = sent
            .iter()
            .filter(|(from, orig, vlan)| {
                *from != i
                    && vlan.is_some_and(|v| member.egress(v) == Some(false))
                    && bares_inner_tag(orig)
            })
            .count();
        let want: Vec<(String, u64)> = (refused > 0)
            .then(|| ("vlan_not_member".to_owned(), refused as u64))
            .into_iter()
            .collect();
        let d = nonzero_drops(find_interface(&all, &topo.client(i).host_if));
        assert_eq!(d, want, "listening port c{i}'s drops");
    }
    assert_umem_balanced(&daemon);
}

#[test]
fn priority_tagged_frame_leaves_a_trunk_with_its_vlan_id() {
    require_privileged!("priority_tagged_frame_leaves_a_trunk_with_its_vlan_id");
    const TEST_ID: u8 = 69;
    let topo = Topology::builder("prio", TEST_ID).clients(3).build();
    // c0: trunk [100] native 10; c1: trunk [10]; c2: trunk [20] native 10 would see it
    // untagged. A priority tag from c0 puts the frame in VLAN 10.
    let ports = vec![
        port_toml(&topo.client(0).host_if, "trunk = [100], native = 10"),
        port_toml(&topo.client(1).host_if, "trunk = [10]"),
        port_toml(&topo.client(2).host_if, "trunk = [20], native = 10"),
    ];
    write_config_with(&topo, "", &[("wire", ports)]);
    let _daemon = topo.start_daemon();
    let st: Vec<Station> = (0..3)
        .map(|i| Station::new(&topo, i, &format!("c{i}")))
        .collect();
    let m = marker(TEST_ID, 1);
    let f = tagged_frame(
        BROADCAST,
        topo.client(0).mac,
        TPID_8021Q,
        0x6000, // PCP 3, VID 0
        ETH_P_EXPERIMENTAL,
        &payload(&m, 64),
    );
    // c1 carries VLAN 10 tagged: it must see VID 10 (observed: VID 0, which c1's side reads
    // as its own untagged VLAN).
    check_delivery(
        "priority-tagged frame",
        &st,
        0,
        &f,
        &m,
        &[Want::Nothing, Want::Tagged(10), Want::Untagged],
    );
}
