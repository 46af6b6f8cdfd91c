//! This defines holder records: who holds which lock, for display.
//!
//! A record is a small JSON file in `.safecache/holders/`, created and
//! flocked by the holder right after it takes a lock, and removed just
//! before the lock is released. A record whose flock can be taken belongs
//! to a dead holder (the kernel released its locks), so it is not shown, and
//! gc removes it.
//!
//! Invariant: records are only ever read for display, and to refuse to wait
//! for a lock that an ancestor of the caller holds (which would never end);
//! no decision about an entry, a temp or trash is taken from a record.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::display::{self, escape};
use crate::layout::{self, HOLDERS_DIR, random_suffix};
use crate::mode::{LockMode, LockName};
use crate::sys::{self, FileKind, Flock, LockFile, Root, Slot};

/// How records are probed: shared, so two processes probing one record at
/// the same moment never take each other for its live holder (a live
/// holder holds its record exclusively).
const PROBE: Flock = Flock::Shared;

/// The largest holder record read; a real one is a few hundred bytes.
const MAX_RECORD_LEN: u64 = 64 * 1024;

/// One live holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// What the lock protects.
    pub lock: LockName,
    /// The lock file, relative to the cache root.
    pub lock_file: String,
    /// The mode it is held in.
    pub mode: LockMode,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// What the holder runs, quoted as a shell would: its command line, or
    /// what it told [`set_process_command`] (`run` gives its CMD).
    pub command: String,
    /// The same as separate arguments (empty in records written before
    /// this field existed).
    #[serde(default)]
    pub argv: Vec<String>,
    /// When it took the lock, in seconds since the Unix epoch.
    pub since: u64,
}

impl Holder {
    /// How long ago the lock was taken.
    pub fn age(&self) -> Duration {
        // `since` comes from a file anyone with write access could have
        // edited: a time past what the clock can represent reads as now.
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.since))
            .and_then(|since| sys::now().duration_since(since).ok())
            .unwrap_or_default()
    }
}

/// Escaped for a terminal: the fields come from a file on disk.
impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (`{}`) on {}, {} {}",
            self.pid,
            display::short_command(&self.command),
            escape(&self.host),
            self.mode,
            // Records have one-second resolution.
            match self.age().as_secs() {
                0 => "since under a second".to_owned(),
                secs => format!("for {}", display::duration(Duration::from_secs(secs))),
            }
        )
    }
}

/// The holders of one lock in a phrase: "pid 12 (`cargo build`) on ci-7,
/// shared for 3s and 2 other processes", or what to say when none has
/// identified itself yet.
pub fn describe_holders(holders: &[Holder]) -> String {
    match holders {
        [] => {
            "a process that has not identified itself yet (a gc or status probe holds a lock for an instant)".to_owned()
        }
        [one] => one.to_string(),
        // A process holding the lock twice (a pin and a fill of one key,
        // say) is one process.
        [first, rest @ ..] => {
            let mut pids: Vec<u32> = rest.iter().map(|h| h.pid).filter(|&p| p != first.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            match pids.len() {
                0 => first.to_string(),
                n => format!("{first} and {}", display::count(n, "other process", "other processes")),
            }
        }
    }
}

/// A record this process wrote for a lock it holds. Dropping it makes the
/// record name nothing (its first byte becomes [`IDLE`]) and gives it back
/// to its handle's pool (`sys::Pool`), before the lock is released; a record that
/// cannot be emptied is deleted instead.
#[derive(Debug)]
pub(crate) struct Record {
    root: Arc<Root>,
    slot: Option<Slot>,
}

impl Drop for Record {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let emptied = self.root.rewrite_locked(&slot.rel, &slot.file, &[IDLE], 0);
        if let Err(e) = &emptied {
            tracing::debug!(record = %slot.rel, error = %e, "could not empty holder record; removing it");
        }
        for extra in self.root.records.release(slot, emptied.is_ok()) {
            remove(&self.root, &extra.rel);
        }
    }
}

fn remove(root: &Root, rel: &str) {
    if let Err(e) = root.remove_file(rel) {
        tracing::debug!(record = %rel, error = %e, "could not remove holder record");
    }
}

