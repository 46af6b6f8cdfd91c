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
use std::sync::Arc;

use crate::cache::{Cache, Entry, Leased};
use crate::error::Error;
use crate::failed;
use crate::holder;
use crate::key::Key;
use crate::layout::{self, OWNER_LOCK, TEMP_OUT};
use crate::lock::{Deadline, Held};
use crate::mode::{LockMode, LockName, Wait};
use crate::sys::{self, Flock, LockFile, Root};

/// The private, empty directory a fill writes into.
#[derive(Debug)]
pub struct FillDir<'a> {
    path: PathBuf,
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    rel: String,
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    root: Arc<Root>,
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    owner: &'a LockFile,
    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    entry_lock: &'a Held,
}

impl FillDir<'_> {
    /// The directory's path (absolute if the cache was opened by an absolute
    /// path), for handing to another program.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor whose flock is the temp's owner lock.
    ///
    /// A flock belongs to the open file description, so a process that
    /// inherits this descriptor keeps the temp owned, and safe from gc, for
    /// as long as it lives, even if the filling process dies first.
    #[cfg(not(target_os = "wasi"))]
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.owner.fd()
    }

    /// The descriptor whose flock is the key's exclusive entry lock, held
    /// for the whole fill. A process that inherits it keeps every other fill
    /// of the key waiting for as long as it lives, so a killed filler's
    /// command can never overlap the next fill of the same key.
    #[cfg(not(target_os = "wasi"))]
    pub fn entry_lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.entry_lock.fd()
    }

    /// A handle to the directory, for writing into it without ambient
    /// authority.
    #[cfg(not(target_os = "wasi"))]
    pub fn open_dir(&self) -> std::io::Result<cap_std::fs::Dir> {
        self.root.cap_dir().open_dir(&self.rel)
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

/// A temp directory owned by this fill; dropping it deletes it by handle.
struct Temp {
    root: Arc<Root>,
    rel: String,
    owner: LockFile,
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
    /// Returns `key`'s entry, filling it first if it is absent, under a
    /// shared lease of its own; see [`Leased::get_or_fill`].
    pub fn get_or_fill<F, E>(&self, key: &Key, wait: Wait, fill: F) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Shared, deadline)?.fill_by(key, deadline, fill)
    }
}

impl Leased {
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
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.fill_by(key, Deadline::start(wait), fill)
    }

    fn fill_by<F, E>(&self, key: &Key, deadline: Deadline, fill: F) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _span = tracing::info_span!("fill", %key).entered();
        let cache = &self.cache;
        let started_ms = failed::now_ms();
        // Whether this call waited for another fill of the key: only then
        // does that fill's failure become this call's.
        let mut waited = false;
        let _leader = loop {
            if let Some(entry) = cache.lookup(key)? {
                return Ok(Filled { entry, filled: false });
            }
            match cache.inner.flights.join(key) {
                Ok(leader) => break leader,
                Err(follower) => {
                    waited = true;
                    if deadline.no_wait() || !follower.wait(deadline.end(), sys::monotonic) {
                        // The holder is this very process: another thread's fill.
                        let name = LockName::Entry(key.to_string());
                        let me = holder::this_process(&name, &layout::entry_lock(&key.digest()), LockMode::Exclusive);
                        return Err(Error::Busy {
                            lock: name,
                            mode: LockMode::Exclusive,
                            holders: vec![me],
                            waited: deadline.budget(),
                        });
                    }
                }
            }
        };
        let entry_lock = match cache.entry_lock(key, LockMode::Exclusive, Deadline::start(Wait::NoWait)) {
            Ok(lock) => lock,
            Err(Error::Busy { .. }) => {
                waited = true;
                cache.entry_lock(key, LockMode::Exclusive, deadline)?
            }
            Err(e) => return Err(e),
        };
        if let Some(entry) = cache.lookup(key)? {
            tracing::debug!("published by a peer while waiting");
            return Ok(Filled { entry, filled: false });
        }
        let digest = key.digest();
        if waited && !cache.inner.options.retry_failed {
            // The fill this call waited for failed: fail the same way rather
            // than run it again.
            if let Some(failure) = failed::read(cache.root(), &digest).filter(|f| f.at_ms >= started_ms) {
                return Err(Error::PeerFillFailed { key: key.to_string(), failure: Box::new(failure) });
            }
        }
        let temp = cache.create_temp(key)?;
        let out_rel = format!("{}/{TEMP_OUT}", temp.rel);
        let dir = FillDir {
            path: cache.inner.path.join(&out_rel),
            rel: out_rel.clone(),
            root: Arc::clone(cache.root()),
            owner: &temp.owner,
            entry_lock: &entry_lock,
        };
        tracing::debug!(temp = %temp.rel, "filling");
        let created = cache.root().stat(&out_rel).map_err(|e| Error::io("inspect", &out_rel, e))?.and_then(|m| m.id);
        if let Err(e) = fill(&dir) {
            let source = e.into();
            failed::record(cache.root(), key.as_str(), &digest, &*source);
            return Err(Error::Fill { key: key.to_string(), source });
        }
        cache.check_unmoved(key, &dir, created)?;
        cache.publish(key, &out_rel)?;
        failed::clear(cache.root(), &digest);
        drop(temp);
        cache.note_use(key);
        // Still under the entry lock: nothing can have removed it.
        Ok(Filled { entry: cache.entry_at(key), filled: true })
    }
}

