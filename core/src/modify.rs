//! This defines [`Leased::modify`]: a published entry changed where it
//! stands, one holder at a time (a cargo target dir, a venv that pip
//! updates), and sealed again.
//!
//! The protocol for a key `k` with digest `d`:
//! 1. take the shared lease, then the *exclusive* entry lock
//!    `locks/d.lock` (pins hold it shared, so they wait for a change, and a
//!    change waits for them; changes queue one behind another);
//! 2. return `None` if `k` is not published (absent, or uncommitted);
//! 3. write the change marker `changing/d.json` (who, since when) by a
//!    synced temp renamed into place, and sync `changing/`: from here until
//!    the seal, the manifest no longer describes the entry, and the marker
//!    says so durably;
//! 4. the holder changes the entry at its path;
//! 5. seal: clear a stray uncommitted mark, settle the tree (modes, and
//!    fsync per the durability level, as a publish does), write a new
//!    manifest (synced), then delete the marker and sync `changing/`;
//! 6. release the entry lock, then the lease.
//!
//! Invariants:
//! - a change runs only under the exclusive entry lock, so no pin ever
//!   sees an entry mid-change, and no two changes overlap;
//! - the marker is durable before the first byte of the change, and is
//!   removed only after the new manifest is durable: an entry whose
//!   manifest does not describe it always carries a marker, so `verify`
//!   reports it as changed (unverified, never corrupt) and never
//!   quarantines it;
//! - a holder that dies, or drops its [`Modify`] without sealing, leaves
//!   the entry published as it left it, with the marker: the entry is
//!   *interrupted*, which is the one way a published entry can be other
//!   than complete (docs/PROTOCOL.md, "Invariants"); the next change sees
//!   [`Modify::interrupted`] and its seal clears the state;
//! - gc deletes a marker only when its entry is gone and the cache is idle;
//!   `remove` deletes it with the entry, under the exclusive entry lock.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Entry, Leased};
use crate::display::{self, escape};
use crate::error::Error;
use crate::holder;
use crate::key::Key;
use crate::layout::{self, CHANGING_DIR};
use crate::lock::{Deadline, Held};
use crate::mode::{LockMode, LockName, Wait};
use crate::sys::{Presence, Root};

/// The largest change marker read; a real one is a few hundred bytes.
const MAX_MARKER_LEN: u64 = 64 * 1024;

/// A change to an entry that was begun: who began it, and when. Read from
/// the change marker, so every field is untrusted (escaped for display).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changing {
    /// The key whose entry is being changed.
    pub key: String,
    /// The changing process's id.
    pub pid: u32,
    /// Its host name.
    pub host: String,
    /// What it runs, quoted as a shell would.
    pub command: String,
    /// When the change began, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

/// Escaped for a terminal: the fields come from a file on disk.
impl fmt::Display for Changing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = UNIX_EPOCH.checked_add(Duration::from_millis(self.since_ms));
        let ago = since.and_then(|t| crate::sys::now().duration_since(t).ok()).unwrap_or_default();
        write!(
            f,
            "by pid {} (`{}`) on {}, {} ago",
            self.pid,
            display::short_command(&self.command),
            escape(&self.host),
            display::duration(Duration::from_secs(ago.as_secs()))
        )
    }
}

/// An entry held for a change: the exclusive entry lock and the lease, until
/// it is sealed or dropped. Get one from [`Leased::modify`].
///
/// While it is held, the entry may be changed in place at
/// [`Modify::entry`]`().path()`. Dropping it without [`Modify::seal`]
/// leaves the entry *interrupted*: published as it is, with its change
/// marker, so `verify` reports it as changed rather than good, until a
/// later change seals it.
#[derive(Debug)]
#[must_use = "dropping a Modify without sealing it leaves the entry marked as changed"]
pub struct Modify {
    cache: Cache,
    key: Key,
    entry: Entry,
    interrupted: Option<Changing>,
    #[cfg_attr(target_os = "wasi", allow(dead_code))] // only read for `lock_fd`
    lock: Held,
    _lease: Arc<Option<Held>>,
}

impl Modify {
    /// The entry, at its final path.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The change before this one that was never sealed (its holder died,
    /// or dropped it): the entry may be as that change left it, half done.
    pub fn interrupted(&self) -> Option<&Changing> {
        self.interrupted.as_ref()
    }

    /// The descriptor whose flock is the exclusive entry lock. A process
    /// that inherits it keeps every pin and every other change of the key
    /// waiting for as long as it lives, so a killed holder's command can
    /// never overlap the next change or a reader.
    #[cfg(not(target_os = "wasi"))]
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.lock.fd()
    }

    /// Seals the change: makes the entry's tree durable as a publish does
    /// (per the cache's durability level), writes its new manifest, and
    /// only then removes the change marker, so `verify` checks the entry
    /// against the new manifest from now on. Releases the locks.
    ///
    /// # Errors
    /// An io error, or [`Error::Cancelled`] while hashing; the entry is then
    /// left marked as changed (nothing is lost: a later change seals it).
    /// An entry the change removed or replaced by something other than a
    /// directory cannot be sealed.
    pub fn seal(self) -> Result<(), Error> {
        let root = self.cache.root();
        let stored = self.key.stored_name();
        let _span = tracing::info_span!("seal", key = %self.key).entered();
        if root.kind(&stored).map_err(|e| Error::io("look up", &stored, e))? != Some(crate::sys::FileKind::Dir) {
            return Err(Error::io("seal", &stored, std::io::Error::other("the change removed or replaced the entry")));
        }
        // At the root the sticky bit means "not committed yet": a change
        // that set it would make the entry read as absent, and gc delete it.
        root.set_uncommitted(&stored, false).map_err(|e| Error::io("seal", &stored, e))?;
        root.settle_tree(&stored).map_err(|e| Error::io("prepare for sealing", &stored, e))?;
        crate::manifest::write(root, &self.key, &stored, &self.cache.inner.options.cancel)?;
        clear(root, &self.key.digest())?;
        tracing::info!(entry = %stored, "sealed");
        Ok(())
    }
}

