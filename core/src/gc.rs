//! This defines [`Cache::gc`], which reclaims what killed processes left
//! behind, [`Cache::gc_with`], which also evicts entries by last use (see
//! `evict.rs`), and the read-only views `entries` and `status`.
//!
//! gc deletes a temp `tmp/<d>.<r>` or a trash item `trash/<d>.<r>` only
//! when it can prove its owner dead: nobody holds the exclusive entry lock
//! of digest `d` (fillers hold that lock for as long as their temp exists,
//! removers until their rename aside is durable) and, for a temp, it can
//! take its owner lock; for a trash item, its claim lock (`reclaim.rs`). It deletes an
//! uncommitted in-place entry only under that entry lock, taken without
//! waiting. Published entries are touched only by eviction, when limits ask
//! for it, and never while pinned or being filled.

use std::time::SystemTime;

use crate::cache::{Cache, Leased};
use crate::error::Error;
use crate::holder::{self, Holder};
use crate::key::Key;
use crate::layout::{self, FAILED_DIR, GC_LOCK, LOCKS_DIR, TMP_DIR, TRASH_DIR, USED_DIR};
use crate::limits::{EvictReport, GcOptions, Limits};
use crate::listing::{self, Class};
use crate::lock::Deadline;
use crate::mode::{LockMode, LockName, Wait};
use crate::probe::owner_alive;

/// Something gc or clean could not reclaim, and why. They go on past it,
/// and report every one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The item, relative to the cache root (escaped for display).
    pub rel: String,
    /// What went wrong.
    pub reason: String,
}

impl Failure {
    pub(crate) fn new(rel: &str, reason: impl std::fmt::Display) -> Failure {
        tracing::warn!(item = %rel, error = %reason, "could not reclaim");
        Failure { rel: crate::display::escape(rel), reason: reason.to_string() }
    }
}

/// What [`Cache::gc`] reclaimed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Orphaned temps deleted.
    pub temps: usize,
    /// Trash items deleted.
    pub trash: usize,
    /// Bytes of regular files deleted.
    pub bytes: u64,
    /// Items left alone because their owner is alive.
    pub busy: usize,
    /// Holder records of dead processes deleted.
    pub records: usize,
    /// Uncommitted entries of dead in-place fills deleted.
    pub uncommitted: usize,
    /// Lock files, gates and last-use stamps of absent entries deleted
    /// (only when the cache was idle: see [`Cache::gc`]).
    pub locks: usize,
    /// What could not be reclaimed (the next gc retries).
    pub failures: Vec<Failure>,
    /// What eviction did ([`Cache::gc_with`] with limits).
    pub evict: EvictReport,
    /// Quarantined entries deleted (older than [`crate::QUARANTINE_KEEP`]).
    pub quarantined: usize,
    /// Logs of fills that were killed, deleted (see [`crate::FillLog`]).
    pub logs: usize,
}

/// Where a leftover lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemKind {
    /// A fill's private temp directory.
    Temp,
    /// An entry renamed aside for deletion.
    Trash,
    /// An entry being built in place, not committed yet (or never to be:
    /// its filler died).
    Uncommitted,
}

/// A temp or trash item, for `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Temp or trash.
    pub kind: ItemKind,
    /// Its path relative to the cache root, escaped for display.
    pub rel: String,
    /// Bytes of regular files in it.
    pub bytes: u64,
    /// Whether a live process owns it (false: an orphan gc will reclaim).
    pub live: bool,
}

/// One published entry, for `ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    /// The name stored at the cache root.
    pub stored_name: String,
    /// The key it maps to (`None` for a file adopted by `init` whose name is
    /// not a valid key).
    pub key: Option<Key>,
    /// Bytes of regular files in it.
    pub bytes: u64,
    /// When it was last filled, looked up or pinned.
    pub last_use: Option<SystemTime>,
}

/// A published entry as a scan of the cache root finds it.
pub(crate) struct Scanned {
    pub(crate) stored_name: String,
    pub(crate) key: Option<Key>,
    pub(crate) digest: String,
    pub(crate) bytes: u64,
    /// The entry's own mtime.
    pub(crate) modified: Option<SystemTime>,
    /// The mtime of its last-use stamp, if it has one.
    pub(crate) stamp: Option<SystemTime>,
}

