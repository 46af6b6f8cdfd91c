//! This defines deletion: [`Cache::remove`] of one entry and
//! [`Cache::clean`] of all of them, both by rename-aside.
//!
//! An entry is never deleted where it stands. It is renamed, atomically, to
//! `trash/<digest>.<random>` (readers see it complete or absent, never half
//! deleted, pip-tools #2384), or by `clean` under its own lease into one
//! trash directory of its own it keeps claimed; once that rename is durable
//! (one fsync of the root for a whole batch) `remove` and `clean` return,
//! `clean` having replaced the metadata directories whole, and the trash is
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
use crate::layout;
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
    /// orphaned temp, returning once the entries' renames aside are durable;
    /// the trash is left for [`Cache::reclaim`]. Under a lease it took
    /// itself, every entry goes into one trash directory (one fsync of the
    /// root for all) and the metadata directories are replaced whole; under
    /// an inherited one, each entry is renamed aside under its entry lock
    /// (one fsync per batch). It needs the exclusive lease, which waits
    /// until no other process uses the cache. An entry it cannot remove is
    /// reported in [`CleanReport::failures`] and does not stop it.
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

    /// Deletes everything inside `dir` one name at a time: what `clean`
    /// does with a metadata directory it could not rename aside whole.
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

    /// Empties the metadata directories ([`layout::CLEANED_DIRS`]) under an
    /// exclusive lease this process took, when nobody can hold or wait on
    /// an entry lock. Each is replaced whole: a fresh empty directory is
    /// made in the clean's own trash (so with the mode the cache makes its
    /// directories with, and on a full disk, where it cannot be made,
    /// nothing is renamed), the old one is renamed aside into the trash
    /// ([`layout::trash_dir_item`], which has no digest: the next reclaimer
    /// deletes it) and the fresh one renamed into its place; then one fsync
    /// of `.safecache`. A crash between the two renames leaves the
    /// directory missing, which the next open makes again
    /// (`format::repair_subdirs`). A directory that cannot be replaced is
    /// emptied one name at a time, as before.
    fn set_aside_metadata(&self, trash: Option<&CleanTrash>, report: &mut CleanReport) -> Result<(), Error> {
        let root = self.root();
        let mut moved = false;
        for dir in layout::CLEANED_DIRS {
            let fresh = trash.and_then(|t| t.fresh_dir(root, dir));
            let Some(fresh) = fresh else {
                self.empty_dir(dir, report)?;
                continue;
            };
            let aside = layout::trash_dir_item(dir, &layout::random_suffix()?);
            match root.rename(dir, &aside) {
                Ok(()) => moved = true,
                // Made on first need, and never needed yet.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(%dir, error = %e, "cannot rename the directory aside; emptying it in place");
                    self.empty_dir(dir, report)?;
                    continue;
                }
            }
            match root.rename_noreplace(&fresh, dir) {
                // A process opening the cache meanwhile may have made it.
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    report.failures.push(Failure::new(dir, Error::io("create", dir, e)));
                }
                _ => {}
            }
        }
        if moved {
            root.sync_dir(layout::MARKER_DIR).map_err(|e| Error::io("sync", layout::MARKER_DIR, e))?;
        }
        Ok(())
    }
}

/// The trash directory one `clean` under its own lease renames every entry
/// into ([`layout::clean_trash`]), claimed by `clean` (its claim lock held
/// exclusively, as a reclaimer holds it) until every rename into it is
/// durable and the metadata directories are replaced: until then no
/// reclaimer deletes a file of an entry that a power cut could bring back.
/// Dropping it releases the claim; the directory is then the next
/// reclaimer's.
struct CleanTrash {
    rel: String,
    /// It, opened once: every entry is renamed into it.
    target: crate::sys::Target,
    _claim: crate::sys::LockFile,
}

impl CleanTrash {
    /// Claims and makes a new clean trash; `None` where it cannot be made
    /// (a full disk: a directory needs a block), and `clean` then renames
    /// each entry aside on its own, as under an inherited lease.
    fn start(root: &crate::sys::Root) -> Option<CleanTrash> {
        let rel = layout::clean_trash(&layout::random_suffix().ok()?);
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_owned();
        let claim_rel = layout::claim_lock(&name);
        let made = root.open_lock(&claim_rel, true).and_then(|claim| {
            // A fresh random name: nobody else can hold it.
            if !claim.try_lock(crate::sys::Flock::Exclusive)? {
                return Err(std::io::Error::other("the claim is held by another process"));
            }
            root.create_dir(&rel)?;
            Ok((claim, root.open_target(&rel)?))
        });
        match made {
            Ok((claim, target)) => Some(CleanTrash { rel, target, _claim: claim }),
            Err(e) => {
                tracing::info!(error = %e, "cannot make the clean's trash; renaming each entry aside on its own");
                let _ = root.remove_file(&claim_rel);
                None
            }
        }
    }

