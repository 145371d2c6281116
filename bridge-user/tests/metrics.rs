//! The metrics and health endpoint (`metrics_listen`), over real TCP inside the test's node
//! namespace: what each request gets, and that a client trickling its request head is cut
//! off once the whole head is late, not kept open a read at a time.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;

const ADDR: &str = "127.0.0.1:9469";

/// Sends `request` and returns the whole response (the server closes after one).
fn exchange(request: &[u8]) -> String {
    let mut stream = TcpStream::connect(ADDR).expect("connect to the metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request).expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    response
}

#[test]
fn metrics_and_health_answer_and_a_slow_client_is_cut_off() {
    require_privileged!("metrics_and_health_answer_and_a_slow_client_is_cut_off");
    let topo = Topology::builder("metrics", 120).clients(2).build();
    let config = std::fs::read_to_string(topo.config_path()).expect("read config");
    std::fs::write(
        topo.config_path(),
        format!("metrics_listen = {ADDR:?}\n{config}"),
    )
    .expect("write config");
    let port = topo.client(0).host_if.clone();
    let daemon = topo.start_daemon();
    let node = topo.node_ns.clone();
    let log = in_netns(&node, move || {
        wait_until(Duration::from_secs(5), || TcpStream::connect(ADDR).is_ok());
        let mut log = Vec::new();
        let metrics = exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(metrics.contains("\nvwire_up 1\n"), "{metrics}");
        let row = format!("vwire_port_rx_frames_total{{port=\"{port}\",domain=\"wire\"}} ");
        assert!(metrics.contains(&row), "no {row:?} in:\n{metrics}");
        let health = exchange(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(
            health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("ok\n"),
            "{health}"
        );
        for (request, status) in [
            (&b"GET /nope HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        ] {
            let answer = exchange(request);
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
                "{answer}"
            );
        }
        // A request head that ends before its blank line.
        let mut stream = TcpStream::connect(ADDR).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\n")
            .expect("send");
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );

        // One byte a second: each read comes well within any per-read timeout, but the head
        // as a whole never does. The server must close the connection after its 5 s.
        let mut slow = TcpStream::connect(ADDR).expect("connect");
        slow.set_read_timeout(Some(Duration::from_millis(1000)))
            .expect("read timeout");
        let start = Instant::now();
        let closed_after = loop {
            if slow.write_all(b"X").is_err() {
                break start.elapsed();
            }
            let mut buf = [0u8; 256];
            match slow.read(&mut buf) {
                // Closed, perhaps after a 400 answer.
                Ok(_) => break start.elapsed(),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break start.elapsed(),
            }
            assert!(
                start.elapsed() < Duration::from_secs(12),
                "a client trickling its head was kept open for {:?}",
                start.elapsed()
            );
        };
        log.push(format!("slow client closed after {closed_after:?}"));
        assert!(
            closed_after >= Duration::from_secs(4),
            "closed too early, before the head timeout: {closed_after:?}"
        );
        // Still serving.
        let health = exchange(b"GET /healthz HTTP/1.1\r\n\r\n");
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        log
    });
    eprintln!("{}", log.join("\n"));
    drop(daemon);
}
