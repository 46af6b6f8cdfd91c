//! This defines the world the simulated processes share besides the
//! directory: virtual time, the host's lock table, who waits for what, and
//! the trace.
//!
//! Locks follow flock(2): a lock belongs to the file (the inode), not to
//! the path it was named by, so it follows the file through a rename; each
//! `lock` call is its own open file description, so two calls conflict even
//! within one process; shared locks coexist,
//! exclusive ones exclude everyone; a waiter is woken when a release makes
//! its request grantable; and a process's locks go when it exits or is
//! killed.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A lock request's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Shared,
    Exclusive,
}

impl Mode {
    pub(crate) fn from_wasm(mode: u32) -> Option<Mode> {
        match mode {
            0 => Some(Mode::Shared),
            1 => Some(Mode::Exclusive),
            _ => None,
        }
    }

    pub(crate) fn letter(self) -> &'static str {
        match self {
            Mode::Shared => "sh",
            Mode::Exclusive => "ex",
        }
    }
}

/// What a lock is keyed by: the file's device and inode numbers.
pub(crate) type FileId = (u64, u64);

#[derive(Debug)]
struct Holder {
    handle: i32,
    pid: u32,
    mode: Mode,
    /// Kept open while the lock is held, as flock's open file description
    /// is, so the inode cannot be reused meanwhile. `None` when the file had
    /// been unlinked: the guest's own descriptor still names it.
    _file: Option<File>,
}

/// Why a process cannot run.
#[derive(Debug)]
pub(crate) enum Waiting {
    /// A blocked `lock`, until it is grantable or `deadline` (virtual ns).
    Lock { file: FileId, path: String, mode: Mode, deadline: Option<u64> },
    /// A `sleep_ms`, until the virtual time `until`.
    Sleep { until: u64 },
    /// A lease parent's `wait_children`, until its children have started
    /// and all of them have ended.
    Children,
}

/// Virtual time in nanoseconds since the simulation's epoch, shared with the
/// guests' clocks.
#[derive(Clone, Debug, Default)]
pub(crate) struct Clock(Arc<AtomicU64>);

impl Clock {
    pub(crate) fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn advance_to(&self, t: u64) {
        self.0.fetch_max(t, Ordering::Relaxed);
    }

    pub(crate) fn advance_by(&self, dt: u64) {
        self.0.fetch_add(dt, Ordering::Relaxed);
    }
}

/// One grant in the host's lock table, kept for the checks after the run.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub(crate) pid: u32,
    /// The path the lock was taken by.
    pub(crate) path: String,
    pub(crate) mode: Mode,
    /// Virtual time of the grant and of the release (`None`: never released).
    pub(crate) acquired: u64,
    pub(crate) released: Option<u64>,
}

/// One `lock` call that returned busy (`-1`).
#[derive(Clone, Debug)]
pub(crate) struct BusyReturn {
    pub(crate) pid: u32,
    pub(crate) path: String,
    /// The call's `timeout_ms` (0 for a try).
    pub(crate) timeout_ms: i64,
    /// Virtual time of the return.
    pub(crate) at: u64,
}

/// One `lock` call with a positive timeout, from its start to its return.
#[derive(Clone, Debug)]
pub(crate) struct TimedWait {
    pub(crate) pid: u32,
    pub(crate) path: String,
    pub(crate) timeout_ns: u64,
    pub(crate) start: u64,
    /// `(time, granted)` once it returned; `None` if its process died first.
    pub(crate) end: Option<(u64, bool)>,
}

/// Everything shared by the simulated processes except the directory.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub(crate) clock: Clock,
    locks: HashMap<FileId, Vec<Holder>>,
    handles: HashMap<i32, (FileId, String)>,
    next_handle: i32,
    waiting: HashMap<u32, Waiting>,
    /// Every lock event and report, in order, with time and pid.
    pub(crate) trace: Vec<String>,
    /// `(pid, time, line)` for each line a guest reported.
    pub(crate) reports: Vec<(u32, u64, String)>,
    /// Every grant, by handle order.
    pub(crate) holds: Vec<Hold>,
    /// Index into `holds` of each live handle.
    hold_of: HashMap<i32, usize>,
    /// Every `lock` call that returned busy.
    pub(crate) busy_returns: Vec<BusyReturn>,
    /// Every `lock` call with a positive timeout.
    pub(crate) timed_waits: Vec<TimedWait>,
    /// `(pid, timeout_ms)` of every `lock` call.
    pub(crate) lock_calls: Vec<(u32, i64)>,
    /// The live children of the lease parent (roles run under its lease).
    children: Vec<u32>,
    /// The file each lock path named when it was last locked by path.
    last_file: HashMap<String, FileId>,
    /// When the children were started (virtual ns), once they have been.
    pub(crate) children_started: Option<u64>,
    /// `(pid, time)` of each child's end.
    pub(crate) child_ends: Vec<(u32, u64)>,
    /// What of the directory is durable (the power-loss model).
    pub(crate) durable: crate::power::Durable,
}

