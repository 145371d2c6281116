//! One AF_XDP socket bound to one (interface, rx queue), with its four rings.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    sync::Arc,
};

use super::{
    mmap::Mmap,
    ring::{Completion, Consumer, Desc, Fill, Layout, Producer, Rx, Tx},
    sys, Umem, XskError,
};

/// `XDP_MAX_TX_SKB_BUDGET` (if_xdp.h, Linux 6.16+): how many frames one `sendto` may
/// transmit in copy mode (the default is 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Ring sizes of a socket; all four rings get `ring_size` entries.
#[derive(Clone, Copy, Debug)]
pub struct SocketConfig {
    /// Entries per ring, a power of two.
    pub ring_size: u32,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self { ring_size: 1024 }
    }
}

/// Counters the kernel keeps per socket (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SocketStats {
    /// Dropped, for any reason: a frame larger than a UMEM frame, and in copy mode also each
    /// frame counted in `rx_fill_ring_empty_descs`.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Dropped because the rx ring was full: the forwarder fell behind.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived (in copy mode, the frame is dropped).
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

impl std::ops::AddAssign for SocketStats {
    fn add_assign(&mut self, o: Self) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += o.tx_ring_empty_descs;
    }
}

/// An AF_XDP socket bound to one queue of one interface, sharing the [`Umem`].
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    pub fill: Fill,
    pub completion: Completion,
    pub rx: Rx,
    pub tx: Tx,
    /// Frames given to the kernel on the fill ring and not yet back on the rx ring.
    pub fill_outstanding: u32,
    /// Frames put on the tx ring and not yet back on the completion ring.
    pub tx_outstanding: u32,
    queue: u32,
}

impl Socket {
    /// Creates a socket and binds it to `queue` of `ifindex`.
    ///
    /// The first socket of a UMEM (`shared_with: None`) registers it and binds in copy mode
    /// with need_wakeup; later ones pass any bound socket of the same UMEM and inherit that
    /// mode (the kernel rejects mode flags together with `XDP_SHARED_UMEM`).
    ///
    /// # Errors
    /// Any failed setup call, named with the interface and queue. `EINVAL` from `bind`
    /// usually means the queue does not exist, `EBUSY` that another socket holds it.
    pub fn bind(
        umem: &Umem,
        ifname: &str,
        ifindex: u32,
        queue: u32,
        shared_with: Option<BorrowedFd<'_>>,
        config: SocketConfig,
    ) -> Result<Self, XskError> {
        let what = || format!("{ifname} queue {queue}");
        let err = |call: &'static str| move |e: io::Error| XskError::syscall(call, what(), e);
        let size = config.ring_size;
        if !size.is_power_of_two() {
            return Err(XskError::Geometry("ring size must be a power of two"));
        }
        let fd = sys::xsk_socket().map_err(err("socket(AF_XDP)"))?;
        if shared_with.is_none() {
            sys::set_xdp_opt(fd.as_fd(), libc::XDP_UMEM_REG, &umem.registration())
                .map_err(err("setsockopt(XDP_UMEM_REG)"))?;
        }
        sys::set_xdp_opt(fd.as_fd(), libc::XDP_UMEM_FILL_RING, &size)
            .map_err(err("setsockopt(XDP_UMEM_FILL_RING)"))?;
        sys::set_xdp_opt(fd.as_fd(), libc::XDP_UMEM_COMPLETION_RING, &size)
            .map_err(err("setsockopt(XDP_UMEM_COMPLETION_RING)"))?;
        sys::set_xdp_opt(fd.as_fd(), libc::XDP_RX_RING, &size)
            .map_err(err("setsockopt(XDP_RX_RING)"))?;
        sys::set_xdp_opt(fd.as_fd(), libc::XDP_TX_RING, &size)
            .map_err(err("setsockopt(XDP_TX_RING)"))?;
        // Older kernels lack the option; they send 32 frames per kick, which still works.
        if let Err(e) = sys::set_xdp_opt(fd.as_fd(), XDP_MAX_TX_SKB_BUDGET, &size.cast_signed()) {
            tracing::debug!(error = %e, "XDP_MAX_TX_SKB_BUDGET not accepted; sendto sends 32 frames per call");
        }

        let (offsets, _) =
            sys::get_xdp_opt::<libc::xdp_mmap_offsets>(fd.as_fd(), libc::XDP_MMAP_OFFSETS)
                .map_err(err("getsockopt(XDP_MMAP_OFFSETS)"))?;
        let map = |off: libc::xdp_ring_offset,
                   entry: usize,
                   pgoff: u64|
         -> Result<(Arc<Mmap>, Layout), XskError> {
            let len =
                usize::try_from(off.desc).expect("ring offsets are small") + size as usize * entry;
            let m = Mmap::shared(fd.as_fd(), len, pgoff).map_err(err("mmap(ring)"))?;
            Ok((Arc::new(m), Layout::from(off)))
        };
        let (rx_map, rx_layout) = map(
            offsets.rx,
            size_of::<Desc>(),
            libc::XDP_PGOFF_RX_RING as u64,
        )?;
        let (tx_map, tx_layout) = map(
            offsets.tx,
            size_of::<Desc>(),
            libc::XDP_PGOFF_TX_RING as u64,
        )?;
        let (fill_map, fill_layout) =
            map(offsets.fr, size_of::<u64>(), libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let (comp_map, comp_layout) = map(
            offsets.cr,
            size_of::<u64>(),
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        // SAFETY: each layout comes from XDP_MMAP_OFFSETS for the mapping it is paired with,
        // with the ring size configured above (a power of two).
        let (rx, tx, fill, completion) = unsafe {
            (
                Consumer::new(rx_map, rx_layout, size),
                Producer::new(tx_map, tx_layout, size),
                Producer::new(fill_map, fill_layout, size),
                Consumer::new(comp_map, comp_layout, size),
            )
        };

        let addr = libc::sockaddr_xdp {
            sxdp_family: u16::try_from(libc::AF_XDP).expect("AF_XDP fits sa_family_t"),
            sxdp_flags: match shared_with {
                None => libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP,
                Some(_) => libc::XDP_SHARED_UMEM,
            },
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared_with.map_or(0, |fd| fd.as_raw_fd().cast_unsigned()),
        };
        sys::bind_xdp(fd.as_fd(), &addr).map_err(err("bind(AF_XDP)"))?;
        Ok(Self {
            fd,
            fill,
            completion,
            rx,
            tx,
            fill_outstanding: 0,
            tx_outstanding: 0,
            queue,
        })
    }

    #[must_use]
    pub fn queue(&self) -> u32 {
        self.queue
    }

    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Transmits what is on the tx ring. Returns `false` when the kernel was busy and the
    /// caller should kick again later.
    ///
    /// # Errors
    /// Errors other than the transient `EAGAIN`, `EBUSY` and `ENOBUFS`.
    pub fn kick_tx(&self) -> io::Result<bool> {
        sys::kick_tx(self.fd.as_fd())
    }

    /// Wakes the kernel to use the fill ring, if it asked for that.
    pub fn wake_rx_if_needed(&self) {
        if self.fill.needs_wakeup() {
            let _ = sys::kick_rx(self.fd.as_fd());
        }
    }

    /// The kernel's counters for this socket.
    ///
    /// # Errors
    /// `getsockopt` failed.
    pub fn stats(&self) -> io::Result<SocketStats> {
        let (s, _) =
            sys::get_xdp_opt::<libc::xdp_statistics>(self.fd.as_fd(), libc::XDP_STATISTICS)?;
        Ok(SocketStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
