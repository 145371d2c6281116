//! `vwire-cni`: the CNI 1.1 plugin that gives a pod an interface on a virtual wire.
//!
//! The runtime execs the plugin on the node, in the node's network namespace, where the
//! daemon runs (hostNetwork). ADD creates a veth pair in one netlink request: the host end
//! `vw<11 hex>` here, the peer directly inside the pod's namespace under `CNI_IFNAME` with its
//! MAC and MTU; then, on a thread joined to the pod's namespace, it adds the addresses, turns
//! TX checksum offload off and sets the link up; finally it asks the daemon to attach the host
//! end to the wire (`port_add`). Everything is validated before the first change, and any
//! later failure deletes the veth (which takes its peer along), so a failed ADD leaves nothing.
//!
//! The host end's name is a pure function of `CNI_CONTAINERID` and `CNI_IFNAME`, so DEL needs
//! no state: it asks the daemon to drop the port (an unknown port is fine), then deletes the
//! host end (a missing one is fine, as when the pod's namespace is already gone: a veth dies
//! with its namespace). The daemon also drops ports whose interface vanished on its own, so a
//! DEL while the daemon is down still leaves the node clean.

/// CNI error codes and the error JSON.
pub mod error;

mod config;
mod ethtool;
pub(crate) mod netlink;
mod netns;

use std::{io, net::IpAddr, path::Path};

use bridge_common::wire::MacAddr;
use nix::{
    errno::Errno,
    ifaddrs::getifaddrs,
    net::if_::{if_nametoindex, InterfaceFlags},
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub use config::{
    check_version, parse, requested_version, version_at_least, Attachment, Env, IpConfig,
    DEFAULT_SOCKET, PLUGIN_TYPE, SUPPORTED_VERSIONS,
};
pub use error::{code, CniError};
pub use ethtool::tx_checksum;

use crate::{
    cli::{self, ClientError},
    control::Request,
};
use netlink::{Netlink, VethSpec};

/// The version the error JSON carries when the config names none we can read.
pub const LATEST_VERSION: &str = "1.1.0";
/// Prefix of every host end; the rest is 11 hex digits of a hash.
pub const HOST_PREFIX: &str = "vw";

/// Runs one CNI command. `Ok(Some(json))` goes to stdout; `Ok(None)` prints nothing.
///
/// # Errors
/// A [`CniError`] for the runtime, after undoing any partial change.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let command = env.command.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            "CNI_COMMAND is not set",
            "one of ADD, DEL, CHECK, STATUS, GC, VERSION",
        )
    })?;
    match command {
        "ADD" => add(env, stdin).map(Some),
        "DEL" => del(env, stdin).map(|()| None),
        "CHECK" => check(env, stdin).map(|()| None),
        "STATUS" => status(stdin).map(|()| None),
        // Nothing to collect: a veth dies with its pod's namespace, and the daemon drops
        // ports whose interface vanished.
        "GC" => parse(stdin, "").map(|_| None),
        "VERSION" => Ok(Some(json!({
            "cniVersion": requested_version(stdin).unwrap_or_else(|| LATEST_VERSION.to_owned()),
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not supported"),
            "one of ADD, DEL, CHECK, STATUS, GC, VERSION",
        )),
    }
}

/// The host end's name: `vw` and the first 11 hex digits of
/// SHA-256(`CNI_CONTAINERID` `/` `CNI_IFNAME`); 13 characters, deterministic.
#[must_use]
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{HOST_PREFIX}{}", &hex[..11])
}

/// What the kernel says about one interface in the calling thread's namespace.
#[derive(Debug, Clone, Default)]
struct IfaceState {
    mac: Option<MacAddr>,
    up: bool,
    addrs: Vec<(IpAddr, u8)>,
}

