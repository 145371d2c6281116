//! vwire: a userspace L2 bridge. XDP steers frames into AF_XDP sockets; this crate switches
//! them between ports.
//!
//! Each module says what it is in its own file (outer docs here would make rustdoc resolve
//! the links of those in this scope). `unsafe` is denied everywhere but in `xsk`, `cache`, the
//! `forward` functions that reach into frame bytes (and `flood`, which hands one of them a
//! frame), and `cni::ethtool`'s one ioctl.
#![deny(unsafe_code)]

pub mod affinity;
pub mod cache;
pub mod checksum;
pub mod cli;
pub mod cni;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fastpath;
pub mod fdb;
pub mod forward;
pub mod frames;
pub mod loader;
pub mod metrics;
pub mod port;
pub mod txhelper;
pub mod uplink;
pub mod vlan;
pub mod xdp_features;
pub mod xsk;
