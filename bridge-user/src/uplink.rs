//! The VXLAN uplink: one wire across nodes.
//!
//! Each bridge domain with a `vxlan` table gets a kernel VXLAN device (RFC 7348, one VNI per
//! domain), which becomes one more port of the domain: XDP in generic mode (a vxlan device
//! has no driver-mode XDP) steers what the tunnel decapsulates into AF_XDP sockets, and
//! frames the forwarder sends to it are encapsulated by the kernel. The design, and why:
//!
//! - **One VNI per domain, VLANs inside.** The uplink is an 802.1Q trunk for every VLAN
//!   (native VLAN 1), so a frame of VLAN 100 crosses the tunnel tagged 100 and the far node
//!   classifies it exactly as it would a frame from a local trunk. One tunnel per wire, one
//!   set of peers, one FDB: the same as a Linux bridge with `vlan_filtering` over one VXLAN
//!   device. (A VNI per VLAN would need a device, peers and sockets per VLAN, for nothing the
//!   tag does not already give.) The cost: a tagged frame is 4 bytes longer inside the tunnel.
//! - **Head-end replication in the kernel.** Each peer is an all-zeros entry in the device's
//!   FDB (`bridge fdb append 00:00:00:00:00:00 dev vx100 dst PEER`), so a flood leaves vwire
//!   once, to the uplink, and the kernel sends one copy to every peer. Frames that came in on
//!   the uplink are never sent back to it (the forwarder never returns a frame to its ingress
//!   port): with one uplink per domain that is split horizon, and a flood from a remote node
//!   never loops.
//! - **Learning on both sides.** vwire learns a remote MAC against the uplink port; the
//!   kernel learns the same MAC against the peer it came from (`learning on`), so known
//!   unicast goes to one peer only. `show fdb` joins the two to name the remote node.
//! - **MTU.** The device's MTU is the underlay's minus 50 (70 over IPv6), so clients get 1450
//!   over a 1500-byte underlay.
//!
//! Every netlink call runs on the control path, in the daemon's network namespace; the
//! forwarder only ever sees one more port.

use std::{collections::HashMap, io, net::IpAddr};

use bridge_common::wire::{MacAddr, VlanId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    cni::netlink::{LinkInfoSummary, Netlink, VxlanSpec},
    control::{
        server::{chain, Handle},
        FdbRow,
    },
    port::check_interface_name,
    vlan::{PortMode, VlanSet},
};

/// IANA's VXLAN port.
pub const VXLAN_PORT_IANA: u16 = 4789;
/// Outer Ethernet is not counted in an MTU: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
/// Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;
/// As [`VXLAN_OVERHEAD_V4`] with an outer IPv6 header (40).
pub const VXLAN_OVERHEAD_V6: u32 = 70;
/// Underlay MTU assumed when the config names no underlay device.
const DEFAULT_UNDERLAY_MTU: u32 = 1500;
/// The environment variable giving the node's address (the downward API's `status.hostIP`).
pub const ENV_NODE_IP: &str = "VWIRE_NODE_IP";
/// The environment variable listing peer nodes, comma-separated.
pub const ENV_PEERS: &str = "VWIRE_PEERS";

/// The `vxlan = { ... }` table of a bridge domain, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VxlanFile {
    vni: u32,
    local: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    port: Option<u16>,
    underlay: Option<String>,
    device: Option<String>,
}

/// A domain's validated VXLAN settings. `local` may still come from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub local: Option<IpAddr>,
    pub peers: Vec<IpAddr>,
    pub port: u16,
    pub underlay: Option<String>,
    pub device: String,
}

fn parse_ip(what: &str, text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text
        .trim()
        .parse()
        .map_err(|_| format!("{what} {text:?} is not an IP address"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "{what} {ip} must be a unicast address (multicast groups are not supported)"
        ));
    }
    Ok(ip)
}

