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

/// Name of the two-entry, mmapable `Array<u32>`: entry 0 the CPU that last handed a frame to a
/// socket while the forwarder slept, entry 1 whether it sleeps now (set by the forwarder). The
/// forwarder sleeps on that CPU, so the next frame wakes it there without an
/// inter-processor interrupt (see the daemon's `affinity` module).
pub const WAKE_CPU: &str = "WAKE_CPU";
/// Entries of [`WAKE_CPU`].
pub const WAKE_CPU_ENTRIES: u32 = 2;

/// Name of the `Array<FastPort>` indexed by slot: which ports take part in the XDP fast path.
pub const FAST_PORTS: &str = "FAST_PORTS";
/// Name of the `HashMap<FastKey, FastEntry>`: the forwarder's learned and static addresses of
/// fast-path ports, mirrored for the XDP program.
pub const FAST_FDB: &str = "FAST_FDB";
/// Name of the mmapable `Array<u32>` of [`FAST_FDB_ENTRIES`]: at [`FastEntry::used_index`],
/// the second (`bpf_ktime_get_coarse_ns`, `CLOCK_MONOTONIC_COARSE`) in which the fast path
/// last carried a frame from that station; 0 for none. The forwarder, which sees none of
/// those frames, reads it before it ages the station out.
pub const FAST_USED: &str = "FAST_USED";
/// Name of the `DevMap` indexed by slot: the interface a fast-path frame is redirected to.
pub const PORT_DEVS: &str = "PORT_DEVS";

/// Most ports one daemon serves.
pub const MAX_PORTS: u32 = 256;
/// Most rx queues per port that get a socket; a veth created with more is refused.
pub const MAX_QUEUES_PER_PORT: u32 = 16;
/// Entries in [`XSKS`].
pub const XSKS_ENTRIES: u32 = MAX_PORTS * MAX_QUEUES_PER_PORT;

/// Name of the `CpuMap` of up to [`HANDOFF_CPUS`] entries (the daemon sizes it to the
/// kernel's possible CPUs): under load, a TCP segment with data that the fast path may carry
/// is queued to another CPU, whose kernel thread runs `vwire_handoff` (a second XDP
/// program) on it, and that sends it to its egress port. The receiver's stack then runs
/// there, beside the sender's on the arriving CPU, with one copy instead of the forwarder's
/// three.
pub const CPU_HANDOFF: &str = "CPU_HANDOFF";
/// Name of the `Array<u32>` of [`HANDOFF_CPUS`] entries: for each CPU, one more than the CPU
/// its TCP segments are handed to under load; 0 (as the array starts) for none.
pub const HANDOFF_TARGET: &str = "HANDOFF_TARGET";
/// CPUs the handoff covers at most; on CPUs beyond, segments go through the forwarder.
pub const HANDOFF_CPUS: u32 = 256;

/// Name of the one-entry `PerCpuArray<CpuLoad>`: how many frames this CPU's XDP program saw
/// in its current window.
pub const CPU_LOAD: &str = "CPU_LOAD";
/// Name of the one-entry `Array<u64>`: until when (`bpf_ktime_get_ns`) the fast path stands
/// aside because some CPU is busy.
pub const BUSY_UNTIL: &str = "BUSY_UNTIL";
/// The fast path carries frames inline only while no CPU has seen more than
/// [`FAST_PATH_BUSY_FRAMES`] frames in a window of [`FAST_PATH_WINDOW_NS`] for the last two
/// windows. Inline, the arriving CPU does all the work, the receiver's stack included, with
/// the least latency; under load the forwarder spreads that work over a second CPU. Any CPU,
/// not just the arriving one: a TCP stream's ACKs, few and on another CPU than its data,
/// would otherwise drive the sender's stack from the receiver's CPU (-15 % throughput).
/// Windows are read from the kernel's coarse clock (`bpf_ktime_get_coarse_ns`, one tick: 4 ms
/// at HZ=250): the precise clock costs TCP through the forwarder 5 % on these machines.
pub const FAST_PATH_WINDOW_NS: u64 = 4_000_000;
/// 128 kpps.
pub const FAST_PATH_BUSY_FRAMES: u32 = 512;

/// Entries in [`FAST_FDB`]; addresses beyond it keep going through the forwarder.
pub const FAST_FDB_ENTRIES: u32 = 131_072;

/// Index into [`XSKS`] of the socket for `queue` of the port in `slot`.
#[inline(always)]
#[must_use]
pub const fn xsk_index(slot: u32, queue: u32) -> u32 {
    slot * MAX_QUEUES_PER_PORT + queue
}

