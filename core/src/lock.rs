//! This defines locking: modes, waits, lock names, and [`Held`], a lock
//! taken together with its holder record.
//!
//! Invariants kept here:
//! - every wait first tries without blocking; when it has to block it says
//!   who holds the lock (through the caller's [`WaitObserver`] and tracing)
//!   and it can time out or not wait at all;
//! - lock files are opened with create-but-never-truncate, so every process
//!   locks the same inode, and this module never deletes one;
//! - the holder record is written only after the lock is taken and removed
//!   before it is released; it is for display, never for correctness.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::holder::{self, Holder, Record};
use crate::sys::{LockFile, Root};

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many holders at once; excludes exclusive holders.
    Shared,
    /// One holder; excludes everyone else.
    Exclusive,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// How long an operation may wait for a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Wait {
    /// Fail at once with [`Error::Busy`] if the lock is held.
    NoWait,
    /// Wait at most this long, then fail with [`Error::Busy`].
    Timeout(Duration),
    /// Wait for as long as it takes.
    #[default]
    Forever,
}

impl Wait {
    /// `Some(d)` maps to a timeout of `d` (zero meaning no wait), `None` to
    /// forever.
    pub fn from_timeout(timeout: Option<Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(d) if d.is_zero() => Wait::NoWait,
            Some(d) => Wait::Timeout(d),
        }
    }

    #[cfg(test)]
    pub(crate) fn timeout(self) -> Option<Duration> {
        match self {
            Wait::NoWait => Some(Duration::ZERO),
            Wait::Timeout(d) => Some(d),
            Wait::Forever => None,
        }
    }
}

/// One operation's bound on waiting: every lock the operation takes gets
/// what is left of it, so an operation that takes three locks still gives up
/// after the caller's timeout, not three times it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    wait: Wait,
    end: Option<Instant>,
}

impl Deadline {
    pub(crate) fn start(wait: Wait) -> Deadline {
        match wait {
            // A timeout too large to represent is forever.
            Wait::Timeout(d) => match Instant::now().checked_add(d) {
                Some(end) => Deadline { wait, end: Some(end) },
                None => Deadline { wait: Wait::Forever, end: None },
            },
            _ => Deadline { wait, end: None },
        }
    }

    pub(crate) fn no_wait(&self) -> bool {
        self.wait == Wait::NoWait
    }

    /// What is left: `None` for forever.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match (self.wait, self.end) {
            (Wait::Forever, _) => None,
            (_, Some(end)) => Some(end.saturating_duration_since(Instant::now())),
            (_, None) => Some(Duration::ZERO),
        }
    }

    pub(crate) fn end(&self) -> Option<Instant> {
        self.end
    }

    /// The caller's whole budget, for messages: `None` for a no-wait try.
    pub(crate) fn budget(&self) -> Option<Duration> {
        match self.wait {
            Wait::Timeout(d) => Some(d),
            _ => None,
        }
    }
}

/// What a lock protects, for messages and holder records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "lowercase")]
#[non_exhaustive]
pub enum LockName {
    /// The cache-wide lease.
    Lease,
    /// The lock of one entry, held shared by pins and exclusive by a fill or
    /// a remove.
    Entry(String),
    /// The lock that lets one gc run at a time.
    Gc,
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockName::Lease => f.write_str("the cache lease"),
            LockName::Entry(key) => write!(f, "entry `{key}`"),
            LockName::Gc => f.write_str("the cache's gc"),
        }
    }
}

/// Reported once when an operation has to block on a lock.
#[derive(Debug)]
pub struct WaitEvent<'a> {
    /// The lock waited for.
    pub lock: &'a LockName,
    /// The mode wanted.
    pub mode: LockMode,
    /// Its live holders, as far as their records tell.
    pub holders: &'a [Holder],
    /// How long the operation will wait; `None` for forever.
    pub timeout: Option<Duration>,
}

/// A callback told when an operation starts to block, so a front end can
/// say at once what is being waited for and who holds it.
pub type WaitObserver = Arc<dyn Fn(&WaitEvent<'_>) + Send + Sync>;

/// A lock taken, with its holder record. Dropping it removes the record and
/// then releases the lock.
#[derive(Debug)]
pub(crate) struct Held {
    record: Option<Record>,
    #[cfg_attr(target_os = "wasi", allow(dead_code))] // only read for `Lease::lock_fd`
    file: LockFile,
}

impl Held {
    #[cfg(not(target_os = "wasi"))]
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.fd()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The record goes first: a holder shown must still hold the lock.
        drop(self.record.take());
    }
}

/// Takes the lock at `rel` in `mode`, waiting as `wait` allows.
pub(crate) fn acquire(
    root: &Arc<Root>,
    rel: &str,
    name: LockName,
    mode: LockMode,
    deadline: Deadline,
    observer: Option<&WaitObserver>,
) -> Result<Held, Error> {
    let file = root.open_lock(rel, true).map_err(|e| Error::io("open lock file", rel, e))?;
    let taken = file.try_lock(mode).map_err(|e| Error::io("lock", rel, e))?;
    if !taken {
        let holders = holder::holders_of(root, rel);
        if deadline.no_wait() {
            return Err(Error::Busy { lock: name, mode, holders, waited: None });
        }
        let timeout = deadline.remaining();
        tracing::info!(lock = %name, %mode, holders = holders.len(), "blocking on lock");
        if let Some(observer) = observer {
            observer(&WaitEvent { lock: &name, mode, holders: &holders, timeout });
        }
        let taken = file.lock_within(mode, timeout).map_err(|e| Error::io("lock", rel, e))?;
        if !taken {
            let holders = holder::holders_of(root, rel);
            return Err(Error::Busy { lock: name, mode, holders, waited: deadline.budget() });
        }
    }
    let record = holder::register(root, rel, &name, mode);
    Ok(Held { record, file })
}

/// Tries `rel` once without waiting and without a holder record: used by gc
/// and status to prove an owner dead.
pub(crate) fn try_probe(root: &Root, rel: &str, mode: LockMode, create: bool) -> Result<Option<LockFile>, Error> {
    let file = match root.open_lock(rel, create) {
        Ok(file) => file,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open lock file", rel, e)),
    };
    match file.try_lock(mode) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(e) => Err(Error::io("lock", rel, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_map_to_waits() {
        assert_eq!(Wait::from_timeout(None), Wait::Forever);
        assert_eq!(Wait::from_timeout(Some(Duration::ZERO)), Wait::NoWait);
        assert_eq!(Wait::from_timeout(Some(Duration::from_secs(3))), Wait::Timeout(Duration::from_secs(3)));
        assert_eq!(Wait::NoWait.timeout(), Some(Duration::ZERO));
        assert_eq!(Wait::Forever.timeout(), None);
    }

    #[test]
    fn lock_names_serialize_for_holder_records() {
        let json = serde_json::to_string(&LockName::Entry("a/b".into())).unwrap();
        assert_eq!(json, r#"{"kind":"entry","key":"a/b"}"#);
        assert_eq!(serde_json::to_string(&LockName::Lease).unwrap(), r#"{"kind":"lease"}"#);
        assert_eq!(LockName::Gc.to_string(), "the cache's gc");
    }
}
