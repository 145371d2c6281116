//! vwire's XDP program, attached in driver mode to every port.
//!
//! It only steers: look up the ingress port's slot, redirect the frame to the AF_XDP socket
//! registered for (slot, rx queue), count what happened. All bridging is in userspace.
//!
//! - No slot for the interface, or no socket for the queue: `XDP_PASS`, so the kernel keeps
//!   working (and a misconfiguration shows in the `passed` counter instead of as silence).
//! - The redirect itself fails: `XDP_ABORTED`, counted, visible to `xdp:xdp_exception`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE},
    helpers::bpf_get_smp_processor_id,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use bridge_common::maps::{xsk_index, XdpPortStats, MAX_PORTS, MAX_QUEUES_PER_PORT, XSKS_ENTRIES};

#[map(name = "PORT_SLOTS")]
static PORT_SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_ENTRIES, 0);

#[map(name = "XDP_STATS")]
static XDP_STATS: PerCpuArray<XdpPortStats> = PerCpuArray::with_max_entries(MAX_PORTS, 0);

#[map(name = "WAKE_CPU")]
static WAKE_CPU: Array<u32> = Array::with_max_entries(2, BPF_F_MMAPABLE);

#[xdp]
pub fn vwire_steer(ctx: XdpContext) -> u32 {
    try_vwire_steer(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// `Err` means "not ours": the caller passes the frame to the kernel.
#[inline(always)]
fn try_vwire_steer(ctx: &XdpContext) -> Result<u32, ()> {
    // SAFETY: `ctx.ctx` is the `xdp_md` the kernel handed this program; reading its scalar
    // fields is always allowed by the verifier.
    let (ifindex, queue) = unsafe { ((*ctx.ctx).ingress_ifindex, (*ctx.ctx).rx_queue_index) };
    // SAFETY: the value is a plain u32 copied out before any other map operation.
    let slot = unsafe { PORT_SLOTS.get(&ifindex) }.copied().ok_or(())?;
    let stats = XDP_STATS.get_ptr_mut(slot).ok_or(())?;
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
