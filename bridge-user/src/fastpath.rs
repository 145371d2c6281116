//! The XDP fast path's maps, kept in step by the forwarder (config `fast_path`).
//!
//! The XDP program sends an untagged unicast frame straight from one access port to another
//! of the same bridge domain and VLAN (a *segment*) when the forwarder has learned its source
//! on the ingress port and its destination on the egress port; everything else still comes
//! to the forwarder, which learns, floods and counts. So the forwarder mirrors every change
//! to its FDB ([`crate::fdb::Fdb::take_changes`]) into `FAST_FDB`, and each fast-path port's
//! segment and largest frame into `FAST_PORTS`.
//!
//! The forwarder sees none of the frames the fast path carries, so before it ages a station
//! out it asks `FAST_USED` (mapped into its memory, no system call) when the fast path last
//! carried a frame from it ([`FastPath::used_ago`]).
//!
//! Only ports whose kernel can take redirected frames join (`xdp_features` has `NDO_XMIT`:
//! for a veth, its peer has GRO on or an XDP program; see [`crate::xdp_features`]). Without
//! that the redirect would lose the frame.

use std::{
    os::fd::{AsFd, BorrowedFd},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use aya::maps::{Array, DevMap, HashMap, IterableMap, MapData};
use bridge_common::maps::{FastEntry, FastKey, FastPort, FAST_FDB_ENTRIES};
use tracing::{debug, info, warn};

use crate::{
    fdb::FdbKey,
    port::{max_frame_len, DomainId, Port, PortId},
    vlan::PortMode,
    xsk::{
        sys::{self, MapBatch},
        Mmap,
    },
};

/// The fast path's maps, taken from the loaded program.
pub struct FastPath {
    ports: Array<MapData, FastPort>,
    fdb: HashMap<MapData, FastKey, FastEntry>,
    devs: DevMap<MapData>,
    /// `FAST_USED`, mapped: per station, the second the fast path last carried its frame.
    used: Mmap,
    /// Each station's entry in `used`, and the entries no station holds.
    used_index: hashbrown::HashMap<FastKey, u32>,
    unused: Vec<u32>,
    /// New stations waiting for a turn without work.
    waiting: Waiting,
    /// Addresses `FAST_FDB` had no room for (they keep going through the forwarder).
    pub table_full: u64,
}

/// Longest a new station waits for the fast path while the forwarder is busy: a burst of
/// tens of thousands of new stations (a learning test, a MAC flood) passes first. Waiting
/// costs little: while the forwarder is busy, the XDP program mostly stands aside anyway.
pub const NEW_STATIONS_WAIT: Duration = Duration::from_secs(1);
/// Most waiting stations one call of [`FastPath::apply`] adds (~0.3 us each in the kernel):
/// in a turn without work, and in one with work once they have waited their time.
const WAITING_PER_IDLE_CALL: usize = 256;
const WAITING_PER_BUSY_CALL: usize = 16;

/// The segment of a VLAN of a bridge domain: never 0, which means "not a fast-path port".
#[must_use]
pub fn segment(domain: DomainId, vlan: bridge_common::wire::VlanId) -> u32 {
    1 + (u32::from(domain.0) << 12 | u32::from(vlan.get()))
}

/// The segment a port's frames stay in, if its frames may use the fast path: access ports
/// only (trunk frames are tagged and untagged by the forwarder).
#[must_use]
pub fn port_segment(domain: DomainId, mode: &PortMode) -> Option<u32> {
    match mode {
        PortMode::Access(vlan) => Some(segment(domain, *vlan)),
        PortMode::Trunk { .. } => None,
    }
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("table_full", &self.table_full)
            .finish_non_exhaustive()
    }
}

impl FastPath {
    #[must_use]
    pub fn new(
        ports: Array<MapData, FastPort>,
        fdb: HashMap<MapData, FastKey, FastEntry>,
        devs: DevMap<MapData>,
        used: Mmap,
    ) -> Self {
        Self {
            ports,
            fdb,
            devs,
            used,
            used_index: hashbrown::HashMap::new(),
            unused: (0..FAST_FDB_ENTRIES).rev().collect(),
            waiting: Waiting::default(),
            table_full: 0,
        }
    }

    /// Puts `port` in the fast path while its interface `takes_redirects`, takes it out when
    /// it stops; `changed` rewrites its entry when it is in already (a new MTU).
    pub fn follow(
        &mut self,
        slot: PortId,
        port: &mut Port,
        segment: u32,
        takes_redirects: bool,
        changed: bool,
    ) {
        match (takes_redirects, port.in_fast_path) {
            (true, in_already) if changed || !in_already => {
                if !in_already {
                    info!(port = %port.name, "in the XDP fast path");
                }
                port.in_fast_path = self.join(slot, port.ifindex, segment, max_frame_len(port.mtu));
            }
            (true, _) => {}
            (false, true) => {
                warn!(port = %port.name, "the interface no longer takes XDP-redirected frames (a veth whose peer turned GRO off?): its frames go through the forwarder");
                self.leave(slot);
                port.in_fast_path = false;
            }
            (false, false) => {
                debug!(port = %port.name, "not in the XDP fast path: the interface does not take redirected frames (for a veth: turn GRO on at the other end)");
            }
        }
    }

