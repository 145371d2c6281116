//! The FDB's storage: open addressing with linear probing, at most half full.
//!
//! A station's slot is found from its key alone, so the forwarder can prefetch the slots of a
//! whole batch of frames before handling the first ([`Table::prefetch`]); with tens of
//! thousands of stations the table outgrows the CPU's caches and every learn would otherwise
//! wait for memory. hashbrown, which this replaced, keeps control bytes and entries in two
//! places and exposes neither. Removal shifts the entries after the hole back (no
//! tombstones), so lookups stay short however much the table churns.

use std::hash::BuildHasher;

use super::{FdbEntry, FdbKey};

/// The smallest table: one that holds 8 entries.
const MIN_SLOTS: usize = 16;

type Slot = Option<(FdbKey, FdbEntry)>;

#[derive(Debug)]
pub(super) struct Table<S = foldhash::quality::RandomState> {
    /// A power of two in length, more than half of them `None`, so every probe ends.
    slots: Vec<Slot>,
    len: usize,
    /// Randomly seeded for each table (foldhash's quality variant): addresses a port sends
    /// cannot be chosen to collide, which linear probing would make long clusters of.
    hasher: S,
}

impl Table {
    /// A table that holds `entries` without growing.
    pub(super) fn with_capacity(entries: usize) -> Self {
        Self::with_hasher(entries, foldhash::quality::RandomState::default())
    }
}

impl<S: BuildHasher> Table<S> {
    fn with_hasher(entries: usize, hasher: S) -> Self {
        Self {
            slots: empty_slots(slots_for(entries)),
            len: 0,
            hasher,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn next(&self, i: usize) -> usize {
        (i + 1) & (self.slots.len() - 1)
    }

    /// Where the probe for `key` starts.
    fn home(&self, key: &FdbKey) -> usize {
        // Truncating the hash is the point: its low bits pick the slot.
        #[expect(clippy::cast_possible_truncation, reason = "keeps the low bits")]
        let hash = self.hasher.hash_one(key) as usize;
        hash & (self.slots.len() - 1)
    }

    /// Where `key` is (`Ok`), or the free slot that ends its probe, where it would go (`Err`).
    fn probe(&self, key: &FdbKey) -> Result<usize, usize> {
        let mut i = self.home(key);
        loop {
            match &self.slots[i] {
                None => return Err(i),
                Some((k, _)) if k == key => return Ok(i),
                Some(_) => i = self.next(i),
            }
        }
    }

    fn find(&self, key: &FdbKey) -> Option<usize> {
        self.probe(key).ok()
    }

    /// Starts loading the cache lines a lookup of `key` will most likely read: its home slot's
    /// and, as the probe may go on, the next slot's.
    pub(super) fn prefetch(&self, key: &FdbKey) {
        let home = self.slots.as_ptr().wrapping_add(self.home(key));
        crate::cache::prefetch(home);
        crate::cache::prefetch(home.wrapping_add(1));
    }

    pub(super) fn get(&self, key: &FdbKey) -> Option<&FdbEntry> {
        let i = self.find(key)?;
        self.slots[i].as_ref().map(|(_, e)| e)
    }

    pub(super) fn get_mut(&mut self, key: &FdbKey) -> Option<&mut FdbEntry> {
        let i = self.find(key)?;
        self.slots[i].as_mut().map(|(_, e)| e)
    }

    /// Adds or replaces `key`'s entry; returns the one replaced.
    pub(super) fn insert(&mut self, key: FdbKey, entry: FdbEntry) -> Option<FdbEntry> {
        let free = match self.probe(&key) {
            Ok(i) => {
                return self.slots[i]
                    .as_mut()
                    .map(|(_, e)| std::mem::replace(e, entry))
            }
            Err(free) => free,
        };
        if slots_for(self.len + 1) > self.slots.len() {
            self.grow();
            self.place(key, entry);
        } else {
            self.slots[free] = Some((key, entry));
        }
        self.len += 1;
        None
    }

    /// Puts a key known to be absent into the first free slot of its probe.
    fn place(&mut self, key: FdbKey, entry: FdbEntry) {
        let mut i = self.home(&key);
        while self.slots[i].is_some() {
            i = self.next(i);
        }
        self.slots[i] = Some((key, entry));
    }

    fn grow(&mut self) {
        let doubled = empty_slots(self.slots.len() * 2);
        for (key, entry) in std::mem::replace(&mut self.slots, doubled)
            .into_iter()
            .flatten()
        {
            self.place(key, entry);
        }
    }

    /// Removes `key`'s entry; returns it.
    pub(super) fn remove(&mut self, key: &FdbKey) -> Option<FdbEntry> {
        let mut hole = self.find(key)?;
        let removed = self.slots[hole].take().map(|(_, e)| e);
        self.len -= 1;
        // Every entry up to the next free slot may have probed past the hole: move each one
        // whose home is not between the hole and itself into the hole.
        let mut i = self.next(hole);
        while let Some((k, _)) = &self.slots[i] {
            let mask = self.slots.len() - 1;
            let probed = i.wrapping_sub(self.home(k)) & mask;
            if probed >= (i.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[i].take();
                hole = i;
            }
            i = self.next(i);
        }
        removed
    }

    /// Keeps the entries `keep` accepts (it may change them); returns the others.
    pub(super) fn retain(
        &mut self,
        mut keep: impl FnMut(&FdbKey, &mut FdbEntry) -> bool,
    ) -> Vec<(FdbKey, FdbEntry)> {
        // Removing shifts entries back over slots not yet visited: decide first, then remove.
        let gone: Vec<(FdbKey, FdbEntry)> = self
            .slots
            .iter_mut()
            .flatten()
            .filter_map(|(k, e)| (!keep(k, e)).then_some((*k, *e)))
            .collect();
        for (key, _) in &gone {
            self.remove(key);
        }
        gone
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&FdbKey, &FdbEntry)> {
        self.slots.iter().flatten().map(|(k, e)| (k, e))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&FdbKey, &mut FdbEntry)> {
        self.slots.iter_mut().flatten().map(|(k, e)| (&*k, e))
    }
}

/// `n` free slots, on huge pages where the kernel has them: asked for before the first write.
fn empty_slots(n: usize) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(n);
    crate::cache::advise_huge_pages(slots.as_ptr(), n * size_of::<Slot>());
    slots.resize(n, None);
    slots
}

/// Slots for `entries` at most half full.
fn slots_for(entries: usize) -> usize {
    entries.saturating_mul(2).next_power_of_two().max(MIN_SLOTS)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Instant};

