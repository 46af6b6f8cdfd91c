//! This defines deletion: [`Cache::remove`] of one entry and
//! [`Cache::clean`] of all of them, both by rename-aside.
//!
//! An entry is never deleted where it stands. It is renamed, atomically, to
//! `trash/<digest>.<random>` (readers see it complete or absent, never half
//! deleted, pip-tools #2384); once that rename is durable (one fsync of the
//! root for a whole batch) `remove` and `clean` return, and the trash is
//! deleted later, by handle and without following symlinks
//! (CVE-2022-21658), by [`Cache::reclaim`] or the next gc (`reclaim.rs`).
//!
//! Invariants: `remove` holds the exclusive entry lock, so it waits for
//! every pin; `clean` holds the exclusive lease, so it waits for every user;
//! the entry lock is held until the rename aside is durable, so a power
//! loss never brings back an entry some of whose files are already deleted;
//! what is left in the trash is owned by nobody, and any process reclaims it.

use std::path::Path;

use crate::aside::{self, Aside};
use crate::cache::{Cache, Leased};
use crate::error::Error;
use crate::gc::{Failure, GcReport};
use crate::key::Key;
use crate::layout::{self, FAILED_DIR, LOCKS_DIR, MANIFESTS_DIR, QUARANTINE_DIR, USED_DIR};
use crate::listing;
use crate::lock::{Deadline, Held};
use crate::mode::{LockMode, LockName, Wait};

/// How many entries `clean` renames aside per fsync.
const CLEAN_BATCH: usize = 64;

/// What [`Cache::clean`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Entries removed.
    pub entries: usize,
    /// Bytes of regular files deleted before it returned: orphaned temps,
    /// entries that could not be renamed aside. The entries it renamed
    /// aside are deleted later ([`Cache::reclaim`]).
    pub bytes: u64,
    /// What could not be removed.
    pub failures: Vec<Failure>,
}

impl Cache {
    /// Runs [`Leased::remove`] under a shared lease of its own.
    pub fn remove(&self, key: &Key, wait: Wait) -> Result<bool, Error> {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Shared, deadline)?.remove_by(key, deadline)
    }

    /// Runs [`Leased::clean`] under an exclusive lease of its own (or the
    /// inherited exclusive lease that covers this process).
    pub fn clean(&self, wait: Wait) -> Result<CleanReport, Error> {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Exclusive, deadline)?.clean_by(deadline)
    }
}

impl Leased {
    /// Removes `key`'s entry. Waits (as `wait` allows) for pins and fills of
    /// `key` to finish. Returns whether there was an entry, as soon as its
    /// rename aside is durable: its files are deleted by [`Cache::reclaim`]
    /// or the next gc.
    ///
    /// # Errors
    /// [`Error::Busy`] naming the pinning or filling process if the entry
    /// lock could not be had within `wait`.
    pub fn remove(&self, key: &Key, wait: Wait) -> Result<bool, Error> {
        self.remove_by(key, Deadline::start(wait))
    }

    fn remove_by(&self, key: &Key, deadline: Deadline) -> Result<bool, Error> {
        let _span = tracing::info_span!("remove", %key).entered();
        let cache = &self.cache;
        let _lock = cache.entry_lock(key, LockMode::Exclusive, deadline)?;
        let stored = key.stored_name();
        if cache.root().kind(&stored).map_err(|e| Error::io("look up", &stored, e))?.is_none() {
            return Ok(false);
        }
        if cache.is_nested_cache(Path::new(&stored)) {
            return Err(Error::NestedCache { key: key.to_string() });
        }
        let root = cache.root();
        let aside =
            aside::set_aside(root, &stored, &key.digest()).map_err(|e| Error::io("rename aside", &stored, e))?;
        // Without this fsync a power loss could bring back the entry after
        // some of its files were unlinked from the trash.
        root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        aside::forget(root, &key.digest());
        if aside.rel == stored {
            // Marked in place (it could not be renamed): it keeps its name,
            // which the next fill reuses, so it goes now, under the lock.
            match aside::delete(root, &aside) {
                Ok(_) => {}
                // The entry is gone from the cache, but a mount point inside
                // it was left in place with what is under it: the user must
                // know, and unmount it.
                Err(e) if crate::sys::is_mount_points(&e) => {
                    return Err(Error::io("delete the removed entry", aside.rel, e));
                }
                Err(e) => tracing::warn!(item = %aside.rel, error = %e, "could not delete the entry; gc will retry"),
            }
        }
        Ok(true)
    }

    /// Removes every entry (including files adopted by `init`) and every
    /// orphaned temp, returning once the entries' renames aside are durable
    /// (one fsync per batch); the trash is left for [`Cache::reclaim`]. It needs the exclusive lease, which waits until no
    /// other process uses the cache. An entry it cannot remove is reported
    /// in [`CleanReport::failures`] and does not stop it.
    ///
    /// # Errors
    /// [`Error::Busy`] if an entry lock could not be had within `wait` (only
    /// under an inherited lease, whose other children may hold them);
    /// [`Error::LeaseConflict`] if this lease is shared.
    pub fn clean(&self, wait: Wait) -> Result<CleanReport, Error> {
        self.clean_by(Deadline::start(wait))
    }
}

