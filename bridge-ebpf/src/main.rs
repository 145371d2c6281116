//! vwire's XDP program, attached in driver mode to every port.
//!
//! It steers: look up the ingress port's slot, redirect the frame to the AF_XDP socket
//! registered for (slot, rx queue), count what happened. Bridging is in userspace.
//!
//! With the fast path on, it first tries to send a frame straight to its egress port: an
//! untagged unicast frame between two ports of one segment (bridge domain and VLAN, access
//! ports), whose source the forwarder has learned on this very port and whose destination on
//! another, goes out through `PORT_DEVS` without visiting userspace. Anything else — unknown
//! or moved stations, broadcast and multicast, tagged frames, frames too long for the egress
//! port, TCP and UDP whose checksum the sender left to offload — takes the AF_XDP path, where
//! the forwarder learns, floods, completes checksums and counts drops. So do
//! all frames while any CPU is busy (`FAST_PATH_BUSY_FRAMES`): inline forwarding runs the
//! receiver's whole stack on the arriving CPU, and under load the forwarder spreads that work
//! over a second one. But for TCP segments that carry data, when the daemon set up
//! `CPU_HANDOFF`: they are queued to another CPU, where `vwire_handoff` sends them on, and
//! the receiver's stack runs there, with one copy of each segment instead of the
//! forwarder's three.
//!
//! - No slot for the interface, or no socket for the queue: `XDP_PASS`, so the kernel keeps
//!   working (and a misconfiguration shows in the `passed` counter instead of as silence).
//! - The redirect itself fails: `XDP_ABORTED`, counted, visible to `xdp:xdp_exception`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns},
    macros::{map, xdp},
    maps::{Array, CpuMap, DevMap, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use bridge_common::{
    maps::{
        xsk_index, CpuLoad, FastEntry, FastKey, FastPort, XdpPortStats, FAST_FDB_ENTRIES,
        FAST_PATH_BUSY_FRAMES, FAST_PATH_WINDOW_NS, HANDOFF_CPUS, MAX_PORTS, MAX_QUEUES_PER_PORT,
        WAKE_CPU_ENTRIES, XSKS_ENTRIES,
    },
    wire::{
        is_tpid, ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP,
        TCP_CHECKSUM_OFFSET, UDP_CHECKSUM_OFFSET,
    },
};

#[map(name = "PORT_SLOTS")]
static PORT_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_ENTRIES, 0);

#[map(name = "XDP_STATS")]
static XDP_STATS: PerCpuArray<XdpPortStats> = PerCpuArray::with_max_entries(MAX_PORTS, 0);

#[map(name = "FAST_PORTS")]
static FAST_PORTS: Array<FastPort> = Array::with_max_entries(MAX_PORTS, 0);

#[map(name = "FAST_FDB")]
static FAST_FDB: HashMap<FastKey, FastEntry> = HashMap::with_max_entries(FAST_FDB_ENTRIES, 0);

#[map(name = "FAST_USED")]
static FAST_USED: Array<u32> = Array::with_max_entries(FAST_FDB_ENTRIES, BPF_F_MMAPABLE);

#[map(name = "PORT_DEVS")]
static PORT_DEVS: DevMap = DevMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "CPU_HANDOFF")]
static CPU_HANDOFF: CpuMap = CpuMap::with_max_entries(HANDOFF_CPUS, 0);

#[map(name = "HANDOFF_TARGET")]
static HANDOFF_TARGET: Array<u32> = Array::with_max_entries(HANDOFF_CPUS, 0);

#[map(name = "CPU_LOAD")]
static CPU_LOAD: PerCpuArray<CpuLoad> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "BUSY_UNTIL")]
static BUSY_UNTIL: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "WAKE_CPU")]
static WAKE_CPU: Array<u32> = Array::with_max_entries(WAKE_CPU_ENTRIES, BPF_F_MMAPABLE);

