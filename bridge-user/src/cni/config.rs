//! The network config on stdin and the per-pod values, validated into an [`Attachment`]
//! before anything on the node is touched.
//!
//! Per-pod values override the network config, in this order (first wins):
//! `runtimeConfig.ips` / `runtimeConfig.mac` (what Multus passes when the plugin declares the
//! `ips` and `mac` capabilities), `args.cni.ips` / `args.cni.mac`, then `IP=` / `MAC=` in
//! `CNI_ARGS`. The network config's own `ips` (or `ipam.addresses`) and `mac` come last.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use bridge_common::wire::MacAddr;
use serde::Deserialize;
use serde_json::Value;

use super::error::{code, CniError};
use crate::{control::VlanSpec, port::check_interface_name, vlan::PortMode};

/// Every version whose config and result formats we speak.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The plugin's `type`.
pub const PLUGIN_TYPE: &str = "vwire-cni";
/// The daemon's control socket unless the config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vwire/vwire.sock";
/// The pod end's MTU unless the config says otherwise.
pub const DEFAULT_MTU: u32 = 1500;
/// Largest MTU: a frame must fit a 2048-byte UMEM frame after XDP's 256 bytes of headroom.
pub const MAX_MTU: u32 = 1500;

/// The network config as the runtime passes it; unknown keys are ignored, as the spec allows.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    wire: Option<String>,
    vlan: Option<u16>,
    trunk: Option<Vec<u16>>,
    native: Option<u16>,
    mtu: Option<u32>,
    socket: Option<PathBuf>,
    ips: Option<Vec<String>>,
    mac: Option<String>,
    ipam: Option<Ipam>,
    dns: Option<Value>,
    runtime_config: Option<PodValues>,
    args: Option<ArgsField>,
}

/// Static addressing, handled in-process (no IPAM plugin is executed).
#[derive(Debug, Deserialize)]
struct Ipam {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    addresses: Vec<IpamAddress>,
    #[serde(default)]
    routes: Vec<Value>,
    dns: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct IpamAddress {
    address: String,
    gateway: Option<String>,
}

/// `runtimeConfig` and `args.cni`: the per-pod `ips` and `mac`.
#[derive(Debug, Default, Deserialize)]
struct PodValues {
    ips: Option<Vec<String>>,
    mac: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ArgsField {
    cni: Option<PodValues>,
}

/// One address of the pod interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpConfig {
    pub addr: IpAddr,
    pub prefix: u8,
    pub gateway: Option<IpAddr>,
}

impl IpConfig {
    /// `addr/prefix`.
    #[must_use]
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

/// A validated attachment: what ADD makes and CHECK verifies.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub cni_version: String,
    pub name: String,
    /// The bridge domain.
    pub wire: String,
    pub vlan: VlanSpec,
    pub mode: PortMode,
    pub mtu: u32,
    pub socket: PathBuf,
    pub ips: Vec<IpConfig>,
    pub mac: Option<MacAddr>,
    /// Passed through to the result as is.
    pub dns: Value,
}

/// The `cniVersion` of a config, if it has one, for the error JSON of a failed request.
#[must_use]
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_owned)
}

/// Checks that `version` is one we speak.
///
/// # Errors
/// Code 1, naming the supported versions.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {version:?} is not supported"),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ))
    }
}

/// Whether `version` is at least `major.minor` (versions are checked already).
#[must_use]
pub fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    v >= (major, minor)
}