/// Reads an interface's MAC, flags and addresses; `None` if it does not exist.
fn iface_state(name: &str) -> io::Result<Option<IfaceState>> {
    match if_nametoindex(name) {
        Ok(_) => {}
        Err(Errno::ENODEV) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut state = IfaceState::default();
    for ifa in getifaddrs()?.filter(|a| a.interface_name == name) {
        state.up |= ifa.flags.contains(InterfaceFlags::IFF_UP);
        let Some(addr) = ifa.address else { continue };
        let prefix = |mask: Option<nix::sys::socket::SockaddrStorage>, v4: bool| -> u8 {
            let ones = mask.map_or(0, |m| {
                if v4 {
                    m.as_sockaddr_in()
                        .map_or(0, |s| u32::from(s.ip()).count_ones())
                } else {
                    m.as_sockaddr_in6()
                        .map_or(0, |s| u128::from(s.ip()).count_ones())
                }
            });
            u8::try_from(ones).unwrap_or(u8::MAX)
        };
        if let Some(link) = addr.as_link_addr() {
            state.mac = link.addr().map(MacAddr);
        } else if let Some(v4) = addr.as_sockaddr_in() {
            state
                .addrs
                .push((IpAddr::V4(v4.ip()), prefix(ifa.netmask, true)));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            state
                .addrs
                .push((IpAddr::V6(v6.ip()), prefix(ifa.netmask, false)));
        }
    }
    Ok(Some(state))
}

/// Deletes the host end on drop unless disarmed: a failed ADD leaves nothing behind.
struct Undo<'a> {
    host: &'a str,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            let result = Netlink::open().and_then(|mut nl| nl.delete_link(self.host));
            if let Err(e) = result {
                eprintln!(
                    "vwire-cni: cleaning up after a failed ADD: delete {}: {e}",
                    self.host
                );
            }
        }
    }
}

fn daemon_error(what: &str, socket: &Path, e: ClientError) -> CniError {
    match e {
        ClientError::Refused(msg) => CniError::new(
            code::DAEMON_REFUSED,
            format!("{what}: the daemon refused"),
            msg,
        ),
        ClientError::Connect { .. } => CniError::new(
            code::TRY_AGAIN,
            format!(
                "{what}: the vwire daemon is not reachable at {}",
                socket.display()
            ),
            e.to_string(),
        ),
        other => CniError::new(
            code::IO,
            format!("{what}: talking to the daemon"),
            other.to_string(),
        ),
    }
}

fn add(env: &Env, stdin: &[u8]) -> Result<Value, CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns_path = env.netns()?;
    let att = parse(stdin, &env.args)?;
    let host = host_ifname(container_id, ifname);
    let ns = netns::open(netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("cannot open CNI_NETNS {}", netns_path.display()),
            e.to_string(),
        )
    })?;
    let netlink_err = |what: String| move |e: io::Error| CniError::netlink(what, &e);
    let mut nl = Netlink::open().map_err(netlink_err("netlink socket".into()))?;
    nl.create_veth(&VethSpec {
        host: &host,
        peer: ifname,
        peer_netns: std::os::fd::AsFd::as_fd(&ns),
        peer_mac: att.mac,
        mtu: att.mtu,
    })
    .map_err(|e| {
        let what = if e.raw_os_error() == Some(libc::EEXIST) {
            format!("cannot create veth {host} / {ifname}: the host end or the pod's {ifname} exists already")
        } else {
            format!("cannot create veth {host} / {ifname}")
        };
        CniError::netlink(what, &e)
    })?;
    // From here on, any return without disarming deletes the pair.
    let mut undo = Undo {
        host: &host,
        armed: true,
    };
    nl.set_up(&host)
        .map_err(netlink_err(format!("set {host} up")))?;
    let host_state = iface_state(&host)
        .map_err(netlink_err(format!("read {host}")))?
        .unwrap_or_default();
    let pod_state = netns::run_in(&ns, || configure_pod(ifname, &att))
        .map_err(netlink_err(format!("enter {}", netns_path.display())))??;
    cli::request(
        &att.socket,
        &Request::PortAdd {
            name: host.clone(),
            domain: att.wire.clone(),
            vlan: att.vlan.vlan,
            trunk: att.vlan.trunk.clone(),
            native: att.vlan.native,
        },
    )
    .map_err(|e| {
        daemon_error(
            &format!("attach {host} to wire {}", att.wire),
            &att.socket,
            e,
        )
    })?;
    undo.armed = false;
    Ok(add_result(
        &att,
        &host,
        host_state.mac,
        ifname,
        pod_state.mac,
        netns_path,
    ))
}

