//! This defines [`Cache`]: opening (and initializing) a cache directory, the
//! cache-wide lease, lookups and pins.
//!
//! Invariants kept here (the marker's own are in `format.rs`):
//! - every mutating operation holds the lease (shared, or exclusive for
//!   `clean`) for its whole duration, and takes it before any entry lock, so
//!   locks are always taken in the order lease → gc → entry → owner.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Config};
use crate::durability::Durability;
use crate::error::Error;
use crate::format::{self as marker, Described, Open, check_trust, ensure_marker, write_cachedir_tag};
use crate::key::Key;
use crate::layout::{self, FORMAT_VERSION, LEASE_LOCK};
use crate::lock::{self, Deadline, Held, WaitObserver};
use crate::mode::{LockMode, LockName, Wait};
use crate::once_map::OnceMap;
use crate::sys::{self, Presence, Root};

/// How precisely the cache knows an entry's last use: a use writes a new
/// stamp only if the old one is at least this old, so an entry costs at most
/// 24 stamp writes a day however hot it is (Go bumps its mtimes hourly too;
/// cargo batches at 300 s). Eviction works in days, and counts this hour in
/// an entry's favour (docs/PROTOCOL.md, "Last use and eviction").
pub const USE_RESOLUTION: Duration = Duration::from_secs(3600);

/// How a [`Cache`] behaves beyond its directory.
#[derive(Clone, Default)]
pub struct Options {
    /// A lease this process already holds through its parent (`cargo
    /// safecache run` exports one).
    ///
    /// Under an inherited shared lease, shared work still takes a shared
    /// lease of its own (shared leases never block each other, and the
    /// parent may die first), and exclusive work fails with
    /// [`Error::LeaseConflict`] instead of deadlocking on its own parent.
    /// Under an inherited exclusive lease nothing takes the lease: the parent
    /// holds it for the whole tree of processes.
    pub inherited_lease: Option<LockMode>,
    /// Told when an operation starts to block on a lock.
    pub on_wait: Option<WaitObserver>,
    /// The process ids of this process's ancestors, as far as the front end
    /// knows them (its parent chain; the `cargo safecache run`s it runs
    /// under). A busy lock whose live holder record names one of them on
    /// this host is never waited for: that ancestor keeps the lock until
    /// this process ends, so the operation fails at once with
    /// [`Error::HeldByAncestor`] instead of deadlocking (`run --key k --
    /// safecache rm k`).
    pub ancestors: crate::Ancestors,
    /// Open a cache even if another user owns it or others can write to it
    /// (see [`Error::UntrustedCache`]). Only for a cache whose every writer
    /// you trust as much as yourself.
    pub allow_untrusted: bool,
    /// Run a fill even when the fill this call waited for has just failed.
    /// Without it, the waiters of a failed fill fail the same way
    /// ([`Error::PeerFillFailed`]) instead of running it again one after
    /// another.
    pub retry_failed: bool,
    /// The free space, in bytes, that a fill leaves on the cache's
    /// filesystem: a fill does not start (its command is not run) when the
    /// filesystem has less than this available, and fails with
    /// [`Error::BelowReserve`]. 0, the default, starts fills however full the
    /// filesystem is. `gc`, `rm` and `clean` need no new space, so this is
    /// not room kept for them; it keeps a fill from running a long command
    /// that can only fail, and leaves the rest of the system a little room.
    pub min_free: u64,
    /// Run an automatic gc, at most once per [`AutoGc::every`](crate::AutoGc::every), when the
    /// front end calls [`Cache::auto_gc`] after its real work. `None` (the
    /// library's default): never.
    pub auto_gc: Option<crate::limits::AutoGc>,
    /// The durability level for this handle's operations, overriding the
    /// cache's own (its config file, or [`Durability::Full`] without one).
    /// With it set, the config file is not read at open.
    pub durability: Option<Durability>,
    /// Check an entry against its manifest before `get`, `pin` or
    /// `get_or_fill` returns it (hashing every file: costly for large
    /// entries). A corrupt entry is quarantined and reads as absent, so
    /// `get_or_fill` fills it again; if it is in use and cannot be set
    /// aside at once, the call fails with [`Error::Corrupt`]. An entry
    /// that cannot be checked (no manifest, a manifest that cannot be tied
    /// to it, a file that cannot be read) is never returned: the call fails
    /// with [`Error::Unverifiable`] and nothing is moved.
    pub verify_on_read: bool,
    /// How long opening a cache of an older format waits for the exclusive
    /// lease it upgrades the cache under (until every process of an older
    /// build has let go of it). The default waits forever.
    pub upgrade_wait: Wait,
    /// Stops hashing (a fill's manifest, a verify) at its next check once
    /// cancelled: a fill then publishes nothing and fails with
    /// [`Error::Cancelled`]. The CLI sets it from SIGINT, SIGTERM and
    /// SIGHUP.
    pub cancel: crate::Cancel,
    /// What this handle's fills are named by, in the holder records of their
    /// entry locks (and of the queue they wait in) and in their failure
    /// records: the fill's own command (`use --fill 'SH'` gives `sh -c SH`),
    /// where the rest of the process's locks (the lease, pins) keep the
    /// process-wide name of [`crate::set_process_command`]. `None`: the
    /// process-wide name everywhere.
    pub fill_command: Option<Vec<String>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("inherited_lease", &self.inherited_lease)
            .field("on_wait", &self.on_wait.as_ref().map(|_| ".."))
            .field("ancestors", &self.ancestors)
            .field("allow_untrusted", &self.allow_untrusted)
            .field("retry_failed", &self.retry_failed)
            .field("min_free", &self.min_free)
            .field("auto_gc", &self.auto_gc)
            .field("durability", &self.durability)
            .field("verify_on_read", &self.verify_on_read)
            .field("upgrade_wait", &self.upgrade_wait)
            .field("cancel", &self.cancel.is_cancelled())
            .field("fill_command", &self.fill_command)
            .finish()
    }
}

