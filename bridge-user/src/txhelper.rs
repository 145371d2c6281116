//! A second thread that makes the kernel transmit for some ports while the forwarder is
//! busy.
//!
//! In copy mode (the only mode on a veth) the kernel sends a socket's tx ring inside the
//! `sendto` that kicks it, and the receiving client's whole network stack runs inside that
//! call too: the forwarder's thread ends up doing both TCP ends' kernel work, 90 % of its
//! time under a TCP stream, while the other CPU idles. Kicking some sockets from a second
//! thread splits that work across CPUs. Only under sustained load, though ([`BUSY_AFTER`]):
//! handing a kick to another thread costs a wakeup, which sparse traffic (a ping) would pay
//! in latency; and only for some of two or more busy ports ([`Split`]).
//!
//! The forwarder stays the only producer of every tx ring; the thread only tells the kernel
//! to consume it, through a duplicate of the socket's fd.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::debug;

use crate::{port::PortId, xsk};

/// How long the forwarder must have worked without sleeping before it hands kicks over.
pub const BUSY_AFTER: Duration = Duration::from_millis(2);

/// How often the forwarder re-decides which ports the tx thread kicks.
pub const SPLIT_WINDOW: Duration = Duration::from_millis(1);

/// The word and bit of `port` in a one-bit-per-slot set.
fn slot_bit(port: PortId) -> (usize, u64) {
    (port.0 as usize / 64, 1 << (port.0 % 64))
}

/// The set bits of `word`, lowest first.
fn ones(mut word: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        let bit = (word != 0).then(|| word.trailing_zeros())?;
        word &= word - 1;
        Some(bit)
    })
}

/// Which ports the tx thread kicks while the forwarder is busy: every other one of the ports
/// that had frames to send in the last window. A single busy egress port (one generator, one
/// sink) stays with the forwarder, since handing its kicks over would only add a wakeup per
/// batch; two or more (a TCP stream's data and ACKs, a flood) are split.
#[derive(Debug)]
pub struct Split {
    window_start: Instant,
    /// Ports that had frames to send in this window, one bit per slot.
    active: Vec<u64>,
    /// Ports the tx thread kicks, decided from the last window.
    thread_kicks: Vec<u64>,
}

impl Split {
    #[must_use]
    pub fn new(slots: usize, now: Instant) -> Self {
        Self {
            window_start: now,
            active: vec![0; slots.div_ceil(64)],
            thread_kicks: vec![0; slots.div_ceil(64)],
        }
    }

    /// Records that `port` has frames to send; returns whether the tx thread kicks it.
    pub fn note(&mut self, port: PortId) -> bool {
        let (word, bit) = slot_bit(port);
        self.active[word] |= bit;
        self.thread_kicks[word] & bit != 0
    }

    /// Starts a new window once the current one is over.
    pub fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window_start) < SPLIT_WINDOW {
            return;
        }
        self.window_start = now;
        let split = self.active.iter().map(|w| w.count_ones()).sum::<u32>() >= 2;
        let mut nth = 0u32;
        for (kicks, active) in self.thread_kicks.iter_mut().zip(&mut self.active) {
            *kicks = 0;
            let bits = std::mem::take(active);
            if !split {
                continue;
            }
            for bit in ones(bits) {
                if nth % 2 == 1 {
                    *kicks |= 1 << bit;
                }
                nth += 1;
            }
        }
    }
}

/// The helper thread, what it shares with the forwarder, and the forwarder's choice of the
/// ports it kicks.
#[derive(Debug)]
pub struct TxHelper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    pub split: Split,
}

#[derive(Debug)]
struct Shared {
    /// Each port's tx socket, by slot: duplicates, so that the forwarder's `remove_port`
    /// can take one away (under the write lock) before it reclaims the port's frames.
    sockets: RwLock<Vec<Option<OwnedFd>>>,
    /// One bit per slot: kick this port's socket.
    requested: Vec<AtomicU64>,
    stop: AtomicBool,
    /// Kicks made, for `show interfaces` and the metrics.
    kicks: AtomicU64,
    /// How long to keep looking for requests after the last one before parking.
    spin: Duration,
}

