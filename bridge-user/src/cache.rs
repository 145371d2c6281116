//! Keeping the per-frame path's memory reads from waiting.
//!
//! Two tools: asking the CPU to start loading a cache line early, which the forwarder does for
//! a whole batch's frames and FDB slots before handling the first frame (as VPP's graph nodes
//! do), and asking the kernel for 2 MiB pages under the big tables (the UMEM, a large FDB), so
//! that one TLB entry covers what 512 small pages would: with tens of thousands of stations
//! nearly every FDB slot read was also a page walk, dearer still inside a virtual machine.
#![allow(
    unsafe_code,
    reason = "the prefetch intrinsic and madvise are unsafe fns"
)]

/// Starts loading the cache line holding `address` into every cache level. Any address will
/// do: a prefetch never faults and reads nothing into the program.
pub fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint with no effect on memory or on the program's state, valid
    // for any address; SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Smallest region worth asking huge pages for: one huge page.
const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;

/// Asks for transparent huge pages under the memory `[start, start + len)`, for the pages
/// not yet touched. Best effort: a kernel with them off (`never`) or without them says no,
/// and the memory works as before. Only whole small pages inside the range are advised.
pub fn advise_huge_pages<T>(start: *const T, len: usize) {
    if len < HUGE_PAGE {
        return;
    }
    let first = (start as usize).next_multiple_of(PAGE);
    let end = (start as usize + len) / PAGE * PAGE;
    if end <= first {
        return;
    }
    // SAFETY: MADV_HUGEPAGE changes how the kernel backs pages, never their contents or
    // mapping, so it is sound for any range, whoever uses it (a range inside a heap block
    // advises pages the allocator may hand out again, which is harmless).
    let _ = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
}