/// A cache directory shared between processes.
///
/// `Cache` is cheap to clone and can be shared between threads; threads of
/// one process filling the same key share one fill.
#[derive(Clone, Debug)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: Arc<Root>,
    pub(crate) path: PathBuf,
    pub(crate) options: Options,
    /// Fills in flight among this process's threads.
    pub(crate) flights: OnceMap<Key>,
    /// The network or userspace filesystem the cache is on, if any.
    shared_fs: Option<&'static str>,
    /// The stats file, mapped on first use (stats.rs).
    pub(crate) stats: std::sync::OnceLock<Result<crate::sys::Mapped, String>>,
    /// The last-use stamps this handle wrote or saw, by key: a stamp's
    /// mtime, as long as it is younger than [`USE_RESOLUTION`], lets a
    /// repeat lookup skip the stamp's lstat (see [`Cache::note_use`]).
    used: std::sync::Mutex<std::collections::HashMap<Key, std::time::SystemTime>>,
}

/// How many keys [`Inner::used`] remembers before it starts over, so a
/// long-lived handle that looks up many keys stays small.
const USED_MEMO_MAX: usize = 4096;

/// The cache-wide lease, held: the handle through which code that holds the
/// lease works, so that nothing it does takes the lease again.
///
/// Shared means "in use"; exclusive is for mutating the whole cache. Every
/// operation on a `Leased` runs under this one lease and never opens the
/// lease file. Pins taken through it keep the lease held until they are
/// dropped too. Cheap to clone; the lease is released when the last clone
/// and the last pin are gone.
#[derive(Clone, Debug)]
#[must_use = "the lease is released when dropped"]
pub struct Leased {
    pub(crate) cache: Cache,
    pub(crate) hold: Arc<Option<Held>>,
    mode: LockMode,
    /// The gates of the entry locks pinned through this lease, kept open
    /// while the lease is held, so a pin passes its gate with two flock
    /// calls instead of an open, a stat and a close as well. Only under a
    /// shared lease this handle holds: gc deletes a gate only under the
    /// exclusive lease, so none of these can be replaced meanwhile.
    gates: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<sys::LockFile>>>>,
}

