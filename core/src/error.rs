//! This defines [`Error`], the one error type of the library, and
//! [`ErrorKind`], the exhaustive list of its kinds that front ends map to
//! exit codes.
//!
//! Messages are lowercase fragments; each io failure keeps its
//! `std::io::Error` as the source rather than repeating it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::display;
use crate::failed::FailedFill;
use crate::holder::{Holder, describe_holders};
use crate::key::InvalidKey;
use crate::mode::{LockMode, LockName};

/// Everything that can go wrong in a cache operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key broke one of the naming rules.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),

    /// A non-empty directory without the marker: refusing to treat it as a
    /// cache, so a typo cannot turn `$HOME` into something `clean` empties.
    #[error(
        "`{}` is not a safecache cache (it is not empty and has no `.safecache` marker); \
         adopt it with `cargo safecache init {}` or pick another directory",
        path.display(), path.display()
    )]
    NotACache {
        /// The directory.
        path: PathBuf,
    },

    /// The cache path exists but is not a directory.
    #[error("`{}` is not a directory; point the cache at a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },

    /// Another user could tamper with the cache: opening it would let them
    /// redirect this process's writes.
    #[error(
        "{} {reason}, so another user could redirect this process's writes; \
         make it yours and private (`chmod go-w`), share it with a group (`chmod 2770`), \
         or trust it anyway with --allow-untrusted-cache",
        if rel.is_empty() { "the cache dir".to_owned() } else { format!("its `{rel}`") }
    )]
    UntrustedCache {
        /// The cache root.
        path: PathBuf,
        /// The directory that is not safe, relative to the root (empty for
        /// the root itself).
        rel: String,
        /// Why, as a predicate: "can be written by every user".
        reason: String,
    },

    /// The marker names a format this build does not know.
    #[error(
        "cache `{}` has format `{found}`, but this safecache reads format {supported}; \
         use a matching safecache version or another cache directory",
        path.display()
    )]
    UnknownFormat {
        /// The cache root.
        path: PathBuf,
        /// What the format file says.
        found: String,
        /// The version this build supports.
        supported: u32,
    },

    /// The cache's config file (`.safecache/config.json`) is not one this
    /// build can read; nothing was changed.
    #[error(
        "the cache config `{}` is unreadable ({reason}); fix it, delete it, \
         or write a new one with `cargo safecache config durability full`",
        path.display()
    )]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The cache's stats file (`.safecache/stats`) cannot be used; nothing
    /// is counted into it until it is replaced.
    #[error(
        "the stats file `{}` cannot be used ({reason}); replace it with `cargo safecache stats --reset`",
        path.display()
    )]
    BadStats {
        /// The stats file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A filesystem operation failed.
    #[error("failed to {op} `{path}`")]
    Io {
        /// What was being done, as a verb phrase ("rename", "create dir").
        op: &'static str,
        /// The path, relative to the cache root unless absolute.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A mount point inside the cache (another filesystem, or a bind mount,
    /// left in an entry or in a fill's directory) stopped a deletion, which
    /// left it and what is under it in place and deleted the rest, or a
    /// publish, which published nothing. The source names each mount point.
    #[error("failed to {op} `{path}`")]
    MountPoint {
        /// What was being done, as a verb phrase.
        op: &'static str,
        /// The item, relative to the cache root.
        path: String,
        /// Which mount points, and what to do.
        #[source]
        source: io::Error,
    },

    /// The filesystem does not support the locks safecache needs (NFS
    /// without a lock daemon, some FUSE and network mounts). safecache
    /// refuses to go on without them rather than run unlocked.
    #[error(
        "the filesystem holding the cache cannot lock `{path}`, so safecache cannot keep processes apart there; \
         nothing was changed: put the cache on a local filesystem"
    )]
    LocksUnsupported {
        /// The lock file, relative to the cache root.
        path: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// The OS random source failed.
    #[error("failed to get random bytes for a private name")]
    Random(#[source] getrandom::Error),

    /// A lock was busy: either the caller asked not to wait, or the wait
    /// timed out. `holders` lists who holds it, for display.
    #[error("{}", busy_message(lock, *mode, holders, *waited))]
    Busy {
        /// The lock waited for.
        lock: LockName,
        /// The mode it was wanted in.
        mode: LockMode,
        /// Live holders at the time of the failure (may be empty if the
        /// holder had not yet written its record).
        holders: Vec<Holder>,
        /// How long the caller waited; `None` for a no-wait attempt.
        waited: Option<Duration>,
    },

    /// The lock is held by an ancestor of this process (a `cargo safecache
    /// run` it runs under, see [`crate::Options::ancestors`]), which will
    /// not release it before this process ends: waiting would deadlock, so
    /// the operation fails at once.
    #[error(
        "the {mode} lock on {lock} is held by this process's own ancestor, {holder}, which keeps it until this \
         process ends, so waiting for it would never end; run this outside that command{}",
        if *lock == LockName::Lease { ", or run that command with `--exclusive`" } else { "" }
    )]
    HeldByAncestor {
        /// The lock wanted.
        lock: LockName,
        /// The mode it was wanted in.
        mode: LockMode,
        /// The ancestor that holds it.
        holder: Box<Holder>,
    },

    /// The operation needs the exclusive lease, but this process runs under
    /// a shared lease inherited from a parent (`cargo safecache run`).
    #[error(
        "this needs the exclusive cache lease, but it runs under a shared one (its own, or its parent's); \
         run it outside the shared lease, or run the parent with `--exclusive`"
    )]
    LeaseConflict,

    /// The fill's directory moved, or was replaced, while the filler ran:
    /// what the filler wrote through its path may be elsewhere.
    #[error("the fill of `{key}` wrote to `{}`, which {how}; nothing was published", path.display())]
    FillMoved {
        /// The key being filled.
        key: String,
        /// The path the filler was given.
        path: PathBuf,
        /// What happened to it.
        how: String,
    },

    /// The fill this call waited for failed; nothing was published, and this
    /// call did not run the fill again (see [`Options::retry_failed`]).
    ///
    /// [`Options::retry_failed`]: crate::Options::retry_failed
    #[error("the fill of `{key}` that this process waited for failed: {failure}; nothing was published")]
    PeerFillFailed {
        /// The key.
        key: String,
        /// Who failed, when and how.
        failure: Box<FailedFill>,
    },

    /// [`Leased::pin_or_fill`](crate::Leased::pin_or_fill) filled the key,
    /// and each time a remove took the entry before it could be pinned.
    #[error(
        "`{key}` was removed each time right after it was filled ({times} times); \
         find what removes it (a `gc --max-size`, an `rm` loop) and run again"
    )]
    RemovedAfterFill {
        /// The key.
        key: String,
        /// How many times it was filled.
        times: usize,
    },

    /// The entry holds a safecache cache of its own; deleting it would
    /// delete that cache's entries behind its locks' backs.
    #[error(
        "entry `{key}` holds a safecache cache of its own (a `.safecache` marker inside it); \
         refusing to delete it: clean that cache first, then delete it by hand"
    )]
    NestedCache {
        /// The entry's key.
        key: String,
    },

    /// With [`Options::verify_on_read`], the entry differs from its
    /// manifest, and it could not be set aside at once because another
    /// process (or the caller itself) holds its lock.
    ///
    /// [`Options::verify_on_read`]: crate::Options::verify_on_read
    #[error(
        "entry `{key}` is corrupt ({}); it is in use, so it was not set aside: \
         run `cargo safecache verify {key}` once it is free",
        differences.join("; ")
    )]
    Corrupt {
        /// The entry's key.
        key: String,
        /// What differs, escaped for display.
        differences: Vec<String>,
    },

    /// With [`Options::verify_on_read`], the entry could not be checked
    /// against a manifest (it has none, its manifest cannot be tied to it,
    /// or a file in it cannot be read), so it was not used. Nothing was
    /// moved or removed.
    ///
    /// [`Options::verify_on_read`]: crate::Options::verify_on_read
    #[error(
        "entry `{key}` could not be checked, so it was not used: {reason}; \
         `cargo safecache verify {key}` says more, and `cargo safecache rm {key}` lets the next run fill it afresh"
    )]
    Unverifiable {
        /// The entry's key.
        key: String,
        /// Why it could not be checked, escaped for display.
        reason: String,
    },

    /// The operation was cancelled through [`Options::cancel`] (a signal,
    /// for the CLI) while it ran; a fill publishes nothing.
    ///
    /// [`Options::cancel`]: crate::Options::cancel
    #[error("cancelled while {doing}; nothing was published")]
    Cancelled {
        /// What was under way (e.g. "hashing `git/serde` for its manifest").
        doing: String,
    },

    /// The caller's fill function failed; nothing was published.
    #[error("fill of `{key}` failed; nothing was published")]
    Fill {
        /// The key being filled.
        key: String,
        /// The filler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// safecache's own write failed because the filesystem holding the cache
    /// is full (ENOSPC) or the user's quota is used up (EDQUOT). Nothing was
    /// published and the fill's temp is removed.
    #[error(
        "no space left to {op} `{path}`: the filesystem of cache `{}` has {}",
        cache.display(), free_phrase(*available, *inodes)
    )]
    NoSpace {
        /// The cache root.
        cache: PathBuf,
        /// What the filesystem had left just after the failure (`None` where
        /// it cannot be measured).
        available: Option<u64>,
        /// How many more files it could hold (`None` where it cannot be
        /// measured): a filesystem out of inodes is full with bytes to spare.
        inodes: Option<u64>,
        /// What was being done, as a verb phrase ("publish", "sync").
        op: &'static str,
        /// The path, relative to the cache root.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A fill was not started because the filesystem holding the cache has
    /// less free space than the reserve the caller keeps
    /// ([`Options::min_free`]); its command was not run.
    ///
    /// [`Options::min_free`]: crate::Options::min_free
    #[error(
        "the filesystem of cache `{}` has {} free, less than the {} kept free, so the fill of `{key}` was not started",
        cache.display(), display::size(*available), display::size(*reserve)
    )]
    BelowReserve {
        /// The key not filled.
        key: String,
        /// The cache root.
        cache: PathBuf,
        /// What the filesystem has left.
        available: u64,
        /// The reserve.
        reserve: u64,
    },
}

