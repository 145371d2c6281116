//! `vwire-bench gen`: sends test frames through a `PACKET_TX_RING` with `PACKET_QDISC_BYPASS`,
//! each behind a virtio header so the kernel builds a linear skb (see `ring`).
//!
//! One thread fills ring slots from a template (patching source port, source MAC, sequence
//! number and timestamp per frame) and flushes them with one `send(2)` per batch; the kernel
//! walks the ring inside that call. Flat out by default, or paced to `--rate` frames/second.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::{
    frame::{self, FrameSpec},
    ring::{Dir, PacketRing},
};

/// Options of the generator.
#[derive(Clone, Debug, clap::Args)]
pub struct GenArgs {
    /// Interface to send on.
    #[arg(long)]
    pub dev: String,
    #[arg(long, default_value = "02:00:00:00:00:01")]
    pub src_mac: String,
    #[arg(long, default_value = "02:00:00:00:00:02")]
    pub dst_mac: String,
    #[arg(long, default_value = "10.77.0.1")]
    pub src_ip: Ipv4Addr,
    #[arg(long, default_value = "10.77.0.250")]
    pub dst_ip: Ipv4Addr,
    /// Frame size with FCS, 64..=1518 (60..=1514 bytes on the wire); a VLAN tag adds 4.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Frames per second; omit to send flat out.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Seconds to send for.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Stop after this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// Number of flows: the UDP source port cycles through this many values.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Number of source MACs: the low 3 bytes of --src-mac cycle through this many values.
    #[arg(long, default_value_t = 1)]
    pub src_macs: u32,
    /// Number of destination MACs: the low 3 bytes of --dst-mac cycle through this many values.
    #[arg(long, default_value_t = 1)]
    pub dst_macs: u32,
    /// Insert an 802.1Q tag with this VLAN id.
    #[arg(long)]
    pub vlan: Option<u16>,
    /// Ring slots (frames in flight).
    #[arg(long, default_value_t = 1024)]
    pub ring: u32,
    /// Frames per send(2) call.
    #[arg(long, default_value_t = 64)]
    pub batch: u32,
    /// Pin the sending thread to this CPU.
    #[arg(long)]
    pub cpu: Option<usize>,
}

/// What the generator prints.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct GenReport {
    pub dev: String,
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frame_len: usize,
    pub duration_s: f64,
    pub pps: f64,
    /// Rate asked for, if any.
    pub rate: Option<u64>,
}

/// A MAC address whose low three bytes count up from the given one, one step per frame,
/// wrapping after `count` values: many stations from one sender (RFC 2889's learning
/// frames, or frames to each of them).
#[derive(Clone, Copy, Debug)]
struct MacCycle {
    base: u32,
    count: u32,
}

impl MacCycle {
    fn new(mac: [u8; 6], count: u32) -> Self {
        Self {
            base: u32::from_be_bytes([0, mac[3], mac[4], mac[5]]),
            count: count.max(1),
        }
    }

    /// Writes frame `seq`'s address into `mac` (the address field and what follows); a
    /// single address is the template's already.
    fn write(self, mac: &mut [u8], seq: u64) {
        if self.count > 1 {
            #[allow(clippy::cast_possible_truncation, reason = "below count, a u32")]
            let low = self.base.wrapping_add((seq % u64::from(self.count)) as u32);
            mac[3..6].copy_from_slice(&low.to_be_bytes()[1..]);
        }
    }
}