/// How many gates a [`Leased`] keeps open; past that it starts over.
const GATES_MAX: usize = 64;

impl Leased {
    /// The mode the lease covers: exclusive when an inherited exclusive
    /// lease covers this process.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Whether this process took the lease itself, rather than running
    /// under one its parent holds.
    pub fn is_own(&self) -> bool {
        self.hold.is_some()
    }

    /// The cache it leases.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The descriptor whose flock is the lease (`None` if the lease is
    /// inherited rather than held here).
    ///
    /// A flock belongs to the open file description, so a process that
    /// inherits this descriptor keeps the lease held even if this process
    /// dies first: `cargo safecache run` hands it to the supervisor of its
    /// command, so the lease outlives every process of the command.
    #[cfg(not(target_os = "wasi"))]
    pub fn lock_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.hold.as_ref().as_ref().map(Held::fd)
    }

    /// Looks up a published entry. Without a [`Pin`] the entry may be
    /// removed at any time after this returns.
    pub fn get(&self, key: &Key) -> Result<Option<Entry>, Error> {
        let _span = tracing::info_span!("get", %key).entered();
        self.cache.lookup(key)
    }

    /// Pins `key`'s entry: holds the shared entry lock, and this lease,
    /// until the returned [`Pin`] is dropped. Returns `None` if the entry is
    /// absent.
    pub fn pin(&self, key: &Key, wait: Wait) -> Result<Option<Pin>, Error> {
        self.pin_by(key, Deadline::start(wait))
    }

    pub(crate) fn pin_by(&self, key: &Key, deadline: Deadline) -> Result<Option<Pin>, Error> {
        let _span = tracing::info_span!("pin", %key).entered();
        let rel = layout::entry_lock(&key.digest());
        let gate = layout::gate_of(&rel);
        let open = gate.as_deref().and_then(|gate| self.open_gate(gate));
        let queue = match (&gate, &open) {
            (Some(gate), Some(file)) => lock::Queue::OpenGate(gate, file),
            (Some(gate), None) => lock::Queue::Gate(gate),
            (None, _) => lock::Queue::None,
        };
        let name = LockName::Entry(key.to_string());
        let lock = self.cache.lock_queued(&rel, name, LockMode::Shared, deadline, None, queue)?;
        let found = match self.cache.lookup(key) {
            // Verify-on-read found it corrupt, but this pin's own shared
            // lock kept it from being set aside: let go, and settle it
            // under the exclusive lock.
            Err(Error::Corrupt { .. }) if self.cache.inner.options.verify_on_read => {
                drop(lock);
                if self.cache.verify_on_read_by(key, deadline)? {
                    // Refilled meanwhile by someone else: pin that.
                    return self.pin_by(key, deadline);
                }
                return Ok(None);
            }
            found => found?,
        };
        Ok(found.map(|entry| Pin { entry, _entry_lock: lock, _lease: Arc::clone(&self.hold) }))
    }
}

impl Leased {
    /// The gate `rel`, opened once for as long as this lease is held; `None`
    /// (the caller opens it itself) unless this handle holds the lease
    /// shared, or if it cannot be opened now.
    fn open_gate(&self, rel: &str) -> Option<Arc<sys::LockFile>> {
        if self.mode != LockMode::Shared || self.hold.is_none() || cfg!(target_os = "wasi") {
            return None;
        }
        let mut gates = self.gates.lock().ok()?;
        if let Some(file) = gates.get(rel) {
            return Some(Arc::clone(file));
        }
        if gates.len() >= GATES_MAX {
            gates.clear();
        }
        // Under WASI nothing is kept (see above), and there are no threads.
        #[cfg_attr(target_os = "wasi", allow(clippy::arc_with_non_send_sync))]
        let file = Arc::new(self.cache.root().open_lock(rel, true).ok()?);
        gates.insert(rel.to_owned(), Arc::clone(&file));
        Some(file)
    }
}

/// A published entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    key: Key,
    path: PathBuf,
}