impl VxlanFile {
    /// Validates the table.
    pub(crate) fn validate(&self) -> Result<VxlanConfig, String> {
        if !(1..=0x00ff_ffff).contains(&self.vni) {
            return Err(format!("vni {} must be between 1 and 16777215", self.vni));
        }
        if self.port == Some(0) {
            return Err("port 0 is not a UDP port".into());
        }
        let device = self
            .device
            .clone()
            .unwrap_or_else(|| format!("vx{}", self.vni));
        check_interface_name(&device).map_err(|e| format!("device {e}"))?;
        if let Some(u) = &self.underlay {
            check_interface_name(u).map_err(|e| format!("underlay {e}"))?;
        }
        let local = self
            .local
            .as_deref()
            .map(|l| parse_ip("local", l))
            .transpose()?;
        let mut config = VxlanConfig {
            vni: self.vni,
            local,
            peers: Vec::new(),
            port: self.port.unwrap_or(VXLAN_PORT_IANA),
            underlay: self.underlay.clone(),
            device,
        };
        for p in &self.peers {
            let ip = parse_ip("peer", p)?;
            if config.peers.contains(&ip) {
                return Err(format!("peer {ip} is listed twice"));
            }
            config.peers.push(ip);
        }
        config.check_peers()?;
        Ok(config)
    }
}

impl VxlanConfig {
    /// Fills in what the environment gives: `VWIRE_NODE_IP` as `local` when the config has
    /// none, and the peers of `VWIRE_PEERS` (this node's own address, repeats and blanks
    /// skipped, so every node can be handed the same list). `env` is `std::env::var` in the
    /// daemon and a table in tests.
    ///
    /// # Errors
    /// An unparsable address, or no local address from either source.
    pub fn resolve_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if self.local.is_none() {
            if let Some(ip) = env(ENV_NODE_IP).filter(|v| !v.trim().is_empty()) {
                self.local = Some(parse_ip(ENV_NODE_IP, &ip)?);
            }
        }
        let Some(local) = self.local else {
            return Err(format!(
                "no local address: set `local` in the vxlan table or {ENV_NODE_IP}"
            ));
        };
        if let Some(list) = env(ENV_PEERS) {
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let ip = parse_ip(ENV_PEERS, p)?;
                if ip != local && !self.peers.contains(&ip) {
                    self.peers.push(ip);
                }
            }
        }
        self.check_peers()
    }

    /// Peers must be of the local address's family and not the local address.
    fn check_peers(&self) -> Result<(), String> {
        let Some(local) = self.local else {
            return Ok(());
        };
        for p in &self.peers {
            if *p == local {
                return Err(format!("peer {p} is the local address"));
            }
            if p.is_ipv4() != local.is_ipv4() {
                return Err(format!(
                    "peer {p} and local {local} are not of the same address family"
                ));
            }
        }
        Ok(())
    }

    fn overhead(&self) -> u32 {
        match self.local {
            Some(IpAddr::V6(_)) => VXLAN_OVERHEAD_V6,
            _ => VXLAN_OVERHEAD_V4,
        }
    }
}

/// The uplink's VLAN mode: a trunk for every VLAN, untagged frames in VLAN 1.
#[must_use]
pub fn uplink_mode() -> PortMode {
    PortMode::Trunk {
        allowed: (1..=4094).filter_map(VlanId::new).collect::<VlanSet>(),
        native: Some(VlanId::DEFAULT),
    }
}

/// A netlink step on an uplink that failed.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("vxlan device {device}: {step}")]
    Netlink {
        device: String,
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("vxlan device {device}: {message}")]
    Invalid { device: String, message: String },
}

/// A live uplink: the device vwire created and the peers it replicates to.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub domain: String,
    pub config: VxlanConfig,
    pub local: IpAddr,
    pub ifindex: u32,
    pub mtu: u32,
}

