//! Guests kept between uses, to save an instantiation: activity guests
//! between calls, and orchestrator guests whose orchestration ended (when
//! the guest allows it: `orchestration.allow-reuse`). For a JavaScript or
//! Python app an instantiation is most of the work: a fresh interpreter
//! faults its heap in again and compiles its functions again.

use std::collections::HashMap;
use std::sync::Mutex;

/// Idle guests of one role, per app version, most recent last, each with
/// the linear memory it holds.
pub(super) struct IdleGuests<G> {
    by_version: Mutex<HashMap<String, Vec<(G, usize)>>>,
    capacity: usize,
    /// Most linear memory they may hold together.
    memory: usize,
}

impl<G> IdleGuests<G> {
    /// Keeps at most `capacity` guests holding at most `memory` bytes of
    /// linear memory together, over all versions.
    pub fn new(capacity: usize, memory: usize) -> IdleGuests<G> {
        IdleGuests {
            by_version: Mutex::new(HashMap::new()),
            capacity,
            memory,
        }
    }

    /// The most recently kept guest of `version`, if any.
    pub fn take(&self, version: &str) -> Option<G> {
        Some(self.lock().get_mut(version)?.pop()?.0)
    }

    /// Keeps `guest`, which holds `bytes` of linear memory, for the next
    /// use of `version`, unless it is larger than all the room. To make
    /// room, the oldest guests of the version with the most go.
    pub fn keep(&self, version: &str, guest: G, bytes: usize) {
        if self.capacity == 0 || bytes > self.memory {
            return;
        }
        let mut evicted = Vec::new();
        {
            let mut idle = self.lock();
            let (mut count, mut held) = idle
                .values()
                .flatten()
                .fold((0, 0), |(n, sum), (_, size)| (n + 1, sum + size));
            while count >= self.capacity || held + bytes > self.memory {
                let fullest = idle.values_mut().max_by_key(|guests| guests.len());
                let Some((oldest, size)) = fullest.filter(|g| !g.is_empty()).map(|g| g.remove(0))
                else {
                    break;
                };
                count -= 1;
                held -= size;
                evicted.push(oldest);
            }
            idle.entry(version.to_string())
                .or_default()
                .push((guest, bytes));
        }
        // Freeing guests' memory is not done under the lock.
        drop(evicted);
    }

    /// Drops the idle guests of `version` (it was unloaded).
    pub fn forget(&self, version: &str) {
        let gone = self.lock().remove(version);
        drop(gone);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(G, usize)>>> {
        self.by_version.lock().expect("idle guests")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_guest_of_a_version_is_taken_first() {
        let idle = IdleGuests::new(4, 100);
        idle.keep("a", 1, 10);
        idle.keep("a", 2, 10);
        idle.keep("b", 3, 10);
        assert_eq!(idle.take("a"), Some(2));
        assert_eq!(idle.take("a"), Some(1));
        assert_eq!(idle.take("a"), None);
        assert_eq!(idle.take("c"), None);
        idle.forget("b");
        assert_eq!(idle.take("b"), None);
    }

    #[test]
    fn at_capacity_the_oldest_of_the_fullest_version_goes() {
        let idle = IdleGuests::new(3, 100);
        idle.keep("a", 1, 10);
        idle.keep("a", 2, 10);
        idle.keep("b", 3, 10);
        idle.keep("b", 4, 10);
        assert_eq!(idle.take("a"), Some(2));
        assert_eq!(idle.take("a"), None, "a's oldest went");
        assert_eq!(idle.take("b"), Some(4));
        assert_eq!(idle.take("b"), Some(3));
    }

    #[test]
    fn memory_is_bounded_as_well() {
        let idle = IdleGuests::new(10, 100);
        idle.keep("a", 1, 40);
        idle.keep("a", 2, 40);
        idle.keep("a", 3, 50);
        assert_eq!(idle.take("a"), Some(3));
        assert_eq!(idle.take("a"), Some(2));
        assert_eq!(idle.take("a"), None, "the first went to make room");
        idle.keep("a", 4, 101);
        assert_eq!(idle.take("a"), None, "larger than all the room: not kept");
        let none = IdleGuests::new(0, 100);
        none.keep("a", 5, 1);
        assert_eq!(none.take("a"), None);
    }
}
