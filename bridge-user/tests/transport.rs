//! Real transport traffic through the daemon: TCP and UDP integrity, and multi-queue veths.
//! Privileged: run with `BRIDGE_PRIVILEGED=1` as root.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const TCP_BYTES: usize = 8 << 20;
const TCP_BACK_BYTES: usize = 1 << 20;
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads to EOF (or `expect` bytes), comparing with `want` as it goes. Returns the byte count.
fn read_and_compare(stream: &mut TcpStream, want: &[u8], what: &str) -> usize {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0;
    while at < want.len() {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("{what}: read failed after {at} bytes: {e}"),
        };
        assert!(
            at + n <= want.len(),
            "{what}: received more than the {} bytes sent",
            want.len()
        );
        if buf[..n] != want[at..at + n] {
            let off = buf[..n]
                .iter()
                .zip(&want[at..at + n])
                .position(|(x, y)| x != y)
                .expect("slices differ");
            panic!("{what}: corrupted data at byte {}", at + off);
        }
        at += n;
    }
    at
}

#[test]
fn tcp_and_udp_carry_data_intact() {
    require_privileged!("tcp_and_udp_carry_data_intact");
    let topo = Topology::builder("tcp", 5).build();
    let _daemon = topo.start_daemon();
    tcp_and_udp_intact(&topo);
}

/// Clients whose TX checksum offload is on send TCP and UDP with partial checksums; vwire
/// completes them, so TCP works without `ethtool -K ... tx off`, on the forwarder's path and
/// (since the XDP program leaves such frames to the forwarder) with the fast path too.
#[test]
fn tcp_and_udp_work_with_tx_checksum_offload_on() {
    require_privileged!("tcp_and_udp_work_with_tx_checksum_offload_on");
    let topo = Topology::builder("csum", 6)
        .tx_checksum_offload(true)
        .build();
    let daemon = topo.start_daemon();
    tcp_and_udp_intact(&topo);
    for c in [topo.client(0), topo.client(1)] {
        let completed = daemon.counter(&c.host_if, "/rx_checksums_completed");
        assert!(
            completed > 100,
            "{}: only {completed} partial checksums completed for an 8 MB TCP stream",
            c.host_if
        );
    }
}

/// 8 MB of TCP from client 0 to client 1 and 1 MB back, compared byte for byte, then 200 UDP
/// echoes of 64-1463 bytes.
fn tcp_and_udp_intact(topo: &Topology) {
    let (a, b) = (topo.client(0).clone(), topo.client(1).clone());
    let tcp_addr: SocketAddr = format!("{}:5001", b.ip).parse().expect("addr");
    let udp_addr: SocketAddr = format!("{}:5002", b.ip).parse().expect("addr");
    let to_a = pattern(1, TCP_BYTES);
    let back = pattern(2, TCP_BACK_BYTES);

    // B: TCP server (receives 8 MB, verifies, answers 1 MB), then UDP echo.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (want, reply) = (to_a.clone(), back.clone());
    let server = spawn_in_netns(&b.ns, move || {
        let listener = TcpListener::bind(tcp_addr).expect("bind TCP in B");
        let udp = UdpSocket::bind(udp_addr).expect("bind UDP in B");
        ready_tx.send(()).expect("signal ready");
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "B: no TCP connection from A within {IO_TIMEOUT:?}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("B: accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let got = read_and_compare(&mut stream, &want, "TCP A -> B");
        assert_eq!(got, want.len(), "TCP A -> B: stream ended early");
        stream.write_all(&reply).expect("B: TCP write back");
        stream.shutdown(Shutdown::Write).expect("B: shutdown");

        udp.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = udp
                .recv_from(&mut buf)
                .expect("B: UDP recv (nothing for 5 s)");
            if &buf[..n] == b"END" {
                break;
            }
            udp.send_to(&buf[..n], from).expect("B: UDP echo");
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        match server.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("B's server did not start"),
        }
    }

    let client = spawn_in_netns(&a.ns, move || {
        let mut stream = TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("A: TCP connect to {tcp_addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.write_all(&to_a).expect("A: TCP write");
        stream.shutdown(Shutdown::Write).expect("A: shutdown");
        let got = read_and_compare(&mut stream, &back, "TCP B -> A");
        assert_eq!(got, back.len(), "TCP B -> A: stream ended early");

        let udp = UdpSocket::bind("0.0.0.0:0").expect("A: bind UDP");
        udp.connect(udp_addr).expect("A: UDP connect");
        udp.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut retries = 0;
        let mut buf = [0u8; 2048];
        for i in 0..200u64 {
            let len = 64 + usize::try_from(i * 7 % 1400).expect("small");
            let msg = pattern(1000 + i, len);
            let mut attempt = 0;
            loop {
                udp.send(&msg).expect("A: UDP send");
                match udp.recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(&buf[..n], &msg[..], "UDP datagram {i} came back modified");
                        break;
                    }
                    Err(e) => {
                        attempt += 1;
                        retries += 1;
                        assert!(
                            attempt < 3,
                            "UDP datagram {i} ({len} bytes) got no echo 3 times: {e}"
                        );
                    }
                }
            }
        }
        udp.send(b"END").expect("A: UDP send END");
        retries
    });

    let client_result = client.join();
    let server_result = server.join();
    let retries = match client_result {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    };
    if let Err(p) = server_result {
        std::panic::resume_unwind(p);
    }
    assert!(
        retries <= 2,
        "UDP needed {retries} retransmissions for 200 echoes on an idle bridge"
    );
}

