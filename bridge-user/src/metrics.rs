//! Per-port and per-bridge counters.
//!
//! The forwarding thread is the only writer and keeps them as plain integers (no atomics on
//! the per-frame path); the control path gets copies through `control::Command`.
//! Names read direction, then object, then outcome (`rx_frames`, `tx_ring_full`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::control::Status;

/// Why the forwarder dropped a frame. Every drop has exactly one reason and one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes).
    Runt,
    /// Source MAC is multicast, broadcast or all-zero: not a station that can be learned.
    InvalidSrcMac,
    /// The destination was learned on the port the frame came in on (a real switch filters these).
    SamePort,
    /// Flooded, but the domain has no other port.
    NoDestination,
    /// The egress port's tx ring was full: that port is slower than its senders.
    TxRingFull,
    /// No free UMEM frame for the copy a flood needs.
    UmemExhausted,
    /// A tagged frame on an access port (also stops double-tag VLAN hopping).
    TaggedOnAccess,
    /// A tag for a VLAN the trunk does not carry (or an 802.1ad outer tag).
    VlanNotAllowed,
    /// An untagged frame on a trunk without a native VLAN.
    UntaggedNoNative,
    /// An 802.1Q TPID without the rest of the tag.
    TruncatedVlanTag,
    /// The egress port is not a member of the frame's VLAN (e.g. a static FDB entry).
    VlanNotMember,
    /// Longer than the egress port's MTU allows: the kernel would drop it uncounted.
    MtuExceeded,
}

/// Drops by reason, for one port. Ingress reasons count on the port the frame came in on,
/// egress reasons (`tx_ring_full`, `umem_exhausted`) on the port it was going out of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DropCounters {
    pub runt: u64,
    pub invalid_src_mac: u64,
    pub same_port: u64,
    pub no_destination: u64,
    pub tx_ring_full: u64,
    pub umem_exhausted: u64,
    pub tagged_on_access: u64,
    pub vlan_not_allowed: u64,
    pub untagged_no_native: u64,
    pub truncated_vlan_tag: u64,
    pub vlan_not_member: u64,
    pub mtu_exceeded: u64,
}

impl DropCounters {
    pub fn count(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Runt => &mut self.runt,
            DropReason::InvalidSrcMac => &mut self.invalid_src_mac,
            DropReason::SamePort => &mut self.same_port,
            DropReason::NoDestination => &mut self.no_destination,
            DropReason::TxRingFull => &mut self.tx_ring_full,
            DropReason::UmemExhausted => &mut self.umem_exhausted,
            DropReason::TaggedOnAccess => &mut self.tagged_on_access,
            DropReason::VlanNotAllowed => &mut self.vlan_not_allowed,
            DropReason::UntaggedNoNative => &mut self.untagged_no_native,
            DropReason::TruncatedVlanTag => &mut self.truncated_vlan_tag,
            DropReason::VlanNotMember => &mut self.vlan_not_member,
            DropReason::MtuExceeded => &mut self.mtu_exceeded,
        };
        *counter += 1;
    }

    #[must_use]
    pub fn total(&self) -> u64 {
        let Self {
            runt,
            invalid_src_mac,
            same_port,
            no_destination,
            tx_ring_full,
            umem_exhausted,
            tagged_on_access,
            vlan_not_allowed,
            untagged_no_native,
            truncated_vlan_tag,
            vlan_not_member,
            mtu_exceeded,
        } = *self;
        // Destructured so that a new reason cannot be left out of the sum.
        runt + invalid_src_mac
            + same_port
            + no_destination
            + tx_ring_full
            + umem_exhausted
            + tagged_on_access
            + vlan_not_allowed
            + untagged_no_native
            + truncated_vlan_tag
            + vlan_not_member
            + mtu_exceeded
    }
}