/// A snapshot for `status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// Live holders of every lease, pin, fill and gc.
    pub holders: Vec<Holder>,
    /// Temps and trash, live or orphaned.
    pub items: Vec<Item>,
    /// Published entries.
    pub entries: usize,
    /// Bytes in published entries.
    pub entry_bytes: u64,
}

impl Cache {
    /// Runs [`Leased::gc`] under a shared lease of its own. Then, if the
    /// cache is idle (the exclusive lease can be had without waiting), it
    /// also deletes the lock files, gates and last-use stamps of entries
    /// that no longer exist: nobody can hold or wait on those while nobody
    /// holds the lease. A busy cache keeps them for a later gc.
    pub fn gc(&self, wait: Wait) -> Result<GcReport, Error> {
        self.gc_with(&GcOptions::default(), wait)
    }

    /// Like [`Cache::gc`], and then evicts entries as `options.limits` ask
    /// ([`Leased::gc_with`]). A dry run takes no lock and changes nothing:
    /// it reports the orphans gc would reclaim and the entries it would
    /// evict if none were in use.
    pub fn gc_with(&self, options: &GcOptions, wait: Wait) -> Result<GcReport, Error> {
        if options.dry_run {
            return self.gc_dry_run(&options.limits);
        }
        let deadline = Deadline::start(wait);
        let mut report = self.lease_by(LockMode::Shared, deadline)?.gc_by(&options.limits, deadline)?;
        self.reclaim_locks_if_idle(&mut report)?;
        Ok(report)
    }