/// The first byte of a record that names no lock: an idle record of a live
/// process, kept for its next lock. It is not JSON, so every reader skips
/// the record.
const IDLE: u8 = b'#';

static COMMAND: OnceLock<Vec<String>> = OnceLock::new();

/// Names this process in holder records by `argv`, what it runs on behalf
/// of the user (`cargo safecache run` gives its CMD), rather than by its own
/// command line. Call it before taking any lock: the identity is fixed the
/// first time a record is written, and later calls are ignored. The locks
/// of a fill can be named by the fill's own command instead
/// ([`crate::Options::fill_command`]).
pub fn set_process_command(argv: Vec<String>) {
    let _ = COMMAND.set(argv);
}

fn identity() -> &'static sys::Identity {
    static IDENTITY: OnceLock<sys::Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let mut id = sys::process_identity();
        if let Some(argv) = COMMAND.get() {
            id.argv.clone_from(argv);
        }
        id
    })
}

/// This host's name, as holder records give it.
pub(crate) fn this_host() -> &'static str {
    &identity().host
}

/// This process's identity as a holder of `name`, without writing a record.
pub(crate) fn this_process(name: &LockName, lock_file: &str, mode: LockMode) -> Holder {
    this_process_as(name, lock_file, mode, None)
}

/// [`this_process`], named by `argv` (what it does with this lock: the
/// fill it runs) instead of the process-wide command, when given.
pub(crate) fn this_process_as(name: &LockName, lock_file: &str, mode: LockMode, argv: Option<&[String]>) -> Holder {
    let id = identity();
    let argv = argv.map_or_else(|| id.argv.clone(), <[String]>::to_vec);
    Holder {
        lock: name.clone(),
        lock_file: lock_file.to_owned(),
        mode,
        pid: id.pid,
        host: id.host.clone(),
        command: display::shell_words(&argv),
        argv,
        since: sys::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    }
}

/// Writes this process's record for the lock at `lock_file`, naming it by
/// `argv` if given (see [`this_process_as`]). A failure only costs the
/// display, so it is logged, not returned.
pub(crate) fn register(
    root: &Arc<Root>,
    lock_file: &str,
    name: &LockName,
    mode: LockMode,
    argv: Option<&[String]>,
) -> Option<Record> {
    let result = record_json(name, lock_file, mode, argv).map_err(std::io::Error::other).and_then(|bytes| {
        match root.records.take() {
            Some(slot) => rewrite(root, slot, bytes),
            None => create(root, &bytes),
        }
    });
    match result {
        Ok(slot) => {
            root.records.hold();
            Some(Record { root: Arc::clone(root), slot: Some(slot) })
        }
        Err(e) => {
            tracing::warn!(lock = lock_file, error = %e, "could not write holder record");
            None
        }
    }
}

/// The record of this process holding `name` ([`this_process_as`], as
/// JSON). With the process-wide command, the fields that name the process
/// are serialized once per process.
fn record_json(
    name: &LockName,
    lock_file: &str,
    mode: LockMode,
    argv: Option<&[String]>,
) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Identity<'a> {
        pid: u32,
        host: &'a str,
        command: String,
        argv: &'a [String],
    }
    static IDENTITY_JSON: OnceLock<String> = OnceLock::new();
    if argv.is_some() {
        return serde_json::to_vec(&this_process_as(name, lock_file, mode, argv));
    }
    let identity = IDENTITY_JSON.get_or_init(|| {
        let id = identity();
        let fields = Identity { pid: id.pid, host: &id.host, command: display::shell_words(&id.argv), argv: &id.argv };
        // `{...}` without its braces, to go among the other fields.
        let json = serde_json::to_string(&fields).unwrap_or_default();
        json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned()
    });
    let since = sys::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut out = Vec::with_capacity(160 + identity.len());
    out.extend_from_slice(b"{\"lock\":");
    serde_json::to_writer(&mut out, name)?;
    out.extend_from_slice(b",\"lock_file\":");
    serde_json::to_writer(&mut out, lock_file)?;
    out.extend_from_slice(b",\"mode\":");
    serde_json::to_writer(&mut out, &mode)?;
    if !identity.is_empty() {
        out.push(b',');
        out.extend_from_slice(identity.as_bytes());
    }
    out.extend_from_slice(format!(",\"since\":{since}}}").as_bytes());
    Ok(out)
}

