//! This defines taking locks: one operation's [`Deadline`], [`Held`] (a
//! lock taken together with its holder record), waits that report who they
//! wait for, and the try-lock probes that prove an owner dead.
//!
//! Invariants kept here:
//! - every wait first tries without blocking; when it has to block it says
//!   who holds the lock (through the caller's [`WaitObserver`] and tracing)
//!   and it can time out or not wait at all;
//! - a wait never polls: it is one [`Waiting`], blocked in flock(2) (in a
//!   helper thread when it has a timeout), which wakes when the kernel
//!   grants the lock; a wait that gives up never leaves the lock held;
//! - a lock held by an ancestor of the caller is never waited for (the
//!   ancestor waits for the caller): it fails at once;
//! - lock files are opened with create-but-never-truncate, so every process
//!   locks the same inode, and this module never deletes one;
//! - the holder record is written only after the lock is taken and removed
//!   before it is released; it is for display, never for correctness;
//! - a waiter that finds a lock held and no record naming a holder (the
//!   instant between a holder's lock and its record, or a gc or status
//!   probe's try) does not say so at once: it keeps trying for the lock for
//!   up to [`IDENTIFY`], rescanning the records, and reports its wait only
//!   once a record names the holder (or that time is spent), so a wait
//!   message never shows "a process that has not identified itself" for
//!   an ordinary holder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::holder::{self, Holder, Record};
use crate::mode::{LockMode, LockName, Wait};
use crate::sys::{self, Flock, LockFile, Root, Waiting};

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

/// How long a shared locker defers to a queued exclusive waiter before it
/// goes ahead anyway. Long enough that a stream of short readers cannot
/// starve a writer; bounded, so a reader whose own parent holds the lock
/// shared (a nested pin under a waiting `rm`) is delayed, never deadlocked.
pub(crate) const COURTESY: Duration = Duration::from_secs(5);

/// Where a lock queues its exclusive waiters, if it does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Queue<'a> {
    /// Exclusive waiters hold this gate while they wait, and shared lockers
    /// pass through it first (a writer-intent gate).
    Gate(&'a str),
    /// The same gate, already open: a shared locker passes through it by
    /// taking and releasing its flock on this descriptor, which a lease
    /// holder keeps open while it holds the lease (see `Leased`).
    OpenGate(&'a str, &'a LockFile),
    /// Only ever taken exclusively (gc), or not worth queueing for.
    None,
}

/// Who waits for a lock: whom to tell when it blocks, the processes whose
/// locks it must never wait for (see [`crate::Options::ancestors`]), and
/// the command its holder record names, if not the process's own.
#[derive(Clone, Copy, Default)]
pub(crate) struct Waiter<'a> {
    pub(crate) observer: Option<&'a WaitObserver>,
    pub(crate) ancestors: Option<&'a crate::Ancestors>,
    pub(crate) command: Option<&'a [String]>,
}

/// How long a waiter that finds a lock held and no holder record keeps
/// trying for the lock, rescanning the records, before it reports the wait
/// without naming a holder. A holder writes its record right after it takes
/// the lock, and a probe holds a lock for an instant: either ends well
/// within this.
pub(crate) const IDENTIFY: Duration = Duration::from_millis(250);
/// The slice of [`IDENTIFY`] between two scans of the records.
const IDENTIFY_SLICE: Duration = Duration::from_millis(5);

/// Takes the lock at `rel` in `mode`, waiting as `deadline` allows.
///
/// With a [`Queue::Gate`], an exclusive locker that has to wait first takes
/// the gate exclusively and holds it until it has the lock; a shared locker
/// first passes through the gate (taking and releasing it shared), deferring
/// to a queued exclusive waiter for at most [`COURTESY`]. So readers that
/// keep coming cannot starve a writer.
/// Opens, creating it, the lock file `rel`. `clean` renames `locks/` aside
/// whole and makes it again; a process that finds it missing (that
/// `clean` was killed in between, and this process opened the cache
/// before) makes it again here rather than fail.
fn open_lock(root: &Root, rel: &str) -> std::io::Result<LockFile> {
    match root.open_lock(rel, true) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.starts_with(crate::layout::LOCKS_DIR) => {
            match root.create_dir(crate::layout::LOCKS_DIR) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
            root.open_lock(rel, true)
        }
        result => result,
    }
}