/// Runs the generator to completion.
pub fn run(a: &GenArgs) -> anyhow::Result<GenReport> {
    let src_mac = frame::parse_mac(&a.src_mac)?;
    let dst_mac = frame::parse_mac(&a.dst_mac)?;
    let spec = FrameSpec {
        dst_mac,
        src_mac,
        src_ip: a.src_ip,
        dst_ip: a.dst_ip,
        size: a.size,
        vlan: a.vlan,
    };
    let tpl = frame::build(&spec)?;
    let len = tpl.bytes.len();
    let len16 = u16::try_from(len)?;
    if let Some(cpu) = a.cpu {
        crate::ring::pin_cpu(cpu)?;
    }
    let mut ring = PacketRing::open(&a.dev, Dir::Tx, a.ring)?;
    // Pre-fill every slot with the template, so per frame only the varying fields are written.
    let flows = a.flows.max(1);
    let src_macs = MacCycle::new(src_mac, a.src_macs);
    let dst_macs = MacCycle::new(dst_mac, a.dst_macs);
    let batch = a.batch.clamp(1, ring.slots());
    let limit = a.count.unwrap_or(u64::MAX);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "durations are small and positive"
    )]
    let dur_ns = (a.duration * 1e9) as u64;
    let start = frame::mono_ns();
    let end = start.saturating_add(dur_ns);
    let mut sent: u64 = 0;
    let mut now = start;
    while now < end && sent < limit {
        let mut budget = u64::from(batch).min(limit - sent);
        if let Some(rate) = a.rate {
            let allowed = u128::from(rate) * u128::from(now - start) / 1_000_000_000 + 1;
            let allowed = u64::try_from(allowed).unwrap_or(u64::MAX);
            if allowed <= sent {
                // Ahead of schedule: sleep until the next frame is due (short gaps spin).
                let due = start
                    + u64::try_from(u128::from(sent) * 1_000_000_000 / u128::from(rate.max(1)))?;
                let gap = due.saturating_sub(now);
                if gap > 60_000 {
                    std::thread::sleep(std::time::Duration::from_nanos(gap - 50_000));
                }
                now = frame::mono_ns();
                continue;
            }
            budget = budget.min(allowed - sent);
        }
        let mut filled = 0;
        while filled < budget {
            let Some(slot) = ring.tx_slot() else { break };
            let f = &mut slot[..len];
            f.copy_from_slice(&tpl.bytes);
            #[allow(
                clippy::cast_possible_truncation,
                reason = "modulo keeps them in range"
            )]
            {
                if flows > 1 {
                    let port = frame::BASE_SRC_PORT.wrapping_add((sent % u64::from(flows)) as u16);
                    f[tpl.sport_off..tpl.sport_off + 2].copy_from_slice(&port.to_be_bytes());
                }
                src_macs.write(&mut f[frame::SRC_MAC_OFF..], sent);
                dst_macs.write(&mut f[frame::DST_MAC_OFF..], sent);
                frame::stamp(f, tpl.stamp_off, sent as u32, frame::mono_ns());
            }
            ring.tx_commit(len16);
            filled += 1;
            sent += 1;
        }
        ring.tx_kick(false)?;
        if filled == 0 {
            // Ring full: the kernel still holds every slot (the receiver has not freed them).
            ring.wait(Dir::Tx, 1);
        }
        now = frame::mono_ns();
    }
    let stop = frame::mono_ns();
    // Flush what is left, but do not count the drain time.
    for _ in 0..1000 {
        ring.tx_kick(false)?;
        if ring.tx_idle() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    #[allow(clippy::cast_precision_loss, reason = "reporting only")]
    let duration_s = (stop - start) as f64 / 1e9;
    #[allow(clippy::cast_precision_loss, reason = "reporting only")]
    let pps = sent as f64 / duration_s.max(1e-9);
    Ok(GenReport {
        dev: a.dev.clone(),
        frames_sent: sent,
        bytes_sent: sent * len as u64,
        frame_len: len,
        duration_s,
        pps,
        rate: a.rate,
    })
}

#[cfg(test)]
mod tests {
    use super::MacCycle;

    #[test]
    fn mac_cycle_counts_the_low_three_bytes_and_wraps() {
        let c = MacCycle::new([2, 0x76, 0x79, 0, 0xff, 0xfe], 4);
        let mut seen = Vec::new();
        for seq in 0..6 {
            let mut mac = [2, 0x76, 0x79, 0, 0xff, 0xfe];
            c.write(&mut mac, seq);
            seen.push(mac[3..].to_vec());
        }
        // Carries across bytes, wraps after four values, leaves the high bytes alone.
        assert_eq!(
            seen,
            [
                [0, 0xff, 0xfe],
                [0, 0xff, 0xff],
                [1, 0, 0],
                [1, 0, 1],
                [0, 0xff, 0xfe],
                [0, 0xff, 0xff]
            ]
        );
        let mut one = [2, 0, 0, 0, 0, 9];
        MacCycle::new(one, 1).write(&mut one, 7);
        assert_eq!(one, [2, 0, 0, 0, 0, 9], "one address: the template's");
    }
}
