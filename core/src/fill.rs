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
//! An in-place fill ([`Leased::get_or_fill_in_place`]), for outputs that
//! record their own absolute path (a Python venv, a cargo target dir),
//! differs in steps 4 and 5: `out/` gets the uncommitted mark (the sticky
//! bit) while still private, and is renamed to the entry's name *before*
//! the fill runs, so the fill writes at the final path; readers take a
//! marked directory for an absent entry. To commit, it fsyncs the tree,
//! clears the mark, and fsyncs the entry and the root.
//!
//! Invariants: a reader sees an entry absent or complete; a failed,
//! cancelled or panicking fill publishes nothing and removes its temp (and, in place,
//! its uncommitted entry); a killed fill leaves only `tmp/d.<random>/`,
//! whose entry lock and owner lock are both free, and in place an
//! uncommitted entry whose entry lock is free, which is what gc checks
//! before it deletes them; the next fill of the key removes such an entry
//! too, under the entry lock.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::{Cache, Entry, Leased, Pin};
use crate::error::{Error, LowSpace};
use crate::failed;
use crate::holder;
use crate::key::Key;
use crate::layout::{self, OWNER_LOCK, TEMP_OUT};
use crate::lock::{Deadline, Held};
use crate::mode::{LockMode, LockName, Wait};
use crate::sys::{self, Flock, LockFile, Presence, Root};

/// Where a fill builds its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// In a private temp, published by one rename.
    Temp,
    /// At the entry's final path, marked uncommitted until committed.
    InPlace,
}

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
    digest: String,
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

    /// The fill's log, for its output: kept, bounded to its latest
    /// [`LOG_MAX`](crate::LOG_MAX) bytes, in the cache's metadata while the
    /// fill runs, so that the processes waiting for it can show its latest
    /// line ([`Cache::fill_log_tail`]); deleted when the fill ends, however
    /// it ends. Call it once per fill: each call starts the log afresh.
    pub fn log(&self) -> crate::FillLog<'_> {
        crate::FillLog::start(&self.root, &self.digest)
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
    /// What went wrong after the publishing rename (or, in place, after the
    /// commit), which therefore did not undo it: the entry is published and
    /// complete, but its publication may not survive a power cut (an fsync
    /// of the cache dir failed). Nothing is ever reported as a failure once
    /// the entry is visible, so that the outcome never contradicts what the
    /// cache holds.
    pub warning: Option<String>,
    /// When this call filled it: the bytes of the entry's regular files
    /// (their apparent sizes), as its manifest counted them.
    pub bytes: Option<u64>,
}

/// A temp directory owned by this fill; dropping it deletes it by handle.
struct Temp {
    root: Arc<Root>,
    rel: String,
    owner: LockFile,
    /// Left for gc rather than deleted (a cancelled fill: deleting a large
    /// output would delay the exit the cancel asked for). gc reclaims it
    /// once the entry lock and its owner lock are free.
    leave: bool,
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.leave {
            tracing::debug!(temp = %self.rel, "left for gc");
            return;
        }
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
        self.lease_by(LockMode::Shared, deadline)?.fill_by(key, deadline, Build::Temp, Flight::start(), fill)
    }

    /// Like [`Cache::get_or_fill`], but builds the entry at its final path;
    /// see [`Leased::get_or_fill_in_place`].
    pub fn get_or_fill_in_place<F, E>(&self, key: &Key, wait: Wait, fill: F) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Shared, deadline)?.fill_by(key, deadline, Build::InPlace, Flight::start(), fill)
    }

    /// Pins `key`, filling it first if it is absent, under a shared lease of
    /// its own; see [`Leased::pin_or_fill`].
    pub fn pin_or_fill<F, E>(&self, key: &Key, how: PinOrFill, fill: F) -> Result<PinnedFill, Error>
    where
        F: FnMut(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let deadline = Deadline::start(how.wait);
        self.lease_by(LockMode::Shared, deadline)?.pin_or_fill_by(key, deadline, how, fill)
    }
}

/// How [`Leased::pin_or_fill`] waits and builds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinOrFill {
    /// How long the whole call may wait for locks: the pin's and the
    /// fill's share this one budget.
    pub wait: Wait,
    /// Build an absent entry at its final path, as
    /// [`Leased::get_or_fill_in_place`] does, rather than in a private temp.
    pub in_place: bool,
}

