//! Ports: one client wire each, seen by the forwarder as a set of AF_XDP sockets.

use std::fmt;

use crate::{metrics::PortCounters, xsk};

/// A port's slot: its index in the forwarder's port table and in the XDP maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

/// A bridge domain's index. Frames never cross domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port#{}", self.0)
    }
}

/// A bound port, owned by the forwarding thread.
#[derive(Debug)]
pub struct Port {
    pub name: String,
    pub ifindex: u32,
    pub domain: DomainId,
    /// One per rx queue, in queue order. Transmission uses the first.
    pub sockets: Vec<xsk::Socket>,
    /// Descriptors bound for this port, gathered during a turn and written to its tx ring
    /// at the end of the turn: one ring write and one kick per port per turn.
    pub tx_stage: Vec<xsk::Desc>,
    pub counters: PortCounters,
}
