//! This defines [`Cache::gc`], which reclaims what killed processes left
//! behind, and the read-only views `entries` and `status`.
//!
//! gc deletes a temp `tmp/<d>.<r>` or a trash item `trash/<d>.<r>` only
//! when it can prove its owner dead: it holds the exclusive entry lock of
//! digest `d` (fillers and removers hold that lock for as long as their temp
//! or trash exists) and, for a temp, can take its owner lock. Published
//! entries, pinned or not, are never touched by gc.

use std::time::SystemTime;

use crate::cache::{Cache, is_internal};
use crate::error::Error;
use crate::holder::{self, Holder};
use crate::key::Key;
use crate::layout::{self, GC_LOCK, MARKER_STAGING_PREFIX, TMP_DIR, TRASH_DIR};
use crate::lock::{Deadline, LockMode, LockName, Wait, try_probe};
use crate::sys::FileKind;

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
    /// Orphans that could not be deleted (logged; the next gc retries).
    pub failed: usize,
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
    /// Its path relative to the cache root.
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
    /// Reclaims temps of dead fills, trash of dead removes, leftover marker
    /// staging dirs and dead holder records. Runs beside fills, pins and
    /// removes without disturbing them; waits, as `wait` allows, for another
    /// gc.
    pub fn gc(&self, wait: Wait) -> Result<GcReport, Error> {
        let _span = tracing::info_span!("gc").entered();
        let deadline = Deadline::start(wait);
        let _lease = self.op_lease(LockMode::Shared, deadline)?;
        let _gc = self.lock(GC_LOCK, LockName::Gc, LockMode::Exclusive, deadline)?;
        let root = self.root();
        let mut report = GcReport::default();
        self.reclaim_orphans(&mut report)?;
        // A staging dir for the marker is only ever useful to the process
        // that is about to rename it; once the marker exists, that rename
        // fails and its creator discards it anyway.
        for entry in root.read_dir("").map_err(|e| Error::io("list", ".", e))? {
            if let Some(name) = entry.name.to_str().filter(|n| n.starts_with(MARKER_STAGING_PREFIX)) {
                report.bytes += root.usage(name).map(|u| u.bytes).unwrap_or(0);
                // Its creator, having lost the marker race, may be deleting
                // it at the same time.
                match root.remove_tree(name) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("delete", name, e)),
                    _ => {}
                }
            }
        }
        report.records = holder::reap_dead(root);
        Ok(report)
    }

    /// Deletes every temp and trash item whose owner is provably dead (see
    /// the module docs); counts what it did into `report`.
    pub(crate) fn reclaim_orphans(&self, report: &mut GcReport) -> Result<(), Error> {
        let root = self.root();
        for (dir, kind) in [(TMP_DIR, ItemKind::Temp), (TRASH_DIR, ItemKind::Trash)] {
            for entry in root.read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
                let Some(name) = entry.name.to_str() else { continue };
                let Some(digest) = layout::digest_of_item(name) else { continue };
                let rel = format!("{dir}/{name}");
                // The entry lock proves no filler or remover of this digest is
                // alive: they hold it for as long as their temp or trash exists.
                let Some(_entry) = try_probe(root, &layout::entry_lock(digest), LockMode::Exclusive, true)? else {
                    report.busy += 1;
                    continue;
                };
                let _owner = if kind == ItemKind::Temp && entry.kind == FileKind::Dir {
                    let owner = format!("{rel}/owner.lock");
                    match root.kind(&owner) {
                        Ok(Some(_)) => match try_probe(root, &owner, LockMode::Exclusive, false)? {
                            Some(lock) => Some(lock),
                            None => {
                                report.busy += 1;
                                continue;
                            }
                        },
                        _ => None,
                    }
                } else {
                    None
                };
                let bytes = root.usage(&rel).map(|u| u.bytes).unwrap_or(0);
                // One undeletable orphan must not stop gc from reclaiming
                // the others.
                if let Err(e) = root.remove_tree(&rel) {
                    tracing::warn!(item = %rel, error = %e, "could not delete orphan");
                    report.failed += 1;
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
                let name = entry.name.to_string_lossy();
                let rel = format!("{dir}/{name}");
                let live = match (kind, layout::digest_of_item(&name)) {
                    // A fill holds its owner lock exclusively.
                    (ItemKind::Temp, _) => is_held(root, &format!("{rel}/owner.lock")),
                    // A remover holds the entry lock exclusively.
                    (ItemKind::Trash, Some(d)) => is_held(root, &layout::entry_lock(d)),
                    (ItemKind::Trash, None) => false,
                };
                let bytes = root.usage(&rel).map(|u| u.bytes).unwrap_or(0);
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

/// Whether someone holds the lock at `rel`, probed with a shared try-lock
/// that creates nothing. A missing or unreadable lock file is not held.
fn is_held(root: &crate::sys::Root, rel: &str) -> bool {
    match root.open_lock(rel, false) {
        Ok(file) => matches!(file.try_lock(LockMode::Shared), Ok(false)),
        Err(_) => false,
    }
}