/// A fill's own error, with a note that the filesystem holding the cache was
/// nearly full when the fill failed, which is the likely cause. Its message
/// is the fill's, then the note; its source is the fill error's source.
#[derive(Debug)]
pub struct LowSpace {
    /// The cache root.
    pub cache: PathBuf,
    /// What the filesystem had left when the fill failed, with the failed
    /// fill's output still in its temp.
    pub available: u64,
    /// The fill's error.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

impl LowSpace {
    /// The note alone: "the filesystem of cache `/c` had 0 B free when the
    /// fill failed".
    pub fn note(&self) -> String {
        format!(
            "the filesystem of cache `{}` had {} free when the fill failed",
            self.cache.display(),
            display::size(self.available)
        )
    }
}

impl std::fmt::Display for LowSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}; free space with `cargo safecache gc` or `rm`)", self.error, self.note())
    }
}

impl std::error::Error for LowSpace {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The fill's error is shown in this one's message already.
        self.error.source()
    }
}

/// What kind of failure an [`Error`] is. Unlike [`Error`], this enum is
/// exhaustive on purpose: a front end maps it with a `match` that has no
/// wildcard arm, so a new kind fails to compile there until it has an exit
/// code and a hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// [`Error::InvalidKey`].
    InvalidKey,
    /// [`Error::NotACache`].
    NotACache,
    /// [`Error::NotADirectory`].
    NotADirectory,
    /// [`Error::UnknownFormat`].
    UnknownFormat,
    /// [`Error::UntrustedCache`].
    UntrustedCache,
    /// [`Error::Io`] and [`Error::Random`]: the filesystem or the OS failed.
    Io,
    /// [`Error::LocksUnsupported`].
    LocksUnsupported,
    /// [`Error::MountPoint`].
    MountPoint,
    /// [`Error::Busy`] after waiting for the caller's whole timeout.
    TimedOut,
    /// [`Error::Busy`] when the caller asked not to wait.
    WouldBlock,
    /// [`Error::LeaseConflict`].
    LeaseConflict,
    /// [`Error::HeldByAncestor`].
    HeldByAncestor,
    /// [`Error::FillMoved`].
    FillMoved,
    /// [`Error::PeerFillFailed`].
    PeerFillFailed,
    /// [`Error::NestedCache`].
    NestedCache,
    /// [`Error::Fill`], and [`Error::RemovedAfterFill`] (a fill that
    /// could not be used).
    Fill,
    /// [`Error::NoSpace`].
    NoSpace,
    /// [`Error::BelowReserve`].
    BelowReserve,
    /// [`Error::BadConfig`].
    BadConfig,
    /// [`Error::BadStats`].
    BadStats,
    /// [`Error::Corrupt`].
    Corrupt,
    /// [`Error::Unverifiable`].
    Unverifiable,
    /// [`Error::Cancelled`].
    Cancelled,
}