/// Counters of one port, as the forwarder sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    /// Frames and bytes received from the port's wire.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames and bytes queued for transmission on the port's wire.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Received frames flooded (broadcast, multicast or unknown unicast).
    pub rx_flooded: u64,
    /// Of those, unicast to an unknown destination.
    pub rx_unknown_unicast: u64,
    /// TCP and UDP frames whose partial checksum (the client's TX checksum offload is on)
    /// the forwarder completed (`checksum`).
    pub rx_checksums_completed: u64,
    pub drops: DropCounters,
}

/// Learning events of the whole bridge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FdbCounters {
    pub learned: u64,
    pub moved: u64,
    pub aged_out: u64,
    /// Source addresses not learned because the table was full.
    pub table_full: u64,
    /// Source addresses not learned because their port held its limit.
    pub port_limit: u64,
}

/// A label value as the exposition format writes it: a quote, backslash or newline in a
/// domain or interface name would otherwise end the value early and make the whole scrape
/// unparsable.
fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Renders a status snapshot in the Prometheus text exposition format (version 0.0.4):
/// `_total` counters, bytes in bytes, ports and reasons as labels.
#[must_use]
pub fn render_prometheus(status: &Status) -> String {
    let mut out = String::with_capacity(4096);
    let mut family =
        |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = (String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
    let port = |r: &crate::control::InterfaceRow| {
        format!(
            "port=\"{}\",domain=\"{}\"",
            label_value(&r.name),
            label_value(&r.domain)
        )
    };
    let per_port = |f: fn(&crate::control::InterfaceRow) -> u64| {
        status
            .interfaces
            .iter()
            .map(move |r| (format!("{{{}}}", port(r)), f(r)))
            .collect::<Vec<_>>()
    };
    family(
        "vwire_up",
        "gauge",
        "1 while the forwarder answers.",
        &mut std::iter::once((String::new(), 1)),
    );
    family(
        "vwire_port_rx_frames_total",
        "counter",
        "Frames received from the port's wire.",
        &mut per_port(|r| r.counters.rx_frames).into_iter(),
    );
    family(
        "vwire_port_rx_bytes_total",
        "counter",
        "Bytes received from the port's wire.",
        &mut per_port(|r| r.counters.rx_bytes).into_iter(),
    );
    family(
        "vwire_port_tx_frames_total",
        "counter",
        "Frames queued for transmission on the port's wire.",
        &mut per_port(|r| r.counters.tx_frames).into_iter(),
    );
    family(
        "vwire_port_tx_bytes_total",
        "counter",
        "Bytes queued for transmission on the port's wire.",
        &mut per_port(|r| r.counters.tx_bytes).into_iter(),
    );
    family(
        "vwire_port_rx_flooded_frames_total",
        "counter",
        "Received frames flooded (broadcast, multicast, unknown unicast).",
        &mut per_port(|r| r.counters.rx_flooded).into_iter(),
    );
    family(
        "vwire_port_rx_checksums_completed_total",
        "counter",
        "TCP/UDP frames whose partial checksum (TX checksum offload on at the client) vwire completed.",
        &mut per_port(|r| r.counters.rx_checksums_completed).into_iter(),
    );
    family(
        "vwire_port_mtu_bytes",
        "gauge",
        "The port's MTU as the forwarder follows it; longer frames are dropped as mtu_exceeded.",
        &mut per_port(|r| u64::from(r.mtu)).into_iter(),
    );
    let mut drops = Vec::new();
    let mut xdp = Vec::new();
    let mut handoff = Vec::new();
    let mut kernel = Vec::new();
    for r in &status.interfaces {
        let d = r.counters.drops;
        for (reason, n) in [
            ("runt", d.runt),
            ("invalid_src_mac", d.invalid_src_mac),
            ("same_port", d.same_port),
            ("no_destination", d.no_destination),
            ("tx_ring_full", d.tx_ring_full),
            ("umem_exhausted", d.umem_exhausted),
            ("tagged_on_access", d.tagged_on_access),
            ("vlan_not_allowed", d.vlan_not_allowed),
            ("untagged_no_native", d.untagged_no_native),
            ("truncated_vlan_tag", d.truncated_vlan_tag),
            ("vlan_not_member", d.vlan_not_member),
            ("mtu_exceeded", d.mtu_exceeded),
        ] {
            drops.push((format!("{{{},reason=\"{reason}\"}}", port(r)), n));
        }
        for (action, n) in [
            ("redirected", r.xdp.redirected),
            ("passed", r.xdp.passed),
            ("aborted", r.xdp.aborted),
            ("fast_forwarded", r.xdp.fast_rx_frames),
        ] {
            xdp.push((format!("{{{},action=\"{action}\"}}", port(r)), n));
        }
        for (result, n) in [
            ("queued", r.xdp.handed_off),
            ("dropped", r.xdp.handoff_dropped),
        ] {
            handoff.push((format!("{{{},result=\"{result}\"}}", port(r)), n));
        }
        let k = r.kernel;
        for (reason, n) in [
            ("rx_dropped", k.rx_dropped),
            ("rx_ring_full", k.rx_ring_full),
            ("rx_fill_ring_empty", k.rx_fill_ring_empty_descs),
            ("rx_invalid_descs", k.rx_invalid_descs),
            ("tx_invalid_descs", k.tx_invalid_descs),
        ] {
            kernel.push((format!("{{{},reason=\"{reason}\"}}", port(r)), n));
        }
    }
    family(
        "vwire_port_drops_total",
        "counter",
        "Frames the forwarder dropped, by reason.",
        &mut drops.into_iter(),
    );
    family(
        "vwire_port_xdp_frames_total",
        "counter",
        "Frames seen by the XDP program, by action.",
        &mut xdp.into_iter(),
    );
    family(
        "vwire_port_tcp_handoff_frames_total",
        "counter",
        "TCP segments from the port that the fast path queued to another CPU under load, and of those the ones dropped there (their station or port changed while queued).",
        &mut handoff.into_iter(),
    );
    family(
        "vwire_port_kernel_events_total",
        "counter",
        "The kernel's AF_XDP socket counters.",
        &mut kernel.into_iter(),
    );
    let fdb = status.fdb;
    family(
        "vwire_fdb_entries",
        "gauge",
        "Entries in the MAC table.",
        &mut std::iter::once((String::new(), status.fdb_entries as u64)),
    );
    family(
        "vwire_fdb_learned_total",
        "counter",
        "MAC addresses learned.",
        &mut std::iter::once((String::new(), fdb.learned)),
    );
    family(
        "vwire_fdb_moved_total",
        "counter",
        "MAC addresses that moved to another port.",
        &mut std::iter::once((String::new(), fdb.moved)),
    );
    family(
        "vwire_fdb_aged_out_total",
        "counter",
        "MAC addresses aged out.",
        &mut std::iter::once((String::new(), fdb.aged_out)),
    );
    family(
        "vwire_fdb_table_full_total",
        "counter",
        "Source addresses not learned because the table was full.",
        &mut std::iter::once((String::new(), fdb.table_full)),
    );
    if let Some(kicks) = status.tx_thread_kicks {
        family(
            "vwire_tx_thread_kicks_total",
            "counter",
            "Transmissions the tx thread started for the busy forwarder.",
            &mut std::iter::once((String::new(), kicks)),
        );
    }
    if let Some(full) = status.fast_path_table_full {
        family(
            "vwire_fast_path_table_full_total",
            "counter",
            "Addresses the XDP fast path's table had no room for (their frames go through the forwarder).",
            &mut std::iter::once((String::new(), full)),
        );
    }
    let u = status.umem;
    family(
        "vwire_umem_frames",
        "gauge",
        "UMEM frames by where they are.",
        &mut [("free", u.free), ("fill", u.in_fill), ("tx", u.in_tx)]
            .into_iter()
            .map(|(w, n)| (format!("{{state=\"{w}\"}}"), u64::from(n))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{InterfaceRow, UmemRow, XdpRow};

    #[test]
    fn label_values_escape_quotes_backslashes_and_newlines() {
        assert_eq!(label_value("wire"), "wire");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn prometheus_text_has_types_labels_and_values() {
        let mut counters = PortCounters {
            rx_frames: 7,
            rx_bytes: 420,
            ..Default::default()
        };
        counters.drops.count(DropReason::Runt);
        let status = Status {
            interfaces: vec![InterfaceRow {
                name: "vw-a".into(),
                domain: "wire".into(),
                slot: 0,
                ifindex: 3,
                queues: 1,
                mtu: 1500,
                mode: "access vlan 1".into(),
                counters,
                fast_path: true,
                xdp: XdpRow {
                    redirected: 8,
                    fast_rx_frames: 5,
                    handed_off: 2,
                    ..Default::default()
                },
                kernel: Default::default(),
            }],
            umem: UmemRow {
                frames: 16,
                free: 8,
                in_fill: 8,
                in_tx: 0,
                balanced: true,
            },
            fdb_entries: 1,
            fdb: FdbCounters {
                learned: 1,
                ..Default::default()
            },
            tx_thread_kicks: Some(3),
            fast_path_table_full: Some(0),
        };
        let text = render_prometheus(&status);
        assert!(text.contains("# TYPE vwire_port_rx_frames_total counter\nvwire_port_rx_frames_total{port=\"vw-a\",domain=\"wire\"} 7\n"), "{text}");
        assert!(
            text.contains("vwire_port_rx_bytes_total{port=\"vw-a\",domain=\"wire\"} 420"),
            "{text}"
        );
        assert!(
            text.contains(
                "vwire_port_drops_total{port=\"vw-a\",domain=\"wire\",reason=\"runt\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("vwire_port_xdp_frames_total{port=\"vw-a\",domain=\"wire\",action=\"redirected\"} 8"), "{text}");
        assert!(
            text.contains("vwire_port_mtu_bytes{port=\"vw-a\",domain=\"wire\"} 1500\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE vwire_fdb_entries gauge\nvwire_fdb_entries 1\n"),
            "{text}"
        );
        assert!(text.contains("vwire_tx_thread_kicks_total 3\n"), "{text}");
        assert!(text.contains("vwire_port_xdp_frames_total{port=\"vw-a\",domain=\"wire\",action=\"fast_forwarded\"} 5"), "{text}");
        assert!(
            text.contains("vwire_port_tcp_handoff_frames_total{port=\"vw-a\",domain=\"wire\",result=\"queued\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vwire_fast_path_table_full_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("vwire_umem_frames{state=\"fill\"} 8"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "bad sample line {line:?}");
        }
    }

    #[test]
    fn each_reason_has_its_own_counter() {
        let reasons = [
            DropReason::Runt,
            DropReason::InvalidSrcMac,
            DropReason::SamePort,
            DropReason::NoDestination,
            DropReason::TxRingFull,
            DropReason::UmemExhausted,
            DropReason::TaggedOnAccess,
            DropReason::VlanNotAllowed,
            DropReason::UntaggedNoNative,
            DropReason::TruncatedVlanTag,
            DropReason::VlanNotMember,
            DropReason::MtuExceeded,
        ];
        let mut drops = DropCounters::default();
        for (i, reason) in reasons.iter().enumerate() {
            for _ in 0..=i {
                drops.count(*reason);
            }
        }
        assert_eq!(
            [
                drops.runt,
                drops.invalid_src_mac,
                drops.same_port,
                drops.no_destination,
                drops.tx_ring_full,
                drops.umem_exhausted,
                drops.tagged_on_access,
                drops.vlan_not_allowed,
                drops.untagged_no_native,
                drops.truncated_vlan_tag,
                drops.vlan_not_member,
                drops.mtu_exceeded,
            ],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!(drops.total(), 78);
    }
}