    use bridge_common::wire::{MacAddr, VlanId};

    use super::*;
    use crate::port::{DomainId, PortId};

    fn key(n: u32) -> FdbKey {
        let [a, b, c, d] = n.to_be_bytes();
        FdbKey {
            domain: DomainId(u16::from(a & 1)),
            vlan: VlanId::DEFAULT,
            mac: MacAddr([2, 0, a, b, c, d]),
        }
    }

    fn entry(port: u32, now: Instant) -> FdbEntry {
        FdbEntry {
            port: PortId(port),
            last_seen: now,
            is_static: false,
        }
    }

    /// The probing invariant: no free slot between an entry's home and its slot (so the probe
    /// from its home finds it there), and the count is right.
    fn assert_consistent<S: BuildHasher>(t: &Table<S>) {
        assert_eq!(t.iter().count(), t.len);
        for (i, slot) in t.slots.iter().enumerate() {
            let Some((k, _)) = slot else { continue };
            let mut j = t.home(k);
            while j != i {
                assert!(t.slots[j].is_some(), "{k:?} at {i} past a free slot {j}");
                j = t.next(j);
            }
            assert_eq!(t.find(k), Some(i));
        }
        assert!(t.slots.len() >= slots_for(t.len));
    }

    /// Homes every key on one of five slots by its last byte: long clusters that wrap.
    #[derive(Clone, Copy, Default)]
    struct FiveHomes;

    struct LastByte(u64);

    impl std::hash::Hasher for LastByte {
        fn finish(&self) -> u64 {
            // Slots 0, 1 and the last three of any table.
            [0, 1, u64::MAX, u64::MAX - 1, u64::MAX - 2][(self.0 % 5) as usize]
        }

        fn write(&mut self, bytes: &[u8]) {
            if let Some(&b) = bytes.last() {
                self.0 = u64::from(b);
            }
        }
    }

    impl BuildHasher for FiveHomes {
        type Hasher = LastByte;

        fn build_hasher(&self) -> LastByte {
            LastByte(0)
        }
    }

