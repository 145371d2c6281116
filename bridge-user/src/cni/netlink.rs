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
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
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
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(()),
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
}
