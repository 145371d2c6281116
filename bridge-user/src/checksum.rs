//! Completing the TCP and UDP checksums a client left to its "hardware".
//!
//! A veth end with TX checksum offload on (the default) hands TCP and UDP over with a partial
//! checksum (`CHECKSUM_PARTIAL`): the field holds only the pseudo-header's sum and the device
//! is to add the rest. A kernel bridge passes the skb on with that note attached; vwire
//! forwards raw frames (AF_XDP, XDP redirect), which carry no such note, so the receiver
//! would check the partial value and drop the segment: ping works, TCP does not. So the
//! forwarder completes them, as a NIC would: a frame whose checksum field equals its
//! pseudo-header sum gets its full checksum. A frame already complete matches that test by
//! chance once in 65,536; recomputing then writes the value it had.
//!
//! The XDP fast path makes the same test and leaves such frames to the forwarder.

use std::ops::Range;

use bridge_common::wire::{
    ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPPROTO_UDP,
    TCP_CHECKSUM_OFFSET, TPID_8021AD, TPID_8021Q, UDP_CHECKSUM_OFFSET,
};

/// The shortest TCP and UDP headers.
const TCP_MIN: usize = 20;
const UDP_MIN: usize = 8;

/// Completes the frame's TCP or UDP checksum if it is partial (see the module comment).
/// Returns whether it did. Frames that are not TCP or UDP over IPv4 or IPv6 (behind up to two
/// VLAN tags), fragments, and frames shorter than their IP header says are left alone.
pub fn complete_partial(frame: &mut [u8]) -> bool {
    let Some(Segment {
        l4,
        proto,
        addresses,
    }) = segment(frame)
    else {
        return false;
    };
    let (at, min) = match proto {
        IPPROTO_TCP => (TCP_CHECKSUM_OFFSET, TCP_MIN),
        IPPROTO_UDP => (UDP_CHECKSUM_OFFSET, UDP_MIN),
        _ => return false,
    };
    if l4.len() < min {
        return false;
    }
    let field = u16::from_be_bytes([frame[l4.start + at], frame[l4.start + at + 1]]);
    // In one's complement 0x0000 and 0xffff are both zero; an IPv4 UDP checksum of 0 means
    // "none" and is never a partial one (the pseudo-header sum is not zero).
    if field == 0 {
        return false;
    }
    let pseudo = sum(&frame[addresses]) + u64::from(proto) + l4.len() as u64;
    if field != fold(pseudo) {
        return false;
    }
    let segment = &mut frame[l4];
    segment[at..at + 2].fill(0);
    let mut check = !fold(pseudo + sum(segment));
    if proto == IPPROTO_UDP && check == 0 {
        check = 0xffff;
    }
    segment[at..at + 2].copy_from_slice(&check.to_be_bytes());
    true
}

/// Where a frame's TCP or UDP segment is, and what its pseudo-header is made of.
struct Segment {
    l4: Range<usize>,
    proto: u8,
    /// Source and destination IP addresses, adjacent in both IP headers.
    addresses: Range<usize>,
}

fn segment(frame: &[u8]) -> Option<Segment> {
    let mut l3 = ETHERNET_HEADER_LEN;
    let mut ethertype = be16(frame, 12)?;
    for _ in 0..2 {
        if ethertype != TPID_8021Q && ethertype != TPID_8021AD {
            break;
        }
        ethertype = be16(frame, l3 + 2)?;
        l3 += 4;
    }
    let ip = frame.get(l3..)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let first = *ip.first()?;
            let header = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(ip, 2)?);
            let fragment = be16(ip, 6)? & 0x3fff; // more-fragments flag and offset
            if first >> 4 != 4 || header < 20 || total < header || fragment != 0 {
                return None;
            }
            ip.get(..total)?;
            Some(Segment {
                l4: l3 + header..l3 + total,
                proto: ip[9],
                addresses: l3 + 12..l3 + 20,
            })
        }
        ETHERTYPE_IPV6 => {
            let len = usize::from(be16(ip, 4)?);
            if *ip.first()? >> 4 != 6 {
                return None;
            }
            // Extension headers in between: left alone (rare; the receiver can tell).
            ip.get(..40 + len)?;
            Some(Segment {
                l4: l3 + 40..l3 + 40 + len,
                proto: ip[6],
                addresses: l3 + 8..l3 + 40,
            })
        }
        _ => None,
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The one's-complement sum of `bytes` as big-endian 16-bit words (RFC 1071), unfolded: four
/// bytes at a time into 64 bits, which no frame can overflow.
fn sum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(4);
    let mut total: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    let rest = words.remainder();
    let mut padded = [0u8; 4];
    padded[..rest.len()].copy_from_slice(rest);
    total += u64::from(u32::from_be_bytes(padded));
    total
}

