//! The UMEM: one anonymous mapping cut into equal, power-of-two frames.

use super::{mmap::Mmap, XskError};

/// Offset of a frame's chunk in the UMEM (aligned mode: a multiple of the frame size).
pub type FrameAddr = u64;

/// The frame memory every socket shares.
#[derive(Debug)]
pub struct Umem {
    area: Mmap,
    frame_size: u32,
    frame_count: u32,
}

impl Umem {
    /// Maps `frame_count` frames of `frame_size` bytes.
    ///
    /// # Errors
    /// A frame size that is not a power of two in 2048..=4096 (the kernel's aligned-mode
    /// rule), no frames, or a failed `mmap`.
    pub fn new(frame_count: u32, frame_size: u32) -> Result<Self, XskError> {
        if !frame_size.is_power_of_two() || !(2048..=4096).contains(&frame_size) {
            return Err(XskError::Geometry("frame size must be 2048 or 4096"));
        }
        if frame_count == 0 {
            return Err(XskError::Geometry("at least one frame"));
        }
        let len = frame_count as usize * frame_size as usize;
        let area = Mmap::anonymous(len).map_err(|e| XskError::syscall("mmap", "UMEM area", e))?;
        Ok(Self {
            area,
            frame_size,
            frame_count,
        })
    }

    #[must_use]
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    #[must_use]
    pub fn frame_count(&self) -> u32 {
        self.frame_count
    }

    /// Every frame's address, to seed the free list.
    pub fn frames(&self) -> impl Iterator<Item = FrameAddr> + use<> {
        let size = u64::from(self.frame_size);
        (0..u64::from(self.frame_count)).map(move |i| i * size)
    }

    /// The chunk an address (possibly with an offset into the frame) belongs to.
    #[must_use]
    pub fn chunk_of(&self, addr: u64) -> FrameAddr {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// The `XDP_UMEM_REG` argument describing this area.
    pub(super) fn registration(&self) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.area.as_ptr() as u64,
            len: self.area.len() as u64,
            chunk_size: self.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        }
    }

    /// A UMEM address as a byte offset; addresses are below the area's length, a `usize`.
    fn offset(addr: u64) -> usize {
        usize::try_from(addr).expect("UMEM addresses fit usize")
    }

    /// Whether `[addr, addr + len)` lies inside one frame.
    #[must_use]
    pub fn contains(&self, addr: u64, len: usize) -> bool {
        let chunk = self.chunk_of(addr);
        chunk < self.area.len() as u64 && addr + len as u64 <= chunk + u64::from(self.frame_size)
    }

    /// Starts loading a frame's first cache line, so that reading its headers later does not
    /// wait: received frames were written by the kernel on another CPU. Any address will do
    /// (a prefetch never faults), so the descriptor is not checked here.
    pub fn prefetch(&self, addr: u64) {
        crate::cache::prefetch(self.area.as_ptr().wrapping_add(Self::offset(addr)));
    }

    /// The bytes `[addr, addr + len)` of a frame.
    ///
    /// # Safety
    /// The caller owns the frame (it is on no ring), and no `frame_mut` of it is alive.
    ///
    /// # Panics
    /// If the range is not inside one frame (a kernel or caller bug).
    #[must_use]
    pub unsafe fn frame(&self, addr: u64, len: usize) -> &[u8] {
        assert!(
            self.contains(addr, len),
            "frame range {addr:#x}+{len} outside the UMEM"
        );
        // SAFETY: in bounds (checked above); the caller guarantees no concurrent writer.
        unsafe { std::slice::from_raw_parts(self.area.as_ptr().add(Self::offset(addr)), len) }
    }

    /// The bytes `[addr, addr + len)` of a frame, writable.
    ///
    /// # Safety
    /// The caller owns the frame (it is on no ring) and holds no other view of it.
    ///
    /// # Panics
    /// If the range is not inside one frame.
    #[expect(
        clippy::mut_from_ref,
        reason = "frames are disjoint; ownership is by descriptor, see module docs"
    )]
    #[must_use]
    pub unsafe fn frame_mut(&self, addr: u64, len: usize) -> &mut [u8] {
        assert!(
            self.contains(addr, len),
            "frame range {addr:#x}+{len} outside the UMEM"
        );
        // SAFETY: in bounds; the caller guarantees exclusive ownership of this frame.
        unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(Self::offset(addr)), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_is_checked() {
        assert!(Umem::new(16, 1000).is_err());
        assert!(Umem::new(0, 2048).is_err());
        let umem = Umem::new(4, 2048).unwrap();
        assert_eq!(umem.frames().collect::<Vec<_>>(), vec![0, 2048, 4096, 6144]);
        assert_eq!(umem.chunk_of(2048 + 256), 2048);
        assert!(umem.contains(2048 + 256, 1792));
        assert!(!umem.contains(2048 + 256, 1793));
        assert!(!umem.contains(4 * 2048, 1));
    }

    #[test]
    fn frames_are_disjoint_memory() {
        let umem = Umem::new(2, 2048).unwrap();
        // SAFETY: the test owns every frame; the views do not overlap.
        unsafe {
            umem.frame_mut(0, 4).copy_from_slice(&[1, 2, 3, 4]);
            umem.frame_mut(2048, 4).copy_from_slice(&[5, 6, 7, 8]);
            assert_eq!(umem.frame(0, 4), &[1, 2, 3, 4]);
            assert_eq!(umem.frame(2048, 4), &[5, 6, 7, 8]);
        }
    }
}
