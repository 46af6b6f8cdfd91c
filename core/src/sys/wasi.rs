//! This defines the WASI primitives behind [`super::Root`]: std::fs
//! relative to a preopened directory, with locks and the process id provided
//! by the host through imports from the module `safecache_host`. The
//! contracts are stated once, in `sys/mod.rs`.
//!
//! The WASI host confines every path to the preopen (`..` and escaping
//! symlinks are refused), so std::fs relative to it is this target's
//! capability. This is the one module allowed to call std::fs.
//!
//! The host side of the imports is implemented by the simulator in the
//! `wasm-tests` crate:
//!
//! | import | signature | meaning |
//! |---|---|---|
//! | `lock` | `(path_ptr, path_len, mode, timeout_ms: i64) -> i32` | flock-like lock on the file at a path relative to the cache root (the host keys it by inode); mode 0 shared, 1 exclusive; timeout -1 waits forever, 0 only tries; returns a handle >= 0, -1 if busy, -2 on error |
//! | `unlock` | `(handle)` | releases a handle |
//! | `pid` | `() -> u32` | the simulated process id |
//! | `marked` | `(path_ptr, path_len) -> i32` | whether the directory at the path carries the uncommitted mark (the sticky bit): 1 yes, 0 no, -1 absent, -2 error |
//! | `set_mark` | `(path_ptr, path_len, on) -> i32` | sets (`on` = 1) or clears the mark of the directory at the path, never following a symlink; returns 1 or 0 for whether it was set before, -1 absent, -2 error |
//! | `sync` | `(path_ptr, path_len) -> i32` | fsync of the file or directory at a path relative to the cache root: the host records its state as durable (its power-loss model, docs/SIMULATION.md); returns 0, -1 if absent, -2 on error |
#![allow(clippy::disallowed_methods)]

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DirEntry, FileKind, Flock, Identity, Meta};

#[link(wasm_import_module = "safecache_host")]
unsafe extern "C" {
    #[link_name = "lock"]
    fn host_lock(path_ptr: *const u8, path_len: usize, mode: u32, timeout_ms: i64) -> i32;
    #[link_name = "unlock"]
    fn host_unlock(handle: i32);
    #[link_name = "pid"]
    fn host_pid() -> u32;
    #[link_name = "marked"]
    fn host_marked(path_ptr: *const u8, path_len: usize) -> i32;
    #[link_name = "set_mark"]
    fn host_set_mark(path_ptr: *const u8, path_len: usize, on: u32) -> i32;
    #[link_name = "sync"]
    fn host_sync(path_ptr: *const u8, path_len: usize) -> i32;
}

/// fsyncs `rel` through the host, which keeps the durable image that a
/// simulated power cut restores. WASI p1 cannot open a directory for
/// syncing, and the host must see every sync anyway.
fn sync(rel: &Path) -> io::Result<()> {
    let rel = rel.to_str().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the pointer and length describe a live, initialized byte
    // slice for the duration of the call; the host only reads it.
    match unsafe { host_sync(rel.as_ptr(), rel.len()) } {
        0 => Ok(()),
        -1 => Err(io::ErrorKind::NotFound.into()),
        _ => Err(io::Error::other(format!("host refused to sync `{rel}`"))),
    }
}

/// The `safecache_host` imports behind safe functions: the one place that
/// calls them, for the core and (through `safecache::sim`) the simulator's
/// guest.
pub(crate) mod host {
    use std::io;

    /// Takes the host lock on `rel` (relative to the cache), shared or
    /// exclusive, waiting up to `timeout_ms` virtual milliseconds (`-1`:
    /// forever, `0`: not at all). Returns a handle (`>= 0`), `-1` if the
    /// lock stayed busy, or another negative code if the host refused.
    pub fn lock(rel: &str, exclusive: bool, timeout_ms: i64) -> i32 {
        // SAFETY: the pointer and length describe a live, initialized byte
        // slice for the duration of the call; the host only reads it.
        unsafe { super::host_lock(rel.as_ptr(), rel.len(), u32::from(exclusive), timeout_ms) }
    }

    /// Releases a lock by the handle [`lock`] returned.
    pub fn unlock(handle: i32) {
        // SAFETY: an integer argument; the host ignores a handle it did not
        // give this process.
        unsafe { super::host_unlock(handle) }
    }

    /// This simulated process's pid.
    pub fn pid() -> u32 {
        // SAFETY: a host import without arguments.
        unsafe { super::host_pid() }
    }

    /// fsyncs `rel` (relative to the cache; `""` is the cache itself)
    /// through the host, which records what becomes durable.
    ///
    /// # Errors
    /// `NotFound` if `rel` does not exist; another error if the host
    /// refused.
    pub fn sync(rel: &str) -> io::Result<()> {
        super::sync(std::path::Path::new(rel))
    }
}

/// The cache root: a directory beneath a WASI preopen.
#[derive(Debug)]
pub(crate) struct Dir {
    root: PathBuf,
}