impl Uplink {
    /// Creates the device (replacing a stale one of the same name), sets it up and adds
    /// one head-end replication entry per peer. Undoes itself on failure. `config` must have
    /// gone through [`VxlanConfig::resolve_env`].
    ///
    /// # Errors
    /// No local address, the underlay is missing, or a netlink step failed.
    pub fn create(domain: &str, config: &VxlanConfig) -> Result<Self, UplinkError> {
        let device = config.device.clone();
        let step = |step: &str| {
            let device = device.clone();
            let step = step.to_owned();
            move |source| UplinkError::Netlink {
                device,
                step,
                source,
            }
        };
        let local = config.local.ok_or_else(|| UplinkError::Invalid {
            device: device.clone(),
            message: "no local address".into(),
        })?;
        let mut nl = Netlink::open().map_err(step("opening a netlink socket"))?;
        let (underlay, underlay_mtu) = match &config.underlay {
            Some(name) => {
                let link = nl
                    .get_link(name)
                    .map_err(step(&format!("underlay {name}")))?;
                (Some(link.ifindex), link.mtu)
            }
            None => (None, DEFAULT_UNDERLAY_MTU),
        };
        let mtu = underlay_mtu
            .checked_sub(config.overhead())
            .filter(|m| *m >= 576)
            .ok_or_else(|| UplinkError::Invalid {
                device: device.clone(),
                message: format!("underlay MTU {underlay_mtu} is too small for VXLAN"),
            })?;
        let spec = VxlanSpec {
            name: &config.device,
            vni: config.vni,
            local,
            port: config.port,
            underlay,
            mtu,
            learning: true,
        };
        match nl.create_vxlan(&spec) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && nl.get_link(&device).is_ok() => {
                // Ours from a daemon that died without cleaning up: the name is the config's.
                warn!(%device, "replacing an existing interface with the configured vxlan device");
                nl.delete_link(&device)
                    .map_err(step("deleting the stale device"))?;
                nl.create_vxlan(&spec).map_err(step("creating"))?;
            }
            other => other.map_err(step("creating"))?,
        }
        let undo = |nl: &mut Netlink, e: UplinkError| {
            let _ = nl.delete_link(&device);
            e
        };
        let ifindex = match nl.get_link(&device) {
            Ok(link) => link.ifindex,
            Err(e) => return Err(undo(&mut nl, step("reading back")(e))),
        };
        if let Err(e) = nl.set_up(&device) {
            return Err(undo(&mut nl, step("setting up")(e)));
        }
        for &peer in &config.peers {
            if let Err(e) = nl.fdb_append(ifindex, MacAddr::ZERO, peer) {
                return Err(undo(&mut nl, step(&format!("adding peer {peer}"))(e)));
            }
        }
        info!(%device, vni = config.vni, %local, port = config.port, mtu,
              peers = config.peers.len(), %domain, "vxlan uplink created");
        Ok(Self {
            domain: domain.to_owned(),
            config: config.clone(),
            local,
            ifindex,
            mtu,
        })
    }

    /// Deletes the device (the kernel drops its FDB with it).
    pub fn destroy(&self) {
        match Netlink::open().and_then(|mut nl| nl.delete_link(&self.config.device)) {
            Ok(()) => info!(device = %self.config.device, "vxlan uplink deleted"),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => {
                warn!(device = %self.config.device, error = %e, "cannot delete the vxlan device")
            }
        }
    }

    /// Starts replicating floods to `peer`.
    ///
    /// # Errors
    /// A message for the operator: bad address, already a peer, or a netlink failure.
    pub fn add_peer(&mut self, peer: IpAddr) -> Result<(), String> {
        let mut next = self.config.clone();
        if next.peers.contains(&peer) {
            return Err(format!("{peer} is already a peer of {}", self.domain));
        }
        next.peers.push(peer);
        next.check_peers()?;
        Netlink::open()
            .and_then(|mut nl| nl.fdb_append(self.ifindex, MacAddr::ZERO, peer))
            .map_err(|e| format!("adding peer {peer} to {}: {e}", self.config.device))?;
        self.config = next;
        info!(device = %self.config.device, %peer, "peer added");
        Ok(())
    }

    /// Stops replicating to `peer` and forgets the MACs the kernel learned behind it; the
    /// other peers' entries are untouched.
    ///
    /// # Errors
    /// Not a peer, or a netlink failure.
    pub fn remove_peer(&mut self, peer: IpAddr) -> Result<usize, String> {
        let Some(at) = self.config.peers.iter().position(|p| *p == peer) else {
            return Err(format!("{peer} is not a peer of {}", self.domain));
        };
        let fail = |e: io::Error| format!("removing peer {peer} from {}: {e}", self.config.device);
        let mut nl = Netlink::open().map_err(fail)?;
        match nl.fdb_delete(self.ifindex, MacAddr::ZERO, peer) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => return Err(fail(e)),
            _ => {}
        }
        self.config.peers.remove(at);
        let mut forgotten = 0;
        for e in nl.fdb_dump(self.ifindex).map_err(fail)? {
            if e.dst == Some(peer) && e.mac != MacAddr::ZERO {
                // Gone already (aged out meanwhile) is fine.
                if nl.fdb_delete(self.ifindex, e.mac, peer).is_ok() {
                    forgotten += 1;
                }
            }
        }
        info!(device = %self.config.device, %peer, forgotten, "peer removed");
        Ok(forgotten)
    }

    /// MAC → remote node, from the kernel's FDB of the device.
    ///
    /// # Errors
    /// The dump failed.
    pub fn remotes(&self) -> io::Result<HashMap<MacAddr, IpAddr>> {
        Ok(Netlink::open()?
            .fdb_dump(self.ifindex)?
            .into_iter()
            .filter(|e| e.mac != MacAddr::ZERO)
            .filter_map(|e| Some((e.mac, e.dst?)))
            .collect())
    }

    /// The device's counters and each peer's share of the FDB, for `show peers`.
    ///
    /// # Errors
    /// A netlink read failed.
    pub fn row(&self) -> io::Result<UplinkRow> {
        let mut nl = Netlink::open()?;
        let link = nl.get_link(&self.config.device)?;
        let fdb = nl.fdb_dump(self.ifindex)?;
        let peers = self
            .config
            .peers
            .iter()
            .map(|&peer| {
                let to_peer = || fdb.iter().filter(move |e| e.dst == Some(peer));
                PeerRow {
                    address: peer.to_string(),
                    remote_macs: to_peer().filter(|e| e.mac != MacAddr::ZERO).count(),
                    flood_used_secs: to_peer()
                        .find(|e| e.mac == MacAddr::ZERO)
                        .map(|e| e.used_secs),
                    last_heard_secs: to_peer()
                        .filter(|e| e.mac != MacAddr::ZERO && !e.permanent)
                        .map(|e| e.updated_secs)
                        .min(),
                }
            })
            .collect();
        Ok(UplinkRow {
            domain: self.domain.clone(),
            device: self.config.device.clone(),
            vni: self.config.vni,
            local: self.local.to_string(),
            port: self.config.port,
            mtu: self.mtu,
            kernel: link.into(),
            peers,
        })
    }
}

