//! The four single-producer/single-consumer rings of an AF_XDP socket.
//!
//! Layout and protocol are the kernel's (`include/uapi/linux/if_xdp.h`,
//! `tools/lib/bpf/xsk.h`): a producer index, a consumer index and a flags word, each a
//! `u32` that only grows (wrapping), and a power-of-two array of descriptors. The side that
//! writes entries publishes them with a release store of its index; the other side reads
//! that index with an acquire load before touching the entries. Each side caches the other's
//! index and reloads it only when the cache says the ring is full (or empty), as libxdp does.
//!
//! Use: `reserve`/`set`/`submit` on a [`Producer`]; `peek`/`get`/`release` on a [`Consumer`].

use std::{
    marker::PhantomData,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
};

use super::mmap::Mmap;

/// An rx or tx descriptor: `struct xdp_desc` (if_xdp.h: `addr`, `len`, `options`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

const _: () = assert!(size_of::<Desc>() == size_of::<libc::xdp_desc>());

/// Where a ring's fields live inside its mapping.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub producer: usize,
    pub consumer: usize,
    pub flags: usize,
    pub descs: usize,
}

impl From<libc::xdp_ring_offset> for Layout {
    fn from(o: libc::xdp_ring_offset) -> Self {
        let offset = |v: u64| usize::try_from(v).expect("ring offsets are small");
        Self {
            producer: offset(o.producer),
            consumer: offset(o.consumer),
            flags: offset(o.flags),
            descs: offset(o.desc),
        }
    }
}

/// Pointers into one ring's mapping, kept alive by the `Arc`.
#[derive(Debug)]
struct Shared<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    size: u32,
    _map: Arc<Mmap>,
    _entry: PhantomData<T>,
}

// SAFETY: a ring half is used by one thread at a time (`&mut self` on every mutation); the
// pointers stay valid while `_map` is alive, and the other side is the kernel (or the test
// half) synchronised through the acquire/release index protocol.
unsafe impl<T: Send> Send for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// # Safety
    /// `layout` must describe a ring of `size` entries of `T` inside `map`, as reported by
    /// `XDP_MMAP_OFFSETS` for this mapping, and `size` must be a power of two.
    unsafe fn new(map: Arc<Mmap>, layout: Layout, size: u32) -> Self {
        debug_assert!(size.is_power_of_two());
        let base = map.as_ptr();
        // SAFETY: offsets are inside the mapping per the caller's contract.
        unsafe {
            Self {
                producer: base.add(layout.producer).cast(),
                consumer: base.add(layout.consumer).cast(),
                flags: base.add(layout.flags).cast(),
                descs: base.add(layout.descs).cast(),
                size,
                _map: map,
                _entry: PhantomData,
            }
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid and aligned for the life of the mapping (see `new`).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: masked index is within the `size`-entry array.
        unsafe { self.descs.add((index & (self.size - 1)) as usize) }
    }
}

/// The side of a ring this process writes: fill and tx.
#[derive(Debug)]
pub struct Producer<T> {
    ring: Shared<T>,
    cached_prod: u32,
    /// The consumer index plus `size`: `cached_end - cached_prod` slots are free.
    cached_end: u32,
}

/// The side of a ring this process reads: rx and completion.
#[derive(Debug)]
pub struct Consumer<T> {
    ring: Shared<T>,
    cached_cons: u32,
    cached_prod: u32,
}

/// Frames handed to the kernel to receive into.
pub type Fill = Producer<u64>;
/// Frames the kernel has finished transmitting.
pub type Completion = Consumer<u64>;
/// Received frames.
pub type Rx = Consumer<Desc>;
/// Frames to transmit.
pub type Tx = Producer<Desc>;

impl<T: Copy> Producer<T> {
    /// # Safety
    /// As [`Shared::new`].
    pub(super) unsafe fn new(map: Arc<Mmap>, layout: Layout, size: u32) -> Self {
        // SAFETY: forwarded contract.
        let ring = unsafe { Shared::new(map, layout, size) };
        let cached_prod = ring.producer().load(Ordering::Relaxed);
        let cached_end = ring.consumer().load(Ordering::Acquire).wrapping_add(size);
        Self {
            ring,
            cached_prod,
            cached_end,
        }
    }

    /// Reserves up to `want` slots; returns how many may be `set` before `submit`.
    pub fn reserve(&mut self, want: u32) -> u32 {
        let mut free = self.cached_end.wrapping_sub(self.cached_prod);
        if free < want {
            self.cached_end = self
                .ring
                .consumer()
                .load(Ordering::Acquire)
                .wrapping_add(self.ring.size);
            free = self.cached_end.wrapping_sub(self.cached_prod);
        }
        free.min(want)
    }

