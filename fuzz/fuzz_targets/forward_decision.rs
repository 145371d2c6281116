//! A sequence of frames over 2-6 ports in one or two bridge domains, with arbitrary VLAN
//! modes, through one FDB. For every decision, the ports a frame would leave by (as the
//! forwarder picks them: the FDB hit, or every other member carrying the VLAN) are in the
//! ingress port's domain and carry the frame's VLAN, and the bytes that leave each one (tag
//! pushed/popped as the forwarder does) put the frame on that same VLAN for the far end.
#![no_main]

use std::time::{Duration, Instant};

use bridge_common::wire::{EthernetFrame, MacAddr};
use bridge_user::fdb::{Fdb, FdbKey, Lookup};
use bridge_user::forward::{decide, Verdict};
use bridge_user::metrics::{DropReason, FdbCounters};
use bridge_user::port::{DomainId, PortId};
use bridge_user::vlan::{Egress, PortMode};
use libfuzzer_sys::fuzz_target;
use vwire_fuzz::{egress_bytes, Cursor};

fn is_tag(ethertype: u16) -> bool {
    ethertype == 0x8100 || ethertype == 0x88a8
}

/// The frame with its outer tag (if any) removed: what must survive the trip unchanged.
fn strip_outer(f: &[u8]) -> Vec<u8> {
    if f.len() >= 18 && is_tag(u16::from_be_bytes([f[12], f[13]])) {
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&f[16..]);
        v
    } else {
        f.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor::new(data);
    let n = 2 + usize::from(c.u8() % 5);
    let ports: Vec<(DomainId, PortMode)> = (0..n)
        .map(|_| (DomainId(u16::from(c.u8() % 4 == 3)), c.mode()))
        .collect();
    let capacity = 1 + usize::from(c.u8() % 32);
    let per_port = 1 + u32::from(c.u8() % 16);
    let mut fdb = Fdb::new(Duration::from_secs(300), capacity, per_port);
    let mut events = FdbCounters::default();
    let t0 = Instant::now();
    let mut step = 0u64;
    while !c.is_empty() && step < 64 {
        step += 1;
        let now = t0 + Duration::from_millis(step);
        let ingress = usize::from(c.u8()) % n;
        let (domain, mode) = &ports[ingress];
        let frame = c.frame();
        let id = PortId(u32::try_from(ingress).expect("few ports"));
        let d = decide(&mut fdb, &mut events, *domain, id, mode, &frame, now);
        let targets: Vec<usize> = match d.verdict {
            Verdict::Drop(DropReason::SamePort) => {
                let key = FdbKey {
                    domain: *domain,
                    vlan: d.vlan,
                    mac: MacAddr::from_bytes(&frame[0..6]),
                };
                assert_eq!(fdb.lookup(&key, now), Lookup::Hit(id));
                Vec::new()
            }
            Verdict::Drop(_) => Vec::new(),
            Verdict::Forward(p) => {
                let p = p.0 as usize;
                assert_ne!(p, ingress, "forwarded back out of the ingress port");
                assert_eq!(ports[p].0, *domain, "forwarded across bridge domains");
                // Only members of a VLAN ever learn on it, so a hit is always a member.
                assert!(
                    ports[p].1.egress(d.vlan).is_some(),
                    "FDB hit on port {p} ({:?}) for VLAN {}",
                    ports[p].1,
                    d.vlan
                );
                vec![p]
            }
            Verdict::Flood => (0..n)
                .filter(|&p| {
                    p != ingress && ports[p].0 == *domain && ports[p].1.egress(d.vlan).is_some()
                })
                .collect(),
        };
        for p in targets {
            let how = ports[p].1.egress(d.vlan).expect("member");
            // Popping the outer tag onto a second one is refused (double-tag VLAN hopping);
            // nothing else may be.
            let bares_inner_tag = d.tagged
                && how == Egress::Untagged
                && frame.len() >= 18
                && is_tag(u16::from_be_bytes([frame[16], frame[17]]));
            let Some(out) = egress_bytes(&frame, &d, how) else {
                assert!(
                    bares_inner_tag,
                    "no tag rewrite for {d:?} to {how:?} ({} bytes)",
                    frame.len()
                );
                continue;
            };
            assert!(
                !bares_inner_tag,
                "outer tag popped onto a second one: {d:?} to {how:?}, frame {:02x?}",
                &frame[..frame.len().min(20)]
            );
            // Exactly the outer tag (if any) is replaced; nothing else changes.
            let body = |f: &[u8], tagged: bool| if tagged { strip_outer(f) } else { f.to_vec() };
            assert_eq!(
                body(&out, how == Egress::Tagged),
                body(&frame, d.tagged),
                "frame body changed"
            );
            let ethertype = u16::from_be_bytes([out[12], out[13]]);
            match how {
                Egress::Tagged => {
                    // The far end of a trunk reads the VLAN from the tag: it must be ours.
                    assert_eq!(ethertype, 0x8100, "tagged egress without an 802.1Q tag");
                    let vid = u16::from_be_bytes([out[14], out[15]]) & 0x0fff;
                    assert_eq!(
                        vid,
                        d.vlan.get(),
                        "frame of VLAN {} leaves trunk port {p} ({:?}) tagged VID {vid} \
                         (ingress port {ingress} {mode:?}, frame {:02x?})",
                        d.vlan,
                        ports[p].1,
                        &frame[..frame.len().min(20)]
                    );
                }
                Egress::Untagged => {
                    // The outer tag is gone; the port's own VLAN for untagged frames is ours.
                    let back = EthernetFrame::new_unchecked(&out[..]);
                    assert!(!is_tag(ethertype), "untagged egress bares a tag");
                    let ing = ports[p].1.classify(&back).expect("untagged egress");
                    assert_eq!(ing.vlan, d.vlan, "untagged egress on the wrong VLAN");
                    assert_eq!(out.len() + 4 * usize::from(d.tagged), frame.len());
                }
            }
        }
        assert!(fdb.len() <= capacity, "FDB above its capacity");
        for p in 0..n {
            let p = PortId(u32::try_from(p).expect("few ports"));
            assert!(fdb.learned_on(p) <= per_port, "port above its MAC limit");
        }
    }
});
