//! The forwarding loop: rx batch -> classify (VLAN) -> learn -> lookup -> stage per egress
//! port (tag pushed or popped in place) -> one tx ring write and kick per port.
//!
//! The [`Forwarder`] is the only owner of the ports, the FDB and the UMEM frames; the
//! control path reaches them only through [`Command`]s drained between turns, so the loop
//! takes no locks. Work per turn is bounded ([`RX_BATCH`] descriptors per socket), so
//! completions, refills and commands are never starved by a busy port.
//!
//! Frame ownership: a frame is free, or lent to exactly one port's kernel rings (fill, rx,
//! tx, completion), or — only within a turn — in one port's `tx_stage`. A flood copies the
//! frame into fresh frames for all but the last egress port; the original goes to the last.
//! [`Forwarder::accounting`] checks that nothing leaked.
//!
//! Sleeping: when a turn finds nothing to do (after an optional short spin), the thread
//! blocks in `poll(2)` on every rx socket and the control eventfd, so an idle bridge costs
//! no CPU.

use std::{
    os::fd::AsFd,
    sync::Arc,
    time::{Duration, Instant},
};

use bridge_common::wire::{EthernetFrame, MacAddr, VlanId};
use crossbeam_channel::Receiver;
use tracing::{debug, info, warn};

use crate::{
    affinity::{Follower, WakeCpu},
    checksum,
    control::{
        Command, DomainPortRow, DomainRow, EntrySelector, FdbRow, InterfaceRow, PortAdded,
        PortGone, PortRemoved, PortSpec, StaticEntry, Status, UmemRow,
    },
    fastpath::{self, FastPath},
    fdb::{Fdb, FdbKey, Learned, Lookup},
    frames::Frames,
    metrics::{DropReason, FdbCounters},
    port::{self, DomainId, Port, PortId},
    txhelper::{self, TxHelper},
    vlan::{self, Egress, PortMode},
    xdp_features::{self, XdpFeatures},
    xsk::{self, sys::EventFd, Desc, Socket, SocketConfig, Umem},
};

/// Most descriptors taken from one rx ring per turn.
pub const RX_BATCH: u32 = 64;
/// Fill depth of a socket that has not received lately. Every socket gets at least this
/// much (or its fair share of a small UMEM) on every turn, so no port is ever left without
/// buffers; a socket that receives is refilled to the full target.
const IDLE_FILL: u32 = 256;
/// How often aged FDB entries are swept and vanished interfaces looked for.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Tuning knobs of the loop.
#[derive(Clone, Copy, Debug)]
pub struct LoopConfig {
    /// After a turn with work, keep polling the rings this long before sleeping in `poll`.
    /// Zero sleeps at once; a few tens of microseconds saves wakeups under load.
    pub spin: Duration,
    pub socket: SocketConfig,
}

/// A length or index bounded by a ring or frame size, as the rings' `u32`.
fn count(n: usize) -> u32 {
    u32::try_from(n).expect("bounded by a ring or frame size")
}

/// Where a received frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward(PortId),
    Flood,
    Drop(DropReason),
}

/// A classified frame: its VLAN, whether it arrived tagged, and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub vlan: VlanId,
    pub tagged: bool,
}

impl Decision {
    fn drop(reason: DropReason) -> Self {
        Self {
            verdict: Verdict::Drop(reason),
            vlan: VlanId::DEFAULT,
            tagged: false,
        }
    }
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

/// A flood's copies, into `copies` in the order of `targets`: every target but the last gets
/// the frame copied into a fresh frame from the free list, the last one the original, so a
/// flood to N ports costs N - 1 copies. A target the free list had no frame for gets `None`.
///
/// # Safety
/// The caller owns `desc`'s frame: it came off an rx ring (or the free list) and nothing else
/// reads or writes it until the copies are made.
///
/// # Panics
/// If `desc` does not lie inside one frame of `umem` (see [`Umem::frame`]).
#[allow(
    unsafe_code,
    reason = "copies between two frames the caller owns (rx'd and free)"
)]
pub unsafe fn fan_out(
    umem: &Umem,
    frames: &mut Frames,
    desc: Desc,
    targets: &[(PortId, Egress)],
    copies: &mut Vec<(PortId, Egress, Option<Desc>)>,
) {
    copies.clear();
    let Some((&(last, last_how), others)) = targets.split_last() else {
        return;
    };
    let offset = desc.addr - umem.chunk_of(desc.addr);
    for &(egress, how) in others {
        let copy = frames.alloc().map(|chunk| {
            let copy = Desc {
                addr: chunk + offset,
                len: desc.len,
                options: 0,
            };
            // SAFETY: the caller owns `desc`'s frame and `chunk` just came off the free list,
            // so these are two different frames nothing else touches.
            unsafe {
                let src = umem.frame(desc.addr, desc.len as usize);
                umem.frame_mut(copy.addr, copy.len as usize)
                    .copy_from_slice(src);
            }
            copy
        });
        copies.push((egress, how, copy));
    }
    copies.push((last, last_how, Some(desc)));
}

/// A frame's addresses as the FDB keys them: read from its headers and its ingress port's
/// VLAN mode, before anything is learned or looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addressed {
    pub src: FdbKey,
    pub dst: MacAddr,
    pub ingress: vlan::Ingress,
}

impl Addressed {
    fn dst_key(&self) -> FdbKey {
        FdbKey {
            mac: self.dst,
            ..self.src
        }
    }

    /// Starts loading the FDB slots that [`decide_addressed`] will read for this frame.
    pub fn prefetch(&self, fdb: &Fdb) {
        fdb.prefetch(&self.src);
        if !self.dst.is_multicast() {
            fdb.prefetch(&self.dst_key());
        }
    }
}

/// Classifies a frame against its ingress port's VLAN mode; the reason it is dropped if it
/// cannot be.
pub fn address(domain: DomainId, mode: &PortMode, frame: &[u8]) -> Result<Addressed, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Runt)?;
    let src = eth.src_addr();
    if !src.is_valid_source() {
        return Err(DropReason::InvalidSrcMac);
    }
    let ingress = mode.classify(&eth)?;
    Ok(Addressed {
        src: FdbKey {
            domain,
            vlan: ingress.vlan,
            mac: src,
        },
        dst: eth.dst_addr(),
        ingress,
    })
}

