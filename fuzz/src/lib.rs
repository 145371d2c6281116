//! Shared pieces of the fuzz targets: a byte cursor that turns fuzzer input into port modes
//! and frames, a reference model of 802.1Q ingress classification written from the README
//! (independent of `vlan.rs`), and the egress rewrite the forwarder applies (`stage`), done
//! with the daemon's own `vlan::rewrite_for_egress` in a UMEM-sized chunk.

use bridge_common::wire::{MacAddr, VlanId};
use bridge_user::forward::Decision;
use bridge_user::metrics::DropReason;
use bridge_user::vlan::{rewrite_for_egress, Egress, PortMode, VlanSet};

/// Size of a UMEM frame and the headroom the kernel leaves before each received frame.
pub const CHUNK: usize = 2048;
pub const HEADROOM: usize = 256;

/// Reads fuzzer input front to back; past the end every read yields zeros.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    /// A VLAN ID in 1..=4094, biased towards a few small values so modes overlap often.
    pub fn vlan(&mut self) -> VlanId {
        let raw = self.u16();
        let vid = if raw & 0x8000 == 0 {
            1 + (raw % 4)
        } else {
            1 + (raw & 0x0fff) % 4094
        };
        VlanId::new(vid).expect("1..=4094")
    }

    /// An arbitrary port mode: access in one VLAN, or a trunk with 0-7 allowed VLANs and an
    /// optional native VLAN (which may or may not also be in the allowed list). Also modes the
    /// config would refuse (an empty trunk), since `decide` must cope with anything.
    pub fn mode(&mut self) -> PortMode {
        let kind = self.u8();
        if kind & 1 == 0 {
            return PortMode::Access(self.vlan());
        }
        let n = (kind >> 1) % 8;
        let allowed: VlanSet = (0..n).map(|_| self.vlan()).collect();
        let native = (kind & 0x80 != 0).then(|| self.vlan());
        PortMode::Trunk { allowed, native }
    }

    /// A MAC: mostly one of 8 unicast stations (so learning and lookups hit), sometimes
    /// broadcast, multicast, all-zero or fully arbitrary.
    pub fn mac(&mut self) -> [u8; 6] {
        let sel = self.u8();
        match sel % 16 {
            0 => [0xff; 6],
            1 => [0; 6],
            2 => [0x01, 0x00, 0x5e, 0, 0, sel],
            3 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(&pad(self.take(6), 6));
                m
            }
            _ => [0x02, 0, 0, 0, 0, sel % 8],
        }
    }

    /// A frame: structured (MACs, optional tags with arbitrary TPID/TCI, a length that may cut
    /// anywhere) or, when the selector says so, the raw rest of a chunk of input.
    pub fn frame(&mut self) -> Vec<u8> {
        let sel = self.u8();
        if sel & 0x0f == 0x0f {
            let n = usize::from(self.u8());
            return self.take(n).to_vec();
        }
        let mut f = Vec::with_capacity(80);
        f.extend_from_slice(&self.mac());
        f.extend_from_slice(&self.mac());
        let tags = (sel >> 4) % 4;
        for _ in 0..tags {
            let tpid = match self.u8() % 4 {
                0 | 1 => 0x8100,
                2 => 0x88a8,
                _ => self.u16(),
            };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&self.u16().to_be_bytes());
        }
        let ethertype = if sel & 1 == 0 { 0x88b5 } else { self.u16() };
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0x5a; 46]);
        // Sometimes cut it short, anywhere (runts, truncated tags).
        if sel & 0x0e == 0x0e {
            let cut = usize::from(self.u8()) % (f.len() + 1);
            f.truncate(cut);
        }
        f
    }
}

fn pad(b: &[u8], n: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(n, 0);
    v
}

/// What ingress classification must give, from the README's rules alone:
/// runts, then invalid sources, then 802.1ad, then 802.1Q (truncated / access / trunk
/// membership; VID 0 is a priority tag = untagged), then untagged.
pub fn reference_ingress(mode: &PortMode, frame: &[u8]) -> Result<(VlanId, bool), DropReason> {
    if frame.len() < 14 {
        return Err(DropReason::Runt);
    }
    let src = MacAddr::from_bytes(&frame[6..12]);
    if src.0[0] & 1 == 1 || src.0 == [0; 6] {
        return Err(DropReason::InvalidSrcMac);
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let access = matches!(mode, PortMode::Access(_));
    match ethertype {
        0x88a8 if access => Err(DropReason::TaggedOnAccess),
        0x88a8 => Err(DropReason::VlanNotAllowed),
        0x8100 if frame.len() < 18 => Err(DropReason::TruncatedVlanTag),
        0x8100 => {
            let vid = u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff;
            match mode {
                PortMode::Access(_) => Err(DropReason::TaggedOnAccess),
                PortMode::Trunk { native, .. } if vid == 0 => native
                    .map(|n| (n, true))
                    .ok_or(DropReason::UntaggedNoNative),
                PortMode::Trunk { allowed, native } => match VlanId::new(vid) {
                    Some(v) if allowed.contains(v) || *native == Some(v) => Ok((v, true)),
                    _ => Err(DropReason::VlanNotAllowed),
                },
            }
        }
        _ => match mode {
            PortMode::Access(v) => Ok((*v, false)),
            PortMode::Trunk { native, .. } => native
                .map(|n| (n, false))
                .ok_or(DropReason::UntaggedNoNative),
        },
    }
}

/// The bytes that leave an egress port sending `how` for a frame classified as `decision`,
/// exactly as the forwarder's `stage` rewrites them (keep the frame when its tagged-ness
/// already matches, else pop or push in place). `None` when the rewrite was refused.
pub fn egress_bytes(frame: &[u8], decision: &Decision, how: Egress) -> Option<Vec<u8>> {
    let mut chunk = vec![0u8; CHUNK];
    let len = frame.len().min(CHUNK - HEADROOM);
    chunk[HEADROOM..HEADROOM + len].copy_from_slice(&frame[..len]);
    // The daemon's own rewrite, so the model checks what `Forwarder::stage` really does.
    let (off, len) = rewrite_for_egress(
        &mut chunk,
        HEADROOM,
        len,
        decision.tagged,
        how,
        decision.vlan,
    )?;
    Some(chunk[off..off + len].to_vec())
}