pub(crate) fn acquire(
    root: &Arc<Root>,
    rel: &str,
    name: LockName,
    mode: LockMode,
    deadline: Deadline,
    waiter: Waiter<'_>,
    queue: Queue<'_>,
) -> Result<Held, Error> {
    let Waiter { observer, ancestors, command } = waiter;
    let file = open_lock(root, rel).map_err(|e| Error::io("open lock file", rel, e))?;
    match (mode, queue) {
        (LockMode::Shared, Queue::Gate(gate)) => pass_gate(root, gate, None, &name, deadline, observer)?,
        (LockMode::Shared, Queue::OpenGate(gate, file)) => {
            pass_gate(root, gate, Some(file), &name, deadline, observer)?;
        }
        _ => {}
    }
    let taken = file.try_lock(mode.into()).map_err(|e| Error::lock(rel, e))?;
    let file = if taken {
        file
    } else {
        let holders = holder::holders_of(root, rel);
        // A try without waiting is only busy: callers probe with it (gc
        // skips what is in use).
        if deadline.no_wait() {
            return Err(Error::Busy { lock: name, mode, holders, waited: None });
        }
        let waiting = file.into_waiting(mode.into());
        let (holders, mut waiting) = match identify(root, rel, waiting, deadline, holders)? {
            Identified::Taken(file) => {
                let record = holder::register(root, rel, &name, mode, command);
                return Ok(Held { record, file });
            }
            Identified::Holders(holders, waiting) => (holders, waiting),
        };
        if let Some(holder) = held_by_ancestor(holders.clone(), ancestors.map_or(&[], |a| a.get())) {
            return Err(Error::HeldByAncestor { lock: name, mode, holder: Box::new(holder) });
        }
        tracing::info!(lock = %name, %mode, holders = holders.len(), "blocking on lock");
        if let Some(observer) = observer {
            observer(&WaitEvent { lock: &name, mode, holders: &holders, timeout: deadline.remaining() });
        }
        // Queue first, then wait: readers arriving from now on wait behind
        // us. Queueing behind another exclusive waiter is part of the same
        // wait, so it is reported, and times out, as the wait for the lock.
        let mut queued = None;
        if let (LockMode::Exclusive, Queue::Gate(gate) | Queue::OpenGate(gate, _)) = (mode, queue) {
            // No wait for the lock may be under way while this one queues:
            // a lock taken meanwhile would be held against the exclusive
            // waiter ahead, who holds the gate while it waits for the lock.
            // A wait given up leaves its open file description to its
            // helper (see `sys::Waiting`): lock a new one.
            let file = match waiting.into_file() {
                Some(file) => file,
                None => open_lock(root, rel).map_err(|e| Error::io("open lock file", rel, e))?,
            };
            queued = Some(queue_at(root, gate, &name, deadline, command));
            waiting = file.into_waiting(mode.into());
        }
        let taken = match queued {
            Some(Err(Error::Busy { .. })) => false,
            Some(Err(e)) => return Err(e),
            _ => waiting.wait(deadline.remaining()).map_err(|e| Error::lock(rel, e))?,
        };
        match waiting.into_file() {
            Some(file) if taken => file,
            _ => {
                let holders = holder::holders_of(root, rel);
                return Err(Error::Busy { lock: name, mode, holders, waited: deadline.budget() });
            }
        }
    };
    let record = holder::register(root, rel, &name, mode, command);
    Ok(Held { record, file })
}

/// What [`identify`] found.
enum Identified {
    /// The lock was free meanwhile, and is now taken.
    Taken(LockFile),
    /// The holders the records name (none if [`IDENTIFY`] was spent first),
    /// and the wait, which goes on.
    Holders(Vec<Holder>, Waiting),
}

/// With `holders` empty, keeps waiting for the lock for up to [`IDENTIFY`]
/// (and the caller's deadline), rescanning the records every
/// [`IDENTIFY_SLICE`], until a record names a holder or the lock is taken.
fn identify(
    root: &Root,
    rel: &str,
    mut waiting: Waiting,
    deadline: Deadline,
    holders: Vec<Holder>,
) -> Result<Identified, Error> {
    if !holders.is_empty() {
        return Ok(Identified::Holders(holders, waiting));
    }
    let end = sys::monotonic() + IDENTIFY;
    loop {
        let left = end.saturating_duration_since(sys::monotonic());
        let slice = deadline.remaining().map_or(left, |r| r.min(left)).min(IDENTIFY_SLICE);
        if slice.is_zero() {
            return Ok(Identified::Holders(Vec::new(), waiting));
        }
        if waiting.wait(Some(slice)).map_err(|e| Error::lock(rel, e))? {
            // Taken: no helper can still hold the file.
            return match waiting.into_file() {
                Some(file) => Ok(Identified::Taken(file)),
                None => Err(Error::lock(rel, std::io::Error::other("a lock taken was lost"))),
            };
        }
        let holders = holder::holders_of(root, rel);
        if !holders.is_empty() {
            return Ok(Identified::Holders(holders, waiting));
        }
    }
}