/// Every uplink of the daemon, one per domain at most.
#[derive(Debug, Default)]
pub struct Uplinks {
    list: Vec<Uplink>,
}

impl Uplinks {
    pub fn push(&mut self, uplink: Uplink) {
        self.list.push(uplink);
    }

    /// The uplink of `domain`.
    ///
    /// # Errors
    /// A message naming the domain when it has none.
    pub fn of_domain(&mut self, domain: &str) -> Result<&mut Uplink, String> {
        self.list
            .iter_mut()
            .find(|u| u.domain == domain)
            .ok_or_else(|| {
                format!("bridge domain {domain} has no vxlan uplink (give it a vxlan table in the config)")
            })
    }

    /// The uplink whose device is the port `port` of `domain`.
    #[must_use]
    pub fn by_port(&self, domain: &str, port: &str) -> Option<&Uplink> {
        self.list
            .iter()
            .find(|u| u.domain == domain && u.config.device == port)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Uplink> {
        self.list.iter()
    }

    /// Deletes every device.
    pub fn destroy_all(&mut self) {
        for u in self.list.drain(..) {
            u.destroy();
        }
    }
}

/// One uplink in `show peers`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UplinkRow {
    pub domain: String,
    pub device: String,
    pub vni: u32,
    pub local: String,
    pub port: u16,
    pub mtu: u32,
    /// The device's own counters: what the kernel encapsulated and decapsulated, and dropped.
    pub kernel: DeviceCounters,
    pub peers: Vec<PeerRow>,
}

/// One peer node. The kernel keeps no per-remote packet counters, so what is per peer is
/// what its FDB knows: the MACs learned behind the peer and when the entries were used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRow {
    pub address: String,
    /// MACs the kernel has learned behind this peer.
    pub remote_macs: usize,
    /// Seconds since a flood was last replicated to this peer.
    pub flood_used_secs: Option<u32>,
    /// Seconds since a frame last arrived from this peer (its most recently heard MAC).
    pub last_heard_secs: Option<u32>,
}

