//! One arbitrary frame on a port with an arbitrary VLAN mode, through the partial-checksum
//! completion and `decide` over an FDB that already knows a few stations. Checks `decide`
//! against an independent model of the README's ingress rules, and that its verdict agrees
//! with the FDB.
#![no_main]

use std::time::{Duration, Instant};

use bridge_common::wire::{EthernetFrame, MacAddr};
use bridge_user::checksum;
use bridge_user::fdb::{Fdb, FdbKey, Lookup};
use bridge_user::forward::{decide, Verdict};
use bridge_user::metrics::{DropReason, FdbCounters};
use bridge_user::port::{DomainId, PortId};
use bridge_user::vlan::PortMode;
use libfuzzer_sys::fuzz_target;
use vwire_fuzz::{reference_ingress, Cursor};

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let mode = c.mode();
    let ingress = PortId(u32::from(c.u8() % 4));
    let capacity = 1 + usize::from(c.u8() % 16);
    let per_port = 1 + u32::from(c.u8() % 8);
    let mut fdb = Fdb::new(Duration::from_secs(300), capacity, per_port);
    let now = Instant::now();
    let domain = DomainId(0);
    for _ in 0..c.u8() % 8 {
        let mac = MacAddr(c.mac());
        let vlan = c.vlan();
        let port = PortId(u32::from(c.u8() % 4));
        fdb.learn(FdbKey { domain, vlan, mac }, port, now);
    }
    let mut frame = if c.u8() & 1 == 0 {
        c.frame()
    } else {
        c.rest().to_vec()
    };
    // Completing a partial checksum rewrites two bytes at most, and doing it again changes
    // nothing more.
    let received = frame.clone();
    if checksum::complete_partial(&mut frame) {
        let changed = received.iter().zip(&frame).filter(|(a, b)| a != b).count();
        assert!(changed <= 2, "completing a checksum changed {changed} bytes");
        let completed = frame.clone();
        checksum::complete_partial(&mut frame);
        assert_eq!(frame, completed, "a completed checksum changed again");
    } else {
        assert_eq!(frame, received, "left alone, yet changed");
    }
    let mut events = FdbCounters::default();
    let d = decide(&mut fdb, &mut events, domain, ingress, &mode, &frame, now);

    match (reference_ingress(&mode, &frame), d.verdict) {
        (Err(want), Verdict::Drop(got)) => assert_eq!(want, got, "drop reason, mode {mode:?}"),
        (Err(want), got) => panic!("expected Drop({want:?}), got {got:?} (mode {mode:?})"),
        (Ok((vlan, tagged)), verdict) => {
            assert_eq!((d.vlan, d.tagged), (vlan, tagged), "VLAN, mode {mode:?}");
            // The frame's VLAN is one its ingress port carries.
            assert!(mode.egress(d.vlan).is_some(), "{d:?} not in {mode:?}");
            if matches!(mode, PortMode::Access(_)) {
                assert!(!d.tagged, "a frame accepted on an access port was tagged");
            }
            let dst = MacAddr::from_bytes(&frame[0..6]);
            let key = FdbKey {
                domain,
                vlan: d.vlan,
                mac: dst,
            };
            match verdict {
                Verdict::Forward(p) => {
                    assert_ne!(p, ingress, "forwarded back out of the ingress port");
                    assert!(!dst.is_multicast());
                    assert_eq!(fdb.lookup(&key, now), Lookup::Hit(p));
                }
                Verdict::Flood => {
                    assert!(dst.is_multicast() || fdb.lookup(&key, now) == Lookup::Miss);
                }
                Verdict::Drop(DropReason::SamePort) => {
                    assert_eq!(fdb.lookup(&key, now), Lookup::Hit(ingress));
                }
                Verdict::Drop(other) => panic!("accepted frame dropped as {other:?}"),
            }
        }
    }
    assert!(fdb.len() <= capacity, "FDB above its capacity");
    for p in 0..4 {
        assert!(
            fdb.learned_on(PortId(p)) <= per_port,
            "port above its MAC limit"
        );
    }
    // `classify` alone (no source check) agrees with the model too.
    if frame.len() >= 14 {
        let mut valid = frame.clone();
        valid[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        let got = mode
            .classify(&EthernetFrame::new_unchecked(&valid[..]))
            .map(|i| (i.vlan, i.tagged));
        assert_eq!(got, reference_ingress(&mode, &valid));
    }
});
