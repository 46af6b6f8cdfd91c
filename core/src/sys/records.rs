//! This defines the idle holder records a cache handle keeps for its next
//! locks (their format and use are holder.rs's): a pool of files this
//! process created and holds flocked, kept with the handle's [`super::Root`].

use std::sync::Mutex;

use super::LockFile;

/// How many idle records a handle keeps; a lock taken when none is idle
/// creates one.
const POOL_MAX: usize = 16;

/// A record file this process created and holds locked (exclusively, for
/// as long as it lives), with the length it has grown to.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) rel: String,
    pub(crate) file: LockFile,
    pub(crate) len: usize,
}

/// The idle records of one cache handle. Taking a lock rewrites one in
/// place (two writes) instead of creating, renaming and deleting a file per
/// lock, so a pin costs no directory change. They are kept only while the
/// handle holds some lock (under a lease, its pins reuse them): when its
/// last record is released they are deleted, so a process that is done
/// with the cache leaves none behind, whether or not it drops the handle.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Slot>,
    /// Records naming a lock now.
    held: usize,
}

impl Pool {
    pub(crate) fn take(&self) -> Option<Slot> {
        self.state.lock().ok()?.idle.pop()
    }

    /// Counts a record written for a lock just taken.
    pub(crate) fn hold(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.held += 1;
        }
    }

    /// Takes back `slot`, a record whose lock is being released (`idle`:
    /// it was emptied), and returns the records to delete: `slot` if it
    /// could not be emptied or the pool is full, and every idle record
    /// once no record names a lock.
    pub(crate) fn release(&self, slot: Slot, idle: bool) -> Vec<Slot> {
        let Ok(mut state) = self.state.lock() else { return vec![slot] };
        state.held = state.held.saturating_sub(1);
        let mut out = Vec::new();
        if idle && state.idle.len() < POOL_MAX {
            state.idle.push(slot);
        } else {
            out.push(slot);
        }
        if state.held == 0 {
            out.append(&mut state.idle);
        }
        out
    }

    /// Lets go of every idle record: `remove` (deleting it by name) is
    /// called while its flock is still held, then the flock is released.
    pub(crate) fn drain(&self, remove: impl Fn(&str)) {
        let slots = match self.state.lock() {
            Ok(mut state) => std::mem::take(&mut state.idle),
            Err(_) => return,
        };
        for slot in slots {
            remove(&slot.rel);
        }
    }
}