impl World {
    pub(crate) fn event(&mut self, pid: u32, msg: impl AsRef<str>) {
        let now = self.clock.now();
        self.trace.push(format!("{:>6}.{:02}ms p{pid} {}", now / 1_000_000, now / 10_000 % 100, msg.as_ref()));
    }

    pub(crate) fn report(&mut self, pid: u32, line: String) {
        self.event(pid, format!("says: {line}"));
        let now = self.clock.now();
        self.reports.push((pid, now, line));
    }

    fn grantable(&self, file: FileId, mode: Mode) -> bool {
        match self.locks.get(&file) {
            None => true,
            Some(holders) => match mode {
                Mode::Exclusive => holders.is_empty(),
                Mode::Shared => holders.iter().all(|h| h.mode == Mode::Shared),
            },
        }
    }

    /// One poll of a `lock` call on `file` (named `path` in the trace):
    /// `Some(handle)` if granted, `Some(-1)` if busy and not allowed to wait
    /// (any more), `None` to keep waiting. `open` opens the file again for
    /// the holder (`Some(None)`: the path names a file, which needs no
    /// handle to stay, as in memory); if it has been unlinked meanwhile
    /// (`None`), the lock is still granted, as flock grants it on the
    /// descriptor the guest opened.
    pub(crate) fn poll_lock(
        &mut self,
        pid: u32,
        (file, path): (FileId, &str),
        mode: Mode,
        deadline: Option<u64>,
        open: impl FnOnce() -> Option<Option<File>>,
    ) -> Option<i32> {
        let waited = self.waiting.remove(&pid).is_some();
        if self.grantable(file, mode) {
            let opened = open();
            let unlinked = if opened.is_none() { " (unlinked file)" } else { "" };
            let handle = self.next_handle;
            self.next_handle += 1;
            self.locks.entry(file).or_default().push(Holder { handle, pid, mode, _file: opened.flatten() });
            self.hold_of.insert(handle, self.holds.len());
            let acquired = self.clock.now();
            self.holds.push(Hold { pid, path: path.to_owned(), mode, acquired, released: None });
            self.handles.insert(handle, (file, path.to_owned()));
            self.event(
                pid,
                format!("lock {} {path} -> #{handle}{}{unlinked}", mode.letter(), if waited { " (woken)" } else { "" }),
            );
            return Some(handle);
        }
        let now = self.clock.now();
        if deadline.is_some_and(|d| now >= d) {
            self.event(
                pid,
                format!("lock {} {path} -> busy{}", mode.letter(), if waited { " (timed out)" } else { "" }),
            );
            return Some(-1);
        }
        if !waited {
            let holders = self.holders_of(file);
            self.event(pid, format!("lock {} {path} -> blocks on {holders}", mode.letter()));
        }
        self.waiting.insert(pid, Waiting::Lock { file, path: path.to_owned(), mode, deadline });
        None
    }

    /// Notes a `lock` call's start; returns its index in `timed_waits` if
    /// it has a positive timeout.
    pub(crate) fn begin_lock_call(&mut self, pid: u32, path: &str, timeout_ms: i64) -> Option<usize> {
        self.lock_calls.push((pid, timeout_ms));
        (timeout_ms > 0).then(|| {
            let start = self.clock.now();
            let timeout_ns = timeout_ms.unsigned_abs().saturating_mul(1_000_000);
            self.timed_waits.push(TimedWait { pid, path: path.to_owned(), timeout_ns, start, end: None });
            self.timed_waits.len() - 1
        })
    }

    /// Notes a `lock` call's return with `result` (a handle, -1 or -2).
    pub(crate) fn end_lock_call(&mut self, pid: u32, path: &str, timeout_ms: i64, timed: Option<usize>, result: i32) {
        let now = self.clock.now();
        if result == -1 {
            self.busy_returns.push(BusyReturn { pid, path: path.to_owned(), timeout_ms, at: now });
        }
        if let Some(wait) = timed.and_then(|i| self.timed_waits.get_mut(i)) {
            wait.end = Some((now, result >= 0));
        }
    }