    /// Deletes stale lock files and stamps if the exclusive lease can be had
    /// without waiting (see [`Cache::gc`]).
    pub(crate) fn reclaim_locks_if_idle(&self, report: &mut GcReport) -> Result<(), Error> {
        match self.lease_by(LockMode::Exclusive, Deadline::start(Wait::NoWait)) {
            Ok(idle) if idle.is_own() => self.reclaim_locks(report),
            Ok(_) | Err(Error::Busy { .. } | Error::LeaseConflict) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What gc with `limits` would do, found without taking a lock or
    /// writing anything.
    fn gc_dry_run(&self, limits: &Limits) -> Result<GcReport, Error> {
        let mut report = GcReport::default();
        for item in self.items()? {
            match (item.live, item.kind) {
                (true, _) => report.busy += 1,
                (false, ItemKind::Temp) => report.temps += 1,
                (false, ItemKind::Trash) => report.trash += 1,
                (false, ItemKind::Uncommitted) => report.uncommitted += 1,
            }
            if !item.live {
                report.bytes += item.bytes;
            }
        }
        self.evict(limits, None, &mut report.evict)?;
        Ok(report)
    }

    /// Deletes what `locks/` and `used/` hold for entries that do not exist.
    /// The caller holds the exclusive lease it took itself.
    fn reclaim_locks(&self, report: &mut GcReport) -> Result<(), Error> {
        let root = self.root();
        let live: std::collections::HashSet<String> =
            listing::list(root)?.into_iter().filter(|i| i.is_entry()).map(|i| i.digest).collect();
        // A change marker goes only with its entry: it is what keeps an
        // interrupted change from verifying as good.
        for dir in [LOCKS_DIR, USED_DIR, FAILED_DIR, layout::MANIFESTS_DIR, layout::CHANGING_DIR] {
            let names = match root.read_dir(dir) {
                Ok(names) => names,
                // `failed/` and `manifests/` are made on first need in
                // caches older than them.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", dir, e)),
            };
            for entry in names {
                let name = entry.name.to_string_lossy();
                let digest = name.split('.').next().unwrap_or_default();
                // Failure records only speak to waiters, and an idle cache
                // has none.
                if live.contains(digest) && dir != FAILED_DIR {
                    continue;
                }
                let rel = std::path::Path::new(dir).join(&entry.name);
                match root.remove_tree(&rel) {
                    Ok(()) => report.locks += 1,
                    Err(e) => report.failures.push(Failure::new(&rel.to_string_lossy(), e)),
                }
            }
        }
        Ok(())
    }
}

impl Leased {
    /// Reclaims temps of dead fills, trash of dead removes, leftover marker
    /// staging dirs and dead holder records. Runs beside fills, pins and
    /// removes without disturbing them; waits, as `wait` allows, for another
    /// gc. An item it cannot reclaim is reported in
    /// [`GcReport::failures`] and does not stop it.
    pub fn gc(&self, wait: Wait) -> Result<GcReport, Error> {
        self.gc_by(&Limits::default(), Deadline::start(wait))
    }

    /// Like [`Leased::gc`], and then evicts entries as `options.limits`
    /// ask: every entry unused for longer than `max_age`, then the least
    /// recently used until the entries' bytes are at most `max_size`. A
    /// victim that is pinned or being filled is skipped (its entry lock is
    /// only tried) and reported in [`EvictReport::skipped`], and the next
    /// one is taken. See [`Cache::gc_with`] for a dry run.
    pub fn gc_with(&self, options: &GcOptions, wait: Wait) -> Result<GcReport, Error> {
        if options.dry_run {
            return self.cache.gc_dry_run(&options.limits);
        }
        self.gc_by(&options.limits, Deadline::start(wait))
    }

    fn gc_by(&self, limits: &Limits, deadline: Deadline) -> Result<GcReport, Error> {
        let _gc = self.cache.lock(GC_LOCK, LockName::Gc, LockMode::Exclusive, deadline)?;
        self.gc_locked(limits)
    }

    /// The work of gc, under `gc.lock`, which the caller holds.
    pub(crate) fn gc_locked(&self, limits: &Limits) -> Result<GcReport, Error> {
        let _span = tracing::info_span!("gc").entered();
        let cache = &self.cache;
        let root = cache.root();
        let mut report = GcReport::default();
        cache.reclaim_orphans(&mut report)?;
        cache.reclaim_uncommitted(&mut report)?;
        // A staging dir for the marker is only ever useful to the process
        // that is about to rename it; once the marker exists, that rename
        // fails and its creator discards it anyway.
        for item in listing::list(root)?.into_iter().filter(|i| i.class == Class::MarkerStaging) {
            let name = item.lossy.as_str();
            {
                let bytes = root.usage(name).map(|u| u.bytes).unwrap_or(0);
                // Its creator, having lost the marker race, may be deleting
                // it at the same time.
                match root.remove_tree(name) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => report.failures.push(Failure::new(name, e)),
                    _ => report.bytes += bytes,
                }
            }
        }
        // An upgrade that wrote the new format but was stopped before it
        // removed its journal left only the plan: every held item had been
        // moved out before the format was written, and no upgrade runs
        // beside a gc (it holds the exclusive lease).
        if let Ok(Some(_)) = root.kind(layout::UPGRADE_DIR) {
            let _ = root.remove_tree(layout::UPGRADE_DIR);
        }
        report.records = holder::reap_dead(root);
        cache.reclaim_fill_logs(&mut report);
        cache.evict(limits, Some(self), &mut report.evict)?;
        cache.reclaim_quarantine(&mut report);
        Ok(report)
    }
}

impl Cache {
    /// Deletes quarantine items older than [`crate::QUARANTINE_KEEP`], by
    /// their modification time (set when `verify` filled them). Nothing
    /// else uses an item once it is made, so no lock is needed; a younger
    /// item is being made or kept for inspection.
    fn reclaim_quarantine(&self, report: &mut GcReport) {
        let root = self.root();
        let Ok(items) = root.read_dir(layout::QUARANTINE_DIR) else { return };
        let now = crate::sys::now();
        for entry in items {
            let path = std::path::Path::new(layout::QUARANTINE_DIR).join(&entry.name);
            let old = root.stat(&path).ok().flatten().and_then(|m| m.modified).and_then(|t| now.duration_since(t).ok());
            if old.is_none_or(|age| age < crate::QUARANTINE_KEEP) {
                continue;
            }
            let bytes = root.usage(&path).map(|u| u.bytes).unwrap_or(0);
            match root.remove_tree(&path) {
                Ok(()) => {
                    report.bytes += bytes;
                    report.quarantined += 1;
                }
                Err(e) => report.failures.push(Failure::new(&path.to_string_lossy(), e)),
            }
        }
    }
}

impl Cache {
    /// Deletes every temp and trash item whose owner is provably dead (see
    /// `probe.rs`); counts what it did, and what it could not do, into
    /// `report`.
    pub(crate) fn reclaim_orphans(&self, report: &mut GcReport) -> Result<(), Error> {
        self.reclaim_temps(report)?;
        // The trash goes as a reclaimer deletes it: claimed, in parallel.
        let mut reclaimed = self.reclaim(true)?;
        report.trash += reclaimed.items;
        report.bytes += reclaimed.bytes;
        report.busy += reclaimed.busy;
        report.failures.append(&mut reclaimed.failures);
        Ok(())
    }

