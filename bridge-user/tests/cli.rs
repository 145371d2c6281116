//! Every `vwire` CLI command against a running daemon, good input and bad: bad input gets a
//! clear error (non-zero exit, `vwire: <message>` on stderr) and changes nothing. Also raw
//! requests on the control socket. Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use common::*;
use support::*;

/// Asserts the daemon refuses `args`, that its message contains every one of `needles`, and
/// that the daemon's state is unchanged.
fn refused(daemon: &Daemon, args: &[&str], needles: &[&str]) {
    let before = state(daemon);
    let message = cli_refused(daemon, args);
    for n in needles {
        assert!(
            message.to_lowercase().contains(&n.to_lowercase()),
            "`vwire {}`: the error {message:?} does not mention {n:?}",
            args.join(" ")
        );
    }
    assert_eq!(
        state(daemon),
        before,
        "`vwire {}` was refused ({message}) but changed the state",
        args.join(" ")
    );
}

/// Asserts the argument parser rejects `args` (mentioning `needle`) and nothing changes.
fn usage_error(daemon: &Daemon, args: &[&str], needle: &str) {
    let before = state(daemon);
    let stderr = cli_usage_error(daemon, args);
    assert!(
        stderr.contains(needle),
        "`vwire {}`: the usage error does not mention {needle:?}:\n{stderr}",
        args.join(" ")
    );
    assert_eq!(
        state(daemon),
        before,
        "`vwire {}` changed the state",
        args.join(" ")
    );
}

/// Sends raw bytes on the control socket, half-closes, and returns the answer line.
fn raw_request(topo: &Topology, bytes: &[u8]) -> String {
    let mut stream =
        UnixStream::connect(topo.socket_path()).expect("connect to the control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    // A daemon that stops reading early (oversized request) may close on us: ignore that.
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // One line: a daemon that closes with our request partly unread makes the kernel report
    // ECONNRESET after its answer, so do not read past the line.
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .expect("read the daemon's answer");
    answer
}

/// Asserts a raw request gets `{"error": "..."}` (mentioning `needle`) and changes nothing.
fn raw_refused(topo: &Topology, daemon: &Daemon, bytes: &[u8], needle: &str) {
    let before = state(daemon);
    let answer = raw_request(topo, bytes);
    let what = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    let value: Value = serde_json::from_str(answer.trim())
        .unwrap_or_else(|e| panic!("answer to {what:?} is not JSON ({e}): {answer:?}"));
    let message = value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("answer to {what:?} is not {{\"error\": ...}}: {value}"));
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "answer to {what:?}: {message:?} does not mention {needle:?}"
    );
    assert_eq!(
        value.as_object().map(|o| o.len()),
        Some(1),
        "only an error in {value}"
    );
    assert!(
        daemon_alive(daemon),
        "daemon died after {what:?}\n{}",
        daemon.log()
    );
    assert_eq!(state(daemon), before, "{what:?} changed the state");
}

