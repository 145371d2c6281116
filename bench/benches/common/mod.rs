//! What both per-frame benchmarks (`datapath.rs`, `callgrind.rs`) build their inputs from.

use std::time::{Duration, Instant};

use bridge_common::wire::{MacAddr, VlanId, ETHERTYPE_IPV4, IPPROTO_UDP};
use bridge_user::{
    fdb::{Fdb, FdbKey},
    frames::Frames,
    port::{DomainId, PortId},
    xsk::{Desc, Umem},
};

/// MACs in the full FDB, as in the 64K-MAC rate scenario.
pub const N: u32 = 65_536;
pub const MAX_AGE: Duration = Duration::from_secs(300);

pub fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x76, b[0], b[1], b[2], b[3]])
}

pub fn key(i: u32) -> FdbKey {
    FdbKey {
        domain: DomainId(0),
        vlan: VlanId::DEFAULT,
        mac: mac(i),
    }
}

/// A 60-byte UDP frame from `src` to `dst` (10.77.0.1 to 10.77.0.2), checksum 0 ("none").
pub fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = IPPROTO_UDP;
    f[26..34].copy_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2]);
    f[34..38].copy_from_slice(&[0x30, 0x39, 0x30, 0x3a]);
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    f
}

/// An FDB with [`N`] MACs learned on four ports.
pub fn full_fdb(now: Instant) -> Fdb {
    let mut fdb = Fdb::new(MAX_AGE, N as usize * 2, u32::MAX);
    for i in 0..N {
        fdb.learn(key(i), PortId(i % 4), now);
    }
    fdb
}

/// Writes `bytes` into a fresh frame of `umem` where XDP leaves a received frame (after 256
/// bytes of headroom) and returns its descriptor, as the forwarder gets it off an rx ring.
#[allow(
    unsafe_code,
    reason = "writes a frame of a UMEM only the benchmark uses"
)]
pub fn received(umem: &Umem, frames: &mut Frames, bytes: &[u8]) -> Desc {
    let chunk = frames.alloc().expect("a free frame");
    let desc = Desc {
        addr: chunk + 256,
        len: u32::try_from(bytes.len()).expect("a frame's length"),
        options: 0,
    };
    // SAFETY: the frame just came off the free list, and nothing else uses this UMEM.
    unsafe { umem.frame_mut(desc.addr, bytes.len()) }.copy_from_slice(bytes);
    desc
}
