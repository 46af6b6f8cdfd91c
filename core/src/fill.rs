//! This defines single-flight fills ([`Cache::get_or_fill`]): private temps
//! and publish by one atomic rename.
//!
//! The protocol for a key `k` with digest `d`:
//! 1. take the shared lease; return `k` if it is published;
//! 2. among the threads of this process, become the one leader for `k`
//!    (the others wait for it and then look again);
//! 3. take the exclusive entry lock `locks/d.lock`; return `k` if a peer
//!    published it meanwhile;
//! 4. create `tmp/d.<random>/`, then create and flock its `owner.lock`,
//!    then create `out/` inside: the fill writes only there;
//! 5. fsync the tree, rename `out/` to `k`'s stored name with
//!    `RENAME_NOREPLACE`, fsync the root;
//! 6. delete `tmp/d.<random>/` by handle, then release the locks.
//!
//! Invariants: a reader sees an entry absent or complete; a failed or
//! panicking fill publishes nothing and removes its temp; a killed fill
//! leaves only `tmp/d.<random>/`, whose entry lock and owner lock are both
//! free, which is what gc checks before it deletes it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::cache::{Cache, Entry};
use crate::error::Error;
use crate::holder;
use crate::key::Key;
use crate::layout::{self, TMP_DIR};
use crate::lock::{Deadline, LockMode, LockName, Wait};
use crate::sys::{LockFile, Root};

/// The private, empty directory a fill writes into.
#[derive(Debug)]
pub struct FillDir {
    path: PathBuf,
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    rel: String,
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    root: Arc<Root>,
}

impl FillDir {
    /// The directory's path (absolute if the cache was opened by an absolute
    /// path), for handing to another program.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle to the directory, for writing into it without ambient
    /// authority.
    #[cfg(not(target_os = "wasi"))]
    pub fn open_dir(&self) -> std::io::Result<cap_std::fs::Dir> {
        self.root.dir().open_dir(&self.rel)
    }
}

/// The outcome of [`Cache::get_or_fill`].
#[derive(Debug)]
pub struct Filled {
    /// The published entry.
    pub entry: Entry,
    /// Whether this call ran the fill (false: it was already published, or
    /// another process or thread published it while this one waited).
    pub filled: bool,
}

/// One in-process fill in flight, that the other threads wait on.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    done: Mutex<bool>,
    cv: Condvar,
}

/// Marks the flight done and unregisters it when the leader finishes, even
/// by panic.
struct Leader<'a> {
    cache: &'a Cache,
    key: &'a Key,
    flight: Arc<Flight>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.cache.inner.inflight.lock().unwrap_or_else(|p| p.into_inner()).remove(self.key);
        *self.flight.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.flight.cv.notify_all();
    }
}

/// A temp directory owned by this fill; dropping it deletes it by handle.
struct Temp {
    root: Arc<Root>,
    rel: String,
    _owner: Option<LockFile>,
}

impl Drop for Temp {
    fn drop(&mut self) {
        // Delete while still holding the owner lock, so gc cannot mistake
        // a half-deleted temp for an orphan of someone else's.
        if let Err(e) = self.root.remove_tree(&self.rel) {
            tracing::warn!(temp = %self.rel, error = %e, "could not remove temp; gc will reclaim it");
        }
    }
}