#[xdp]
pub fn vwire_steer(ctx: XdpContext) -> u32 {
    try_vwire_steer(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// `Err` means "not ours": the caller passes the frame to the kernel.
#[inline(always)]
fn try_vwire_steer(ctx: &XdpContext) -> Result<u32, ()> {
    let slot = port_slot(ctx).ok_or(())?;
    // SAFETY: `ctx.ctx` is the `xdp_md` the kernel handed this program; reading its scalar
    // fields is always allowed by the verifier.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    let stats = XDP_STATS.get_ptr_mut(slot).ok_or(())?;
    if let Some(action) = fast_forward(ctx, slot, stats) {
        return Ok(action);
    }
    let index = xsk_index(slot, queue);
    if queue >= MAX_QUEUES_PER_PORT || XSKS.get(index).is_none() {
        // SAFETY: per-CPU slot of this CPU; nothing else writes it while this program runs.
        unsafe { (*stats).passed += 1 };
        return Ok(xdp_action::XDP_PASS);
    }
    match XSKS.redirect(index, 0) {
        Ok(action) => {
            // SAFETY: as above.
            unsafe { (*stats).redirected += 1 };
            note_wake_cpu();
            Ok(action)
        }
        Err(_) => {
            // SAFETY: as above.
            unsafe { (*stats).aborted += 1 };
            Ok(xdp_action::XDP_ABORTED)
        }
    }
}

/// The slot of the port the frame arrived on; `None` for an interface that is not a port.
#[inline(always)]
fn port_slot(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: `ctx.ctx` is the `xdp_md` the kernel handed this program; reading its scalar
    // fields is always allowed by the verifier.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: the value is a plain u32 copied out before any other map operation.
    unsafe { PORT_SLOTS.get(&ifindex) }.copied()
}

/// Redirects the frame to its egress port if the fast path may carry it (see the module
/// comment); `None` sends it on to the forwarder.
#[inline(always)]
fn fast_forward(ctx: &XdpContext, slot: u32, stats: *mut XdpPortStats) -> Option<u32> {
    let segment = FAST_PORTS.get(slot)?.segment;
    if segment == 0 {
        return None;
    }
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Every frame of the port counts towards the load, whichever path it takes.
    let busy = cpu_is_busy(now);
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETHERNET_HEADER_LEN > end {
        return None;
    }
    // SAFETY: the header's 14 bytes lie before `data_end` (checked above), and packet data
    // has no alignment requirement for a byte array.
    let h = unsafe { &*(start as *const [u8; ETHERNET_HEADER_LEN]) };
    let ethertype = u16::from_be_bytes([h[12], h[13]]);
    if h[0] & 1 != 0 || is_tpid(ethertype) {
        return None;
    }
    // Under load, only a TCP segment to hand to another CPU goes on; `Some(cpu)`.
    let handoff = if busy {
        Some(handoff_cpu(start, end, ethertype)?)
    } else {
        None
    };
    if has_partial_checksum(start, end, ethertype) {
        return None;
    }
    let dst = [h[0], h[1], h[2], h[3], h[4], h[5]];
    let src = [h[6], h[7], h[8], h[9], h[10], h[11]];
    // SAFETY: plain values copied out at once.
    let source = unsafe { FAST_FDB.get(&FastKey::new(segment, src)) }.copied()?;
    if source.slot != slot {
        return None;
    }
    let len = (end - start) as u64;
    let egress = fast_egress(segment, slot, dst, len)?;
    let action = match handoff {
        Some(cpu) => CPU_HANDOFF.redirect(cpu, 0).ok()?,
        None => PORT_DEVS.redirect(egress, 0).ok()?,
    };
    note_used(source.used_index, now);
    // SAFETY: per-CPU slot of this CPU; nothing else writes it while this program runs.
    unsafe {
        (*stats).fast_rx_frames += 1;
        (*stats).fast_rx_bytes += len;
        if handoff.is_some() {
            (*stats).handed_off += 1;
        }
    }
    // A handed-off frame counts as sent once `vwire_handoff` has sent it.
    if handoff.is_none() {
        count_fast_tx(egress, len);
    }
    Some(action)
}

/// The port a frame from the port in `slot` to `dst` goes straight to: the destination is
/// learned on another port of the same segment, whose MTU the frame fits.
#[inline(always)]
fn fast_egress(segment: u32, slot: u32, dst: [u8; 6], len: u64) -> Option<u32> {
    // SAFETY: a plain value copied out at once.
    let egress = unsafe { FAST_FDB.get(&FastKey::new(segment, dst)) }
        .copied()?
        .slot;
    let out = FAST_PORTS.get(egress)?;
    if egress == slot || out.segment != segment || len > u64::from(out.max_frame) {
        return None;
    }
    Some(egress)
}

#[inline(always)]
fn count_fast_tx(egress: u32, len: u64) {
    if let Some(tx) = XDP_STATS.get_ptr_mut(egress) {
        // SAFETY: per-CPU slot of this CPU; nothing else writes it while this program runs.
        unsafe {
            (*tx).fast_tx_frames += 1;
            (*tx).fast_tx_bytes += len;
        }
    }
}

/// The CPU to hand this frame to under load: an untagged TCP segment over IPv4 or IPv6 that
/// carries data, from a CPU the daemon gave a target; `None` otherwise (the frame goes to the
/// forwarder). Pure ACKs stay with the forwarder: handed over, a stream's ACKs would run its
/// sender's stack on the receiver's CPU.
#[inline(always)]
fn handoff_cpu(start: usize, end: usize, ethertype: u16) -> Option<u32> {
    let l3 = start + ETHERNET_HEADER_LEN;
    let (l4, protocol, l4_len) = match ethertype {
        ETHERTYPE_IPV4 => {
            if l3 + 20 > end {
                return None;
            }
            // SAFETY: the 20 bytes of the header lie before `data_end` (checked above).
            let ip = unsafe { &*(l3 as *const [u8; 20]) };
            let header = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            (l3 + header, ip[9], total.checked_sub(header)?)
        }
        ETHERTYPE_IPV6 => {
            if l3 + 40 > end {
                return None;
            }
            // SAFETY: the 40 bytes of the header lie before `data_end` (checked above).
            let ip = unsafe { &*(l3 as *const [u8; 40]) };
            (
                l3 + 40,
                ip[6],
                usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            )
        }
        _ => return None,
    };
    if protocol != IPPROTO_TCP || l4 + 13 > end {
        return None;
    }
    // SAFETY: the TCP header's first 13 bytes lie before `data_end` (checked above).
    let tcp = unsafe { &*(l4 as *const [u8; 13]) };
    let tcp_header = usize::from(tcp[12] >> 4) * 4;
    if l4_len <= tcp_header {
        return None;
    }
    // SAFETY: a helper without arguments or side effects.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    HANDOFF_TARGET.get(cpu)?.checked_sub(1)
}

/// Runs in the kernel thread of the CPU a TCP segment was handed to (`CPU_HANDOFF`): sends it
/// to its egress port, after the same tests `fast_forward` made on the arriving CPU, since
/// the fast path's ports and stations may have changed while it was queued. A segment that
/// no longer passes is dropped and counted as `handoff_dropped` (its sender retransmits):
/// from here it cannot go to the forwarder, whose sockets' rx rings take frames from one
/// producer, the arriving CPU.
#[xdp(map = "cpumap")]
pub fn vwire_handoff(ctx: XdpContext) -> u32 {
    let Some(slot) = port_slot(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    if let Some(action) = handoff_redirect(&ctx, slot) {
        return action;
    }
    if let Some(stats) = XDP_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot of this CPU; nothing else writes it while this program runs.
        unsafe { (*stats).handoff_dropped += 1 };
    }
    xdp_action::XDP_DROP
}

#[inline(always)]
fn handoff_redirect(ctx: &XdpContext, slot: u32) -> Option<u32> {
    let segment = FAST_PORTS.get(slot)?.segment;
    let (start, end) = (ctx.data(), ctx.data_end());
    if segment == 0 || start + ETHERNET_HEADER_LEN > end {
        return None;
    }
    // SAFETY: the header's 14 bytes lie before `data_end` (checked above).
    let h = unsafe { &*(start as *const [u8; ETHERNET_HEADER_LEN]) };
    let dst = [h[0], h[1], h[2], h[3], h[4], h[5]];
    let len = (end - start) as u64;
    let egress = fast_egress(segment, slot, dst, len)?;
    let action = PORT_DEVS.redirect(egress, 0).ok()?;
    count_fast_tx(egress, len);
    Some(action)
}

/// Whether an untagged frame is TCP or UDP whose checksum field holds only its pseudo-header's
/// sum: the sender left the rest to TX checksum offload. Redirected as it is, the receiver
/// would drop it; the forwarder completes it (bridge-user's `checksum`, which makes the same
/// test).
#[inline(always)]
fn has_partial_checksum(start: usize, end: usize, ethertype: u16) -> bool {
    let l3 = start + ETHERNET_HEADER_LEN;
    let (l4, proto, mut sum) = match ethertype {
        ETHERTYPE_IPV4 => {
            if l3 + 20 > end {
                return false;
            }
            // SAFETY: the 20 bytes of the header lie before `data_end` (checked above).
            let ip = unsafe { &*(l3 as *const [u8; 20]) };
            let header = usize::from(ip[0] & 0x0f) * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]);
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
            if header < 20 || fragment != 0 || usize::from(total) < header {
                return false;
            }
            let mut sum = u32::from(ip[9]) + u32::from(total) - header as u32;
            for i in 0..4 {
                sum += u32::from(u16::from_be_bytes([ip[12 + 2 * i], ip[13 + 2 * i]]));
            }
            (l3 + header, ip[9], sum)
        }
        ETHERTYPE_IPV6 => {
            if l3 + 40 > end {
                return false;
            }
            // SAFETY: the 40 bytes of the header lie before `data_end` (checked above).
            let ip = unsafe { &*(l3 as *const [u8; 40]) };
            let mut sum = u32::from(ip[6]) + u32::from(u16::from_be_bytes([ip[4], ip[5]]));
            for i in 0..16 {
                sum += u32::from(u16::from_be_bytes([ip[8 + 2 * i], ip[9 + 2 * i]]));
            }
            (l3 + 40, ip[6], sum)
        }
        _ => return false,
    };
    let at = match proto {
        IPPROTO_TCP => TCP_CHECKSUM_OFFSET,
        IPPROTO_UDP => UDP_CHECKSUM_OFFSET,
        _ => return false,
    };
    if l4 + at + 2 > end {
        return false;
    }
    // SAFETY: the field's two bytes lie before `data_end` (checked above).
    let field = u16::from_be_bytes(unsafe { *((l4 + at) as *const [u8; 2]) });
    // At most 22 words of 16 bits plus a 16-bit length: two folds bring it to 16 bits.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    field != 0 && u32::from(field) == sum
}

