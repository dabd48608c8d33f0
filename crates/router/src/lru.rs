//! A bounded map with least-recently-used eviction and a time to live, for what a sidecar must
//! remember per client (session ownership of adaptive groups, recent answers for feedback).
//! Memory is bounded by the capacity; every eviction is counted for a metric. Time is passed in
//! (Unix milliseconds).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The map.
#[derive(Debug)]
pub struct BoundedLru<K, V> {
    capacity: usize,
    ttl_ms: u64,
    entries: HashMap<K, (V, u64, u64)>,
    /// Use stamp -> key, oldest first.
    order: BTreeMap<u64, K>,
    next: u64,
    evicted: u64,
}

impl<K: Clone + Eq + Hash, V: Clone> BoundedLru<K, V> {
    /// At most `capacity` entries (at least 1), each living `ttl_ms` after its last use.
    pub fn new(capacity: usize, ttl_ms: u64) -> Self {
        Self { capacity: capacity.max(1), ttl_ms, entries: HashMap::new(), order: BTreeMap::new(), next: 0, evicted: 0 }
    }

    /// The value of `key` if it has not expired at `now_ms`; the use refreshes it.
    pub fn get(&mut self, key: &K, now_ms: u64) -> Option<V> {
        let (value, expires, stamp) = self.entries.get(key).cloned()?;
        if expires <= now_ms {
            self.entries.remove(key);
            self.order.remove(&stamp);
            return None;
        }
        self.touch(key.clone(), value.clone(), stamp, now_ms);
        Some(value)
    }

    /// Removes `key`, returning its value if it had not expired at `now_ms`.
    pub fn remove(&mut self, key: &K, now_ms: u64) -> Option<V> {
        let (value, expires, stamp) = self.entries.remove(key)?;
        self.order.remove(&stamp);
        (expires > now_ms).then_some(value)
    }

    /// Inserts or replaces `key`, evicting the least recently used entry when full.
    pub fn insert(&mut self, key: K, value: V, now_ms: u64) {
        if let Some((_, _, stamp)) = self.entries.remove(&key) {
            self.order.remove(&stamp);
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
            self.evicted += 1;
        }
        let stamp = self.bump();
        self.entries.insert(key.clone(), (value, now_ms.saturating_add(self.ttl_ms), stamp));
        self.order.insert(stamp, key);
    }

    fn touch(&mut self, key: K, value: V, old: u64, now_ms: u64) {
        self.order.remove(&old);
        let stamp = self.bump();
        self.entries.insert(key.clone(), (value, now_ms.saturating_add(self.ttl_ms), stamp));
        self.order.insert(stamp, key);
    }

    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Removes and returns every entry expired at `now_ms` (they are the least recently used:
    /// all entries live as long after their last use).
    pub fn drain_expired(&mut self, now_ms: u64) -> Vec<(K, V)> {
        let mut out = Vec::new();
        while let Some((&stamp, key)) = self.order.first_key_value() {
            let expired = self.entries.get(key).is_none_or(|(_, expires, _)| *expires <= now_ms);
            if !expired {
                break;
            }
            let key = key.clone();
            self.order.remove(&stamp);
            if let Some((value, _, _)) = self.entries.remove(&key) {
                out.push((key, value));
            }
        }
        out
    }

    /// Entries held (expired ones included until touched or evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries evicted because the map was full (a metric).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_evictions_are_counted() {
        let mut m = BoundedLru::new(2, 1_000);
        m.insert("a", 1, 0);
        m.insert("b", 2, 0);
        assert_eq!(m.get(&"a", 1), Some(1), "a used: b is now the oldest");
        m.insert("c", 3, 2);
        assert_eq!((m.get(&"b", 3), m.get(&"a", 3), m.get(&"c", 3)), (None, Some(1), Some(3)));
        assert_eq!((m.len(), m.evicted()), (2, 1));
    }

    #[test]
    fn expired_entries_are_drained_oldest_first() {
        let mut m = BoundedLru::new(10, 100);
        m.insert("a", 1, 0);
        m.insert("b", 2, 50);
        m.insert("c", 3, 60);
        assert_eq!(m.get(&"a", 70), Some(1), "a used again: it now expires at 170");
        assert_eq!(m.drain_expired(155), vec![("b", 2)]);
        assert_eq!(m.drain_expired(1_000), vec![("c", 3), ("a", 1)]);
        assert!(m.is_empty() && m.drain_expired(u64::MAX).is_empty());
    }

    #[test]
    fn entries_expire_after_their_last_use() {
        let mut m = BoundedLru::new(10, 100);
        m.insert("s", "d1", 0);
        assert_eq!(m.get(&"s", 99), Some("d1"));
        assert_eq!(m.get(&"s", 198), Some("d1"), "the use at 99 extended it");
        assert_eq!(m.get(&"s", 298), None);
        assert!(m.is_empty());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_new_keys() {
        let mut m = BoundedLru::new(1_000, u64::MAX);
        for i in 0..100_000u64 {
            m.insert(i, i, i);
        }
        assert_eq!((m.len(), m.evicted()), (1_000, 99_000));
        assert_eq!(m.get(&99_999, 100_000), Some(99_999));
    }
}
