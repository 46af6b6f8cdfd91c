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

use crate::cache::{Cache, is_internal};
use crate::error::Error;
use crate::gc::GcReport;
use crate::key::{Key, digest_of};
use crate::layout::{self, LOCKS_DIR, TRASH_DIR, USED_DIR};
use crate::lock::{LockMode, LockName, Wait};

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
        let _lease = self.op_lease(LockMode::Shared, wait)?;
        let _lock = self.entry_lock(key, LockMode::Exclusive, wait)?;
        let stored = key.stored_name();
        if self.root().kind(&stored).map_err(|e| Error::io("look up", &stored, e))?.is_none() {
            return Ok(false);
        }
        self.delete_aside(&stored, &key.digest())?;
        let _ = self.root().remove_file(layout::used_marker(&key.digest()));
        Ok(true)
    }

    /// Renames `name` (at the root) into the trash, then deletes it there.
    /// Returns the bytes removed.
    fn delete_aside(&self, name: impl AsRef<std::path::Path>, digest: &str) -> Result<u64, Error> {
        let name = name.as_ref();
        let shown = name.display().to_string();
        let root = self.root();
        let trash = format!("{TRASH_DIR}/{digest}.{}", layout::random_suffix()?);
        // No fsync of the root: if power is lost before the rename reaches
        // the disk, the entry reappears whole, which is a state readers
        // already accept.
        root.rename(name, &trash).map_err(|e| Error::io("rename aside", &shown, e))?;
        tracing::debug!(entry = %shown, %trash, "renamed aside");
        let bytes = root.usage(&trash).map(|u| u.bytes).unwrap_or(0);
        root.remove_tree(&trash).map_err(|e| Error::io("delete", &trash, e))?;
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
        let lease = self.op_lease(LockMode::Exclusive, wait)?;
        let root = self.root();
        let mut report = CleanReport::default();
        for entry in root.read_dir("").map_err(|e| Error::io("list", ".", e))? {
            if entry.name.to_str().is_some_and(is_internal) {
                continue;
            }
            let name = entry.name.to_string_lossy();
            let digest = digest_of(&name);
            // Under a lease taken here nobody holds an entry lock, so this
            // never waits; under an inherited exclusive lease it respects the
            // pins and fills of the parent's other children.
            let lock_name = LockName::Entry(name.clone().into_owned());
            let _lock = self.lock(&layout::entry_lock(&digest), lock_name, LockMode::Exclusive, wait)?;
            report.bytes += self.delete_aside(&entry.name, &digest)?;
            let _ = root.remove_file(layout::used_marker(&digest));
            report.entries += 1;
        }
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

    /// Deletes everything inside `dir`; returns the bytes removed.
    pub(crate) fn empty_dir(&self, dir: &str) -> Result<u64, Error> {
        let root = self.root();
        let mut bytes = 0;
        for entry in root.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
            let rel = std::path::Path::new(dir).join(&entry.name);
            bytes += root.usage(&rel).map(|u| u.bytes).unwrap_or(0);
            root.remove_tree(&rel).map_err(|e| Error::io("delete", rel.display().to_string(), e))?;
        }
        Ok(bytes)
    }
}
