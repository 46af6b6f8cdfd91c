//! This defines taking locks: one operation's [`Deadline`], [`Held`] (a
//! lock taken together with its holder record), waits that report who they
//! wait for, and the try-lock probes that prove an owner dead.
//!
//! Invariants kept here:
//! - every wait first tries without blocking; when it has to block it says
//!   who holds the lock (through the caller's [`WaitObserver`] and tracing)
//!   and it can time out or not wait at all;
//! - lock files are opened with create-but-never-truncate, so every process
//!   locks the same inode, and this module never deletes one;
//! - the holder record is written only after the lock is taken and removed
//!   before it is released; it is for display, never for correctness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::holder::{self, Holder, Record};
use crate::mode::{LockMode, LockName, Wait};
use crate::sys::{self, Flock, LockFile, Root};

impl From<LockMode> for Flock {
    fn from(mode: LockMode) -> Flock {
        match mode {
            LockMode::Shared => Flock::Shared,
            LockMode::Exclusive => Flock::Exclusive,
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
            Wait::Timeout(d) => match sys::monotonic().checked_add(d) {
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
            (_, Some(end)) => Some(end.saturating_duration_since(sys::monotonic())),
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
    let taken = file.try_lock(mode.into()).map_err(|e| Error::io("lock", rel, e))?;
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
        let taken = file.lock_within(mode.into(), timeout).map_err(|e| Error::io("lock", rel, e))?;
        if !taken {
            let holders = holder::holders_of(root, rel);
            return Err(Error::Busy { lock: name, mode, holders, waited: deadline.budget() });
        }
    }
    let record = holder::register(root, rel, &name, mode);
    Ok(Held { record, file })
}
