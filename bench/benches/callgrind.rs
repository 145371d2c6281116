//! Instructions per frame of vwire's per-frame steps, counted by Callgrind (iai-callgrind):
//! the same steps as `datapath.rs`, one call each, on the same prepared state.
//!
//! Instruction counts do not move with the host's load, so on these shared 2-core VMs they
//! show a change to the per-frame path that criterion's timings would hide in the noise.
//! Setup (filling a 64K-entry FDB, writing the frame) runs outside the measured function,
//! and each benchmark hands its state back so that dropping it is not counted either.
//! Needs valgrind and `iai-callgrind-runner` of the same version as the crate:
//! `cargo xtask bench --callgrind` installs both.

#![allow(
    unused_qualifications,
    reason = "iai-callgrind's macros call the setup expressions as super::f()"
)]

mod common;

use std::{hint::black_box, time::Instant};

use bridge_common::wire::{EthernetFrame, VlanId};
use bridge_user::{
    checksum,
    fdb::Fdb,
    forward::{decide, fan_out, Decision},
    frames::Frames,
    metrics::FdbCounters,
    port::{DomainId, PortId},
    vlan::{pop_tag, push_tag, Egress, PortMode},
    xsk::{Desc, Umem},
};
use common::{frame, key, mac, N};
use iai_callgrind::{library_benchmark, library_benchmark_group, main};

/// [`common::full_fdb`] and the time it was filled at.
fn full_fdb() -> (Fdb, Instant) {
    let now = Instant::now();
    (common::full_fdb(now), now)
}

#[library_benchmark]
#[bench::udp_64b(frame(mac(1), mac(2)))]
fn classify(f: Vec<u8>) -> Vec<u8> {
    {
        let eth = EthernetFrame::new_checked(black_box(&f[..])).expect("60 bytes");
        black_box((
            eth.dst_addr(),
            eth.src_addr(),
            eth.ethertype(),
            eth.is_tagged(),
        ));
    }
    f
}

// The test every received frame takes: a UDP frame whose checksum is complete (0 here, as the
// generator sends) is parsed down to its checksum field and left alone.
#[library_benchmark]
#[bench::udp_64b_complete(frame(mac(1), mac(2)))]
fn checksum_test(mut f: Vec<u8>) -> Vec<u8> {
    black_box(checksum::complete_partial(black_box(&mut f)));
    f
}

/// The 64K table with room for one more: the learn then fills it without the table growing
/// (it doubles past half full, which a call that crosses that line would count).
fn full_fdb_but_one() -> (Fdb, Instant) {
    let (mut fdb, now) = full_fdb();
    fdb.remove(&key(0));
    (fdb, now)
}

#[library_benchmark]
#[bench::new_mac_into_64k(full_fdb_but_one())]
fn fdb_learn((mut fdb, now): (Fdb, Instant)) -> Fdb {
    black_box(fdb.learn(black_box(key(N + 1)), PortId(1), now));
    fdb
}

#[library_benchmark]
#[bench::hit_in_64k(full_fdb())]
fn fdb_lookup((fdb, now): (Fdb, Instant)) -> Fdb {
    black_box(fdb.lookup(black_box(&key(N / 2)), now));
    fdb
}

struct Decide {
    fdb: Fdb,
    now: Instant,
    frame: Vec<u8>,
    mode: PortMode,
    counters: FdbCounters,
}

fn known_unicast() -> Decide {
    let (fdb, now) = full_fdb();
    Decide {
        fdb,
        now,
        frame: frame(mac(61), mac(17)),
        mode: PortMode::default(),
        counters: FdbCounters::default(),
    }
}

// One known-unicast frame between two of the 64K learned MACs: classify, learn the source
// (a refresh), look up the destination.
#[library_benchmark]
#[bench::known_unicast_64k_fdb(known_unicast())]
fn decide_frame(mut d: Decide) -> (Decide, Decision) {
    let decision = decide(
        &mut d.fdb,
        &mut d.counters,
        DomainId(0),
        PortId(17 % 4),
        &d.mode,
        black_box(&d.frame),
        d.now,
    );
    (d, decision)
}

/// A UMEM-like chunk with the frame after 256 bytes of headroom, as XDP leaves it.
fn chunk_with_frame() -> Vec<u8> {
    let mut chunk = vec![0u8; 2048];
    chunk[256..316].copy_from_slice(&frame(mac(1), mac(2)));
    chunk
}

#[library_benchmark]
#[bench::push_then_pop(chunk_with_frame())]
fn vlan(mut chunk: Vec<u8>) -> Vec<u8> {
    let vid = VlanId::new(100).expect("valid VLAN id");
    let (off, len) = push_tag(black_box(&mut chunk), 256, 60, vid).expect("headroom");
    black_box(pop_tag(black_box(&mut chunk), off, len).expect("tagged"));
    chunk
}

struct Flood {
    umem: Umem,
    frames: Frames,
    received: Desc,
    targets: Vec<(PortId, Egress)>,
    copies: Vec<(PortId, Egress, Option<Desc>)>,
}

fn flood_to(ports: u32) -> Flood {
    let umem = Umem::new(64, 2048).expect("an anonymous mapping");
    let mut frames = Frames::new(umem.frame_count(), umem.frame_size());
    let received = common::received(&umem, &mut frames, &frame(mac(1), mac(2)));
    Flood {
        umem,
        frames,
        received,
        targets: (0..ports).map(|p| (PortId(p), Egress::Untagged)).collect(),
        copies: Vec::with_capacity(ports as usize),
    }
}

#[allow(unsafe_code, reason = "floods a frame the benchmark owns")]
fn fan_out_once(f: &mut Flood) {
    // SAFETY: the benchmark owns `received`'s frame, and nothing else uses this UMEM.
    unsafe {
        fan_out(
            &f.umem,
            &mut f.frames,
            black_box(f.received),
            &f.targets,
            &mut f.copies,
        );
    }
}

#[library_benchmark]
#[bench::to_8_ports_64b(flood_to(8))]
fn flood(mut f: Flood) -> Flood {
    fan_out_once(&mut f);
    f
}

library_benchmark_group!(
    name = per_frame;
    benchmarks = classify, checksum_test, fdb_learn, fdb_lookup, decide_frame, vlan, flood
);

main!(library_benchmark_groups = per_frame);