    /// The deadline of `pid`'s lock wait, if it has passed: a timer that
    /// has gone off, whose process the scheduler runs next.
    pub(crate) fn expired(&self, pid: u32) -> Option<u64> {
        match self.waiting.get(&pid)? {
            Waiting::Lock { deadline: Some(d), .. } if self.clock.now() >= *d => Some(*d),
            _ => None,
        }
    }

    fn holders_of(&self, file: FileId) -> String {
        let holders = self.locks.get(&file).map(Vec::as_slice).unwrap_or_default();
        holders.iter().map(|h| format!("p{}#{}({})", h.pid, h.handle, h.mode.letter())).collect::<Vec<_>>().join(",")
    }

    pub(crate) fn unlock(&mut self, pid: u32, handle: i32) {
        let Some((file, path)) = self.handles.remove(&handle) else {
            self.event(pid, format!("unlock #{handle}: unknown handle"));
            return;
        };
        self.note_release(handle);
        if let Some(holders) = self.locks.get_mut(&file) {
            holders.retain(|h| h.handle != handle);
            if holders.is_empty() {
                self.locks.remove(&file);
            }
        }
        self.event(pid, format!("unlock {path} #{handle}"));
    }

    fn note_release(&mut self, handle: i32) {
        let now = self.clock.now();
        if let Some(hold) = self.hold_of.remove(&handle).and_then(|i| self.holds.get_mut(i)) {
            hold.released = Some(now);
        }
    }

    /// One poll of a `sleep_ms` call: whether it is over.
    pub(crate) fn poll_sleep(&mut self, pid: u32, until: u64) -> bool {
        if self.clock.now() >= until {
            self.waiting.remove(&pid);
            return true;
        }
        self.waiting.insert(pid, Waiting::Sleep { until });
        false
    }

    /// The file a `lock` call on `path` locks: the one the path names now
    /// (`found`), or, if the path is gone, the one it named at the last lock
    /// call. The guest opens a lock file before it locks it by path, so a
    /// file unlinked in between is still the one its descriptor names,
    /// which flock would lock. The flag says the file is unlinked.
    pub(crate) fn resolve(&mut self, path: &str, found: Option<FileId>) -> Option<(FileId, bool)> {
        match found {
            Some(file) => {
                self.last_file.insert(path.to_owned(), file);
                Some((file, false))
            }
            None => self.last_file.get(path).map(|&file| (file, true)),
        }
    }

    /// Forgets which file each lock path named: after a power cut the
    /// directory is rebuilt, with new inodes.
    pub(crate) fn forget_files(&mut self) {
        self.last_file.clear();
    }

    /// Notes that `pid` runs under the lease parent's lease.
    pub(crate) fn add_child(&mut self, pid: u32) {
        self.children.push(pid);
    }

    /// Starts the children's phase: from now on the parent's
    /// `wait_children` returns once no child is left.
    pub(crate) fn start_children(&mut self) {
        self.children_started = Some(self.clock.now());
    }

    /// One poll of a `wait_children` call: whether every child has ended.
    pub(crate) fn poll_children(&mut self, pid: u32) -> bool {
        if self.children_started.is_some() && self.children.is_empty() {
            self.waiting.remove(&pid);
            return true;
        }
        self.waiting.insert(pid, Waiting::Children);
        false
    }

    /// Whether `pid` waits for children that have not been started yet.
    pub(crate) fn parked(&self, pid: u32) -> bool {
        self.children_started.is_none() && matches!(self.waiting.get(&pid), Some(Waiting::Children))
    }

    /// What the kernel does when a process exits or is killed: its locks
    /// are released and it waits for nothing.
    pub(crate) fn release_all(&mut self, pid: u32) {
        self.waiting.remove(&pid);
        if self.children.contains(&pid) {
            self.children.retain(|&c| c != pid);
            let now = self.clock.now();
            self.child_ends.push((pid, now));
        }
        let mut released: Vec<i32> = Vec::new();
        self.locks.retain(|_, holders| {
            holders.retain(|h| {
                if h.pid == pid {
                    released.push(h.handle);
                }
                h.pid != pid
            });
            !holders.is_empty()
        });
        released.sort_unstable();
        for &handle in &released {
            self.note_release(handle);
        }
        let names: Vec<String> = released
            .iter()
            .filter_map(|handle| self.handles.remove(handle).map(|(_, path)| format!("{path}#{handle}")))
            .collect();
        if !names.is_empty() {
            self.event(pid, format!("exit releases {}", names.join(" ")));
        }
    }

