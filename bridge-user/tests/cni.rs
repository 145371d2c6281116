//! `vwire-cni` driven exactly as a container runtime drives it: `CNI_*` in the environment,
//! the network config on stdin, the result or error JSON on stdout. Network namespaces stand
//! in for pods; a real daemon runs in a "node" namespace, and the plugin runs there too
//! (`ip netns exec NODE vwire-cni`), since host ends live where the daemon is.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{ns_run, output, privileged, run, wait_until};
use serde_json::{json, Value};

const CNI: &str = env!("CARGO_BIN_EXE_vwire-cni");
const VWIRE: &str = env!("CARGO_BIN_EXE_vwire");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A node namespace running the daemon, and pod namespaces; all deleted on drop.
struct Node {
    prefix: String,
    node_ns: String,
    pods: Vec<String>,
    dir: PathBuf,
    daemon: Option<Child>,
}

/// What one plugin run returned.
#[derive(Debug)]
struct CniOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl CniOutput {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}\nstderr: {}", self.stdout, self.stderr)
        })
    }

    /// Asserts success and returns the parsed stdout (Null when empty).
    fn success(&self, what: &str) -> Value {
        assert!(
            self.ok,
            "{what} failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with `code` whose message contains `needle`.
    fn error(&self, what: &str, code: u64, needle: &str) -> Value {
        assert!(!self.ok, "{what} should fail but printed {}", self.stdout);
        let e = self.json();
        assert_eq!(e["code"], code, "{what}: {e}");
        assert!(e["cniVersion"].is_string(), "{what}: {e}");
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(text.contains(needle), "{what}: {needle:?} not in {e}");
        e
    }
}

impl Node {
    /// A node namespace with a running daemon whose config has no ports.
    fn start(tag: &str) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // `vw-<pid>-` is the prefix the shared harness sweeps after crashed runs.
        let prefix = format!("vw-{}-{n}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut node = Node {
            node_ns: format!("{prefix}-node"),
            prefix,
            pods: Vec::new(),
            dir,
            daemon: None,
        };
        add_ns(&node.node_ns);
        // As in the DaemonSet's ConfigMap: one domain, no ports; pods arrive through the CNI.
        std::fs::write(
            node.dir.join("vwire.toml"),
            "fdb_max_age_secs = 300\n\n[[bridge_domain]]\nname = \"vwire\"\n",
        )
        .expect("write config");
        let log = std::fs::File::create(node.dir.join("vwire.log")).expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.node_ns, VWIRE, "run", "--config"])
            .arg(node.dir.join("vwire.toml"))
            .arg("--socket")
            .arg(node.socket())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the closure touches no shared state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        node.daemon = Some(cmd.spawn().expect("spawn vwire"));
        let socket = node.socket();
        let ready = wait_until(Duration::from_secs(15), || {
            output(
                VWIRE,
                &[
                    "show",
                    "bridge-domains",
                    "--socket",
                    &socket.to_string_lossy(),
                ],
            )
            .status
            .success()
        });
        assert!(ready, "daemon not ready\n--- log ---\n{}", node.log());
        node
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("vwire.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vwire.log")).unwrap_or_default()
    }

    /// A fresh pod namespace; returns its name.
    fn pod(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        add_ns(&ns);
        self.pods.push(ns.clone());
        ns
    }

    /// The network config of the sample NetworkAttachmentDefinition, plus `extra` keys.
    fn conf(&self, extra: &Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.1.0",
            "name": "vwire",
            "type": "vwire-cni",
            "socket": self.socket(),
        });
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    /// Runs the plugin in the node namespace as a runtime does.
    fn cni(&self, command: &str, container: &str, pod_ns: &str, conf: &Value) -> CniOutput {
        self.cni_env(command, container, pod_ns, conf, &[])
    }

    fn cni_env(
        &self,
        command: &str,
        container: &str,
        pod_ns: &str,
        conf: &Value,
        extra_env: &[(&str, &str)],
    ) -> CniOutput {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node_ns, CNI])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", format!("/var/run/netns/{pod_ns}"))
            .env("CNI_IFNAME", "nsm-1")
            .env("CNI_PATH", "/opt/cni/bin")
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAME={pod_ns}"))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vwire-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write config");
        let out = child.wait_with_output().expect("wait vwire-cni");
        CniOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Links in a namespace other than `lo`.
    fn links(ns: &str) -> Vec<String> {
        ns_run(ns, &["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
            .filter(|n| n != "lo")
            .collect()
    }

    /// `(port, domain, mode)` for every port the daemon has.
    fn ports(&self) -> Vec<(String, String, String)> {
        let out = run(
            VWIRE,
            &[
                "show",
                "bridge-domains",
                "--json",
                "--socket",
                &self.socket().to_string_lossy(),
            ],
        );
        let v: Value = serde_json::from_str(&out).expect("json");
        let mut ports = Vec::new();
        for d in v["bridge_domains"].as_array().expect("domains") {
            for p in d["ports"].as_array().expect("ports") {
                ports.push((
                    p["name"].as_str().unwrap_or("").to_owned(),
                    d["name"].as_str().unwrap_or("").to_owned(),
                    p["mode"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        ports
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.daemon.take() {
            common::terminate_child(child, libc::SIGTERM);
        }
        for ns in self.pods.iter().chain(std::iter::once(&self.node_ns)) {
            let _ = output("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn add_ns(ns: &str) {
    let _ = output("ip", &["netns", "del", ns]);
    run("ip", &["netns", "add", ns]);
    #[rustfmt::skip]
    ns_run(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
    ns_run(ns, &["ip", "link", "set", "lo", "up"]);
}

fn ping(ns: &str, ip: &str) -> bool {
    common::ping(ns, ip, 2).status.success()
}

#[test]
fn add_two_pods_ping_check_del_twice() {
    if !privileged("add_two_pods_ping_check_del_twice") {
        return;
    }
    let mut node = Node::start("cniadd");
    let (a, b) = (node.pod("a"), node.pod("b"));
    let conf_a = node.conf(&json!({
        "runtimeConfig": {"ips": ["172.16.2.1/24"], "mac": "02:00:00:00:21:01"}
    }));
    let conf_b = node.conf(&json!({
        "runtimeConfig": {"ips": ["172.16.2.2/24"], "mac": "02:00:00:00:21:02"}
    }));
    let result = node.cni("ADD", "ctr-a", &a, &conf_a).success("ADD a");
    assert_eq!(result["cniVersion"], "1.1.0", "{result}");
    let host_a = result["interfaces"][0]["name"].as_str().expect("host end");
    assert!(host_a.starts_with("vw") && host_a.len() == 13, "{result}");
    assert_eq!(
        result["interfaces"][1],
        json!({"name": "nsm-1", "mac": "02:00:00:00:21:01", "mtu": 1500,
               "sandbox": format!("/var/run/netns/{a}")}),
        "{result}"
    );
    assert_eq!(
        result["ips"],
        json!([{"address": "172.16.2.1/24", "interface": 1}])
    );
    let result_b = node.cni("ADD", "ctr-b", &b, &conf_b).success("ADD b");
    let host_b = result_b["interfaces"][0]["name"]
        .as_str()
        .expect("host end");

    // The pod end as the seed shows it, with TX checksum offload off and GRO on.
    let addr = ns_run(&a, &["ip", "addr", "show", "nsm-1"]);
    assert!(
        addr.contains("inet 172.16.2.1/24 brd 172.16.2.255"),
        "{addr}"
    );
    assert!(
        addr.contains("state UP") && addr.contains("mtu 1500"),
        "{addr}"
    );
    let features = ns_run(&a, &["ethtool", "-k", "nsm-1"]);
    assert!(features.contains("tx-checksumming: off"), "{features}");
    assert!(
        features.contains("tx-vlan-offload: off"),
        "a pod's VLAN interface must write its tag into the frame: {features}"
    );
    assert!(
        features.contains("generic-receive-offload: on"),
        "{features}"
    );
    let mut ports = node.ports();
    ports.sort();
    let mut want = vec![
        (
            host_a.to_owned(),
            "vwire".to_owned(),
            "access vlan 1".to_owned(),
        ),
        (
            host_b.to_owned(),
            "vwire".to_owned(),
            "access vlan 1".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(ports, want);

    assert!(ping(&a, "172.16.2.2"), "a -> b\n{}", node.log());
    assert!(ping(&b, "172.16.2.1"), "b -> a\n{}", node.log());
    let arp = ns_run(&a, &["ip", "neigh", "show", "dev", "nsm-1"]);
    assert!(arp.contains("02:00:00:00:21:02"), "{arp}");

    let mut prev = conf_a.clone();
    prev["prevResult"] = result.clone();
    node.cni("CHECK", "ctr-a", &a, &prev).success("CHECK a");
    node.cni("CHECK", "ctr-b", &b, &conf_b).success("CHECK b");
    // CHECK notices drift: an address gone, or a port detached.
    ns_run(&b, &["ip", "addr", "del", "172.16.2.2/24", "dev", "nsm-1"]);
    node.cni("CHECK", "ctr-b", &b, &conf_b).error(
        "CHECK b without its address",
        102,
        "lacks 172.16.2.2/24",
    );

    node.cni("DEL", "ctr-a", &a, &conf_a).success("DEL a");
    assert!(Node::links(&node.node_ns).iter().all(|l| l != host_a));
    assert!(Node::links(&a).is_empty(), "{:?}", Node::links(&a));
    assert!(node.ports().iter().all(|p| p.0 != host_a));
    node.cni("CHECK", "ctr-a", &a, &conf_a)
        .error("CHECK after DEL", 102, "does not exist");
    node.cni("DEL", "ctr-a", &a, &conf_a).success("DEL a again");

    // The pod's namespace is gone before DEL (the veth died with it): DEL still succeeds,
    // twice, and the daemon has dropped the vanished port.
    run("ip", &["netns", "del", &b]);
    node.cni("DEL", "ctr-b", &b, &conf_b)
        .success("DEL b, netns gone");
    node.cni("DEL", "ctr-b", &b, &conf_b).success("DEL b again");
    assert!(Node::links(&node.node_ns).is_empty());
    assert!(
        wait_until(Duration::from_secs(5), || node.ports().is_empty()),
        "{:?}",
        node.ports()
    );
}

#[test]
fn vlan_100_variant_isolates_from_other_vlans() {
    if !privileged("vlan_100_variant_isolates_from_other_vlans") {
        return;
    }
    let mut node = Node::start("cnivlan");
    let (a, b, c) = (node.pod("a"), node.pod("b"), node.pod("c"));
    let conf =
        |vlan: u16, ip: &str| node.conf(&json!({"wire": "vwire", "vlan": vlan, "ips": [ip]}));
    node.cni("ADD", "ctr-a", &a, &conf(100, "172.16.2.1/24"))
        .success("ADD a");
    node.cni("ADD", "ctr-b", &b, &conf(100, "172.16.2.2/24"))
        .success("ADD b");
    // CNI_ARGS IP= overrides the config's address.
    node.cni_env(
        "ADD",
        "ctr-c",
        &c,
        &conf(200, "172.16.2.9/24"),
        &[("CNI_ARGS", "IgnoreUnknown=1;IP=172.16.2.3/24")],
    )
    .success("ADD c");
    let modes: Vec<String> = node.ports().into_iter().map(|p| p.2).collect();
    assert_eq!(
        modes.iter().filter(|m| *m == "access vlan 100").count(),
        2,
        "{modes:?}"
    );
    assert!(ping(&a, "172.16.2.2"), "same VLAN\n{}", node.log());
    assert!(!ping(&a, "172.16.2.3"), "VLAN 100 reached VLAN 200");
    node.cni("CHECK", "ctr-b", &b, &conf(100, "172.16.2.2/24"))
        .success("CHECK b");
    node.cni("CHECK", "ctr-b", &b, &conf(200, "172.16.2.2/24"))
        .error("CHECK with the wrong VLAN", 102, "expected access vlan 200");
    for (ctr, ns) in [("ctr-a", &a), ("ctr-b", &b), ("ctr-c", &c)] {
        node.cni("DEL", ctr, ns, &conf(100, "172.16.2.1/24"))
            .success("DEL");
    }
    assert!(Node::links(&node.node_ns).is_empty());
}

#[test]
fn bad_config_returns_cni_error_and_leaves_nothing() {
    if !privileged("bad_config_returns_cni_error_and_leaves_nothing") {
        return;
    }
    let mut node = Node::start("cnibad");
    let p = node.pod("p");
    let mut no_name = node.conf(&json!({"ips": ["172.16.2.1/24"]}));
    no_name.as_object_mut().expect("object").remove("name");
    let cases = [
        (no_name, 7, "no name"),
        (node.conf(&json!({"vlan": 4095})), 7, "vlan 4095"),
        (
            node.conf(&json!({"ips": ["172.16.2.300/24"]})),
            7,
            "172.16.2.300",
        ),
        (
            node.conf(&json!({"mac": "01:00:5e:00:00:01"})),
            7,
            "not a unicast",
        ),
        (
            node.conf(&json!({"cniVersion": "0.1.0"})),
            1,
            "not supported",
        ),
        // Fails after the veth exists: the daemon is not there. The veth must go.
        (
            node.conf(&json!({"ips": ["172.16.2.1/24"], "socket": "/nonexistent/vwire.sock"})),
            11,
            "not reachable",
        ),
    ];
    for (conf, code, needle) in cases {
        node.cni("ADD", "ctr-p", &p, &conf)
            .error(&format!("ADD {conf}"), code, needle);
        assert!(
            Node::links(&node.node_ns).is_empty(),
            "left on the node after {conf}: {:?}",
            Node::links(&node.node_ns)
        );
        assert!(Node::links(&p).is_empty(), "left in the pod after {conf}");
        assert!(node.ports().is_empty());
    }
    // The pod already has an nsm-1: creation fails atomically, nothing is made.
    // (A veth: this kernel has no dummy driver.)
    #[rustfmt::skip]
    ns_run(&p, &["ip", "link", "add", "nsm-1", "type", "veth", "peer", "name", "other"]);
    node.cni("ADD", "ctr-p", &p, &node.conf(&json!({}))).error(
        "ADD over an existing nsm-1",
        100,
        "exists already",
    );
    assert!(Node::links(&node.node_ns).is_empty());
    let mut left = Node::links(&p);
    left.sort();
    assert_eq!(left, ["nsm-1", "other"]);
    // A pod namespace that does not exist: code 3, nothing to clean up.
    node.cni("ADD", "ctr-x", "vw-no-such-ns", &node.conf(&json!({})))
        .error("ADD into a missing netns", 3, "CNI_NETNS");
    // Missing environment: code 4.
    let out = node.cni_env(
        "ADD",
        "ctr-p",
        &p,
        &node.conf(&json!({})),
        &[("CNI_IFNAME", "")],
    );
    out.error("ADD without CNI_IFNAME", 4, "CNI_IFNAME");
}

#[test]
fn status_and_version() {
    if !privileged("status_and_version") {
        return;
    }
    let mut node = Node::start("cnistat");
    let p = node.pod("p");
    let out = node.cni("STATUS", "", &p, &node.conf(&json!({})));
    assert_eq!(out.success("STATUS"), Value::Null, "STATUS prints nothing");
    node.cni(
        "STATUS",
        "",
        &p,
        &node.conf(&json!({"socket": "/nonexistent/vwire.sock"})),
    )
    .error("STATUS without a daemon", 50, "does not answer");
    let v = node
        .cni("VERSION", "", &p, &json!({"cniVersion": "1.0.0"}))
        .success("VERSION");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    // An old config version gets an old result format.
    let old = node.conf(&json!({"cniVersion": "0.3.1", "ips": ["172.16.2.5/24"]}));
    let r = node.cni("ADD", "ctr-old", &p, &old).success("ADD 0.3.1");
    assert_eq!(r["ips"][0]["version"], "4", "{r}");
    node.cni("DEL", "ctr-old", &p, &old).success("DEL 0.3.1");
}

/// The body of the YAML literal block `KEY: |` in `text`, dedented.
fn yaml_block(text: &str, key: &str) -> String {
    let header = format!("{key}: |");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == header)
        .unwrap_or_else(|| panic!("no `{header}`"));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key_indent = indent(lines[start]);
    let body: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > key_indent)
        .copied()
        .collect();
    let strip = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(strip..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configs shipped in deploy/ are ones the plugin and the daemon accept (unprivileged:
/// the schemas cannot check what is inside a NetworkAttachmentDefinition or a ConfigMap).
#[test]
fn shipped_configs_parse() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let read = |p: &str| std::fs::read_to_string(deploy.join(p)).expect(p);
    for (file, key, vlan) in [
        ("samples/network-attachment.yaml", "config", "access vlan 1"),
        (
            "samples/vlan100/network-attachment.yaml",
            "config",
            "access vlan 100",
        ),
        ("base/configmap.yaml", "vwire.conf", "access vlan 1"),
    ] {
        let conf = yaml_block(&read(file), key);
        let att = bridge_user::cni::parse(conf.as_bytes(), "IP=172.16.2.1/24")
            .unwrap_or_else(|e| panic!("{file}: {e}\n{conf}"));
        assert_eq!(att.wire, "vwire", "{file}");
        assert_eq!(att.mode.to_string(), vlan, "{file}");
        assert_eq!(
            att.socket,
            std::path::Path::new(bridge_user::cni::DEFAULT_SOCKET)
        );
    }
    let toml = yaml_block(&read("base/configmap.yaml"), "vwire.toml");
    let config = bridge_user::config::BridgeConfig::from_toml(&toml)
        .unwrap_or_else(|e| panic!("ConfigMap vwire.toml: {e}\n{toml}"));
    assert!(
        config.domains.iter().all(|d| d.ports.is_empty()),
        "static ports in {toml}"
    );
    // The pods' annotations ask for the addresses of the seed.
    for (file, ip) in [
        ("samples/client-a.yaml", "172.16.2.1/24"),
        ("samples/client-b.yaml", "172.16.2.2/24"),
    ] {
        let pod = read(file);
        assert!(
            pod.contains(&format!(r#""interface": "nsm-1", "ips": ["{ip}"]"#)),
            "{pod}"
        );
    }
}