/// Classifies a frame against its ingress port's VLAN mode, learns its source and decides
/// where it goes.
///
/// Pure bridging logic over the FDB: no sockets, so it is unit-tested directly.
pub fn decide(
    fdb: &mut Fdb,
    events: &mut FdbCounters,
    domain: DomainId,
    ingress: PortId,
    mode: &PortMode,
    frame: &[u8],
    now: Instant,
) -> Decision {
    match address(domain, mode, frame) {
        Ok(addressed) => decide_addressed(fdb, events, ingress, &addressed, now),
        Err(reason) => Decision::drop(reason),
    }
}

/// [`decide`] for a frame already classified: learns its source and decides where it goes.
pub fn decide_addressed(
    fdb: &mut Fdb,
    events: &mut FdbCounters,
    ingress: PortId,
    addressed: &Addressed,
    now: Instant,
) -> Decision {
    match fdb.learn(addressed.src, ingress, now) {
        Learned::New => events.learned += 1,
        Learned::Moved { .. } => events.moved += 1,
        Learned::TableFull => events.table_full += 1,
        Learned::PortLimit => events.port_limit += 1,
        Learned::Refreshed | Learned::StaticConflict => {}
    }
    let verdict = if addressed.dst.is_multicast() {
        Verdict::Flood
    } else {
        match fdb.lookup(&addressed.dst_key(), now) {
            Lookup::Hit(port) if port == ingress => Verdict::Drop(DropReason::SamePort),
            Lookup::Hit(port) => Verdict::Forward(port),
            Lookup::Miss => Verdict::Flood,
        }
    };
    Decision {
        verdict,
        vlan: addressed.ingress.vlan,
        tagged: addressed.ingress.tagged,
    }
}

/// A port-management failure, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port {0} already exists")]
    Exists(String),
    #[error("no such port {0}")]
    Unknown(String),
    #[error("no such bridge domain {0}")]
    UnknownDomain(String),
    #[error("all {0} port slots are in use")]
    NoSlot(u32),
    #[error(
        "port {name} has MTU {mtu}, but frame_size = {frame_size} carries MTU {max_mtu} at most; {hint}"
    )]
    MtuTooLarge {
        name: String,
        mtu: u32,
        frame_size: u32,
        max_mtu: u32,
        hint: &'static str,
    },
    #[error(transparent)]
    Bind(#[from] xsk::XskError),
    #[error("cannot share the port's socket with the tx thread: {0}")]
    TxThread(std::io::Error),
}

/// The data plane: owns the UMEM, the ports and the FDB.
#[derive(Debug)]
pub struct Forwarder {
    umem: Umem,
    frames: Frames,
    /// Indexed by `PortId`; `None` for a free slot.
    ports: Vec<Option<Port>>,
    domains: Vec<Domain>,
    fdb: Fdb,
    fdb_counters: FdbCounters,
    /// Frames kept on the fill ring of a socket that is receiving.
    fill_target: u32,
    /// Sockets the UMEM is shared among, for sizing `fill_target`: at least the number
    /// expected from the config, so ports added one by one at start-up do not each take
    /// a share meant for fewer ports.
    expected_sockets: u32,
    config: LoopConfig,
    commands: Receiver<Command>,
    wakeup: Arc<EventFd>,
    port_gone: tokio::sync::mpsc::UnboundedSender<PortGone>,
    last_housekeeping: Instant,
    /// Scratch for one rx batch and one flood, so the hot path allocates nothing.
    batch: Vec<Desc>,
    addressed: Vec<Result<Addressed, DropReason>>,
    flood_targets: Vec<(PortId, Egress)>,
    flood_copies: Vec<(PortId, Egress, Option<Desc>)>,
    pollfds: Vec<libc::pollfd>,
    /// Sleeps on the CPU that will wake us, when traffic is sparse (`affinity`).
    follow_wakeups: Option<Follower>,
    /// Kicks some ports' tx rings from a second CPU under load (`txhelper`).
    tx_helper: Option<TxHelper>,
    /// When `poll` last returned: how long the forwarder has been working without a break.
    awake_since: Instant,
    /// Ports with unsent frames on their tx ring after this turn's `transmit`s.
    to_kick: Vec<usize>,
    /// The XDP fast path's maps and a way to ask which ports can take redirected frames.
    fast_path: Option<(FastPath, XdpFeatures)>,
}

impl Forwarder {
    /// A forwarder with no ports; every UMEM frame starts free.
    #[must_use]
    pub fn new(
        umem: Umem,
        fdb: Fdb,
        config: LoopConfig,
        commands: Receiver<Command>,
        wakeup: Arc<EventFd>,
        port_gone: tokio::sync::mpsc::UnboundedSender<PortGone>,
    ) -> Self {
        let frames = Frames::new(umem.frame_count(), umem.frame_size());
        let mut fwd = Self {
            umem,
            frames,
            ports: Vec::new(),
            domains: Vec::new(),
            fdb,
            fdb_counters: FdbCounters::default(),
            fill_target: 0,
            expected_sockets: 0,
            config,
            commands,
            wakeup,
            port_gone,
            last_housekeeping: Instant::now(),
            batch: Vec::with_capacity(RX_BATCH as usize),
            addressed: Vec::with_capacity(RX_BATCH as usize),
            flood_targets: Vec::new(),
            flood_copies: Vec::new(),
            pollfds: Vec::new(),
            follow_wakeups: None,
            tx_helper: None,
            awake_since: Instant::now(),
            to_kick: Vec::with_capacity(bridge_common::maps::MAX_PORTS as usize),
            fast_path: None,
        };
        fwd.ports_changed();
        fwd
    }

    /// Sizes fill rings for at least `sockets` sockets (the ports of the config, before they
    /// are added one by one).
    pub fn expect_sockets(&mut self, sockets: u32) {
        self.expected_sockets = sockets;
        self.ports_changed();
    }

    /// Sleeps on the CPU `wake` names from now on (see `affinity`).
    ///
    /// # Errors
    /// The thread's affinity cannot be read.
    pub fn follow_wakeups(&mut self, wake: WakeCpu) -> nix::Result<()> {
        self.follow_wakeups = Some(Follower::new(wake)?);
        Ok(())
    }

