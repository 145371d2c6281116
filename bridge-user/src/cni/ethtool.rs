//! The legacy ethtool ioctl for TX checksum offload, TX VLAN offload and GRO: the one
//! `unsafe` call of the plugin.
//!
//! A veth sends TCP and UDP with partial checksums; forwarded through AF_XDP unchanged the
//! receiver drops them (PLATFORM.md). `ETHTOOL_STXCSUM` clears the same feature bits as
//! `ethtool -K IF tx off` (`NETIF_F_CSUM_MASK`, kernel `net/ethtool/ioctl.c`,
//! `ethtool_get_feature_mask`), and the kernel then drops the features that need them (TSO).
//!
//! A veth also offloads 802.1Q tag insertion: a VLAN interface on the pod's end leaves the
//! tag in the skb's metadata (`vlan_tci`), not in the frame, and XDP and AF_XDP see only the
//! frame, so the bridge would take the pod's tagged traffic as untagged. `ETHTOOL_SFLAGS`
//! without `ETH_FLAG_TXVLAN` clears `NETIF_F_HW_VLAN_CTAG_TX` (`ethtool -K IF txvlan off`),
//! and the VLAN driver then writes the tag into the frame.
#![allow(
    unsafe_code,
    reason = "SIOCETHTOOL has no safe wrapper in nix or libc; one ioctl, fenced here"
)]

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// `include/uapi/linux/ethtool.h`: get / set TX checksum offload, set GRO.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;
/// Get / set the legacy feature flags, and the one of them that is 802.1Q TX offload.
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_SFLAGS: u32 = 0x26;
const ETH_FLAG_TXVLAN: u32 = 1 << 7;
/// `include/uapi/linux/sockios.h`; typed as `ioctl`'s request argument, which is `c_ulong` on
/// glibc and `c_int` on musl (the plugin is shipped as a static musl binary).
const SIOCETHTOOL: libc::Ioctl = 0x8946;

/// `struct ethtool_value` (`include/uapi/linux/ethtool.h`).
#[repr(C)]
#[derive(Debug, Default)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns TX checksum offload on `ifname` (in the calling thread's namespace) on or off.
///
/// # Errors
/// No such interface, or the driver refuses.
pub fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    ethtool(ifname, &mut value)
}

/// Turns GRO on `ifname` on or off (`ethtool -K IF gro on`). On a veth, GRO at one end lets
/// the other end take XDP-redirected frames: vwire's fast path.
///
/// # Errors
/// No such interface, or the driver refuses.
pub fn set_gro(ifname: &str, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: u32::from(on),
    };
    ethtool(ifname, &mut value)
}

/// Turns 802.1Q tag insertion offload on `ifname` off (`ethtool -K IF txvlan off`), keeping
/// the other legacy flags as they are.
///
/// # Errors
/// No such interface, or the driver refuses.
pub fn set_tx_vlan_offload_off(ifname: &str) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    ethtool(ifname, &mut value)?;
    if value.data & ETH_FLAG_TXVLAN == 0 {
        return Ok(());
    }
    value.cmd = ETHTOOL_SFLAGS;
    value.data &= !ETH_FLAG_TXVLAN;
    ethtool(ifname, &mut value)
}

/// Whether TX checksum offload is on for `ifname`.
///
/// # Errors
/// No such interface.
pub fn tx_checksum(ifname: &str) -> io::Result<bool> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTXCSUM,
        data: 0,
    };
    ethtool(ifname, &mut value)?;
    Ok(value.data != 0)
}

fn ethtool(ifname: &str, value: &mut EthtoolValue) -> io::Result<()> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} is not an interface name"),
        ));
    }
    let sock: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, &src) in name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let mut ifr = libc::ifreq {
        ifr_name: name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: std::ptr::from_mut(value).cast(),
        },
    };
    // SAFETY: `sock` is an open socket; `ifr` is a valid, NUL-terminated ifreq whose data
    // pointer refers to `value`, an `ethtool_value` that outlives the call. SIOCETHTOOL reads
    // and writes only `sizeof(struct ethtool_value)` bytes there for (G|S)TXCSUM, (G|S)FLAGS
    // and SGRO.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
