//! 802.1Q policy: which VLAN a received frame belongs to, whether a port may send a VLAN,
//! and pushing or popping the tag in place.
//!
//! - Access port in VLAN N: untagged on the wire. A tagged frame arriving there is dropped
//!   (`tagged_on_access`), which also stops double-tag VLAN hopping.
//! - Trunk port: tagged frames of the allowed VLANs; untagged frames belong to the native
//!   VLAN if there is one, else they are dropped (`untagged_no_native`). A priority tag
//!   (VID 0) counts as untagged. 802.1ad (Q-in-Q) outer tags are not accepted.
//! - Stacked 802.1Q tags of an accepted VLAN cross the bridge intact where the outer tag
//!   stays (trunks carrying the VLAN tagged), but never leave a port that would pop the
//!   outer tag (an access port, a trunk's native VLAN, the uplink's): the inner tag would
//!   then pick the VLAN on the next switch (double-tag VLAN hopping).
//!
//! Tags move in place: pushing shifts the 12 bytes of MAC addresses 4 bytes into the frame's
//! headroom, popping shifts them 4 bytes forward. The payload never moves.

use std::fmt;

use bridge_common::wire::{
    is_tpid, EthernetFrame, VlanId, ETHERNET_HEADER_LEN, TPID_8021AD, TPID_8021Q, VLAN_TAG_LEN,
};

use crate::metrics::DropReason;

/// A set of VLAN IDs, as a 4096-bit bitmap (no allocation, O(1) membership).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    #[must_use]
    pub const fn new() -> Self {
        Self([0; 64])
    }

    pub fn insert(&mut self, vlan: VlanId) {
        let v = usize::from(vlan.get());
        self.0[v / 64] |= 1 << (v % 64);
    }

    #[must_use]
    pub fn contains(&self, vlan: VlanId) -> bool {
        let v = usize::from(vlan.get());
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    pub fn iter(&self) -> impl Iterator<Item = VlanId> + '_ {
        (1..=4094)
            .filter_map(VlanId::new)
            .filter(|v| self.contains(*v))
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(VlanId::get)).finish()
    }
}

impl FromIterator<VlanId> for VlanSet {
    fn from_iter<I: IntoIterator<Item = VlanId>>(iter: I) -> Self {
        let mut set = Self::new();
        for v in iter {
            set.insert(v);
        }
        set
    }
}

/// How a port takes part in VLANs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per port, read on every flood: the bitmap inline saves a pointer chase"
)]
pub enum PortMode {
    /// Untagged on the wire, in this VLAN inside the bridge.
    Access(VlanId),
    /// Tagged for `allowed`; untagged frames are in `native`, if set.
    Trunk {
        allowed: VlanSet,
        native: Option<VlanId>,
    },
}

impl Default for PortMode {
    fn default() -> Self {
        Self::Access(VlanId::DEFAULT)
    }
}

/// The VLAN of a received frame and whether it carried a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingress {
    pub vlan: VlanId,
    pub tagged: bool,
}

/// How a frame leaves a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    Untagged,
    Tagged,
}

impl PortMode {
    /// Classifies a received frame (at least [`ETHERNET_HEADER_LEN`] bytes).
    ///
    /// # Errors
    /// The drop reason if the port does not accept the frame.
    pub fn classify(&self, eth: &EthernetFrame<&[u8]>) -> Result<Ingress, DropReason> {
        let tag = match eth.ethertype() {
            TPID_8021Q => Some(
                eth.vlan_tag()
                    .map_err(|_| DropReason::TruncatedVlanTag)?
                    .map_or(0, |t| t.vid()),
            ),
            TPID_8021AD => {
                return Err(if self.is_access() {
                    DropReason::TaggedOnAccess
                } else {
                    DropReason::VlanNotAllowed
                })
            }
            _ => None,
        };
        match (self, tag) {
            (Self::Access(_), Some(_)) => Err(DropReason::TaggedOnAccess),
            (Self::Access(vlan), None) => Ok(Ingress {
                vlan: *vlan,
                tagged: false,
            }),
            (Self::Trunk { native, .. }, None | Some(0)) => native
                .map(|vlan| Ingress {
                    vlan,
                    tagged: tag.is_some(),
                })
                .ok_or(DropReason::UntaggedNoNative),
            (Self::Trunk { allowed, native }, Some(vid)) => match VlanId::new(vid) {
                Some(vlan) if allowed.contains(vlan) || *native == Some(vlan) => {
                    Ok(Ingress { vlan, tagged: true })
                }
                _ => Err(DropReason::VlanNotAllowed),
            },
        }
    }