impl Cache {
    /// Whether the entry stored as `name` holds a cache of its own (a
    /// `.safecache` marker inside it): deleting it would delete that cache's
    /// pinned entries behind its locks' backs.
    pub(crate) fn is_nested_cache(&self, name: &Path) -> bool {
        matches!(self.root().kind(name.join(crate::layout::MARKER_DIR)), Ok(Some(_)))
    }

    /// Makes a batch of renames aside durable with one fsync, then forgets
    /// the entries and releases their locks. The trash is left for
    /// [`Cache::reclaim`]; an entry marked in place is deleted now. An entry
    /// set aside without its lock (under the caller's own exclusive lease)
    /// is not forgotten one file at a time: the caller empties the
    /// metadata directories whole.
    fn flush_aside(
        &self,
        batch: &mut Vec<(Option<Held>, Aside, String)>,
        report: &mut CleanReport,
    ) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let root = self.root();
        root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        for (lock, aside, digest) in batch.drain(..) {
            if !aside.rel.starts_with(layout::TRASH_DIR) {
                match aside::delete(root, &aside) {
                    Ok(bytes) => report.bytes += bytes,
                    Err(e) => report.failures.push(Failure::new(&aside.rel, e)),
                }
            }
            if let Some(lock) = lock {
                aside::forget(root, &digest);
                drop(lock);
            }
        }
        Ok(())
    }

    /// Deletes everything inside `dir` (holding only stamps and lock files,
    /// so there is nothing worth counting).
    fn empty_dir(&self, dir: &str, report: &mut CleanReport) -> Result<(), Error> {
        let root = self.root();
        let names = match root.read_dir(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        for entry in names {
            let rel = Path::new(dir).join(&entry.name);
            if let Err(e) = root.remove_tree(&rel) {
                report.failures.push(Failure::new(&rel.to_string_lossy(), e));
            }
        }
        Ok(())
    }
}

impl Leased {
    fn clean_by(&self, deadline: Deadline) -> Result<CleanReport, Error> {
        let _span = tracing::info_span!("clean").entered();
        if self.mode() != LockMode::Exclusive {
            return Err(Error::LeaseConflict);
        }
        let cache = &self.cache;
        let root = cache.root();
        let mut report = CleanReport::default();
        // Renamed aside in batches: one fsync per batch, and a bounded number
        // of entry locks held at once.
        let mut batch = Vec::new();
        let own = self.is_own();
        for item in listing::list(root)?.into_iter().filter(listing::RootItem::is_entry) {
            let name = item.lossy;
            if cache.is_nested_cache(Path::new(&item.name)) {
                report
                    .failures
                    .push(Failure::new(&name, "it holds a safecache cache of its own; clean that cache first"));
                continue;
            }
            let digest = item.digest;
            // Under a lease taken here nobody holds an entry lock or waits on
            // one (pins, fills and changes all hold the shared lease), so none
            // is taken: its file goes with the rest of `locks/` below. Under
            // an inherited exclusive lease it respects the pins and fills of
            // the parent's other children.
            let lock = if own {
                None
            } else {
                Some(cache.lock(
                    &layout::entry_lock(&digest),
                    LockName::Entry(name.clone()),
                    LockMode::Exclusive,
                    deadline,
                )?)
            };
            // A name that is not UTF-8 (an adopted file) is set aside by
            // its lossy spelling only if that is the same name.
            let Some(utf8) = item.name.to_str() else {
                report.failures.push(Failure::new(&name, "its name is not UTF-8; remove it by hand"));
                continue;
            };
            match aside::set_aside(root, utf8, &digest) {
                Ok(aside) => {
                    batch.push((lock, aside, digest));
                    report.entries += 1;
                }
                Err(e) => report.failures.push(Failure::new(&name, Error::io("rename aside", &name, e))),
            }
            if batch.len() == CLEAN_BATCH {
                cache.flush_aside(&mut batch, &mut report)?;
            }
        }
        cache.flush_aside(&mut batch, &mut report)?;
        let mut reclaimed = GcReport::default();
        cache.reclaim_temps(&mut reclaimed)?;
        report.bytes += reclaimed.bytes;
        report.failures.append(&mut reclaimed.failures);
        // Nobody can be waiting on an entry lock (waiters hold the shared
        // lease), so the lock files can go; but not under an inherited
        // lease, where the parent's other children may hold or wait on them.
        if self.is_own() {
            cache.empty_dir(USED_DIR, &mut report)?;
            cache.empty_dir(LOCKS_DIR, &mut report)?;
            cache.empty_dir(FAILED_DIR, &mut report)?;
            cache.empty_dir(MANIFESTS_DIR, &mut report)?;
            cache.empty_dir(layout::CHANGING_DIR, &mut report)?;
            cache.empty_dir(layout::FILLS_DIR, &mut report)?;
            cache.empty_dir(QUARANTINE_DIR, &mut report)?;
        }
        crate::holder::reap_dead(root);
        Ok(report)
    }
}