fn port_row<'a>(domains: &'a Value, domain: &str) -> Vec<(&'a str, &'a str)> {
    domains["bridge_domains"]
        .as_array()
        .expect("bridge_domains array")
        .iter()
        .find(|d| d["name"] == domain)
        .unwrap_or_else(|| panic!("no domain {domain}: {domains}"))["ports"]
        .as_array()
        .expect("ports array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or(""),
                p["mode"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

/// Lets the kernel finish releasing a just-deleted port's AF_XDP binding. A re-add right after
/// `port del` is refused with EBUSY (see `port_can_be_re_added_right_away`); this test is about
/// the other commands, so it waits.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn port_can_be_re_added_right_away() {
    require_privileged!("port_can_be_re_added_right_away");
    const TEST_ID: u8 = 40;
    let topo = Topology::builder("clireadd", TEST_ID).clients(3).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    write_config(
        &topo,
        &[(
            "wire",
            vec![port_toml(&name(0), ""), port_toml(&name(1), "")],
        )],
    );
    let daemon = topo.start_daemon();
    let p = name(2);
    // What a CNI DEL followed by an ADD of the same pod, or an operator fixing a port's VLAN,
    // does: delete, then add the same interface again at once.
    for round in 0..5 {
        cli_ok(&daemon, &["port", "add", &p, "--domain", "wire"]);
        cli_ok(&daemon, &["port", "del", &p]);
        let out = daemon.cli(&["port", "add", &p, "--domain", "wire", "--vlan", "100"]);
        assert!(
            out.status.success(),
            "round {round}: `vwire port add {p}` right after `port del {p}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert_eq!(daemon.interface(&p)["mode"], "access vlan 100");
        cli_ok(&daemon, &["port", "del", &p]);
        settle();
    }
    assert_umem_balanced(&daemon);
}

#[test]
fn port_commands_and_show() {
    require_privileged!("port_commands_and_show");
    const TEST_ID: u8 = 36;
    let topo = Topology::builder("cliport", TEST_ID).clients(4).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    write_config(
        &topo,
        &[(
            "wire",
            vec![
                port_toml(&name(0), ""),
                port_toml(&name(1), "vlan = 100"),
                port_toml(&name(2), "trunk = [100, 200], native = 1"),
            ],
        )],
    );
    let daemon = topo.start_daemon();
    let (p0, p1, p2, p3) = (name(0), name(1), name(2), name(3));

    // The socket is root-only.
    let meta = std::fs::metadata(topo.socket_path()).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "socket permissions"
    );

    // show bridge-domains, JSON and table.
    let domains = daemon.show_json("bridge-domains");
    assert_eq!(
        port_row(&domains, "wire"),
        [
            (p0.as_str(), "access vlan 1"),
            (p1.as_str(), "access vlan 100"),
            (p2.as_str(), "trunk [100,200] native 1"),
        ],
        "{domains}"
    );
    let table = cli_ok(&daemon, &["show", "bridge-domains"]);
    assert!(table.contains("bridge-domain wire: 3 ports"), "{table}");
    for (p, mode) in [
        (&p0, "access vlan 1"),
        (&p1, "access vlan 100"),
        (&p2, "trunk [100,200] native 1"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(p.as_str()) && l.contains(mode)),
            "`show bridge-domains` lacks {p} {mode}:\n{table}"
        );
    }
    // show interfaces: every field the operator relies on.
    let all = daemon.interfaces();
    for p in [&p0, &p1, &p2] {
        let row = find_interface(&all, p);
        for pointer in [
            "/rx_frames",
            "/tx_frames",
            "/rx_bytes",
            "/tx_bytes",
            "/drops/tagged_on_access",
            "/drops/vlan_not_allowed",
            "/drops/untagged_no_native",
            "/xdp/redirected",
            "/xdp/passed",
            "/xdp/aborted",
        ] {
            counter(row, pointer);
        }
        assert_eq!(row["domain"], "wire", "{row}");
    }
    for k in ["frames", "free", "in_fill", "in_tx"] {
        counter(&all["umem"], &format!("/{k}"));
    }
    assert_eq!(all["umem"]["balanced"], true, "{all}");
    let table = cli_ok(&daemon, &["show", "interfaces"]);
    for p in [&p0, &p1, &p2] {
        assert!(table.contains(p.as_str()), "{table}");
    }
    assert!(table.contains("umem:"), "{table}");
    let table = cli_ok(&daemon, &["show", "fdb"]);
    assert!(table.contains("0 entries"), "{table}");

    // port add: access, trunk, new domain; the JSON answer; port del.
    let answer = cli_json(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "200"],
    );
    assert_eq!(answer, serde_json::json!({"added": p3}), "port add --json");
    assert_eq!(daemon.interface(&p3)["mode"], "access vlan 200");
    let out = cli_ok(&daemon, &["port", "del", &p3]);
    assert_eq!(out.trim(), "ok");
    settle();
    let out = cli_ok(
        &daemon,
        &[
            "port", "add", &p3, "--domain", "lab", "--trunk", "7,8", "--native", "9",
        ],
    );
    assert_eq!(out.trim(), "ok");
    let domains = daemon.show_json("bridge-domains");
    assert_eq!(
        port_row(&domains, "lab"),
        [(p3.as_str(), "trunk [7,8] native 9")],
        "{domains}"
    );
    assert_eq!(daemon.interface(&p3)["domain"], "lab");
    let answer = cli_json(&daemon, &["port", "del", &p3]);
    assert_eq!(
        answer,
        serde_json::json!({"removed": p3}),
        "port del --json"
    );
    settle();
    let out = cli_ok(&daemon, &["port", "add", &p3, "--domain", "wire"]);
    assert_eq!(out.trim(), "ok");
    assert_eq!(
        daemon.interface(&p3)["mode"],
        "access vlan 1",
        "default mode"
    );
    cli_ok(&daemon, &["port", "del", &p3]);
    assert!(
        !daemon
            .interfaces()
            .to_string()
            .contains(&format!("\"{p3}\"")),
        "{p3} still shown after port del"
    );

    // Bad input: refused by the daemon, nothing changes.
    let missing = format!("vwx{}{}", std::process::id() % 100_000, TEST_ID);
    refused(
        &daemon,
        &["port", "add", &missing, "--domain", "wire"],
        &[&missing, "no interface"],
    );
    refused(
        &daemon,
        &[
            "port",
            "add",
            "this-name-is-far-too-long",
            "--domain",
            "wire",
        ],
        &["this-name-is-far-too-long"],
    );
    refused(&daemon, &["port", "add", "", "--domain", "wire"], &[]);
    refused(&daemon, &["port", "add", &p3, "--domain", ""], &["domain"]);
    refused(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "0"],
        &["0", "1-4094"],
    );
    refused(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "4095"],
        &["4095"],
    );
    refused(
        &daemon,
        &[
            "port", "add", &p3, "--domain", "wire", "--trunk", "100,4095",
        ],
        &["4095"],
    );
    refused(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--trunk", "0"],
        &["0"],
    );
    refused(
        &daemon,
        &[
            "port", "add", &p3, "--domain", "wire", "--trunk", "100", "--native", "4095",
        ],
        &["4095"],
    );
    refused(
        &daemon,
        &["port", "add", &p0, "--domain", "wire"],
        &[&p0, "exists"],
    );
    refused(
        &daemon,
        &["port", "add", &p0, "--domain", "elsewhere", "--vlan", "5"],
        &[&p0, "exists"],
    );
    refused(&daemon, &["port", "del", &missing], &[&missing]);
    refused(&daemon, &["port", "del", &p3], &[&p3]);
    // Rejected by the argument parser before reaching the daemon.
    usage_error(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "abc"],
        "abc",
    );
    usage_error(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "70000"],
        "70000",
    );
    usage_error(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "-1"],
        "-1",
    );
    usage_error(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--trunk", "100,abc"],
        "abc",
    );
    usage_error(
        &daemon,
        &[
            "port", "add", &p3, "--domain", "wire", "--vlan", "100", "--trunk", "100,200",
        ],
        "--trunk",
    );
    usage_error(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--native", "1"],
        "--trunk",
    );
    usage_error(&daemon, &["port", "add", &p3], "--domain");
    usage_error(&daemon, &["port", "frobnicate", &p3], "frobnicate");
    usage_error(&daemon, &["show", "everything"], "everything");
    // The same mistakes sent straight to the socket, past the CLI's parser.
    #[rustfmt::skip]
    let raw_cases: [(String, &str); 5] = [
        (format!(r#"{{"command":"port_add","name":"{p3}","domain":"wire","vlan":100,"trunk":[100]}}"#), "not both"),
        (format!(r#"{{"command":"port_add","name":"{p3}","domain":"wire","vlan":100,"native":1}}"#), "trunk"),
        (format!(r#"{{"command":"port_add","name":"{p3}","domain":"wire","native":1}}"#), "trunk"),
        (format!(r#"{{"command":"port_add","name":"{p3}","domain":"wire","trunk":[]}}"#), "at least one"),
        (format!(r#"{{"command":"port_add","name":"{p3}","domain":"wire","vlan":"abc"}}"#), "invalid"),
    ];
    for (req, needle) in raw_cases {
        raw_refused(&topo, &daemon, format!("{req}\n").as_bytes(), needle);
    }
    // And the port can still be added after all that.
    settle();
    cli_ok(
        &daemon,
        &["port", "add", &p3, "--domain", "wire", "--vlan", "100"],
    );
    assert_eq!(daemon.interface(&p3)["mode"], "access vlan 100");
    assert_umem_balanced(&daemon);
}

#[test]
fn fdb_commands() {
    require_privileged!("fdb_commands");
    const TEST_ID: u8 = 37;
    let topo = Topology::builder("clifdb", TEST_ID).clients(4).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    write_config(
        &topo,
        &[
            (
                "wire",
                vec![
                    port_toml(&name(0), ""),
                    port_toml(&name(1), ""),
                    port_toml(&name(2), "trunk = [100, 200]"),
                ],
            ),
            ("other", vec![port_toml(&name(3), "vlan = 100")]),
        ],
    );
    let daemon = topo.start_daemon();
    let (p0, p1, p2, p3) = (name(0), name(1), name(2), name(3));
    let st = vec![
        Station::new(&topo, 0, "c1 (access 1)"),
        Station::new(&topo, 1, "c2 (access 1)"),
        Station::new(&topo, 2, "c3 (trunk 100,200)"),
    ];
    let m2 = mac_str(&mac(1));
    let s = "02:00:00:55:00:01";
    let s_upper = "02:00:00:55:00:0A";

    // fdb add: default VLAN (the access VLAN), explicit VLAN on a trunk, upper-case MAC.
    let out = cli_ok(&daemon, &["fdb", "add", s, "--port", &p0]);
    assert_eq!(out.trim(), "ok");
    cli_ok(&daemon, &["fdb", "add", s, "--port", &p2, "--vlan", "200"]);
    cli_ok(&daemon, &["fdb", "add", s_upper, "--port", &p3]);
    let answer = cli_json(
        &daemon,
        &[
            "fdb",
            "add",
            "02:00:00:55:00:02",
            "--port",
            &p2,
            "--vlan",
            "100",
        ],
    );
    assert!(answer.is_object(), "fdb add --json: {answer}");
    let entries = fdb_entries(&daemon);
    assert_eq!(
        entries,
        [
            (
                "other".into(),
                "02:00:00:55:00:0a".into(),
                100,
                p3.clone(),
                true
            ),
            (
                "wire".into(),
                "02:00:00:55:00:01".into(),
                1,
                p0.clone(),
                true
            ),
            (
                "wire".into(),
                "02:00:00:55:00:02".into(),
                100,
                p2.clone(),
                true
            ),
            (
                "wire".into(),
                "02:00:00:55:00:01".into(),
                200,
                p2.clone(),
                true
            ),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>(),
        "static entries"
    );
    let table = cli_ok(&daemon, &["show", "fdb"]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(s) && l.contains(p0.as_str()) && l.contains("yes")),
        "{table}"
    );
    assert!(table.contains("4 entries"), "{table}");

    // Bad input.
    refused(
        &daemon,
        &["fdb", "add", "02:00:00:55:00", "--port", &p0],
        &["02:00:00:55:00"],
    );
    refused(
        &daemon,
        &["fdb", "add", "zz:00:00:55:00:01", "--port", &p0],
        &["zz:00:00:55:00:01"],
    );
    refused(
        &daemon,
        &["fdb", "add", "02:00:00:55:00:01:07", "--port", &p0],
        &["02:00:00:55:00:01:07"],
    );
    refused(
        &daemon,
        &["fdb", "add", "01:00:5e:00:00:01", "--port", &p0],
        &["01:00:5e:00:00:01"],
    );
    refused(
        &daemon,
        &["fdb", "add", "ff:ff:ff:ff:ff:ff", "--port", &p0],
        &["ff:ff:ff:ff:ff:ff"],
    );
    refused(
        &daemon,
        &["fdb", "add", "00:00:00:00:00:00", "--port", &p0],
        &["00:00:00:00:00:00"],
    );
    refused(
        &daemon,
        &["fdb", "add", s, "--port", "no-such-port"],
        &["no-such-port"],
    );
    refused(
        &daemon,
        &["fdb", "add", s, "--port", &p0, "--vlan", "100"],
        &[&p0, "100"],
    );
    refused(
        &daemon,
        &["fdb", "add", s, "--port", &p2, "--vlan", "300"],
        &[&p2, "300"],
    );
    refused(&daemon, &["fdb", "add", s, "--port", &p2], &[&p2, "--vlan"]);
    refused(
        &daemon,
        &["fdb", "add", s, "--port", &p0, "--vlan", "0"],
        &["0"],
    );
    refused(
        &daemon,
        &["fdb", "add", s, "--port", &p0, "--vlan", "4095"],
        &["4095"],
    );
    usage_error(
        &daemon,
        &["fdb", "add", s, "--port", &p0, "--vlan", "abc"],
        "abc",
    );
    usage_error(&daemon, &["fdb", "add", s], "--port");
    refused(
        &daemon,
        &["fdb", "del", "02:00:00:55:00:99", "--domain", "wire"],
        &["02:00:00:55:00:99"],
    );
    refused(
        &daemon,
        &["fdb", "del", s, "--domain", "wire", "--vlan", "100"],
        &[s],
    );
    refused(&daemon, &["fdb", "del", s, "--domain", "other"], &[s]);
    refused(
        &daemon,
        &["fdb", "del", s, "--domain", "nowhere"],
        &["nowhere"],
    );
    refused(
        &daemon,
        &["fdb", "del", "not-a-mac", "--domain", "wire"],
        &["not-a-mac"],
    );
    refused(
        &daemon,
        &["fdb", "del", s, "--domain", "wire", "--vlan", "4095"],
        &["4095"],
    );
    refused(
        &daemon,
        &["fdb", "flush", "--domain", "nowhere"],
        &["nowhere"],
    );
    refused(
        &daemon,
        &["fdb", "flush", "--port", "no-such-port"],
        &["no-such-port"],
    );

    // fdb del: one entry, by domain and VLAN; JSON answer.
    let answer = cli_json(
        &daemon,
        &["fdb", "del", s, "--domain", "wire", "--vlan", "200"],
    );
    assert_eq!(answer, serde_json::json!({"deleted": s}), "fdb del --json");
    cli_ok(&daemon, &["fdb", "del", s, "--domain", "wire"]);
    cli_ok(
        &daemon,
        &["fdb", "del", s_upper, "--domain", "other", "--vlan", "100"],
    );
    assert_eq!(
        fdb_entries(&daemon),
        [(
            "wire".into(),
            "02:00:00:55:00:02".into(),
            100,
            p2.clone(),
            true
        )]
    );

    // Learned entries: c1 and c2 on VLAN 1, c3 on 100 and 200, plus a forged station on c1.
    let forged = [0x02, 0, 0, 0x44, TEST_ID, 1];
    let mut n = 0;
    let mut send = |from: usize, frame_for: &dyn Fn(&[u8; 8]) -> Vec<u8>, want: &[Want]| {
        n += 1;
        let m = marker(TEST_ID, n);
        check_delivery("learning frame", &st, from, &frame_for(&m), &m, want);
    };
    use Want::{Nothing as No, Untagged as Un};
    let bcast = |src: [u8; 6]| {
        move |m: &[u8; 8]| eth_frame(BROADCAST, src, ETH_P_EXPERIMENTAL, &payload(m, 64))
    };
    send(0, &bcast(mac(0)), &[No, Un, No]);
    send(0, &bcast(forged), &[No, Un, No]);
    send(1, &bcast(mac(1)), &[Un, No, No]);
    let tag = |vid| {
        move |m: &[u8; 8]| {
            tagged_frame(
                BROADCAST,
                mac(2),
                TPID_8021Q,
                vid,
                ETH_P_EXPERIMENTAL,
                &payload(m, 64),
            )
        }
    };
    send(2, &tag(100), &[No, No, No]);
    send(2, &tag(200), &[No, No, No]);
    let learned = |d: &Daemon| fdb_entries(d).into_iter().filter(|e| !e.4).count();
    assert_eq!(learned(&daemon), 5, "{:?}", fdb_entries(&daemon));

    // flush --port counts only that port's learned entries; static ones stay.
    let answer = cli_json(&daemon, &["fdb", "flush", "--port", &p0]);
    assert_eq!(
        answer,
        serde_json::json!({"flushed": 2}),
        "flush --port {p0}"
    );
    let entries = fdb_entries(&daemon);
    assert!(entries.iter().all(|e| e.3 != p0), "{entries:?}");
    assert_eq!(learned(&daemon), 3);
    // flush --domain other: nothing learned there.
    let out = cli_ok(&daemon, &["fdb", "flush", "--domain", "other"]);
    assert_eq!(out.trim(), "flushed 0 entries");
    // flush --domain wire --port p2: the trunk's two.
    let answer = cli_json(
        &daemon,
        &["fdb", "flush", "--domain", "wire", "--port", &p2],
    );
    assert_eq!(answer, serde_json::json!({"flushed": 2}));
    // flush (everything): c2's entry; the static entry stays.
    let out = cli_ok(&daemon, &["fdb", "flush"]);
    assert_eq!(out.trim(), "flushed 1 entries");
    assert_eq!(
        fdb_entries(&daemon),
        [(
            "wire".into(),
            "02:00:00:55:00:02".into(),
            100,
            p2.clone(),
            true
        )]
    );
    let out = cli_ok(&daemon, &["fdb", "flush"]);
    assert_eq!(out.trim(), "flushed 0 entries");
    // A static entry can be deleted like a learned one, and goes with its port.
    cli_ok(&daemon, &["fdb", "add", &m2, "--port", &p1]);
    cli_ok(&daemon, &["port", "del", &p1]);
    assert!(
        fdb_entries(&daemon).iter().all(|e| e.3 != p1),
        "entries of a deleted port remain: {:?}",
        fdb_entries(&daemon)
    );
    assert_umem_balanced(&daemon);
}

#[test]
fn static_entry_wins_over_learning() {
    require_privileged!("static_entry_wins_over_learning");
    const TEST_ID: u8 = 38;
    let topo = Topology::builder("clistatic", TEST_ID).clients(3).build();
    let name = |i: usize| topo.client(i).host_if.clone();
    let mac = |i: usize| topo.client(i).mac;
    let daemon = topo.start_daemon();
    let st = vec![
        Station::new(&topo, 0, "c1"),
        Station::new(&topo, 1, "c2"),
        Station::new(&topo, 2, "c3"),
    ];
    use Want::{Nothing as No, Untagged as Un};
    let mut n = 0;
    let mut frame = |dst: [u8; 6], src: [u8; 6]| {
        n += 1;
        let m = marker(TEST_ID, n);
        (eth_frame(dst, src, ETH_P_EXPERIMENTAL, &payload(&m, 64)), m)
    };
    // c2 is learned on its own port.
    let (f, m) = frame(BROADCAST, mac(1));
    check_delivery("broadcast from c2", &st, 1, &f, &m, &[Un, No, Un]);
    let (f, m) = frame(mac(1), mac(0));
    check_delivery("unicast to learned c2", &st, 0, &f, &m, &[No, Un, No]);
    // A static entry sends c2's MAC to c3's port instead.
    let c2 = mac_str(&mac(1));
    cli_ok(&daemon, &["fdb", "add", &c2, "--port", &name(2)]);
    let entries = fdb_entries(&daemon);
    let c2_entries: Vec<_> = entries.iter().filter(|e| e.1 == c2).cloned().collect();
    assert_eq!(
        c2_entries,
        [("wire".into(), c2.clone(), 1, name(2), true)],
        "the static entry replaces the learned one"
    );
    let (f, m) = frame(mac(1), mac(0));
    check_delivery(
        "unicast to c2's MAC with a static entry",
        &st,
        0,
        &f,
        &m,
        &[No, No, Un],
    );
    // c2 keeps talking from its own port: learning does not move the static entry.
    let (f, m) = frame(BROADCAST, mac(1));
    check_delivery("broadcast from c2 again", &st, 1, &f, &m, &[Un, No, Un]);
    let (f, m) = frame(mac(0), mac(1));
    check_delivery("unicast c2 -> c1", &st, 1, &f, &m, &[Un, No, No]);
    let (f, m) = frame(mac(1), mac(0));
    check_delivery(
        "unicast to c2's MAC after c2 spoke",
        &st,
        0,
        &f,
        &m,
        &[No, No, Un],
    );
    let (f, m) = frame(mac(1), mac(2));
    check_delivery(
        "unicast to c2's MAC from the static port",
        &st,
        2,
        &f,
        &m,
        &[No, No, No],
    );
    let entries = fdb_entries(&daemon);
    let c2_entries: Vec<_> = entries.iter().filter(|e| e.1 == c2).cloned().collect();
    assert_eq!(
        c2_entries,
        [("wire".into(), c2.clone(), 1, name(2), true)],
        "still static"
    );
    assert!(
        daemon.counter(&name(2), "/drops/same_port") >= 1,
        "the frame from the static port to itself is counted as same_port\n{}",
        daemon.interfaces()
    );
    // flush does not remove it; del does, and learning takes over again.
    cli_ok(&daemon, &["fdb", "flush"]);
    assert!(fdb_entries(&daemon).iter().any(|e| e.1 == c2 && e.4));
    cli_ok(&daemon, &["fdb", "del", &c2, "--domain", "wire"]);
    assert!(fdb_entries(&daemon).iter().all(|e| e.1 != c2));
    let (f, m) = frame(BROADCAST, mac(1));
    check_delivery("broadcast from c2 after del", &st, 1, &f, &m, &[Un, No, Un]);
    let (f, m) = frame(mac(1), mac(0));
    check_delivery("unicast to c2 relearned", &st, 0, &f, &m, &[No, Un, No]);
}

#[test]
fn malformed_requests_on_the_socket() {
    require_privileged!("malformed_requests_on_the_socket");
    const TEST_ID: u8 = 39;
    let topo = Topology::builder("cliraw", TEST_ID).clients(2).build();
    let daemon = topo.start_daemon();
    let pid = daemon.pid();
    // A well-formed raw request works.
    let answer = raw_request(&topo, b"{\"command\":\"show_fdb\"}\n");
    let value: Value = serde_json::from_str(answer.trim()).expect("JSON answer");
    assert!(value["ok"]["entries"].is_array(), "{value}");

    let name0 = topo.client(0).host_if.clone();
    let long = vec![b'x'; 70 * 1024];
    #[rustfmt::skip]
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json\n".to_vec(), "invalid request"),
        (b"\n".to_vec(), "invalid request"),
        (b"{\"command\":\"show_fdb\"".to_vec(), "invalid request"),
        (b"{\"command\":\"reboot\"}\n".to_vec(), "reboot"),
        (b"{\"command\":\"show_fdb\",\"x\":1}\n".to_vec(), "x"),
        (b"{\"cmd\":\"show_fdb\"}\n".to_vec(), "command"),
        (b"[1,2,3]\n".to_vec(), "invalid request"),
        (b"\xff\xfe\x00garbage\n".to_vec(), ""),
        (format!("{{\"command\":\"port_del\",\"name\":\"{name0}\",\"extra\":true}}\n").into_bytes(), "extra"),
        (b"{\"command\":\"port_add\",\"name\":\"x\"}\n".to_vec(), "domain"),
        (b"{\"command\":\"fdb_add\",\"mac\":\"02:00:00:00:00:01\",\"port\":\"x\",\"vlan\":-5}\n".to_vec(), "invalid"),
        (b"{\"command\":\"fdb_add\",\"mac\":\"02:00:00:00:00:01\",\"port\":\"x\",\"vlan\":65536}\n".to_vec(), "invalid"),
        (long, "longer"),
    ];
    for (bytes, needle) in &cases {
        raw_refused(&topo, &daemon, bytes, needle);
    }
    // A client that connects and says nothing, or hangs up at once, harms nobody.
    drop(UnixStream::connect(topo.socket_path()).expect("connect"));
    let idle = UnixStream::connect(topo.socket_path()).expect("connect");
    // Meanwhile other requests are served.
    let v = daemon.fdb();
    assert!(v["entries"].is_array());
    drop(idle);
    assert!(daemon_alive(&daemon), "daemon died\n{}", daemon.log());
    assert_eq!(daemon.pid(), pid);
    // The daemon still forwards.
    let st = vec![Station::new(&topo, 0, "c1"), Station::new(&topo, 1, "c2")];
    let m = marker(TEST_ID, 1);
    let f = eth_frame(
        BROADCAST,
        topo.client(0).mac,
        ETH_P_EXPERIMENTAL,
        &payload(&m, 64),
    );
    check_delivery(
        "broadcast after the garbage",
        &st,
        0,
        &f,
        &m,
        &[Want::Nothing, Want::Untagged],
    );
    // And the CLI against no daemon at all says so.
    let out = output(
        env!("CARGO_BIN_EXE_vwire"),
        &[
            "show",
            "fdb",
            "--socket",
            &topo.dir.join("nothing.sock").display().to_string(),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("vwire: ") && stderr.contains("nothing.sock"),
        "{stderr}"
    );
}
