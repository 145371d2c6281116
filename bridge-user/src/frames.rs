//! The UMEM free list, and which port's rings hold each lent frame.
//!
//! The forwarder lends frames to a port's fill and tx rings and gets them back from its rx
//! and completion rings. Recording the borrower per frame (two bytes each) lets a removed
//! port's frames be reclaimed exactly — including frames the kernel was holding internally
//! when the socket closed — so removing ports never leaks UMEM.

use crate::port::PortId;

const WITH_FORWARDER: u16 = u16::MAX;

/// Free frames and per-frame borrower.
#[derive(Debug)]
pub struct Frames {
    free: Vec<u64>,
    borrower: Vec<u16>,
    frame_shift: u32,
}

impl Frames {
    /// All `count` frames of `size` bytes (a power of two) start free.
    #[must_use]
    pub fn new(count: u32, size: u32) -> Self {
        debug_assert!(size.is_power_of_two());
        Self {
            free: (0..u64::from(count))
                .rev()
                .map(|i| i * u64::from(size))
                .collect(),
            borrower: vec![WITH_FORWARDER; count as usize],
            frame_shift: size.trailing_zeros(),
        }
    }

    fn index(&self, chunk: u64) -> usize {
        usize::try_from(chunk >> self.frame_shift).expect("frame index fits usize")
    }

    /// Takes a free frame (its chunk address).
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Puts a frame the forwarder holds back on the free list.
    pub fn release(&mut self, chunk: u64) {
        debug_assert_eq!(
            self.borrower[self.index(chunk)],
            WITH_FORWARDER,
            "frame {chunk:#x} released while lent"
        );
        self.free.push(chunk);
    }

    /// Records that `port`'s rings now hold the frame.
    pub fn lend(&mut self, chunk: u64, port: PortId) {
        let i = self.index(chunk);
        self.borrower[i] = u16::try_from(port.0).expect("slots fit u16");
    }

    /// Records that the frame came back from a ring.
    pub fn returned(&mut self, chunk: u64) {
        let i = self.index(chunk);
        self.borrower[i] = WITH_FORWARDER;
    }

    /// Frees every frame lent to `port`, whose sockets are closed. Returns how many.
    pub fn reclaim(&mut self, port: PortId) -> u32 {
        let tag = u16::try_from(port.0).expect("slots fit u16");
        let mut n = 0;
        for (i, b) in self.borrower.iter_mut().enumerate() {
            if *b == tag {
                *b = WITH_FORWARDER;
                self.free.push((i as u64) << self.frame_shift);
                n += 1;
            }
        }
        n
    }

    #[must_use]
    pub fn free_count(&self) -> u32 {
        u32::try_from(self.free.len()).expect("at most umem_frames")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_returns_exactly_the_frames_lent_to_a_port() {
        let mut frames = Frames::new(8, 2048);
        let a: Vec<u64> = (0..3).map(|_| frames.alloc().unwrap()).collect();
        let b: Vec<u64> = (0..2).map(|_| frames.alloc().unwrap()).collect();
        a.iter().for_each(|&c| frames.lend(c, PortId(0)));
        b.iter().for_each(|&c| frames.lend(c, PortId(1)));
        assert_eq!(frames.free_count(), 3);
        frames.returned(a[0]);
        frames.release(a[0]);
        assert_eq!(frames.reclaim(PortId(0)), 2);
        assert_eq!(frames.free_count(), 6);
        assert_eq!(frames.reclaim(PortId(0)), 0);
        assert_eq!(frames.reclaim(PortId(1)), 2);
        assert_eq!(frames.free_count(), 8);
        let mut all: Vec<u64> = (0..8).map(|_| frames.alloc().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).map(|i| i * 2048).collect::<Vec<_>>());
    }
}
