//! Which XDP features an interface has, from the kernel's `netdev` generic netlink family
//! (`NETDEV_CMD_DEV_GET`, `include/uapi/linux/netdev.h`): what `ynl --family netdev --do
//! dev-get` prints.
//!
//! The fast path needs `NDO_XMIT` on an egress port: a veth advertises it only while its
//! peer can take redirected frames (GRO on or an XDP program, `veth_set_xdp_features`), and a
//! redirect to a port without it loses the frame. No crate speaks this family, and two
//! fixed-layout requests do not justify one.

use std::{collections::HashMap, io};

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device accepts frames redirected by XDP.
pub const NDO_XMIT: u64 = 1 << 2;

const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// `GENL_ID_CTRL` and its `CTRL_CMD_GETFAMILY`, `CTRL_ATTR_FAMILY_ID`, `CTRL_ATTR_FAMILY_NAME`.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `NETDEV_CMD_DEV_GET`, `NETDEV_A_DEV_IFINDEX`, `NETDEV_A_DEV_XDP_FEATURES`.
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// A generic netlink socket that knows the `netdev` family's id.
#[derive(Debug)]
pub struct XdpFeatures {
    socket: Socket,
    family: u16,
    seq: u32,
}

impl XdpFeatures {
    /// Opens a socket in this thread's network namespace and resolves the family.
    ///
    /// # Errors
    /// No generic netlink, or a kernel without the `netdev` family (before 6.3).
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let mut this = Self {
            socket,
            family: GENL_ID_CTRL,
            seq: 0,
        };
        let name = (CTRL_ATTR_FAMILY_NAME, &b"netdev\0"[..]);
        let replies = this.request(CTRL_CMD_GETFAMILY, Some(name))?;
        let id = replies
            .first()
            .and_then(|r| attribute(r, CTRL_ATTR_FAMILY_ID))
            .and_then(|v| v.get(..2))
            .ok_or_else(|| io::Error::other("no id for the netdev netlink family"))?;
        this.family = u16::from_ne_bytes([id[0], id[1]]);
        Ok(this)
    }

    /// The `NETDEV_XDP_ACT_*` bits of every interface in this namespace, by ifindex: one
    /// dump, however many ports.
    ///
    /// # Errors
    /// The request fails.
    pub fn all(&mut self) -> io::Result<HashMap<u32, u64>> {
        let replies = self.request(NETDEV_CMD_DEV_GET, None)?;
        Ok(replies
            .iter()
            .filter_map(|r| {
                let ifindex = attribute(r, NETDEV_A_DEV_IFINDEX)?.get(..4)?;
                let bits = attribute(r, NETDEV_A_DEV_XDP_FEATURES)?.get(..8)?;
                Some((
                    u32::from_ne_bytes(ifindex.try_into().ok()?),
                    u64::from_ne_bytes(bits.try_into().ok()?),
                ))
            })
            .collect())
    }

    /// Sends one request, with one attribute or else as a dump; returns the attributes of
    /// each reply message.
    fn request(&mut self, cmd: u8, attr: Option<(u16, &[u8])>) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let attr_len = attr.map_or(0, |(_, v)| 4 + v.len());
        let len = NLMSG_HDRLEN + GENL_HDRLEN + attr_len.next_multiple_of(4);
        let flags = if attr.is_some() {
            NLM_F_REQUEST
        } else {
            NLM_F_REQUEST | NLM_F_DUMP
        };
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).expect("small").to_ne_bytes());
        msg.extend_from_slice(&self.family.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[cmd, 1, 0, 0]);
        if let Some((kind, value)) = attr {
            msg.extend_from_slice(&u16::try_from(attr_len).expect("small").to_ne_bytes());
            msg.extend_from_slice(&kind.to_ne_bytes());
            msg.extend_from_slice(value);
        }
        msg.resize(len, 0);
        self.socket.send(&msg, 0)?;
        let mut replies = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(32 * 1024);
            let n = self.socket.recv(&mut buf, 0)?;
            let mut rest = buf.get(..n).unwrap_or_default();
            while rest.len() >= NLMSG_HDRLEN {
                let field = |at: usize| u32::from_ne_bytes(rest[at..at + 4].try_into().expect("4"));
                let msg_len = (field(0) as usize).clamp(NLMSG_HDRLEN, rest.len());
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let body = &rest[NLMSG_HDRLEN..msg_len];
                let ours = field(8) == self.seq;
                rest = rest.get(msg_len.next_multiple_of(4)..).unwrap_or_default();
                match kind {
                    _ if !ours => {} // a late answer to an earlier request
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let errno = body
                            .get(..4)
                            .map_or(0, |e| i32::from_ne_bytes(e.try_into().expect("4")));
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    _ => {
                        replies.push(body.get(GENL_HDRLEN..).unwrap_or_default().to_vec());
                        if attr.is_some() {
                            return Ok(replies);
                        }
                    }
                }
            }
        }
    }
}

/// The value of the first attribute of type `kind` in a run of netlink attributes.
fn attribute(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let this = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        let value = attrs.get(4..len)?;
        if this == kind {
            return Some(value);
        }
        attrs = attrs.get(len.next_multiple_of(4)..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_attributes_past_padding() {
        // A 6-byte string (padded to 8) then a u16.
        let attrs = [
            10, 0, 2, 0, b'n', b'e', b't', b'd', b'e', b'v', 0, 0, 6, 0, 1, 0, 0x22, 0, 0, 0,
        ];
        assert_eq!(attribute(&attrs, 2), Some(&b"netdev"[..]));
        assert_eq!(attribute(&attrs, 1), Some(&[0x22, 0][..]));
        assert_eq!(attribute(&attrs, 3), None);
        assert_eq!(attribute(&attrs[..7], 1), None, "truncated");
    }

    #[test]
    fn the_dump_lists_every_interface_of_this_namespace() {
        let Ok(mut features) = XdpFeatures::open() else {
            return; // a kernel before 6.3 has no netdev family
        };
        let all = features.all().expect("dump");
        let interfaces = std::fs::read_dir("/sys/class/net").expect("sysfs").count();
        assert_eq!(all.len(), interfaces, "{all:?}");
        assert!(all.contains_key(&1), "lo is ifindex 1: {all:?}");
    }
}