/// The kernel's counters of the VXLAN device.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

impl From<LinkInfoSummary> for DeviceCounters {
    fn from(l: LinkInfoSummary) -> Self {
        Self {
            rx_packets: l.rx_packets,
            rx_bytes: l.rx_bytes,
            rx_errors: l.rx_errors,
            rx_dropped: l.rx_dropped,
            tx_packets: l.tx_packets,
            tx_bytes: l.tx_bytes,
            tx_errors: l.tx_errors,
            tx_dropped: l.tx_dropped,
        }
    }
}

/// The uplink operations of the control path: they need netlink and, for the port, the
/// forwarder and the loader.
impl Handle {
    /// Creates the domain's VXLAN device and adds it as a port, a trunk for every VLAN.
    ///
    /// # Errors
    /// A message for the operator; nothing is left behind.
    pub async fn add_uplink(&self, domain: &str, config: &VxlanConfig) -> Result<(), String> {
        let uplink = Uplink::create(domain, config).map_err(|e| chain(&e))?;
        if let Err(e) = self
            .add_port(&uplink.config.device, domain, uplink_mode())
            .await
        {
            uplink.destroy();
            return Err(e);
        }
        self.uplinks().lock().expect("uplinks lock").push(uplink);
        Ok(())
    }

    /// Deletes every VXLAN device (at shutdown, after the forwarder stopped).
    pub fn destroy_uplinks(&self) {
        self.uplinks().lock().expect("uplinks lock").destroy_all();
    }

    /// `peer add`.
    ///
    /// # Errors
    /// Bad address, no uplink in the domain, or a netlink failure.
    pub fn peer_add(&self, address: &str, domain: &str) -> Result<(), String> {
        let peer = parse_ip("peer", address)?;
        self.uplinks()
            .lock()
            .expect("uplinks lock")
            .of_domain(domain)?
            .add_peer(peer)
    }

    /// `peer del`: returns how many MACs learned behind the peer were forgotten.
    ///
    /// # Errors
    /// Bad address, not a peer, or a netlink failure.
    pub fn peer_del(&self, address: &str, domain: &str) -> Result<usize, String> {
        let peer = parse_ip("peer", address)?;
        self.uplinks()
            .lock()
            .expect("uplinks lock")
            .of_domain(domain)?
            .remove_peer(peer)
    }

    /// `show peers`.
    ///
    /// # Errors
    /// A netlink read failed.
    pub fn show_peers(&self) -> Result<Vec<UplinkRow>, String> {
        let uplinks = self.uplinks().lock().expect("uplinks lock");
        uplinks
            .iter()
            .map(|u| {
                u.row()
                    .map_err(|e| format!("reading {}: {e}", u.config.device))
            })
            .collect()
    }

