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
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use std::os::fd::AsFd;

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
    /// Scratch for [`FastPath::apply`]: each address's last change in one call.
    last_change: hashbrown::HashMap<FastKey, Option<PortId>>,
    /// New stations waiting for a turn without work, and since when the oldest has.
    waiting: hashbrown::HashMap<FastKey, PortId>,
    waiting_since: Option<Instant>,
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
            last_change: hashbrown::HashMap::new(),
            waiting: hashbrown::HashMap::new(),
            waiting_since: None,
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
        let mut last = std::mem::take(&mut self.last_change);
        last.extend(
            changes
                .into_iter()
                .map(|(key, port)| (fast_key(&key), port)),
        );
        let wait = busy
            && self
                .waiting_since
                .is_none_or(|since| now.duration_since(since) < NEW_STATIONS_WAIT);
        let (mut add_keys, mut add_entries, mut added_anew) = (Vec::new(), Vec::new(), Vec::new());
        let mut remove = Vec::new();
        // A few at a time, so that no turn stalls for long: the next burst may be on its way.
        let waited: Vec<_> = if wait {
            Vec::new()
        } else {
            let some: Vec<_> = self
                .waiting
                .iter()
                .take(if busy {
                    WAITING_PER_BUSY_CALL
                } else {
                    WAITING_PER_IDLE_CALL
                })
                .map(|(&k, &p)| (k, Some(p)))
                .collect();
            for (k, _) in &some {
                self.waiting.remove(k);
            }
            some
        };
        for (fast, port) in last.drain().chain(waited) {
            match port {
                Some(port) if wait && !self.used_index.contains_key(&fast) => {
                    self.waiting.insert(fast, port);
                }
                Some(port) => {
                    self.waiting.remove(&fast);
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
                None => {
                    self.waiting.remove(&fast);
                    remove.push(fast);
                    // An XDP program still holding the old entry may mark the index once
                    // more after its next holder got it: that station then looks used for
                    // one age period at most.
                    if let Some(index) = self.used_index.remove(&fast) {
                        self.unused.push(index);
                    }
                }
            }
        }
        self.last_change = last;
        self.waiting_since = if self.waiting.is_empty() {
            None
        } else {
            self.waiting_since.or(Some(now))
        };
        let fd = self.fdb.map().fd().as_fd();
        let mut from = 0;
        while let Err((done, e)) = sys::bpf_map_batch(
            fd,
            &add_keys[from..],
            MapBatch::Update(&add_entries[from..]),
        ) {
            // That station stays with the forwarder; the ones after it are tried again.
            let failed = from + done;
            if added_anew[failed] {
                if let Some(index) = self.used_index.remove(&add_keys[failed]) {
                    self.unused.push(index);
                }
            }
            note_table_full(&mut self.table_full, &e.to_string());
            from = failed + 1;
        }
        let mut from = 0;
        while let Err((done, _)) =
            sys::bpf_map_batch::<_, ()>(fd, &remove[from..], MapBatch::Delete)
        {
            // Absent already is fine: removals of addresses that never made it in.
            from += done + 1;
        }
    }

    /// Whether changes wait for [`FastPath::apply`] to be called again.
    #[must_use]
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
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
}
