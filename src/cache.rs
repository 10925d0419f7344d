//! A small map whose entries expire after a fixed time and whose size is bounded: the
//! per-isolate memory of keys (known and unknown) and of parties in front of Workers KV.
//!
//! Every entry lives the same time, so insertion order is expiry order: a queue of
//! insertions tells which entry to drop first when the map is full, in O(1) amortised.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;

/// The map of values of type `V`. Its work is done by [`Entries`], which holds the values as
/// `dyn Any`: one copy of the map's code (and of its hash map's) in the wasm, whatever the
/// types cached, where a generic map compiles one per type (about 2 KB each).
pub struct ExpiringMap<V> {
    entries: Entries,
    value: PhantomData<V>,
}

impl<V: Clone + 'static> ExpiringMap<V> {
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        let entries = Entries { entries: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1), ttl_ms };
        ExpiringMap { entries, value: PhantomData }
    }

    /// The value under `key`, unless it has expired.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<V> {
        self.entries.get(key, now_ms)?.downcast_ref::<V>().cloned()
    }

    /// Keeps `value` under `key` for the map's time to live, dropping the entries that have
    /// expired and, when the map is still full, the oldest one.
    pub fn insert(&mut self, key: &str, value: V, now_ms: u64) {
        self.entries.insert(key, Box::new(value), now_ms)
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.entries.is_empty()
    }
}

struct Entries {
    /// key → (expires at, value).
    entries: HashMap<String, (u64, Box<dyn Any>)>,
    /// (expires at, key) in insertion order. An element whose expiry no longer matches the
    /// entry's was overwritten or removed; it is skipped, and swept when the queue outgrows
    /// the map.
    order: VecDeque<(u64, String)>,
    capacity: usize,
    ttl_ms: u64,
}

impl Entries {
    fn get(&self, key: &str, now_ms: u64) -> Option<&dyn Any> {
        self.entries.get(key).filter(|(until, _)| *until > now_ms).map(|(_, v)| &**v)
    }

    fn insert(&mut self, key: &str, value: Box<dyn Any>, now_ms: u64) {
        self.drop_expired(now_ms);
        if !self.entries.contains_key(key) {
            while self.entries.len() >= self.capacity {
                self.drop_oldest();
            }
        }
        let until = now_ms.saturating_add(self.ttl_ms);
        self.entries.insert(key.to_string(), (until, value));
        self.order.push_back((until, key.to_string()));
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order.retain(|(until, key)| entries.get(key).is_some_and(|(u, _)| u == until));
        }
    }

    fn drop_expired(&mut self, now_ms: u64) {
        while self.order.front().is_some_and(|(until, _)| *until <= now_ms) {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some((until, key)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|(u, _)| *u == until) {
                self.entries.remove(&key);
            }
        } else {
            // Unreachable while every entry has its element in the queue; never loop on it.
            self.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_time_to_live() {
        let mut m = ExpiringMap::new(10, 1_000);
        m.insert("a", 1, 5_000);
        assert_eq!(m.get("a", 5_000), Some(1));
        assert_eq!(m.get("a", 5_999), Some(1));
        assert_eq!(m.get("a", 6_000), None);
        assert_eq!(m.get("b", 5_000), None);
    }

    #[test]
    fn the_size_is_bounded_and_the_oldest_entry_goes_first() {
        let mut m = ExpiringMap::new(3, 10_000);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            m.insert(k, i, i as u64);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a", 10), None);
        assert_eq!((m.get("b", 10), m.get("c", 10), m.get("d", 10)), (Some(1), Some(2), Some(3)));
    }

    #[test]
    fn expired_entries_are_dropped_before_live_ones() {
        let mut m = ExpiringMap::new(2, 100);
        m.insert("old", 0, 0);
        m.insert("new", 1, 50);
        m.insert("newest", 2, 120);
        assert_eq!((m.get("old", 120), m.get("new", 120), m.get("newest", 120)), (None, Some(1), Some(2)));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn overwriting_renews_without_growing_and_removing_forgets() {
        let mut m = ExpiringMap::new(2, 100);
        m.insert("a", 1, 0);
        m.insert("b", 2, 10);
        m.insert("a", 3, 50);
        assert_eq!(m.len(), 2);
        // The renewed `a` outlives its first expiry; `b` is now the oldest.
        assert_eq!(m.get("a", 120), Some(3));
        m.insert("c", 4, 60);
        assert_eq!((m.get("a", 60), m.get("b", 60), m.get("c", 60)), (Some(3), None, Some(4)));
        m.remove("a");
        assert_eq!(m.get("a", 60), None);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn churn_keeps_the_queue_bounded() {
        let mut m = ExpiringMap::new(4, 1_000_000);
        for i in 0..10_000u64 {
            m.insert("same", i, i);
            m.remove("same");
            m.insert(&format!("k{}", i % 3), i, i);
        }
        assert!(m.len() <= 4);
        assert!(m.entries.order.len() <= 2 * 4 + 1);
        assert_eq!(m.get("k0", 10_000), Some(9_999));
    }

    #[test]
    fn a_flood_of_distinct_keys_never_passes_the_capacity() {
        let mut m = ExpiringMap::new(100, 10_000);
        for i in 0..5_000u64 {
            m.insert(&format!("{i:064x}"), (), i);
            assert!(m.len() <= 100);
        }
        assert!(m.get(&format!("{:064x}", 4_999u64), 5_000).is_some());
        assert!(m.get(&format!("{:064x}", 0u64), 5_000).is_none());
    }
}