impl Cache {
    /// Returns `key`'s entry, filling it first if it is absent.
    ///
    /// Across processes and across the threads of this one, at most one fill
    /// of `key` runs at a time, and when it publishes, everyone waiting gets
    /// its result. `fill` gets a private empty directory; if it returns `Ok`,
    /// that directory is published as the entry by one atomic rename.
    ///
    /// # Errors
    /// [`Error::Fill`] if `fill` failed (nothing is published and the temp is
    /// removed); [`Error::Busy`] if a lock could not be had within `wait`.
    pub fn get_or_fill<F, E>(&self, key: &Key, wait: Wait, fill: F) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _span = tracing::info_span!("fill", %key).entered();
        let deadline = Deadline::start(wait);
        let _lease = self.op_lease(LockMode::Shared, deadline)?;
        let _leader = loop {
            if let Some(entry) = self.lookup(key)? {
                return Ok(Filled { entry, filled: false });
            }
            match self.join_flight(key) {
                Ok(leader) => break leader,
                Err(flight) => self.wait_flight(key, &flight, deadline)?,
            }
        };
        let _entry_lock = self.entry_lock(key, LockMode::Exclusive, deadline)?;
        if let Some(entry) = self.lookup(key)? {
            tracing::debug!("published by a peer while waiting");
            return Ok(Filled { entry, filled: false });
        }
        let temp = self.create_temp(key)?;
        let out_rel = format!("{}/out", temp.rel);
        let dir = FillDir { path: self.inner.path.join(&out_rel), rel: out_rel.clone(), root: Arc::clone(self.root()) };
        tracing::debug!(temp = %temp.rel, "filling");
        fill(&dir).map_err(|e| Error::Fill { key: key.to_string(), source: e.into() })?;
        self.publish(key, &out_rel)?;
        drop(temp);
        self.note_use(key);
        // Still under the entry lock: nothing can have removed it.
        Ok(Filled { entry: self.entry_at(key), filled: true })
    }

    fn join_flight<'a>(&'a self, key: &'a Key) -> Result<Leader<'a>, Arc<Flight>> {
        let mut map = self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flight) = map.get(key) {
            return Err(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.clone(), Arc::clone(&flight));
        Ok(Leader { cache: self, key, flight })
    }

    fn wait_flight(&self, key: &Key, flight: &Flight, deadline: Deadline) -> Result<(), Error> {
        let busy = |waited| {
            let name = LockName::Entry(key.to_string());
            let me = holder::this_process(&name, &layout::entry_lock(&key.digest()), LockMode::Exclusive);
            Error::Busy { lock: name, mode: LockMode::Exclusive, holders: vec![me], waited }
        };
        let mut done = flight.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            if deadline.no_wait() {
                return Err(busy(None));
            }
            match deadline.end() {
                None => done = flight.cv.wait(done).unwrap_or_else(|p| p.into_inner()),
                Some(end) => {
                    let now = Instant::now();
                    if now >= end {
                        return Err(busy(deadline.budget()));
                    }
                    done = flight.cv.wait_timeout(done, end - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        Ok(())
    }

    /// Creates `tmp/<digest>.<random>/` with its owner lock held and an empty
    /// `out/`. The caller holds the exclusive entry lock.
    fn create_temp(&self, key: &Key) -> Result<Temp, Error> {
        let root = self.root();
        let rel = format!("{TMP_DIR}/{}.{}", key.digest(), layout::random_suffix()?);
        root.create_dir(&rel).map_err(|e| Error::io("create temp dir", &rel, e))?;
        let mut temp = Temp { root: Arc::clone(root), rel, _owner: None };
        let owner_rel = format!("{}/owner.lock", temp.rel);
        let owner = root.open_lock(&owner_rel, true).map_err(|e| Error::io("create owner lock", &owner_rel, e))?;
        if !owner.try_lock(LockMode::Exclusive).map_err(|e| Error::io("lock", &owner_rel, e))? {
            return Err(Error::io("lock", owner_rel, std::io::ErrorKind::WouldBlock.into()));
        }
        temp._owner = Some(owner);
        let out = format!("{}/out", temp.rel);
        root.create_dir(&out).map_err(|e| Error::io("create temp dir", &out, e))?;
        Ok(temp)
    }

    /// Makes the filled tree durable, then publishes it by one rename that
    /// never replaces anything.
    fn publish(&self, key: &Key, out_rel: &str) -> Result<(), Error> {
        let root = self.root();
        let stored = key.stored_name();
        root.sync_tree(out_rel).map_err(|e| Error::io("sync", out_rel, e))?;
        root.rename_noreplace(out_rel, &stored).map_err(|e| Error::io("publish", &stored, e))?;
        root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        tracing::info!(entry = %stored, "published");
        Ok(())
    }
}
