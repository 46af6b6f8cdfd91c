//! This defines [`Error`], the one error type of the library, and the
//! [`KeyRule`]s a key can break.
//!
//! Messages are lowercase fragments; each io failure keeps its
//! `std::io::Error` as the source rather than repeating it.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::holder::Holder;
use crate::lock::{LockMode, LockName};

/// Everything that can go wrong in a cache operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key broke one of the naming rules.
    #[error("invalid key `{key}`: {rule}")]
    InvalidKey {
        /// The rejected key, escaped for display.
        key: String,
        /// The rule it broke.
        rule: KeyRule,
    },

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

    /// The operation needs the exclusive lease, but this process runs under
    /// a shared lease inherited from a parent (`cargo safecache run`).
    #[error(
        "cannot take the exclusive cache lease: this process runs under a shared lease held by its parent; \
         run the parent with `--exclusive` instead"
    )]
    LeaseConflict,

    /// The caller's fill function failed; nothing was published.
    #[error("fill of `{key}` failed; nothing was published")]
    Fill {
        /// The key being filled.
        key: String,
        /// The filler's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether this error means "a lock was busy" (a timeout or a no-wait
    /// conflict). The CLI maps it to exit code 75.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::LeaseConflict)
    }

    #[cold]
    pub(crate) fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Error {
        Error::Io { op, path: path.into(), source }
    }
}

impl From<getrandom::Error> for Error {
    #[cold]
    fn from(e: getrandom::Error) -> Error {
        Error::Random(e)
    }
}

fn busy_message(lock: &LockName, mode: LockMode, holders: &[Holder], waited: Option<Duration>) -> String {
    let mut msg = match waited {
        Some(d) => format!("timed out after {} waiting for the {mode} lock on {lock}", fmt_duration(d)),
        None => format!("the {mode} lock on {lock} is busy and waiting was not allowed"),
    };
    msg.push_str(&holders_phrase(holders));
    msg
}

/// ", held by pid 12 (`cargo build`) on host h since 3s ago" or similar.
pub(crate) fn holders_phrase(holders: &[Holder]) -> String {
    match holders {
        [] => {
            "; its holder has not identified itself yet (a gc or status probe holds a lock for an instant)".to_owned()
        }
        [one] => format!("; held by {one}"),
        [first, rest @ ..] => format!("; held by {first} and {} other process(es)", rest.len()),
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1000 {
        format!("{ms}ms")
    } else if secs < 60 {
        if ms.is_multiple_of(1000) { format!("{secs}s") } else { format!("{:.1}s", d.as_secs_f64()) }
    } else if secs < 3600 {
        match secs % 60 {
            0 => format!("{}m", secs / 60),
            s => format!("{}m {s}s", secs / 60),
        }
    } else {
        match (secs % 3600) / 60 {
            0 => format!("{}h", secs / 3600),
            m => format!("{}h {m}m", secs / 3600),
        }
    }
}

/// The naming rules a [`Key`](crate::Key) must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRule {
    /// The key is empty.
    Empty,
    /// The key starts with `/`.
    Absolute,
    /// The key contains a NUL byte.
    Nul,
    /// The key contains a backslash.
    Backslash,
    /// The key contains `%`, which is reserved for encoding `/`.
    Percent,
    /// The key contains a control character.
    Control,
    /// The key has an empty component (`a//b`, a trailing `/`).
    EmptyComponent,
    /// A component is `.` or `..`.
    DotComponent,
    /// The first component starts with the marker directory's name.
    Reserved,
    /// The stored name would be longer than a path component may be.
    TooLong {
        /// The stored length in bytes.
        len: usize,
    },
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Empty => f.write_str("the key is empty; give a name such as `git/serde`"),
            KeyRule::Absolute => f.write_str("the key is absolute; keys are relative paths inside the cache"),
            KeyRule::Nul => f.write_str("the key contains a NUL byte"),
            KeyRule::Backslash => f.write_str("the key contains a backslash; separate components with `/`"),
            KeyRule::Percent => f.write_str("the key contains `%`, which safecache reserves"),
            KeyRule::Control => f.write_str("the key contains a control character"),
            KeyRule::EmptyComponent => {
                f.write_str("the key has an empty component (`//` or a leading or trailing `/`)")
            }
            KeyRule::DotComponent => {
                f.write_str("a component is `.` or `..`; keys are relative paths inside the cache")
            }
            KeyRule::Reserved => f.write_str("names starting with `.safecache` are reserved for safecache's own files"),
            KeyRule::TooLong { len } => write!(
                f,
                "the key is {len} bytes once stored (each `/` counts 3); the limit is {}",
                crate::key::MAX_STORED_LEN
            ),
        }
    }
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
        assert!(msg.ends_with("and 2 other process(es)"), "{msg}");
        assert!(err.is_busy());
        let err = Error::Busy { lock: LockName::Gc, mode: LockMode::Exclusive, holders: vec![], waited: None };
        assert!(err.to_string().starts_with("the exclusive lock on the cache's gc is busy"), "{err}");
        assert!(err.to_string().contains("its holder has not identified itself yet"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_secs(300)), "5m");
        assert_eq!(fmt_duration(Duration::from_secs(303)), "5m 3s");
        assert_eq!(fmt_duration(Duration::from_secs(7380)), "2h 3m");
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "2.5s");
    }

    #[test]
    fn io_errors_keep_their_source() {
        let err = Error::io("rename aside", "dep", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(err.to_string(), "failed to rename aside `dep`");
        assert!(std::error::Error::source(&err).is_some());
    }
}