    /// Deletes every temp whose owner is provably dead.
    pub(crate) fn reclaim_temps(&self, report: &mut GcReport) -> Result<(), Error> {
        let root = self.root();
        for (dir, kind) in [(TMP_DIR, ItemKind::Temp)] {
            for entry in root.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                let rel = format!("{dir}/{}", entry.name.to_string_lossy());
                match owner_alive(root, dir, &entry) {
                    Ok(true) => {
                        report.busy += 1;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        report.failures.push(Failure::new(&rel, format!("cannot tell whether its owner lives: {e}")));
                        continue;
                    }
                }
                let path = std::path::Path::new(dir).join(&entry.name);
                let bytes = root.usage(&path).map(|u| u.bytes).unwrap_or(0);
                if let Err(e) = root.remove_tree(&path) {
                    report.failures.push(Failure::new(&rel, e));
                    continue;
                }
                report.bytes += bytes;
                tracing::info!(item = %rel, "reclaimed orphan");
                match kind {
                    ItemKind::Temp => report.temps += 1,
                    ItemKind::Trash | ItemKind::Uncommitted => report.trash += 1,
                }
            }
        }
        Ok(())
    }

    /// The names at the root that are uncommitted in-place entries.
    fn uncommitted_names(&self) -> Result<Vec<String>, Error> {
        Ok(listing::list(self.root())?.into_iter().filter(|i| i.class == Class::Uncommitted).map(|i| i.lossy).collect())
    }

    /// Deletes every uncommitted in-place entry whose filler is dead. It
    /// takes the entry lock without waiting, so that no new fill of the key
    /// can start meanwhile (a new fill reuses the name, unlike a temp).
    fn reclaim_uncommitted(&self, report: &mut GcReport) -> Result<(), Error> {
        for name in self.uncommitted_names()? {
            let Some(key) = Key::from_stored_name(&name) else { continue };
            let _lock = match self.entry_lock(&key, LockMode::Exclusive, Deadline::start(Wait::NoWait)) {
                Ok(lock) => lock,
                Err(Error::Busy { .. }) => {
                    report.busy += 1;
                    continue;
                }
                Err(e) => {
                    report.failures.push(Failure::new(&name, e));
                    continue;
                }
            };
            let bytes = self.root().usage(&name).map(|u| u.bytes).unwrap_or(0);
            match self.remove_uncommitted(&key) {
                Ok(true) => {
                    report.uncommitted += 1;
                    report.bytes += bytes;
                }
                Ok(false) => {}
                Err(e) => report.failures.push(Failure::new(&name, e)),
            }
        }
        Ok(())
    }

