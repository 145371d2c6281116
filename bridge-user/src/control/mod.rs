//! The typed control interface between the control path and the forwarding thread.
//!
//! Like Firecracker's `VmmAction`: the API server turns requests into [`Command`]s, sends
//! them over a bounded channel and wakes the forwarder's `poll` with an eventfd; the
//! forwarder applies them between turns and answers reads with a snapshot over a oneshot.
//! The wire format of the unix socket is one JSON [`Request`] line and one JSON
//! [`Response`] line per connection.

pub mod http;
pub mod server;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use std::os::fd::RawFd;

use bridge_common::wire::VlanId;

use crate::{
    metrics::{FdbCounters, PortCounters},
    vlan::{PortMode, VlanSet},
    xsk::SocketStats,
};

/// How long an API or metrics listener waits after a failed accept (out of file descriptors,
/// say) before it tries again, so that its loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A reply carrying either the result or a message for the operator.
pub type Reply<T> = oneshot::Sender<Result<T, String>>;

/// What the forwarder can be asked to do.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a few commands a second; boxing buys nothing"
)]
pub enum Command {
    ShowInterfaces(oneshot::Sender<Status>),
    ShowFdb(oneshot::Sender<Vec<FdbRow>>),
    ShowBridgeDomains(oneshot::Sender<Vec<DomainRow>>),
    /// Bind sockets for a new port; the reply has its slot and socket fds for the XSKMAP.
    AddPort(
        PortSpec,
        oneshot::Sender<Result<PortAdded, crate::forward::PortError>>,
    ),
    /// Close a port's sockets and reclaim its frames; replies with its slot and ifindex.
    RemovePort(String, Reply<PortRemoved>),
    AddStaticEntry(StaticEntry, Reply<()>),
    /// Removes the entry for a MAC (static or learned); replies whether there was one.
    DeleteEntry(EntrySelector, Reply<bool>),
    /// Removes learned entries, of one domain or port if given; replies how many.
    FlushFdb {
        domain: Option<String>,
        port: Option<String>,
        reply: Reply<usize>,
    },
    Shutdown,
}

/// A port to bind, resolved by the control path.
#[derive(Debug, Clone)]
pub struct PortSpec {
    pub name: String,
    pub ifindex: u32,
    pub queues: u32,
    pub mtu: u32,
    pub domain: String,
    pub mode: PortMode,
}

#[derive(Debug)]
pub struct PortAdded {
    pub slot: u32,
    /// (queue, socket fd); the fds stay owned by the forwarder.
    pub sockets: Vec<(u32, RawFd)>,
}

#[derive(Debug, Clone, Copy)]
pub struct PortRemoved {
    pub slot: u32,
    pub ifindex: u32,
}

/// Sent by the forwarder when it removed a port on its own (its interface vanished).
#[derive(Debug, Clone)]
pub struct PortGone {
    pub name: String,
    pub removed: PortRemoved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticEntry {
    pub mac: String,
    pub port: String,
    /// Defaults to the port's access (or native) VLAN.
    pub vlan: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySelector {
    pub mac: String,
    pub domain: String,
    /// Defaults to VLAN 1.
    pub vlan: Option<u16>,
}

/// A port's VLAN membership as the API and the config spell it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanSpec {
    /// Access port in this VLAN.
    pub vlan: Option<u16>,
    /// Trunk carrying these VLANs tagged.
    pub trunk: Option<Vec<u16>>,
    /// The trunk's untagged VLAN.
    pub native: Option<u16>,
}

impl VlanSpec {
    /// Validates into a [`PortMode`]; no field means access VLAN 1.
    ///
    /// # Errors
    /// A message naming the bad value or combination.
    pub fn to_mode(&self) -> Result<PortMode, String> {
        let id = |v: u16, what: &str| {
            VlanId::new(v).ok_or_else(|| format!("{what} {v} is not a VLAN ID (1-4094)"))
        };
        match (self.vlan, &self.trunk, self.native) {
            (Some(_), Some(_), _) => {
                Err("a port is either access (vlan) or trunk (trunk), not both".into())
            }
            (Some(_), None, Some(_)) => Err("native applies to trunk ports only".into()),
            (Some(v), None, None) => Ok(PortMode::Access(id(v, "vlan")?)),
            (None, None, None) => Ok(PortMode::Access(VlanId::DEFAULT)),
            (None, None, Some(_)) => Err("native needs a trunk list".into()),
            (None, Some(list), native) => {
                if list.is_empty() && native.is_none() {
                    return Err("a trunk needs at least one VLAN or a native VLAN".into());
                }
                let allowed = list
                    .iter()
                    .map(|&v| id(v, "trunk VLAN"))
                    .collect::<Result<VlanSet, _>>()?;
                let native = native.map(|v| id(v, "native VLAN")).transpose()?;
                Ok(PortMode::Trunk { allowed, native })
            }
        }
    }
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty struct variants, so `deny_unknown_fields` rejects stray keys.
    ShowInterfaces {},
    ShowFdb {},
    ShowBridgeDomains {},
    PortAdd {
        name: String,
        domain: String,
        /// Access VLAN.
        vlan: Option<u16>,
        /// Trunk VLANs.
        trunk: Option<Vec<u16>>,
        /// Trunk native VLAN.
        native: Option<u16>,
    },
    PortDel {
        name: String,
    },
    FdbAdd {
        mac: String,
        port: String,
        vlan: Option<u16>,
    },
    FdbDel {
        mac: String,
        domain: String,
        vlan: Option<u16>,
    },
    FdbFlush {
        domain: Option<String>,
        port: Option<String>,
    },
    /// Start replicating the domain's floods to another node (its VXLAN uplink).
    PeerAdd {
        address: String,
        domain: String,
    },
    /// Stop replicating to a node and forget the MACs learned behind it.
    PeerDel {
        address: String,
        domain: String,
    },
    /// The VXLAN uplinks, their kernel counters and their peers.
    ShowPeers {},
}

/// The answer to a [`Request`]: `{"ok": ...}` or `{"error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(String),
}