/// In the pod's namespace: addresses, TX checksum and VLAN offload off, GRO on, link up.
fn configure_pod(ifname: &str, att: &Attachment) -> Result<IfaceState, CniError> {
    let mut nl = Netlink::open().map_err(|e| CniError::netlink("netlink socket in the pod", &e))?;
    let index = if_nametoindex(ifname)
        .map_err(|e| CniError::netlink(format!("find {ifname} in the pod"), &e.into()))?;
    ethtool::set_tx_checksum(ifname, false)
        .map_err(|e| CniError::netlink(format!("turn TX checksum offload off on {ifname}"), &e))?;
    // So that a VLAN interface in the pod writes its tag into the frame, where the bridge
    // sees it (see `ethtool`).
    ethtool::set_tx_vlan_offload_off(ifname)
        .map_err(|e| CniError::netlink(format!("turn TX VLAN offload off on {ifname}"), &e))?;
    // GRO on lets the host end take XDP-redirected frames, so the daemon's fast path carries
    // this pod's known unicast. Without it the pod is still on the wire, through the
    // forwarder: not worth failing the pod for.
    let _ = ethtool::set_gro(ifname, true);
    for ip in &att.ips {
        nl.add_address(index, ip.addr, ip.prefix)
            .map_err(|e| CniError::netlink(format!("add {} to {ifname}", ip.cidr()), &e))?;
    }
    nl.set_up(ifname)
        .map_err(|e| CniError::netlink(format!("set {ifname} up"), &e))?;
    iface_state(ifname)
        .map_err(|e| CniError::netlink(format!("read {ifname}"), &e))?
        .ok_or_else(|| CniError::new(code::NETLINK, format!("{ifname} vanished"), ""))
}

/// The ADD result in the format of the requested version.
fn add_result(
    att: &Attachment,
    host: &str,
    host_mac: Option<MacAddr>,
    ifname: &str,
    pod_mac: Option<MacAddr>,
    netns: &Path,
) -> Value {
    let version = att.cni_version.as_str();
    let mac = |m: Option<MacAddr>| m.map(|m| m.to_string()).unwrap_or_default();
    let mut pod_if = json!({
        "name": ifname,
        "mac": mac(pod_mac),
        "sandbox": netns.display().to_string(),
    });
    if version_at_least(version, 1, 1) {
        pod_if["mtu"] = json!(att.mtu);
    }
    let ips: Vec<Value> = att
        .ips
        .iter()
        .map(|ip| {
            let mut v = json!({ "address": ip.cidr(), "interface": 1 });
            if let Some(gw) = ip.gateway {
                v["gateway"] = json!(gw.to_string());
            }
            if !version_at_least(version, 1, 0) {
                v["version"] = json!(if ip.addr.is_ipv4() { "4" } else { "6" });
            }
            v
        })
        .collect();
    let dns = if att.dns.is_null() {
        json!({})
    } else {
        att.dns.clone()
    };
    json!({
        "cniVersion": version,
        "interfaces": [{ "name": host, "mac": mac(host_mac) }, pod_if],
        "ips": ips,
        "dns": dns,
    })
}

/// The socket of a config DEL cannot fully parse: DEL must clean up even then.
fn lenient_socket(stdin: &[u8]) -> std::path::PathBuf {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("socket")?.as_str().map(std::path::PathBuf::from))
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

fn del(env: &Env, stdin: &[u8]) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let socket = match parse(stdin, &env.args) {
        Ok(att) => att.socket,
        Err(e) if e.code == code::INCOMPATIBLE_VERSION => return Err(e),
        Err(_) => lenient_socket(stdin),
    };
    let host = host_ifname(container_id, ifname);
    match cli::request(&socket, &Request::PortDel { name: host.clone() }) {
        Ok(_) => {}
        Err(ClientError::Refused(msg)) if msg.contains("no such port") => {}
        // Deleting the interface below makes a live daemon drop the port by itself.
        Err(e) => eprintln!("vwire-cni: DEL: port_del {host}: {e}; deleting the veth anyway"),
    }
    let mut nl = Netlink::open().map_err(|e| CniError::netlink("netlink socket", &e))?;
    match nl.delete_link(&host) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(CniError::netlink(format!("delete {host}"), &e)),
    }
}

fn check_failed(msg: String) -> CniError {
    CniError::new(code::CHECK_FAILED, msg, "")
}

