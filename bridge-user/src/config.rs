//! The TOML config file, and its validation into a [`BridgeConfig`].
//!
//! ```toml
//! fdb_max_age_secs = 300        # optional, default 300
//! fdb_max_entries = 65536       # optional
//! max_macs_per_port = 4096      # optional: learned MACs one port may hold
//! umem_frames = 32768           # optional: frames shared by all ports
//! frame_size = 2048             # optional: bytes per frame, 2048 (MTU <= 1774) or 4096
//! ring_size = 4096              # optional: entries per AF_XDP ring
//! spin_us = 20                  # optional: keep polling this long after traffic
//! follow_wakeups = true         # optional: sleep on the CPU that will wake us (see `affinity`)
//! tx_thread = true              # optional: a second thread transmits when busy (see `txhelper`)
//! fast_path = true              # optional: XDP forwards known unicast between access ports (see `fastpath`)
//! tcp_handoff = true            # optional: under load, the fast path hands TCP segments to another CPU
//! metrics_listen = "127.0.0.1:9469"  # optional: Prometheus /metrics and /healthz
//!
//! [[bridge_domain]]
//! name = "vwire"
//! ports = [
//!   "vw-a",                                       # access port in VLAN 1
//!   { name = "vw-b", vlan = 100 },                # access port in VLAN 100
//!   { name = "vw-c", trunk = [100, 200], native = 1 },  # trunk
//! ]
//! # optional: carry this domain to other nodes over VXLAN (see `uplink`)
//! vxlan = { vni = 100, local = "10.99.0.1", peers = ["10.99.0.2"], port = 4789, underlay = "ul0" }
//! ```
//!
//! Validation names the offending key and value, and checks everything before anything is
//! touched, so a bad config changes nothing.

use std::{collections::HashSet, path::Path, time::Duration};

use serde::Deserialize;

use crate::{control::VlanSpec, port::check_interface_name, vlan::PortMode};

/// A config problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    fdb_max_age_secs: Option<u64>,
    fdb_max_entries: Option<usize>,
    max_macs_per_port: Option<u32>,
    umem_frames: Option<u32>,
    frame_size: Option<u32>,
    ring_size: Option<u32>,
    spin_us: Option<u64>,
    follow_wakeups: Option<bool>,
    tx_thread: Option<bool>,
    fast_path: Option<bool>,
    tcp_handoff: Option<bool>,
    metrics_listen: Option<String>,
    #[serde(default)]
    bridge_domain: Vec<DomainFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainFile {
    name: String,
    #[serde(default)]
    ports: Vec<PortFile>,
    /// The domain's VXLAN uplink to other nodes (see `uplink`).
    vxlan: Option<crate::uplink::VxlanFile>,
}