    /// Lets frames of `segment` up to `max_frame` bytes go straight to and from `slot`;
    /// whether it could.
    fn join(&mut self, slot: PortId, ifindex: u32, segment: u32, max_frame: u32) -> bool {
        let joined = self
            .devs
            .set(slot.0, ifindex, None, 0)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.ports
                    .set(slot.0, FastPort { segment, max_frame }, 0)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = &joined {
            warn!(%slot, error = %e, "cannot add the port to the XDP fast path; its frames go through the forwarder");
            self.leave(slot);
        }
        joined.is_ok()
    }

    /// Sends every frame from and to `slot` through the forwarder again.
    pub fn leave(&mut self, slot: PortId) {
        if let Err(e) = self.ports.set(slot.0, FastPort::default(), 0) {
            warn!(%slot, error = %e, "cannot take the port out of the XDP fast path");
        }
    }

    /// Applies FDB changes: `Some(port)` adds or moves an address, `None` removes it. Only
    /// each address's last change counts, and the kernel takes them in two system calls, not
    /// one per address. While the forwarder is `busy`, new addresses wait (up to
    /// [`NEW_STATIONS_WAIT`]): their frames go through the forwarder meanwhile, and a burst of
    /// new stations is learned at the forwarder's own rate (see README, "address learning
    /// rate"). Moves and removals never wait: a stale entry would send frames astray.
    pub fn apply(
        &mut self,
        changes: impl IntoIterator<Item = (FdbKey, Option<PortId>)>,
        busy: bool,
        now: Instant,
    ) {
        let changes = changes
            .into_iter()
            .map(|(key, port)| (fast_key(&key), port));
        let used_index = &self.used_index;
        let (add, remove) = self
            .waiting
            .plan(changes, busy, now, |fast| used_index.contains_key(fast));
        // Removals first, so their entries are free for this call's additions; only what the
        // kernel holds. An XDP program still holding an old entry may mark its index once
        // more after the next holder got it: that station then looks used for one age
        // period at most.
        let remove: Vec<FastKey> = remove
            .into_iter()
            .filter(|fast| {
                self.used_index
                    .remove(fast)
                    .map(|index| self.unused.push(index))
                    .is_some()
            })
            .collect();
        let (mut add_keys, mut add_entries, mut added_anew) = (Vec::new(), Vec::new(), Vec::new());
        for (fast, port) in add {
            let known = self.used_index.get(&fast).copied();
            let Some(index) = known.or_else(|| {
                let index = self.unused.pop()?;
                self.used_index.insert(fast, index);
                Some(index)
            }) else {
                note_table_full(&mut self.table_full, "every entry is taken");
                continue;
            };
            added_anew.push(known.is_none());
            self.used
                .bpf_array_u32(index as usize)
                .store(0, Ordering::Relaxed);
            add_keys.push(fast);
            add_entries.push(FastEntry {
                slot: port.0,
                used_index: index,
            });
        }
        let refused = batch_refusals(self.fdb.map().fd().as_fd(), &remove, MapBatch::<()>::Delete);
        for (i, _) in refused {
            // A stale entry would send frames astray: once more on its own (absent is fine).
            let _ = self.fdb.remove(&remove[i]);
        }
        let refused = batch_refusals(
            self.fdb.map().fd().as_fd(),
            &add_keys,
            MapBatch::Update(&add_entries),
        );
        for (i, error) in refused {
            // That station stays with the forwarder; a move the kernel refused would leave
            // the old entry pointing at the old port, so that goes too.
            if let Some(index) = self.used_index.remove(&add_keys[i]) {
                self.unused.push(index);
            }
            if !added_anew[i] {
                let _ = self.fdb.remove(&add_keys[i]);
            }
            note_table_full(&mut self.table_full, &error);
        }
    }

    /// Whether changes wait for [`FastPath::apply`] to be called again.
    #[must_use]
    pub fn has_waiting(&self) -> bool {
        !self.waiting.stations.is_empty()
    }

    /// How long before `now_second` ([`coarse_second`]) the fast path last carried a frame
    /// from the station, to the second.
    #[must_use]
    pub fn used_ago(&self, key: &FdbKey, now_second: u64) -> Option<Duration> {
        let &index = self.used_index.get(&fast_key(key))?;
        let second = self
            .used
            .bpf_array_u32(index as usize)
            .load(Ordering::Relaxed);
        if second == 0 {
            return None;
        }
        Some(Duration::from_secs(
            now_second.saturating_sub(u64::from(second)),
        ))
    }
}

