//! A minimal blocking rtnetlink client: the four operations ADD and DEL need, one request
//! and its ACK at a time, in the network namespace of the calling thread.
//!
//! Why in-process netlink rather than the `ip` binary: the runtime execs the plugin on the
//! node with the node's `PATH`, and not every node OS ships iproute2 (Bottlerocket and Talos
//! do not); errors come back as errnos we can map to CNI codes instead of stderr text; and a
//! veth whose peer is created directly inside the pod's namespace under its final name
//! (`IFLA_NET_NS_FD` in the peer message) is one atomic kernel operation, so there is never a
//! half-moved interface to clean up. The async `rtnetlink` crate would pull a tokio runtime
//! into a program that makes four calls; `netlink-packet-route` gives the message types.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, BorrowedFd},
};

use bridge_common::wire::MacAddr;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE,
    NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    },
    neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
    },
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A NETLINK_ROUTE socket bound in the calling thread's network namespace.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

/// The veth to create: `host` here, `peer` inside `peer_netns`.
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    pub host: &'a str,
    pub peer: &'a str,
    pub peer_netns: BorrowedFd<'a>,
    pub peer_mac: Option<MacAddr>,
    pub mtu: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// socket(2), bind(2) or connect(2) failed.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    /// Sends one request and waits for its ACK.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(message, flags).map(drop)
    }

    /// Sends one request and collects the messages answering it, up to its ACK or, for a
    /// dump, its `NLMSG_DONE`.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let mut answers = Vec::new();
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(answers),
                        NetlinkPayload::InnerMessage(m) => answers.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
            }
        }
    }

    /// Creates a veth pair; the peer appears in its namespace, named, with its MAC and MTU.
    ///
    /// # Errors
    /// `EEXIST` if either name is taken; any other errno from the kernel.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> io::Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(spec.peer.to_owned()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::NetNsFd(spec.peer_netns.as_raw_fd()),
        ];
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        let mut link = LinkMessage::default();
        link.attributes = vec![
            LinkAttribute::IfName(spec.host.to_owned()),
            LinkAttribute::Mtu(spec.mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.request(
            RouteNetlinkMessage::NewLink(link),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes a link by name (a veth takes its peer with it).
    ///
    /// # Errors
    /// `ENODEV` if there is no such link; any other errno from the kernel.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        self.request(RouteNetlinkMessage::DelLink(link), 0)
    }

    /// Sets a link administratively up.
    ///
    /// # Errors
    /// `ENODEV` if there is no such link; any other errno from the kernel.
    pub fn set_up(&mut self, name: &str) -> io::Result<()> {
        let mut link = LinkMessage::default();
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        link.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        self.request(RouteNetlinkMessage::SetLink(link), 0)
    }

    /// Adds `addr/prefix` to the link with index `ifindex` (with a broadcast address for IPv4,
    /// as `ip addr add ... brd +` does).
    ///
    /// # Errors
    /// `EEXIST` if the address is there already; any other errno from the kernel.
    pub fn add_address(&mut self, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.index = ifindex;
        message.header.prefix_len = prefix;
        match addr {
            IpAddr::V4(v4) => {
                message.header.family = AddressFamily::Inet;
                let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                let broadcast = std::net::Ipv4Addr::from(u32::from(v4) | host_bits);
                message.attributes = vec![
                    AddressAttribute::Local(addr),
                    AddressAttribute::Address(addr),
                ];
                if prefix < 31 {
                    message
                        .attributes
                        .push(AddressAttribute::Broadcast(broadcast));
                }
            }
            IpAddr::V6(_) => {
                message.header.family = AddressFamily::Inet6;
                message.attributes = vec![AddressAttribute::Address(addr)];
            }
        }
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a VXLAN device (down); see [`vxlan_link_message`].
    ///
    /// # Errors
    /// `EEXIST` if the name (or the VNI on this port and address) is taken; any other errno.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec<'_>) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewLink(vxlan_link_message(spec)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The link named `name`: its index, MTU and counters (`IFLA_STATS64`).
    ///
    /// # Errors
    /// `ENODEV` if there is no such link; any other errno from the kernel.
    pub fn get_link(&mut self, name: &str) -> io::Result<LinkInfoSummary> {
        let mut link = LinkMessage::default();
        link.attributes = vec![LinkAttribute::IfName(name.to_owned())];
        let answers = self.exchange(RouteNetlinkMessage::GetLink(link), 0)?;
        answers
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfoSummary::from_message(&l)),
                _ => None,
            })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// Adds `dst` to the remotes of `mac` in a VXLAN device's FDB, as
    /// `bridge fdb append MAC dev DEV dst DST` does; the all-zeros MAC is the head-end
    /// replication list (every broadcast, multicast and unknown unicast goes to each entry).
    ///
    /// # Errors
    /// `EEXIST` if that remote is there already; any other errno from the kernel.
    pub fn fdb_append(&mut self, ifindex: u32, mac: MacAddr, dst: IpAddr) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::NewNeighbour(fdb_message(ifindex, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_APPEND,
        )
    }

    /// Removes remote `dst` of `mac` from a VXLAN device's FDB, leaving its other remotes.
    ///
    /// # Errors
    /// `ENOENT` if there is no such entry; any other errno from the kernel.
    pub fn fdb_delete(&mut self, ifindex: u32, mac: MacAddr, dst: IpAddr) -> io::Result<()> {
        self.request(
            RouteNetlinkMessage::DelNeighbour(fdb_message(ifindex, mac, Some(dst))),
            0,
        )
    }

    /// The FDB of the device with index `ifindex` (one row per MAC and remote).
    ///
    /// # Errors
    /// Any errno from the kernel.
    pub fn fdb_dump(&mut self, ifindex: u32) -> io::Result<Vec<FdbEntry>> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        let answers = self.exchange(RouteNetlinkMessage::GetNeighbour(message), NLM_F_DUMP)?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => {
                    FdbEntry::from_message(n)
                }
                _ => None,
            })
            .collect())
    }
}

