//! The hot cache: waiting instances kept in memory, least recently used
//! evicted first, bounded both by count and by the bytes their guests hold.
//!
//! A count alone does not bound memory: a Rust orchestrator holds about a
//! megabyte of linear memory, a JavaScript or Python one an interpreter's
//! heap ten or twenty times that. The bytes are each guest's linear memory
//! when it was parked (what it may have touched; what stays resident is
//! usually less).

use std::num::NonZeroUsize;

use lru::LruCache;

pub struct HotCache<V> {
    entries: LruCache<String, (V, usize)>,
    /// Bytes the entries hold together.
    bytes: usize,
    max_bytes: usize,
}

/// What an insertion took out of the cache.
pub struct Left<V> {
    pub values: Vec<V>,
    pub evicted: usize,
}

impl<V> HotCache<V> {
    /// `None` when nothing can be kept (no instances or no bytes allowed).
    pub fn new(max_instances: usize, max_bytes: usize) -> Option<HotCache<V>> {
        let max_instances = NonZeroUsize::new(max_instances)?;
        if max_bytes == 0 {
            return None;
        }
        Some(HotCache {
            entries: LruCache::new(max_instances),
            bytes: 0,
            max_bytes,
        })
    }

    /// Keeps `value` (holding `bytes`) as the most recently used. Answers
    /// what left the cache (to be dropped outside any lock: a guest takes a
    /// while to go) and how many of those were evicted: pushed out to make
    /// room, or `value` itself when it is larger than the whole budget.
    pub fn insert(&mut self, id: &str, value: V, bytes: usize) -> Left<V> {
        let mut left = Left {
            values: Vec::new(),
            evicted: 0,
        };
        left.values.extend(self.remove(id));
        if bytes > self.max_bytes {
            left.values.push(value);
            left.evicted += 1;
            return left;
        }
        if let Some((_, (old, old_bytes))) = self.entries.push(id.to_string(), (value, bytes)) {
            self.bytes -= old_bytes;
            left.values.push(old);
            left.evicted += 1;
        }
        self.bytes += bytes;
        while self.bytes > self.max_bytes {
            let (_, (old, old_bytes)) = self
                .entries
                .pop_lru()
                .expect("bytes are held by some entry");
            self.bytes -= old_bytes;
            left.values.push(old);
            left.evicted += 1;
        }
        left
    }

    pub fn remove(&mut self, id: &str) -> Option<V> {
        let (value, bytes) = self.entries.pop(id)?;
        self.bytes -= bytes;
        Some(value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values that left, and how many were evicted.
    fn left(left: Left<u32>) -> (Vec<u32>, usize) {
        (left.values, left.evicted)
    }

    #[test]
    fn the_least_recently_used_go_when_the_count_is_reached() {
        let mut cache = HotCache::new(2, 1000).unwrap();
        assert_eq!(left(cache.insert("a", 1, 10)), (vec![], 0));
        assert_eq!(left(cache.insert("b", 2, 10)), (vec![], 0));
        assert_eq!(cache.remove("a"), Some(1));
        assert_eq!(left(cache.insert("a", 1, 10)), (vec![], 0));
        assert_eq!(left(cache.insert("c", 3, 10)), (vec![2], 1));
        assert_eq!((cache.len(), cache.bytes()), (2, 20));
    }

    #[test]
    fn the_least_recently_used_go_until_the_bytes_fit() {
        let mut cache = HotCache::new(100, 100).unwrap();
        for (value, bytes) in [(1, 30), (2, 30), (3, 30)] {
            assert_eq!(left(cache.insert(&value.to_string(), value, bytes)).1, 0);
        }
        assert_eq!(left(cache.insert("4", 4, 70)), (vec![1, 2], 2));
        assert_eq!((cache.len(), cache.bytes()), (2, 100));
        assert_eq!(cache.remove("3"), Some(3));
        assert_eq!((cache.len(), cache.bytes()), (1, 70));
    }

    #[test]
    fn a_value_larger_than_the_budget_is_not_kept() {
        let mut cache = HotCache::new(10, 100).unwrap();
        assert_eq!(left(cache.insert("a", 1, 50)), (vec![], 0));
        assert_eq!(left(cache.insert("big", 2, 101)), (vec![2], 1));
        assert_eq!((cache.len(), cache.bytes()), (1, 50));
    }

    #[test]
    fn keeping_an_id_again_replaces_it_and_its_bytes() {
        let mut cache = HotCache::new(10, 100).unwrap();
        assert_eq!(left(cache.insert("a", 1, 60)), (vec![], 0));
        assert_eq!(left(cache.insert("a", 2, 80)), (vec![1], 0));
        assert_eq!((cache.len(), cache.bytes()), (1, 80));
        assert_eq!(cache.remove("a"), Some(2));
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn nothing_is_kept_without_room() {
        assert!(HotCache::<u32>::new(0, 100).is_none());
        assert!(HotCache::<u32>::new(10, 0).is_none());
    }
}