/// The fast path's pending changes: new stations wait while the forwarder is busy (see
/// [`FastPath::apply`]); the bookkeeping alone, without the maps.
#[derive(Debug, Default)]
struct Waiting {
    stations: hashbrown::HashMap<FastKey, PortId>,
    /// When the oldest of them started waiting.
    since: Option<Instant>,
    /// Scratch: each address's last change in one call.
    last: hashbrown::HashMap<FastKey, Option<PortId>>,
}

impl Waiting {
    /// Sorts `changes` into what goes to the kernel now, as (stations to add or move,
    /// stations to remove), and what waits: a station the table does not hold yet (`in_table`
    /// says) waits while `busy`; waiting ones come out a few per call when the forwarder is
    /// not busy or they have waited [`NEW_STATIONS_WAIT`]. An address's last change counts,
    /// waiting or not, and it appears at most once in what goes to the kernel.
    fn plan(
        &mut self,
        changes: impl IntoIterator<Item = (FastKey, Option<PortId>)>,
        busy: bool,
        now: Instant,
        in_table: impl Fn(&FastKey) -> bool,
    ) -> (Vec<(FastKey, PortId)>, Vec<FastKey>) {
        let wait = busy
            && self
                .since
                .is_none_or(|since| now.duration_since(since) < NEW_STATIONS_WAIT);
        let (mut add, mut remove) = (Vec::new(), Vec::new());
        self.last.extend(changes);
        if !wait {
            // A few at a time, so that no turn stalls for long: the next burst may be coming.
            let limit = if busy {
                WAITING_PER_BUSY_CALL
            } else {
                WAITING_PER_IDLE_CALL
            };
            // Those changed again now are the loop's below.
            let last = &self.last;
            let some: Vec<_> = self
                .stations
                .iter()
                .filter(|(k, _)| !last.contains_key(*k))
                .take(limit)
                .map(|(&k, &p)| (k, p))
                .collect();
            for (k, p) in some {
                self.stations.remove(&k);
                add.push((k, p));
            }
        }
        for (fast, port) in self.last.drain() {
            match port {
                // Busy: new ones queue behind those waiting, even once those have waited
                // their time (then the queue drains a few per call).
                Some(port) if busy && !in_table(&fast) => {
                    self.stations.insert(fast, port);
                }
                Some(port) => {
                    self.stations.remove(&fast);
                    add.push((fast, port));
                }
                None => {
                    self.stations.remove(&fast);
                    remove.push(fast);
                }
            }
        }
        self.since = if self.stations.is_empty() {
            None
        } else {
            self.since.or(Some(now))
        };
        (add, remove)
    }
}

/// Runs a batch `op` over `keys`, going on past each element the kernel refuses; returns the
/// refused elements' positions with the kernel's error. A call refused as a whole (the kernel
/// then counts no element done: no batch support, a denied call) refuses every element left.
fn batch_refusals<V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[FastKey],
    op: MapBatch<'_, V>,
) -> Vec<(usize, String)> {
    let mut refused = Vec::new();
    let mut from = 0;
    while from < keys.len() {
        let rest = match op {
            MapBatch::Update(values) => MapBatch::Update(&values[from..]),
            MapBatch::Delete => MapBatch::Delete,
        };
        match sys::bpf_map_batch(map, &keys[from..], rest) {
            Ok(()) => break,
            Err((done, e)) if done >= keys.len() - from => {
                refused.extend((from..keys.len()).map(|i| (i, e.to_string())));
                break;
            }
            Err((done, e)) => {
                refused.push((from + done, e.to_string()));
                from += done + 1;
            }
        }
    }
    refused
}

/// Counts an address `FAST_FDB` had no room for; warns about the first.
fn note_table_full(table_full: &mut u64, error: &str) {
    if *table_full == 0 {
        warn!(
            error,
            "the XDP fast path's address table is full; further addresses go through the forwarder"
        );
    }
    *table_full += 1;
}

/// The second of `CLOCK_MONOTONIC_COARSE`, the clock the XDP program's `FAST_USED` marks
/// count in (`bpf_ktime_get_coarse_ns`).
#[must_use]
pub fn coarse_second() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).ok()?;
    u64::try_from(now.tv_sec()).ok()
}

fn fast_key(key: &FdbKey) -> FastKey {
    FastKey::new(segment(key.domain, key.vlan), key.mac.0)
}

#[cfg(test)]
mod tests {
    use bridge_common::wire::VlanId;

    use super::*;

