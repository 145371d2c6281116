//! Per-port and per-bridge counters.
//!
//! The forwarding thread is the only writer and keeps them as plain integers (no atomics on
//! the per-frame path); the control path gets copies through `control::Command`.
//! Names read direction, then object, then outcome (`rx_frames`, `tx_ring_full`).

use serde::Serialize;

/// Why the forwarder dropped a frame. Every drop has exactly one reason and one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes).
    Runt,
    /// Source MAC is multicast, broadcast or all-zero: not a station that can be learned.
    InvalidSrcMac,
    /// The destination was learned on the port the frame came in on (a real switch filters these).
    SamePort,
    /// Flooded, but the domain has no other port.
    NoDestination,
    /// The egress port's tx ring was full: that port is slower than its senders.
    TxRingFull,
    /// No free UMEM frame for the copy a flood needs.
    UmemExhausted,
    /// A tagged frame on an access port (also stops double-tag VLAN hopping).
    TaggedOnAccess,
    /// A tag for a VLAN the trunk does not carry (or an 802.1ad outer tag).
    VlanNotAllowed,
    /// An untagged frame on a trunk without a native VLAN.
    UntaggedNoNative,
    /// An 802.1Q TPID without the rest of the tag.
    TruncatedVlanTag,
    /// The egress port is not a member of the frame's VLAN (e.g. a static FDB entry).
    VlanNotMember,
}

/// Drops by reason, for one port. Ingress reasons count on the port the frame came in on,
/// egress reasons (`tx_ring_full`, `umem_exhausted`) on the port it was going out of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DropCounters {
    pub runt: u64,
    pub invalid_src_mac: u64,
    pub same_port: u64,
    pub no_destination: u64,
    pub tx_ring_full: u64,
    pub umem_exhausted: u64,
    pub tagged_on_access: u64,
    pub vlan_not_allowed: u64,
    pub untagged_no_native: u64,
    pub truncated_vlan_tag: u64,
    pub vlan_not_member: u64,
}

impl DropCounters {
    pub fn count(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Runt => &mut self.runt,
            DropReason::InvalidSrcMac => &mut self.invalid_src_mac,
            DropReason::SamePort => &mut self.same_port,
            DropReason::NoDestination => &mut self.no_destination,
            DropReason::TxRingFull => &mut self.tx_ring_full,
            DropReason::UmemExhausted => &mut self.umem_exhausted,
            DropReason::TaggedOnAccess => &mut self.tagged_on_access,
            DropReason::VlanNotAllowed => &mut self.vlan_not_allowed,
            DropReason::UntaggedNoNative => &mut self.untagged_no_native,
            DropReason::TruncatedVlanTag => &mut self.truncated_vlan_tag,
            DropReason::VlanNotMember => &mut self.vlan_not_member,
        };
        *counter += 1;
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        let Self {
            runt,
            invalid_src_mac,
            same_port,
            no_destination,
            tx_ring_full,
            umem_exhausted,
            tagged_on_access,
            vlan_not_allowed,
            untagged_no_native,
            truncated_vlan_tag,
            vlan_not_member,
        } = *self;
        // Destructured so that a new reason cannot be left out of the sum.
        runt + invalid_src_mac
            + same_port
            + no_destination
            + tx_ring_full
            + umem_exhausted
            + tagged_on_access
            + vlan_not_allowed
            + untagged_no_native
            + truncated_vlan_tag
            + vlan_not_member
    }
}

/// Counters of one port, as the forwarder sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    /// Frames and bytes received from the port's wire.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames and bytes queued for transmission on the port's wire.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Received frames flooded (broadcast, multicast or unknown unicast).
    pub rx_flooded: u64,
    /// Of those, unicast to an unknown destination.
    pub rx_unknown_unicast: u64,
    pub drops: DropCounters,
}

/// Learning events of the whole bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FdbCounters {
    pub learned: u64,
    pub moved: u64,
    pub aged_out: u64,
    /// Source addresses not learned because the table was full.
    pub table_full: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_own_counter() {
        let reasons = [
            DropReason::Runt,
            DropReason::InvalidSrcMac,
            DropReason::SamePort,
            DropReason::NoDestination,
            DropReason::TxRingFull,
            DropReason::UmemExhausted,
            DropReason::TaggedOnAccess,
            DropReason::VlanNotAllowed,
            DropReason::UntaggedNoNative,
            DropReason::TruncatedVlanTag,
            DropReason::VlanNotMember,
        ];
        let mut drops = DropCounters::default();
        for (i, reason) in reasons.iter().enumerate() {
            for _ in 0..=i {
                drops.count(*reason);
            }
        }
        assert_eq!(
            [
                drops.runt,
                drops.invalid_src_mac,
                drops.same_port,
                drops.no_destination,
                drops.tx_ring_full,
                drops.umem_exhausted,
                drops.tagged_on_access,
                drops.vlan_not_allowed,
                drops.untagged_no_native,
                drops.truncated_vlan_tag,
                drops.vlan_not_member,
            ],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        );
        assert_eq!(drops.total(), 66);
    }
}