pub(crate) fn create_ambient_dir_all(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

pub(crate) fn ambient_id(_path: &Path) -> io::Result<Option<(u64, u64)>> {
    Ok(None)
}

/// WASI has no users: the host's preopen is the only authority.
/// WASI p1 has no `SEEK_DATA`: the caller reads everything.
pub(crate) fn next_data(_file: &std::fs::File, _pos: u64) -> io::Result<Option<(u64, u64)>> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn effective_uid() -> Option<u32> {
    None
}

pub(crate) fn in_group(_gid: u32) -> bool {
    false
}

impl Dir {
    pub(crate) fn open_ambient(path: &Path) -> io::Result<Dir> {
        let meta = fs::metadata(path)?;
        if !meta.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        Ok(Dir { root: path.to_owned() })
    }

    pub(crate) fn fs_magic(&self) -> Option<u64> {
        None
    }

    fn at(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        if rel.as_os_str().is_empty() { self.root.clone() } else { self.root.join(rel) }
    }

    pub(crate) fn create_dir(&self, rel: &str) -> io::Result<()> {
        fs::create_dir(self.at(rel))
    }

    pub(crate) fn create_file(&self, rel: &str) -> io::Result<std::fs::File> {
        OpenOptions::new().write(true).create_new(true).open(self.at(rel))
    }

    pub(crate) fn write_new(&self, rel: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(self.at(rel))?;
        // A write that fails (a full disk) leaves no half file behind: the
        // file is new, so it is this call's to delete.
        file.write_all(bytes).and_then(|()| if sync { self::sync(Path::new(rel)) } else { Ok(()) }).inspect_err(|_| {
            let _ = fs::remove_file(self.at(rel));
        })
    }

    pub(crate) fn create_empty(&self, rel: &str) -> io::Result<()> {
        OpenOptions::new().write(true).create_new(true).open(self.at(rel)).map(drop)
    }

    /// WASI p1 has no portable no-follow open in std: the name is checked
    /// with a no-follow stat first, and the opened file again (the simulator
    /// never swaps a name between the two).
    pub(crate) fn open_regular(&self, rel: &str) -> io::Result<File> {
        self.check_regular(Path::new(rel))?;
        let file = File::open(self.at(rel))?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
        }
        Ok(file)
    }

    /// [`Dir::open_regular`] for a name that need not be UTF-8.
    pub(crate) fn open_read(&self, rel: &Path) -> io::Result<File> {
        self.check_regular(rel)?;
        let file = File::open(self.at(rel))?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
        }
        Ok(file)
    }

    fn check_regular(&self, rel: &Path) -> io::Result<()> {
        if self.stat(rel)?.kind != FileKind::File {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
        }
        Ok(())
    }

    /// WASI's `path_readlink` reads the link itself, never its target.
    pub(crate) fn read_link(&self, rel: &Path) -> io::Result<Vec<u8>> {
        Ok(fs::read_link(self.at(rel))?.into_os_string().into_encoded_bytes())
    }

    pub(crate) fn stat(&self, rel: &Path) -> io::Result<Meta> {
        let meta = fs::symlink_metadata(self.at(rel))?;
        Ok(Meta {
            kind: FileKind::of(&meta.file_type()),
            len: meta.len(),
            modified: meta.modified().ok(),
            owner: None,
            id: None,
        })
    }

    /// `rel` as the host imports take it: relative to the cache root, which
    /// the host's shared directory is.
    fn host_rel(rel: &Path) -> io::Result<String> {
        rel.to_str().map(str::to_owned).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not UTF-8"))
    }

    /// WASI p1 has no mode bits: the host reads the mark.
    pub(crate) fn is_marked(&self, rel: &Path, _meta: &Meta) -> io::Result<bool> {
        let path = Self::host_rel(rel)?;
        // SAFETY: a host import reading `path.len()` bytes at `path`.
        mark_result(unsafe { host_marked(path.as_ptr(), path.len()) })
    }

    pub(crate) fn set_mark(&self, rel: &Path, on: bool) -> io::Result<bool> {
        let path = Self::host_rel(rel)?;
        // SAFETY: a host import reading `path.len()` bytes at `path`.
        mark_result(unsafe { host_set_mark(path.as_ptr(), path.len(), u32::from(on)) })
    }

    pub(crate) fn read_dir(&self, rel: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.at(rel))? {
            let entry = entry?;
            out.push(DirEntry { name: entry.file_name(), kind: FileKind::of(&entry.file_type()?) });
        }
        Ok(out)
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(self.at(from), self.at(to))
    }

    /// WASI p1's `path_rename` has no NOREPLACE flag.
    pub(crate) fn rename_noreplace(&self, _from: &str, _to: &str) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub(crate) fn remove_file(&self, rel: &Path) -> io::Result<()> {
        fs::remove_file(self.at(rel))
    }

    /// std's WASI implementation walks by directory descriptor and never
    /// follows symlinks.
    pub(crate) fn remove_dir_all(&self, rel: &Path) -> io::Result<()> {
        fs::remove_dir_all(self.at(rel))
    }

    pub(crate) fn sync_file(&self, rel: &Path) -> io::Result<()> {
        sync(rel)
    }

    pub(crate) fn sync_dir(&self, rel: &Path) -> io::Result<()> {
        sync(rel)
    }

    /// The file exists on disk (so `status` and gc see it), but the lock
    /// itself lives in the host, which keys it by the file's identity (its
    /// inode), as flock does: a holder record keeps its lock across the
    /// rename that makes it visible.
    pub(crate) fn open_lock(&self, rel: &str, create: bool) -> io::Result<LockFile> {
        match self.check_regular(Path::new(rel)) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
        OpenOptions::new().read(true).write(true).create(create).truncate(false).open(self.at(rel))?;
        Ok(LockFile { rel: rel.to_owned(), handle: Cell::new(None) })
    }

    /// The lock lives in the host, keyed by the file's identity: the
    /// record is opened again by name (refused unless a regular file) and
    /// written there.
    pub(crate) fn rewrite_locked(&self, rel: &str, _file: &LockFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.check_regular(Path::new(rel))?;
        let mut file = OpenOptions::new().write(true).open(self.at(rel))?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    pub(crate) fn create_locked(&self, rel: &str, bytes: &[u8]) -> io::Result<LockFile> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(self.at(rel))?;
        file.write_all(bytes).inspect_err(|_| {
            let _ = fs::remove_file(self.at(rel));
        })?;
        let lock = LockFile { rel: rel.to_owned(), handle: Cell::new(None) };
        if !lock.try_lock(Flock::Exclusive)? {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "a new holder record was already locked"));
        }
        Ok(lock)
    }
}