    #[test]
    fn segments_are_nonzero_and_tell_domains_and_vlans_apart() {
        let v = |n| VlanId::new(n).unwrap();
        let all = [
            segment(DomainId(0), v(1)),
            segment(DomainId(0), v(4094)),
            segment(DomainId(1), v(1)),
            segment(DomainId(255), v(4094)),
        ];
        assert!(all.iter().all(|&s| s != 0));
        let mut unique = all.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn only_access_ports_have_a_segment() {
        let access = PortMode::Access(VlanId::new(100).unwrap());
        assert_eq!(
            port_segment(DomainId(0), &access),
            Some(segment(DomainId(0), VlanId::new(100).unwrap()))
        );
        let trunk = PortMode::Trunk {
            allowed: crate::vlan::VlanSet::default(),
            native: Some(VlanId::DEFAULT),
        };
        assert_eq!(port_segment(DomainId(0), &trunk), None);
    }

    fn station(n: u8) -> FastKey {
        FastKey {
            segment: 1,
            mac: [2, 0, 0, 0, 0, n],
            pad: [0; 2],
        }
    }

    fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
        v.sort_unstable();
        v
    }

    fn macs(add: &[(FastKey, PortId)]) -> Vec<(u8, u32)> {
        sorted(add.iter().map(|(k, p)| (k.mac[5], p.0)).collect())
    }

    #[test]
    fn new_stations_wait_while_busy_and_go_in_on_an_idle_turn() {
        let mut w = Waiting::default();
        let t0 = Instant::now();
        let in_table = |k: &FastKey| k.mac[5] == 9;
        // Busy: two new stations wait, a move of a station in the table goes at once.
        let (add, remove) = w.plan(
            [
                (station(1), Some(PortId(0))),
                (station(2), Some(PortId(0))),
                (station(9), Some(PortId(1))),
            ],
            true,
            t0,
            in_table,
        );
        assert_eq!(macs(&add), [(9, 1)]);
        assert!(remove.is_empty());
        assert_eq!(w.stations.len(), 2);
        // Idle: they go in.
        let (add, _) = w.plan([], false, t0, in_table);
        assert_eq!(macs(&add), [(1, 0), (2, 0)]);
        assert!(w.stations.is_empty() && w.since.is_none());
    }

    #[test]
    fn a_waiting_station_changed_again_counts_once_with_its_last_change() {
        let mut w = Waiting::default();
        let t0 = Instant::now();
        let none = |_: &FastKey| false;
        w.plan(
            [(station(1), Some(PortId(0))), (station(2), Some(PortId(0)))],
            true,
            t0,
            none,
        );
        // Idle turn: 1 moved to port 3, 2 aged out, in the same call that releases them.
        let (add, remove) = w.plan(
            [(station(1), Some(PortId(3))), (station(2), None)],
            false,
            t0,
            none,
        );
        assert_eq!(macs(&add), [(1, 3)], "the move, not the stale port 0, once");
        assert_eq!(remove.iter().map(|k| k.mac[5]).collect::<Vec<_>>(), [2]);
        assert!(w.stations.is_empty());
        // While busy, a waiting station that goes away just stops waiting.
        w.plan([(station(4), Some(PortId(0)))], true, t0, none);
        let (add, remove) = w.plan([(station(4), None)], true, t0, none);
        assert!(add.is_empty() && remove.len() == 1 && w.stations.is_empty());
    }

    #[test]
    fn waiting_ends_after_its_time_a_few_per_busy_call() {
        let mut w = Waiting::default();
        let t0 = Instant::now();
        let none = |_: &FastKey| false;
        let many: Vec<_> = (0..=u8::MAX)
            .map(|n| (station(n), Some(PortId(0))))
            .collect();
        w.plan(many, true, t0, none);
        assert_eq!(w.stations.len(), 256);
        let (add, _) = w.plan([], true, t0 + NEW_STATIONS_WAIT / 2, none);
        assert!(add.is_empty(), "still busy, still waiting");
        // Waited long enough, still busy: a few come out; a newcomer queues behind them.
        let newcomer = FastKey {
            segment: 2,
            ..station(0)
        };
        let (add, _) = w.plan(
            [(newcomer, Some(PortId(0)))],
            true,
            t0 + NEW_STATIONS_WAIT,
            none,
        );
        assert_eq!(add.len(), WAITING_PER_BUSY_CALL);
        assert!(add.iter().all(|(k, _)| *k != newcomer));
        assert_eq!(w.stations.len(), 256 - WAITING_PER_BUSY_CALL + 1);
        let (add, _) = w.plan([], false, t0 + NEW_STATIONS_WAIT, none);
        assert_eq!(
            add.len(),
            256 - WAITING_PER_BUSY_CALL + 1,
            "idle: the rest at once"
        );
        assert!(add.contains(&(newcomer, PortId(0))));
        assert!(w.stations.is_empty() && w.since.is_none());
    }
}
