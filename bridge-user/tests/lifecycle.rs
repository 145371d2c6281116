//! Daemon lifecycle: a clean stop detaches every XDP program.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;

use common::*;

fn has_xdp(details: &str) -> bool {
    details
        .split_whitespace()
        .any(|w| w.starts_with("xdp") || w.starts_with("prog/xdp"))
}

#[test]
fn sigterm_detaches_xdp_and_exits_zero() {
    require_privileged!("sigterm_detaches_xdp_and_exits_zero");
    stop_detaches_xdp_and_exits_zero("stopterm", 8, libc::SIGTERM);
}

#[test]
fn sigint_detaches_xdp_and_exits_zero() {
    require_privileged!("sigint_detaches_xdp_and_exits_zero");
    stop_detaches_xdp_and_exits_zero("stopint", 10, libc::SIGINT);
}

fn stop_detaches_xdp_and_exits_zero(tag: &str, test_id: u8, signal: libc::c_int) {
    let topo = Topology::builder(tag, test_id).clients(3).build();
    for i in 0..3 {
        let d = topo.host_link_details(i);
        assert!(
            !has_xdp(&d),
            "XDP already attached before the daemon started:\n{d}"
        );
    }
    let daemon = topo.start_daemon();
    for i in 0..3 {
        let d = topo.host_link_details(i);
        assert!(
            has_xdp(&d),
            "the running daemon should have XDP attached on port {i}:\n{d}"
        );
    }
    let (a, b) = (topo.client(0), topo.client(1));
    let out = ns_run(&a.ns, &["ping", "-c", "2", "-W", "1", "-i", "0.2", &b.ip]);
    assert!(out.contains(" 0% packet loss"), "ping before stop:\n{out}");

    let status = daemon.stop_with(signal);
    let log = std::fs::read_to_string(topo.dir.join("vwire.log")).unwrap_or_default();
    assert!(
        status.success(),
        "vwire exited with {status} after signal {signal}\n--- log ---\n{log}"
    );
    for i in 0..3 {
        let d = topo.host_link_details(i);
        assert!(
            !has_xdp(&d),
            "XDP still attached after the daemon stopped:\n{d}"
        );
    }
}
