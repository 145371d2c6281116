//! The MAC learning table (filtering database), keyed by (domain, VLAN, MAC).
//!
//! Time is passed in, never read here (as smoltcp's neighbor cache): the forwarder reads the
//! clock once per batch. Entries older than the configured age are treated as absent by
//! [`Fdb::lookup`] and removed by [`Fdb::expire`].

use std::time::{Duration, Instant};

use bridge_common::wire::{MacAddr, VlanId};
use hashbrown::HashMap;

use crate::port::{DomainId, PortId};

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
}

/// The learning table.
#[derive(Debug)]
pub struct Fdb {
    entries: HashMap<FdbKey, FdbEntry>,
    max_age: Duration,
    capacity: usize,
}

impl Fdb {
    /// A table whose dynamic entries live `max_age` and which holds at most `capacity`.
    #[must_use]
    pub fn new(max_age: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity.min(4096)),
            max_age,
            capacity,
        }
    }

    /// Records that `key.mac` was seen as a source on `port`.
    pub fn learn(&mut self, key: FdbKey, port: PortId, now: Instant) -> Learned {
        let len = self.entries.len();
        match self.entries.get_mut(&key) {
            Some(entry) if entry.is_static => {
                if entry.port == port {
                    Learned::Refreshed
                } else {
                    Learned::StaticConflict
                }
            }
            Some(entry) => {
                let from = entry.port;
                entry.last_seen = now;
                if from == port {
                    Learned::Refreshed
                } else {
                    entry.port = port;
                    Learned::Moved { from }
                }
            }
            None if len >= self.capacity => Learned::TableFull,
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
        }
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

    /// Removes dynamic entries older than the age limit; returns how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        let max_age = self.max_age;
        self.entries
            .retain(|_, e| e.is_static || now.saturating_duration_since(e.last_seen) <= max_age);
        before - self.entries.len()
    }

    /// Forgets every dynamic entry on `port` (the port went away); returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.port != port);
        before - self.entries.len()
    }

    /// Removes one entry, static or learned; returns whether there was one.
    pub fn remove(&mut self, key: &FdbKey) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Removes the learned entries `select` picks; static entries stay. Returns how many.
    pub fn flush_dynamic(&mut self, select: impl Fn(&FdbKey, &FdbEntry) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|k, e| e.is_static || !select(k, e));
        before - self.entries.len()
    }

    /// Adds or replaces a static entry, which the learning of other ports cannot move.
    pub fn insert_static(&mut self, key: FdbKey, port: PortId, now: Instant) {
        self.entries.insert(
            key,
            FdbEntry {
                port,
                last_seen: now,
                is_static: true,
            },
        );
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        let mut fdb = Fdb::new(AGE, 16);
        assert_eq!(fdb.lookup(&key(1), t0), Lookup::Miss);
        assert_eq!(fdb.learn(key(1), PortId(3), t0), Learned::New);
        assert_eq!(fdb.lookup(&key(1), t0), Lookup::Hit(PortId(3)));
        assert_eq!(fdb.learn(key(1), PortId(3), t0), Learned::Refreshed);
        assert_eq!(fdb.len(), 1);
    }

    #[test]
    fn same_mac_on_two_vlans_or_domains_is_two_entries() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16);
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
        let mut fdb = Fdb::new(AGE, 16);
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
        let mut fdb = Fdb::new(AGE, 16);
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
    fn refresh_extends_life() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(1), PortId(0), t0 + AGE);
        assert_eq!(fdb.lookup(&key(1), t0 + AGE * 2), Lookup::Hit(PortId(0)));
    }

    #[test]
    fn full_table_keeps_known_hosts() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 2);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(2), PortId(1), t0);
        assert_eq!(fdb.learn(key(3), PortId(1), t0), Learned::TableFull);
        assert_eq!(fdb.learn(key(1), PortId(0), t0), Learned::Refreshed);
        assert_eq!(fdb.lookup(&key(3), t0), Lookup::Miss);
        assert_eq!(fdb.lookup(&key(2), t0), Lookup::Hit(PortId(1)));
    }

    #[test]
    fn static_entries_do_not_move_or_age() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16);
        fdb.insert_static(key(1), PortId(0), t0);
        assert_eq!(fdb.learn(key(1), PortId(1), t0), Learned::StaticConflict);
        assert_eq!(fdb.expire(t0 + AGE * 10), 0);
        assert_eq!(fdb.lookup(&key(1), t0 + AGE * 10), Lookup::Hit(PortId(0)));
    }

    #[test]
    fn flush_dynamic_keeps_static_entries() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(AGE, 16);
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
        let mut fdb = Fdb::new(AGE, 16);
        fdb.learn(key(1), PortId(0), t0);
        fdb.learn(key(2), PortId(1), t0);
        assert_eq!(fdb.flush_port(PortId(0)), 1);
        assert_eq!(fdb.lookup(&key(2), t0), Lookup::Hit(PortId(1)));
    }
}
