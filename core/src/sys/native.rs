//! This defines the native directory handle: a `cap_std::fs::Dir`, flock
//! locks through std's `File::lock` family, and `renameat2` with
//! `RENAME_NOREPLACE` through rustix.
//!
//! Invariant: every path is resolved beneath the handle by cap-std; rename
//! and fsync, which go through rustix, only ever see a single path component
//! relative to a directory opened by cap-std, so they cannot be steered
//! through a symlink either.

use std::fs::{File, TryLockError};
use std::io::{self, Read, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use super::{DirEntry, FileKind, Identity, Usage};
use crate::lock::LockMode;

/// The cache root, as a capability.
#[derive(Debug)]
pub(crate) struct Root {
    dir: Dir,
}

impl Root {
    /// Opens the directory at `path`. This is the one place the native
    /// library turns an ambient path into a handle.
    pub(crate) fn open_ambient(path: &Path) -> io::Result<Root> {
        Ok(Root { dir: Dir::open_ambient_dir(path, ambient_authority())? })
    }

    /// The underlying handle, for callers that want to work inside an entry.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    pub(crate) fn create_dir(&self, rel: &str) -> io::Result<()> {
        self.dir.create_dir(rel)
    }

    pub(crate) fn write_new(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.dir.open_with(rel, OpenOptions::new().write(true).create_new(true))?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    pub(crate) fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.dir.open(rel)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    pub(crate) fn kind(&self, rel: impl AsRef<Path>) -> io::Result<Option<FileKind>> {
        match self.dir.symlink_metadata(rel) {
            Ok(meta) => Ok(Some(kind_of(meta.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn read_dir(&self, rel: &str) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let rel = if rel.is_empty() { "." } else { rel };
        for entry in self.dir.read_dir(rel)? {
            let entry = entry?;
            out.push(DirEntry { name: entry.file_name(), kind: kind_of(entry.file_type()?) });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        self.dir.rename(from, &self.dir, to)
    }

    /// Renames `from` to `to`, failing with `AlreadyExists` rather than
    /// replacing anything at `to` (even an empty directory, which plain
    /// rename(2) would silently replace).
    pub(crate) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_parent, from_leaf) = self.open_parent(from)?;
        let (to_parent, to_leaf) = self.open_parent(to)?;
        match rustix::fs::renameat_with(
            &from_parent,
            from_leaf,
            &to_parent,
            to_leaf,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            // The filesystem lacks RENAME_NOREPLACE. The caller holds the
            // entry lock, so a check followed by a rename is race-free
            // against every other safecache process.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                if self.kind(to)?.is_some() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                self.rename(from, to)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the parent directory of `rel` (beneath the root) and returns it
    /// with the last component.
    fn open_parent<'a>(&self, rel: &'a str) -> io::Result<(Dir, &'a str)> {
        match rel.rsplit_once('/') {
            Some((parent, leaf)) => Ok((self.dir.open_dir(parent)?, leaf)),
            None => Ok((self.dir.try_clone()?, rel)),
        }
    }

    pub(crate) fn remove_file(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        self.dir.remove_file(rel)
    }

    /// Deletes `rel` and everything beneath it by handle, never following a
    /// symlink: a symlink is unlinked, not entered (CVE-2022-21658).
    pub(crate) fn remove_tree(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        let rel = rel.as_ref();
        match self.kind(rel)? {
            None => Ok(()),
            Some(FileKind::Dir) => match self.dir.remove_dir_all(rel) {
                // Read-only directories (Go's module cache makes them) keep
                // their entries from being unlinked. The tree is private to
                // the caller (a temp or trash), so make its directories
                // writable and try once more.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    make_dirs_writable(&self.dir, rel)?;
                    self.dir.remove_dir_all(rel)
                }
                result => result,
            },
            Some(_) => self.dir.remove_file(rel),
        }
    }

    /// fsyncs every file and directory beneath `rel`, and `rel` itself, so a
    /// rename that publishes it cannot expose unwritten data after a power
    /// loss.
    pub(crate) fn sync_tree(&self, rel: &str) -> io::Result<()> {
        fn walk(dir: &Dir) -> io::Result<()> {
            for entry in dir.entries()? {
                let entry = entry?;
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    walk(&dir.open_dir(entry.file_name())?)?;
                } else if ty.is_file() {
                    dir.open(entry.file_name())?.sync_all()?;
                }
            }
            fsync_dir(dir)
        }
        walk(&self.dir.open_dir(rel)?)
    }

    /// fsyncs one directory (after a rename into it).
    pub(crate) fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let dir = if rel.is_empty() { self.dir.try_clone()? } else { self.dir.open_dir(rel)? };
        fsync_dir(&dir)
    }

    /// Sets the modification time of `rel` to now, creating it if needed.
    pub(crate) fn touch(&self, rel: &str) -> io::Result<()> {
        let file = self.dir.open_with(rel, OpenOptions::new().write(true).create(true))?;
        file.into_std().set_modified(SystemTime::now())
    }

    pub(crate) fn modified(&self, rel: &str) -> io::Result<Option<SystemTime>> {
        match self.dir.symlink_metadata(rel) {
            Ok(meta) => Ok(Some(meta.modified()?.into_std())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Total size of the regular files beneath `rel` (symlinks count as
    /// themselves, never followed) and `rel`'s own modification time.
    pub(crate) fn usage(&self, rel: impl AsRef<Path>) -> io::Result<Usage> {
        fn walk(dir: &Dir) -> io::Result<u64> {
            let mut bytes = 0;
            for entry in dir.entries()? {
                let entry = entry?;
                let ty = entry.file_type()?;
                if ty.is_dir() {
                    bytes += walk(&dir.open_dir(entry.file_name())?)?;
                } else {
                    bytes += entry.metadata()?.len();
                }
            }
            Ok(bytes)
        }
        let rel = rel.as_ref();
        let meta = self.dir.symlink_metadata(rel)?;
        let bytes = if meta.is_dir() { walk(&self.dir.open_dir(rel)?)? } else { meta.len() };
        Ok(Usage { bytes, modified: meta.modified().ok().map(|t| t.into_std()) })
    }

    /// Opens a lock file. With `create`, the file is created if missing but
    /// never truncated or replaced, so every process locks the same inode.
    pub(crate) fn open_lock(&self, rel: &str, create: bool) -> io::Result<LockFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(create);
        Ok(LockFile { file: self.dir.open_with(rel, &options)?.into_std() })
    }

    /// Creates a new file with `bytes` in it and returns it locked
    /// exclusively (a holder record).
    pub(crate) fn create_locked(&self, rel: &str, bytes: &[u8]) -> io::Result<LockFile> {
        let mut file = self.dir.open_with(rel, OpenOptions::new().read(true).write(true).create_new(true))?;
        file.write_all(bytes)?;
        let file = file.into_std();
        file.lock()?;
        Ok(LockFile { file })
    }
}

/// Gives the owner full access to `name` and every directory beneath it,
/// walking by handle; cap-std refuses any symlink that leads out.
fn make_dirs_writable(parent: &Dir, name: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let owner_only = cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(0o700));
    parent.set_permissions(name, owner_only)?;
    let dir = parent.open_dir(name)?;
    for entry in dir.entries()? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_dirs_writable(&dir, Path::new(&entry.file_name()))?;
        }
    }
    Ok(())
}

/// fsyncs a directory. cap-std opens directories with `O_PATH`, which
/// fsync refuses, so this reopens `.` beneath the handle for reading.
fn fsync_dir(dir: &Dir) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::fs::fsync(&fd)?;
    Ok(())
}

fn kind_of(ty: cap_std::fs::FileType) -> FileKind {
    if ty.is_symlink() {
        FileKind::Symlink
    } else if ty.is_dir() {
        FileKind::Dir
    } else if ty.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// An open lock file. The lock, if taken, belongs to this open file
/// description and is released when it is dropped (or by the kernel when
/// the process dies).
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
}

impl LockFile {
    /// The descriptor that carries the lock.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.file)
    }

    /// Takes the lock in `mode` if nobody conflicting holds it.
    pub(crate) fn try_lock(&self, mode: LockMode) -> io::Result<bool> {
        let result = match mode {
            LockMode::Shared => self.file.try_lock_shared(),
            LockMode::Exclusive => self.file.try_lock(),
        };
        match result {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Waits for the lock, for at most `timeout` (`None`: for as long as it
    /// takes). Returns whether it was taken.
    pub(crate) fn lock_within(&self, mode: LockMode, timeout: Option<Duration>) -> io::Result<bool> {
        let Some(timeout) = timeout else {
            match mode {
                LockMode::Shared => self.file.lock_shared()?,
                LockMode::Exclusive => self.file.lock()?,
            }
            return Ok(true);
        };
        // flock(2) has no timeout: poll with a capped exponential backoff.
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return self.lock_within(mode, None);
        };
        let mut pause = Duration::from_millis(1);
        loop {
            if self.try_lock(mode)? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// The identity shown in holder records: pid, host name, command line.
pub(crate) fn process_identity() -> Identity {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let command = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    Identity { pid: std::process::id(), host, command }
}