fn check(env: &Env, stdin: &[u8]) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns_path = env.netns()?;
    let att = parse(stdin, &env.args)?;
    if !version_at_least(&att.cni_version, 0, 4) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs cniVersion 0.4.0 or later, not {}",
                att.cni_version
            ),
            "",
        ));
    }
    let host = host_ifname(container_id, ifname);
    // The MAC to expect: the configured one, else the one ADD reported in prevResult.
    let prev_mac = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| {
        v.get("prevResult")?
            .get("interfaces")?
            .as_array()?
            .iter()
            .find(|i| {
                i.get("name").and_then(Value::as_str) == Some(ifname) && i.get("sandbox").is_some()
            })?
            .get("mac")?
            .as_str()?
            .parse::<MacAddr>()
            .ok()
    });
    let expected_mac = att.mac.or(prev_mac);

    let host_state = iface_state(&host)
        .map_err(|e| CniError::netlink(format!("read {host}"), &e))?
        .ok_or_else(|| check_failed(format!("the host end {host} does not exist")))?;
    if !host_state.up {
        return Err(check_failed(format!("the host end {host} is down")));
    }
    let ns = netns::open(netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("cannot open CNI_NETNS {}", netns_path.display()),
            e.to_string(),
        )
    })?;
    let (pod, csum) = netns::run_in(&ns, || (iface_state(ifname), tx_checksum(ifname)))
        .map_err(|e| CniError::netlink(format!("enter {}", netns_path.display()), &e))?;
    let pod = pod
        .map_err(|e| CniError::netlink(format!("read {ifname} in the pod"), &e))?
        .ok_or_else(|| check_failed(format!("{ifname} does not exist in the pod")))?;
    if !pod.up {
        return Err(check_failed(format!("{ifname} is down")));
    }
    if let Some(want) = expected_mac {
        if pod.mac != Some(want) {
            return Err(check_failed(format!(
                "{ifname} has MAC {}, expected {want}",
                pod.mac.map_or_else(|| "none".to_owned(), |m| m.to_string())
            )));
        }
    }
    for ip in &att.ips {
        if !pod.addrs.contains(&(ip.addr, ip.prefix)) {
            return Err(check_failed(format!("{ifname} lacks {}", ip.cidr())));
        }
    }
    if csum.unwrap_or(true) {
        return Err(check_failed(format!(
            "TX checksum offload is on for {ifname}"
        )));
    }
    let domains = cli::request(&att.socket, &Request::ShowBridgeDomains {})
        .map_err(|e| daemon_error("show bridge domains", &att.socket, e))?;
    let want_mode = att.mode.to_string();
    let found = domains
        .get("bridge_domains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| d.get("name").and_then(Value::as_str) == Some(att.wire.as_str()))
        .flat_map(|d| {
            d.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(host.as_str()));
    match found {
        None => Err(check_failed(format!(
            "the daemon has no port {host} on wire {}",
            att.wire
        ))),
        Some(p) if p.get("mode").and_then(Value::as_str) != Some(want_mode.as_str()) => {
            Err(check_failed(format!(
                "port {host} is {}, expected {want_mode}",
                p.get("mode").and_then(Value::as_str).unwrap_or("?")
            )))
        }
        Some(_) => Ok(()),
    }
}

fn status(stdin: &[u8]) -> Result<(), CniError> {
    let att = parse(stdin, "")?;
    cli::request(&att.socket, &Request::ShowBridgeDomains {})
        .map(|_| ())
        .map_err(|e| {
            CniError::new(
                code::UNAVAILABLE,
                format!(
                    "the vwire daemon does not answer at {}",
                    att.socket.display()
                ),
                e.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_deterministic_and_short() {
        let a = host_ifname("0123456789abcdef", "nsm-1");
        assert_eq!(a, host_ifname("0123456789abcdef", "nsm-1"));
        assert_ne!(a, host_ifname("0123456789abcdef", "nsm-2"));
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("vw") && a[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn version_and_unknown_commands() {
        let env = Env {
            command: Some("VERSION".into()),
            ..Env::default()
        };
        let v = run(&env, b"").unwrap().unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("0.4.0")));
        let env = Env {
            command: Some("FROB".into()),
            ..Env::default()
        };
        assert_eq!(run(&env, b"").unwrap_err().code, code::INVALID_ENV);
        let env = Env::default();
        assert_eq!(run(&env, b"").unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn results_follow_the_requested_version() {
        let conf = |v: &str| {
            format!(
                r#"{{"cniVersion":"{v}","name":"vwire","type":"vwire-cni","ips":["172.16.2.1/24"]}}"#
            )
        };
        let mac = Some(MacAddr([2, 0, 0, 0, 0, 1]));
        let att = parse(conf("1.1.0").as_bytes(), "").unwrap();
        let r = add_result(
            &att,
            "vwabc",
            mac,
            "nsm-1",
            mac,
            Path::new("/var/run/netns/x"),
        );
        assert_eq!(
            r["ips"][0],
            json!({"address": "172.16.2.1/24", "interface": 1})
        );
        assert_eq!(r["interfaces"][1]["mtu"], 1500);
        assert_eq!(r["interfaces"][1]["sandbox"], "/var/run/netns/x");
        let att = parse(conf("0.3.1").as_bytes(), "").unwrap();
        let r = add_result(&att, "vwabc", mac, "nsm-1", mac, Path::new("/x"));
        assert_eq!(r["ips"][0]["version"], "4");
        assert!(r["interfaces"][1].get("mtu").is_none());
    }
}