/// A new record holding `bytes`, written and flocked under a name display
/// scans skip, then renamed into view (the flock follows the inode), so no
/// scan ever sees a live record unlocked.
fn create(root: &Arc<Root>, bytes: &[u8]) -> std::io::Result<Slot> {
    let suffix = random_suffix().map_err(std::io::Error::other)?;
    let staging = layout::holder_staging(&suffix);
    let rel = layout::holder_record(&suffix);
    let file = root.create_locked(&staging, bytes)?;
    if let Err(e) = root.rename(&staging, &rel) {
        let _ = root.remove_file(&staging);
        return Err(e);
    }
    Ok(Slot { rel, file, len: bytes.len() })
}

/// Writes `bytes` over the idle record `slot`: everything after the first
/// byte while that byte still says [`IDLE`], then the first byte, so no
/// read ever parses a record half old and half new (it sees the idle mark
/// until the last write). Shorter contents are padded with spaces, which
/// JSON allows after the value.
fn rewrite(root: &Arc<Root>, mut slot: Slot, mut bytes: Vec<u8>) -> std::io::Result<Slot> {
    if bytes.len() < slot.len {
        bytes.resize(slot.len, b' ');
    }
    let written = root
        .rewrite_locked(&slot.rel, &slot.file, &bytes[1..], 1)
        .and_then(|()| root.rewrite_locked(&slot.rel, &slot.file, &bytes[..1], 0));
    if let Err(e) = written {
        // Idle or half written: either way it names nothing; let it go.
        let _ = root.remove_file(&slot.rel);
        return Err(e);
    }
    slot.len = bytes.len();
    Ok(slot)
}

/// Live holders of every lock, or of one lock file.
pub(crate) fn live_holders(root: &Root, lock_file: Option<&str>) -> Vec<Holder> {
    let mut out = Vec::new();
    scan(root, |rel, probe| {
        if probe.is_some() {
            return; // its flock was free: the holder is dead
        }
        let Ok(bytes) = root.read(rel, MAX_RECORD_LEN) else { return };
        let Ok(holder) = serde_json::from_slice::<Holder>(&bytes) else { return };
        if lock_file.is_none_or(|l| l == holder.lock_file) {
            out.push(holder);
        }
    });
    out.sort_by_key(|h| (h.since, h.pid));
    out
}

pub(crate) fn holders_of(root: &Root, lock_file: &str) -> Vec<Holder> {
    live_holders(root, Some(lock_file))
}

/// Deletes the records of dead holders; returns how many.
///
/// A `.new` record is reaped when its flock is free: its holder flocks it
/// right after creating it, so this misjudges one only in that instant, and
/// then the holder merely goes unlisted.
pub(crate) fn reap_dead(root: &Root) -> usize {
    let mut reaped = 0;
    scan_with(root, &[".json", ".new"], |rel, probe| {
        if probe.is_some() && root.remove_file(rel).is_ok() {
            reaped += 1;
        }
    });
    reaped
}

/// Calls `f(rel, probe)` for each record, where `probe` is `Some` (and holds
/// the record's flock) when the record's holder is dead.
fn scan(root: &Root, f: impl FnMut(&str, Option<&LockFile>)) {
    scan_with(root, &[".json"], f);
}