/// Takes the gate of `name` exclusively for as long as the caller waits for
/// the lock itself, with a holder record so that readers held back can say
/// whom they wait behind.
fn queue_at(
    root: &Arc<Root>,
    gate: &str,
    name: &LockName,
    deadline: Deadline,
    command: Option<&[String]>,
) -> Result<Held, Error> {
    let queued = LockName::Queue(Box::new(name.clone()));
    let waiter = Waiter { command, ..Waiter::default() };
    acquire(root, gate, queued, LockMode::Exclusive, deadline, waiter, Queue::None)
}

/// The holder among `holders` that is an ancestor of this process (its pid
/// is in `ancestors`, and it runs on this host), if any.
pub(crate) fn held_by_ancestor(holders: Vec<Holder>, ancestors: &[u32]) -> Option<Holder> {
    if ancestors.is_empty() {
        return None;
    }
    let host = holder::this_host();
    holders.into_iter().find(|h| h.host == host && ancestors.contains(&h.pid))
}

/// Passes through the gate of `name` as a shared locker: at once if no
/// exclusive waiter is queued; otherwise after it, or after [`COURTESY`].
/// Through `open`, the gate's descriptor kept open by the caller, an
/// uncontended pass takes and releases its flock before it returns. A pass
/// that has to wait does so on a description of its own: a wait given up
/// leaves its description to its helper thread (see `sys::Waiting`), which
/// must never be one that outlives the call.
fn pass_gate(
    root: &Arc<Root>,
    gate: &str,
    open: Option<&LockFile>,
    name: &LockName,
    deadline: Deadline,
    observer: Option<&WaitObserver>,
) -> Result<(), Error> {
    if let Some(kept) = open
        && kept.try_lock(Flock::Shared).map_err(|e| Error::lock(gate, e))?
    {
        kept.unlock();
        return Ok(());
    }
    let file = match open_lock(root, gate) {
        Ok(file) => file,
        // A gate that cannot be created on a full filesystem cannot have
        // been created by an exclusive waiter either: nobody is queued.
        Err(e) if crate::sys::is_no_space(&e) => {
            tracing::debug!(%gate, "no space for the gate; nobody can be queued at it");
            return Ok(());
        }
        Err(e) => return Err(Error::io("open lock file", gate, e)),
    };
    // Passing is taking and letting go: dropping `file` (or the wait made of
    // it) releases the flock.
    if file.try_lock(Flock::Shared).map_err(|e| Error::lock(gate, e))? {
        return Ok(());
    }
    let queued = LockName::Queue(Box::new(name.clone()));
    let holders = holder::holders_of(root, gate);
    if deadline.no_wait() {
        return Err(Error::Busy { lock: queued, mode: LockMode::Shared, holders, waited: None });
    }
    let waiting = file.into_waiting(Flock::Shared);
    let (holders, mut waiting) = match identify(root, gate, waiting, deadline, holders)? {
        // Passed: dropping the file releases the gate.
        Identified::Taken(_) => return Ok(()),
        Identified::Holders(holders, waiting) => (holders, waiting),
    };
    let courtesy = deadline.remaining().map_or(COURTESY, |left| left.min(COURTESY));
    tracing::info!(lock = %name, holders = holders.len(), "deferring to a queued exclusive waiter");
    if let Some(observer) = observer {
        observer(&WaitEvent { lock: &queued, mode: LockMode::Shared, holders: &holders, timeout: Some(courtesy) });
    }
    // Passed or not, the wait ends here: dropping it releases the gate if
    // it was taken, and leaves an unfinished wait to release what it takes.
    if !waiting.wait(Some(courtesy)).map_err(|e| Error::lock(gate, e))? {
        // The courtesy is spent: go ahead, unless the caller's own budget is.
        if deadline.remaining().is_some_and(|left| left.is_zero()) {
            let holders = holder::holders_of(root, gate);
            return Err(Error::Busy { lock: queued, mode: LockMode::Shared, holders, waited: deadline.budget() });
        }
    }
    Ok(())
}