/// Parses `IP=..;MAC=..` out of `CNI_ARGS`; other keys (`K8S_POD_NAME`, ...) are ignored.
fn cni_args(args: &str) -> PodValues {
    let mut out = PodValues::default();
    for pair in args.split(';') {
        match pair.split_once('=') {
            Some(("IP", v)) => {
                out.ips = Some(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            Some(("MAC", v)) => out.mac = Some(v.trim().to_owned()),
            _ => {}
        }
    }
    out
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, CniError> {
    s.parse()
        .map_err(|_| CniError::config(format!("{field}: {s:?} is not an IP address")))
}

/// Parses `addr/prefix`; the prefix is required, as in the static IPAM plugin.
fn parse_cidr(field: &str, s: &str, gateway: Option<&str>) -> Result<IpConfig, CniError> {
    let bad = || {
        CniError::config(format!(
            "{field}: {s:?} is not an address with a prefix length, like 172.16.2.1/24"
        ))
    };
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max || addr.is_unspecified() || addr.is_multicast() {
        return Err(bad());
    }
    let gateway = gateway.map(|g| parse_ip(field, g)).transpose()?;
    if gateway.is_some_and(|g| g.is_ipv4() != addr.is_ipv4()) {
        return Err(CniError::config(format!(
            "{field}: gateway of {s} is of the other address family"
        )));
    }
    Ok(IpConfig {
        addr,
        prefix,
        gateway,
    })
}

fn parse_mac(field: &str, s: &str) -> Result<MacAddr, CniError> {
    let mac: MacAddr = s
        .parse()
        .map_err(|e| CniError::config(format!("{field}: {s:?}: {e}")))?;
    if !mac.is_valid_source() {
        return Err(CniError::config(format!(
            "{field}: {mac} is not a unicast address"
        )));
    }
    Ok(mac)
}

/// Parses and validates the network config and per-pod values.
///
/// # Errors
/// Code 6 for JSON that does not decode, 1 for an unsupported version, 2 for a field we do
/// not implement, 7 for a bad value; the message names the field.
pub fn parse(stdin: &[u8], cni_args_env: &str) -> Result<Attachment, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "cannot decode the network config on stdin",
            e.to_string(),
        )
    })?;
    let cni_version = conf
        .cni_version
        .ok_or_else(|| CniError::config("the network config has no cniVersion"))?;
    check_version(&cni_version)?;
    let name = conf
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CniError::config("the network config has no name"))?;
    match conf.plugin_type.as_deref() {
        Some(PLUGIN_TYPE) => {}
        other => {
            return Err(CniError::config(format!(
                "type is {other:?}, expected {PLUGIN_TYPE:?}"
            )))
        }
    }
    let wire = conf.wire.unwrap_or_else(|| name.clone());
    if wire.is_empty() {
        return Err(CniError::config("wire is empty"));
    }
    let vlan = VlanSpec {
        vlan: conf.vlan,
        trunk: conf.trunk,
        native: conf.native,
    };
    let mode = vlan.to_mode().map_err(CniError::config)?;
    let mtu = conf.mtu.unwrap_or(DEFAULT_MTU);
    if !(68..=MAX_MTU).contains(&mtu) {
        return Err(CniError::config(format!(
            "mtu {mtu} is out of range (68-{MAX_MTU}; the daemon's frames are 2048 bytes)"
        )));
    }
    let socket = conf.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));

    let mut dns = conf.dns.unwrap_or(Value::Null);
    let mut ips = Vec::new();
    if let Some(ipam) = conf.ipam {
        match ipam.kind.as_deref() {
            None | Some("static") => {}
            Some(other) => {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("ipam.type {other:?} is not supported"),
                    "vwire-cni handles static addresses itself: use ipam.type \"static\" or ips",
                ))
            }
        }
        if !ipam.routes.is_empty() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("ipam.routes {} is not supported", Value::Array(ipam.routes)),
                "a virtual wire is one L2 segment; its subnet route comes with the address",
            ));
        }
        for a in &ipam.addresses {
            ips.push(parse_cidr(
                "ipam.addresses",
                &a.address,
                a.gateway.as_deref(),
            )?);
        }
        if dns.is_null() {
            dns = ipam.dns.unwrap_or(Value::Null);
        }
    }
    let mut mac = None;
    let per_pod = [
        ("runtimeConfig", conf.runtime_config.unwrap_or_default()),
        (
            "args.cni",
            conf.args.and_then(|a| a.cni).unwrap_or_default(),
        ),
        ("CNI_ARGS", cni_args(cni_args_env)),
        (
            "config",
            PodValues {
                ips: conf.ips,
                mac: conf.mac,
            },
        ),
    ];
    let mut pod_ips = None;
    for (source, values) in per_pod {
        if pod_ips.is_none() {
            if let Some(list) = values.ips {
                let field = format!("{source} ips");
                pod_ips = Some(
                    list.iter()
                        .map(|s| parse_cidr(&field, s, None))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
        }
        if mac.is_none() {
            if let Some(m) = values.mac {
                mac = Some(parse_mac(&format!("{source} mac"), &m)?);
            }
        }
    }
    if let Some(list) = pod_ips {
        // Per-pod addresses replace the config's; the config's gateways do not carry over.
        ips = list;
    }
    Ok(Attachment {
        cni_version,
        name,
        wire,
        vlan,
        mode,
        mtu,
        socket,
        ips,
        mac,
        dns,
    })
}

/// The CNI environment variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: String,
    pub path: Option<String>,
}