fn scan_with(root: &Root, suffixes: &[&str], mut f: impl FnMut(&str, Option<&LockFile>)) {
    let Ok(names) = root.read_dir(HOLDERS_DIR) else { return };
    for entry in names {
        if entry.kind != FileKind::File {
            continue;
        }
        let Some(name) = entry.name.to_str() else { continue };
        if !suffixes.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let rel = format!("{HOLDERS_DIR}/{name}");
        // Probe with `create = false`: a record removed meanwhile must not be
        // recreated empty.
        let probe = match root.open_lock(&rel, false) {
            Ok(file) => file,
            Err(_) => continue,
        };
        // A shared probe: a live holder holds its record exclusively, so
        // the probe fails only against a live holder, never against another
        // process probing the same record at the same moment (two
        // exclusive probes would take each other for live holders).
        match probe.try_lock(PROBE) {
            Ok(true) => f(&rel, Some(&probe)),
            Ok(false) => f(&rel, None),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Arc<Root>) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open_ambient(dir.path()).unwrap();
        root.create_dir(".safecache").unwrap();
        root.create_dir(HOLDERS_DIR).unwrap();
        (dir, Arc::new(root))
    }

    #[test]
    fn a_live_record_is_shown_and_a_dead_one_is_not() {
        let (_dir, root) = root();
        let record = register(&root, "x.lock", &LockName::Lease, LockMode::Shared, None).unwrap();
        assert_eq!(holders_of(&root, "x.lock").len(), 1);
        drop(record);
        assert!(holders_of(&root, "x.lock").is_empty());
    }

    /// Simulation seed 7161 of `timeouts`: a dead holder's record, probed by
    /// another process at the same moment, must still read as dead.
    #[test]
    fn a_dead_record_being_probed_by_someone_else_is_still_dead() {
        let (_dir, root) = root();
        let holder = this_process(&LockName::Lease, "x.lock", LockMode::Shared);
        let rel = layout::holder_record("dead");
        // Written and locked by a holder that then died: the flock is gone,
        // the file stays.
        drop(root.create_locked(&rel, &serde_json::to_vec(&holder).unwrap()).unwrap());
        let other_prober = root.open_lock(&rel, false).unwrap();
        assert!(other_prober.try_lock(PROBE).unwrap());
        assert!(holders_of(&root, "x.lock").is_empty(), "the probed dead record was taken for a live holder");
        assert_eq!(reap_dead(&root), 1);
    }

    #[test]
    fn a_record_reads_back_as_this_process() {
        for (name, mode) in
            [(LockName::Lease, LockMode::Shared), (LockName::Entry("a/b\"c".into()), LockMode::Exclusive)]
        {
            let json = record_json(&name, "locks/x.lock", mode, None).unwrap();
            let mut read: Holder = serde_json::from_slice(&json).unwrap();
            let mut want = this_process(&name, "locks/x.lock", mode);
            assert!(read.since.abs_diff(want.since) <= 1);
            (read.since, want.since) = (0, 0);
            assert_eq!(read, want);
        }
    }

    /// An idle record (a live handle's, kept for its next lock) names
    /// nothing, and one rewritten for a shorter lock names its new lock.
    #[test]
    fn an_idle_record_names_nothing_and_a_reused_one_names_its_new_lock() {
        let (_dir, root) = root();
        let lease = register(&root, "lease.lock", &LockName::Lease, LockMode::Shared, None).unwrap();
        let long = register(&root, "locks/long-long-long.lock", &LockName::Lease, LockMode::Shared, None).unwrap();
        assert_eq!(holders_of(&root, "locks/long-long-long.lock").len(), 1);
        drop(long);
        assert_eq!(root.read_dir(HOLDERS_DIR).unwrap().len(), 2, "kept for the next lock");
        assert_eq!(live_holders(&root, None).len(), 1, "an idle record names nothing");
        let short = register(&root, "x.lock", &LockName::Lease, LockMode::Exclusive, None).unwrap();
        assert_eq!(root.read_dir(HOLDERS_DIR).unwrap().len(), 2, "the same file, rewritten");
        let holders = holders_of(&root, "x.lock");
        assert_eq!(holders.len(), 1);
        assert_eq!(holders[0].mode, LockMode::Exclusive);
        drop(short);
        assert_eq!(live_holders(&root, None).len(), 1);
        drop(lease);
        assert!(root.read_dir(HOLDERS_DIR).unwrap().is_empty(), "no lock held, no record left");
    }

    #[test]
    fn garbage_records_are_skipped_and_ages_never_overflow() {
        let (_dir, root) = root();
        let mut holder = this_process(&LockName::Lease, "x.lock", LockMode::Shared);
        holder.since = u64::MAX;
        assert_eq!(holder.age(), Duration::ZERO);
        assert!(holder.to_string().contains("since under a second"));
        holder.command = "evil\x1b[2J\nforged line".to_owned();
        assert!(!holder.to_string().contains('\x1b') && !holder.to_string().contains('\n'));
        let live = root.create_locked(&layout::holder_record("garbage"), b"\xff{not json").unwrap();
        assert!(holders_of(&root, "x.lock").is_empty());
        drop(live);
    }
}
