//! The test frame: Ethernet (optionally 802.1Q-tagged) / IPv4 / UDP, with a payload that
//! carries a magic, a sequence number and a `CLOCK_MONOTONIC` send timestamp.
//!
//! Payload layout (big-endian), right after the UDP header:
//! `magic: u32 | seq: u32 | ts_ns: u64`, then a filler pattern. The generator and the sink
//! run on the same host, so the timestamp gives one-way latency directly.

use std::net::Ipv4Addr;

/// "VWB1": marks our frames, so the sink ignores ARP, IPv6 and other noise.
pub const MAGIC: u32 = 0x5657_4231;
/// Bytes of payload the stamp needs.
pub const STAMP_LEN: usize = 16;
/// UDP destination port of test frames.
pub const DST_PORT: u16 = 9999;
/// UDP source port of flow 0; flow `i` uses `BASE_SRC_PORT + i`.
pub const BASE_SRC_PORT: u16 = 10_000;
/// Smallest and largest frame sizes accepted, counting the 4-byte FCS as RFC 2544 does.
pub const MIN_SIZE: usize = 64;
pub const MAX_SIZE: usize = 1518;

const VLAN_TAG: usize = 4;
const IP_HDR: usize = 20;
const UDP_HDR: usize = 8;

/// What to put in the frame.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    /// RFC 2544 frame size including the FCS (64..=1518); the frame on the wire is 4 bytes
    /// shorter. A VLAN tag adds 4 bytes on top, as a switch adding a tag would.
    pub size: usize,
    pub vlan: Option<u16>,
}

/// A built template and where the per-frame fields sit in it.
#[derive(Clone, Debug)]
pub struct Template {
    pub bytes: Vec<u8>,
    /// Offset of the UDP source port (varied per flow).
    pub sport_off: usize,
    /// Offset of the stamp (magic, seq, timestamp).
    pub stamp_off: usize,
}

/// Offsets of the destination and source MACs (varied for learning tests).
pub const DST_MAC_OFF: usize = 0;
pub const SRC_MAC_OFF: usize = 6;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "bad MAC address {s:?}");
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| anyhow::anyhow!("bad MAC address {s:?}"))?;
    }
    Ok(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The IPv4 header checksum (RFC 1071).
#[must_use]
pub fn ip_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = hdr
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    #[allow(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = sum as u16;
    !folded
}

/// Builds the template frame for `spec` (stamp zeroed, flow 0).
pub fn build(spec: &FrameSpec) -> anyhow::Result<Template> {
    anyhow::ensure!(
        (MIN_SIZE..=MAX_SIZE).contains(&spec.size),
        "frame size {} outside {MIN_SIZE}..={MAX_SIZE}",
        spec.size
    );
    let tag = if spec.vlan.is_some() { VLAN_TAG } else { 0 };
    let len = spec.size - 4 + tag;
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&spec.dst_mac);
    f[6..12].copy_from_slice(&spec.src_mac);
    let mut off = 12;
    if let Some(vid) = spec.vlan {
        anyhow::ensure!((1..=4094).contains(&vid), "VLAN id {vid} outside 1..=4094");
        f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        f[14..16].copy_from_slice(&vid.to_be_bytes());
        off += 4;
    }
    f[off..off + 2].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = off + 2;
    let ip_len = u16::try_from(len - ip)?;
    let udp = ip + IP_HDR;
    {
        let h = &mut f[ip..ip + IP_HDR];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&ip_len.to_be_bytes());
        h[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        h[8] = 64;
        h[9] = 17;
        h[12..16].copy_from_slice(&spec.src_ip.octets());
        h[16..20].copy_from_slice(&spec.dst_ip.octets());
        let csum = ip_checksum(h);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
    }
    f[udp..udp + 2].copy_from_slice(&BASE_SRC_PORT.to_be_bytes());
    f[udp + 2..udp + 4].copy_from_slice(&DST_PORT.to_be_bytes());
    f[udp + 4..udp + 6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    // UDP checksum 0: "no checksum" is valid for IPv4.
    let stamp_off = udp + UDP_HDR;
    anyhow::ensure!(
        len - stamp_off >= STAMP_LEN,
        "frame too short for the stamp"
    );
    f[stamp_off..stamp_off + 4].copy_from_slice(&MAGIC.to_be_bytes());
    for (i, b) in f[stamp_off + STAMP_LEN..].iter_mut().enumerate() {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "filler pattern wraps on purpose"
        )]
        let v = i as u8;
        *b = v;
    }
    Ok(Template {
        bytes: f,
        sport_off: udp,
        stamp_off,
    })
}

/// Writes sequence number and timestamp into a frame built from a template.
#[inline]
pub fn stamp(frame: &mut [u8], stamp_off: usize, seq: u32, ts_ns: u64) {
    frame[stamp_off + 4..stamp_off + 8].copy_from_slice(&seq.to_be_bytes());
    frame[stamp_off + 8..stamp_off + 16].copy_from_slice(&ts_ns.to_be_bytes());
}

/// A parsed stamp from a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u32,
    pub ts_ns: u64,
}

/// Finds our stamp in a received frame (untagged or single-tagged IPv4/UDP to [`DST_PORT`]).
#[inline]
#[must_use]
pub fn parse_stamp(frame: &[u8]) -> Option<Stamp> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    if et == 0x8100 {
        off += 4;
        et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    if et != 0x0800 {
        return None;
    }
    let ip = off + 2;
    let ihl = usize::from(frame.get(ip)? & 0x0f) * 4;
    if frame.get(ip + 9) != Some(&17) {
        return None;
    }
    let udp = ip + ihl;
    let s = frame.get(udp + UDP_HDR..udp + UDP_HDR + STAMP_LEN)?;
    if u32::from_be_bytes([s[0], s[1], s[2], s[3]]) != MAGIC {
        return None;
    }
    Some(Stamp {
        seq: u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
        ts_ns: u64::from_be_bytes([s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]]),
    })
}

/// `CLOCK_MONOTONIC` in nanoseconds.
#[inline]
#[must_use]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    #[allow(
        clippy::cast_sign_loss,
        reason = "the monotonic clock is never negative"
    )]
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    ns
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(size: usize, vlan: Option<u16>) -> FrameSpec {
        FrameSpec {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            size,
            vlan,
        }
    }

    #[test]
    fn sizes_and_stamp_round_trip() {
        for (size, vlan, len) in [
            (64, None, 60),
            (1518, None, 1514),
            (64, Some(100), 64),
            (128, None, 124),
        ] {
            let mut t = build(&spec(size, vlan)).unwrap();
            assert_eq!(t.bytes.len(), len);
            stamp(&mut t.bytes, t.stamp_off, 7, 123_456);
            assert_eq!(
                parse_stamp(&t.bytes),
                Some(Stamp {
                    seq: 7,
                    ts_ns: 123_456
                })
            );
            // The IP header checksums to zero.
            let ip = if vlan.is_some() { 18 } else { 14 };
            assert_eq!(ip_checksum(&t.bytes[ip..ip + 20]), 0);
        }
        assert!(build(&spec(63, None)).is_err());
        assert!(build(&spec(1519, None)).is_err());
    }

    #[test]
    fn mac_parse() {
        assert_eq!(parse_mac("02:00:00:00:00:0a").unwrap(), [2, 0, 0, 0, 0, 10]);
        assert!(parse_mac("02:00").is_err());
        assert_eq!(fmt_mac([2, 0, 0, 0, 0, 10]), "02:00:00:00:00:0a");
    }
}
