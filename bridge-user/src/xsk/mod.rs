//! AF_XDP sockets over one shared UMEM: the daemon's `unsafe` code, but for `forward`'s
//! access to frame bytes (`handle`, `fan_out` and `stage`, each saying why it owns the frame)
//! and one ioctl in `cni::ethtool`.
//!
//! Design (in the spirit of s2n-quic-xdp): one [`Umem`] holds every frame; one [`Socket`]
//! per (port, rx queue) shares it with `XDP_SHARED_UMEM`, each with its own fill and
//! completion rings (the kernel requires that for a different device or queue). Moving a
//! frame from one port to another is therefore moving its descriptor from one socket's rx
//! ring to another's tx ring; the bytes are not copied.
//!
//! Invariants:
//! - Every frame is in exactly one place at a time: the caller's free list, a fill ring, an
//!   rx ring, a tx ring or a completion ring. The rings never invent or duplicate addresses;
//!   callers account for frames with [`Socket::fill_outstanding`] and
//!   [`Socket::tx_outstanding`].
//! - Frame bytes are reached only through [`Umem::frame`] / [`Umem::frame_mut`], which are
//!   `unsafe` because only the owner of a frame (see above) may touch it.
//! - Nothing here knows about bridging.
#![allow(
    unsafe_code,
    reason = "the only module that talks to the kernel's AF_XDP ABI"
)]

mod mmap;
pub mod ring;
mod socket;
pub mod sys;
mod umem;

pub use mmap::Mmap;
pub use ring::Desc;
pub use socket::{Socket, SocketConfig, SocketStats};
pub use umem::{FrameAddr, Umem};

use std::io;

/// Errors setting up AF_XDP sockets and the UMEM.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// A system call failed.
    #[error("{call} failed for {what}")]
    Syscall {
        call: &'static str,
        what: String,
        #[source]
        source: io::Error,
    },
    /// The UMEM geometry is unusable.
    #[error("invalid UMEM geometry: {0}")]
    Geometry(&'static str),
}

impl XskError {
    /// The queue is still held by a socket that was just closed: the kernel releases it
    /// from a workqueue shortly after `close`, so binding again a moment later succeeds.
    #[must_use]
    pub fn is_queue_busy(&self) -> bool {
        matches!(self, Self::Syscall { call: "bind(AF_XDP)", source, .. } if source.raw_os_error() == Some(libc::EBUSY))
    }

    pub(crate) fn syscall(call: &'static str, what: impl Into<String>, source: io::Error) -> Self {
        Self::Syscall {
            call,
            what: what.into(),
            source,
        }
    }
}
