//! Ports: one client wire each, seen by the forwarder as a set of AF_XDP sockets.

use std::fmt;

use crate::{metrics::PortCounters, vlan::PortMode, xsk};

/// A port's slot: its index in the forwarder's port table and in the XDP maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

/// A bridge domain's index. Frames never cross domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(pub u16);

impl PortId {
    /// The id of the port at `index` in the forwarder's table (always below `MAX_PORTS`).
    #[must_use]
    pub fn from_index(index: usize) -> Self {
        Self(u32::try_from(index).expect("port slots are below MAX_PORTS"))
    }
}

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
    pub mode: PortMode,
    /// One per rx queue, in queue order. Transmission uses the first.
    pub sockets: Vec<xsk::Socket>,
    /// Descriptors bound for this port, gathered during a turn and written to its tx ring
    /// at the end of the turn: one ring write and one kick per port per turn.
    pub tx_stage: Vec<xsk::Desc>,
    pub counters: PortCounters,
}

/// Counts an interface's (real) rx queues: one socket must be bound per queue, or frames
/// arriving on the others would miss the bridge.
///
/// # Errors
/// The interface has no queue directory in this namespace's sysfs.
pub fn rx_queue_count(name: &str) -> std::io::Result<u32> {
    let n = std::fs::read_dir(format!("/sys/class/net/{name}/queues"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    Ok(u32::try_from(n).unwrap_or(u32::MAX).max(1))
}

/// Checks an interface name the way the kernel would (IFNAMSIZ, no '/' or whitespace).
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', '\t', '\n', '\0', ':'])
        || name == "."
        || name == ".."
    {
        return Err(format!(
            "{name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"
        ));
    }
    Ok(())
}