/// Per-CPU counters the XDP program keeps for each port slot.
///
/// `u64` fields only, so the layout has no padding (checked below). The daemon's API shows
/// them summed over CPUs ([`XdpPortStats::add`]), under the same names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct XdpPortStats {
    /// Frames handed to the port's AF_XDP socket.
    pub redirected: u64,
    /// Frames passed to the kernel stack because no socket was registered for the queue.
    pub passed: u64,
    /// Frames the redirect failed for (counted, then `XDP_ABORTED`).
    pub aborted: u64,
    /// Frames received on this port that the fast path sent straight to another port.
    pub fast_rx_frames: u64,
    pub fast_rx_bytes: u64,
    /// Frames the fast path sent out of this port.
    pub fast_tx_frames: u64,
    pub fast_tx_bytes: u64,
    /// Of `fast_rx_frames`, TCP segments handed to another CPU under load ([`CPU_HANDOFF`]).
    pub handed_off: u64,
    /// Of those, segments dropped on the other CPU: the fast path no longer carried them
    /// (a station or port changed while they were queued).
    pub handoff_dropped: u64,
}

const _: () = assert!(size_of::<XdpPortStats>() == 72);

impl XdpPortStats {
    /// Adds `other`'s counters to these, as when summing a port's per-CPU copies. Destructured
    /// in full, so a new counter cannot be left out of the sum.
    pub fn add(&mut self, other: &Self) {
        let Self {
            redirected,
            passed,
            aborted,
            fast_rx_frames,
            fast_rx_bytes,
            fast_tx_frames,
            fast_tx_bytes,
            handed_off,
            handoff_dropped,
        } = *other;
        self.redirected += redirected;
        self.passed += passed;
        self.aborted += aborted;
        self.fast_rx_frames += fast_rx_frames;
        self.fast_rx_bytes += fast_rx_bytes;
        self.fast_tx_frames += fast_tx_frames;
        self.fast_tx_bytes += fast_tx_bytes;
        self.handed_off += handed_off;
        self.handoff_dropped += handoff_dropped;
    }
}

/// A port's part in the fast path: frames go directly between ports of the same nonzero
/// `segment` (one bridge domain and VLAN, untagged on both wires), up to `max_frame` bytes.
/// Segment 0: not a fast-path port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastPort {
    pub segment: u32,
    pub max_frame: u32,
}

/// One CPU's frame count in the current window (see [`FAST_PATH_BUSY_FRAMES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuLoad {
    pub window_start_ns: u64,
    pub frames: u64,
}

/// A station in a segment: the key of [`FAST_FDB`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FastKey {
    pub segment: u32,
    pub mac: [u8; 6],
    /// Always zero: the kernel hashes every byte of a key.
    pub pad: [u8; 2],
}

impl FastKey {
    #[inline(always)]
    #[must_use]
    pub const fn new(segment: u32, mac: [u8; 6]) -> Self {
        Self {
            segment,
            mac,
            pad: [0; 2],
        }
    }
}

/// A station's entry in [`FAST_FDB`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastEntry {
    /// The slot of the port it was learned on.
    pub slot: u32,
    /// Its entry in [`FAST_USED`].
    pub used_index: u32,
}

const _: () = assert!(
    size_of::<FastPort>() == 8 && size_of::<FastKey>() == 12 && size_of::<FastEntry>() == 8
);

// SAFETY: `XdpPortStats` is `repr(C)`, `Copy`, made only of `u64`s and has no padding, so
// every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for XdpPortStats {}
// SAFETY: `repr(C)`, `Copy`, two `u32`s, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FastPort {}
// SAFETY: `repr(C)`, `Copy`, two `u32`s, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FastEntry {}
// SAFETY: `repr(C)`, `Copy`, a `u32` and 8 bytes, no padding (checked above).
#[cfg(feature = "user")]
unsafe impl aya::Pod for FastKey {}

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

    #[test]
    fn add_sums_every_counter() {
        // Distinct powers of two per field, so a field added twice or into another shows.
        let one = XdpPortStats {
            redirected: 1,
            passed: 2,
            aborted: 4,
            fast_rx_frames: 8,
            fast_rx_bytes: 16,
            fast_tx_frames: 32,
            fast_tx_bytes: 64,
            handed_off: 128,
            handoff_dropped: 256,
        };
        let mut sum = XdpPortStats::default();
        sum.add(&one);
        sum.add(&one);
        let doubled = XdpPortStats {
            redirected: 2,
            passed: 4,
            aborted: 8,
            fast_rx_frames: 16,
            fast_rx_bytes: 32,
            fast_tx_frames: 64,
            fast_tx_bytes: 128,
            handed_off: 256,
            handoff_dropped: 512,
        };
        assert_eq!(sum, doubled);
    }
}