impl Cache {
    /// Creates `tmp/<digest>.<random>/` with its owner lock held and an empty
    /// `out/`. The caller holds the exclusive entry lock.
    fn create_temp(&self, key: &Key) -> Result<Temp, Error> {
        let root = self.root();
        let rel = layout::temp(&key.digest(), &layout::random_suffix()?);
        root.create_dir(&rel).map_err(|e| Error::io("create temp dir", &rel, e))?;
        let owned = || {
            let owner_rel = format!("{rel}/{OWNER_LOCK}");
            let owner = root.open_lock(&owner_rel, true).map_err(|e| Error::io("create owner lock", &owner_rel, e))?;
            if !owner.try_lock(Flock::Exclusive).map_err(|e| Error::lock(&owner_rel, e))? {
                return Err(Error::io("lock", owner_rel, std::io::ErrorKind::WouldBlock.into()));
            }
            let out = format!("{rel}/{TEMP_OUT}");
            root.create_dir(&out).map_err(|e| Error::io("create temp dir", &out, e))?;
            Ok(owner)
        };
        match owned() {
            Ok(owner) => Ok(Temp { root: Arc::clone(root), rel, owner }),
            Err(e) => {
                // Still under the entry lock, so nobody else can own it.
                let _ = root.remove_tree(&rel);
                Err(e)
            }
        }
    }

    /// Checks that the fill's directory is still the one it created, both
    /// through the handle and through the path the filler was given. A temp
    /// moved or swapped during the fill, or a cache dir renamed mid-fill
    /// (the rest of the filler's writes then went elsewhere), publishes
    /// nothing.
    fn check_unmoved(&self, key: &Key, dir: &FillDir<'_>, created: Option<(u64, u64)>) -> Result<(), Error> {
        let Some(created) = created else { return Ok(()) };
        let moved = |how: &str| Error::FillMoved { key: key.to_string(), path: dir.path.clone(), how: how.to_owned() };
        match self.root().stat(&dir.rel) {
            Ok(Some(meta)) if meta.id == Some(created) => {}
            Ok(Some(_)) => return Err(moved("was replaced inside the cache")),
            Ok(None) => return Err(moved("was moved or removed")),
            Err(e) => return Err(Error::io("inspect", &dir.rel, e)),
        }
        match sys::ambient_id(&dir.path) {
            Ok(Some(id)) if id == created => Ok(()),
            Ok(None) => Ok(()),
            Ok(Some(_)) | Err(_) => Err(moved("is no longer reachable by its path (was the cache dir moved?)")),
        }
    }

    /// Makes the filled tree durable, then publishes it by one rename that
    /// never replaces anything.
    fn publish(&self, key: &Key, out_rel: &str) -> Result<(), Error> {
        let root = self.root();
        let stored = key.stored_name();
        root.sync_tree(out_rel).map_err(|e| Error::io("sync", out_rel, e))?;
        crate::manifest::write(root, key, out_rel)?;
        root.rename_noreplace(out_rel, &stored).map_err(|e| Error::io("publish", &stored, e))?;
        root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        tracing::info!(entry = %stored, "published");
        Ok(())
    }
}