/// A port: just its name (access VLAN 1), or a table with its VLAN mode.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortFile {
    Name(String),
    Table(PortTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortTable {
    name: String,
    vlan: Option<u16>,
    trunk: Option<Vec<u16>>,
    native: Option<u16>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub fdb_max_age: Duration,
    pub fdb_max_entries: usize,
    pub max_macs_per_port: u32,
    pub umem_frames: u32,
    /// Bytes per UMEM frame: bounds the MTU a port may have (see `port::max_mtu`).
    pub frame_size: u32,
    pub ring_size: u32,
    pub spin: Duration,
    /// Sleep on the CPU whose XDP program will wake the forwarder, when traffic is sparse.
    pub follow_wakeups: bool,
    /// Split transmitting under load between the forwarder and a second thread.
    pub tx_thread: bool,
    /// Let the XDP program forward known unicast between access ports itself (`fastpath`).
    pub fast_path: bool,
    /// Under load, let the fast path queue TCP segments to another CPU, which sends them on,
    /// instead of to the forwarder (`CPU_HANDOFF` in `bridge_common::maps`).
    pub tcp_handoff: bool,
    /// Where to serve `/metrics` and `/healthz`; off when unset.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub domains: Vec<DomainConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    pub name: String,
    pub ports: Vec<PortConfig>,
    /// The VXLAN uplink, a port created by the daemon.
    pub vxlan: Option<crate::uplink::VxlanConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub mode: PortMode,
}

impl BridgeConfig {
    pub const DEFAULT_FDB_MAX_AGE_SECS: u64 = 300;
    pub const DEFAULT_FDB_MAX_ENTRIES: usize = 65_536;
    pub const DEFAULT_MAX_MACS_PER_PORT: u32 = 4096;
    /// 64 MiB: enough for 4096-deep fill rings on a handful of busy ports.
    pub const DEFAULT_UMEM_FRAMES: u32 = 32_768;
    /// Deep rings ride out the forwarder's scheduling gaps on a busy host: the 64-byte
    /// no-drop rate went from ~255 to ~677 kpps going from 1024 to 4096 (bench/README.md).
    pub const DEFAULT_RING_SIZE: u32 = 4096;
    /// Enough for MTU 1500 with room to spare; 4096 doubles the memory for MTUs up to 3822.
    pub const DEFAULT_FRAME_SIZE: u32 = 2048;
    pub const DEFAULT_SPIN_US: u64 = 20;

    /// Reads and validates a config file.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML of this shape, or fails validation.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    ///
    /// # Errors
    /// As [`BridgeConfig::from_file`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })?;
        let invalid = |m: String| Err(ConfigError::Invalid(m));

        let age = file
            .fdb_max_age_secs
            .unwrap_or(Self::DEFAULT_FDB_MAX_AGE_SECS);
        if !(1..=1_000_000).contains(&age) {
            return invalid(format!(
                "fdb_max_age_secs = {age}: must be between 1 and 1000000"
            ));
        }
        let entries = file
            .fdb_max_entries
            .unwrap_or(Self::DEFAULT_FDB_MAX_ENTRIES);
        if !(1..=16_777_216).contains(&entries) {
            return invalid(format!(
                "fdb_max_entries = {entries}: must be between 1 and 16777216"
            ));
        }
        let per_port = file
            .max_macs_per_port
            .unwrap_or(Self::DEFAULT_MAX_MACS_PER_PORT);
        if per_port == 0 {
            return invalid("max_macs_per_port = 0: must be at least 1".into());
        }
        let ring = file.ring_size.unwrap_or(Self::DEFAULT_RING_SIZE);
        if !ring.is_power_of_two() || !(64..=16_384).contains(&ring) {
            return invalid(format!(
                "ring_size = {ring}: must be a power of two between 64 and 16384"
            ));
        }
        let frames = file.umem_frames.unwrap_or(Self::DEFAULT_UMEM_FRAMES);
        if !(1024..=1_048_576).contains(&frames) {
            return invalid(format!(
                "umem_frames = {frames}: must be between 1024 and 1048576"
            ));
        }
        let frame_size = file.frame_size.unwrap_or(Self::DEFAULT_FRAME_SIZE);
        if !matches!(frame_size, 2048 | 4096) {
            return invalid(format!(
                "frame_size = {frame_size}: must be 2048 (MTU up to {}) or 4096 (MTU up to {})",
                crate::port::max_mtu(2048),
                crate::port::max_mtu(4096)
            ));
        }
        let spin = file.spin_us.unwrap_or(Self::DEFAULT_SPIN_US);
        if spin > 1_000_000 {
            return invalid(format!(
                "spin_us = {spin}: must be at most 1000000 (one second)"
            ));
        }
        let metrics_listen = match &file.metrics_listen {
            None => None,
            Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|_| {
                ConfigError::Invalid(format!("metrics_listen = {text:?}: expected an address and port like \"127.0.0.1:9469\""))
            })?),
        };
        let mut domain_names = HashSet::new();
        let mut port_names = HashSet::new();
        let mut domains = Vec::with_capacity(file.bridge_domain.len());
        for d in &file.bridge_domain {
            let mut ports = Vec::with_capacity(d.ports.len());
            if d.name.is_empty() {
                return invalid("a bridge_domain has an empty name".into());
            }
            if !domain_names.insert(d.name.as_str()) {
                return invalid(format!("bridge_domain \"{}\" is defined twice", d.name));
            }
            for port in &d.ports {
                let (p, mode) = match port {
                    PortFile::Name(name) => (name, PortMode::default()),
                    PortFile::Table(t) => (
                        &t.name,
                        VlanSpec {
                            vlan: t.vlan,
                            trunk: t.trunk.clone(),
                            native: t.native,
                        }
                        .to_mode()
                        .map_err(|e| {
                            ConfigError::Invalid(format!(
                                "bridge_domain \"{}\": port \"{}\": {e}",
                                d.name, t.name
                            ))
                        })?,
                    ),
                };
                if let Err(e) = check_interface_name(p) {
                    return invalid(format!("bridge_domain \"{}\": port {e}", d.name));
                }
                if !port_names.insert(p.as_str()) {
                    return invalid(format!(
                        "port \"{p}\" is listed twice; a port belongs to one bridge domain"
                    ));
                }
                ports.push(PortConfig {
                    name: p.clone(),
                    mode,
                });
            }
            let vxlan = d
                .vxlan
                .as_ref()
                .map(|v| {
                    let v = v.validate().map_err(|e| {
                        ConfigError::Invalid(format!("bridge_domain \"{}\": vxlan: {e}", d.name))
                    })?;
                    Ok(v)
                })
                .transpose()?;
            domains.push(DomainConfig {
                name: d.name.clone(),
                ports,
                vxlan,
            });
        }
        let mut devices = HashSet::new();
        let mut vnis = HashSet::new();
        for (d, v) in domains.iter().filter_map(|d| Some((d, d.vxlan.as_ref()?))) {
            if port_names.contains(v.device.as_str()) || !devices.insert(v.device.as_str()) {
                return invalid(format!(
                    "bridge_domain \"{}\": vxlan device \"{}\" is also a port or another domain's device",
                    d.name, v.device
                ));
            }
            if !vnis.insert((v.vni, v.port)) {
                return invalid(format!(
                    "bridge_domain \"{}\": vxlan vni {} on UDP port {} is used by another domain",
                    d.name, v.vni, v.port
                ));
            }
        }
        if port_names.len() + devices.len() > bridge_common::maps::MAX_PORTS as usize {
            return invalid(format!(
                "{} ports configured; at most {} are supported",
                port_names.len() + devices.len(),
                bridge_common::maps::MAX_PORTS
            ));
        }
        Ok(Self {
            fdb_max_age: Duration::from_secs(age),
            fdb_max_entries: entries,
            max_macs_per_port: per_port,
            umem_frames: frames,
            frame_size,
            ring_size: ring,
            spin: Duration::from_micros(spin),
            follow_wakeups: file.follow_wakeups.unwrap_or(true),
            tx_thread: file.tx_thread.unwrap_or(true),
            fast_path: file.fast_path.unwrap_or(true),
            tcp_handoff: file.tcp_handoff.unwrap_or(true),
            metrics_listen,
            domains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        BridgeConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = BridgeConfig::from_toml(
            "[[bridge_domain]]\nname = \"vwire\"\nports = [\"a\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(c.fdb_max_age, Duration::from_secs(300));
        assert_eq!(c.umem_frames, BridgeConfig::DEFAULT_UMEM_FRAMES);
        assert_eq!(c.frame_size, 2048);
        assert!(c.follow_wakeups);
        assert!(c.tx_thread);
        assert!(c.fast_path && c.tcp_handoff);
        assert_eq!(
            c.domains,
            vec![DomainConfig {
                name: "vwire".into(),
                ports: ["a", "b"]
                    .map(|name| PortConfig {
                        name: name.into(),
                        mode: PortMode::default()
                    })
                    .to_vec(),
                vxlan: None,
            }]
        );
    }

    #[test]
    fn every_knob_is_read() {
        let c = BridgeConfig::from_toml(
            "fdb_max_age_secs = 10\nfdb_max_entries = 5\numem_frames = 2048\nframe_size = 4096\nring_size = 256\nspin_us = 0\nfollow_wakeups = false\ntx_thread = false\nfast_path = false\ntcp_handoff = false\n\
             [[bridge_domain]]\nname = \"x\"\nports = [\"a\"]\n[[bridge_domain]]\nname = \"y\"\nports = [\"b\"]\n",
        )
        .unwrap();
        assert_eq!(
            (
                c.fdb_max_age,
                c.fdb_max_entries,
                c.umem_frames,
                c.frame_size,
                c.ring_size,
                c.spin,
                c.domains.len()
            ),
            (
                Duration::from_secs(10),
                5,
                2048,
                4096,
                256,
                Duration::ZERO,
                2
            )
        );
        assert!(!c.follow_wakeups && !c.tx_thread && !c.fast_path && !c.tcp_handoff);
    }

    #[test]
    fn port_vlan_modes() {
        let c = BridgeConfig::from_toml(
            "[[bridge_domain]]\nname = \"x\"\nports = [\"a\", { name = \"b\", vlan = 100 }, { name = \"c\", trunk = [100, 200], native = 1 }]\n",
        )
        .unwrap();
        let modes: Vec<String> = c.domains[0]
            .ports
            .iter()
            .map(|p| p.mode.to_string())
            .collect();
        assert_eq!(
            modes,
            [
                "access vlan 1",
                "access vlan 100",
                "trunk [100,200] native 1"
            ]
        );
        let e = err("[[bridge_domain]]\nname = \"x\"\nports = [{ name = \"b\", vlan = 5000 }]");
        assert!(e.contains("port \"b\": vlan 5000 is not a VLAN ID"), "{e}");
        let e = err(
            "[[bridge_domain]]\nname = \"x\"\nports = [{ name = \"b\", vlan = 5, trunk = [6] }]",
        );
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn vxlan_tables_are_read_and_checked() {
        let c = BridgeConfig::from_toml(
            "[[bridge_domain]]\nname = \"vwire\"\nports = [\"a\"]\n\
             vxlan = { vni = 100, local = \"10.99.0.1\", peers = [\"10.99.0.2\"], underlay = \"ul0\" }\n\
             [[bridge_domain]]\nname = \"other\"\nports = [\"b\"]\n",
        )
        .unwrap();
        let v = c.domains[0].vxlan.as_ref().unwrap();
        assert_eq!(
            (v.vni, v.device.as_str(), v.port, v.underlay.as_deref()),
            (100, "vx100", 4789, Some("ul0"))
        );
        assert_eq!(c.domains[1].vxlan, None);
        let e = err("[[bridge_domain]]\nname = \"x\"\nvxlan = { vni = 0 }");
        assert!(e.contains("bridge_domain \"x\": vxlan: vni 0"), "{e}");
        let e = err("[[bridge_domain]]\nname = \"x\"\nports = [\"vx5\"]\nvxlan = { vni = 5 }");
        assert!(e.contains("vxlan device \"vx5\" is also a port"), "{e}");
        let e = err(
            "[[bridge_domain]]\nname = \"x\"\nvxlan = { vni = 5 }\n[[bridge_domain]]\nname = \"y\"\nvxlan = { vni = 5, device = \"vy\" }",
        );
        assert!(
            e.contains("vni 5 on UDP port 4789 is used by another domain"),
            "{e}"
        );
        let e = err("[[bridge_domain]]\nname = \"x\"\nvxlan = { vni = 5, peer = [] }");
        assert!(e.contains("unknown field `peer`"), "{e}");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        assert!(
            BridgeConfig::from_toml("").unwrap().domains.is_empty(),
            "ports may all come from the API"
        );
        assert!(err("fdb_max_age_secs = 0\n[[bridge_domain]]\nname=\"a\"")
            .contains("fdb_max_age_secs = 0"));
        assert!(err("ring_size = 1000\n[[bridge_domain]]\nname=\"a\"").contains("power of two"));
        assert!(err("umem_frames = 10\n[[bridge_domain]]\nname=\"a\"").contains("umem_frames = 10"));
        assert!(err("frame_size = 3000\n[[bridge_domain]]\nname=\"a\"")
            .contains("frame_size = 3000: must be 2048 (MTU up to 1774) or 4096 (MTU up to 3822)"));
        assert!(
            err("[[bridge_domain]]\nname=\"a\"\n[[bridge_domain]]\nname=\"a\"")
                .contains("defined twice")
        );
        assert!(err("[[bridge_domain]]\nname=\"a\"\nports=[\"p\"]\n[[bridge_domain]]\nname=\"b\"\nports=[\"p\"]").contains("listed twice"));
        assert!(
            err("[[bridge_domain]]\nname=\"a\"\nports=[\"a-name-that-is-too-long\"]")
                .contains("not a valid interface name")
        );
        assert!(
            err("metrics_listen = \"localhost\"\n[[bridge_domain]]\nname=\"a\"")
                .contains("metrics_listen")
        );
        assert!(err("typo = 1\n[[bridge_domain]]\nname=\"a\"").contains("unknown field `typo`"));
        assert!(err("[[bridge_domain]]\nname=\"a\"\nports=\"p\"").contains("invalid type"));
    }
}
