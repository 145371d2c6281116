//! The forwarding loop: rx batch -> classify -> learn -> lookup -> stage per egress port ->
//! one tx ring write and kick per port.
//!
//! The [`Forwarder`] is the only owner of the ports, the FDB and the UMEM free list; the
//! control path reaches them only through [`Command`]s drained between turns, so the loop
//! takes no locks. Work per turn is bounded ([`RX_BATCH`] descriptors per socket), so
//! completions, refills and commands are never starved by a busy port.
//!
//! Frame ownership: a frame is on the free list, or on exactly one kernel ring (fill, rx,
//! tx, completion), or — only within a turn — in one port's `tx_stage`. A flood copies the
//! frame into fresh frames for all but the last egress port; the original goes to the last.
//! [`Forwarder::accounting`] checks that nothing leaked.
//!
//! Sleeping: when a turn finds nothing to do (after an optional short spin), the thread
//! blocks in `poll(2)` on every rx socket and the control eventfd, so an idle bridge costs
//! no CPU.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bridge_common::wire::{EthernetFrame, MacAddr, VlanId};
use crossbeam_channel::Receiver;
use tracing::{debug, info, warn};

use crate::{
    control::{Command, FdbRow, InterfaceRow, Status, UmemRow},
    fdb::{Fdb, FdbKey, Learned, Lookup},
    metrics::{DropReason, FdbCounters},
    port::{DomainId, Port, PortId},
    xsk::{self, sys::EventFd, Desc, Umem},
};

/// Most descriptors taken from one rx ring per turn.
pub const RX_BATCH: u32 = 64;
/// How often aged FDB entries are swept.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);

/// Tuning knobs of the loop.
#[derive(Clone, Copy, Debug)]
pub struct LoopConfig {
    /// After a turn with work, keep polling the rings this long before sleeping in `poll`.
    /// Zero sleeps at once; a few tens of microseconds saves wakeups under load.
    pub spin: Duration,
}

/// What to do with one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward(PortId),
    Flood,
    Drop(DropReason),
}

/// A bridge domain: a set of ports that form one L2 segment.
#[derive(Debug)]
pub struct Domain {
    pub name: String,
    pub members: Vec<PortId>,
}

/// Where each frame of the UMEM is, for the accounting invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accounting {
    pub total: u32,
    pub free: u32,
    pub in_fill: u32,
    pub in_tx: u32,
}

impl Accounting {
    /// Every frame is in exactly one place.
    #[must_use]
    pub fn balanced(&self) -> bool {
        self.free + self.in_fill + self.in_tx == self.total
    }
}

/// Classifies a frame, learns its source and decides where it goes.
///
/// Pure bridging logic over the FDB: no sockets, so it is unit-tested directly.
pub fn decide(
    fdb: &mut Fdb,
    events: &mut FdbCounters,
    domain: DomainId,
    ingress: PortId,
    frame: &[u8],
    now: Instant,
) -> Verdict {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Verdict::Drop(DropReason::Runt);
    };
    let src = eth.src_addr();
    if !src.is_valid_source() {
        return Verdict::Drop(DropReason::InvalidSrcMac);
    }
    let vlan = VlanId::DEFAULT;
    match fdb.learn(
        FdbKey {
            domain,
            vlan,
            mac: src,
        },
        ingress,
        now,
    ) {
        Learned::New => events.learned += 1,
        Learned::Moved { .. } => events.moved += 1,
        Learned::TableFull => events.table_full += 1,
        Learned::Refreshed | Learned::StaticConflict => {}
    }
    let dst: MacAddr = eth.dst_addr();
    if dst.is_multicast() {
        return Verdict::Flood;
    }
    match fdb.lookup(
        &FdbKey {
            domain,
            vlan,
            mac: dst,
        },
        now,
    ) {
        Lookup::Hit(port) if port == ingress => Verdict::Drop(DropReason::SamePort),
        Lookup::Hit(port) => Verdict::Forward(port),
        Lookup::Miss => Verdict::Flood,
    }
}