    /// Lets a second thread kick some ports' tx rings when busy (see `txhelper`).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start_tx_helper(&mut self) -> std::io::Result<()> {
        let helper = TxHelper::start(bridge_common::maps::MAX_PORTS as usize, self.config.spin)?;
        for (slot, port) in self.ports.iter().enumerate() {
            if let Some(socket) = port.as_ref().and_then(|p| p.sockets.first()) {
                helper.add(PortId::from_index(slot), socket)?;
            }
        }
        self.tx_helper = Some(helper);
        Ok(())
    }

    /// Lets the XDP program forward frames between access ports itself (see `fastpath`);
    /// from now on the forwarder mirrors its FDB and ports into the program's maps.
    ///
    /// # Errors
    /// The kernel cannot say which interfaces take redirected frames (no `netdev` netlink
    /// family before Linux 6.3).
    pub fn enable_fast_path(&mut self, fast: FastPath) -> std::io::Result<()> {
        self.fast_path = Some((fast, XdpFeatures::open()?));
        self.fdb.record_changes();
        self.update_fast_path_ports(&[], true);
        self.sync_fast_path(false, Instant::now());
        Ok(())
    }

    /// Puts each port in the fast path, or takes it out, as its mode, MTU and interface allow
    /// now: a port joins only while its interface takes redirected frames. The entries of
    /// the slots in `changed` (a new MTU), or of all with `all_changed`, are rewritten even
    /// if they are in already.
    fn update_fast_path_ports(&mut self, changed: &[usize], all_changed: bool) {
        let Some((fast, features)) = &mut self.fast_path else {
            return;
        };
        let features = features.all().unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the interfaces' XDP features; taking every port out of the fast path");
            std::collections::HashMap::new()
        });
        for (slot, port) in self.ports.iter_mut().enumerate() {
            let Some(port) = port else { continue };
            let Some(segment) = fastpath::port_segment(port.domain, &port.mode) else {
                continue;
            };
            let takes_redirects = features
                .get(&port.ifindex)
                .is_some_and(|bits| bits & xdp_features::NDO_XMIT != 0);
            let changed = all_changed || changed.contains(&slot);
            fast.follow(
                PortId::from_index(slot),
                port,
                segment,
                takes_redirects,
                changed,
            );
        }
    }

    /// Whether new stations wait to go into the fast path: idle turns add them, so the
    /// forwarder does not sleep before they are in.
    fn fast_path_waiting(&self) -> bool {
        self.fast_path
            .as_ref()
            .is_some_and(|(fast, _)| fast.has_waiting())
    }

    /// Mirrors the FDB's changes into the fast path's address table; new stations wait while
    /// the forwarder is `busy` (see [`FastPath::apply`]).
    fn sync_fast_path(&mut self, busy: bool, now: Instant) {
        if let Some((fast, _)) = &mut self.fast_path {
            if self.fdb.has_changes() || fast.has_waiting() {
                fast.apply(self.fdb.take_changes(), busy, now);
            }
        }
    }

    /// Creates a bridge domain if it does not exist yet.
    pub fn ensure_domain(&mut self, name: &str) -> DomainId {
        let index = self
            .domains
            .iter()
            .position(|d| d.name == name)
            .unwrap_or_else(|| {
                self.domains.push(Domain {
                    name: name.to_owned(),
                    members: Vec::new(),
                });
                self.domains.len() - 1
            });
        DomainId(u16::try_from(index).expect("fewer domains than ports"))
    }

    /// Binds one socket per rx queue of a port and adds it to its domain. Frames arrive
    /// once the caller has published the sockets in the XSKMAP and attached XDP.
    ///
    /// # Errors
    /// The port exists, there is no free slot, or a socket cannot be bound.
    pub fn add_port(&mut self, spec: PortSpec) -> Result<PortAdded, PortError> {
        if self.ports.iter().flatten().any(|p| p.name == spec.name) {
            return Err(PortError::Exists(spec.name));
        }
        let frame_size = self.umem.frame_size();
        if spec.mtu > port::max_mtu(frame_size) {
            return Err(PortError::MtuTooLarge {
                name: spec.name,
                mtu: spec.mtu,
                frame_size,
                max_mtu: port::max_mtu(frame_size),
                hint: if frame_size < 4096 {
                    "set frame_size = 4096 in the config or lower the MTU"
                } else {
                    "lower the MTU"
                },
            });
        }
        let max = bridge_common::maps::MAX_PORTS;
        let slot = match self.ports.iter().position(Option::is_none) {
            Some(s) => s,
            None if self.ports.len() < max as usize => {
                self.ports.push(None);
                self.ports.len() - 1
            }
            None => return Err(PortError::NoSlot(max)),
        };
        let mut sockets: Vec<Socket> = Vec::with_capacity(spec.queues as usize);
        for queue in 0..spec.queues {
            // Any bound socket shares the UMEM; the very first one registers it.
            let shared = self
                .ports
                .iter()
                .flatten()
                .flat_map(|p| p.sockets.first())
                .next()
                .or(sockets.first());
            let socket = Socket::bind(
                &self.umem,
                &spec.name,
                spec.ifindex,
                queue,
                shared.map(AsFd::as_fd),
                self.config.socket,
            )?;
            sockets.push(socket);
        }
        let id = PortId::from_index(slot);
        if let Some(helper) = &self.tx_helper {
            helper.add(id, &sockets[0]).map_err(PortError::TxThread)?;
        }
        let domain = self.ensure_domain(&spec.domain);
        self.domains[usize::from(domain.0)].members.push(id);
        let fds = sockets.iter().map(|s| (s.queue(), s.raw_fd())).collect();
        info!(port = %spec.name, ifindex = spec.ifindex, queues = spec.queues, slot, domain = %spec.domain, mode = %spec.mode, "port added");
        self.ports[slot] = Some(Port {
            name: spec.name,
            ifindex: spec.ifindex,
            domain,
            mode: spec.mode,
            mtu: spec.mtu,
            sockets,
            tx_stage: Vec::new(),
            counters: Default::default(),
            in_fast_path: false,
        });
        self.update_fast_path_ports(&[slot], false);
        self.ports_changed();
        self.top_up_idle();
        Ok(PortAdded {
            slot: id.0,
            sockets: fds,
        })
    }

    /// Closes a port's sockets, reclaims every frame its rings held and forgets its MACs.
    ///
    /// # Errors
    /// No such port.
    pub fn remove_port(&mut self, name: &str) -> Result<PortRemoved, PortError> {
        let slot = self
            .ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.name == name))
            .ok_or_else(|| PortError::Unknown(name.to_owned()))?;
        let port = self.ports[slot].take().expect("found above");
        let id = PortId::from_index(slot);
        if let (Some((fast, _)), true) = (&mut self.fast_path, port.in_fast_path) {
            fast.leave(id);
        }
        self.domains[usize::from(port.domain.0)]
            .members
            .retain(|&m| m != id);
        for desc in &port.tx_stage {
            self.frames.release(self.umem.chunk_of(desc.addr));
        }
        let ifindex = port.ifindex;
        if let Some(helper) = &self.tx_helper {
            helper.remove(id);
        }
        // Closing the sockets waits for in-flight receives (synchronize_net in xsk_release),
        // after which the kernel holds none of the port's frames.
        drop(port);
        let reclaimed = self.frames.reclaim(id);
        let forgotten = self.fdb.flush_port(id);
        self.ports_changed();
        info!(port = name, slot, reclaimed, forgotten, "port removed");
        Ok(PortRemoved {
            slot: id.0,
            ifindex,
        })
    }

    /// Recomputes what depends on the set of sockets: fill depth and the poll set.
    fn ports_changed(&mut self) {
        let sockets: u32 = self
            .ports
            .iter()
            .flatten()
            .map(|p| count(p.sockets.len()))
            .sum();
        // Half the frames wait on fill rings, the other half are in flight or free.
        self.fill_target =
            (self.umem.frame_count() / 2 / sockets.max(self.expected_sockets).max(1))
                .clamp(1, self.config.socket.ring_size);
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
            let want = RX_BATCH as usize * (port.sockets.len() + 1) * 2;
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
        let mut last_work = Instant::now();
        loop {
            let now = Instant::now();
            let work = self.turn(now);
            if !self.apply_commands(now) {
                break;
            }
            self.sync_fast_path(work, now);
            if work {
                last_work = now;
            } else if now.duration_since(last_work) >= self.config.spin && !self.fast_path_waiting()
            {
                self.sleep(now);
            } else {
                // Spin politely: a receiver woken on this CPU by our last transmit runs now
                // instead of after the spin (one-way p50 at 10 kpps 35 -> 18 us).
                std::thread::yield_now();
            }
        }
        // Joined before the sockets close, so no kick races their teardown.
        self.tx_helper = None;
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
        work |= self.kick(now);
        self.top_up_idle();
        if now.duration_since(self.last_housekeeping) >= HOUSEKEEPING_INTERVAL {
            self.last_housekeeping = now;
            self.housekeeping(now);
        }
        self.sync_fast_path(work, now);
        debug_assert!(self.accounting().balanced(), "{:?}", self.accounting());
        work
    }

    /// Ages out FDB entries, follows MTU changes and removes ports whose interface has vanished.
    fn housekeeping(&mut self, now: Instant) {
        if let (Some((fast, _)), Some(second)) = (&self.fast_path, fastpath::coarse_second()) {
            let ports = &self.ports;
            let in_fast_path = |port: PortId| {
                ports
                    .get(port.0 as usize)
                    .is_some_and(|p| p.as_ref().is_some_and(|p| p.in_fast_path))
            };
            // Twice the interval: every entry is asked about before it ages out.
            self.fdb
                .refresh_used_elsewhere(now, 2 * HOUSEKEEPING_INTERVAL, |key, entry| {
                    in_fast_path(entry.port)
                        .then(|| fast.used_ago(key, second))
                        .flatten()
                });
        }
        self.fdb_counters.aged_out += self.fdb.expire(now) as u64;
        let max_mtu = port::max_mtu(self.umem.frame_size());
        let mut mtu_changed = Vec::new();
        for (slot, p) in self.ports.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            let Ok(mtu) = port::mtu(&p.name) else {
                continue;
            };
            if mtu != p.mtu {
                mtu_changed.push(slot);
                p.mtu = mtu;
                if mtu > max_mtu {
                    warn!(port = %p.name, mtu, max_mtu, "MTU raised above what a UMEM frame holds; longer frames from this port are dropped by AF_XDP (kernel.rx_dropped)");
                } else {
                    info!(port = %p.name, mtu, "MTU changed");
                }
            }
        }
        let gone: Vec<String> = self
            .ports
            .iter()
            .flatten()
            .filter(|p| port::vanished(&p.name, p.ifindex))
            .map(|p| p.name.clone())
            .collect();
        for name in gone {
            warn!(port = %name, "interface vanished; removing the port");
            if let Ok(removed) = self.remove_port(&name) {
                let _ = self.port_gone.send(PortGone { name, removed });
            }
        }
        self.update_fast_path_ports(&mtu_changed, false);
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
                let chunk = self.umem.chunk_of(socket.completion.get(i));
                self.frames.returned(chunk);
                self.frames.release(chunk);
            }
            socket.completion.release(n);
            socket.tx_outstanding -= n;
            work |= n > 0;
        }
        work
    }

    /// Takes one batch from socket `qi` of port `pi`, stages every frame, refills.
    ///
    /// In three passes, so that no frame waits for memory on its own: start loading every
    /// frame's headers (the kernel wrote them on another CPU), then read them and start loading
    /// the FDB slots they will need (with many stations those are in no cache), then handle
    /// each frame.
    #[allow(
        unsafe_code,
        reason = "reads frames this thread owns: they just came off an rx ring"
    )]
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
        if let Some(follower) = &mut self.follow_wakeups {
            follower.received(n);
        }
        for desc in &self.batch {
            self.umem.prefetch(desc.addr);
        }
        self.addressed.clear();
        for desc in &self.batch {
            let len = desc.len as usize;
            let addressed = if self.umem.contains(desc.addr, len) {
                // SAFETY: the descriptor came off our rx ring, so this thread owns the frame;
                // nothing writes it until `handle` below.
                let frame = unsafe { self.umem.frame(desc.addr, len) };
                address(port.domain, &port.mode, frame)
            } else {
                Err(DropReason::Runt)
            };
            if let Ok(addressed) = &addressed {
                addressed.prefetch(&self.fdb);
            }
            self.addressed.push(addressed);
        }
        let ingress = PortId::from_index(pi);
        for i in 0..self.batch.len() {
            self.handle(ingress, self.batch[i], self.addressed[i], now);
        }
        self.refill(pi, qi, self.fill_target);
        true
    }

    /// Completes a partial checksum, learns one received frame's source and stages it for its
    /// egress port(s); `addressed` is what [`address`] made of it.
    #[allow(
        unsafe_code,
        reason = "reads and rewrites a frame this thread owns: it just came off an rx ring"
    )]
    fn handle(
        &mut self,
        ingress: PortId,
        desc: Desc,
        addressed: Result<Addressed, DropReason>,
        now: Instant,
    ) {
        let len = desc.len as usize;
        if !self.umem.contains(desc.addr, len) {
            // The kernel never does this; treat it as a runt rather than trust it.
            warn!(addr = desc.addr, len, "rx descriptor outside the UMEM");
            if self.umem.contains(desc.addr, 0) {
                // One of our frames with a length past its end: take it back.
                self.frames.returned(self.umem.chunk_of(desc.addr));
                self.drop_frame(ingress, desc, DropReason::Runt);
            } else {
                // No frame of ours at all: nothing to take back or free.
                self.port_mut(ingress)
                    .counters
                    .drops
                    .count(DropReason::Runt);
            }
            return;
        }
        self.frames.returned(self.umem.chunk_of(desc.addr));
        // SAFETY: the descriptor came off our rx ring, so this thread owns the frame.
        let frame = unsafe { self.umem.frame_mut(desc.addr, len) };
        let completed = checksum::complete_partial(frame);
        let frame = &*frame;
        let port = self.ports[ingress.0 as usize]
            .as_mut()
            .expect("receiving port is live");
        port.counters.rx_checksums_completed += u64::from(completed);
        let domain = port.domain;
        let unicast = frame.first().is_some_and(|b| b & 1 == 0);
        let decision = match addressed {
            Ok(addressed) => decide_addressed(
                &mut self.fdb,
                &mut self.fdb_counters,
                ingress,
                &addressed,
                now,
            ),
            Err(reason) => Decision::drop(reason),
        };
        port.counters.rx_frames += 1;
        port.counters.rx_bytes += len as u64;
        match decision.verdict {
            Verdict::Forward(egress) => {
                let mode = self
                    .ports
                    .get(egress.0 as usize)
                    .and_then(Option::as_ref)
                    .map(|p| p.mode.egress(decision.vlan));
                match mode {
                    Some(Some(how)) => {
                        self.stage(egress, desc, decision.tagged, how, decision.vlan)
                    }
                    _ => self.drop_frame(ingress, desc, DropReason::VlanNotMember),
                }
            }
            Verdict::Drop(reason) => self.drop_frame(ingress, desc, reason),
            Verdict::Flood => {
                port.counters.rx_flooded += 1;
                port.counters.rx_unknown_unicast += u64::from(unicast);
                self.flood(domain, ingress, desc, decision);
            }
        }
    }

    /// Sends a frame to every other port of its domain that carries its VLAN.
    #[allow(unsafe_code, reason = "hands fan_out a frame this thread owns (rx'd)")]
    fn flood(&mut self, domain: DomainId, ingress: PortId, desc: Desc, decision: Decision) {
        let mut targets = std::mem::take(&mut self.flood_targets);
        targets.clear();
        for &member in &self.domains[usize::from(domain.0)].members {
            let how = self.ports[member.0 as usize]
                .as_ref()
                .and_then(|p| p.mode.egress(decision.vlan));
            if let (true, Some(how)) = (member != ingress, how) {
                targets.push((member, how));
            }
        }
        if targets.is_empty() {
            self.drop_frame(ingress, desc, DropReason::NoDestination);
        } else {
            let mut copies = std::mem::take(&mut self.flood_copies);
            // SAFETY: `desc` came off an rx ring and `handle` checked that it lies in the UMEM,
            // so this thread owns its frame and nothing else reads or writes it.
            unsafe { fan_out(&self.umem, &mut self.frames, desc, &targets, &mut copies) };
            for &(egress, how, copy) in &copies {
                match copy {
                    Some(copy) => self.stage(egress, copy, decision.tagged, how, decision.vlan),
                    None => self
                        .port_mut(egress)
                        .counters
                        .drops
                        .count(DropReason::UmemExhausted),
                }
            }
            self.flood_copies = copies;
        }
        self.flood_targets = targets;
    }

    /// Tags or untags the frame in place as the egress port needs, then queues it there.
    #[allow(
        unsafe_code,
        reason = "rewrites the header of a frame this thread owns"
    )]
    fn stage(&mut self, egress: PortId, desc: Desc, tagged: bool, how: Egress, vlan: VlanId) {
        let chunk = self.umem.chunk_of(desc.addr);
        let offset = usize::try_from(desc.addr - chunk).expect("offset within a frame");
        // SAFETY: the frame is owned by this thread (rx'd or freshly allocated), and no other
        // view of it is alive.
        let whole = unsafe { self.umem.frame_mut(chunk, self.umem.frame_size() as usize) };
        let desc = vlan::rewrite_for_egress(whole, offset, desc.len as usize, tagged, how, vlan)
            .map(|(offset, len)| Desc {
                addr: chunk + offset as u64,
                len: count(len),
                options: 0,
            });
        match (
            desc,
            self.ports
                .get_mut(egress.0 as usize)
                .and_then(Option::as_mut),
        ) {
            (Some(desc), Some(port)) if desc.len > port::max_frame_len(port.mtu) => {
                port.counters.drops.count(DropReason::MtuExceeded);
                self.frames.release(chunk);
            }
            (Some(desc), Some(port)) => port.tx_stage.push(desc),
            // Popping the tag would bare a second one (VLAN hopping), or no headroom to push a
            // tag (only for frames the kernel placed oddly).
            (None, Some(port)) => {
                port.counters.drops.count(DropReason::VlanNotMember);
                self.frames.release(chunk);
            }
            (_, None) => self.frames.release(chunk),
        }
    }

    fn drop_frame(&mut self, port: PortId, desc: Desc, reason: DropReason) {
        self.port_mut(port).counters.drops.count(reason);
        self.frames.release(self.umem.chunk_of(desc.addr));
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
        let staged = count(port.tx_stage.len());
        let mut work = false;
        if staged > 0 {
            let n = socket.tx.reserve(staged);
            let mut bytes = 0u64;
            for (i, desc) in port.tx_stage.iter().take(n as usize).enumerate() {
                socket.tx.set(count(i), *desc);
                self.frames
                    .lend(self.umem.chunk_of(desc.addr), PortId::from_index(pi));
                bytes += u64::from(desc.len);
            }
            socket.tx.submit(n);
            socket.tx_outstanding += n;
            port.counters.tx_frames += u64::from(n);
            port.counters.tx_bytes += bytes;
            for desc in port.tx_stage.drain(n as usize..) {
                port.counters.drops.count(DropReason::TxRingFull);
                self.frames.release(self.umem.chunk_of(desc.addr));
            }
            port.tx_stage.clear();
            work = true;
        }
        // Copy mode transmits inside sendto(); kick while anything is still unsent.
        if socket.tx.pending() > 0 {
            self.to_kick.push(pi);
        }
        work
    }

    /// Kicks every port `transmit` left with unsent frames. Under sustained load, the ports
    /// the helper's `Split` names go to the tx thread, so that the kernel work inside the
    /// kicks (the receivers' network stacks) runs on two CPUs. Returns whether the forwarder
    /// kicked any itself.
    fn kick(&mut self, now: Instant) -> bool {
        if let Some(helper) = &mut self.tx_helper {
            helper.split.roll(now);
        }
        let busy = now.duration_since(self.awake_since) >= txhelper::BUSY_AFTER;
        let mut work = false;
        for &pi in &self.to_kick {
            let id = PortId::from_index(pi);
            // Not work of ours when handed over: spinning until the thread has sent would
            // only take the CPU it needs. `note` runs busy or not: it records the port as active.
            let handed_over = self.tx_helper.as_mut().is_some_and(|helper| {
                let theirs = helper.split.note(id) && busy;
                if theirs {
                    helper.request(id);
                }
                theirs
            });
            if !handed_over {
                let port = self.ports[pi].as_ref().expect("just transmitted");
                if let Err(e) = port.sockets[0].kick_tx() {
                    debug!(port = %port.name, error = %e, "tx kick failed");
                }
                work = true;
            }
        }
        self.to_kick.clear();
        work
    }

    /// Gives every socket below its idle depth more frames, if any are free. Frames come
    /// back to the free list from other ports' completions, so a starved socket recovers
    /// as soon as anything is forwarded anywhere.
    fn top_up_idle(&mut self) {
        let depth = IDLE_FILL.min(self.fill_target);
        for pi in 0..self.ports.len() {
            let queues = self.ports[pi].as_ref().map_or(0, |p| p.sockets.len());
            for qi in 0..queues {
                self.refill(pi, qi, depth);
            }
        }
    }

    /// Tops a socket's fill ring up to `depth` frames from the free list.
    fn refill(&mut self, pi: usize, qi: usize, depth: u32) {
        let Some(port) = self.ports[pi].as_mut() else {
            return;
        };
        let socket = &mut port.sockets[qi];
        if socket.fill_outstanding >= depth {
            return;
        }
        let want = depth
            .saturating_sub(socket.fill_outstanding)
            .min(self.frames.free_count());
        let n = socket.fill.reserve(want);
        for i in 0..n {
            let chunk = self
                .frames
                .alloc()
                .expect("reserved no more than the free list holds");
            self.frames.lend(chunk, PortId::from_index(pi));
            socket.fill.set(i, chunk);
        }
        socket.fill.submit(n);
        socket.fill_outstanding += n;
        if n > 0 {
            socket.wake_rx_if_needed();
        }
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
            HOUSEKEEPING_INTERVAL.saturating_sub(now.duration_since(self.last_housekeeping))
        };
        if let Some(follower) = &mut self.follow_wakeups {
            follower.before_sleep();
        }
        for fd in &mut self.pollfds {
            fd.revents = 0;
        }
        let asleep = Instant::now();
        if let Err(e) = xsk::sys::poll(&mut self.pollfds, timeout) {
            warn!(error = %e, "poll failed");
        }
        self.awake_since = Instant::now();
        if let Some(follower) = &mut self.follow_wakeups {
            follower.after_sleep(self.awake_since.duration_since(asleep));
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
                Command::ShowInterfaces(reply) => drop(reply.send(self.status())),
                Command::ShowFdb(reply) => drop(reply.send(self.fdb_rows(now))),
                Command::ShowBridgeDomains(reply) => drop(reply.send(self.domain_rows())),
                Command::AddPort(spec, reply) => drop(reply.send(self.add_port(spec))),
                Command::RemovePort(name, reply) => {
                    drop(reply.send(self.remove_port(&name).map_err(|e| e.to_string())))
                }
                Command::AddStaticEntry(entry, reply) => {
                    drop(reply.send(self.add_static(&entry, now)))
                }
                Command::DeleteEntry(selector, reply) => {
                    drop(reply.send(self.delete_entry(&selector)))
                }
                Command::FlushFdb {
                    domain,
                    port,
                    reply,
                } => {
                    drop(reply.send(self.flush_fdb(domain.as_deref(), port.as_deref())));
                }
            }
        }
        true
    }

    fn find_port(&self, name: &str) -> Result<(PortId, &Port), String> {
        self.ports
            .iter()
            .enumerate()
            .find_map(|(i, p)| {
                p.as_ref()
                    .filter(|p| p.name == name)
                    .map(|p| (PortId::from_index(i), p))
            })
            .ok_or_else(|| format!("no such port {name}"))
    }

    fn add_static(&mut self, entry: &StaticEntry, now: Instant) -> Result<(), String> {
        let mac: MacAddr = entry
            .mac
            .parse()
            .map_err(|e| format!("mac {:?}: {e}", entry.mac))?;
        if !mac.is_valid_source() {
            return Err(format!(
                "mac {mac} is a group or zero address; only unicast stations can be static entries"
            ));
        }
        let (id, port) = self.find_port(&entry.port)?;
        let vlan = match entry.vlan {
            Some(v) => {
                VlanId::new(v).ok_or_else(|| format!("vlan {v} is not a VLAN ID (1-4094)"))?
            }
            None => match &port.mode {
                PortMode::Access(v) => *v,
                PortMode::Trunk {
                    native: Some(v), ..
                } => *v,
                PortMode::Trunk { .. } => {
                    return Err(format!(
                        "port {} is a trunk without a native VLAN: give --vlan",
                        port.name
                    ))
                }
            },
        };
        if port.mode.egress(vlan).is_none() {
            return Err(format!(
                "port {} ({}) does not carry VLAN {vlan}",
                port.name, port.mode
            ));
        }
        let domain = port.domain;
        self.fdb
            .insert_static(FdbKey { domain, vlan, mac }, id, now);
        Ok(())
    }

    fn delete_entry(&mut self, selector: &EntrySelector) -> Result<bool, String> {
        let mac: MacAddr = selector
            .mac
            .parse()
            .map_err(|e| format!("mac {:?}: {e}", selector.mac))?;
        let domain = self
            .domains
            .iter()
            .position(|d| d.name == selector.domain)
            .ok_or_else(|| format!("no such bridge domain {}", selector.domain))?;
        let vlan = match selector.vlan {
            Some(v) => {
                VlanId::new(v).ok_or_else(|| format!("vlan {v} is not a VLAN ID (1-4094)"))?
            }
            None => VlanId::DEFAULT,
        };
        let domain = DomainId(u16::try_from(domain).expect("domains fit u16"));
        Ok(self.fdb.remove(&FdbKey { domain, vlan, mac }))
    }

    fn flush_fdb(&mut self, domain: Option<&str>, port: Option<&str>) -> Result<usize, String> {
        let domain = match domain {
            Some(name) => Some(DomainId(
                u16::try_from(
                    self.domains
                        .iter()
                        .position(|d| d.name == name)
                        .ok_or_else(|| format!("no such bridge domain {name}"))?,
                )
                .expect("domains fit u16"),
            )),
            None => None,
        };
        let port = port
            .map(|name| self.find_port(name).map(|(id, _)| id))
            .transpose()?;
        Ok(self.fdb.flush_dynamic(|key, entry| {
            domain.is_none_or(|d| key.domain == d) && port.is_none_or(|p| entry.port == p)
        }))
    }

    /// Where every frame is right now (between turns nothing is staged).
    #[must_use]
    pub fn accounting(&self) -> Accounting {
        let sockets = || self.ports.iter().flatten().flat_map(|p| &p.sockets);
        let staged: u32 = self
            .ports
            .iter()
            .flatten()
            .map(|p| count(p.tx_stage.len()))
            .sum();
        Accounting {
            total: self.umem.frame_count(),
            free: self.frames.free_count() + staged,
            in_fill: sockets().map(|s| s.fill_outstanding).sum(),
            in_tx: sockets().map(|s| s.tx_outstanding).sum(),
        }
    }

    fn status(&self) -> Status {
        let interfaces = self
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
                    slot: PortId::from_index(slot).0,
                    ifindex: p.ifindex,
                    queues: count(p.sockets.len()),
                    mtu: p.mtu,
                    mode: p.mode.to_string(),
                    counters: p.counters,
                    fast_path: p.in_fast_path,
                    xdp: Default::default(),
                    kernel,
                }
            })
            .collect();
        let a = self.accounting();
        Status {
            interfaces,
            umem: UmemRow {
                frames: a.total,
                free: a.free,
                in_fill: a.in_fill,
                in_tx: a.in_tx,
                balanced: a.balanced(),
            },
            fdb_entries: self.fdb.len(),
            fdb: self.fdb_counters,
            tx_thread_kicks: self.tx_helper.as_ref().map(TxHelper::kicks),
            fast_path_table_full: self.fast_path.as_ref().map(|(f, _)| f.table_full),
        }
    }

    fn port_name(&self, id: PortId) -> String {
        self.ports
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    }

    fn domain_rows(&self) -> Vec<DomainRow> {
        self.domains
            .iter()
            .enumerate()
            .map(|(i, d)| DomainRow {
                name: d.name.clone(),
                ports: d
                    .members
                    .iter()
                    .filter_map(|m| self.ports[m.0 as usize].as_ref())
                    .map(|p| DomainPortRow {
                        name: p.name.clone(),
                        mode: p.mode.to_string(),
                    })
                    .collect(),
                fdb_entries: self
                    .fdb
                    .iter()
                    .filter(|(k, _)| usize::from(k.domain.0) == i)
                    .count(),
            })
            .collect()
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
                port: self.port_name(e.port),
                age_secs: now.saturating_duration_since(e.last_seen).as_secs(),
                is_static: e.is_static,
                // Filled in by the control path for entries on a VXLAN uplink.
                remote: None,
            })
            .collect();
        rows.sort_by(|a, b| (&a.domain, a.vlan, &a.mac).cmp(&(&b.domain, b.vlan, &b.mac)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vlan::VlanSet;

    const A: PortId = PortId(0);
    const B: PortId = PortId(1);
    const D: DomainId = DomainId(0);
    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn frame(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn tagged(dst: [u8; 6], src: [u8; 6], vid: u16) -> Vec<u8> {
        let mut f = frame(dst, src, 0x8100);
        f[14..16].copy_from_slice(&vid.to_be_bytes());
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    #[test]
    #[allow(
        unsafe_code,
        reason = "reads and writes frames of a UMEM only this test uses"
    )]
    fn fan_out_copies_for_all_but_the_last_target_and_reports_an_empty_free_list() {
        let umem = Umem::new(4, 2048).expect("a small UMEM");
        let mut frames = Frames::new(umem.frame_count(), umem.frame_size());
        let chunk = frames.alloc().expect("a free frame");
        let original = Desc {
            addr: chunk + 256,
            len: 60,
            options: 0,
        };
        let bytes = frame(MAC_B, MAC_A, 0x0800);
        // SAFETY: the frame just came off the free list; nothing else uses this UMEM.
        unsafe { umem.frame_mut(original.addr, 60) }.copy_from_slice(&bytes);
        let targets: Vec<(PortId, Egress)> =
            (1..=4).map(|p| (PortId(p), Egress::Untagged)).collect();
        let mut copies = Vec::new();

        // Three free frames left: three copies, and the last target gets the original.
        // SAFETY: as above, the test owns the original's frame.
        unsafe { fan_out(&umem, &mut frames, original, &targets, &mut copies) };
        let ports: Vec<PortId> = copies.iter().map(|c| c.0).collect();
        assert_eq!(ports, [PortId(1), PortId(2), PortId(3), PortId(4)]);
        assert_eq!(copies[3].2, Some(original));
        let mut chunks = vec![chunk];
        for &(_, _, copy) in &copies[..3] {
            let copy = copy.expect("a free frame for each");
            assert_eq!(
                (copy.addr % 2048, copy.len),
                (256, 60),
                "same offset and length"
            );
            assert!(
                !chunks.contains(&umem.chunk_of(copy.addr)),
                "a frame of its own"
            );
            chunks.push(umem.chunk_of(copy.addr));
            // SAFETY: the copy's frame came off the free list for this test alone.
            assert_eq!(unsafe { umem.frame(copy.addr, 60) }, &bytes[..]);
        }
        assert_eq!(frames.free_count(), 0);

        // Free list empty: the copies fail, the last target still gets the original.
        // SAFETY: as above.
        unsafe { fan_out(&umem, &mut frames, original, &targets[..3], &mut copies) };
        let got: Vec<Option<Desc>> = copies.iter().map(|c| c.2).collect();
        assert_eq!(got, [None, None, Some(original)]);
        // SAFETY: as above.
        unsafe { fan_out(&umem, &mut frames, original, &[], &mut copies) };
        assert!(copies.is_empty(), "no targets, no copies");
    }

    struct Bridge {
        fdb: Fdb,
        events: FdbCounters,
        now: Instant,
        mode: PortMode,
    }

    impl Bridge {
        fn new() -> Self {
            Self {
                fdb: Fdb::new(Duration::from_secs(300), 1024, 1024),
                events: FdbCounters::default(),
                now: Instant::now(),
                mode: PortMode::default(),
            }
        }

        fn decide_in(&mut self, domain: DomainId, ingress: PortId, f: &[u8]) -> Verdict {
            decide(
                &mut self.fdb,
                &mut self.events,
                domain,
                ingress,
                &self.mode.clone(),
                f,
                self.now,
            )
            .verdict
        }

        fn decide(&mut self, ingress: PortId, f: &[u8]) -> Verdict {
            self.decide_in(D, ingress, f)
        }
    }

    #[test]
    fn unknown_unicast_floods_then_learned_forwards() {
        let mut b = Bridge::new();
        assert_eq!(b.decide(A, &frame(MAC_B, MAC_A, 0x0800)), Verdict::Flood);
        assert_eq!(
            b.decide(B, &frame(MAC_A, MAC_B, 0x0800)),
            Verdict::Forward(A)
        );
        assert_eq!(
            b.decide(A, &frame(MAC_B, MAC_A, 0x0800)),
            Verdict::Forward(B)
        );
        assert_eq!(b.events.learned, 2);
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_known() {
        let mut b = Bridge::new();
        b.decide(B, &frame(MAC_A, MAC_B, 0x0800));
        assert_eq!(
            b.decide(A, &frame([0xff; 6], MAC_A, 0x0806)),
            Verdict::Flood
        );
        assert_eq!(
            b.decide(A, &frame([1, 0, 0x5e, 0, 0, 1], MAC_A, 0x0800)),
            Verdict::Flood
        );
    }

    #[test]
    fn runts_and_bad_sources_are_dropped_without_learning() {
        let mut b = Bridge::new();
        for len in 0..14 {
            assert_eq!(
                b.decide(A, &frame(MAC_B, MAC_A, 0)[..len]),
                Verdict::Drop(DropReason::Runt)
            );
        }
        for src in [[0u8; 6], [0xff; 6], [1, 0, 0x5e, 0, 0, 1]] {
            assert_eq!(
                b.decide(A, &frame(MAC_B, src, 0x0800)),
                Verdict::Drop(DropReason::InvalidSrcMac)
            );
        }
        assert!(b.fdb.is_empty());
    }

    #[test]
    fn frame_to_a_host_on_the_ingress_port_is_filtered() {
        let mut b = Bridge::new();
        let other: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
        b.decide(A, &frame(MAC_B, other, 0x0800));
        assert_eq!(
            b.decide(A, &frame(other, MAC_A, 0x0800)),
            Verdict::Drop(DropReason::SamePort)
        );
    }

    #[test]
    fn any_ethertype_is_bridged() {
        let mut b = Bridge::new();
        b.decide(B, &frame(MAC_A, MAC_B, 0x88b5));
        for ethertype in [0x88b5, 0x88cc, 0x0000, 0x05dc, 0xffff] {
            assert_eq!(
                b.decide(A, &frame(MAC_B, MAC_A, ethertype)),
                Verdict::Forward(B)
            );
        }
    }

    #[test]
    fn a_moved_station_is_followed_and_counted() {
        let mut b = Bridge::new();
        b.decide(A, &frame([0xff; 6], MAC_B, 0x0800));
        b.decide(B, &frame([0xff; 6], MAC_B, 0x0800));
        assert_eq!(b.events.moved, 1);
        assert_eq!(
            b.decide(A, &frame(MAC_B, MAC_A, 0x0800)),
            Verdict::Forward(B)
        );
    }

    #[test]
    fn domains_do_not_share_learning() {
        let mut b = Bridge::new();
        b.decide_in(DomainId(1), B, &frame(MAC_A, MAC_B, 0x0800));
        assert_eq!(b.decide(A, &frame(MAC_B, MAC_A, 0x0800)), Verdict::Flood);
    }

    #[test]
    fn learning_is_per_vlan_on_a_trunk() {
        let mut b = Bridge::new();
        b.mode = PortMode::Trunk {
            allowed: [100, 200]
                .into_iter()
                .filter_map(VlanId::new)
                .collect::<VlanSet>(),
            native: None,
        };
        b.decide(B, &tagged(MAC_A, MAC_B, 100));
        assert_eq!(b.decide(A, &tagged(MAC_B, MAC_A, 100)), Verdict::Forward(B));
        assert_eq!(
            b.decide(A, &tagged(MAC_B, MAC_A, 200)),
            Verdict::Flood,
            "B is unknown on VLAN 200"
        );
        assert_eq!(
            b.decide(A, &tagged(MAC_B, MAC_A, 300)),
            Verdict::Drop(DropReason::VlanNotAllowed)
        );
        assert_eq!(
            b.decide(A, &frame(MAC_B, MAC_A, 0x0800)),
            Verdict::Drop(DropReason::UntaggedNoNative)
        );
        assert_eq!(b.fdb.len(), 3);
    }
}