impl Error {
    /// This error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey(_) => ErrorKind::InvalidKey,
            Error::NotACache { .. } => ErrorKind::NotACache,
            Error::NotADirectory { .. } => ErrorKind::NotADirectory,
            Error::UnknownFormat { .. } => ErrorKind::UnknownFormat,
            Error::UntrustedCache { .. } => ErrorKind::UntrustedCache,
            Error::Io { .. } | Error::Random(_) => ErrorKind::Io,
            Error::LocksUnsupported { .. } => ErrorKind::LocksUnsupported,
            Error::MountPoint { .. } => ErrorKind::MountPoint,
            Error::Busy { waited: Some(_), .. } => ErrorKind::TimedOut,
            Error::Busy { waited: None, .. } => ErrorKind::WouldBlock,
            Error::LeaseConflict => ErrorKind::LeaseConflict,
            Error::HeldByAncestor { .. } => ErrorKind::HeldByAncestor,
            Error::FillMoved { .. } => ErrorKind::FillMoved,
            Error::PeerFillFailed { .. } => ErrorKind::PeerFillFailed,
            Error::NestedCache { .. } => ErrorKind::NestedCache,
            Error::Fill { .. } | Error::RemovedAfterFill { .. } => ErrorKind::Fill,
            Error::NoSpace { .. } => ErrorKind::NoSpace,
            Error::BelowReserve { .. } => ErrorKind::BelowReserve,
            Error::BadConfig { .. } => ErrorKind::BadConfig,
            Error::BadStats { .. } => ErrorKind::BadStats,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Unverifiable { .. } => ErrorKind::Unverifiable,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
        }
    }

    /// The note that the cache's filesystem was nearly full when a fill
    /// failed, if this is such a failure ([`Error::Fill`] whose source is a
    /// [`LowSpace`]).
    pub fn low_space(&self) -> Option<&LowSpace> {
        match self {
            Error::Fill { source, .. } => source.downcast_ref::<LowSpace>(),
            _ => None,
        }
    }

    /// This error as [`Error::NoSpace`] when it is an io failure because the
    /// filesystem holding the cache at `cache` is full; `space` measures
    /// what is left, in bytes and in inodes.
    #[cold]
    pub(crate) fn or_no_space(self, cache: &Path, space: impl FnOnce() -> Option<(u64, u64)>) -> Error {
        match self {
            Error::Io { op, path, source } if crate::sys::is_no_space(&source) => {
                let (available, inodes) = space().unzip();
                Error::NoSpace { cache: cache.to_owned(), available, inodes, op, path, source }
            }
            e => e,
        }
    }

    /// Whether this error means "a lock was busy" (a timeout or a no-wait
    /// conflict). The CLI maps it to exit code 75.
    pub fn is_busy(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::LeaseConflict | ErrorKind::HeldByAncestor
        )
    }

    #[cold]
    pub(crate) fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Error {
        if crate::sys::is_mount_points(&source) {
            return Error::MountPoint { op, path: path.into(), source };
        }
        Error::Io { op, path: path.into(), source }
    }
}

