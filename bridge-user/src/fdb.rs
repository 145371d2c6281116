//! The MAC learning table (filtering database), keyed by (domain, VLAN, MAC).
//!
//! Time is passed in, never read here (as smoltcp's neighbor cache): the forwarder reads the
//! clock once per batch. Entries older than the configured age are treated as absent by
//! [`Fdb::lookup`] and removed by [`Fdb::expire`].

use std::time::{Duration, Instant};

use bridge_common::wire::{MacAddr, VlanId};

use crate::port::{DomainId, PortId};

mod table;

/// Where a MAC was learned: on one VLAN of one bridge domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdbKey {
    pub domain: DomainId,
    pub vlan: VlanId,
    pub mac: MacAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub port: PortId,
    pub last_seen: Instant,
    /// Configured, never aged out or moved by learning.
    pub is_static: bool,
}

/// Result of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(PortId),
    Miss,
}

/// What learning a source address did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    New,
    /// Already known on this port; its age was reset.
    Refreshed,
    /// Known on another port; it now points at the new one.
    Moved { from: PortId },
    /// A static entry for another port; learning does not override it.
    StaticConflict,
    /// The table is full; the address was not learned (frames to it keep flooding).
    TableFull,
    /// The port already holds its limit of learned addresses; not learned.
    PortLimit,
}

/// The learning table.
#[derive(Debug)]
pub struct Fdb {
    entries: table::Table,
    max_age: Duration,
    capacity: usize,
    /// Most learned entries one port may hold (a MAC flood from one port cannot fill the
    /// table for everyone).
    per_port_limit: u32,
    /// Learned (not static) entries per port, indexed by slot.
    per_port: Vec<u32>,
    /// Every change since the last [`Fdb::take_changes`], when someone mirrors the table
    /// (the XDP fast path): `Some(port)` for an address added or moved, `None` removed.
    changes: Option<Vec<(FdbKey, Option<PortId>)>>,
}

impl Fdb {
    /// A table whose learned entries live `max_age`, which holds at most `capacity` entries
    /// and at most `per_port_limit` learned ones per port.
    #[must_use]
    pub fn new(max_age: Duration, capacity: usize, per_port_limit: u32) -> Self {
        Self {
            entries: table::Table::with_capacity(capacity.min(4096)),
            max_age,
            capacity,
            per_port_limit,
            per_port: Vec::new(),
            changes: None,
        }
    }

    /// Starts recording changes for [`Fdb::take_changes`], beginning with every entry held.
    pub fn record_changes(&mut self) {
        self.changes = Some(
            self.entries
                .iter()
                .map(|(k, e)| (*k, Some(e.port)))
                .collect(),
        );
    }