/// The data plane: owns the UMEM, the ports and the FDB.
#[derive(Debug)]
pub struct Forwarder {
    umem: Umem,
    free: Vec<u64>,
    /// Indexed by `PortId`; `None` for a free slot.
    ports: Vec<Option<Port>>,
    domains: Vec<Domain>,
    fdb: Fdb,
    fdb_counters: FdbCounters,
    /// Frames kept on each socket's fill ring.
    fill_target: u32,
    config: LoopConfig,
    commands: Receiver<Command>,
    wakeup: Arc<EventFd>,
    last_expire: Instant,
    /// Scratch for one rx batch, so the hot path allocates nothing.
    batch: Vec<Desc>,
    pollfds: Vec<libc::pollfd>,
}

impl Forwarder {
    /// Takes ownership of bound ports; every UMEM frame starts on the free list.
    #[must_use]
    pub fn new(
        umem: Umem,
        ports: Vec<Option<Port>>,
        domains: Vec<Domain>,
        fdb: Fdb,
        config: LoopConfig,
        commands: Receiver<Command>,
        wakeup: Arc<EventFd>,
    ) -> Self {
        let free: Vec<u64> = umem.frames().collect();
        let mut fwd = Self {
            umem,
            free,
            ports,
            domains,
            fdb,
            fdb_counters: FdbCounters::default(),
            fill_target: 0,
            config,
            commands,
            wakeup,
            last_expire: Instant::now(),
            batch: Vec::with_capacity(RX_BATCH as usize),
            pollfds: Vec::new(),
        };
        fwd.ports_changed();
        fwd
    }