impl Error {
    /// A failure to take a lock: [`Error::LocksUnsupported`] when the
    /// filesystem cannot lock at all (ENOLCK, EOPNOTSUPP, ENOSYS, or Linux's
    /// internal ENOTSUPP 524 that some FUSE and NFS setups leak), else an io
    /// error.
    #[cold]
    pub(crate) fn lock(path: impl Into<String>, source: io::Error) -> Error {
        const ENOLCK: i32 = 37;
        const ENOTSUPP: i32 = 524;
        let unsupported = source.kind() == io::ErrorKind::Unsupported
            || (cfg!(target_os = "linux") && matches!(source.raw_os_error(), Some(ENOLCK | ENOTSUPP)));
        if unsupported {
            return Error::LocksUnsupported { path: path.into(), source };
        }
        Error::io("lock", path, source)
    }
}

impl From<getrandom::Error> for Error {
    #[cold]
    fn from(e: getrandom::Error) -> Error {
        Error::Random(e)
    }
}

/// "0 B free", or "1.9 MiB free but no inodes left" for a filesystem that
/// can hold no new file.
fn free_phrase(available: Option<u64>, inodes: Option<u64>) -> String {
    let bytes = available.map_or_else(|| "an unknown amount".to_owned(), display::size);
    match inodes {
        Some(0) => format!("{bytes} free but no inodes left, so no new file can be made"),
        _ => format!("{bytes} free"),
    }
}