#[test]
fn two_queue_veths_lose_nothing() {
    require_privileged!("two_queue_veths_lose_nothing");
    let topo = Topology::builder("mq", 7).queues(2).build();
    let (a, b) = (topo.client(0).clone(), topo.client(1).clone());
    // Transmit queue by CPU in A: a frame sent on CPU k leaves on tx queue k of nsm-1 and lands
    // on rx queue k of A's host end.
    for (q, mask) in [(0, "1"), (1, "2")] {
        let path = format!("/sys/class/net/{CLIENT_IF}/queues/tx-{q}/xps_cpus");
        ns_run(&a.ns, &["sh", "-c", &format!("echo {mask} > {path}")]);
    }
    let daemon = topo.start_daemon();
    for c in [&a, &b] {
        let q = daemon.counter(&c.host_if, "/queues");
        assert_eq!(
            q, 2,
            "port {} has 2 queues, `show interfaces` says {q}",
            c.host_if
        );
    }

    // Raw frames from one pinned thread per CPU.
    const PER_CPU: u32 = 1000;
    let sb = topo.raw_socket(1);
    // B introduces itself so that A -> B is known unicast.
    sb.send(&eth_frame(
        BROADCAST,
        b.mac,
        ETH_P_EXPERIMENTAL,
        b"hello from B",
    ));
    std::thread::sleep(Duration::from_millis(200));
    let senders: Vec<_> = (0..2usize)
        .map(|cpu| {
            let (ns, src, dst, macs) = (a.ns.clone(), a.mac, b.mac, topo.client_macs());
            std::thread::spawn(move || {
                pin_to_cpu(cpu);
                let sock = RawSocket::open(&ns, CLIENT_IF, macs);
                sock.set_qdisc_bypass();
                for seq in 0..PER_CPU {
                    let mut payload = b"mqueue-".to_vec();
                    payload.push(u8::try_from(cpu).expect("small"));
                    payload.extend_from_slice(&seq.to_be_bytes());
                    payload.resize(100, 0xa5);
                    sock.send(&eth_frame(dst, src, ETH_P_EXPERIMENTAL, &payload));
                    if seq % 16 == 15 {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    for s in senders {
        if let Err(p) = s.join() {
            std::panic::resume_unwind(p);
        }
    }
    let total = usize::try_from(2 * PER_CPU).expect("small");
    let got = sb.recv_count_where(total, Duration::from_secs(10), |f| {
        f.len() > 21 && &f[14..21] == b"mqueue-"
    });
    let mut seen = [vec![false; 1000], vec![false; 1000]];
    for f in &got {
        let cpu = usize::from(f[21]);
        let seq =
            usize::try_from(u32::from_be_bytes(f[22..26].try_into().expect("4"))).expect("fits");
        assert!(!seen[cpu][seq], "frame cpu {cpu} seq {seq} arrived twice");
        seen[cpu][seq] = true;
    }
    let missing: Vec<(usize, usize)> = (0..2)
        .flat_map(|c| (0..1000).map(move |s| (c, s)))
        .filter(|&(c, s)| !seen[c][s])
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} raw frames A -> B were lost (cpu, seq): first {:?}\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        daemon.interfaces()
    );

    // Pings pinned to each CPU, concurrently.
    let pings: Vec<_> = ["0", "1"]
        .iter()
        .map(|cpu| {
            let (ns, ip, cpu) = (a.ns.clone(), b.ip.clone(), (*cpu).to_owned());
            std::thread::spawn(move || {
                #[rustfmt::skip]
                let out = ns_run(&ns, &[
                    "taskset", "-c", &cpu, "ping", "-q", "-c", "500", "-i", "0.002", "-W", "1", &ip,
                ]);
                assert!(
                    out.contains(" 0% packet loss"),
                    "ping pinned to CPU {cpu} lost packets:\n{out}"
                );
            })
        })
        .collect();
    for p in pings {
        if let Err(p) = p.join() {
            std::panic::resume_unwind(p);
        }
    }

    // Every frame went to the bridge: none was passed to the kernel for want of a socket.
    let all = daemon.interfaces();
    for c in [&a, &b] {
        let port = find_interface(&all, &c.host_if);
        assert_eq!(
            counter(port, "/xdp/passed"),
            0,
            "frames on port {} missed the bridge: {port}",
            c.host_if
        );
    }
    // And the test did exercise both rx queues of A's host end.
    let stats = topo.host_ethtool_stats(0);
    for q in 0..2 {
        let key = format!("rx_queue_{q}_xdp_packets");
        let n = stats.iter().find(|(k, _)| *k == key).map_or(0, |(_, v)| *v);
        assert!(
            n >= 1000,
            "rx queue {q} of {} saw only {n} XDP packets: {stats:?}",
            a.host_if
        );
    }
}

#[test]
fn a_busy_tcp_stream_is_transmitted_from_two_threads_intact() {
    require_privileged!("a_busy_tcp_stream_is_transmitted_from_two_threads_intact");
    let topo = Topology::builder("tcpsplit", 74).build();
    // Without the handoff in the fast-path pass: it would take the stream's data from the
    // forwarder (the test below), leaving it only the ACKs to send.
    let config = std::fs::read_to_string(topo.config_path()).expect("read vwire.toml");
    std::fs::write(topo.config_path(), format!("tcp_handoff = false\n{config}"))
        .expect("write vwire.toml");
    let daemon = topo.start_daemon();
    busy_tcp_stream_intact(&topo, 74);
    for c in &topo.clients {
        assert_eq!(
            daemon.counter(&c.host_if, "/xdp/handed_off"),
            0,
            "tcp_handoff = false"
        );
    }

    // Data one way and ACKs the other keep the forwarder busy with two ports to kick: the
    // tx thread took some of the kicks (without it, this counter stays at 0).
    let status = daemon.interfaces();
    let kicks = status["tx_thread_kicks"].as_u64().unwrap_or(0);
    assert!(kicks > 0, "the tx thread never kicked:\n{status}");
    assert_eq!(status["umem"]["balanced"].as_bool(), Some(true), "{status}");
}

/// With the fast path, a TCP stream busy enough to keep the forwarder's path (each CPU's XDP
/// program sees more than 128 kpps) has its data segments handed to the other CPU in XDP,
/// which sends them to their egress port; its ACKs go through the forwarder.
#[test]
fn a_busy_tcp_stream_is_handed_to_another_cpu_intact() {
    require_privileged!("a_busy_tcp_stream_is_handed_to_another_cpu_intact");
    let topo = Topology::builder("tcphand", 75).gro(true).build();
    let daemon = topo.start_daemon();
    busy_tcp_stream_intact(&topo, 75);

    let (a, b) = (&topo.client(0).host_if, &topo.client(1).host_if);
    let handed = daemon.counter(a, "/xdp/handed_off");
    // As the daemon counts them: online CPUs (this test runs without an affinity mask).
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    if online.trim() == "0" {
        assert_eq!(handed, 0, "one CPU: nothing to hand off to");
        return;
    }
    // 96 MB is ~66,000 segments; most of the stream runs busy.
    assert!(
        handed > 1000,
        "only {handed} segments handed to another CPU:\n{}",
        daemon.interfaces()
    );
    // Counted as sent only by the program on the other CPU, once it sent them.
    let fast_to_b = daemon.counter(b, "/xdp/fast_tx_frames");
    assert!(
        fast_to_b >= handed,
        "B's fast-path transmits ({fast_to_b}) include the handed-off segments ({handed}):\n{}",
        daemon.interfaces()
    );
    assert_eq!(
        daemon.counter(a, "/xdp/handoff_dropped"),
        0,
        "no handed-off segment lost its way:\n{}",
        daemon.interfaces()
    );
    // ACKs carry no data: they stay with the forwarder.
    assert_eq!(daemon.counter(b, "/xdp/handed_off"), 0);
}

/// 96 MB of TCP from client 0 to client 1, compared byte for byte.
fn busy_tcp_stream_intact(topo: &Topology, seed: u8) {
    const BYTES: usize = 96 << 20;
    let (a, b) = (topo.client(0).clone(), topo.client(1).clone());
    let addr: SocketAddr = format!("{}:5003", b.ip).parse().expect("addr");
    let data = pattern(u64::from(seed), BYTES);

    let (ready_tx, ready_rx) = mpsc::channel();
    let want = data.clone();
    let server = spawn_in_netns(&b.ns, move || {
        let listener = TcpListener::bind(addr).expect("bind TCP in B");
        ready_tx.send(()).expect("signal ready");
        let (mut stream, _) = listener.accept().expect("B: accept");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        read_and_compare(&mut stream, &want, "TCP A -> B")
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("B's server did not start");
    let client = spawn_in_netns(&a.ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("A: TCP connect to {addr}: {e}"));
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.write_all(&data).expect("A: TCP write");
        stream.shutdown(Shutdown::Write).expect("A: shutdown");
    });
    // A failed client leaves B blocked in accept or read: fail without waiting for it.
    if let Err(p) = client.join() {
        std::panic::resume_unwind(p);
    }
    match server.join() {
        Ok(n) => assert_eq!(n, BYTES, "TCP A -> B: stream ended early"),
        Err(p) => std::panic::resume_unwind(p),
    }
}
