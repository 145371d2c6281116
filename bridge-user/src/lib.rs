//! vwire: a userspace L2 bridge. XDP steers frames into AF_XDP sockets; this crate switches
//! them between ports.
#![deny(unsafe_code)]

/// Sleeping on the CPU that will wake the forwarder.
pub mod affinity;
/// The `vwire` command line and the client side of the control socket.
pub mod cli;
/// `vwire-cni`: the CNI plugin that gives pods an interface on a wire.
pub mod cni;
/// The TOML config file and its validation.
pub mod config;
/// The typed interface between the control path and the forwarder, and the API server.
pub mod control;
/// Start-up, shutdown and signal handling.
pub mod daemon;
/// The XDP fast path's maps, mirrored from the forwarder's ports and FDB.
pub mod fastpath;
/// The MAC learning table.
pub mod fdb;
/// The per-frame loop: classify, learn, look up, stage, transmit.
pub mod forward;
/// The UMEM free list and which port holds each lent frame.
pub mod frames;
/// Loads and attaches the XDP program and keeps its maps.
pub mod loader;
/// Counters for every port and every drop reason.
pub mod metrics;
/// Ports and their identifiers.
pub mod port;
/// The second thread that transmits for some ports under load.
pub mod txhelper;
/// The VXLAN uplink port that carries a wire to other nodes.
pub mod uplink;
/// 802.1Q classification, membership and in-place tag push/pop.
pub mod vlan;
/// What XDP an interface supports, from the kernel's `netdev` netlink family.
pub mod xdp_features;
/// AF_XDP sockets, rings and the UMEM: the daemon's unsafe code. Elsewhere only three
/// `forward` functions call `Umem`'s unsafe frame accessors (each states why it owns the
/// frame), and `cni::ethtool` makes one ioctl.
pub mod xsk;