/// The outcome of [`Leased::pin_or_fill`].
#[derive(Debug)]
#[must_use = "the pin is released when dropped"]
pub struct PinnedFill {
    /// The entry, pinned.
    pub pin: Pin,
    /// Whether this call ran the fill (false: the entry was there, or
    /// another process or thread filled it while this one waited).
    pub filled: bool,
    /// As [`Filled::warning`]: the fill published, but its publication may
    /// not survive a power cut.
    pub warning: Option<String>,
    /// As [`Filled::bytes`], for the fill this call ran.
    pub bytes: Option<u64>,
}

/// How many times [`Leased::pin_or_fill`] fills a key that a remove takes
/// away each time between the publish and the pin.
const PIN_OR_FILL_ROUNDS: usize = 3;

/// What a fill knows about the call it runs in: when the call started, and
/// whether it has already waited on the key's entry lock. Only a call that
/// waited shares the failure of the fill it waited for.
#[derive(Clone, Copy, Debug)]
struct Flight {
    started_ms: u64,
    waited: bool,
}

impl Flight {
    fn start() -> Flight {
        Flight { started_ms: failed::now_ms(), waited: false }
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
        self.fill_by(key, Deadline::start(wait), Build::Temp, Flight::start(), fill)
    }

    /// Like [`Leased::get_or_fill`], but `fill` writes at the entry's final
    /// path ([`Cache::entry_path`]), for outputs that record their own
    /// absolute path and break when renamed: a Python venv's scripts, a
    /// cargo target dir's fingerprints.
    ///
    /// While the fill runs, and after it fails or dies, the directory at that
    /// path carries the uncommitted mark (its sticky bit): every lookup,
    /// pin and listing takes it for absent, and gc or the next fill of the
    /// key removes what a dead fill left. `fill` must not clear that bit;
    /// if it does, the fill fails and nothing is published. Single-flight
    /// and the errors are those of [`Leased::get_or_fill`].
    pub fn get_or_fill_in_place<F, E>(&self, key: &Key, wait: Wait, fill: F) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.fill_by(key, Deadline::start(wait), Build::InPlace, Flight::start(), fill)
    }

    /// Pins `key`'s entry, filling it first if it is absent: "pin, else
    /// fill, then pin" as one operation, with the fill's single flight and
    /// shared failure.
    ///
    /// Any wait on the key's entry lock counts as waiting for whoever held
    /// it, the pin's wait included: if the fill that held it fails, this
    /// call fails the same way ([`Error::PeerFillFailed`]) instead of
    /// running `fill` again, unless [`crate::Options::retry_failed`] is set.
    /// (A pin followed by a separate [`Leased::get_or_fill`] loses that: the
    /// pin waits out the failing fill, finds nothing, and the fill then
    /// takes a free lock and runs again, once per waiter.)
    ///
    /// A remove can take the entry between the publish and the pin; then
    /// the key is filled again, a few times at most, so `fill` may run more
    /// than once (hence `FnMut`). The pin holds the shared entry lock and
    /// this lease until it is dropped.
    ///
    /// # Errors
    /// Those of [`Leased::get_or_fill`] and [`Leased::pin`];
    /// [`Error::RemovedAfterFill`] if the entry was removed after each of
    /// its fills.
    pub fn pin_or_fill<F, E>(&self, key: &Key, how: PinOrFill, fill: F) -> Result<PinnedFill, Error>
    where
        F: FnMut(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.pin_or_fill_by(key, Deadline::start(how.wait), how, fill)
    }

    fn pin_or_fill_by<F, E>(
        &self,
        key: &Key,
        deadline: Deadline,
        how: PinOrFill,
        mut fill: F,
    ) -> Result<PinnedFill, Error>
    where
        F: FnMut(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _span = tracing::info_span!("pin_or_fill", %key).entered();
        let build = if how.in_place { Build::InPlace } else { Build::Temp };
        let mut flight = Flight::start();
        let mut filled = false;
        let mut warning = None;
        let mut bytes = None;
        for _ in 0..PIN_OR_FILL_ROUNDS {
            let (pin, waited) = self.pin_noting_wait(key, deadline)?;
            flight.waited |= waited;
            if let Some(pin) = pin {
                return Ok(PinnedFill { pin, filled, warning, bytes });
            }
            let done = self.fill_by(key, deadline, build, flight, &mut fill)?;
            filled |= done.filled;
            warning = done.warning.or(warning);
            bytes = done.bytes.or(bytes);
            // A fill that ran, or a publish this call waited for: either
            // way a failure recorded from now on is a later fill's.
            flight = Flight::start();
        }
        Err(Error::RemovedAfterFill { key: key.to_string(), times: PIN_OR_FILL_ROUNDS })
    }

    /// [`Leased::pin_by`], and whether it had to wait for the entry lock
    /// (or its queue).
    fn pin_noting_wait(&self, key: &Key, deadline: Deadline) -> Result<(Option<Pin>, bool), Error> {
        match self.pin_by(key, Deadline::start(Wait::NoWait)) {
            Err(Error::Busy { .. }) if !deadline.no_wait() => Ok((self.pin_by(key, deadline)?, true)),
            other => Ok((other?, false)),
        }
    }

    /// [`Leased::fill_unmapped`], with safecache's own writes failing on a
    /// full filesystem reported as [`Error::NoSpace`].
    fn fill_by<F, E>(
        &self,
        key: &Key,
        deadline: Deadline,
        build: Build,
        flight: Flight,
        fill: F,
    ) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cache = &self.cache;
        // Measured after the temp is removed: the space this cache can use.
        let space = || cache.root().space().map(|s| (s.available, s.inodes));
        self.fill_unmapped(key, deadline, build, flight, fill).map_err(|e| e.or_no_space(cache.path(), space))
    }

    fn fill_unmapped<F, E>(
        &self,
        key: &Key,
        deadline: Deadline,
        build: Build,
        flight: Flight,
        fill: F,
    ) -> Result<Filled, Error>
    where
        F: FnOnce(&FillDir<'_>) -> Result<(), E>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _span = tracing::info_span!("fill", %key).entered();
        let cache = &self.cache;
        let started_ms = flight.started_ms;
        // Whether this call waited for another fill of the key: only then
        // does that fill's failure become this call's.
        let mut waited = flight.waited;
        let _leader = loop {
            if let Some(entry) = cache.lookup(key)? {
                return Ok(Filled { entry, filled: false, warning: None, bytes: None });
            }
            match cache.inner.flights.join(key) {
                Ok(leader) => break leader,
                Err(follower) => {
                    waited = true;
                    if deadline.no_wait() || !follower.wait(deadline.end(), sys::monotonic) {
                        // The holder is this very process: another thread's fill.
                        let name = LockName::Entry(key.to_string());
                        let lock_file = layout::entry_lock(&key.digest());
                        let command = cache.inner.options.fill_command.as_deref();
                        let me = holder::this_process_as(&name, &lock_file, LockMode::Exclusive, command);
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
        let entry_lock = loop {
            match cache.fill_lock(key, Deadline::start(Wait::NoWait)) {
                Ok(lock) => break lock,
                Err(Error::Busy { .. }) if !deadline.no_wait() => {}
                Err(e) => return Err(e),
            }
            // Another process fills the key (or removes or changes the
            // entry). Its waiters wait as readers do, shared, so that they
            // all wake at once when it ends; then each looks for what it
            // left, and only one that finds neither an entry nor a failure
            // takes the lock to fill.
            waited = true;
            let shared = cache.entry_lock(key, LockMode::Shared, deadline)?;
            if let Some(done) = cache.after_peer(key, waited, started_ms)? {
                return done;
            }
            drop(shared);
        };
        if let Some(done) = cache.after_peer(key, waited, started_ms)? {
            return done;
        }
        let digest = key.digest();
        // Declared after the entry lock, so dropped before it: the fill's
        // log goes when the fill ends, however it ends.
        let _log = crate::fill_log::LogGuard { root: Arc::clone(cache.root()), digest: digest.clone() };
        // A dead in-place fill's uncommitted entry: under the entry lock
        // nobody can own it any more.
        cache.remove_uncommitted(key)?;
        cache.check_reserve(key)?;
        let mut temp = cache.create_temp(key)?;
        let mut out_rel = format!("{}/{TEMP_OUT}", temp.rel);
        let mut unfinished = None;
        if build == Build::InPlace {
            unfinished = Some(cache.move_into_place(key, &out_rel)?);
            out_rel = key.stored_name();
        }
        let dir = FillDir {
            path: cache.inner.path.join(&out_rel),
            rel: out_rel.clone(),
            root: Arc::clone(cache.root()),
            owner: &temp.owner,
            entry_lock: &entry_lock,
            digest: digest.clone(),
        };
        tracing::debug!(temp = %temp.rel, "filling");
        let created = cache.root().stat(&out_rel).map_err(|e| Error::io("inspect", &out_rel, e))?.and_then(|m| m.id);
        if let Err(e) = fill(&dir) {
            let source = e.into();
            // A cancelled fill is no failure to share: a waiter fills the key.
            if !failed::is_cancelled(&*source) {
                let command = cache.inner.options.fill_command.as_deref();
                failed::record(cache.root(), key.as_str(), &digest, &*source, command);
            }
            // Measured before the temp is removed, while the fill's output
            // still takes the space it took when it failed.
            return Err(Error::Fill { key: key.to_string(), source: cache.note_low_space(source) });
        }
        cache.check_unmoved(key, &dir, created)?;
        let published = match &mut unfinished {
            Some(unfinished) => cache.commit(key, unfinished),
            None => cache.publish(key, &out_rel),
        };
        let (warning, bytes) = match published {
            Ok(published) => published,
            Err(e) => {
                if matches!(e, Error::Cancelled { .. }) {
                    // Nothing is published; what was built is gc's to delete.
                    temp.leave = true;
                    if let Some(unfinished) = &mut unfinished {
                        unfinished.leave = true;
                    }
                }
                return Err(e);
            }
        };
        failed::clear(cache.root(), &digest);
        drop(temp);
        cache.note_use_checked(key);
        // Still under the entry lock: nothing can have removed it.
        Ok(Filled { entry: cache.entry_at(key), filled: true, warning, bytes: Some(bytes) })
    }
}

impl Cache {
    /// What a fill of `key` finds under its entry lock (either mode) before
    /// it runs: the entry a peer published, or, if this call waited for a
    /// peer's fill that failed since `started_ms`, that failure (this call
    /// fails the same way rather than run it again). `None`: it must fill.
    fn after_peer(&self, key: &Key, waited: bool, started_ms: u64) -> Result<Option<Result<Filled, Error>>, Error> {
        if let Some(entry) = self.lookup(key)? {
            tracing::debug!("published by a peer while waiting");
            return Ok(Some(Ok(Filled { entry, filled: false, warning: None, bytes: None })));
        }
        if waited && !self.inner.options.retry_failed {
            let failure = failed::read(self.root(), &key.digest()).filter(|f| f.at_ms >= started_ms);
            if let Some(failure) = failure {
                return Ok(Some(Err(Error::PeerFillFailed { key: key.to_string(), failure: Box::new(failure) })));
            }
        }
        Ok(None)
    }
}

/// Below this share of the filesystem (1/100), capped at
/// [`LOW_SPACE_CAP`], free space counts as low when a fill fails.
const LOW_SPACE_SHARE: u64 = 100;
/// Free space above this is never low, however large the filesystem.
const LOW_SPACE_CAP: u64 = 16 << 20;

impl Cache {
    /// Refuses to start a fill when the cache's filesystem has less free
    /// space than [`crate::Options::min_free`].
    fn check_reserve(&self, key: &Key) -> Result<(), Error> {
        let reserve = self.inner.options.min_free;
        match self.root().available_space() {
            Some(available) if reserve > 0 && available < reserve => {
                Err(Error::BelowReserve { key: key.to_string(), cache: self.inner.path.clone(), available, reserve })
            }
            _ => Ok(()),
        }
    }

    /// The fill's error, with a note of the free space left when the
    /// filesystem is full or nearly so (the likely cause), or when the error
    /// itself says the disk is full.
    fn note_low_space(
        &self,
        error: Box<dyn std::error::Error + Send + Sync>,
    ) -> Box<dyn std::error::Error + Send + Sync> {
        let Some(space) = self.root().space() else { return error };
        let mut chain = Some(&*error as &(dyn std::error::Error + 'static));
        let said_full = std::iter::from_fn(|| {
            let e = chain?;
            chain = e.source();
            Some(e)
        })
        .any(|e| e.downcast_ref::<std::io::Error>().is_some_and(sys::is_no_space));
        let low = space.available < (space.total / LOW_SPACE_SHARE).min(LOW_SPACE_CAP);
        if !low && !said_full {
            return error;
        }
        Box::new(LowSpace { cache: self.inner.path.clone(), available: space.available, error })
    }
}

/// An in-place entry that is not committed yet. Dropping it, on any path
/// out of the fill but the commit, renames the entry aside and deletes it;
/// the caller still holds the entry lock then.
struct Unfinished {
    root: Arc<Root>,
    stored: String,
    digest: String,
    committed: bool,
    /// Renamed aside into the trash but not deleted there (as
    /// [`Temp::leave`]).
    leave: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Still marked: readers take it for absent whether it is renamed
        // aside or deleted where it stands.
        let gone = crate::aside::set_aside(&self.root, &self.stored, &self.digest)
            .and_then(|aside| if self.leave { Ok(()) } else { crate::aside::delete(&self.root, &aside).map(drop) });
        if let Err(e) = gone {
            tracing::warn!(entry = %self.stored, error = %e, "could not remove an uncommitted entry; gc will");
        }
    }
}

impl Cache {
    /// Removes what a dead in-place fill of `key` left at the entry's name:
    /// a directory still marked uncommitted. The caller holds the exclusive
    /// entry lock, so no live fill owns it.
    pub(crate) fn remove_uncommitted(&self, key: &Key) -> Result<bool, Error> {
        let stored = key.stored_name();
        match self.root().presence(&stored).map_err(|e| Error::io("look up", &stored, e))? {
            Presence::Uncommitted => {}
            Presence::Absent | Presence::Committed(_) => return Ok(false),
        }
        tracing::info!(entry = %stored, "removing an uncommitted entry a dead fill left");
        drop(Unfinished {
            root: Arc::clone(self.root()),
            stored,
            digest: key.digest(),
            committed: false,
            leave: false,
        });
        Ok(true)
    }

    /// Marks the private, empty `out_rel` uncommitted and renames it to the
    /// entry's name, where the fill then writes. Marked while still private,
    /// so no reader ever sees it unmarked.
    fn move_into_place(&self, key: &Key, out_rel: &str) -> Result<Unfinished, Error> {
        let root = self.root();
        let stored = key.stored_name();
        root.set_uncommitted(out_rel, true).map_err(|e| Error::io("mark uncommitted", out_rel, e))?;
        // A filesystem that drops the sticky bit would publish the entry
        // the moment it is moved into place, half-built.
        if !root.set_uncommitted(out_rel, true).map_err(|e| Error::io("mark uncommitted", out_rel, e))? {
            let kept = std::io::Error::other(
                "the filesystem does not keep a directory's sticky bit, which marks an entry built in place as \
                 uncommitted; fill without --in-place, or put the cache on a local filesystem",
            );
            return Err(Error::io("mark uncommitted", out_rel, kept));
        }
        // The mark must be durable before the name is: after a power cut, a
        // name whose directory lost its mark would be a half entry that
        // looks committed.
        root.sync_dir(out_rel).map_err(|e| Error::io("sync", out_rel, e))?;
        root.rename_noreplace(out_rel, &stored).map_err(|e| Error::io("move into place", &stored, e))?;
        Ok(Unfinished { root: Arc::clone(root), stored, digest: key.digest(), committed: false, leave: false })
    }

    /// Commits an in-place entry: settles its tree (modes, durability: see
    /// [`Root::settle_tree`]), clears the mark,
    /// and makes the mode change and the name durable. A fill that cleared
    /// the mark itself may have been read half-built, so it fails. Once the
    /// mark is cleared the entry is published: a later error is returned as
    /// a warning (see [`Filled::warning`]), never as a failure.
    fn commit(&self, key: &Key, unfinished: &mut Unfinished) -> Result<(Option<String>, u64), Error> {
        let root = self.root();
        let stored = &unfinished.stored;
        // Still marked: a committed entry always has its manifest.
        let bytes = settle_and_write_manifest(root, key, stored, &self.inner.options.cancel)?;
        if !root.set_uncommitted(stored, false).map_err(|e| Error::io("commit", stored, e))? {
            return Err(Error::FillMoved {
                key: key.to_string(),
                path: self.entry_path(key),
                how: "lost its uncommitted mark (the directory's sticky bit) during the fill, so it may have \
                      been read before it was complete"
                    .to_owned(),
            });
        }
        unfinished.committed = true;
        let synced = root
            .sync_dir(stored)
            .map_err(|e| Error::io("sync", stored, e))
            .and_then(|()| root.sync_dir("").map_err(|e| Error::io("sync", ".", e)));
        tracing::info!(entry = %stored, "committed in place");
        Ok((after_publish(key, synced), bytes))
    }

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
            Ok(owner) => Ok(Temp { root: Arc::clone(root), rel, owner, leave: false }),
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

    /// Settles the filled tree (its modes, then its durability: see
    /// [`Root::settle_tree`]), then publishes it by one rename that never
    /// replaces anything. An error after that rename is returned as a
    /// warning (see [`Filled::warning`]): the entry is published.
    fn publish(&self, key: &Key, out_rel: &str) -> Result<(Option<String>, u64), Error> {
        let root = self.root();
        let stored = key.stored_name();
        // At the root the sticky bit means "not committed yet": a filler
        // that set it on its output (`rsync -a` of a sticky directory) must
        // not publish an entry every reader takes for absent and gc deletes.
        root.set_uncommitted(out_rel, false).map_err(|e| Error::io("publish", out_rel, e))?;
        let bytes = settle_and_write_manifest(root, key, out_rel, &self.inner.options.cancel)?;
        root.rename_noreplace(out_rel, &stored).map_err(|e| Error::io("publish", &stored, e))?;
        let synced = root.sync_dir("").map_err(|e| Error::io("sync", ".", e));
        tracing::info!(entry = %stored, "published");
        Ok((after_publish(key, synced), bytes))
    }
}

/// Settles the tree `out_rel` (its modes, then its durability: see
/// [`Root::settle_tree`]) and writes its manifest (hashed from the settled
/// tree, synced, renamed into `manifests/`, that directory synced); returns
/// the entry's bytes. Both are done before it returns, so before the
/// publishing rename, whatever fails.
///
/// Where the level syncs, natively (and not on tmpfs, where fsync is
/// free: [`Root::overlaps_syncs`]), the modes are settled first, then the
/// tree's fsyncs run on a thread of their own while this one hashes the
/// tree and writes and syncs the manifest: the hashing overlaps the fsyncs,
/// and the two sets of fsyncs can share the filesystem's journal commits.
/// The manifest is the same either way: it is built from the settled modes
/// and the bytes the filler wrote, which the syncs do not change.
fn settle_and_write_manifest(root: &Root, key: &Key, out_rel: &str, cancel: &crate::Cancel) -> Result<u64, Error> {
    let prepare = |e| Error::io("prepare for publishing", out_rel, e);
    #[cfg(not(target_os = "wasi"))]
    if root.overlaps_syncs() {
        root.settle_tree_modes(out_rel).map_err(prepare)?;
        return std::thread::scope(|s| {
            let synced =
                std::thread::Builder::new().name("safecache-sync".into()).spawn_scoped(s, || root.settle_tree(out_rel));
            let written = crate::manifest::write(root, key, out_rel, cancel);
            // No thread (out of threads or memory): sync here, after.
            let synced = match synced {
                Ok(thread) => thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => root.settle_tree(out_rel),
            };
            synced.map_err(prepare)?;
            written
        });
    }
    root.settle_tree(out_rel).map_err(prepare)?;
    crate::manifest::write(root, key, out_rel, cancel)
}

/// The warning for an error after `key` was published: the entry stays (it
/// is complete, its tree was synced before it was published), and only its
/// name may be lost in a power cut, which leaves it absent, never partial.
fn after_publish(key: &Key, synced: Result<(), Error>) -> Option<String> {
    let e = synced.err()?;
    tracing::warn!(%key, error = %e, "published, but could not make the publication durable");
    let mut message = format!("`{key}` is published, but its publication may not survive a power cut: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Some(message)
}