/// Records the second in which the fast path carried a frame from a station, so the
/// forwarder keeps it (see `FAST_USED`). Written once a second at most.
#[inline(always)]
fn note_used(index: u32, now: u64) {
    let second = (now / 1_000_000_000) as u32;
    if let Some(used) = FAST_USED.get_ptr_mut(index) {
        // SAFETY: an entry of the array, a plain u32; racing writers store the same second,
        // and the forwarder only reads it.
        unsafe {
            if *used != second {
                *used = second;
            }
        }
    }
}

/// Counts this frame in this CPU's window, marks the machine busy for two windows after the
/// end of a window with more than `FAST_PATH_BUSY_FRAMES`, and says whether it is busy.
/// After the end, not from now: the first frame after a pause would otherwise find the last
/// window of a burst long past and stand aside for two more (a test's first frames after a
/// burst of 3,000 new stations went through the forwarder).
#[inline(always)]
fn cpu_is_busy(now: u64) -> bool {
    let (Some(load), Some(until)) = (CPU_LOAD.get_ptr_mut(0), BUSY_UNTIL.get_ptr_mut(0)) else {
        return true;
    };
    // SAFETY: `load` is this CPU's own entry, which nothing else writes while this program
    // runs; `until` is shared, a plain u64: a racing CPU may write an earlier time over a
    // later one, and the busy period then ends up to a window early.
    unsafe {
        if now.wrapping_sub((*load).window_start_ns) >= FAST_PATH_WINDOW_NS {
            let busy_until = (*load).window_start_ns + 3 * FAST_PATH_WINDOW_NS;
            if (*load).frames > u64::from(FAST_PATH_BUSY_FRAMES) && busy_until > *until {
                *until = busy_until;
            }
            (*load).frames = 0;
            (*load).window_start_ns = now;
        }
        (*load).frames += 1;
        now < *until
    }
}

/// Records this CPU as the one that woke the forwarder: only while it sleeps (entry 1 set by
/// the forwarder), so frames its own transmits produce while it runs (a reply generated
/// inside its `sendto`) do not count. Written only when it changes.
#[inline(always)]
fn note_wake_cpu() {
    if !WAKE_CPU.get(1).is_some_and(|&asleep| asleep != 0) {
        return;
    }
    // SAFETY: a helper without arguments or side effects.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if let Some(slot) = WAKE_CPU.get_ptr_mut(0) {
        // SAFETY: the map's first entry, a plain u32; a racing writer on another CPU stores a
        // CPU number just as valid.
        unsafe {
            if *slot != cpu {
                *slot = cpu;
            }
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects programs that can reach a panic, so this is never called; the loop
    // satisfies the `!` type without a call the verifier would not know.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
