//! AF_PACKET sockets with a `TPACKET_V2` mmap ring, for TX (generator) and RX (sink).
//!
//! All of this crate's unsafe code for sockets lives here. Every frame slot of the ring
//! starts with a `tpacket2_hdr`; ownership passes between user space and the kernel through
//! its `tp_status` field, which is read and written with acquire/release ordering.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context};

/// Bytes per TX slot: holds a 1518-byte frame plus the header.
const TX_SLOT_SIZE: u32 = 2048;
/// Bytes per RX slot: the header and the frame's first ~190 bytes, enough for every header
/// and the stamp. The kernel truncates longer frames (`tp_len` keeps their length), so the
/// sink, whose capture runs inside whatever transmits to it (the bridge's or the
/// forwarder's `sendto`), copies and touches as little as it can: with full 2048-byte slots
/// its ring spans 32 MiB, and reaching each slot's header was the costliest step of the
/// capture (`packet_lookup_frame`).
const RX_SLOT_SIZE: u32 = 256;
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where TX data starts in a slot.
const TX_DATA_OFF: usize = 32;
/// `sizeof(struct virtio_net_hdr)`: TX data starts with one (`PACKET_VNET_HDR`), the frame
/// follows it.
const VNET_HDR_LEN: usize = 10;
/// Offset of the virtio header's `hdr_len` (little endian), how much of the frame the kernel
/// copies into the skb's linear part.
const VNET_HDR_LEN_OFF: usize = 2;
/// Where a TX slot's frame starts.
const TX_FRAME_OFF: usize = TX_DATA_OFF + VNET_HDR_LEN;

fn last_err(what: &str) -> anyhow::Error {
    anyhow::Error::new(io::Error::last_os_error()).context(what.to_owned())
}

/// Resolves an interface name to its index (in the current network namespace).
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(last_err(&format!("no interface {name:?}")));
    }
    Ok(idx)
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
    what: &str,
) -> anyhow::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>())?;
    // SAFETY: `val` points to a live `T` of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(val).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(last_err(what));
    }
    Ok(())
}

/// Direction of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Tx,
    Rx,
}

/// A bound AF_PACKET socket and its mapped `TPACKET_V2` ring.
#[derive(Debug)]
pub struct PacketRing {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    slots: u32,
    slot_size: u32,
    next: u32,
}

