//! This defines reclaiming the trash: deleting what `remove`, `clean` and
//! the rest renamed aside into `trash/`, after they have returned.
//!
//! `remove` and `clean` return once their renames aside are durable; the
//! trash they leave is deleted later by [`Cache::reclaim`] (the CLI runs it
//! in a detached process, or in the command itself with `--wait`), or by
//! the next gc or clean. Any process can finish any reclaim: a trash item is
//! claimed by the exclusive lock `trash/<item>.lock`, held for as long as
//! it is being deleted, so a killed reclaimer's item is free for the next
//! one, and two reclaimers never delete the same item at once.
//!
//! Invariants:
//! - An item is deleted only when its owner is provably dead: nobody holds
//!   its entry lock exclusively (an inline deleter: a failed or cancelled
//!   fill, `verify --repair`) and its claim lock can be taken.
//! - A reclaim takes no lease and no entry lock: it never makes a fill, a
//!   pin, a `rm` or a `clean` wait.
//! - Deleting is by descriptor, never following a symlink, and stops at
//!   mount points (see `sys/walk.rs`); the children of each item are
//!   deleted on several threads at once.
//! - A claim lock is unlinked only by its holder, after its item is gone; a
//!   claim lock without an item (its holder killed in between) is deleted by
//!   whoever can take it.

use std::io;
use std::path::{Path, PathBuf};

use crate::cache::Cache;
use crate::error::Error;
use crate::gc::Failure;
use crate::layout::{self, CLAIM, TRASH_DIR, claim_lock, is_claim};
use crate::sys::{FileKind, Flock, LockFile, Root};

/// What [`Cache::reclaim`] deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Trash items deleted.
    pub items: usize,
    /// Bytes of regular files deleted (counted only when asked for).
    pub bytes: u64,
    /// Items left alone because a live process owns them (another
    /// reclaimer, or a process deleting its own).
    pub busy: usize,
    /// What could not be deleted (the next gc or reclaim retries).
    pub failures: Vec<Failure>,
}

/// A claimed item, while it is being deleted.
struct Claimed {
    name: String,
    rel: PathBuf,
    lock: LockFile,
    bytes: u64,
    error: Option<io::Error>,
}

impl Cache {
    /// Deletes every trash item whose owner is dead: what `remove` and
    /// `clean` left, and what killed processes left. Takes no lock anyone
    /// waits on (see the module's notes) and deletes on several threads.
    /// With `count_bytes`, it first adds up the bytes of what it deletes (a
    /// walk of each item, before it goes).
    ///
    /// # Errors
    /// Only if the trash cannot be listed; an item it cannot delete is
    /// reported in [`ReclaimReport::failures`] and does not stop it.
    pub fn reclaim(&self, count_bytes: bool) -> Result<ReclaimReport, Error> {
        let _span = tracing::info_span!("reclaim").entered();
        let root = self.root();
        let names: Vec<String> = root
            .read_dir(TRASH_DIR)
            .map_err(|e| Error::io("list", TRASH_DIR, e))?
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
        let mut report = ReclaimReport::default();
        // Each claimed item holds its claim lock open until it is gone, so
        // items are claimed and deleted a batch at a time: a trash of
        // 100,000 entries (a `clean`) must not need 100,000 descriptors.
        // Under a lower limit, a claim refused for want of descriptors ends
        // its batch early and is tried again in the next.
        let mut pending = names.iter().filter(|n| !is_claim(n)).peekable();
        while pending.peek().is_some() {
            let mut claimed = Vec::new();
            while claimed.len() < CLAIM_BATCH
                && let Some(name) = pending.peek()
            {
                match claim(root, name) {
                    Ok(Some(item)) => claimed.push(item),
                    Ok(None) => report.busy += 1,
                    Err(e) if crate::sys::is_out_of_descriptors(&e) && !claimed.is_empty() => break,
                    Err(e) => report.failures.push(Failure::new(&format!("{TRASH_DIR}/{name}"), e)),
                }
                pending.next();
            }
            delete_all(root, &mut claimed, count_bytes);
            for mut item in claimed {
                let shown = format!("{TRASH_DIR}/{}", item.name);
                if item.error.is_none()
                    && let Err(e) = root.remove_tree(&item.rel)
                {
                    item.error = Some(e);
                }
                match item.error {
                    None => {
                        report.items += 1;
                        report.bytes += item.bytes;
                        let _ = root.remove_file(claim_lock(&item.name));
                        tracing::info!(item = %shown, "reclaimed");
                    }
                    Some(e) => report.failures.push(Failure::new(&shown, e)),
                }
                drop(item.lock);
            }
        }
        // Claim locks whose holders were killed after deleting their item.
        for name in names.iter().filter(|n| is_claim(n)) {
            let item = &name[..name.len() - CLAIM.len()];
            if matches!(root.kind(Path::new(TRASH_DIR).join(item)), Ok(None)) {
                remove_stale_claim(root, name);
            }
        }
        Ok(report)
    }
}