    /// Whether `pid` can make progress now.
    pub(crate) fn runnable(&self, pid: u32) -> bool {
        let now = self.clock.now();
        match self.waiting.get(&pid) {
            None => true,
            Some(Waiting::Lock { file, mode, deadline, .. }) => {
                self.grantable(*file, *mode) || deadline.is_some_and(|d| now >= d)
            }
            Some(Waiting::Sleep { until }) => now >= *until,
            Some(Waiting::Children) => self.children_started.is_some() && self.children.is_empty(),
        }
    }

    /// The earliest virtual time at which one of `pids` stops waiting by
    /// itself (a lock timeout or the end of a sleep).
    pub(crate) fn next_wakeup(&self, pids: &[u32]) -> Option<u64> {
        pids.iter()
            .filter_map(|pid| match self.waiting.get(pid)? {
                Waiting::Lock { deadline, .. } => *deadline,
                Waiting::Sleep { until } => Some(*until),
                Waiting::Children => None,
            })
            .min()
    }

    pub(crate) fn describe_wait(&self, pid: u32) -> String {
        match self.waiting.get(&pid) {
            None => "runnable".to_owned(),
            Some(Waiting::Lock { file, path, mode, .. }) => {
                format!("waits for {} {path} held by {}", mode.letter(), self.holders_of(*file))
            }
            Some(Waiting::Sleep { until }) => format!("sleeps until {until}ns"),
            Some(Waiting::Children) => {
                let children: Vec<String> = self.children.iter().map(|c| format!("p{c}")).collect();
                format!("waits for its children {}", children.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileId = (1, 1);

    fn open() -> Option<Option<File>> {
        Some(None)
    }

    fn lock(world: &mut World, pid: u32, mode: Mode, deadline: Option<u64>) -> Option<i32> {
        world.poll_lock(pid, (A, "a.lock"), mode, deadline, open)
    }

    #[test]
    fn shared_holders_coexist_and_exclude_an_exclusive_one() {
        let mut w = World::default();
        let h1 = lock(&mut w, 1, Mode::Shared, None).unwrap();
        let h2 = lock(&mut w, 2, Mode::Shared, None).unwrap();
        assert!(h1 >= 0 && h2 >= 0 && h1 != h2);
        assert_eq!(lock(&mut w, 3, Mode::Exclusive, None), None);
        assert!(!w.runnable(3));
        w.unlock(1, h1);
        assert!(!w.runnable(3));
        w.unlock(2, h2);
        assert!(w.runnable(3), "a release wakes the waiter");
        assert!(lock(&mut w, 3, Mode::Exclusive, None).unwrap() >= 0);
        assert_eq!(lock(&mut w, 1, Mode::Shared, Some(0)), Some(-1), "a try fails at once");
    }

    #[test]
    fn two_locks_of_one_process_conflict_like_two_open_file_descriptions() {
        let mut w = World::default();
        assert!(lock(&mut w, 1, Mode::Exclusive, None).unwrap() >= 0);
        assert_eq!(lock(&mut w, 1, Mode::Exclusive, Some(0)), Some(-1));
    }

    #[test]
    fn a_timeout_runs_out_in_virtual_time() {
        let mut w = World::default();
        lock(&mut w, 1, Mode::Exclusive, None).unwrap();
        assert_eq!(lock(&mut w, 2, Mode::Shared, Some(5_000_000)), None);
        assert_eq!(w.next_wakeup(&[1, 2]), Some(5_000_000));
        assert!(!w.runnable(2));
        w.clock.advance_to(5_000_000);
        assert!(w.runnable(2));
        assert_eq!(lock(&mut w, 2, Mode::Shared, Some(5_000_000)), Some(-1));
    }

    #[test]
    fn a_lock_file_unlinked_after_its_last_lock_is_still_the_one_locked() {
        let mut w = World::default();
        assert_eq!(w.resolve("a.lock", None), None, "a path never locked and gone names nothing");
        assert_eq!(w.resolve("a.lock", Some(A)), Some((A, false)));
        assert_eq!(w.resolve("a.lock", None), Some((A, true)), "flock locks the unlinked file the descriptor names");
        let b = (1, 2);
        assert_eq!(w.resolve("a.lock", Some(b)), Some((b, false)), "a new file at the path is a new lock");
    }

    #[test]
    fn an_exit_releases_every_lock_of_the_process() {
        let mut w = World::default();
        lock(&mut w, 1, Mode::Exclusive, None).unwrap();
        assert_eq!(lock(&mut w, 2, Mode::Exclusive, None), None);
        w.release_all(1);
        assert!(w.runnable(2));
        assert!(lock(&mut w, 2, Mode::Exclusive, None).unwrap() >= 0);
        assert!(w.trace.iter().any(|l| l.contains("exit releases a.lock#0")), "{:?}", w.trace);
    }
}