impl PacketRing {
    /// Opens a socket on `dev` with a ring of `slots` slots (a multiple of 32).
    ///
    /// TX sockets use protocol 0, so they receive nothing, and `PACKET_QDISC_BYPASS`, so
    /// frames go straight to the driver's xmit. RX sockets see every frame (`ETH_P_ALL`).
    pub fn open(dev: &str, dir: Dir, slots: u32) -> anyhow::Result<Self> {
        let idx = ifindex(dev)?;
        #[allow(clippy::cast_possible_truncation, reason = "ETH_P_ALL is 3")]
        let proto = match dir {
            Dir::Tx => 0u16,
            Dir::Rx => (libc::ETH_P_ALL as u16).to_be(),
        };
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(last_err("socket(AF_PACKET)"));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let version: libc::c_int = 1; // TPACKET_V2 (libc has it only as an enum)
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &version,
            "PACKET_VERSION",
        )?;
        if dir == Dir::Tx {
            let one: libc::c_int = 1;
            setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one,
                "PACKET_QDISC_BYPASS",
            )?;
            // Drop malformed frames instead of stopping the ring on them.
            setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_LOSS,
                &one,
                "PACKET_LOSS",
            )?;
            // A virtio header in front of each frame, whose `hdr_len` asks the kernel to copy
            // the whole frame into the skb (see `tx_commit`). Without it the ring sends the
            // frame past its Ethernet header as a page fragment that points into the ring,
            // and a veth must copy that into a new page before it can pass the skb on
            // (`skb_copy_ubufs`): a page allocated, copied and freed per frame that traffic
            // from a socket, whose skbs are linear, never costs.
            setsockopt(
                &fd,
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                &one,
                "PACKET_VNET_HDR",
            )?;
            let sndbuf: libc::c_int = 4 << 20;
            let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf, "SO_SNDBUF");
        }
        let slot_size = match dir {
            Dir::Tx => TX_SLOT_SIZE,
            Dir::Rx => RX_SLOT_SIZE,
        };
        let block_size: u32 = 1 << 16;
        let per_block = block_size / slot_size;
        let slots = slots.div_ceil(per_block) * per_block;
        let req = libc::tpacket_req {
            tp_block_size: block_size,
            tp_block_nr: slots / per_block,
            tp_frame_size: slot_size,
            tp_frame_nr: slots,
        };
        let opt = match dir {
            Dir::Tx => libc::PACKET_TX_RING,
            Dir::Rx => libc::PACKET_RX_RING,
        };
        setsockopt(&fd, libc::SOL_PACKET, opt, &req, "PACKET_{TX,RX}_RING")?;
        let map_len = slots as usize * slot_size as usize;
        // SAFETY: mapping the ring the kernel just allocated for this socket; length matches.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(last_err("mmap(packet ring)"));
        }
        let map = NonNull::new(map.cast::<u8>()).context("mmap returned null")?;
        let ring = Self {
            fd,
            map,
            map_len,
            slots,
            slot_size,
            next: 0,
        };
        // SAFETY: zeroed sockaddr_ll is a valid value; fields are filled below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        #[allow(clippy::cast_possible_truncation, reason = "AF_PACKET fits in u16")]
        {
            sll.sll_family = libc::AF_PACKET as u16;
        }
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(idx)?;
        let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())?;
        // SAFETY: `sll` is a valid sockaddr_ll of `len` bytes.
        let rc = unsafe { libc::bind(ring.fd.as_raw_fd(), std::ptr::from_ref(&sll).cast(), len) };
        if rc != 0 {
            return Err(last_err(&format!("bind(AF_PACKET, {dev})")));
        }
        Ok(ring)
    }

    /// Number of slots.
    #[must_use]
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Where byte `off` of slot `i` lies in the mapping.
    fn slot_at(&self, i: u32, off: usize) -> *mut u8 {
        debug_assert!(i < self.slots && off < self.slot_size as usize);
        // SAFETY: `i < slots` and `off < slot_size`, so the offset stays inside the mapping.
        unsafe {
            self.map
                .as_ptr()
                .add(i as usize * self.slot_size as usize + off)
        }
    }

    fn hdr(&self, i: u32) -> *mut libc::tpacket2_hdr {
        self.slot_at(i, 0).cast()
    }

    fn status(&self, i: u32) -> &AtomicU32 {
        // SAFETY: `tp_status` is the first, 4-byte-aligned field of a live slot header, shared
        // with the kernel, so it is accessed only atomically.
        unsafe { AtomicU32::from_ptr(std::ptr::addr_of_mut!((*self.hdr(i)).tp_status)) }
    }

    /// TX: the next free slot's frame area, or `None` if the kernel still owns it.
    pub fn tx_slot(&mut self) -> Option<&mut [u8]> {
        let st = self.status(self.next).load(Ordering::Acquire);
        if st & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0 {
            return None;
        }
        // SAFETY: the slot is ours (status says the kernel is done with it); the data area
        // lies within the slot.
        let data = unsafe {
            std::slice::from_raw_parts_mut(
                self.slot_at(self.next, TX_FRAME_OFF),
                self.slot_size as usize - TX_FRAME_OFF,
            )
        };
        Some(data)
    }

    /// TX: hands the slot returned by [`Self::tx_slot`] to the kernel with a frame of `len`
    /// bytes.
    pub fn tx_commit(&mut self, len: u16) {
        let i = self.next;
        // SAFETY: the slot is still ours; its header, `tp_len` included, and the virtio header
        // in front of the frame lie inside it, and the kernel reads them only after it sees
        // SEND_REQUEST, which the release store below publishes.
        unsafe {
            let vnet = std::slice::from_raw_parts_mut(self.slot_at(i, TX_DATA_OFF), VNET_HDR_LEN);
            vnet.fill(0);
            vnet[VNET_HDR_LEN_OFF..VNET_HDR_LEN_OFF + 2].copy_from_slice(&len.to_le_bytes());
            #[allow(clippy::cast_possible_truncation, reason = "VNET_HDR_LEN is 10")]
            {
                (*self.hdr(i)).tp_len = u32::from(len) + VNET_HDR_LEN as u32;
            }
        }
        self.status(i)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.next = (i + 1) % self.slots;
    }

    /// TX: asks the kernel to send every slot marked for sending. Returns bytes queued.
    pub fn tx_kick(&self, wait: bool) -> anyhow::Result<usize> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        // SAFETY: with a TX ring, send(2) with no buffer flushes the ring.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, flags) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) {
                return Ok(0);
            }
            return Err(anyhow::Error::new(e).context("send(TX ring)"));
        }
        #[allow(clippy::cast_sign_loss, reason = "checked non-negative above")]
        Ok(rc as usize)
    }

    /// TX: true when every slot is back with user space.
    #[must_use]
    pub fn tx_idle(&self) -> bool {
        (0..self.slots).all(|i| {
            self.status(i).load(Ordering::Acquire)
                & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING)
                == 0
        })
    }

    /// RX: calls `f` on the next received frame, if any, with the bytes captured of it (its
    /// headers and stamp: slots are 256 bytes) and its length on the wire, and returns the
    /// slot to the kernel.
    pub fn rx_next<R>(&mut self, f: impl FnOnce(&[u8], u32) -> R) -> Option<R> {
        let i = self.next;
        let st = self.status(i).load(Ordering::Acquire);
        if st & libc::TP_STATUS_USER == 0 {
            return None;
        }
        let hdr = self.hdr(i);
        // SAFETY: the slot is ours until we store TP_STATUS_KERNEL; the kernel wrote
        // `tp_mac`/`tp_snaplen` inside the slot before publishing TP_STATUS_USER.
        let r = unsafe {
            let mac = usize::from((*hdr).tp_mac);
            let captured = ((*hdr).tp_snaplen as usize).min(self.slot_size as usize - mac);
            f(
                std::slice::from_raw_parts(self.slot_at(i, mac), captured),
                (*hdr).tp_len,
            )
        };
        self.status(i)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (i + 1) % self.slots;
        Some(r)
    }

    /// Waits up to `timeout_ms` for the socket to be readable (RX) or writable (TX).
    pub fn wait(&self, dir: Dir, timeout_ms: i32) {
        let events = match dir {
            Dir::Tx => libc::POLLOUT,
            Dir::Rx => libc::POLLIN,
        };
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }

    /// Kernel drop counter of an RX socket (`PACKET_STATISTICS`; reading resets it).
    pub fn rx_drops(&self) -> u64 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = libc::socklen_t::try_from(size_of::<libc::tpacket_stats>()).unwrap_or(8);
        // SAFETY: `st` is a writable tpacket_stats and `len` its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut st).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return 0;
        }
        u64::from(st.tp_drops)
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `open`; no slices outlive `self`.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_cpu(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity({cpu}): {}", io::Error::last_os_error());
        }
    }
    Ok(())
}