/// A VXLAN device to create: RFC 7348 over UDP, one VNI, head-end replication to the
/// remotes added with [`Netlink::fdb_append`].
#[derive(Debug, Clone, Copy)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// Source address of the outer packets.
    pub local: IpAddr,
    /// UDP destination port (4789 is IANA's).
    pub port: u16,
    /// Index of the underlay interface the tunnel is bound to, if any.
    pub underlay: Option<u32>,
    pub mtu: u32,
    /// Let the kernel learn inner source MAC to remote VTEP from received packets.
    pub learning: bool,
}

/// `RTM_NEWLINK` for a VXLAN device, as `ip link add NAME mtu MTU type vxlan id VNI local
/// LOCAL dstport PORT [dev UNDERLAY]` sends it.
#[must_use]
pub fn vxlan_link_message(spec: &VxlanSpec<'_>) -> LinkMessage {
    let mut data = vec![
        InfoVxlan::Id(spec.vni),
        match spec.local {
            IpAddr::V4(v4) => InfoVxlan::Local(v4),
            IpAddr::V6(v6) => InfoVxlan::Local6(v6),
        },
        InfoVxlan::Port(spec.port),
        InfoVxlan::Learning(spec.learning),
    ];
    if let Some(ifindex) = spec.underlay {
        data.push(InfoVxlan::Link(ifindex));
    }
    let mut link = LinkMessage::default();
    link.attributes = vec![
        LinkAttribute::IfName(spec.name.to_owned()),
        LinkAttribute::Mtu(spec.mtu),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]),
    ];
    link
}

/// `RTM_NEWNEIGH`/`RTM_DELNEIGH` body for a VXLAN FDB entry: `AF_BRIDGE`, `NTF_SELF` (the
/// device's own table, not a bridge master's), permanent, with the remote in `NDA_DST`.
#[must_use]
pub fn fdb_message(ifindex: u32, mac: MacAddr, dst: Option<IpAddr>) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = ifindex;
    message.header.state = NeighbourState::Permanent;
    message.header.flags = NeighbourFlags::Own;
    message.attributes = vec![NeighbourAttribute::LinkLayerAddress(mac.0.to_vec())];
    if let Some(dst) = dst {
        message
            .attributes
            .push(NeighbourAttribute::Destination(match dst {
                IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
                IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
            }));
    }
    message
}

/// What `show` needs of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkInfoSummary {
    pub ifindex: u32,
    pub mtu: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

