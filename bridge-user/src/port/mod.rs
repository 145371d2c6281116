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
    /// The interface's MTU, refreshed every housekeeping pass: frames longer than
    /// `max_frame_len` of it would be dropped by the kernel where vwire cannot count them.
    pub mtu: u32,
    /// One per rx queue, in queue order. Transmission uses the first.
    pub sockets: Vec<xsk::Socket>,
    /// Descriptors bound for this port, gathered during a turn and written to its tx ring
    /// at the end of the turn: one ring write and one kick per port per turn.
    pub tx_stage: Vec<xsk::Desc>,
    pub counters: PortCounters,
    /// Whether the XDP fast path sends frames straight to and from this port (`fastpath`).
    pub in_fast_path: bool,
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

/// Where the kernel writes a received frame in an AF_XDP copy-mode frame (XDP_PACKET_HEADROOM):
/// a UMEM frame holds at most `frame_size - RX_HEADROOM` bytes of packet.
pub const RX_HEADROOM: u32 = 256;

/// What rides on top of the MTU: the Ethernet header and one 802.1Q tag, which the kernel
/// lets through a veth on top of the MTU (`is_skb_forwardable`).
pub const L2_OVERHEAD: u32 = 14 + 4;

/// The largest frame a port with this MTU accepts or sends.
#[must_use]
pub fn max_frame_len(mtu: u32) -> u32 {
    mtu.saturating_add(L2_OVERHEAD)
}

/// The largest MTU whose frames fit in UMEM frames of `frame_size` bytes.
#[must_use]
pub fn max_mtu(frame_size: u32) -> u32 {
    frame_size.saturating_sub(RX_HEADROOM + L2_OVERHEAD)
}

/// An interface's MTU, from this namespace's sysfs.
///
/// # Errors
/// No such interface, or an unreadable value.
pub fn mtu(name: &str) -> std::io::Result<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Whether the interface a port was built on is gone: no interface of that name (`ENODEV`),
/// or another one under it. Any other failure of the lookup (out of file descriptors, say)
/// says nothing about the interface, and must not remove a working port.
#[must_use]
pub fn vanished(name: &str, ifindex: u32) -> bool {
    match xsk::sys::if_nametoindex(name) {
        Ok(index) => index != ifindex,
        Err(e) => e.raw_os_error() == Some(libc::ENODEV),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_and_frame_size_agree() {
        // MTU 1500 with one tag fits a 2048-byte frame after the kernel's headroom.
        assert_eq!(max_frame_len(1500), 1518);
        assert_eq!(max_mtu(2048), 1774);
        assert_eq!(max_mtu(4096), 3822);
        assert!(max_frame_len(max_mtu(2048)) + RX_HEADROOM <= 2048);
        assert_eq!(max_frame_len(u32::MAX), u32::MAX);
    }

    #[test]
    fn an_interface_has_vanished_when_its_name_is_gone_or_names_another() {
        let lo = xsk::sys::if_nametoindex("lo").expect("every namespace has lo");
        assert!(!vanished("lo", lo));
        assert!(vanished("lo", lo + 1), "another interface under the name");
        assert!(vanished("vw-no-such-if", lo), "no interface of that name");
    }
}
