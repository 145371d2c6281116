//! The typed control interface between the control path and the forwarding thread.
//!
//! Like Firecracker's `VmmAction`: the API server turns requests into [`Command`]s, sends
//! them over a bounded channel and wakes the forwarder's `poll` with an eventfd; the
//! forwarder applies them between turns and answers reads with a snapshot over a oneshot.
//! The wire format of the unix socket is one JSON [`Request`] line and one JSON
//! [`Response`] line per connection.

pub mod server;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    metrics::{FdbCounters, PortCounters},
    xsk::SocketStats,
};

/// What the forwarder can be asked to do.
#[derive(Debug)]
pub enum Command {
    ShowInterfaces(oneshot::Sender<Status>),
    ShowFdb(oneshot::Sender<Vec<FdbRow>>),
    Shutdown,
}

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty struct variants, so `deny_unknown_fields` rejects stray keys.
    ShowInterfaces {},
    ShowFdb {},
}

/// The answer to a [`Request`]: `{"ok": ...}` or `{"error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(String),
}

/// Counters the XDP program keeps for a port (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpRow {
    /// Frames steered into the port's AF_XDP sockets.
    pub redirected: u64,
    /// Frames passed to the kernel because no socket was bound for their queue.
    pub passed: u64,
    /// Frames whose redirect failed.
    pub aborted: u64,
}

/// One port in `show interfaces`.
#[derive(Clone, Debug, Serialize)]
pub struct InterfaceRow {
    pub name: String,
    pub domain: String,
    pub slot: u32,
    pub ifindex: u32,
    pub queues: u32,
    #[serde(flatten)]
    pub counters: PortCounters,
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
}
