//! An owned memory mapping, unmapped on drop.

use std::{io, os::fd::BorrowedFd, ptr::NonNull};

/// How far apart the kernel lays out a BPF array's values: `round_up(value_size, 8)`, so 8
/// for u32s. Known here only, as the mapping's size and its indexing must agree.
const BPF_ARRAY_STRIDE: usize = 8;

/// A `mmap`ed region owned by this value.
#[derive(Debug)]
pub struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; who may touch which bytes is
// governed by the rings and the frame ownership rule of the `xsk` module.
unsafe impl Send for Mmap {}
// SAFETY: `&Mmap` only hands out the base pointer and length; every access through them is
// `unsafe` elsewhere and follows the ring protocol, so sharing the handle is harmless.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Anonymous, private, zeroed memory of `len` bytes (the UMEM area, or test rings), on
    /// huge pages where the kernel has them (see [`crate::cache`]), and faulted in now.
    pub fn anonymous(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        let map = Self::from_raw(ptr, len)?;
        crate::cache::advise_huge_pages(map.ptr.as_ptr(), len);
        // Fault it all in now rather than on the first frames (MAP_POPULATE would have done
        // so before the advice). Kernels before 5.14 lack this and fault pages on first use.
        // SAFETY: populating changes no contents: the pages are zero either way.
        if unsafe { libc::madvise(ptr, len, libc::MADV_POPULATE_WRITE) } != 0 {
            tracing::debug!(
                error = %io::Error::last_os_error(),
                "MADV_POPULATE_WRITE: pages fault on first use"
            );
        }
        Ok(map)
    }

    /// Maps kernel memory behind `fd` at page offset `offset`, shared: a ring of an AF_XDP
    /// socket, or the values of an mmapable BPF array.
    pub fn shared(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: maps a region the kernel owns for this socket; the kernel validates len/offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_raw(ptr, len)
    }

    /// Maps the values of a `BPF_F_MMAPABLE` array of `entries` u32s (see
    /// [`Mmap::bpf_array_u32`]).
    pub fn bpf_array(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        Self::shared(fd, entries as usize * BPF_ARRAY_STRIDE, 0)
    }

    /// The `index`th u32 of the mapping as an atomic: a value a BPF program stores to while
    /// we read it, or reads while we store it. Private: BPF arrays are read through
    /// [`Mmap::bpf_array_u32`], which knows their stride.
    ///
    /// # Panics
    /// The mapping is too short.
    #[must_use]
    fn u32_at(&self, index: usize) -> &std::sync::atomic::AtomicU32 {
        assert!(
            (index + 1) * 4 <= self.len,
            "u32 {index} of {} bytes",
            self.len
        );
        // SAFETY: mappings are page-aligned and hold this u32 (checked), so the pointer is
        // valid and aligned for as long as `self` lives; AtomicU32 has u32's layout and every
        // bit pattern is a valid value.
        unsafe {
            &*self
                .ptr
                .as_ptr()
                .cast::<std::sync::atomic::AtomicU32>()
                .add(index)
        }
    }

    /// Entry `index` of a mapped BPF array of `u32`s (the value first in its stride).
    ///
    /// # Panics
    /// The mapping is too short.
    #[must_use]
    pub fn bpf_array_u32(&self, index: usize) -> &std::sync::atomic::AtomicU32 {
        self.u32_at(index * BPF_ARRAY_STRIDE / 4)
    }

    fn from_raw(ptr: *mut libc::c_void, len: usize) -> io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        Ok(Self { ptr, len })
    }

    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and still owns.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