/// The answer of the `marked` and `set_mark` imports.
fn mark_result(code: i32) -> io::Result<bool> {
    match code {
        0 => Ok(false),
        1 => Ok(true),
        -1 => Err(io::ErrorKind::NotFound.into()),
        _ => Err(io::Error::other("the host could not read or set the uncommitted mark")),
    }
}

/// A lock on a path, held in the host. Dropping it releases the lock, as
/// does the host when it kills this simulated process.
#[derive(Debug)]
pub(crate) struct LockFile {
    rel: String,
    handle: Cell<Option<i32>>,
}

impl LockFile {
    fn acquire(&self, mode: Flock, timeout_ms: i64) -> io::Result<bool> {
        let handle = host::lock(&self.rel, mode == Flock::Exclusive, timeout_ms);
        match handle {
            h if h >= 0 => {
                if let Some(old) = self.handle.replace(Some(h)) {
                    host::unlock(old);
                }
                Ok(true)
            }
            -1 => Ok(false),
            _ => Err(io::Error::other(format!("host refused lock on `{}`", self.rel))),
        }
    }

    pub(crate) fn try_lock(&self, mode: Flock) -> io::Result<bool> {
        super::fault(super::Op::Lock)?;
        self.acquire(mode, 0)
    }

    /// Releases the lock, if held, keeping this handle for the next one.
    pub(crate) fn unlock(&self) {
        if let Some(handle) = self.handle.take() {
            host::unlock(handle);
        }
    }

    pub(crate) fn lock_within(&self, mode: Flock, timeout: Option<Duration>) -> io::Result<bool> {
        super::fault(super::Op::Lock)?;
        let ms = match timeout {
            None => -1,
            // Rounded up, so a wait never gives up before its budget is
            // spent (the simulator checks this); a zero timeout after a
            // failed try is still one more millisecond.
            Some(t) => i64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX).max(1),
        };
        self.acquire(mode, ms)
    }
}

impl LockFile {
    /// Starts a wait for the lock in `mode`: under the simulator each
    /// [`Waiting::wait`] is one host `lock` call with its timeout, a pending
    /// future that waits in virtual time (docs/SIMULATION.md).
    pub(crate) fn into_waiting(self, mode: Flock) -> Waiting {
        Waiting { file: self, mode }
    }
}

/// A wait for a lock (the native one blocks in a helper thread).
#[derive(Debug)]
pub(crate) struct Waiting {
    file: LockFile,
    mode: Flock,
}

impl Waiting {
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        self.file.lock_within(self.mode, timeout)
    }

    /// The lock file: a host call never outlives its wait.
    pub(crate) fn into_file(self) -> Option<LockFile> {
        Some(self.file)
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            host::unlock(handle);
        }
    }
}

pub(crate) fn process_identity() -> Identity {
    let pid = host::pid();
    let argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    Identity { pid, host: "simulated".to_owned(), argv }
}

/// WASI p1 has no shared mappings: counters are not kept there.
#[derive(Debug)]
pub(crate) enum Mapped {}

impl Mapped {
    pub(crate) fn slots(&self) -> &[std::sync::atomic::AtomicU64] {
        match *self {}
    }
}

impl Dir {
    pub(crate) fn map_counters(&self, _rel: &str, _slots: usize) -> io::Result<Mapped> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