impl TxHelper {
    /// Starts the thread, parked until the first request.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(slots: usize, spin: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            sockets: RwLock::new((0..slots).map(|_| None).collect()),
            requested: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
            kicks: AtomicU64::new(0),
            spin,
        });
        let thread = std::thread::Builder::new().name("vwire-tx".into()).spawn({
            let shared = Arc::clone(&shared);
            move || shared.run()
        })?;
        Ok(Self {
            shared,
            thread: Some(thread),
            split: Split::new(slots, Instant::now()),
        })
    }

    /// Remembers `port`'s tx socket.
    ///
    /// # Errors
    /// The socket cannot be duplicated.
    pub fn add(&self, port: PortId, socket: &impl AsFd) -> std::io::Result<()> {
        let fd = socket.as_fd().try_clone_to_owned()?;
        self.sockets_mut()[port.0 as usize] = Some(fd);
        Ok(())
    }

    /// Forgets `port`'s socket; returns once no kick of it is in progress.
    pub fn remove(&self, port: PortId) {
        self.sockets_mut()[port.0 as usize] = None;
    }

    /// Asks the thread to kick `port`'s socket.
    pub fn request(&self, port: PortId) {
        let (word, bit) = slot_bit(port);
        self.shared.requested[word].fetch_or(bit, Ordering::Release);
        if let Some(t) = &self.thread {
            // Costs a syscall only when the thread is parked.
            t.thread().unpark();
        }
    }

    /// Kicks this thread has made since it started.
    #[must_use]
    pub fn kicks(&self) -> u64 {
        self.shared.kicks.load(Ordering::Relaxed)
    }

    fn sockets_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<OwnedFd>>> {
        self.shared
            .sockets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for TxHelper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Shared {
    fn run(&self) {
        let mut last_request = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            if self.kick_requested() {
                last_request = Instant::now();
            } else if last_request.elapsed() < self.spin {
                std::thread::yield_now();
            } else {
                std::thread::park();
                last_request = Instant::now();
            }
        }
    }

    /// Kicks every requested socket once. Returns whether any was requested.
    fn kick_requested(&self) -> bool {
        let mut any = false;
        for (word, bits) in self.requested.iter().enumerate() {
            let bits = bits.swap(0, Ordering::Acquire);
            if bits == 0 {
                continue;
            }
            any = true;
            let sockets = self
                .sockets
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for bit in ones(bits) {
                let slot = word * 64 + bit as usize;
                if let Some(fd) = &sockets[slot] {
                    self.kicks.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = xsk::sys::kick_tx(fd.as_fd()) {
                        debug!(slot, error = %e, "tx kick failed");
                    }
                }
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// The kick is a zero-length `sendto`; on a connected datagram socket that sends an
    /// empty datagram, so the other end counts the kicks.
    fn kicks_seen(peer: &UnixDatagram) -> usize {
        let mut seen = 0;
        let mut buf = [0u8; 1];
        while peer.recv(&mut buf).is_ok() {
            seen += 1;
        }
        seen
    }

    fn wait_for_kicks(peer: &UnixDatagram, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = 0;
        while seen < want && Instant::now() < deadline {
            seen += kicks_seen(peer);
            std::thread::sleep(Duration::from_millis(1));
        }
        seen
    }

    #[test]
    fn a_request_kicks_the_socket_of_its_port_from_the_thread() {
        let helper = TxHelper::start(130, Duration::ZERO).unwrap();
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let port = PortId(129);
        helper.add(port, &ours).unwrap();
        helper.request(port);
        assert_eq!(wait_for_kicks(&peer, 1), 1);
        assert_eq!(helper.kicks(), 1);
        // Parked in between, woken again by the next request.
        std::thread::sleep(Duration::from_millis(20));
        helper.request(port);
        helper.request(port);
        let seen = wait_for_kicks(&peer, 1);
        assert!((1..=2).contains(&seen), "{seen} kicks for two requests");
    }

    #[test]
    fn a_removed_port_is_not_kicked() {
        let helper = TxHelper::start(4, Duration::from_micros(50)).unwrap();
        let (ours, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        helper.add(PortId(3), &ours).unwrap();
        helper.remove(PortId(3));
        helper.request(PortId(3));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(kicks_seen(&peer), 0);
        assert_eq!(helper.kicks(), 0);
    }

    fn thread_kicks(split: &mut Split, ports: &[u32]) -> Vec<u32> {
        ports
            .iter()
            .copied()
            .filter(|&p| split.note(PortId(p)))
            .collect()
    }

    #[test]
    fn every_other_active_port_goes_to_the_thread_from_the_next_window() {
        let start = Instant::now();
        let mut split = Split::new(256, start);
        let ports = [2, 5, 64, 65, 200];
        assert!(
            thread_kicks(&mut split, &ports).is_empty(),
            "nothing before a window ends"
        );
        split.roll(start + SPLIT_WINDOW / 2);
        assert!(
            thread_kicks(&mut split, &ports).is_empty(),
            "the window is not over"
        );
        split.roll(start + SPLIT_WINDOW);
        assert_eq!(thread_kicks(&mut split, &ports), [5, 65]);
        // Port 2 goes quiet: the others are split anew from the window after.
        split.roll(start + SPLIT_WINDOW * 2);
        assert_eq!(thread_kicks(&mut split, &[5, 64, 65, 200]), [5, 65]);
        split.roll(start + SPLIT_WINDOW * 3);
        assert_eq!(thread_kicks(&mut split, &[5, 64, 65, 200]), [64, 200]);
    }

    #[test]
    fn a_single_busy_port_stays_with_the_forwarder() {
        let start = Instant::now();
        let mut split = Split::new(256, start);
        for n in 1..5 {
            assert!(thread_kicks(&mut split, &[7]).is_empty());
            split.roll(start + SPLIT_WINDOW * n);
        }
        assert!(thread_kicks(&mut split, &[7]).is_empty());
    }

    #[test]
    fn dropping_the_helper_stops_its_thread() {
        // Spinning for a minute after start, unless told to stop.
        let helper = TxHelper::start(2, Duration::from_secs(60)).unwrap();
        let started = Instant::now();
        drop(helper);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
