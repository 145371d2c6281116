//! Zero-copy views of Ethernet II and 802.1Q headers, in smoltcp's style.
//!
//! Contract (as smoltcp's `wire`): build a view of a received frame with `new_checked`;
//! once `check_len` has succeeded no accessor panics. `new_unchecked` is for buffers whose
//! length the caller already knows to be enough, such as a frame being written.
//! Multi-byte fields are big-endian on the wire and read byte by byte, never by casting
//! packet bytes to structs.

use core::fmt;

/// Length of the Ethernet II header: destination, source, EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Tag protocol identifier of an IEEE 802.1Q (customer) VLAN tag.
pub const TPID_8021Q: u16 = 0x8100;
/// Tag protocol identifier of an IEEE 802.1ad (service, "Q-in-Q") VLAN tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// Whether an EtherType field holds a tag's TPID (802.1Q or 802.1ad) rather than a protocol.
#[must_use]
pub const fn is_tpid(ethertype: u16) -> bool {
    matches!(ethertype, TPID_8021Q | TPID_8021AD)
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// Where the checksum field sits in a TCP and a UDP header (see bridge-user's `checksum`).
pub const TCP_CHECKSUM_OFFSET: usize = 16;
pub const UDP_CHECKSUM_OFFSET: usize = 6;

/// The frame is shorter than the header it claims to carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("truncated header")
    }
}

/// A 48-bit IEEE MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// `00:00:00:00:00:00`, never a valid source.
    pub const ZERO: Self = Self([0; 6]);

    /// Reads an address from the first six bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than six bytes.
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut addr = [0; 6];
        addr.copy_from_slice(&bytes[..6]);
        Self(addr)
    }

    /// Group (multicast or broadcast) address: the I/G bit of the first octet is set.
    #[must_use]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[must_use]
    pub const fn is_broadcast(&self) -> bool {
        let a = self.0;
        a[0] & a[1] & a[2] & a[3] & a[4] & a[5] == 0xff
    }

    #[must_use]
    pub const fn is_zero(&self) -> bool {
        let a = self.0;
        a[0] | a[1] | a[2] | a[3] | a[4] | a[5] == 0
    }

    /// Individual address that may appear as a frame's source.
    #[must_use]
    pub const fn is_valid_source(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            a[0], a[1], a[2], a[3], a[4], a[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Error parsing a textual MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadMacAddr;

impl fmt::Display for BadMacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a MAC address of six hex octets like 02:00:00:00:00:01")
    }
}

impl core::str::FromStr for MacAddr {
    type Err = BadMacAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut addr = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for octet in &mut addr {
            let part = parts.next().ok_or(BadMacAddr)?;
            if part.len() != 2 {
                return Err(BadMacAddr);
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| BadMacAddr)?;
        }
        if parts.next().is_some() {
            return Err(BadMacAddr);
        }
        Ok(Self(addr))
    }
}

/// An 802.1Q VLAN identifier, 1..=4094 (0 means "priority tag only", 4095 is reserved).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VlanId(u16);

impl VlanId {
    /// The default VLAN of every untagged port, as on most switches.
    pub const DEFAULT: Self = Self(1);