    /// Names the remote node of every `show fdb` entry that is on an uplink. A failed read
    /// leaves the entries without it (and is logged): `show fdb` still answers.
    pub(crate) fn with_remotes(&self, mut rows: Vec<FdbRow>) -> Vec<FdbRow> {
        let uplinks = self.uplinks().lock().expect("uplinks lock");
        let mut cache: HashMap<String, HashMap<MacAddr, IpAddr>> = HashMap::new();
        for row in &mut rows {
            let Some(uplink) = uplinks.by_port(&row.domain, &row.port) else {
                continue;
            };
            let Ok(mac) = row.mac.parse::<MacAddr>() else {
                continue;
            };
            let remotes = cache
                .entry(uplink.config.device.clone())
                .or_insert_with(|| {
                    uplink.remotes().unwrap_or_else(|e| {
                        warn!(device = %uplink.config.device, error = %e, "cannot read the vxlan FDB");
                        HashMap::new()
                    })
                });
            row.remote = remotes.get(&mac).map(ToString::to_string);
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<VxlanConfig, String> {
        toml::from_str::<VxlanFile>(text)
            .map_err(|e| e.to_string())?
            .validate()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn full_table_and_defaults() {
        let c = file(
            "vni = 100\nlocal = \"10.99.0.1\"\npeers = [\"10.99.0.2\", \"10.99.0.3\"]\nport = 8472\nunderlay = \"ul0\"\ndevice = \"wire0\"",
        )
        .unwrap();
        assert_eq!(
            c,
            VxlanConfig {
                vni: 100,
                local: Some(ip("10.99.0.1")),
                peers: vec![ip("10.99.0.2"), ip("10.99.0.3")],
                port: 8472,
                underlay: Some("ul0".into()),
                device: "wire0".into(),
            }
        );
        let c = file("vni = 7").unwrap();
        assert_eq!(
            (c.device.as_str(), c.port, c.local, c.peers.len()),
            ("vx7", 4789, None, 0)
        );
    }

    #[test]
    fn bad_tables_say_what_is_wrong() {
        let err = |t: &str| file(t).unwrap_err();
        assert!(err("vni = 0").contains("vni 0"));
        assert!(err("vni = 16777216").contains("between 1 and 16777215"));
        assert!(err("vni = 1\nport = 0").contains("port 0"));
        assert!(err("vni = 1\nlocal = \"nope\"").contains("\"nope\" is not an IP"));
        assert!(err("vni = 1\npeers = [\"239.1.1.1\"]").contains("unicast"));
        assert!(err("vni = 1\npeers = [\"10.0.0.2\", \"10.0.0.2\"]").contains("twice"));
        assert!(err("vni = 1\nlocal = \"10.0.0.1\"\npeers = [\"10.0.0.1\"]").contains("local"));
        assert!(err("vni = 1\nlocal = \"10.0.0.1\"\npeers = [\"fd00::2\"]").contains("family"));
        assert!(err("vni = 1\ndevice = \"much-too-long-name\"").contains("device"));
        assert!(err("vni = 1\ngroup = \"239.1.1.1\"").contains("unknown field"));
    }

    #[test]
    fn environment_supplies_local_and_peers() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let mut c = file("vni = 100\npeers = [\"10.99.0.2\"]").unwrap();
        c.resolve_env(env(&[
            (ENV_NODE_IP, "10.99.0.1"),
            (ENV_PEERS, " 10.99.0.1, 10.99.0.2,10.99.0.3,, "),
        ]))
        .unwrap();
        assert_eq!(c.local, Some(ip("10.99.0.1")));
        assert_eq!(c.peers, [ip("10.99.0.2"), ip("10.99.0.3")]);

        // The config's local wins over the environment's.
        let mut c = file("vni = 100\nlocal = \"10.0.0.9\"").unwrap();
        c.resolve_env(env(&[(ENV_NODE_IP, "10.99.0.1")])).unwrap();
        assert_eq!(c.local, Some(ip("10.0.0.9")));

        let mut c = file("vni = 100").unwrap();
        assert!(c.resolve_env(env(&[])).unwrap_err().contains(ENV_NODE_IP));
        let mut c = file("vni = 100").unwrap();
        assert!(c
            .resolve_env(env(&[(ENV_NODE_IP, "10.0.0.1"), (ENV_PEERS, "x")]))
            .unwrap_err()
            .contains("VWIRE_PEERS \"x\""));
    }

    #[test]
    fn uplink_is_a_trunk_for_every_vlan() {
        let PortMode::Trunk { allowed, native } = uplink_mode() else {
            panic!("not a trunk")
        };
        assert_eq!(native, Some(VlanId::DEFAULT));
        assert_eq!(allowed.iter().count(), 4094);
        assert_eq!(uplink_mode().to_string(), "trunk [1-4094] native 1");
        let some: VlanSet = [1, 2, 3, 5, 7, 8]
            .into_iter()
            .filter_map(VlanId::new)
            .collect();
        let mode = PortMode::Trunk {
            allowed: some,
            native: None,
        };
        assert_eq!(mode.to_string(), "trunk [1-3,5,7,8]");
    }

    #[test]
    fn mtu_overhead_follows_the_family() {
        let mut c = file("vni = 1\nlocal = \"10.0.0.1\"").unwrap();
        assert_eq!(c.overhead(), 50);
        c.local = Some(ip("fd00::1"));
        assert_eq!(c.overhead(), 70);
    }
}
