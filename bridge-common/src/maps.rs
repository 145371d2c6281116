//! BPF map layouts shared by the XDP program and the loader.
//!
//! Every port gets a *slot* (0..[`MAX_PORTS`]). The XDP program finds the slot of its
//! ingress interface in [`PORT_SLOTS`] and redirects to the socket at
//! [`xsk_index`]`(slot, rx_queue)` in [`XSKS`]. Slots, not ifindexes, key the socket map so
//! it stays a dense array.

/// Name of the `HashMap<u32 ifindex, u32 slot>` that maps an ingress interface to its slot.
pub const PORT_SLOTS: &str = "PORT_SLOTS";
/// Name of the `XskMap` holding one AF_XDP socket per (slot, rx queue).
pub const XSKS: &str = "XSKS";
/// Name of the `PerCpuArray<XdpPortStats>` indexed by slot.
pub const XDP_STATS: &str = "XDP_STATS";

/// Name of the two-entry, mmapable `Array<u32>`: [0] the CPU that last handed a frame to a
/// socket while the forwarder slept, [1] whether it sleeps now (set by the forwarder). The
/// forwarder sleeps on that CPU, so the next frame wakes it there without an
/// inter-processor interrupt (see the daemon's `affinity` module).
pub const WAKE_CPU: &str = "WAKE_CPU";

/// Most ports one daemon serves.
pub const MAX_PORTS: u32 = 256;
/// Most rx queues per port that get a socket; a veth created with more is refused.
pub const MAX_QUEUES_PER_PORT: u32 = 16;
/// Entries in [`XSKS`].
pub const XSKS_ENTRIES: u32 = MAX_PORTS * MAX_QUEUES_PER_PORT;

/// Index into [`XSKS`] of the socket for `queue` of the port in `slot`.
#[inline(always)]
#[must_use]
pub const fn xsk_index(slot: u32, queue: u32) -> u32 {
    slot * MAX_QUEUES_PER_PORT + queue
}

/// Per-CPU counters the XDP program keeps for each port slot.
///
/// `u64` fields only, so the layout has no padding (checked below).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpPortStats {
    /// Frames handed to the port's AF_XDP socket.
    pub redirected: u64,
    /// Frames passed to the kernel stack because no socket was registered for the queue.
    pub passed: u64,
    /// Frames the redirect failed for (counted, then `XDP_ABORTED`).
    pub aborted: u64,
}

const _: () = assert!(size_of::<XdpPortStats>() == 24);

// SAFETY: `XdpPortStats` is `repr(C)`, `Copy`, made only of `u64`s and has no padding, so
// every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for XdpPortStats {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsk_index_is_dense_and_unique() {
        assert_eq!(xsk_index(0, 0), 0);
        assert_eq!(
            xsk_index(0, MAX_QUEUES_PER_PORT - 1),
            MAX_QUEUES_PER_PORT - 1
        );
        assert_eq!(xsk_index(1, 0), MAX_QUEUES_PER_PORT);
        assert_eq!(
            xsk_index(MAX_PORTS - 1, MAX_QUEUES_PER_PORT - 1),
            XSKS_ENTRIES - 1
        );
    }
}