/// Folds a one's-complement sum to 16 bits.
fn fold(mut total: u64) -> u16 {
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    u16::try_from(total).expect("folded to 16 bits")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame carrying `payload`, with a correct checksum.
    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = 20 + 8 + payload.len();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0];
        ip[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&ip);
        let mut udp = vec![0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0];
        udp[4..6].copy_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(&udp);
        f.extend_from_slice(payload);
        f
    }

    /// A checksum computed the textbook way, 16 bits at a time, to check `sum` against.
    fn reference(pseudo: &[u8], segment: &[u8]) -> u16 {
        let mut all = pseudo.to_vec();
        all.extend_from_slice(segment);
        if all.len() % 2 == 1 {
            all.push(0);
        }
        let mut s: u32 = all
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !u16::try_from(s).unwrap()
    }

    fn pseudo4(f: &[u8], l3: usize, proto: u8, len: usize) -> Vec<u8> {
        let mut p = f[l3 + 12..l3 + 20].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        p
    }

    /// Writes what a kernel with TX checksum offload leaves in the field at `at`: the folded,
    /// uncomplemented sum of the pseudo-header (`~csum_tcpudp_magic(.., 0)`), from the
    /// textbook sum rather than this module's.
    fn make_partial(f: &mut [u8], at: usize, pseudo: &[u8]) {
        f[at..at + 2].copy_from_slice(&(!reference(pseudo, &[])).to_be_bytes());
    }

    /// Makes `f`'s IPv4 UDP checksum (IP header at `l3`, `ihl` words) partial, completes it
    /// and checks the result against the textbook checksum of the UDP segment.
    fn complete_and_check_udp4(f: &mut [u8], l3: usize, ihl: usize, what: &str) {
        let l4 = l3 + ihl * 4;
        let udp_len = usize::from(u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]));
        let pseudo = pseudo4(f, l3, IPPROTO_UDP, udp_len);
        make_partial(f, l4 + UDP_CHECKSUM_OFFSET, &pseudo);
        let before = f.to_vec();
        assert!(complete_partial(f), "{what}");
        let mut segment = f[l4..l4 + udp_len].to_vec();
        segment[UDP_CHECKSUM_OFFSET..UDP_CHECKSUM_OFFSET + 2].fill(0);
        let want = reference(&pseudo, &segment);
        assert_eq!(u16::from_be_bytes([f[l4 + 6], f[l4 + 7]]), want, "{what}");
        let changed: Vec<usize> = (0..f.len()).filter(|&k| f[k] != before[k]).collect();
        assert!(
            changed.iter().all(|&k| k == l4 + 6 || k == l4 + 7),
            "{what}: {changed:?}"
        );
        assert!(
            !complete_partial(f),
            "{what}: a complete checksum is left alone"
        );
    }

    #[test]
    fn a_partial_udp_checksum_is_completed_to_the_textbook_value() {
        for len in [0, 1, 3, 18, 1471] {
            let payload: Vec<u8> = (0..len)
                .map(|i| u8::try_from((i * 7 + 3) % 256).unwrap())
                .collect();
            let mut f = udp4(&payload);
            complete_and_check_udp4(&mut f, 14, 5, &format!("payload of {len} bytes"));
        }
    }

    #[test]
    fn padding_options_and_two_tags_are_handled() {
        // A short datagram padded to Ethernet's 60 bytes: the padding is not summed.
        let mut padded = udp4(b"hi");
        padded.resize(60, 0xee);
        complete_and_check_udp4(&mut padded, 14, 5, "padded");
        // IPv4 options: the segment starts after them.
        let mut options = udp4(b"with options");
        options.splice(34..34, [1, 1, 1, 0]);
        options[14] = 0x46;
        let total = u16::from_be_bytes([options[16], options[17]]) + 4;
        options[16..18].copy_from_slice(&total.to_be_bytes());
        complete_and_check_udp4(&mut options, 14, 6, "options");
        // 802.1ad outer tag, 802.1Q inner tag.
        let mut qinq = udp4(b"double tagged");
        let mut tags = TPID_8021AD.to_be_bytes().to_vec();
        tags.extend_from_slice(&[0, 10]);
        tags.extend_from_slice(&TPID_8021Q.to_be_bytes());
        tags.extend_from_slice(&[0, 100]);
        qinq.splice(12..12, tags);
        complete_and_check_udp4(&mut qinq, 22, 5, "two tags");
    }

    #[test]
    fn tcp_over_ipv6_behind_a_vlan_tag_is_completed() {
        let payload = b"GET / HTTP/1.1\r\n";
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&TPID_8021Q.to_be_bytes());
        f.extend_from_slice(&[0x00, 0x64]);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, IPPROTO_TCP, 64];
        ip[4..6].copy_from_slice(&u16::try_from(20 + payload.len()).unwrap().to_be_bytes());
        ip.extend((0..32u8).map(|i| i * 5));
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[12] = 5 << 4;
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        let l4 = 18 + 40;
        let mut pseudo = f[18 + 8..18 + 40].to_vec();
        pseudo.extend_from_slice(&u32::try_from(20 + payload.len()).unwrap().to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_TCP]);
        make_partial(&mut f, l4 + TCP_CHECKSUM_OFFSET, &pseudo);
        assert!(complete_partial(&mut f));
        let mut segment = f[l4..].to_vec();
        segment[16..18].fill(0);
        assert_eq!(
            u16::from_be_bytes([f[l4 + 16], f[l4 + 17]]),
            reference(&pseudo, &segment)
        );
    }

    #[test]
    fn frames_that_are_not_partial_tcp_or_udp_are_left_alone() {
        // A correct checksum, a UDP checksum of 0 ("none"), a fragment, ICMP, a frame
        // shorter than its IP header says, ARP, a runt.
        let partial = |f: &mut Vec<u8>| {
            let pseudo = pseudo4(f, 14, IPPROTO_UDP, 13);
            make_partial(f, 40, &pseudo);
        };
        let mut complete = udp4(b"hello");
        partial(&mut complete);
        complete_partial(&mut complete);
        let mut none = udp4(b"hello");
        let mut fragment = udp4(b"hello");
        partial(&mut fragment);
        fragment[20] = 0x20; // more fragments
        let mut icmp = udp4(b"hello");
        icmp[23] = 1;
        let mut short = udp4(b"hello");
        partial(&mut short);
        short.truncate(short.len() - 1);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut runt = vec![0u8; 13];
        for f in [
            &mut complete,
            &mut none,
            &mut fragment,
            &mut icmp,
            &mut short,
            &mut arp,
            &mut runt,
        ] {
            let before = f.clone();
            assert!(!complete_partial(f));
            assert_eq!(*f, before);
        }
    }
}