/// How many trash items one reclaim claims (and holds a descriptor for)
/// at a time: few enough for a low `ulimit -n`, enough to keep the
/// deleting threads busy.
const CLAIM_BATCH: usize = 64;

/// Claims the trash item `name` for deleting: `None` if its owner lives.
fn claim(root: &Root, name: &str) -> io::Result<Option<Claimed>> {
    if let Some(digest) = layout::digest_of_item(name)
        && crate::probe::is_held(root, &layout::entry_lock(digest))?
    {
        return Ok(None);
    }
    let lock = root.open_lock(&claim_lock(name), true)?;
    if !lock.try_lock(Flock::Exclusive)? {
        return Ok(None);
    }
    let rel = Path::new(TRASH_DIR).join(name);
    if root.kind(&rel)?.is_none() {
        // Finished by another reclaimer since it was listed.
        let _ = root.remove_file(claim_lock(name));
        return Ok(None);
    }
    Ok(Some(Claimed { name: name.to_owned(), rel, lock, bytes: 0, error: None }))
}

/// Deletes a claim lock left without its item, if nobody holds it.
fn remove_stale_claim(root: &Root, name: &str) {
    let rel = format!("{TRASH_DIR}/{name}");
    match root.open_lock(&rel, false) {
        Ok(lock) => {
            if matches!(lock.try_lock(Flock::Exclusive), Ok(true)) {
                let _ = root.remove_file(&rel);
            }
        }
        // Not a regular file: nothing safecache made, nobody can hold it.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            let _ = root.remove_tree(&rel);
        }
        Err(_) => {}
    }
}

/// Deletes what is inside every claimed item (each child of a directory is
/// one task; the tasks run on several threads), recording each item's first
/// error and, with `count`, its bytes. The items themselves are left for
/// the caller.
///
/// Each directory item is opened once, and its children are deleted
/// relative to that descriptor (`unlinkat` for a file, the walk by
/// descriptor for a directory), as `rm -rf` does but on several threads:
/// a clean's trash holds every entry it removed.
#[cfg(not(target_os = "wasi"))]
fn delete_all(root: &Root, claimed: &mut [Claimed], count: bool) {
    let mut opened = Vec::new();
    for (i, item) in claimed.iter_mut().enumerate() {
        let kind = match root.kind(&item.rel) {
            Ok(kind) => kind,
            Err(e) => {
                item.error = Some(e);
                continue;
            }
        };
        if count {
            item.bytes = root.usage(&item.rel).map(|u| u.bytes).unwrap_or(0);
        }
        if kind != Some(FileKind::Dir) {
            continue;
        }
        match root.children(&item.rel) {
            Ok(Some(children)) => opened.push((i, children)),
            // Not a directory any more: the caller deletes it whole.
            Ok(None) => {}
            Err(e) => item.error = Some(e),
        }
    }
    let tasks: Vec<(usize, usize)> =
        opened.iter().enumerate().flat_map(|(o, (_, c))| (0..c.names.len()).map(move |k| (o, k))).collect();
    let results = run_parallel(&tasks, |&(o, k)| opened[o].1.remove(k));
    for (&(o, _), result) in tasks.iter().zip(results) {
        let item = &mut claimed[opened[o].0];
        if let Err(e) = result
            && item.error.is_none()
        {
            item.error = Some(e);
        }
    }
}

/// [`delete_all`] where there are no threads (WASI): each child by path.
#[cfg(target_os = "wasi")]
fn delete_all(root: &Root, claimed: &mut [Claimed], count: bool) {
    let mut tasks: Vec<(usize, PathBuf)> = Vec::new();
    for (i, item) in claimed.iter_mut().enumerate() {
        match root.kind(&item.rel) {
            Ok(Some(FileKind::Dir)) => match root.read_dir(&item.rel) {
                Ok(children) => tasks.extend(children.into_iter().map(|c| (i, item.rel.join(c.name)))),
                Err(e) => item.error = Some(e),
            },
            Ok(_) => {
                if count {
                    item.bytes = root.usage(&item.rel).map(|u| u.bytes).unwrap_or(0);
                }
            }
            Err(e) => item.error = Some(e),
        }
    }
    let one = |rel: &Path| -> (u64, io::Result<()>) {
        let bytes = if count { root.usage(rel).map(|u| u.bytes).unwrap_or(0) } else { 0 };
        (bytes, root.remove_tree(rel))
    };
    let results = run_parallel(&tasks, |(_, rel)| one(rel));
    for ((i, _), (bytes, result)) in tasks.iter().zip(results) {
        let item = &mut claimed[*i];
        item.bytes += bytes;
        if let Err(e) = result
            && item.error.is_none()
        {
            item.error = Some(e);
        }
    }
}

/// How many threads delete at once: deleting waits on the filesystem's
/// metadata more than on a CPU, so a few more than the cores.
fn threads() -> usize {
    (crate::parallel::cores() * 2).clamp(1, 16)
}

/// Runs `work` on every task, on [`threads`] threads where the platform
/// has them, and returns the results in the tasks' order.
fn run_parallel<T: Sync, R: Send>(tasks: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    crate::parallel::run(tasks, threads(), work)
}