    /// How (and whether) this port sends frames of `vlan`.
    #[must_use]
    pub fn egress(&self, vlan: VlanId) -> Option<Egress> {
        match self {
            Self::Access(v) => (*v == vlan).then_some(Egress::Untagged),
            Self::Trunk { native, .. } if *native == Some(vlan) => Some(Egress::Untagged),
            Self::Trunk { allowed, .. } => allowed.contains(vlan).then_some(Egress::Tagged),
        }
    }

    fn is_access(&self) -> bool {
        matches!(self, Self::Access(_))
    }
}

impl fmt::Display for PortMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Access(v) => write!(f, "access vlan {v}"),
            Self::Trunk { allowed, native } => {
                // Runs of three or more as `a-b`: an uplink allows all 4094.
                let mut list: Vec<String> = Vec::new();
                let mut run: Option<(u16, u16)> = None;
                let flush = |run: Option<(u16, u16)>, list: &mut Vec<String>| match run {
                    Some((a, b)) if b >= a + 2 => list.push(format!("{a}-{b}")),
                    Some((a, b)) => list.extend((a..=b).map(|v| v.to_string())),
                    None => {}
                };
                for v in allowed.iter().map(VlanId::get) {
                    run = match run {
                        Some((a, b)) if v == b + 1 => Some((a, v)),
                        other => {
                            flush(other, &mut list);
                            Some((v, v))
                        }
                    };
                }
                flush(run, &mut list);
                write!(f, "trunk [{}]", list.join(","))?;
                if let Some(n) = native {
                    write!(f, " native {n}")?;
                }
                Ok(())
            }
        }
    }
}

/// Inserts an 802.1Q tag in place. `chunk` is the whole UMEM frame and the frame occupies
/// `chunk[offset..offset + len]`; returns the new offset and length, or `None` when there
/// is no headroom (never with the kernel's 256 bytes of XDP headroom).
#[must_use]
pub fn push_tag(
    chunk: &mut [u8],
    offset: usize,
    len: usize,
    vlan: VlanId,
) -> Option<(usize, usize)> {
    if offset < VLAN_TAG_LEN
        || len < ETHERNET_HEADER_LEN
        || offset.checked_add(len).is_none_or(|end| end > chunk.len())
    {
        return None;
    }
    let start = offset - VLAN_TAG_LEN;
    chunk.copy_within(offset..offset + 12, start);
    chunk[start + 12..start + 14].copy_from_slice(&TPID_8021Q.to_be_bytes());
    chunk[start + 14..start + 16].copy_from_slice(&vlan.get().to_be_bytes());
    Some((start, len + VLAN_TAG_LEN))
}

/// Rewrites a frame in place for an egress port: pushes a tag, pops it, or makes the tag
/// it keeps carry `vlan`. `chunk` is the whole UMEM frame, the frame is
/// `chunk[offset..offset + len]` and arrived `tagged` or not; returns the new offset and
/// length, or `None` when the frame must not leave this way: no headroom for a tag, too
/// short, or popping its tag would bare a second one (see the module doc).
#[must_use]
pub fn rewrite_for_egress(
    chunk: &mut [u8],
    offset: usize,
    len: usize,
    tagged: bool,
    how: Egress,
    vlan: VlanId,
) -> Option<(usize, usize)> {
    match (tagged, how) {
        (false, Egress::Untagged) => Some((offset, len)),
        (true, Egress::Tagged) => {
            let end = offset.checked_add(len)?;
            set_vid(chunk.get_mut(offset..end)?, vlan);
            Some((offset, len))
        }
        (true, Egress::Untagged) => {
            let frame =
                EthernetFrame::new_checked(chunk.get(offset..offset.checked_add(len)?)?).ok()?;
            if frame
                .vlan_tag()
                .ok()?
                .is_some_and(|tag| is_tpid(tag.inner_ethertype()))
            {
                return None;
            }
            pop_tag(chunk, offset, len)
        }
        (false, Egress::Tagged) => push_tag(chunk, offset, len, vlan),
    }
}