    /// A fresh, empty directory to replace the metadata directory `dir`
    /// with, made inside this trash under `.safecache/` (never an entry's
    /// stored name); `None` if it cannot be made.
    fn fresh_dir(&self, root: &crate::sys::Root, dir: &str) -> Option<String> {
        let parent = format!("{}/{}", self.rel, layout::MARKER_DIR);
        match root.create_dir(&parent) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return None,
            _ => {}
        }
        let fresh = format!("{parent}/{}", dir.rsplit('/').next().unwrap_or(dir));
        root.create_dir(&fresh).ok().map(|()| fresh)
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
        // Under a lease taken here every entry goes into one trash
        // directory: one item for the reclaimer to claim, not one each.
        let trash = if own { CleanTrash::start(root) } else { None };
        let mut unsynced = false;
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
            let aside = match &trash {
                Some(trash) => aside::set_aside_into(root, utf8, &trash.target),
                None => aside::set_aside(root, utf8, &digest),
            };
            match aside {
                // In the clean's trash, which no reclaimer may claim before
                // `clean` lets it go, it needs nothing more: one fsync of
                // the root, below, makes every such rename durable.
                Ok(aside) if trash.is_some() && aside.rel.starts_with(layout::TRASH_DIR) => {
                    unsynced = true;
                    report.entries += 1;
                }
                Ok(aside) => {
                    batch.push((lock, aside, digest));
                    report.entries += 1;
                }
                Err(e) => report.failures.push(Failure::new(&name, Error::io("rename aside", &name, e))),
            }
            if batch.len() == CLEAN_BATCH {
                cache.flush_aside(&mut batch, &mut report)?;
                unsynced = false;
            }
        }
        if unsynced && batch.is_empty() {
            root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        }
        cache.flush_aside(&mut batch, &mut report)?;
        let mut reclaimed = GcReport::default();
        cache.reclaim_temps(&mut reclaimed)?;
        report.bytes += reclaimed.bytes;
        report.failures.append(&mut reclaimed.failures);
        // Nobody can be waiting on an entry lock (waiters hold the shared
        // lease), so the lock files can go; but not under an inherited
        // lease, where the parent's other children may hold or wait on them.
        if own {
            cache.set_aside_metadata(trash.as_ref(), &mut report)?;
        }
        // Every rename into the clean's trash is durable: a reclaimer may
        // delete it now.
        drop(trash);
        crate::holder::reap_dead(root);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    // Tests look at the tree from outside, by path.
    #![allow(clippy::disallowed_methods)]
    use std::os::unix::fs::MetadataExt;

    use crate::sys::faults::{self, Failure, Fault, Op};
    use crate::{Cache, Key, Options, Wait};

    /// A failure at any one rename, mkdir, sync or removal of `clean`
    /// leaves what a kill at that step would (but for the lease, which the
    /// failed clean released): a cache whose next open makes again every
    /// metadata directory `clean` had renamed aside and not yet replaced,
    /// privately, and that then fills, removes and reclaims as before.
    #[test]
    fn a_clean_stopped_at_any_step_leaves_a_cache_the_next_open_repairs() {
        for op in [Op::Rename, Op::CreateDir, Op::Sync, Op::Remove] {
            for nth in 0..20 {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("cache");
                let cache = Cache::open_ambient(&path, Options::default()).unwrap();
                for k in ["a", "b"] {
                    let key = Key::new(k).unwrap();
                    cache.get_or_fill(&key, Wait::NoWait, |d| std::fs::write(d.path().join("f"), k)).unwrap();
                }
                faults::inject(&[Fault { op, nth, failure: Failure::Io }]);
                let _ = cache.clean(Wait::NoWait);
                faults::clear();
                drop(cache);

                let cache = Cache::open_ambient(&path, Options::default()).unwrap();
                for sub in crate::layout::SUBDIRS {
                    let meta = std::fs::symlink_metadata(path.join(sub)).unwrap();
                    assert!(meta.is_dir(), "{op:?} {nth}: {sub} is there");
                    assert_eq!(meta.mode() & 0o7777, 0o700, "{op:?} {nth}: {sub} is private");
                }
                let key = Key::new("a").unwrap();
                cache.get_or_fill(&key, Wait::NoWait, |d| std::fs::write(d.path().join("f"), "again")).unwrap();
                assert!(cache.remove(&key, Wait::NoWait).unwrap(), "{op:?} {nth}");
                let report = cache.gc(Wait::NoWait).unwrap();
                assert!(report.failures.is_empty(), "{op:?} {nth}: {report:?}");
                let trash = std::fs::read_dir(path.join(crate::layout::TRASH_DIR)).unwrap().count();
                assert_eq!(trash, 0, "{op:?} {nth}: gc reclaims everything clean set aside");
            }
        }
    }
}