impl Leased {
    /// Takes `key`'s entry for a change: its exclusive entry lock, so pins
    /// wait for the change to end and changes run one after another.
    /// Returns `None` (and holds nothing) if the entry is absent.
    ///
    /// Before it returns, the entry is durably marked as being changed; see
    /// [`Modify`] for what sealing, and not sealing, mean.
    ///
    /// # Errors
    /// [`Error::Busy`] if the lock could not be had within `wait` (a pin, a
    /// fill or another change holds it); an io error if the marker could
    /// not be written (nothing was changed then).
    pub fn modify(&self, key: &Key, wait: Wait) -> Result<Option<Modify>, Error> {
        self.modify_by(key, Deadline::start(wait))
    }

    fn modify_by(&self, key: &Key, deadline: Deadline) -> Result<Option<Modify>, Error> {
        let _span = tracing::info_span!("modify", %key).entered();
        let cache = &self.cache;
        let lock = cache.entry_lock(key, LockMode::Exclusive, deadline)?;
        let stored = key.stored_name();
        match cache.root().presence(&stored).map_err(|e| Error::io("look up", &stored, e))? {
            Presence::Committed(_) => {}
            Presence::Absent | Presence::Uncommitted => return Ok(None),
        }
        let digest = key.digest();
        let interrupted = read(cache.root(), &digest);
        mark(cache.root(), key, &digest)?;
        cache.note_use(key);
        Ok(Some(Modify {
            cache: cache.clone(),
            key: key.clone(),
            entry: cache.entry_at(key),
            interrupted,
            lock,
            _lease: Arc::clone(&self.hold),
        }))
    }
}

impl Cache {
    /// Takes `key`'s entry for a change under a shared lease of its own;
    /// see [`Leased::modify`].
    pub fn modify(&self, key: &Key, wait: Wait) -> Result<Option<Modify>, Error> {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Shared, deadline)?.modify_by(key, deadline)
    }

    /// The change marker of `key`'s entry, if it has one: a change is under
    /// way (its holder holds the exclusive entry lock), or one was
    /// interrupted.
    pub fn changing(&self, key: &Key) -> Option<Changing> {
        read(self.root(), &key.digest())
    }
}

/// Writes `changing/<d>.json` for this process, durably: a temp synced per
/// the durability level, renamed into place, and `changing/` synced. The
/// caller holds the exclusive entry lock.
fn mark(root: &Arc<Root>, key: &Key, digest: &str) -> Result<(), Error> {
    let me = holder::this_process(&LockName::Entry(key.to_string()), "", LockMode::Exclusive);
    let marker = Changing {
        key: key.to_string(),
        pid: me.pid,
        host: me.host,
        command: me.command,
        since_ms: crate::failed::now_ms(),
    };
    let bytes = serde_json::to_vec(&marker).map_err(|e| Error::io("encode", CHANGING_DIR, std::io::Error::other(e)))?;
    crate::manifest::ensure_dir(root, CHANGING_DIR)?;
    // `changing/` is made on first need: its own name must be durable
    // before a marker in it can be (found by the simulation, power-modify
    // seed 134: a cut lost the new directory, marker and all, and left a
    // half-changed entry unmarked). Whoever made it, sync its parent.
    root.sync_dir(layout::MARKER_DIR).map_err(|e| Error::io("sync", layout::MARKER_DIR, e))?;
    // A temp name: gc reclaims one a killed holder leaves, once the entry
    // lock is free.
    let staging = layout::temp(digest, &layout::random_suffix()?);
    let dest = layout::changing_marker(digest);
    root.write_new(&staging, &bytes).map_err(|e| Error::io("write", &staging, e))?;
    if let Err(e) = root.rename(&staging, &dest) {
        let _ = root.remove_file(&staging);
        return Err(Error::io("write", dest, e));
    }
    root.sync_dir(CHANGING_DIR).map_err(|e| Error::io("sync", CHANGING_DIR, e))
}

/// Deletes `changing/<d>.json` and syncs `changing/`. The caller holds the
/// exclusive entry lock.
pub(crate) fn clear(root: &Root, digest: &str) -> Result<(), Error> {
    let rel = layout::changing_marker(digest);
    match root.remove_file(&rel) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io("remove", rel, e)),
        _ => {}
    }
    root.sync_dir(CHANGING_DIR).map_err(|e| Error::io("sync", CHANGING_DIR, e))
}

/// The change marker of `digest`. A marker that is there but unreadable (a
/// symlink, garbage, too long) still means "changed": it reads as a change
/// by nobody known, so an entry is never taken for sealed because its
/// marker was damaged.
pub(crate) fn read(root: &Root, digest: &str) -> Option<Changing> {
    let rel = layout::changing_marker(digest);
    match root.read(&rel, MAX_MARKER_LEN) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| unknown())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(unknown()),
    }
}

fn unknown() -> Changing {
    Changing {
        key: String::new(),
        pid: 0,
        host: "an unknown host".to_owned(),
        command: "an unreadable change marker".to_owned(),
        since_ms: 0,
    }
}