    #[test]
    fn agrees_with_a_hash_map_through_growth_and_churn() {
        agrees_with_a_hash_map(Table::with_capacity(4), 3000);
    }

    #[test]
    fn colliding_homes_stay_findable_through_churn() {
        agrees_with_a_hash_map(Table::with_hasher(4, FiveHomes), 300);
    }

    fn agrees_with_a_hash_map<S: BuildHasher>(mut table: Table<S>, keys: u32) {
        let now = Instant::now();
        let mut model = HashMap::new();
        // A fixed pseudo-random walk of inserts and removals, the kind of clustering that
        // breaks a wrong backward shift.
        let mut x: u32 = 12345;
        for step in 0..40_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let k = key(x % keys);
            if x.is_multiple_of(3) {
                assert_eq!(table.remove(&k), model.remove(&k), "step {step}");
            } else {
                let e = entry(step, now);
                assert_eq!(table.insert(k, e), model.insert(k, e), "step {step}");
            }
            assert_eq!(table.get(&k), model.get(&k));
            if step % 1000 == 0 {
                assert_consistent(&table);
            }
        }
        assert_consistent(&table);
        for (k, e) in &model {
            assert_eq!(table.get(k), Some(e));
        }
        // Kept entries keep what the closure changed.
        let gone = table.retain(|k, e| {
            e.port = PortId(7);
            k.mac.0[5] % 2 == 0
        });
        model.retain(|k, e| {
            e.port = PortId(7);
            k.mac.0[5] % 2 == 0
        });
        assert!(gone.iter().all(|(k, _)| k.mac.0[5] % 2 == 1));
        assert_consistent(&table);
        assert_eq!(table.len(), model.len());
        for (k, e) in &model {
            assert_eq!(table.get(k), Some(e));
        }
    }

    /// The first `n` test keys whose probe starts at `slot`.
    fn homed_at<S: BuildHasher>(table: &Table<S>, slot: usize, n: usize) -> Vec<FdbKey> {
        (0..)
            .map(key)
            .filter(|k| table.home(k) == slot)
            .take(n)
            .collect()
    }

    #[test]
    fn removal_keeps_a_wrapped_cluster_reachable() {
        let now = Instant::now();
        let mut table = Table::with_capacity(4);
        // Keys whose probes start in the last slot, so the cluster wraps to slot 0.
        let last = table.slots.len() - 1;
        let wrapping = homed_at(&table, last, 3);
        for (port, k) in (0..).zip(&wrapping) {
            table.insert(*k, entry(port, now));
        }
        assert_eq!(table.remove(&wrapping[0]), Some(entry(0, now)));
        assert_eq!(table.get(&wrapping[1]), Some(&entry(1, now)));
        assert_eq!(table.get(&wrapping[2]), Some(&entry(2, now)));
        assert_consistent(&table);
    }

    #[test]
    fn removal_leaves_wrapped_entries_homed_after_the_hole() {
        let now = Instant::now();
        let mut table = Table::with_capacity(4);
        let last = table.slots.len() - 1;
        // One key in the second-to-last slot, two homed in the last: the second wraps to 0.
        let before = homed_at(&table, last - 1, 1)[0];
        let wrapped = homed_at(&table, last, 2);
        table.insert(before, entry(0, now));
        table.insert(wrapped[0], entry(1, now));
        table.insert(wrapped[1], entry(2, now));
        assert_eq!(table.find(&wrapped[1]), Some(0));
        // The hole is before both homes: neither may move into it.
        assert_eq!(table.remove(&before), Some(entry(0, now)));
        assert!(table.slots[last - 1].is_none());
        assert_eq!(table.get(&wrapped[0]), Some(&entry(1, now)));
        assert_eq!(table.get(&wrapped[1]), Some(&entry(2, now)));
        assert_consistent(&table);
    }

    #[test]
    fn grows_only_past_half_full() {
        let now = Instant::now();
        let mut table = Table::with_capacity(100);
        assert_eq!(table.slots.len(), 256);
        for n in 0..128 {
            table.insert(key(n), entry(0, now));
        }
        assert_eq!(table.slots.len(), 256, "half full");
        table.insert(key(128), entry(0, now));
        assert_eq!(table.slots.len(), 512);
        assert_eq!(table.len(), 129);
        assert_consistent(&table);
    }
}