impl LinkInfoSummary {
    fn from_message(link: &LinkMessage) -> Self {
        let mut out = Self {
            ifindex: link.header.index,
            ..Self::default()
        };
        for a in &link.attributes {
            match a {
                LinkAttribute::Mtu(m) => out.mtu = *m,
                LinkAttribute::Stats64(s) => {
                    out.rx_packets = s.rx_packets;
                    out.rx_bytes = s.rx_bytes;
                    out.rx_errors = s.rx_errors;
                    out.rx_dropped = s.rx_dropped;
                    out.tx_packets = s.tx_packets;
                    out.tx_bytes = s.tx_bytes;
                    out.tx_errors = s.tx_errors;
                    out.tx_dropped = s.tx_dropped;
                }
                _ => {}
            }
        }
        out
    }
}

/// One row of a VXLAN device's FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: MacAddr,
    /// The remote VTEP (absent on entries that only point at the device).
    pub dst: Option<IpAddr>,
    /// Configured (`bridge fdb append`) rather than learned from a received packet.
    pub permanent: bool,
    /// Seconds since the kernel last sent through this entry, and since it last updated it
    /// (for learned entries: since a packet from that MAC last arrived through the tunnel).
    pub used_secs: u32,
    pub updated_secs: u32,
}

impl FdbEntry {
    fn from_message(n: &NeighbourMessage) -> Option<Self> {
        let mut mac = None;
        let mut entry = Self {
            mac: MacAddr([0; 6]),
            dst: None,
            permanent: n.header.state == NeighbourState::Permanent,
            used_secs: 0,
            updated_secs: 0,
        };
        for a in &n.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(b) => {
                    mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr);
                }
                NeighbourAttribute::Destination(d) => {
                    entry.dst = match d {
                        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
                        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
                        NeighbourAddress::Other(b) => match b.len() {
                            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                            _ => None,
                        },
                        _ => None,
                    };
                }
                NeighbourAttribute::CacheInfo(c) => {
                    // Clock ticks (USER_HZ, 100 on Linux) since the event.
                    entry.used_secs = c.used / 100;
                    entry.updated_secs = c.updated / 100;
                }
                _ => {}
            }
        }
        entry.mac = mac?;
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn emit(m: &impl Emitable) -> Vec<u8> {
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn fdb_append_message_is_what_bridge_fdb_sends() {
        let dst = IpAddr::from([10, 99, 0, 2]);
        let m = fdb_message(7, MacAddr([0; 6]), Some(dst));
        let bytes = emit(&m);
        // ndmsg: family AF_BRIDGE (7), pad, ifindex 7, state NUD_PERMANENT (0x80), NTF_SELF.
        assert_eq!(
            bytes[..12],
            [7, 0, 0, 0, 7, 0, 0, 0, 0x80, 0, 0x02, 0],
            "{bytes:?}"
        );
        // NDA_LLADDR (2): 6 zero bytes, padded to 4; then NDA_DST (1): the IPv4 address.
        assert_eq!(bytes[12..16], [10, 0, 2, 0]);
        assert_eq!(bytes[16..22], [0; 6]);
        assert_eq!(bytes[24..32], [8, 0, 1, 0, 10, 99, 0, 2]);
        // And it parses back to the same entry.
        let parsed = NeighbourMessage::parse(&bytes[..]).unwrap();
        let entry = FdbEntry::from_message(&parsed).unwrap();
        assert_eq!(
            (entry.mac, entry.dst, entry.permanent),
            (MacAddr([0; 6]), Some(dst), true)
        );
    }

    #[test]
    fn vxlan_link_message_carries_every_setting() {
        let spec = VxlanSpec {
            name: "vx100",
            vni: 100,
            local: IpAddr::from([10, 99, 0, 1]),
            port: 4789,
            underlay: Some(3),
            mtu: 1450,
            learning: true,
        };
        let m = vxlan_link_message(&spec);
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1450)));
        let data = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(d)) => Some(d.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .unwrap();
        for want in [
            InfoVxlan::Id(100),
            InfoVxlan::Local(std::net::Ipv4Addr::new(10, 99, 0, 1)),
            InfoVxlan::Port(4789),
            InfoVxlan::Learning(true),
            InfoVxlan::Link(3),
        ] {
            assert!(data.contains(&want), "{want:?} missing from {data:?}");
        }
        // IFLA_VXLAN_PORT is big-endian on the wire: 4789 = 0x12b5.
        let bytes = emit(&m);
        assert!(
            bytes.windows(6).any(|w| w == [6, 0, 15, 0, 0x12, 0xb5]),
            "{bytes:?}"
        );
        let no_underlay = vxlan_link_message(&VxlanSpec {
            underlay: None,
            ..spec
        });
        assert!(!format!("{no_underlay:?}").contains("Link("));
    }
}
