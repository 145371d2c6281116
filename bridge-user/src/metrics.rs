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
        };
        *counter += 1;
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        self.runt
            + self.invalid_src_mac
            + self.same_port
            + self.no_destination
            + self.tx_ring_full
            + self.umem_exhausted
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
                drops.umem_exhausted
            ],
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(drops.total(), 21);
    }
}