fn busy_message(lock: &LockName, mode: LockMode, holders: &[Holder], waited: Option<Duration>) -> String {
    let what = match waited {
        Some(d) => format!("timed out after {} waiting for the {mode} lock on {lock}", display::duration(d)),
        None => format!("the {mode} lock on {lock} is busy and waiting was not allowed"),
    };
    format!("{what}; held by {}", describe_holders(holders))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(pid: u32) -> Holder {
        Holder {
            lock: LockName::Lease,
            lock_file: ".safecache/lease.lock".into(),
            mode: LockMode::Shared,
            pid,
            host: "ci-7".into(),
            command: "cargo build".into(),
            argv: vec!["cargo".into(), "build".into()],
            since: 0,
        }
    }

    #[test]
    fn busy_messages_name_the_lock_and_the_holders() {
        let err = Error::Busy {
            lock: LockName::Entry("git/serde".into()),
            mode: LockMode::Exclusive,
            holders: vec![holder(42)],
            waited: None,
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("the exclusive lock on entry `git/serde` is busy and waiting was not allowed; held by pid 42 (`cargo build`) on ci-7, shared for "),
            "{msg}"
        );
        let err = Error::Busy {
            lock: LockName::Lease,
            mode: LockMode::Exclusive,
            holders: vec![holder(1), holder(2), holder(3)],
            waited: Some(Duration::from_millis(1500)),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with("timed out after 1.5s waiting for the exclusive lock on the cache lease; held by pid 1")
        );
        assert!(msg.ends_with("and 2 other processes"), "{msg}");
        assert!(err.is_busy());
        let err = Error::Busy { lock: LockName::Gc, mode: LockMode::Exclusive, holders: vec![], waited: None };
        assert!(err.to_string().starts_with("the exclusive lock on the cache's gc is busy"), "{err}");
        assert!(err.to_string().contains("held by a process that has not identified itself yet"));
    }

    #[test]
    fn io_errors_keep_their_source() {
        let err = Error::io("rename aside", "dep", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(err.to_string(), "failed to rename aside `dep`");
        assert!(std::error::Error::source(&err).is_some());
    }
}
