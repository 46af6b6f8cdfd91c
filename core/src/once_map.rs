//! This defines [`OnceMap`], the in-process half of single-flight: among the
//! threads of one process, one leader per key does the work and the others
//! wait for it to finish (as uv's `uv-once-map` does), so a process never
//! takes the same exclusive flock twice.
//!
//! Invariant: a leader's slot is released when its [`Leader`] guard drops,
//! even by panic, so a waiter never waits for a leader that is gone.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Keys with a leader at work, each with the flag its followers wait on.
#[derive(Debug)]
pub(crate) struct OnceMap<K> {
    inflight: Mutex<HashMap<K, Arc<Flight>>>,
}

#[derive(Debug, Default)]
struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

/// The leader's slot for one key; dropping it wakes every follower.
#[derive(Debug)]
pub(crate) struct Leader<'a, K: Eq + Hash> {
    map: &'a OnceMap<K>,
    key: K,
    flight: Arc<Flight>,
}

/// Another thread leads this key; wait on it with [`Follower::wait`].
#[derive(Debug)]
pub(crate) struct Follower {
    flight: Arc<Flight>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking leader must not wedge its followers.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Eq + Hash + Clone> OnceMap<K> {
    pub(crate) fn new() -> OnceMap<K> {
        OnceMap { inflight: Mutex::new(HashMap::new()) }
    }

    /// Becomes the leader of `key`, or returns a follower of its leader.
    pub(crate) fn join(&self, key: &K) -> Result<Leader<'_, K>, Follower> {
        let mut map = lock(&self.inflight);
        if let Some(flight) = map.get(key) {
            return Err(Follower { flight: Arc::clone(flight) });
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.clone(), Arc::clone(&flight));
        Ok(Leader { map: self, key: key.clone(), flight })
    }
}

impl<K: Eq + Hash> Drop for Leader<'_, K> {
    fn drop(&mut self) {
        lock(&self.map.inflight).remove(&self.key);
        *lock(&self.flight.done) = true;
        self.flight.cv.notify_all();
    }
}

impl Follower {
    /// Waits until the leader is done, at most until `until` (`None`:
    /// forever). Returns whether it is done.
    pub(crate) fn wait(&self, until: Option<Instant>, now: impl Fn() -> Instant) -> bool {
        let mut done = lock(&self.flight.done);
        while !*done {
            match until {
                None => done = self.flight.cv.wait(done).unwrap_or_else(|p| p.into_inner()),
                Some(end) => {
                    let now = now();
                    if now >= end {
                        return false;
                    }
                    done = self.flight.cv.wait_timeout(done, end - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_per_key_until_it_drops() {
        let map = OnceMap::new();
        let leader = map.join(&"k").unwrap();
        let follower = map.join(&"k").unwrap_err();
        assert!(map.join(&"other").is_ok(), "keys are independent");
        let waiter = std::thread::spawn(move || follower.wait(None, crate::sys::monotonic));
        drop(leader);
        assert!(waiter.join().unwrap());
        assert!(map.join(&"k").is_ok(), "the slot is free again");
    }

    #[test]
    fn a_follower_gives_up_at_its_deadline() {
        let map = OnceMap::new();
        let _leader = map.join(&1).unwrap();
        let follower = map.join(&1).unwrap_err();
        assert!(!follower.wait(Some(crate::sys::monotonic()), crate::sys::monotonic));
    }
}