    /// Writes the `i`th reserved slot.
    pub fn set(&mut self, i: u32, value: T) {
        // SAFETY: the slot is reserved (not visible to the consumer until `submit`).
        unsafe {
            self.ring
                .slot(self.cached_prod.wrapping_add(i))
                .write(value)
        };
    }

    /// Publishes the first `n` reserved slots.
    pub fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.ring
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    /// Entries submitted that the consumer has not taken yet.
    #[must_use]
    pub fn pending(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// The kernel asked to be woken (`sendto`/`recvfrom`) before it looks at this ring.
    #[must_use]
    pub fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }

    #[must_use]
    pub fn size(&self) -> u32 {
        self.ring.size
    }
}

impl<T: Copy> Consumer<T> {
    /// # Safety
    /// As [`Shared::new`].
    pub(super) unsafe fn new(map: Arc<Mmap>, layout: Layout, size: u32) -> Self {
        // SAFETY: forwarded contract.
        let ring = unsafe { Shared::new(map, layout, size) };
        let cached_cons = ring.consumer().load(Ordering::Relaxed);
        let cached_prod = ring.producer().load(Ordering::Acquire);
        Self {
            ring,
            cached_cons,
            cached_prod,
        }
    }

    /// How many entries (at most `want`) are ready to `get`.
    pub fn peek(&mut self, want: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready < want {
            self.cached_prod = self.ring.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        ready.min(want)
    }

    /// The `i`th peeked entry.
    #[must_use]
    pub fn get(&self, i: u32) -> T {
        // SAFETY: the entry was published by the producer (acquire in `peek`) and is not
        // reused until `release`.
        unsafe { self.ring.slot(self.cached_cons.wrapping_add(i)).read() }
    }

    /// Hands the first `n` peeked slots back to the producer.
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.ring
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }

    #[must_use]
    pub fn size(&self) -> u32 {
        self.ring.size
    }
}

/// Rings over anonymous memory, for tests that need no kernel (as s2n-quic-xdp's
/// `ring::testing`): a producer and a consumer of the same ring.
#[cfg(test)]
pub mod testing {
    use super::*;

    pub fn pair<T: Copy>(size: u32) -> (Producer<T>, Consumer<T>) {
        assert!(size.is_power_of_two());
        let layout = Layout {
            producer: 0,
            consumer: 64,
            flags: 128,
            descs: 192,
        };
        let len = layout.descs + size as usize * size_of::<T>();
        let map = Arc::new(Mmap::anonymous(len).expect("anonymous mmap"));
        // SAFETY: the layout fits in `len` bytes and every field is suitably aligned.
        unsafe {
            (
                Producer::new(map.clone(), layout, size),
                Consumer::new(map, layout, size),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `total` items through a ring in varying batch sizes, checking order and that
    /// nothing is lost or duplicated, across many index wrap-arounds.
    #[test]
    fn items_cross_in_order_with_random_batches() {
        let (mut prod, mut cons) = testing::pair::<u64>(64);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        let total = 10_000u64;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |max: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            u32::try_from(seed % u64::from(max)).expect("below max") + 1
        };
        while next_out < total {
            let want = rand(80).min(u32::try_from(total - next_in).unwrap_or(u32::MAX));
            let n = prod.reserve(want);
            for i in 0..n {
                prod.set(i, next_in + u64::from(i));
            }
            prod.submit(n);
            next_in += u64::from(n);
            assert!(prod.pending() <= 64);
            let n = cons.peek(rand(80));
            for i in 0..n {
                assert_eq!(cons.get(i), next_out);
                next_out += 1;
            }
            cons.release(n);
        }
        assert_eq!(cons.peek(1), 0);
        assert_eq!(prod.pending(), 0);
    }

    #[test]
    fn producer_stops_at_capacity() {
        let (mut prod, mut cons) = testing::pair::<Desc>(8);
        assert_eq!(prod.reserve(100), 8);
        prod.submit(8);
        assert_eq!(prod.reserve(1), 0);
        assert_eq!(cons.peek(3), 3);
        cons.release(3);
        assert_eq!(prod.reserve(100), 3);
    }

    #[test]
    fn wakeup_flag_is_read_from_the_ring() {
        let (prod, _cons) = testing::pair::<u64>(8);
        assert!(!prod.needs_wakeup());
        // SAFETY: test-only write of the flags word of a ring we own.
        unsafe { (*prod.ring.flags).store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed) };
        assert!(prod.needs_wakeup());
    }
}
