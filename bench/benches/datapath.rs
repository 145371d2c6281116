//! Criterion microbenchmarks of vwire's per-frame path, with no sockets: classification,
//! FDB learn and lookup at 64K MACs, the whole `forward::decide` step (also for a batch from 64K
//! stations, one by one and prefetched as the forwarder does), VLAN tag push/pop in
//! place, and a flood's fan-out (`forward::fan_out`: a copy into a fresh UMEM frame for every
//! egress port but the last).

mod common;

use std::{hint::black_box, time::Instant};

use bridge_common::wire::{EthernetFrame, MacAddr, VlanId};
use bridge_user::{
    fdb::Fdb,
    forward::{address, decide, decide_addressed, fan_out, RX_BATCH},
    frames::Frames,
    metrics::FdbCounters,
    port::{DomainId, PortId},
    vlan::{pop_tag, push_tag, Egress, PortMode},
    xsk::Umem,
};
use common::{frame, full_fdb, key, mac, received, MAX_AGE, N};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn classify(c: &mut Criterion) {
    let f = frame(mac(1), mac(2));
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ethernet_new_checked", |b| {
        b.iter(|| {
            let eth = EthernetFrame::new_checked(black_box(&f[..])).expect("60 bytes");
            (
                eth.dst_addr(),
                eth.src_addr(),
                eth.ethertype(),
                eth.is_tagged(),
            )
        });
    });
    g.finish();
}

fn fdb(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(u64::from(N)));
    // Learning 64K new MACs into an empty table: elements/s = new MACs learned per second.
    g.bench_function("learn_64k_new", |b| {
        b.iter_batched_ref(
            || Fdb::new(MAX_AGE, N as usize * 2, u32::MAX),
            |fdb| {
                for i in 0..N {
                    black_box(fdb.learn(key(i), PortId(i % 4), now));
                }
            },
            BatchSize::LargeInput,
        );
    });
    let mut table = full_fdb(now);
    g.bench_function("learn_64k_refresh", |b| {
        b.iter(|| {
            for i in 0..N {
                black_box(table.learn(key(i), PortId(i % 4), now));
            }
        });
    });
    let table = full_fdb(now);
    g.bench_function("lookup_64k_hit", |b| {
        b.iter(|| {
            for i in 0..N {
                black_box(table.lookup(&key(i), now));
            }
        });
    });
    g.bench_function("lookup_64k_miss", |b| {
        b.iter(|| {
            for i in N..2 * N {
                black_box(table.lookup(&key(i), now));
            }
        });
    });
    g.finish();
}

fn decide_bench(c: &mut Criterion) {
    let now = Instant::now();
    let mut fdb = full_fdb(now);
    let mut counters = FdbCounters::default();
    let access = PortMode::default();
    // Known unicast between two learned MACs, with 64K MACs in the table.
    let frames: Vec<Vec<u8>> = (0..1024u32)
        .map(|i| frame(mac(i * 61 % N), mac(i * 17 % N)))
        .collect();
    let mut g = c.benchmark_group("decide");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("known_unicast_64k_fdb", |b| {
        b.iter(|| {
            for (i, f) in frames.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation, reason = "i < 1024")]
                let port = PortId((i as u32 * 17 % N) % 4);
                black_box(decide(
                    &mut fdb,
                    &mut counters,
                    DomainId(0),
                    port,
                    &access,
                    f,
                    now,
                ));
            }
        });
    });
    // The 64K-MAC rate scenario: every frame from another of 64K learned stations, so each
    // source's slot is cold. One at a time, as a naive loop; and as the forwarder does it,
    // an rx batch at a time with every frame's FDB slots prefetched before the first is
    // decided.
    let stations: Vec<Vec<u8>> = (0..N).map(|i| frame(mac(0), mac((i * 7919) % N))).collect();
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("from_64k_stations_one_by_one", |b| {
        b.iter(|| {
            for f in &stations {
                black_box(decide(
                    &mut fdb,
                    &mut counters,
                    DomainId(0),
                    PortId(1),
                    &access,
                    f,
                    now,
                ));
            }
        });
    });
    let mut addressed = Vec::with_capacity(RX_BATCH as usize);
    g.bench_function("from_64k_stations_prefetched", |b| {
        b.iter(|| {
            for batch in stations.chunks(RX_BATCH as usize) {
                addressed.clear();
                for f in batch {
                    let a = address(DomainId(0), &access, f).expect("a valid frame");
                    a.prefetch(&fdb);
                    addressed.push(a);
                }
                for a in &addressed {
                    black_box(decide_addressed(&mut fdb, &mut counters, PortId(1), a, now));
                }
            }
        });
    });
    let bcast: Vec<u8> = frame(MacAddr([0xff; 6]), mac(3));
    g.throughput(Throughput::Elements(1));
    g.bench_function("broadcast", |b| {
        b.iter(|| {
            black_box(decide(
                &mut fdb,
                &mut counters,
                DomainId(0),
                PortId(3),
                &access,
                black_box(&bcast),
                now,
            ))
        });
    });
    g.finish();
}

fn vlan(c: &mut Criterion) {
    // A UMEM-like chunk with 256 bytes of headroom before the frame, as XDP leaves it.
    let mut chunk = vec![0u8; 2048];
    let f = frame(mac(1), mac(2));
    chunk[256..256 + f.len()].copy_from_slice(&f);
    let vid = VlanId::new(100).expect("valid VLAN id");
    let mut g = c.benchmark_group("vlan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("push_then_pop", |b| {
        b.iter(|| {
            let (off, len) = push_tag(black_box(&mut chunk), 256, 60, vid).expect("headroom");
            pop_tag(black_box(&mut chunk), off, len).expect("tagged")
        });
    });
    g.finish();
}

#[allow(
    unsafe_code,
    reason = "floods frames of a UMEM only this benchmark uses"
)]
fn flood(c: &mut Criterion) {
    let umem = Umem::new(1024, 2048).expect("an anonymous mapping");
    let mut frames = Frames::new(umem.frame_count(), umem.frame_size());
    let mut g = c.benchmark_group("flood");
    for (len, ports) in [(60u32, 4u32), (60, 8), (1514, 8)] {
        let mut bytes = frame(mac(1), mac(2));
        bytes.resize(len as usize, 0);
        let received = received(&umem, &mut frames, &bytes);
        let targets: Vec<(PortId, Egress)> =
            (0..ports).map(|p| (PortId(p), Egress::Untagged)).collect();
        let mut copies = Vec::with_capacity(targets.len());
        // Elements are frames sent out: one flood to 8 ports sends 8 frames.
        g.throughput(Throughput::Elements(u64::from(ports)));
        g.bench_function(format!("fan_out_{ports}_ports_{}b", len + 4), |b| {
            b.iter(|| {
                // SAFETY: the benchmark owns `received`'s frame; the copies go back at once.
                unsafe {
                    fan_out(
                        &umem,
                        &mut frames,
                        black_box(received),
                        &targets,
                        &mut copies,
                    )
                };
                for &(_, _, copy) in &copies[..copies.len() - 1] {
                    frames.release(umem.chunk_of(copy.expect("frames to spare").addr));
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, classify, fdb, decide_bench, vlan, flood);
criterion_main!(benches);