    /// Recomputes what depends on the set of sockets: fill depth and the poll set.
    fn ports_changed(&mut self) {
        let sockets: u32 = self
            .ports
            .iter()
            .flatten()
            .map(|p| p.sockets.len() as u32)
            .sum();
        // Half the frames wait on fill rings, the other half are in flight or free.
        let ring = self
            .ports
            .iter()
            .flatten()
            .flat_map(|p| p.sockets.first())
            .map(|s| s.fill.size())
            .max()
            .unwrap_or(0);
        self.fill_target = (self.umem.frame_count() / 2 / sockets.max(1)).clamp(1, ring.max(1));
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.wakeup.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for socket in self.ports.iter().flatten().flat_map(|p| &p.sockets) {
            self.pollfds.push(libc::pollfd {
                fd: socket.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for port in self.ports.iter_mut().flatten() {
            let want = RX_BATCH as usize * port.sockets.len() * 2;
            port.tx_stage
                .reserve(want.saturating_sub(port.tx_stage.capacity()));
        }
        debug!(sockets, fill_target = self.fill_target, "port set changed");
    }

    /// Runs until a `Shutdown` command arrives.
    pub fn run(mut self) {
        info!(
            ports = self.ports.iter().flatten().count(),
            "forwarder running"
        );
        for i in 0..self.ports.len() {
            self.refill_port(i);
        }
        let mut last_work = Instant::now();
        loop {
            let now = Instant::now();
            let work = self.turn(now);
            if !self.apply_commands(now) {
                break;
            }
            if work {
                last_work = now;
            } else if now.duration_since(last_work) >= self.config.spin {
                self.sleep(now);
            }
        }
        let acct = self.accounting();
        info!(?acct, balanced = acct.balanced(), "forwarder stopped");
    }

    /// One pass over every port. Returns whether anything moved.
    pub fn turn(&mut self, now: Instant) -> bool {
        let mut work = self.reap_completions();
        for pi in 0..self.ports.len() {
            let queues = self.ports[pi].as_ref().map_or(0, |p| p.sockets.len());
            for qi in 0..queues {
                work |= self.receive(pi, qi, now);
            }
        }
        for pi in 0..self.ports.len() {
            work |= self.transmit(pi);
        }
        if now.duration_since(self.last_expire) >= EXPIRE_INTERVAL {
            self.last_expire = now;
            let aged = self.fdb.expire(now);
            self.fdb_counters.aged_out += aged as u64;
        }
        debug_assert!(self.accounting().balanced(), "{:?}", self.accounting());
        work
    }

    /// Moves transmitted frames from every completion ring back to the free list.
    fn reap_completions(&mut self) -> bool {
        let mut work = false;
        for socket in self
            .ports
            .iter_mut()
            .flatten()
            .flat_map(|p| p.sockets.iter_mut())
        {
            let n = socket.completion.peek(socket.completion.size());
            for i in 0..n {
                self.free.push(self.umem.chunk_of(socket.completion.get(i)));
            }
            socket.completion.release(n);
            socket.tx_outstanding -= n;
            work |= n > 0;
        }
        work
    }

    /// Takes one batch from socket `qi` of port `pi`, stages every frame, refills.
    fn receive(&mut self, pi: usize, qi: usize, now: Instant) -> bool {
        let Some(port) = self.ports[pi].as_mut() else {
            return false;
        };
        let socket = &mut port.sockets[qi];
        let n = socket.rx.peek(RX_BATCH);
        if n == 0 {
            return false;
        }
        self.batch.clear();
        self.batch.extend((0..n).map(|i| socket.rx.get(i)));
        socket.rx.release(n);
        socket.fill_outstanding -= n;
        let (domain, ingress) = (port.domain, PortId(pi as u32));
        for i in 0..self.batch.len() {
            let desc = self.batch[i];
            self.handle(domain, ingress, desc, now);
        }
        self.refill(pi, qi);
        true
    }

    /// Classifies one received frame and stages it for its egress port(s).
    #[allow(
        unsafe_code,
        reason = "reads a frame this thread owns: it just came off an rx ring"
    )]
    fn handle(&mut self, domain: DomainId, ingress: PortId, desc: Desc, now: Instant) {
        let len = desc.len as usize;
        if !self.umem.contains(desc.addr, len) {
            // The kernel never does this; treat it as a runt rather than trust it.
            warn!(addr = desc.addr, len, "rx descriptor outside the UMEM");
            self.drop_frame(ingress, desc, DropReason::Runt);
            return;
        }
        // SAFETY: the descriptor came off our rx ring, so this thread owns the frame.
        let frame = unsafe { self.umem.frame(desc.addr, len) };
        let verdict = decide(
            &mut self.fdb,
            &mut self.fdb_counters,
            domain,
            ingress,
            frame,
            now,
        );
        let counters = &mut self.port_mut(ingress).counters;
        counters.rx_frames += 1;
        counters.rx_bytes += len as u64;
        match verdict {
            Verdict::Forward(egress) => self.stage(egress, desc),
            Verdict::Drop(reason) => self.drop_frame(ingress, desc, reason),
            Verdict::Flood => {
                let counters = &mut self.port_mut(ingress).counters;
                counters.rx_flooded += 1;
                // SAFETY: still the owner; re-read after the mutable borrows above.
                let unicast = !unsafe { self.umem.frame(desc.addr, 6) }[0] & 1 == 1;
                if unicast {
                    self.port_mut(ingress).counters.rx_unknown_unicast += 1;
                }
                self.flood(domain, ingress, desc);
            }
        }
    }

    /// Sends a frame to every other port of its domain.
    #[allow(
        unsafe_code,
        reason = "copies between two frames this thread owns (rx'd and free)"
    )]
    fn flood(&mut self, domain: DomainId, ingress: PortId, desc: Desc) {
        let members = &self.domains[usize::from(domain.0)].members;
        let targets = members.iter().filter(|&&p| p != ingress).count();
        if targets == 0 {
            self.drop_frame(ingress, desc, DropReason::NoDestination);
            return;
        }
        let offset = desc.addr - self.umem.chunk_of(desc.addr);
        let mut remaining = targets;
        for mi in 0..self.domains[usize::from(domain.0)].members.len() {
            let egress = self.domains[usize::from(domain.0)].members[mi];
            if egress == ingress {
                continue;
            }
            remaining -= 1;
            if remaining == 0 {
                self.stage(egress, desc);
                break;
            }
            let Some(chunk) = self.free.pop() else {
                self.port_mut(egress)
                    .counters
                    .drops
                    .count(DropReason::UmemExhausted);
                continue;
            };
            let copy = Desc {
                addr: chunk + offset,
                len: desc.len,
                options: 0,
            };
            // SAFETY: `desc`'s frame is ours (off the rx ring) and `chunk` came off the free
            // list, so they are two different frames this thread owns.
            unsafe {
                let src = self.umem.frame(desc.addr, desc.len as usize);
                self.umem
                    .frame_mut(copy.addr, copy.len as usize)
                    .copy_from_slice(src);
            }
            self.stage(egress, copy);
        }
    }

    fn stage(&mut self, egress: PortId, desc: Desc) {
        match self
            .ports
            .get_mut(egress.0 as usize)
            .and_then(Option::as_mut)
        {
            Some(port) => port.tx_stage.push(desc),
            // The FDB may briefly point at a port removed this turn; the frame goes back.
            None => self.free.push(self.umem.chunk_of(desc.addr)),
        }
    }

    fn drop_frame(&mut self, port: PortId, desc: Desc, reason: DropReason) {
        self.port_mut(port).counters.drops.count(reason);
        self.free.push(self.umem.chunk_of(desc.addr));
    }

    fn port_mut(&mut self, id: PortId) -> &mut Port {
        self.ports[id.0 as usize]
            .as_mut()
            .expect("frames only come from and go to live ports")
    }

    /// Writes port `pi`'s staged frames to its tx ring and kicks the kernel to send them.
    /// What does not fit is dropped and counted against this port only.
    fn transmit(&mut self, pi: usize) -> bool {
        let Some(port) = self.ports[pi].as_mut() else {
            return false;
        };
        let Some(socket) = port.sockets.first_mut() else {
            return false;
        };
        let staged = port.tx_stage.len() as u32;
        let mut work = false;
        if staged > 0 {
            let n = socket.tx.reserve(staged);
            let mut bytes = 0u64;
            for (i, desc) in port.tx_stage.iter().take(n as usize).enumerate() {
                socket.tx.set(i as u32, *desc);
                bytes += u64::from(desc.len);
            }
            socket.tx.submit(n);
            socket.tx_outstanding += n;
            port.counters.tx_frames += u64::from(n);
            port.counters.tx_bytes += bytes;
            for desc in port.tx_stage.drain(n as usize..) {
                port.counters.drops.count(DropReason::TxRingFull);
                self.free.push(self.umem.chunk_of(desc.addr));
            }
            port.tx_stage.clear();
            work = true;
        }
        // Copy mode transmits inside sendto(); kick while anything is still unsent.
        if socket.tx.pending() > 0 {
            match socket.kick_tx() {
                Ok(_) => {}
                Err(e) => warn!(port = %port.name, error = %e, "tx kick failed"),
            }
            work = true;
        }
        work
    }

    fn refill_port(&mut self, pi: usize) {
        let queues = self.ports[pi].as_ref().map_or(0, |p| p.sockets.len());
        for qi in 0..queues {
            self.refill(pi, qi);
        }
    }

    /// Tops a socket's fill ring up to the target from the free list.
    fn refill(&mut self, pi: usize, qi: usize) {
        let Some(port) = self.ports[pi].as_mut() else {
            return;
        };
        let socket = &mut port.sockets[qi];
        let want = self
            .fill_target
            .saturating_sub(socket.fill_outstanding)
            .min(self.free.len() as u32);
        let n = socket.fill.reserve(want);
        for i in 0..n {
            let frame = self
                .free
                .pop()
                .expect("reserved no more than the free list holds");
            socket.fill.set(i, frame);
        }
        socket.fill.submit(n);
        socket.fill_outstanding += n;
        socket.wake_rx_if_needed();
    }

    /// Blocks until a socket is readable, a command arrives, or the next timer is due.
    fn sleep(&mut self, now: Instant) {
        let tx_pending = self
            .ports
            .iter()
            .flatten()
            .flat_map(|p| p.sockets.first())
            .any(|s| s.tx.pending() > 0);
        let timeout = if tx_pending {
            Duration::from_millis(1)
        } else {
            EXPIRE_INTERVAL.saturating_sub(now.duration_since(self.last_expire))
        };
        for fd in &mut self.pollfds {
            fd.revents = 0;
        }
        if let Err(e) = xsk::sys::poll(&mut self.pollfds, timeout) {
            warn!(error = %e, "poll failed");
        }
        if self.pollfds[0].revents != 0 {
            self.wakeup.drain();
        }
    }

    /// Applies pending control commands. Returns `false` on shutdown.
    fn apply_commands(&mut self, now: Instant) -> bool {
        for _ in 0..16 {
            let Ok(command) = self.commands.try_recv() else {
                break;
            };
            match command {
                Command::Shutdown => return false,
                Command::ShowInterfaces(reply) => {
                    let _ = reply.send(self.status());
                }
                Command::ShowFdb(reply) => {
                    let _ = reply.send(self.fdb_rows(now));
                }
            }
        }
        true
    }

    /// Where every frame is right now (between turns nothing is staged).
    #[must_use]
    pub fn accounting(&self) -> Accounting {
        let sockets = || self.ports.iter().flatten().flat_map(|p| &p.sockets);
        let staged: u32 = self
            .ports
            .iter()
            .flatten()
            .map(|p| p.tx_stage.len() as u32)
            .sum();
        Accounting {
            total: self.umem.frame_count(),
            free: self.free.len() as u32 + staged,
            in_fill: sockets().map(|s| s.fill_outstanding).sum(),
            in_tx: sockets().map(|s| s.tx_outstanding).sum(),
        }
    }

    fn status(&self) -> Status {
        let rows = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(slot, p)| p.as_ref().map(|p| (slot, p)))
            .map(|(slot, p)| {
                let mut kernel = xsk::SocketStats::default();
                for s in &p.sockets {
                    kernel += s.stats().unwrap_or_default();
                }
                InterfaceRow {
                    name: p.name.clone(),
                    domain: self.domains[usize::from(p.domain.0)].name.clone(),
                    slot: slot as u32,
                    ifindex: p.ifindex,
                    queues: p.sockets.len() as u32,
                    counters: p.counters,
                    xdp: Default::default(),
                    kernel,
                }
            })
            .collect();
        let a = self.accounting();
        let umem = UmemRow {
            frames: a.total,
            free: a.free,
            in_fill: a.in_fill,
            in_tx: a.in_tx,
            balanced: a.balanced(),
        };
        Status {
            interfaces: rows,
            umem,
            fdb_entries: self.fdb.len(),
            fdb: self.fdb_counters,
        }
    }

    fn fdb_rows(&self, now: Instant) -> Vec<FdbRow> {
        let mut rows: Vec<FdbRow> = self
            .fdb
            .iter()
            .filter(|(k, _)| matches!(self.fdb.lookup(k, now), Lookup::Hit(_)))
            .map(|(k, e)| FdbRow {
                domain: self.domains[usize::from(k.domain.0)].name.clone(),
                mac: k.mac.to_string(),
                vlan: k.vlan.get(),
                port: self
                    .ports
                    .get(e.port.0 as usize)
                    .and_then(Option::as_ref)
                    .map_or_else(|| e.port.to_string(), |p| p.name.clone()),
                age_secs: now.saturating_duration_since(e.last_seen).as_secs(),
                is_static: e.is_static,
            })
            .collect();
        rows.sort_by(|a, b| (&a.domain, a.vlan, &a.mac).cmp(&(&b.domain, b.vlan, &b.mac)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PortId = PortId(0);
    const B: PortId = PortId(1);
    const D: DomainId = DomainId(0);

    fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn setup() -> (Fdb, FdbCounters, Instant) {
        (
            Fdb::new(Duration::from_secs(300), 1024),
            FdbCounters::default(),
            Instant::now(),
        )
    }

    #[test]
    fn unknown_unicast_floods_then_learned_forwards() {
        let (mut fdb, mut ev, t) = setup();
        assert_eq!(
            decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, 0x0800), t),
            Verdict::Flood
        );
        assert_eq!(
            decide(&mut fdb, &mut ev, D, B, &frame(MAC_A, MAC_B, 0x0800), t),
            Verdict::Forward(A)
        );
        assert_eq!(
            decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, 0x0800), t),
            Verdict::Forward(B)
        );
        assert_eq!(ev.learned, 2);
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_known() {
        let (mut fdb, mut ev, t) = setup();
        decide(&mut fdb, &mut ev, D, B, &frame(MAC_A, MAC_B, 0x0800), t);
        assert_eq!(
            decide(&mut fdb, &mut ev, D, A, &frame([0xff; 6], MAC_A, 0x0806), t),
            Verdict::Flood
        );
        assert_eq!(
            decide(
                &mut fdb,
                &mut ev,
                D,
                A,
                &frame([1, 0, 0x5e, 0, 0, 1], MAC_A, 0x0800),
                t
            ),
            Verdict::Flood
        );
    }

    #[test]
    fn runts_and_bad_sources_are_dropped_without_learning() {
        let (mut fdb, mut ev, t) = setup();
        for len in 0..14 {
            assert_eq!(
                decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, 0)[..len], t),
                Verdict::Drop(DropReason::Runt)
            );
        }
        for src in [[0u8; 6], [0xff; 6], [1, 0, 0x5e, 0, 0, 1]] {
            assert_eq!(
                decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, src, 0x0800), t),
                Verdict::Drop(DropReason::InvalidSrcMac)
            );
        }
        assert!(fdb.is_empty());
    }

    #[test]
    fn frame_to_a_host_on_the_ingress_port_is_filtered() {
        let (mut fdb, mut ev, t) = setup();
        decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, 0x0800), t);
        let other: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
        decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, other, 0x0800), t);
        assert_eq!(
            decide(&mut fdb, &mut ev, D, A, &frame(other, MAC_A, 0x0800), t),
            Verdict::Drop(DropReason::SamePort)
        );
    }

    #[test]
    fn any_ethertype_is_bridged() {
        let (mut fdb, mut ev, t) = setup();
        decide(&mut fdb, &mut ev, D, B, &frame(MAC_A, MAC_B, 0x88b5), t);
        for ethertype in [0x88b5, 0x88cc, 0x0000, 0x05dc, 0xffff, 0x8100] {
            assert_eq!(
                decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, ethertype), t),
                Verdict::Forward(B)
            );
        }
    }

    #[test]
    fn a_moved_station_is_followed_and_counted() {
        let (mut fdb, mut ev, t) = setup();
        decide(&mut fdb, &mut ev, D, A, &frame([0xff; 6], MAC_B, 0x0800), t);
        decide(&mut fdb, &mut ev, D, B, &frame([0xff; 6], MAC_B, 0x0800), t);
        assert_eq!(ev.moved, 1);
        assert_eq!(
            decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, 0x0800), t),
            Verdict::Forward(B)
        );
    }

    #[test]
    fn domains_do_not_share_learning() {
        let (mut fdb, mut ev, t) = setup();
        decide(
            &mut fdb,
            &mut ev,
            DomainId(1),
            B,
            &frame(MAC_A, MAC_B, 0x0800),
            t,
        );
        assert_eq!(
            decide(&mut fdb, &mut ev, D, A, &frame(MAC_B, MAC_A, 0x0800), t),
            Verdict::Flood
        );
    }
}
