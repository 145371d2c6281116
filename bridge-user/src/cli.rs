//! The `vwire` command line: `vwire run` starts the daemon; `vwire show ...` asks it.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::control::{Request, Response};

#[derive(Debug, Parser)]
#[command(
    name = "vwire",
    version,
    about = "A userspace L2 bridge over XDP and AF_XDP"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "VWIRE_SOCKET",
        default_value = "/run/vwire/vwire.sock"
    )]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run the daemon in the foreground until SIGINT or SIGTERM.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Add or remove ports of the running daemon.
    Port {
        #[command(subcommand)]
        action: PortAction,
        /// Print the daemon's JSON answer.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Manage the MAC table of the running daemon.
    Fdb {
        #[command(subcommand)]
        action: FdbAction,
        /// Print the daemon's JSON answer.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Peer nodes of a bridge domain's VXLAN uplink.
    Peer {
        #[command(subcommand)]
        action: PeerAction,
        /// Print the daemon's JSON answer.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Show the running daemon's state.
    Show {
        #[command(subcommand)]
        what: ShowWhat,
        /// Print JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PortAction {
    /// Attach an interface (host end of a client wire) to a bridge domain.
    Add {
        /// The interface, in the daemon's network namespace.
        name: String,
        /// The bridge domain (created if it does not exist).
        #[arg(long, short)]
        domain: String,
        /// Access port in this VLAN (default: access VLAN 1).
        #[arg(long, conflicts_with = "trunk")]
        vlan: Option<u16>,
        /// Trunk port carrying these VLANs tagged, e.g. 100,200.
        #[arg(long, value_delimiter = ',')]
        trunk: Option<Vec<u16>>,
        /// The trunk's untagged (native) VLAN.
        #[arg(long, requires = "trunk")]
        native: Option<u16>,
    },
    /// Detach a port; its learned MACs are forgotten.
    Del { name: String },
}

#[derive(Debug, Subcommand)]
pub enum FdbAction {
    /// Add a static entry: frames to MAC go to PORT, whatever learning sees.
    Add {
        mac: String,
        #[arg(long, short)]
        port: String,
        /// Default: the port's access or native VLAN.
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Delete the entry (static or learned) for MAC.
    Del {
        mac: String,
        #[arg(long, short)]
        domain: String,
        /// Default: VLAN 1.
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Forget learned entries (static ones stay), of one domain or port if given.
    Flush {
        #[arg(long, short)]
        domain: Option<String>,
        #[arg(long, short)]
        port: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PeerAction {
    /// Replicate the domain's floods to another node (its VXLAN endpoint address).
    Add {
        address: String,
        #[arg(long, short)]
        domain: String,
    },
    /// Stop replicating to a node; the MACs learned behind it are forgotten.
    Del {
        address: String,
        #[arg(long, short)]
        domain: String,
    },
}

impl PeerAction {
    #[must_use]
    pub fn request(self) -> Request {
        match self {
            Self::Add { address, domain } => Request::PeerAdd { address, domain },
            Self::Del { address, domain } => Request::PeerDel { address, domain },
        }
    }
}

impl PortAction {
    #[must_use]
    pub fn request(self) -> Request {
        match self {
            Self::Add {
                name,
                domain,
                vlan,
                trunk,
                native,
            } => Request::PortAdd {
                name,
                domain,
                vlan,
                trunk,
                native,
            },
            Self::Del { name } => Request::PortDel { name },
        }
    }
}

impl FdbAction {
    #[must_use]
    pub fn request(self) -> Request {
        match self {
            Self::Add { mac, port, vlan } => Request::FdbAdd { mac, port, vlan },
            Self::Del { mac, domain, vlan } => Request::FdbDel { mac, domain, vlan },
            Self::Flush { domain, port } => Request::FdbFlush { domain, port },
        }
    }
}

/// Sends a change request and prints the answer: JSON, or a one-line summary.
///
/// # Errors
/// As [`request`].
pub fn change(socket: &Path, req: &Request, json: bool) -> Result<(), ClientError> {
    let value = request(socket, req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if let Some(n) = value.get("flushed") {
        println!("flushed {n} entries");
    } else {
        println!("ok");
    }
    Ok(())
}

#[derive(Debug, Subcommand, Clone, Copy)]
pub enum ShowWhat {
    /// Per-port counters: rx/tx frames and bytes, drops by reason, XDP and AF_XDP counters.
    Interfaces,
    /// The MAC learning table.
    Fdb,
    /// Bridge domains and their ports.
    BridgeDomains,
    /// VXLAN uplinks: device counters and, per peer node, learned MACs and last use.
    Peers,
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the vwire daemon at {path} (is it running? is --socket right?): {source}"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon sent something unreadable: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the daemon refused: {0}")]
    Refused(String),
}

/// Sends one request and returns the daemon's answer.
///
/// # Errors
/// No daemon listening, an I/O failure, or an error response.
pub fn request(socket: &Path, request: &Request) -> Result<Value, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    match serde_json::from_str::<Response>(&answer)? {
        Response::Ok(value) => Ok(value),
        Response::Error(message) => Err(ClientError::Refused(message)),
    }
}

/// Runs `vwire show ...`, printing a table or JSON to stdout.
///
/// # Errors
/// As [`request`].
pub fn show(socket: &Path, what: ShowWhat, json: bool) -> Result<(), ClientError> {
    let req = match what {
        ShowWhat::Interfaces => Request::ShowInterfaces {},
        ShowWhat::Fdb => Request::ShowFdb {},
        ShowWhat::BridgeDomains => Request::ShowBridgeDomains {},
        ShowWhat::Peers => Request::ShowPeers {},
    };
    let value = request(socket, &req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match what {
        ShowWhat::Interfaces => print!("{}", interfaces_table(&value)),
        ShowWhat::Fdb => print!("{}", fdb_table(&value)),
        ShowWhat::BridgeDomains => print!("{}", domains_table(&value)),
        ShowWhat::Peers => print!("{}", peers_table(&value)),
    }
    Ok(())
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// `show interfaces` as a table, then drops by reason for ports that have any.
#[must_use]
pub fn interfaces_table(status: &Value) -> String {
    let mut out = format!(
        "{:<15} {:<12} {:>6} {:>6} {:>12} {:>14} {:>12} {:>14} {:>10}\n",
        "interface",
        "domain",
        "queues",
        "mtu",
        "rx-frames",
        "rx-bytes",
        "tx-frames",
        "tx-bytes",
        "drops"
    );
    let empty = Vec::new();
    let rows = status
        .get("interfaces")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let mut details = String::new();
    for r in rows {
        let drops = r.get("drops").cloned().unwrap_or(Value::Null);
        let total: u64 = drops
            .as_object()
            .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
        out += &format!(
            "{:<15} {:<12} {:>6} {:>6} {:>12} {:>14} {:>12} {:>14} {:>10}\n",
            s(r, "name"),
            s(r, "domain"),
            u(r, "queues"),
            u(r, "mtu"),
            u(r, "rx_frames"),
            u(r, "rx_bytes"),
            u(r, "tx_frames"),
            u(r, "tx_bytes"),
            total
        );
        let nonzero = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                        .map(|(k, n)| format!("{k}={n}"))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut notes = nonzero(&drops);
        if let Some(n) = r.get("rx_checksums_completed").and_then(Value::as_u64) {
            if n > 0 {
                notes.push(format!("checksums_completed={n}"));
            }
        }
        let xdp = r.get("xdp").cloned().unwrap_or(Value::Null);
        notes.extend(nonzero(&xdp).into_iter().map(|n| format!("xdp.{n}")));
        let kernel = r.get("kernel").cloned().unwrap_or(Value::Null);
        // tx_ring_empty_descs counts kicks that found nothing more to send: not a problem.
        notes.extend(
            nonzero(&kernel)
                .into_iter()
                .filter(|n| !n.starts_with("tx_ring_empty"))
                .map(|n| format!("kernel.{n}")),
        );
        if !notes.is_empty() {
            details += &format!("  {}: {}\n", s(r, "name"), notes.join(" "));
        }
    }
    out += &details;
    if let Some(umem) = status.get("umem") {
        out += &format!(
            "umem: {} frames, {} free, {} on fill rings, {} in tx{}\n",
            u(umem, "frames"),
            u(umem, "free"),
            u(umem, "in_fill"),
            u(umem, "in_tx"),
            if umem.get("balanced").and_then(Value::as_bool) == Some(false) {
                " (UNBALANCED)"
            } else {
                ""
            }
        );
    }
    if let Some(fdb) = status.get("fdb") {
        out += &format!(
            "fdb: {} entries; learned {}, moved {}, aged out {}, not learned: table full {}, port limit {}\n",
            u(status, "fdb_entries"),
            u(fdb, "learned"),
            u(fdb, "moved"),
            u(fdb, "aged_out"),
            u(fdb, "table_full"),
            u(fdb, "port_limit")
        );
    }
    if let Some(kicks) = status.get("tx_thread_kicks").and_then(Value::as_u64) {
        out += &format!("tx thread: {kicks} kicks for the busy forwarder\n");
    }
    if let Some(full) = status.get("fast_path_table_full").and_then(Value::as_u64) {
        let ports: Vec<&str> = status
            .get("interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|r| r.get("fast_path").and_then(Value::as_bool) == Some(true))
            .map(|r| s(r, "name"))
            .collect();
        let ports = if ports.is_empty() {
            "no ports".to_owned()
        } else {
            ports.join(", ")
        };
        out += &format!("fast path: {ports}; {full} addresses did not fit its table\n");
    }
    out
}

/// `show bridge-domains` as a table.
#[must_use]
pub fn domains_table(value: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for d in value
        .get("bridge_domains")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let ports = d.get("ports").and_then(Value::as_array).unwrap_or(&empty);
        out += &format!(
            "bridge-domain {}: {} ports, {} fdb entries\n",
            s(d, "name"),
            ports.len(),
            u(d, "fdb_entries")
        );
        for p in ports {
            out += &format!("  {:<15} {}\n", s(p, "name"), s(p, "mode"));
        }
    }
    out
}

/// `show fdb` as a table.
#[must_use]
pub fn fdb_table(value: &Value) -> String {
    let mut out = format!(
        "{:<12} {:<17} {:>5} {:<15} {:>8} {:<6}\n",
        "domain", "mac", "vlan", "port", "age(s)", "static"
    );
    let empty = Vec::new();
    let rows = value
        .get("entries")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for r in rows {
        out += &format!(
            "{:<12} {:<17} {:>5} {:<15} {:>8} {:<6}{}\n",
            s(r, "domain"),
            s(r, "mac"),
            u(r, "vlan"),
            s(r, "port"),
            u(r, "age_secs"),
            if r.get("static").and_then(Value::as_bool) == Some(true) {
                "yes"
            } else {
                "no"
            },
            r.get("remote")
                .and_then(Value::as_str)
                .map(|n| format!(" remote {n}"))
                .unwrap_or_default()
        );
    }
    out += &format!("{} entries\n", rows.len());
    out
}

/// `show peers` as a table: one block per uplink.
#[must_use]
pub fn peers_table(value: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let opt = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_u64)
            .map_or_else(|| "-".to_owned(), |n| format!("{n}s"))
    };
    for up in value
        .get("uplinks")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        let k = up.get("kernel").cloned().unwrap_or(Value::Null);
        out += &format!(
            "{} (domain {}): vni {}, local {}, udp {}, mtu {}\n  kernel: rx {} frames {} bytes ({} errors, {} dropped), tx {} frames {} bytes ({} errors, {} dropped)\n",
            s(up, "device"),
            s(up, "domain"),
            u(up, "vni"),
            s(up, "local"),
            u(up, "port"),
            u(up, "mtu"),
            u(&k, "rx_packets"),
            u(&k, "rx_bytes"),
            u(&k, "rx_errors"),
            u(&k, "rx_dropped"),
            u(&k, "tx_packets"),
            u(&k, "tx_bytes"),
            u(&k, "tx_errors"),
            u(&k, "tx_dropped"),
        );
        out += &format!(
            "  {:<39} {:>11} {:>11} {:>11}\n",
            "peer", "remote-macs", "last-flood", "last-heard"
        );
        for p in up.get("peers").and_then(Value::as_array).unwrap_or(&empty) {
            out += &format!(
                "  {:<39} {:>11} {:>11} {:>11}\n",
                s(p, "address"),
                u(p, "remote_macs"),
                opt(p, "flood_used_secs"),
                opt(p, "last_heard_secs"),
            );
        }
    }
    if out.is_empty() {
        out = "no vxlan uplinks\n".into();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_rows_and_nonzero_drops() {
        let status = serde_json::json!({
            "interfaces": [{"name": "vw-a", "domain": "vwire", "queues": 1, "mtu": 1500, "rx_frames": 5, "rx_bytes": 300,
                "tx_frames": 4, "tx_bytes": 240, "drops": {"runt": 2, "same_port": 0},
                "xdp": {"redirected": 7, "passed": 0}, "kernel": {"rx_ring_full": 0}}],
            "umem": {"frames": 16, "free": 8, "in_fill": 8, "in_tx": 0, "balanced": true},
            "fdb_entries": 1, "fdb": {"learned": 1, "moved": 0, "aged_out": 0, "table_full": 0},
            "tx_thread_kicks": 3, "fast_path_table_full": 0
        });
        let t = interfaces_table(&status);
        assert!(t.contains("vw-a"), "{t}");
        assert!(t.contains("     1   1500 "), "{t}");
        assert!(t.contains("vw-a: runt=2 xdp.redirected=7"), "{t}");
        assert!(!t.contains("same_port"), "{t}");
        assert!(t.contains("umem: 16 frames, 8 free"), "{t}");
        assert!(t.contains("tx thread: 3 kicks"), "{t}");
        assert!(t.contains("fast path: no ports; 0 addresses"), "{t}");
        let fdb = serde_json::json!({"entries": [{"domain": "vwire", "mac": "02:00:00:00:00:0a", "vlan": 1,
            "port": "vw-a", "age_secs": 3, "static": false}]});
        let t = fdb_table(&fdb);
        assert!(
            t.contains("02:00:00:00:00:0a") && t.contains("1 entries"),
            "{t}"
        );
    }
}
