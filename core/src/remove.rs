//! This defines deletion: [`Cache::remove`] of one entry and
//! [`Cache::clean`] of all of them, both by rename-aside.
//!
//! An entry is never deleted where it stands. It is renamed, atomically, to
//! `trash/<digest>.<random>` (readers see it complete or absent, never half
//! deleted, pip-tools #2384), then deleted there by directory handle,
//! without following symlinks (CVE-2022-21658).
//!
//! Invariants: `remove` holds the exclusive entry lock, so it waits for
//! every pin; `clean` holds the exclusive lease, so it waits for every user;
//! a killed deleter leaves only trash, which gc reclaims once the entry lock
//! is free.

use std::path::Path;

use crate::cache::{Cache, is_internal};
use crate::error::Error;
use crate::gc::GcReport;
use crate::key::{Key, digest_of};
use crate::layout::{self, LOCKS_DIR, TRASH_DIR, USED_DIR};
use crate::lock::{Deadline, Held, LockMode, LockName, Wait};

/// How many entries `clean` renames aside per fsync.
const CLEAN_BATCH: usize = 64;

/// What [`Cache::clean`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Entries removed.
    pub entries: usize,
    /// Bytes of regular files removed (entries, temps and trash).
    pub bytes: u64,
}

impl Cache {
    /// Removes `key`'s entry. Waits (as `wait` allows) for pins and fills of
    /// `key` to finish. Returns whether there was an entry.
    ///
    /// # Errors
    /// [`Error::Busy`] naming the pinning or filling process if the entry
    /// lock could not be had within `wait`.
    pub fn remove(&self, key: &Key, wait: Wait) -> Result<bool, Error> {
        let _span = tracing::info_span!("remove", %key).entered();
        let deadline = Deadline::start(wait);
        let _lease = self.op_lease(LockMode::Shared, deadline)?;
        let _lock = self.entry_lock(key, LockMode::Exclusive, deadline)?;
        let stored = key.stored_name();
        if self.root().kind(&stored).map_err(|e| Error::io("look up", &stored, e))?.is_none() {
            return Ok(false);
        }
        let trash = self.rename_aside(Path::new(&stored), &key.digest())?;
        // Without this fsync a power loss could bring back the entry after
        // some of its files were unlinked from the trash.
        self.root().sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        self.delete_trash(&trash);
        let _ = self.root().remove_file(layout::used_marker(&key.digest()));
        Ok(true)
    }

    /// Renames `name` (at the root) to `trash/<digest>.<random>`; returns
    /// the trash path. The caller holds the entry lock of `digest`.
    fn rename_aside(&self, name: &Path, digest: &str) -> Result<String, Error> {
        let trash = format!("{TRASH_DIR}/{digest}.{}", layout::random_suffix()?);
        self.root().rename(name, &trash).map_err(|e| Error::io("rename aside", name.display().to_string(), e))?;
        tracing::debug!(entry = %name.display(), %trash, "renamed aside");
        Ok(trash)
    }

    /// Deletes a trash item by handle and returns the bytes freed. A failure
    /// is logged, not returned: the entry has already left the cache, and gc
    /// retries the trash.
    fn delete_trash(&self, trash: &str) -> u64 {
        let bytes = self.root().usage(trash).map(|u| u.bytes).unwrap_or(0);
        match self.root().remove_tree(trash) {
            Ok(()) => bytes,
            Err(e) => {
                tracing::warn!(%trash, error = %e, "could not delete trash; gc will retry");
                0
            }
        }
    }

    /// Makes a batch of renames aside durable with one fsync, then deletes
    /// the trash and releases the entry locks. Returns the bytes freed.
    fn flush_aside(&self, batch: &mut Vec<(Held, String, String)>) -> Result<u64, Error> {
        if batch.is_empty() {
            return Ok(0);
        }
        self.root().sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        let mut bytes = 0;
        for (lock, trash, digest) in batch.drain(..) {
            bytes += self.delete_trash(&trash);
            let _ = self.root().remove_file(layout::used_marker(&digest));
            drop(lock);
        }
        Ok(bytes)
    }

    /// Removes every entry (including files adopted by `init`), every temp
    /// and all trash, under the exclusive lease: it waits, as `wait` allows,
    /// until no other process uses the cache.
    ///
    /// # Errors
    /// [`Error::Busy`] naming the lease holders if the lease could not be had
    /// within `wait`; [`Error::LeaseConflict`] under an inherited shared
    /// lease.
    pub fn clean(&self, wait: Wait) -> Result<CleanReport, Error> {
        let _span = tracing::info_span!("clean").entered();
        let deadline = Deadline::start(wait);
        let lease = self.op_lease(LockMode::Exclusive, deadline)?;
        let root = self.root();
        let mut report = CleanReport::default();
        // Renamed aside in batches: one fsync per batch, and a bounded number
        // of entry locks held at once.
        let mut batch = Vec::new();
        for entry in root.read_dir("").map_err(|e| Error::io("list", ".", e))? {
            if entry.name.to_str().is_some_and(is_internal) {
                continue;
            }
            let name = entry.name.to_string_lossy().into_owned();
            let digest = digest_of(&name);
            // Under a lease taken here nobody holds an entry lock, so this
            // never waits; under an inherited exclusive lease it respects the
            // pins and fills of the parent's other children.
            let lock = self.lock(&layout::entry_lock(&digest), LockName::Entry(name), LockMode::Exclusive, deadline)?;
            let trash = self.rename_aside(Path::new(&entry.name), &digest)?;
            batch.push((lock, trash, digest));
            report.entries += 1;
            if batch.len() == CLEAN_BATCH {
                report.bytes += self.flush_aside(&mut batch)?;
            }
        }
        report.bytes += self.flush_aside(&mut batch)?;
        let mut reclaimed = GcReport::default();
        self.reclaim_orphans(&mut reclaimed)?;
        report.bytes += reclaimed.bytes;
        // Nobody can be waiting on an entry lock (waiters hold the shared
        // lease), so the lock files can go; but not under an inherited
        // lease, where the parent's children may hold them.
        if lease.is_some() {
            self.empty_dir(USED_DIR)?;
            self.empty_dir(LOCKS_DIR)?;
        }
        crate::holder::reap_dead(root);
        Ok(report)
    }

    /// Deletes everything inside `dir` (holding only stamps and lock files,
    /// so there is nothing worth counting).
    fn empty_dir(&self, dir: &str) -> Result<(), Error> {
        let root = self.root();
        for entry in root.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
            let rel = Path::new(dir).join(&entry.name);
            root.remove_tree(&rel).map_err(|e| Error::io("delete", rel.display().to_string(), e))?;
        }
        Ok(())
    }
}