    /// The changes recorded since the last call, oldest first; empty when not recording.
    pub fn take_changes(&mut self) -> impl Iterator<Item = (FdbKey, Option<PortId>)> + '_ {
        self.changes
            .iter_mut()
            .flat_map(|changes| changes.drain(..))
    }

    /// Whether changes are waiting for [`Fdb::take_changes`].
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.changes.as_ref().is_some_and(|c| !c.is_empty())
    }

    fn changed(&mut self, key: FdbKey, port: Option<PortId>) {
        if let Some(changes) = &mut self.changes {
            changes.push((key, port));
        }
    }

    fn count(&mut self, port: PortId) -> &mut u32 {
        let i = port.0 as usize;
        if self.per_port.len() <= i {
            self.per_port.resize(i + 1, 0);
        }
        &mut self.per_port[i]
    }

    /// Learned entries currently held for `port`.
    #[must_use]
    pub fn learned_on(&self, port: PortId) -> u32 {
        self.per_port.get(port.0 as usize).copied().unwrap_or(0)
    }

    /// Records that `key.mac` was seen as a source on `port`.
    pub fn learn(&mut self, key: FdbKey, port: PortId, now: Instant) -> Learned {
        let len = self.entries.len();
        let port_full = self.learned_on(port) >= self.per_port_limit;
        let outcome = match self.entries.get_mut(&key) {
            Some(entry) if entry.is_static => {
                return if entry.port == port {
                    Learned::Refreshed
                } else {
                    Learned::StaticConflict
                };
            }
            Some(entry) if entry.port == port => {
                entry.last_seen = now;
                return Learned::Refreshed;
            }
            Some(_) if port_full => return Learned::PortLimit,
            Some(entry) => {
                let from = entry.port;
                entry.last_seen = now;
                entry.port = port;
                *self.count(from) -= 1;
                Learned::Moved { from }
            }
            None if len >= self.capacity => return Learned::TableFull,
            None if port_full => return Learned::PortLimit,
            None => {
                self.entries.insert(
                    key,
                    FdbEntry {
                        port,
                        last_seen: now,
                        is_static: false,
                    },
                );
                Learned::New
            }
        };
        *self.count(port) += 1;
        self.changed(key, Some(port));
        outcome
    }

    /// The port `key.mac` was last seen on, unless that was longer ago than the age limit.
    #[must_use]
    pub fn lookup(&self, key: &FdbKey, now: Instant) -> Lookup {
        match self.entries.get(key) {
            Some(e)
                if e.is_static || now.saturating_duration_since(e.last_seen) <= self.max_age =>
            {
                Lookup::Hit(e.port)
            }
            _ => Lookup::Miss,
        }
    }

    /// Keeps the entries `keep` accepts, keeping the per-port counts right. Returns how
    /// many went.
    fn retain(&mut self, mut keep: impl FnMut(&FdbKey, &FdbEntry) -> bool) -> usize {
        let gone = self.entries.retain(|k, e| keep(k, e));
        for (key, entry) in &gone {
            if !entry.is_static {
                *self.count(entry.port) -= 1;
            }
            self.changed(*key, None);
        }
        gone.len()
    }

    /// Removes learned entries older than the age limit; returns how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let max_age = self.max_age;
        self.retain(|_, e| e.is_static || now.saturating_duration_since(e.last_seen) <= max_age)
    }

    /// Refreshes learned entries within `margin` of the age limit whose station was seen where
    /// this table does not look (the XDP fast path): `used_ago` says how long ago, if at all,
    /// and an answer younger than the entry's age moves its last sighting there. Run before
    /// [`Fdb::expire`], at least once in every `margin`.
    pub fn refresh_used_elsewhere(
        &mut self,
        now: Instant,
        margin: Duration,
        mut used_ago: impl FnMut(&FdbKey, &FdbEntry) -> Option<Duration>,
    ) {
        let ask_after = self.max_age.saturating_sub(margin);
        for (key, entry) in self.entries.iter_mut() {
            let age = now.saturating_duration_since(entry.last_seen);
            if entry.is_static || age <= ask_after {
                continue;
            }
            if let Some(ago) = used_ago(key, entry).filter(|&ago| ago < age) {
                entry.last_seen = now.checked_sub(ago).unwrap_or(entry.last_seen);
            }
        }
    }

    /// Forgets every entry on `port`, static ones too (the port went away); returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        self.retain(|_, e| e.port != port)
    }

    /// Removes one entry, static or learned; returns whether there was one.
    pub fn remove(&mut self, key: &FdbKey) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        if !entry.is_static {
            *self.count(entry.port) -= 1;
        }
        self.changed(*key, None);
        true
    }

    /// Removes the learned entries `select` picks; static entries stay. Returns how many.
    pub fn flush_dynamic(&mut self, select: impl Fn(&FdbKey, &FdbEntry) -> bool) -> usize {
        self.retain(|k, e| e.is_static || !select(k, e))
    }

    /// Adds or replaces a static entry, which the learning of other ports cannot move.
    pub fn insert_static(&mut self, key: FdbKey, port: PortId, now: Instant) {
        let replaced = self.entries.insert(
            key,
            FdbEntry {
                port,
                last_seen: now,
                is_static: true,
            },
        );
        if let Some(old) = replaced.filter(|e| !e.is_static) {
            *self.count(old.port) -= 1;
        }
        self.changed(key, Some(port));
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Starts loading what learning or looking up `key` will read, so that doing it a few
    /// frames later does not wait for memory.
    pub fn prefetch(&self, key: &FdbKey) {
        self.entries.prefetch(key);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FdbKey, &FdbEntry)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: Duration = Duration::from_secs(300);

    fn key(last: u8) -> FdbKey {
        FdbKey {
            domain: DomainId(0),
            vlan: VlanId::DEFAULT,
            mac: MacAddr([2, 0, 0, 0, 0, last]),
        }
    }

    #[test]
    fn learns_and_looks_up() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        assert_eq!(fdb.lookup(&key(1), t0), Lookup::Miss);
        assert_eq!(fdb.learn(key(1), PortId(3), t0), Learned::New);
        assert_eq!(fdb.lookup(&key(1), t0), Lookup::Hit(PortId(3)));
        assert_eq!(fdb.learn(key(1), PortId(3), t0), Learned::Refreshed);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn same_mac_on_two_vlans_or_domains_is_two_entries() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        let mut other_vlan = key(1);
        other_vlan.vlan = VlanId::new(100).unwrap();
        let mut other_domain = key(1);
        other_domain.domain = DomainId(1);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(other_vlan, PortId(1), t0);
        fdb.learn(other_domain, PortId(2), t0);
        assert_eq!(fdb.len(), 3);
        assert_eq!(fdb.lookup(&other_vlan, t0), Lookup::Hit(PortId(1)));
        assert_eq!(fdb.lookup(&other_domain, t0), Lookup::Hit(PortId(2)));
    }

    #[test]
    fn follows_a_moved_mac() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.learn(key(1), PortId(0), t0);
        assert_eq!(
            fdb.learn(key(1), PortId(1), t0),
            Learned::Moved { from: PortId(0) }
        );
        assert_eq!(fdb.lookup(&key(1), t0), Lookup::Hit(PortId(1)));
    }

    #[test]
    fn ages_out_exactly_after_max_age() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.learn(key(1), PortId(0), t0);
        assert_eq!(fdb.lookup(&key(1), t0 + AGE), Lookup::Hit(PortId(0)));
        assert_eq!(
            fdb.lookup(&key(1), t0 + AGE + Duration::from_millis(1)),
            Lookup::Miss
        );
        assert_eq!(fdb.expire(t0 + AGE), 0);
        assert_eq!(fdb.expire(t0 + AGE + Duration::from_millis(1)), 1);
        assert!(fdb.is_empty());
    }

    #[test]
    fn use_seen_elsewhere_refreshes_entries_near_the_age_limit() {
        let t0 = Instant::now();
        let margin = Duration::from_secs(2);
        let mut fdb = Fdb::new(AGE, 16, 16);
        for i in 1..=4 {
            fdb.learn(key(i), PortId(0), t0);
        }
        fdb.learn(key(5), PortId(0), t0 + AGE);
        fdb.insert_static(key(6), PortId(0), t0);
        let now = t0 + AGE - Duration::from_secs(1);
        let mut asked = Vec::new();
        fdb.refresh_used_elsewhere(now, margin, |k, _| {
            asked.push(k.mac.0[5]);
            match k.mac.0[5] {
                1 => Some(Duration::from_secs(1)), // used a second ago: refreshed
                2 => Some(AGE),                    // last used before it was learned: not
                _ => None,                         // never: not
            }
        });
        asked.sort_unstable();
        assert_eq!(
            asked,
            [1, 2, 3, 4],
            "young and static entries are not asked about"
        );
        let later = t0 + AGE + Duration::from_secs(1);
        assert_eq!(fdb.expire(later), 3);
        assert_eq!(fdb.lookup(&key(1), later), Lookup::Hit(PortId(0)));
        assert_eq!(
            fdb.iter()
                .find(|(k, _)| **k == key(1))
                .map(|(_, e)| e.last_seen),
            Some(now - Duration::from_secs(1))
        );
    }

    #[test]
    fn refresh_extends_life() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(1), PortId(0), t0 + AGE);
        assert_eq!(fdb.lookup(&key(1), t0 + AGE * 2), Lookup::Hit(PortId(0)));
    }

    #[test]
    fn full_table_keeps_known_hosts() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 2, 16);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(2), PortId(1), t0);
        assert_eq!(fdb.learn(key(3), PortId(1), t0), Learned::TableFull);
        assert_eq!(fdb.learn(key(1), PortId(0), t0), Learned::Refreshed);
        assert_eq!(fdb.lookup(&key(3), t0), Lookup::Miss);
        assert_eq!(fdb.lookup(&key(2), t0), Lookup::Hit(PortId(1)));
    }

    #[test]
    fn per_port_limit_stops_one_port_filling_the_table() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 100, 2);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(2), PortId(0), t0);
        assert_eq!(fdb.learn(key(3), PortId(0), t0), Learned::PortLimit);
        assert_eq!(
            fdb.learn(key(3), PortId(1), t0),
            Learned::New,
            "other ports still learn"
        );
        assert_eq!(
            fdb.learn(key(1), PortId(0), t0),
            Learned::Refreshed,
            "known hosts keep working"
        );
        assert_eq!(
            fdb.learn(key(3), PortId(0), t0),
            Learned::PortLimit,
            "no move onto a full port"
        );
        assert_eq!(
            fdb.learn(key(1), PortId(1), t0),
            Learned::Moved { from: PortId(0) }
        );
        assert_eq!(
            (fdb.learned_on(PortId(0)), fdb.learned_on(PortId(1))),
            (1, 2)
        );
        assert_eq!(
            fdb.learn(key(4), PortId(0), t0),
            Learned::New,
            "a move frees room"
        );
        assert_eq!(fdb.expire(t0 + AGE * 2), 4);
        assert_eq!(
            (fdb.learned_on(PortId(0)), fdb.learned_on(PortId(1))),
            (0, 0)
        );
    }

    #[test]
    fn counts_survive_every_way_out() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 100, 100);
        for i in 0..6 {
            fdb.learn(key(i), PortId(0), t0);
        }
        fdb.insert_static(key(0), PortId(1), t0);
        assert!(fdb.remove(&key(1)));
        assert_eq!(fdb.flush_dynamic(|k, _| k.mac.0[5] == 2), 1);
        assert_eq!(fdb.learned_on(PortId(0)), 3);
        assert_eq!(fdb.flush_port(PortId(0)), 3);
        assert_eq!(fdb.learned_on(PortId(0)), 0);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn static_entries_do_not_move_or_age() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.insert_static(key(1), PortId(0), t0);
        assert_eq!(fdb.learn(key(1), PortId(1), t0), Learned::StaticConflict);
        assert_eq!(fdb.expire(t0 + AGE * 10), 0);
        assert_eq!(fdb.lookup(&key(1), t0 + AGE * 10), Lookup::Hit(PortId(0)));
    }

    #[test]
    fn flush_dynamic_keeps_static_entries() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.insert_static(key(1), PortId(0), t0);
        fdb.learn(key(2), PortId(0), t0);
        fdb.learn(key(3), PortId(1), t0);
        assert_eq!(fdb.flush_dynamic(|_, e| e.port == PortId(0)), 1);
        assert_eq!(fdb.len(), 2);
        assert!(fdb.remove(&key(1)));
        assert!(!fdb.remove(&key(1)));
    }

    #[test]
    fn flush_port_forgets_only_that_port() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(2), PortId(1), t0);
        assert_eq!(fdb.flush_port(PortId(0)), 1);
        assert_eq!(fdb.lookup(&key(2), t0), Lookup::Hit(PortId(1)));
    }

    #[test]
    fn records_every_change_for_a_mirror() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16, 16);
        fdb.learn(key(1), PortId(0), t0);
        assert_eq!(fdb.take_changes().count(), 0, "not recording yet");
        fdb.record_changes();
        assert_eq!(
            fdb.take_changes().collect::<Vec<_>>(),
            [(key(1), Some(PortId(0)))],
            "recording starts with what the table holds"
        );
        fdb.learn(key(1), PortId(0), t0);
        assert!(!fdb.has_changes(), "a refresh changes nothing");
        fdb.learn(key(1), PortId(1), t0);
        fdb.learn(key(2), PortId(0), t0);
        fdb.insert_static(key(3), PortId(2), t0);
        fdb.flush_port(PortId(0));
        fdb.expire(t0 + AGE + Duration::from_secs(1));
        assert_eq!(
            fdb.take_changes().collect::<Vec<_>>(),
            [
                (key(1), Some(PortId(1))),
                (key(2), Some(PortId(0))),
                (key(3), Some(PortId(2))),
                (key(2), None),
                (key(1), None),
            ]
        );
        assert!(!fdb.has_changes());
    }
}
