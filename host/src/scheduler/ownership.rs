//! Which instances this host runs: all of them on a database of its own;
//! on a shared one, those of the partitions it holds a lease on, each
//! with the epoch its episode commits are fenced with.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::store::{partition_of, Fence};

pub struct Ownership {
    /// `None`: every partition, unfenced (one host on its database).
    held: RwLock<Option<HashMap<i32, i64>>>,
}

impl Ownership {
    /// One host on its own database: it runs everything.
    pub fn everything() -> Ownership {
        Ownership {
            held: RwLock::new(None),
        }
    }

    /// A host on a shared database, holding these partitions.
    pub fn leased(held: HashMap<i32, i64>) -> Ownership {
        Ownership {
            held: RwLock::new(Some(held)),
        }
    }

    pub fn owns(&self, id: &str) -> bool {
        match &*self.held.read().expect("ownership") {
            None => true,
            Some(held) => held.contains_key(&partition_of(id)),
        }
    }

    /// The lease an episode of `id` commits under (`None` when unfenced).
    pub fn fence(&self, id: &str) -> Option<Fence> {
        let held = self.held.read().expect("ownership");
        let partition = partition_of(id);
        let epoch = *held.as_ref()?.get(&partition)?;
        Some(Fence { partition, epoch })
    }

    /// The partitions held (`None`: all).
    pub fn partitions(&self) -> Option<Vec<i32>> {
        let held = self.held.read().expect("ownership");
        held.as_ref().map(|held| held.keys().copied().collect())
    }

    /// Replaces what is held; returns the partitions held now that were
    /// not before (or were, under an earlier epoch: someone else may have
    /// run them in between).
    pub fn update(&self, now: HashMap<i32, i64>) -> Vec<i32> {
        let mut held = self.held.write().expect("ownership");
        let before = held.get_or_insert_with(HashMap::new);
        let gained = now
            .iter()
            .filter(|(partition, epoch)| before.get(partition) != Some(epoch))
            .map(|(partition, _)| *partition)
            .collect();
        *before = now;
        gained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_runs_the_instances_of_the_partitions_it_holds() {
        let id = "some-instance";
        let mine = HashMap::from([(partition_of(id), 3)]);
        let ownership = Ownership::leased(HashMap::new());
        assert!(!ownership.owns(id));
        assert_eq!(ownership.update(mine.clone()), vec![partition_of(id)]);
        assert!(ownership.owns(id));
        assert_eq!(ownership.fence(id).map(|f| f.epoch), Some(3));
        assert!(ownership.update(mine).is_empty(), "renewed, not gained");
        let retaken = HashMap::from([(partition_of(id), 4)]);
        assert_eq!(ownership.update(retaken), vec![partition_of(id)]);
        assert!(Ownership::everything().owns(id));
        assert_eq!(Ownership::everything().fence(id), None);
    }
}