impl Entry {
    /// The entry's key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The entry's path: the cache's path joined with the stored name. It is
    /// only valid while the entry exists; [`Cache::pin`] keeps it so.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An entry held in use: until this is dropped, `remove`, `clean` and `gc`
/// leave it alone (they wait, or fail in no-wait mode).
#[derive(Debug)]
#[must_use = "the pin is released when dropped"]
pub struct Pin {
    entry: Entry,
    _entry_lock: Held,
    _lease: Arc<Option<Held>>,
}

impl Pin {
    /// The pinned entry.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The descriptor whose flock is the pin's entry lock; a process that
    /// inherits it keeps the entry pinned for as long as it lives.
    #[cfg(not(target_os = "wasi"))]
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self._entry_lock.fd()
    }
}

impl Cache {
    /// Opens the cache at `path`, creating the directory and its marker if
    /// the directory is missing or empty.
    ///
    /// # Ambient authority
    /// This is the one entry point that turns a path into the directory
    /// handle every later operation goes through.
    ///
    /// # Errors
    /// [`Error::NotACache`] for a non-empty directory without a marker,
    /// [`Error::NotADirectory`], [`Error::UnknownFormat`], or an io error.
    pub fn open_ambient(path: impl AsRef<Path>, options: Options) -> Result<Cache, Error> {
        Cache::open_with(path.as_ref(), options, Open::IfEmpty)
    }

    /// Opens the cache at `path` like [`Cache::open_ambient`], but adopts a
    /// non-empty directory that has no marker yet: its existing files become
    /// entries that `clean` may remove.
    ///
    /// # Ambient authority
    /// Like [`Cache::open_ambient`].
    pub fn init_ambient(path: impl AsRef<Path>, options: Options) -> Result<Cache, Error> {
        Cache::open_with(path.as_ref(), options, Open::Adopt)
    }