impl Env {
    /// Reads `CNI_*` from the process environment.
    #[must_use]
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS").unwrap_or_default(),
            path: var("CNI_PATH"),
        }
    }

    /// `CNI_CONTAINERID`, required by ADD, DEL and CHECK.
    ///
    /// # Errors
    /// Code 4 if it is missing.
    pub fn container_id(&self) -> Result<&str, CniError> {
        self.container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID"))
    }

    /// `CNI_IFNAME`, validated as an interface name.
    ///
    /// # Errors
    /// Code 4 if it is missing or not a valid interface name.
    pub fn ifname(&self) -> Result<&str, CniError> {
        let name = self
            .ifname
            .as_deref()
            .ok_or_else(|| missing("CNI_IFNAME"))?;
        check_interface_name(name)
            .map_err(|e| CniError::new(code::INVALID_ENV, "CNI_IFNAME is not valid", e))?;
        Ok(name)
    }

    /// `CNI_NETNS`, required by ADD and CHECK.
    ///
    /// # Errors
    /// Code 4 if it is missing.
    pub fn netns(&self) -> Result<&Path, CniError> {
        self.netns
            .as_deref()
            .map(Path::new)
            .ok_or_else(|| missing("CNI_NETNS"))
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("{var} is not set"),
        "the container runtime must set it for this command",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(r#"{{"cniVersion":"1.1.0","name":"vwire","type":"vwire-cni"{extra}}}"#)
    }

    #[test]
    fn defaults_and_static_ips() {
        let a = parse(conf(r#","ips":["172.16.2.1/24"]"#).as_bytes(), "").unwrap();
        assert_eq!(a.wire, "vwire");
        assert_eq!(a.mode.to_string(), "access vlan 1");
        assert_eq!(a.mtu, 1500);
        assert_eq!(a.socket, Path::new(DEFAULT_SOCKET));
        assert_eq!(a.ips[0].cidr(), "172.16.2.1/24");
        assert_eq!(a.mac, None);
    }

    #[test]
    fn per_pod_values_override_in_order() {
        let c = conf(
            r#","ips":["10.0.0.1/24"],"mac":"02:00:00:00:00:01",
            "runtimeConfig":{"ips":["172.16.2.1/24"]},"args":{"cni":{"mac":"02:00:00:00:00:02","ips":["10.9.9.9/8"]}}"#,
        );
        let a = parse(
            c.as_bytes(),
            "IgnoreUnknown=1;IP=10.1.1.1/24;MAC=02:00:00:00:00:03",
        )
        .unwrap();
        assert_eq!(a.ips[0].cidr(), "172.16.2.1/24");
        assert_eq!(a.mac.unwrap().to_string(), "02:00:00:00:00:02");
        let a = parse(
            conf("").as_bytes(),
            "K8S_POD_NAME=x;IP=10.1.1.1/24,fd00::1/64",
        )
        .unwrap();
        assert_eq!(a.ips.len(), 2);
        assert_eq!(a.ips[1].cidr(), "fd00::1/64");
    }

    #[test]
    fn ipam_static_addresses_and_dns() {
        let c = conf(
            r#","ipam":{"type":"static","addresses":[{"address":"172.16.2.1/24","gateway":"172.16.2.254"}],"dns":{"nameservers":["1.1.1.1"]}}"#,
        );
        let a = parse(c.as_bytes(), "").unwrap();
        assert_eq!(a.ips[0].gateway, Some("172.16.2.254".parse().unwrap()));
        assert_eq!(a.dns["nameservers"][0], "1.1.1.1");
    }

    #[test]
    fn bad_configs_name_the_field_with_a_code() {
        let cases = [
            (
                r#"{"cniVersion":"1.1.0","type":"vwire-cni"}"#.to_owned(),
                7,
                "no name",
            ),
            (conf(r#","vlan":4095"#), 7, "4095"),
            (conf(r#","vlan":0"#), 7, "vlan 0"),
            (conf(r#","ips":["172.16.2.300/24"]"#), 7, "172.16.2.300"),
            (conf(r#","ips":["172.16.2.1"]"#), 7, "prefix length"),
            (conf(r#","mac":"ff:ff:ff:ff:ff:ff""#), 7, "unicast"),
            (conf(r#","mtu":9000"#), 7, "mtu 9000"),
            (conf(r#","ipam":{"type":"host-local"}"#), 2, "host-local"),
            (
                conf(r#","ipam":{"routes":[{"dst":"0.0.0.0/0"}]}"#),
                2,
                "routes",
            ),
            (
                r#"{"cniVersion":"9.9.9","name":"x","type":"vwire-cni"}"#.to_owned(),
                1,
                "9.9.9",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"x","type":"bridge"}"#.to_owned(),
                7,
                "bridge",
            ),
            ("not json".to_owned(), 6, "decode"),
        ];
        for (input, want, needle) in cases {
            let e = parse(input.as_bytes(), "").unwrap_err();
            assert_eq!(e.code, want, "{input}: {e}");
            assert!(e.to_string().contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn versions_compare() {
        assert!(version_at_least("1.1.0", 1, 1));
        assert!(version_at_least("1.0.0", 0, 4));
        assert!(!version_at_least("0.3.1", 0, 4));
        assert_eq!(
            requested_version(conf("").as_bytes()).as_deref(),
            Some("1.1.0")
        );
    }
}
