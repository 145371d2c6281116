//! Types shared by the XDP program (`bridge-ebpf`) and the daemon (`bridge-user`).
//!
//! - [`maps`]: names, sizes and value layouts of the BPF maps both sides touch.
//! - [`wire`]: zero-copy views of Ethernet and 802.1Q headers, shared so the XDP program
//!   and the forwarder parse frames the same way.
#![no_std]

pub mod maps;
pub mod wire;