/// Counters the XDP program keeps for a port, summed over CPUs: the kernel's own layout, so
/// a counter added there shows here too.
pub type XdpRow = bridge_common::maps::XdpPortStats;

/// One port in `show interfaces`.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceRow {
    pub name: String,
    pub domain: String,
    pub slot: u32,
    pub ifindex: u32,
    pub queues: u32,
    /// As the forwarder last read it; frames longer than this + 18 are `mtu_exceeded`.
    pub mtu: u32,
    /// e.g. `access vlan 100`, `trunk [100,200] native 1`.
    pub mode: String,
    #[serde(flatten)]
    pub counters: PortCounters,
    /// Whether the XDP fast path carries frames to and from this port.
    pub fast_path: bool,
    pub xdp: XdpRow,
    /// The kernel's AF_XDP counters, summed over the port's sockets.
    pub kernel: SocketStats,
}

/// Where the UMEM's frames are; `balanced` is the accounting invariant.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UmemRow {
    pub frames: u32,
    pub free: u32,
    pub in_fill: u32,
    pub in_tx: u32,
    pub balanced: bool,
}

/// The answer to `show interfaces`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub interfaces: Vec<InterfaceRow>,
    pub umem: UmemRow,
    pub fdb_entries: usize,
    pub fdb: FdbCounters,
    /// Kicks made by the tx thread; `None` with `tx_thread = false`.
    pub tx_thread_kicks: Option<u64>,
    /// Addresses the fast path's table had no room for; `None` with `fast_path = false`.
    pub fast_path_table_full: Option<u64>,
}

/// One bridge domain in `show bridge-domains`.
#[derive(Clone, Debug, Serialize)]
pub struct DomainRow {
    pub name: String,
    pub ports: Vec<DomainPortRow>,
    pub fdb_entries: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct DomainPortRow {
    pub name: String,
    pub mode: String,
}

/// One entry in `show fdb`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdbRow {
    pub domain: String,
    pub mac: String,
    pub vlan: u16,
    pub port: String,
    pub age_secs: u64,
    #[serde(rename = "static")]
    pub is_static: bool,
    /// For entries on a VXLAN uplink: the node the MAC is behind (from the kernel's FDB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_reject_unknown_commands() {
        let r: Request = serde_json::from_str(r#"{"command":"show_fdb"}"#).unwrap();
        assert_eq!(r, Request::ShowFdb {});
        let err = serde_json::from_str::<Request>(r#"{"command":"reboot"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `reboot`"),
            "{err}"
        );
        assert!(serde_json::from_str::<Request>(r#"{"command":"show_fdb","x":1}"#).is_err());
    }

    #[test]
    fn peer_requests_parse() {
        let r: Request = serde_json::from_str(
            r#"{"command":"peer_add","address":"10.99.0.2","domain":"vwire"}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::PeerAdd {
                address: "10.99.0.2".into(),
                domain: "vwire".into()
            }
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"command":"peer_del","address":"10.99.0.2"}"#)
                .is_err(),
            "the domain is required"
        );
        let row = FdbRow {
            domain: "d".into(),
            mac: "02:00:00:00:00:01".into(),
            vlan: 1,
            port: "p".into(),
            age_secs: 0,
            is_static: false,
            remote: None,
        };
        assert!(!serde_json::to_string(&row).unwrap().contains("remote"));
    }

    /// The port mode a `port_add` request asks for.
    fn port_add_mode(json: &str) -> Result<PortMode, String> {
        let r: Request = serde_json::from_str(json).unwrap();
        let Request::PortAdd {
            vlan,
            trunk,
            native,
            ..
        } = r
        else {
            panic!("{r:?}")
        };
        VlanSpec {
            vlan,
            trunk,
            native,
        }
        .to_mode()
    }

    #[test]
    fn port_add_parses_vlan_modes() {
        let trunk =
            r#"{"command":"port_add","name":"p","domain":"d","trunk":[100,200],"native":1}"#;
        assert_eq!(
            port_add_mode(trunk).unwrap().to_string(),
            "trunk [100,200] native 1"
        );
        let plain = r#"{"command":"port_add","name":"p","domain":"d"}"#;
        assert_eq!(
            port_add_mode(plain).unwrap(),
            PortMode::Access(VlanId::DEFAULT)
        );
        assert!(serde_json::from_str::<Request>(
            r#"{"command":"port_add","name":"p","domain":"d","vlna":3}"#
        )
        .is_err());
    }

    #[test]
    fn vlan_specs_are_validated() {
        let spec = |vlan, trunk: Option<Vec<u16>>, native| {
            VlanSpec {
                vlan,
                trunk,
                native,
            }
            .to_mode()
        };
        assert!(spec(Some(0), None, None)
            .unwrap_err()
            .contains("vlan 0 is not a VLAN ID"));
        assert!(spec(Some(4095), None, None).is_err());
        assert!(spec(Some(5), Some(vec![5]), None)
            .unwrap_err()
            .contains("not both"));
        assert!(spec(Some(5), None, Some(1))
            .unwrap_err()
            .contains("trunk ports only"));
        assert!(spec(None, Some(vec![]), None)
            .unwrap_err()
            .contains("at least one"));
        assert!(spec(None, Some(vec![10, 5000]), None)
            .unwrap_err()
            .contains("5000"));
        assert_eq!(
            spec(Some(100), None, None).unwrap(),
            PortMode::Access(VlanId::new(100).unwrap())
        );
    }
}