    /// Every published entry, with size and last use. Entries being built
    /// in place are not published yet; `status` lists them.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, Error> {
        let _span = tracing::info_span!("entries").entered();
        Ok(self
            .scan_entries()?
            .into_iter()
            .map(|e| EntryInfo {
                stored_name: e.stored_name,
                key: e.key,
                bytes: e.bytes,
                last_use: e.stamp.or(e.modified),
            })
            .collect())
    }

    /// Calls `f` with every published entry, with size and last use, one
    /// at a time in the order the cache root lists them (not sorted, unlike
    /// [`Cache::entries`]), holding none of them: the memory it takes does
    /// not grow with the number of entries. The first error `f` returns
    /// stops it.
    ///
    /// # Errors
    /// The root cannot be listed, or `f` failed.
    pub fn each_entry<E: From<Error>>(&self, mut f: impl FnMut(EntryInfo) -> Result<(), E>) -> Result<(), E> {
        let _span = tracing::info_span!("each_entry").entered();
        let root = self.root();
        listing::for_each(root, |item| {
            if item.class != Class::Committed {
                return Ok(());
            }
            let usage = root.usage(&item.name).unwrap_or_default();
            let stamp = root.modified(&layout::used_marker(&item.digest)).ok().flatten();
            f(EntryInfo {
                stored_name: item.lossy,
                key: item.key,
                bytes: usage.bytes,
                last_use: stamp.or(usage.modified),
            })
        })
    }

    /// Calls `f` with the name of every entry at the root as people see it
    /// (the key, or the stored name of an adopted file without one), in
    /// the order the root lists them, without looking at the entries
    /// themselves: one read of the root, for a table's column width. Names
    /// of uncommitted entries are included.
    ///
    /// # Errors
    /// The root cannot be listed.
    pub fn each_entry_name(&self, mut f: impl FnMut(&str, Option<&Key>)) -> Result<(), Error> {
        self.root().for_each_in(
            "",
            |e| Error::io("list", ".", e),
            |entry| {
                let lossy = entry.name.to_string_lossy();
                if !listing::is_internal(&lossy) {
                    f(&lossy, entry.name.to_str().and_then(Key::from_stored_name).as_ref());
                }
                Ok(())
            },
        )
    }

    /// Every published entry with its size, mtime and last-use stamp, for
    /// `ls` and eviction alike.
    pub(crate) fn scan_entries(&self) -> Result<Vec<Scanned>, Error> {
        let root = self.root();
        let mut out = Vec::new();
        for item in listing::list(root)?.into_iter().filter(|i| i.class == Class::Committed) {
            let usage = root.usage(&item.name).unwrap_or_default();
            let stamp = root.modified(&layout::used_marker(&item.digest)).ok().flatten();
            out.push(Scanned {
                stored_name: item.lossy,
                key: item.key,
                digest: item.digest,
                bytes: usage.bytes,
                modified: usage.modified,
                stamp,
            });
        }
        Ok(out)
    }

    /// Who holds what, and what is left over. Takes no lock that could make
    /// anyone wait: liveness is probed with try-locks only.
    pub fn status(&self) -> Result<Status, Error> {
        let _span = tracing::info_span!("status").entered();
        let root = self.root();
        // Counted as they are listed, never held: memory that does not grow
        // with the entries.
        let (mut entries, mut entry_bytes) = (0, 0);
        self.each_entry(|e| {
            entries += 1;
            entry_bytes += e.bytes;
            Ok::<(), Error>(())
        })?;
        Ok(Status { holders: holder::live_holders(root, None), items: self.items()?, entries, entry_bytes })
    }

    /// Every temp and trash item, and whether its owner lives, by probes
    /// that never wait and create nothing.
    fn items(&self) -> Result<Vec<Item>, Error> {
        let root = self.root();
        let mut items = Vec::new();
        for (dir, kind) in [(TMP_DIR, ItemKind::Temp), (TRASH_DIR, ItemKind::Trash)] {
            for entry in root.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                if dir == TRASH_DIR && crate::layout::is_claim(&entry.name.to_string_lossy()) {
                    continue;
                }
                // Unknown reads as alive: status never calls something an
                // orphan that gc would not reclaim.
                let live = owner_alive(root, dir, &entry).unwrap_or(true);
                let path = std::path::Path::new(dir).join(&entry.name);
                let bytes = root.usage(&path).map(|u| u.bytes).unwrap_or(0);
                let rel = crate::display::escape(&path.to_string_lossy());
                items.push(Item { kind, rel, bytes, live });
            }
        }
        // The root is read a name at a time: only the uncommitted are kept.
        listing::for_each(root, |item| {
            if item.class == Class::Uncommitted {
                let live = crate::probe::filler_alive(root, &item.digest).unwrap_or(true);
                let bytes = root.usage(&item.name).map(|u| u.bytes).unwrap_or(0);
                items.push(Item { kind: ItemKind::Uncommitted, rel: crate::display::escape(&item.lossy), bytes, live });
            }
            Ok::<(), Error>(())
        })?;
        Ok(items)
    }
}