    /// Accepts only 1..=4094.
    #[must_use]
    pub const fn new(vid: u16) -> Option<Self> {
        if vid >= 1 && vid <= 4094 {
            Some(Self(vid))
        } else {
            None
        }
    }

    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlanId({})", self.0)
    }
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
    // Offsets inside an 802.1Q tag that follows the MAC addresses.
    pub const TCI: Range<usize> = 0..2;
    pub const INNER_ETHERTYPE: Range<usize> = 2..4;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer`, checking that it holds a whole Ethernet header.
    ///
    /// # Errors
    /// [`Truncated`] if the buffer is shorter than [`ETHERNET_HEADER_LEN`] (a runt).
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// # Errors
    /// [`Truncated`] if the buffer is shorter than [`ETHERNET_HEADER_LEN`].
    pub fn check_len(&self) -> Result<(), Truncated> {
        if self.buffer.as_ref().len() < ETHERNET_HEADER_LEN {
            Err(Truncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[must_use]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    #[must_use]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType field: the payload's protocol, or a TPID if the frame is tagged.
    #[must_use]
    pub fn ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Whether the frame carries an 802.1Q or 802.1ad tag after the MAC addresses.
    #[must_use]
    pub fn is_tagged(&self) -> bool {
        is_tpid(self.ethertype())
    }

    /// Everything after the 14-byte header.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }

    /// The outer VLAN tag, if the frame is tagged.
    ///
    /// # Errors
    /// [`Truncated`] if the frame is tagged but too short to hold the whole tag.
    pub fn vlan_tag(&self) -> Result<Option<VlanTag<&[u8]>>, Truncated> {
        if !self.is_tagged() {
            return Ok(None);
        }
        VlanTag::new_checked(self.payload()).map(Some)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// A view of the 4 bytes after a VLAN TPID: the TCI and the inner EtherType.
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// # Errors
    /// [`Truncated`] if fewer than [`VLAN_TAG_LEN`] bytes are there.
    pub fn new_checked(buffer: T) -> Result<Self, Truncated> {
        if buffer.as_ref().len() < VLAN_TAG_LEN {
            return Err(Truncated);
        }
        Ok(Self { buffer })
    }

    fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Priority code point (802.1p class of service).
    #[must_use]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[must_use]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The raw 12-bit VLAN identifier; 0 and 4095 are not valid [`VlanId`]s.
    #[must_use]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of what follows the tag (a TPID again for stacked tags).
    #[must_use]
    pub fn inner_ethertype(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::INNER_ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 02:00:00:00:00:01 to broadcast, first bytes only.
    const ARP_FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01,
    ];
    // A frame tagged VLAN 100, PCP 5, DEI set, carrying IPv4.
    const TAGGED_FRAME: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0xb0,
        0x64, 0x08, 0x00,
    ];

    #[test]
    fn test_deconstruct() {
        let frame = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(frame.ethertype(), 0x0806);
        assert!(!frame.is_tagged());
        assert_eq!(frame.payload(), &[0x00, 0x01]);
        assert!(frame.vlan_tag().unwrap().is_none());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0u8; 16];
        let mut frame = EthernetFrame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        frame.set_ethertype(0x0806);
        frame.payload_mut().copy_from_slice(&[0x00, 0x01]);
        assert_eq!(bytes, ARP_FRAME);
    }

    #[test]
    fn runts_are_rejected() {
        for len in 0..ETHERNET_HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&ARP_FRAME[..len]).err(),
                Some(Truncated)
            );
        }
    }

    #[test]
    fn vlan_tag_fields() {
        let frame = EthernetFrame::new_checked(&TAGGED_FRAME[..]).unwrap();
        assert!(frame.is_tagged());
        let tag = frame.vlan_tag().unwrap().unwrap();
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        assert_eq!(tag.inner_ethertype(), 0x0800);
    }

    #[test]
    fn truncated_vlan_tag_is_an_error() {
        let frame = EthernetFrame::new_checked(&TAGGED_FRAME[..16]).unwrap();
        assert_eq!(frame.vlan_tag().err(), Some(Truncated));
    }

    #[test]
    fn mac_classes() {
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_valid_source());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_valid_source());
    }

    #[test]
    fn mac_parse_and_display_round_trip() {
        let mac: MacAddr = "02:0a:ff:00:10:9c".parse().unwrap();
        assert_eq!(mac, MacAddr([0x02, 0x0a, 0xff, 0x00, 0x10, 0x9c]));
        let mut out = [0u8; 17];
        let mut w = Buf(&mut out, 0);
        fmt::write(&mut w, format_args!("{mac}")).unwrap();
        assert_eq!(&out, b"02:0a:ff:00:10:9c");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "0g:00:00:00:00:00",
            "2:0:0:0:0:0",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(BadMacAddr), "{bad}");
        }
    }

    #[test]
    fn vlan_id_range() {
        assert!(VlanId::new(0).is_none());
        assert!(VlanId::new(4095).is_none());
        assert_eq!(VlanId::new(1), Some(VlanId::DEFAULT));
        assert_eq!(VlanId::new(4094).map(VlanId::get), Some(4094));
    }

    struct Buf<'a>(&'a mut [u8], usize);
    impl fmt::Write for Buf<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let end = self.1 + s.len();
            self.0
                .get_mut(self.1..end)
                .ok_or(fmt::Error)?
                .copy_from_slice(s.as_bytes());
            self.1 = end;
            Ok(())
        }
    }
}