    fn open_with(path: &Path, options: Options, mode: Open) -> Result<Cache, Error> {
        let _span = tracing::info_span!("open", path = %path.display()).entered();
        let display = path.display().to_string();
        let root = match Root::open_ambient(path) {
            Ok(root) => root,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Root::create_ambient_dir_all(path).map_err(|e| Error::io("create cache dir", &display, e))?;
                Root::open_ambient(path).map_err(|e| Error::io("open cache dir", &display, e))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(Error::NotADirectory { path: path.to_owned() });
            }
            Err(e) => return Err(Error::io("open cache dir", &display, e)),
        };
        let checked = check_trust(&root, path, options.allow_untrusted)?;
        let format = ensure_marker(&root, path, &mode)?;
        if matches!(mode, Open::Adopt) {
            // `init` of a cache made before the tag existed adds it.
            write_cachedir_tag(&root);
        }
        // A subdirectory a killed `clean` left missing is made again; what
        // the marker made (or an older format lacked) is checked too.
        if !checked.unwrap_or_else(|| marker::subdirs_present(&root)) {
            marker::repair_subdirs(&root);
            check_trust(&root, path, options.allow_untrusted)?;
        }
        let mut root = root;
        let durability = match options.durability {
            Some(durability) => durability,
            None => config::read(&root, path)?.durability(),
        };
        root.set_durability(durability);
        let shared_fs = root.shared_filesystem();
        if let Some(fs) = shared_fs {
            tracing::warn!(path = %path.display(), filesystem = fs, "the cache is on a network or userspace filesystem");
        }
        let upgrade_wait = options.upgrade_wait;
        let cache = Cache {
            inner: Arc::new(Inner {
                shared_fs,
                root: Arc::new(root),
                path: path.to_owned(),
                options,
                flights: OnceMap::new(),
                stats: std::sync::OnceLock::new(),
                used: std::sync::Mutex::default(),
            }),
        };
        if format != FORMAT_VERSION {
            let deadline = Deadline::start(upgrade_wait);
            marker::upgrade(cache.root(), cache.path(), || cache.lease_by(LockMode::Exclusive, deadline))?;
        }
        Ok(cache)
    }

    /// Why locks on this cache may not keep every process apart, if there is
    /// a reason to think so: the cache is on a network or userspace
    /// filesystem (NFS, SMB, FUSE, ...), where flock may be emulated or not
    /// reach other machines. Locks that fail outright are refused
    /// ([`Error::LocksUnsupported`]); this is the case where they seem to
    /// work, which a front end should say once.
    pub fn lock_warning(&self) -> Option<String> {
        self.inner.shared_fs.map(|fs| {
            format!(
                "the cache at `{}` is on {fs}, where file locks may be emulated or not reach other machines: \
                 share it only between processes on this machine, or move it to a local filesystem",
                self.inner.path.display()
            )
        })
    }

    /// The durability level this handle's operations keep: the one given in
    /// [`Options::durability`], else the cache's config's.
    pub fn durability(&self) -> Durability {
        self.root().durability()
    }

    /// The cache's settings as stored now (the default if it has no config
    /// file).
    ///
    /// # Errors
    /// [`Error::BadConfig`] for a config file this build cannot read.
    pub fn config(&self) -> Result<Config, Error> {
        config::read(self.root(), &self.inner.path)
    }

    /// Changes the cache's stored settings with `change` and returns the
    /// new ones. Under the shared lease and `gc.lock`, it reads the config,
    /// applies `change` and replaces the file (synced at every level). A
    /// config file this build cannot read is replaced as if it were absent:
    /// this is how a garbage config is fixed. It does not change the level
    /// of handles already open, this one included.
    ///
    /// # Errors
    /// [`Error::Busy`] if the lease or `gc.lock` could not be had within
    /// `wait`; an io error if the file could not be written.
    pub fn update_config(&self, wait: Wait, change: impl FnOnce(&mut Config)) -> Result<Config, Error> {
        let deadline = Deadline::start(wait);
        let _lease = self.lease_by(LockMode::Shared, deadline)?;
        let _gc = self.lock(layout::GC_LOCK, LockName::Gc, LockMode::Exclusive, deadline)?;
        let mut config = match self.config() {
            Err(Error::BadConfig { reason, .. }) => {
                tracing::warn!(%reason, "replacing an unreadable config file");
                Config::default()
            }
            other => other?,
        };
        change(&mut config);
        config::write(self.root(), &config)?;
        Ok(config)
    }

    /// The cache's path, as given when it was opened.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The absolute path of `key`'s entry, whether or not it exists.
    pub fn entry_path(&self, key: &Key) -> PathBuf {
        self.inner.path.join(key.stored_name())
    }

    pub(crate) fn root(&self) -> &Arc<Root> {
        &self.inner.root
    }

    /// Takes the cache-wide lease in `mode`, unless an inherited lease
    /// already covers it, and returns the handle to work under it.
    ///
    /// # Errors
    /// [`Error::Busy`] naming the holders if it could not be taken in time;
    /// [`Error::LeaseConflict`] for an exclusive lease under an inherited
    /// shared one.
    pub fn lease(&self, mode: LockMode, wait: Wait) -> Result<Leased, Error> {
        self.lease_by(mode, Deadline::start(wait))
    }

    /// [`Cache::lease`] within an operation's deadline.
    pub(crate) fn lease_by(&self, mode: LockMode, deadline: Deadline) -> Result<Leased, Error> {
        let _span = tracing::info_span!("lease", %mode).entered();
        let (hold, mode) = match (self.inner.options.inherited_lease, mode) {
            (Some(LockMode::Exclusive), _) => (None, LockMode::Exclusive),
            (Some(LockMode::Shared), LockMode::Exclusive) if deadline.no_wait() => return Err(Error::LeaseConflict),
            (Some(LockMode::Shared), LockMode::Exclusive) => {
                // Name the ancestor that holds it shared, when its record says.
                let holders = crate::holder::holders_of(self.root(), LEASE_LOCK);
                return Err(match lock::held_by_ancestor(holders, self.inner.options.ancestors.get()) {
                    Some(holder) => Error::HeldByAncestor { lock: LockName::Lease, mode, holder: Box::new(holder) },
                    None => Error::LeaseConflict,
                });
            }
            // Under an inherited shared lease this still takes a shared
            // lease of its own: shared leases never block each other, and
            // the parent may die first.
            (_, mode) => (Some(self.lock(LEASE_LOCK, LockName::Lease, mode, deadline)?), mode),
        };
        // Under WASI a lock handle is not `Sync`, but there are no threads.
        #[cfg_attr(target_os = "wasi", allow(clippy::arc_with_non_send_sync))]
        let hold = Arc::new(hold);
        Ok(Leased { cache: self.clone(), hold, mode, gates: Arc::default() })
    }

    /// Takes a lock, queueing through its gate when it has one (the lease
    /// and entry locks).
    pub(crate) fn lock(&self, rel: &str, name: LockName, mode: LockMode, deadline: Deadline) -> Result<Held, Error> {
        self.lock_as(rel, name, mode, deadline, None)
    }

    /// [`Cache::lock`], with its holder record naming `command` if given.
    fn lock_as(
        &self,
        rel: &str,
        name: LockName,
        mode: LockMode,
        deadline: Deadline,
        command: Option<&[String]>,
    ) -> Result<Held, Error> {
        let gate = layout::gate_of(rel);
        let queue = gate.as_deref().map_or(lock::Queue::None, lock::Queue::Gate);
        self.lock_queued(rel, name, mode, deadline, command, queue)
    }

    /// [`Cache::lock_as`] through the given queue.
    fn lock_queued(
        &self,
        rel: &str,
        name: LockName,
        mode: LockMode,
        deadline: Deadline,
        command: Option<&[String]>,
        queue: lock::Queue<'_>,
    ) -> Result<Held, Error> {
        let options = &self.inner.options;
        let waiter = lock::Waiter { observer: options.on_wait.as_ref(), ancestors: Some(&options.ancestors), command };
        lock::acquire(self.root(), rel, name, mode, deadline, waiter, queue)
    }

    pub(crate) fn entry_lock(&self, key: &Key, mode: LockMode, deadline: Deadline) -> Result<Held, Error> {
        let rel = layout::entry_lock(&key.digest());
        self.lock(&rel, LockName::Entry(key.to_string()), mode, deadline)
    }

    /// The exclusive entry lock of a fill of `key`, its holder record
    /// naming [`Options::fill_command`] when set.
    pub(crate) fn fill_lock(&self, key: &Key, deadline: Deadline) -> Result<Held, Error> {
        let rel = layout::entry_lock(&key.digest());
        let command = self.inner.options.fill_command.as_deref();
        self.lock_as(&rel, LockName::Entry(key.to_string()), LockMode::Exclusive, deadline, command)
    }

    /// Looks up a published entry. Without a [`Pin`] the entry may be
    /// removed at any time after this returns.
    pub fn get(&self, key: &Key) -> Result<Option<Entry>, Error> {
        let _span = tracing::info_span!("get", %key).entered();
        self.lookup(key)
    }

    /// Who holds `key`'s entry lock now, for display: an exclusive holder
    /// is filling (or removing) the entry, shared holders pin it. Takes no
    /// lock and never waits; the answer may be stale when it returns.
    pub fn entry_holders(&self, key: &Key) -> Vec<crate::Holder> {
        crate::holder::holders_of(self.root(), &layout::entry_lock(&key.digest()))
    }

    pub(crate) fn entry_at(&self, key: &Key) -> Entry {
        Entry { key: key.clone(), path: self.entry_path(key) }
    }

    /// A lookup by one lstat, which never follows a symlink at the
    /// entry's name. An entry being built in place, or left uncommitted by
    /// a dead in-place fill, is absent.
    pub(crate) fn lookup(&self, key: &Key) -> Result<Option<Entry>, Error> {
        let stored = key.stored_name();
        match self.root().presence(&stored) {
            Ok(Presence::Committed(_)) => {
                if self.inner.options.verify_on_read && !self.verify_on_read(key)? {
                    return Ok(None);
                }
                self.note_use(key);
                Ok(Some(self.entry_at(key)))
            }
            Ok(Presence::Absent | Presence::Uncommitted) => Ok(None),
            Err(e) => Err(Error::io("look up", stored, e)),
        }
    }

    /// Records the last use of `key`, for `ls` and gc's eviction. Best
    /// effort.
    ///
    /// The stamp has a resolution of [`USE_RESOLUTION`]: a stamp younger than
    /// that is left alone. This handle remembers the mtime of the stamp it
    /// last wrote or saw for each key, so a repeat use within the
    /// resolution of that stamp costs no system call at all; the first use
    /// through a handle costs one lstat of the stamp, and a write at most
    /// once per resolution. Either way the stamp on disk is never more than
    /// [`USE_RESOLUTION`] older than the last use, which is all eviction
    /// counts on. A stamp removed meanwhile (the entry removed by another
    /// process) reads as "used now" to gc, and a fill restamps what it
    /// publishes ([`Cache::note_use_checked`]).
    ///
    /// A new stamp is a fresh file renamed into place, so whatever someone
    /// left at the stamp's name (a hard link to a file outside the cache, a
    /// FIFO) is replaced, never written through. Its private name is a temp
    /// name, so gc reclaims one a killed process left.
    pub(crate) fn note_use(&self, key: &Key) {
        let now = sys::now();
        let remembered = self.inner.used.lock().ok().and_then(|memo| memo.get(key).copied());
        if remembered.is_some_and(|t| fresh_at(t, now)) {
            return;
        }
        self.note_use_at(key, now);
    }

    /// [`Cache::note_use`] that looks at the stamp on disk whatever this
    /// handle remembers: a fill's publish, after which the old stamp may
    /// have gone with the old entry.
    pub(crate) fn note_use_checked(&self, key: &Key) {
        self.note_use_at(key, sys::now());
    }

    fn note_use_at(&self, key: &Key, now: std::time::SystemTime) {
        let digest = key.digest();
        let marker = layout::used_marker(&digest);
        let stamp = match self.root().modified(&marker).ok().flatten() {
            Some(t) if fresh_at(t, now) => t,
            _ => match self.stamp_use(&digest) {
                Ok(()) => now,
                Err(e) => {
                    tracing::debug!(%key, error = %e, "could not record last use");
                    return;
                }
            },
        };
        if let Ok(mut memo) = self.inner.used.lock() {
            if memo.len() >= USED_MEMO_MAX && !memo.contains_key(key) {
                memo.clear();
            }
            memo.insert(key.clone(), stamp);
        }
    }

    /// Writes `used/<digest>` now, by a fresh file renamed into place.
    pub(crate) fn stamp_use(&self, digest: &str) -> io::Result<()> {
        let marker = layout::used_marker(digest);
        layout::random_suffix()
            .map_err(io::Error::other)
            .and_then(|r| self.root().touch(&marker, &layout::temp(digest, &r)))
    }

    /// Pins `key`'s entry under a shared lease of its own; see
    /// [`Leased::pin`].
    pub fn pin(&self, key: &Key, wait: Wait) -> Result<Option<Pin>, Error> {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Shared, deadline)?.pin_by(key, deadline)
    }
}

/// Whether a last-use stamp written at `stamp` is still fresh at `now`: a
/// use now writes no new one. A stamp from the future (a clock set back) is
/// not.
fn fresh_at(stamp: std::time::SystemTime, now: std::time::SystemTime) -> bool {
    now.duration_since(stamp).is_ok_and(|age| age < USE_RESOLUTION)
}

impl Cache {
    /// The cache's own format (read from its marker now, not this build's)
    /// and what its filesystem does to names.
    ///
    /// # Errors
    /// The format file cannot be read or names a format this build does not
    /// know.
    pub fn describe(&self) -> Result<Described, Error> {
        Ok(Described {
            format: marker::read_format(self.root(), self.path())?,
            filesystem: marker::read_filesystem(self.root()),
        })
    }
}