/// Makes the outer tag of a tagged frame carry `vlan`, keeping its priority and DEI bits.
/// A priority tag (VID 0) or a tag naming the native VLAN must leave a trunk with the VLAN
/// the frame was classified into, or the far end would read it as its own native VLAN.
pub fn set_vid(frame: &mut [u8], vlan: VlanId) {
    if let Some(tci) = frame.get_mut(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + 2) {
        let old = u16::from_be_bytes([tci[0], tci[1]]);
        tci.copy_from_slice(&((old & 0xf000) | vlan.get()).to_be_bytes());
    }
}

/// Removes the outer tag in place (the frame must be tagged and whole); returns the new
/// offset and length.
#[must_use]
pub fn pop_tag(chunk: &mut [u8], offset: usize, len: usize) -> Option<(usize, usize)> {
    if len < ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        || offset.checked_add(len).is_none_or(|end| end > chunk.len())
    {
        return None;
    }
    chunk.copy_within(offset..offset + 12, offset + VLAN_TAG_LEN);
    Some((offset + VLAN_TAG_LEN, len - VLAN_TAG_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: u16) -> VlanId {
        VlanId::new(id).unwrap()
    }

    fn trunk(allowed: &[u16], native: Option<u16>) -> PortMode {
        PortMode::Trunk {
            allowed: allowed.iter().map(|&id| v(id)).collect(),
            native: native.map(v),
        }
    }

    fn untagged() -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    fn tagged(tpid: u16, vid: u16) -> Vec<u8> {
        let mut f = untagged();
        f.splice(
            12..12,
            tpid.to_be_bytes().into_iter().chain(vid.to_be_bytes()),
        );
        f
    }

    fn classify(mode: &PortMode, frame: &[u8]) -> Result<Ingress, DropReason> {
        mode.classify(&EthernetFrame::new_checked(frame).unwrap())
    }

    #[test]
    fn access_port_takes_untagged_only() {
        let access = PortMode::Access(v(100));
        assert_eq!(
            classify(&access, &untagged()),
            Ok(Ingress {
                vlan: v(100),
                tagged: false
            })
        );
        assert_eq!(
            classify(&access, &tagged(TPID_8021Q, 100)),
            Err(DropReason::TaggedOnAccess)
        );
        assert_eq!(
            classify(&access, &tagged(TPID_8021Q, 0)),
            Err(DropReason::TaggedOnAccess)
        );
        assert_eq!(
            classify(&access, &tagged(TPID_8021AD, 100)),
            Err(DropReason::TaggedOnAccess)
        );
    }

    #[test]
    fn double_tagged_frame_cannot_hop_from_an_access_port() {
        let mut double = tagged(TPID_8021Q, 100);
        double.splice(
            12..12,
            TPID_8021Q
                .to_be_bytes()
                .into_iter()
                .chain(200u16.to_be_bytes()),
        );
        assert_eq!(
            classify(&PortMode::Access(v(100)), &double),
            Err(DropReason::TaggedOnAccess)
        );
    }

    #[test]
    fn a_tag_is_never_popped_onto_a_second_one() {
        let trunk = PortMode::Trunk {
            allowed: VlanSet::from_iter([v(100), v(200)]),
            native: Some(v(1)),
        };
        // Outer tag: the native VLAN, a priority tag, an allowed VLAN; inner: 802.1Q or 802.1ad.
        for (outer, vlan) in [(1, 1), (0, 1), (100, 100)] {
            for inner_tpid in [TPID_8021Q, TPID_8021AD] {
                let mut chunk = vec![0u8; 64];
                chunk.extend(tagged(TPID_8021Q, outer));
                chunk.splice(
                    64 + 16..64 + 16,
                    inner_tpid
                        .to_be_bytes()
                        .into_iter()
                        .chain(200u16.to_be_bytes()),
                );
                let len = chunk.len() - 64;
                let ingress =
                    classify(&trunk, &chunk[64..]).expect("accepted: stays tagged on trunks");
                assert_eq!(ingress.vlan, v(vlan));
                let before = chunk.clone();
                assert_eq!(
                    rewrite_for_egress(&mut chunk, 64, len, true, Egress::Untagged, v(vlan)),
                    None,
                    "outer {outer}, inner TPID {inner_tpid:#06x}: popping bares the inner tag"
                );
                assert_eq!(chunk, before, "a refused frame is left as it was");
                assert_eq!(
                    rewrite_for_egress(&mut chunk, 64, len, true, Egress::Tagged, v(vlan)),
                    Some((64, len)),
                    "tagged egress keeps the outer tag"
                );
            }
        }
        let mut single = vec![0u8; 64];
        single.extend(tagged(TPID_8021Q, 100));
        let len = single.len() - 64;
        assert_eq!(
            rewrite_for_egress(&mut single, 64, len, true, Egress::Untagged, v(100)),
            Some((68, len - 4)),
            "one tag pops"
        );
    }

    #[test]
    fn trunk_port_accepts_allowed_and_native() {
        let t = trunk(&[100, 200], Some(1));
        assert_eq!(
            classify(&t, &tagged(TPID_8021Q, 200)),
            Ok(Ingress {
                vlan: v(200),
                tagged: true
            })
        );
        assert_eq!(
            classify(&t, &tagged(TPID_8021Q, 300)),
            Err(DropReason::VlanNotAllowed)
        );
        assert_eq!(
            classify(&t, &tagged(TPID_8021Q, 4095)),
            Err(DropReason::VlanNotAllowed)
        );
        assert_eq!(
            classify(&t, &untagged()),
            Ok(Ingress {
                vlan: v(1),
                tagged: false
            })
        );
        assert_eq!(
            classify(&t, &tagged(TPID_8021Q, 0)),
            Ok(Ingress {
                vlan: v(1),
                tagged: true
            })
        );
        assert_eq!(
            classify(&t, &tagged(TPID_8021Q, 1)),
            Ok(Ingress {
                vlan: v(1),
                tagged: true
            })
        );
        assert_eq!(
            classify(&t, &tagged(TPID_8021AD, 100)),
            Err(DropReason::VlanNotAllowed)
        );
        assert_eq!(
            classify(&trunk(&[100], None), &untagged()),
            Err(DropReason::UntaggedNoNative)
        );
    }

    #[test]
    fn truncated_tag_is_its_own_drop_reason() {
        let t = trunk(&[100], None);
        let frame = &tagged(TPID_8021Q, 100)[..16];
        assert_eq!(classify(&t, frame), Err(DropReason::TruncatedVlanTag));
    }

    #[test]
    fn egress_membership() {
        let t = trunk(&[100, 200], Some(1));
        assert_eq!(t.egress(v(100)), Some(Egress::Tagged));
        assert_eq!(t.egress(v(1)), Some(Egress::Untagged));
        assert_eq!(t.egress(v(300)), None);
        assert_eq!(
            PortMode::Access(v(100)).egress(v(100)),
            Some(Egress::Untagged)
        );
        assert_eq!(PortMode::Access(v(100)).egress(v(200)), None);
    }

    #[test]
    fn push_then_pop_round_trips_in_place() {
        let frame = untagged();
        let mut chunk = vec![0xeeu8; 256 + frame.len()];
        chunk[256..].copy_from_slice(&frame);
        let (off, len) = push_tag(&mut chunk, 256, frame.len(), v(100)).unwrap();
        assert_eq!((off, len), (252, frame.len() + 4));
        assert_eq!(&chunk[off..off + len], &tagged(TPID_8021Q, 100)[..]);
        let (off, len) = pop_tag(&mut chunk, off, len).unwrap();
        assert_eq!((off, len), (256, frame.len()));
        assert_eq!(&chunk[off..off + len], &frame[..]);
    }

    #[test]
    fn set_vid_keeps_priority_and_dei() {
        let mut f = tagged(TPID_8021Q, 0);
        f[14] |= 0xb0; // PCP 5, DEI set, VID 0
        set_vid(&mut f, v(10));
        assert_eq!(&f[14..16], &[0xb0, 0x0a]);
    }

    #[test]
    fn push_and_pop_refuse_overflowing_ranges() {
        let mut chunk = vec![0u8; 64];
        assert_eq!(push_tag(&mut chunk, usize::MAX, 20, v(1)), None);
        assert_eq!(pop_tag(&mut chunk, usize::MAX - 4, 20), None);
    }

    #[test]
    fn push_needs_headroom() {
        let mut chunk = untagged();
        let len = chunk.len();
        assert_eq!(push_tag(&mut chunk, 0, len, v(5)), None);
        assert_eq!(pop_tag(&mut chunk, 0, 17), None);
    }

    #[test]
    fn vlan_set_membership_and_display() {
        let set: VlanSet = [v(1), v(100), v(4094)].into_iter().collect();
        assert!(set.contains(v(100)) && set.contains(v(4094)) && !set.contains(v(2)));
        assert_eq!(
            format!("{}", trunk(&[100, 200], Some(1))),
            "trunk [100,200] native 1"
        );
    }
}
