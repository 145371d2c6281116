//! Which XDP features an interface has, from the kernel's `netdev` generic netlink family
//! (`NETDEV_CMD_DEV_GET`, `include/uapi/linux/netdev.h`): what `ynl --family netdev --do
//! dev-get` prints.
//!
//! The fast path needs `NDO_XMIT` on an egress port: a veth advertises it only while its
//! peer can take redirected frames (GRO on or an XDP program, `veth_set_xdp_features`), and a
//! redirect to a port without it loses the frame. No crate speaks this family, and two
//! fixed-layout requests do not justify one.

use std::io;

use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// `NETDEV_XDP_ACT_NDO_XMIT`: the device accepts frames redirected by XDP.
pub const NDO_XMIT: u64 = 1 << 2;

const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLM_F_REQUEST: u16 = 1;
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
        let reply = this.ask(CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, b"netdev\0")?;
        let id = attribute(&reply, CTRL_ATTR_FAMILY_ID)
            .and_then(|v| v.get(..2))
            .ok_or_else(|| io::Error::other("no id for the netdev netlink family"))?;
        this.family = u16::from_ne_bytes([id[0], id[1]]);
        Ok(this)
    }

    /// The `NETDEV_XDP_ACT_*` bits of the interface `ifindex`.
    ///
    /// # Errors
    /// No such interface, or a malformed reply.
    pub fn of(&mut self, ifindex: u32) -> io::Result<u64> {
        let reply = self.ask(
            NETDEV_CMD_DEV_GET,
            NETDEV_A_DEV_IFINDEX,
            &ifindex.to_ne_bytes(),
        )?;
        attribute(&reply, NETDEV_A_DEV_XDP_FEATURES)
            .and_then(|v| v.get(..8))
            .map(|v| u64::from_ne_bytes(v.try_into().expect("eight bytes")))
            .ok_or_else(|| io::Error::other("the kernel's reply has no xdp-features"))
    }

    /// Sends one request with one attribute; returns the reply's attributes.
    fn ask(&mut self, cmd: u8, attr: u16, value: &[u8]) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let attr_len = 4 + value.len();
        let len = NLMSG_HDRLEN + GENL_HDRLEN + attr_len.next_multiple_of(4);
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).expect("small").to_ne_bytes());
        msg.extend_from_slice(&self.family.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[cmd, 1, 0, 0]);
        msg.extend_from_slice(&u16::try_from(attr_len).expect("small").to_ne_bytes());
        msg.extend_from_slice(&attr.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize(len, 0);
        self.socket.send(&msg, 0)?;
        loop {
            let mut buf = Vec::with_capacity(8192);
            let n = self.socket.recv(&mut buf, 0)?;
            let reply = buf.get(..n).unwrap_or_default();
            let header = |at: usize| -> Option<u32> {
                Some(u32::from_ne_bytes(reply.get(at..at + 4)?.try_into().ok()?))
            };
            let (Some(msg_len), Some(seq)) = (header(0), header(8)) else {
                return Err(io::Error::other("short netlink reply"));
            };
            if seq != self.seq {
                continue; // a late answer to an earlier request
            }
            let kind = u16::from_ne_bytes([reply[4], reply[5]]);
            let body = reply
                .get(NLMSG_HDRLEN..(msg_len as usize).min(n))
                .unwrap_or_default();
            if kind == NLMSG_ERROR {
                let errno = body
                    .get(..4)
                    .map_or(0, |e| i32::from_ne_bytes(e.try_into().expect("four bytes")));
                return Err(io::Error::from_raw_os_error(-errno));
            }
            return Ok(body.get(GENL_HDRLEN..).unwrap_or_default().to_vec());
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
}
