//! This defines [`Cache::gc`], which reclaims what killed processes left
//! behind, and the read-only views `entries` and `status`.
//!
//! gc deletes a temp `tmp/<d>.<r>` or a trash item `trash/<d>.<r>` only
//! when it can prove its owner dead: it holds the exclusive entry lock of
//! digest `d` (fillers and removers hold that lock for as long as their temp
//! or trash exists) and, for a temp, can take its owner lock. Published
//! entries, pinned or not, are never touched by gc.

use std::time::SystemTime;

use crate::cache::{Cache, Leased, is_internal};
use crate::error::Error;
use crate::holder::{self, Holder};
use crate::key::Key;
use crate::layout::{self, FAILED_DIR, GC_LOCK, LOCKS_DIR, TMP_DIR, TRASH_DIR, USED_DIR};
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
    /// Lock files, gates and last-use stamps of absent entries deleted
    /// (only when the cache was idle: see [`Cache::gc`]).
    pub locks: usize,
    /// What could not be reclaimed (the next gc retries).
    pub failures: Vec<Failure>,
    /// Quarantined entries deleted (older than [`crate::QUARANTINE_KEEP`]).
    pub quarantined: usize,
}

/// Where a leftover lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ItemKind {
    /// A fill's private temp directory.
    Temp,
    /// An entry renamed aside for deletion.
    Trash,
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
        let deadline = Deadline::start(wait);
        let mut report = self.lease_by(LockMode::Shared, deadline)?.gc_by(deadline)?;
        match self.lease_by(LockMode::Exclusive, Deadline::start(Wait::NoWait)) {
            Ok(idle) if idle.is_own() => self.reclaim_locks(&mut report)?,
            Ok(_) | Err(Error::Busy { .. } | Error::LeaseConflict) => {}
            Err(e) => return Err(e),
        }
        Ok(report)
    }

    /// Deletes what `locks/` and `used/` hold for entries that do not exist.
    /// The caller holds the exclusive lease it took itself.
    fn reclaim_locks(&self, report: &mut GcReport) -> Result<(), Error> {
        let root = self.root();
        let live: std::collections::HashSet<String> = root
            .read_dir("")
            .map_err(|e| Error::io("list", ".", e))?
            .iter()
            .filter_map(|e| e.name.to_str().filter(|n| !is_internal(n)).map(crate::key::digest_of))
            .collect();
        for dir in [LOCKS_DIR, USED_DIR, FAILED_DIR, layout::MANIFESTS_DIR] {
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
        self.gc_by(Deadline::start(wait))
    }

    fn gc_by(&self, deadline: Deadline) -> Result<GcReport, Error> {
        let _span = tracing::info_span!("gc").entered();
        let cache = &self.cache;
        let _gc = cache.lock(GC_LOCK, LockName::Gc, LockMode::Exclusive, deadline)?;
        let root = cache.root();
        let mut report = GcReport::default();
        cache.reclaim_orphans(&mut report)?;
        // A staging dir for the marker is only ever useful to the process
        // that is about to rename it; once the marker exists, that rename
        // fails and its creator discards it anyway.
        for entry in root.read_dir("").map_err(|e| Error::io("list", ".", e))? {
            let staging = entry.kind == crate::sys::FileKind::Dir;
            if let Some(name) = entry.name.to_str().filter(|n| staging && layout::is_marker_staging(n)) {
                let bytes = root.usage(name).map(|u| u.bytes).unwrap_or(0);
                // Its creator, having lost the marker race, may be deleting
                // it at the same time.
                match root.remove_tree(name) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => report.failures.push(Failure::new(name, e)),
                    _ => report.bytes += bytes,
                }
            }
        }
        report.records = holder::reap_dead(root);
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
        let root = self.root();
        for (dir, kind) in [(TMP_DIR, ItemKind::Temp), (TRASH_DIR, ItemKind::Trash)] {
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
                    ItemKind::Trash => report.trash += 1,
                }
            }
        }
        Ok(())
    }

    /// Every published entry, with size and last use.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, Error> {
        let _span = tracing::info_span!("entries").entered();
        let root = self.root();
        let mut out = Vec::new();
        for entry in root.read_dir("").map_err(|e| Error::io("list", ".", e))? {
            let name = entry.name.to_string_lossy().into_owned();
            if is_internal(&name) {
                continue;
            }
            let usage = root.usage(&entry.name).unwrap_or_default();
            let key = Key::from_stored_name(&name);
            let used = key.as_ref().and_then(|k| root.modified(&layout::used_marker(&k.digest())).ok().flatten());
            out.push(EntryInfo { stored_name: name, key, bytes: usage.bytes, last_use: used.or(usage.modified) });
        }
        Ok(out)
    }

    /// Who holds what, and what is left over. Takes no lock that could make
    /// anyone wait: liveness is probed with try-locks only.
    pub fn status(&self) -> Result<Status, Error> {
        let _span = tracing::info_span!("status").entered();
        let root = self.root();
        let mut items = Vec::new();
        for (dir, kind) in [(TMP_DIR, ItemKind::Temp), (TRASH_DIR, ItemKind::Trash)] {
            for entry in root.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                // Unknown reads as alive: status never calls something an
                // orphan that gc would not reclaim.
                let live = owner_alive(root, dir, &entry).unwrap_or(true);
                let path = std::path::Path::new(dir).join(&entry.name);
                let bytes = root.usage(&path).map(|u| u.bytes).unwrap_or(0);
                let rel = crate::display::escape(&path.to_string_lossy());
                items.push(Item { kind, rel, bytes, live });
            }
        }
        let entries = self.entries()?;
        Ok(Status {
            holders: holder::live_holders(root, None),
            items,
            entries: entries.len(),
            entry_bytes: entries.iter().map(|e| e.bytes).sum(),
        })
    }
}
