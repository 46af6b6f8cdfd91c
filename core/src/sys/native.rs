//! This defines the native primitives behind [`super::Root`]: a
//! `cap_std::fs::Dir`, flock through std's `File` lock family, and `openat`
//! / `renameat2` through rustix. The contracts are stated once, in
//! `sys/mod.rs`.
//!
//! Invariant: every path is resolved beneath the handle by cap-std; the
//! calls that go through rustix only ever see a single path component
//! relative to a parent directory opened by cap-std, so they cannot be
//! steered through a symlink either.

use std::fs::{File, TryLockError};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::OpenOptions;
use rustix::fs::{Mode, OFlags};

use super::{DirEntry, FileKind, Flock, Identity, Meta, Modes, Owner};

/// The cache root, as a capability.
#[derive(Debug)]
pub(crate) struct Dir {
    dir: cap_std::fs::Dir,
    modes: Modes,
    /// The root's group, in a group-shared cache.
    group: Option<u32>,
    /// The path it was opened by: for messages only, never opened.
    shown: PathBuf,
}

/// `""` names the root itself.
fn dot(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() { Path::new(".") } else { rel }
}

/// Creates `path` and its missing parents private to the owner, whatever
/// the umask.
#[allow(clippy::disallowed_methods)] // the one ambient creation, named so
pub(crate) fn create_ambient_dir_all(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

#[allow(clippy::disallowed_methods)] // a read-only check of an ambient path, named so
pub(crate) fn ambient_id(path: &Path) -> io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    Ok(Some((meta.dev(), meta.ino())))
}

/// Where the next data of `file` is at or after `pos`, and where that data
/// ends (the next hole, or the end of the file), by `SEEK_DATA` and
/// `SEEK_HOLE`; `None` if only a hole is left. `Unsupported` where the
/// filesystem cannot tell (the caller then reads everything).
pub(crate) fn next_data(file: &std::fs::File, pos: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::{SeekFrom, seek};
    let data = match seek(file, SeekFrom::Data(pos)) {
        Ok(data) => data,
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOTSUP => {
            return Err(io::ErrorKind::Unsupported.into());
        }
        Err(e) => return Err(e.into()),
    };
    let hole = match seek(file, SeekFrom::Hole(data)) {
        Ok(hole) => hole,
        // Truncated meanwhile: the caller's read finds out.
        Err(rustix::io::Errno::NXIO) => data,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((data, hole.max(data))))
}

pub(crate) fn effective_uid() -> Option<u32> {
    Some(rustix::process::geteuid().as_raw())
}

/// Whether this process is a member of group `gid`.
pub(crate) fn in_group(gid: u32) -> bool {
    rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups().is_ok_and(|groups| groups.iter().any(|g| g.as_raw() == gid))
}

impl Dir {
    pub(crate) fn open_ambient(path: &Path) -> io::Result<Dir> {
        let dir = cap_std::fs::Dir::open_ambient_dir(path, ambient_authority())?;
        let mut this = Dir { dir, modes: Modes::PRIVATE, group: None, shown: path.to_owned() };
        let root = this.stat(Path::new(""))?;
        this.modes = Modes::for_root(root.owner);
        this.group = root.owner.filter(|_| this.modes.shared).map(|o| o.gid);
        Ok(this)
    }

    /// Sets exactly the mode new things get, past the umask, where the cache
    /// is group-shared (the umask could take the group's access away).
    fn fix_mode(&self, rel: &Path, mode: u32) -> io::Result<()> {
        if self.modes.shared {
            use std::os::unix::fs::PermissionsExt;
            self.dir.set_permissions(rel, cap_std::fs::Permissions::from_std(std::fs::Permissions::from_mode(mode)))?;
        }
        Ok(())
    }

    pub(crate) fn cap_dir(&self) -> &cap_std::fs::Dir {
        &self.dir
    }

    /// The kind of filesystem the root is on, by its statfs magic number.
    #[cfg(target_os = "linux")]
    pub(crate) fn fs_magic(&self) -> Option<u64> {
        rustix::fs::fstatfs(&self.dir).ok().map(|s| u64::try_from(s.f_type).unwrap_or(0))
    }

    #[cfg(not(target_os = "linux"))]
    pub(crate) fn fs_magic(&self) -> Option<u64> {
        None
    }

    /// What the filesystem holding the root has left, by `fstatvfs` on the
    /// root's own descriptor (an `O_PATH` descriptor is enough for it), so
    /// it measures the filesystem the handle is on even if the cache dir
    /// was renamed or a path in front of it replaced.
    pub(crate) fn space(&self) -> io::Result<super::Space> {
        let st = rustix::fs::fstatvfs(&self.dir)?;
        Ok(super::Space {
            available: st.f_bavail.saturating_mul(st.f_frsize),
            total: st.f_blocks.saturating_mul(st.f_frsize),
            inodes: st.f_favail,
        })
    }

    pub(crate) fn create_dir(&self, rel: &str) -> io::Result<()> {
        use cap_std::fs::DirBuilderExt;
        let mut builder = cap_std::fs::DirBuilder::new();
        builder.mode(self.modes.dir);
        self.dir.create_dir_with(rel, &builder)?;
        self.fix_mode(Path::new(rel), self.modes.dir)
    }

    fn create_new(&self, rel: &str, read: bool) -> io::Result<cap_std::fs::File> {
        use cap_std::fs::OpenOptionsExt;
        let file = self
            .dir
            .open_with(rel, OpenOptions::new().read(read).write(true).create_new(true).mode(self.modes.file))?;
        self.fix_mode(Path::new(rel), self.modes.file)?;
        Ok(file)
    }

    pub(crate) fn create_file(&self, rel: &str) -> io::Result<File> {
        Ok(self.create_new(rel, false)?.into_std())
    }

    pub(crate) fn write_new(&self, rel: &str, bytes: &[u8], sync: bool) -> io::Result<()> {
        let mut file = self.create_new(rel, false)?;
        // A write that fails (a full disk) leaves no half file behind: the
        // file is new, so it is this call's to delete.
        file.write_all(bytes)
            .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
            .inspect_err(|_| self.discard(rel))
    }

    /// Unlinks a file this process just created and failed to fill.
    fn discard(&self, rel: &str) {
        let _ = self.dir.remove_file(rel);
    }

    pub(crate) fn create_empty(&self, rel: &str) -> io::Result<()> {
        self.create_new(rel, false).map(drop)
    }

    /// Opens the parent directory of `rel` (beneath the root) and returns it
    /// with the last component.
    fn open_parent<'a>(&self, rel: &'a Path) -> io::Result<(cap_std::fs::Dir, &'a Path)> {
        let leaf = rel.file_name().map(Path::new).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => Ok((self.dir.open_dir(parent)?, leaf)),
            None => Ok((self.dir.try_clone()?, leaf)),
        }
    }

    /// Opens `rel` read-only without following a symlink or blocking on a
    /// FIFO, and checks that it is a regular file.
    pub(crate) fn open_regular(&self, rel: &str) -> io::Result<File> {
        self.open_file(Path::new(rel), OFlags::RDONLY, false)
    }

    /// [`Dir::open_regular`] for a name that need not be UTF-8.
    pub(crate) fn open_read(&self, rel: &Path) -> io::Result<File> {
        self.open_file(rel, OFlags::RDONLY, false)
    }

    fn open_file(&self, rel: &Path, access: OFlags, create: bool) -> io::Result<File> {
        let mut flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        if create {
            flags |= OFlags::CREATE;
        }
        let fd = match self.open_beneath_no_symlinks(rel, flags) {
            Some(fd) => fd?,
            None => self.open_file_slowly(rel, flags)?,
        };
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
        }
        Ok(file)
    }

    /// One `openat2` beneath the handle that refuses every symlink on the
    /// way (the fast path of [`Dir::open_file`]: a lock or a record costs
    /// one system call, not an open of its directory first). `None` where
    /// that is not the answer: no `openat2`, or a symlink or anything else
    /// unusual on the way, which the careful path then handles as it always
    /// has.
    #[cfg(target_os = "linux")]
    fn open_beneath_no_symlinks(&self, rel: &Path, flags: OFlags) -> Option<io::Result<rustix::fd::OwnedFd>> {
        use rustix::fs::ResolveFlags;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.dir, rel, flags, Mode::from_raw_mode(self.modes.file), resolve) {
            Ok(fd) => Some(Ok(fd)),
            Err(rustix::io::Errno::NOENT) => Some(Err(io::ErrorKind::NotFound.into())),
            Err(_) => None,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn open_beneath_no_symlinks(&self, _rel: &Path, _flags: OFlags) -> Option<io::Result<rustix::fd::OwnedFd>> {
        None
    }

    /// The parent opened beneath the handle (cap-std), then the leaf by
    /// `openat` with `O_NOFOLLOW`.
    fn open_file_slowly(&self, rel: &Path, flags: OFlags) -> io::Result<rustix::fd::OwnedFd> {
        let (parent, leaf) = self.open_parent(rel)?;
        rustix::fs::openat(&parent, leaf, flags, Mode::from_raw_mode(self.modes.file)).map_err(|e| {
            // O_NOFOLLOW on a symlink fails with ELOOP.
            if e == rustix::io::Errno::LOOP {
                io::Error::new(io::ErrorKind::InvalidData, "a symlink, not a regular file")
            } else {
                io::Error::from(e)
            }
        })
    }

    /// readlinkat on the parent opened beneath the handle, so the link
    /// itself is read and never followed (cap-std's `read_link` refuses
    /// absolute targets, which an entry may hold).
    pub(crate) fn read_link(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let (parent, leaf) = self.open_parent(rel)?;
        let target = rustix::fs::readlinkat(&parent, leaf, Vec::new()).map_err(|e| {
            if e == rustix::io::Errno::INVAL {
                io::Error::new(io::ErrorKind::InvalidInput, "not a symlink")
            } else {
                io::Error::from(e)
            }
        })?;
        Ok(target.into_bytes())
    }

    pub(crate) fn stat(&self, rel: &Path) -> io::Result<Meta> {
        use cap_std::fs::MetadataExt;
        let meta = self.dir.symlink_metadata(dot(rel))?;
        Ok(Meta {
            kind: FileKind::of(&meta.file_type()),
            len: meta.len(),
            modified: meta.modified().ok().map(|t| t.into_std()),
            owner: Some(Owner { uid: meta.uid(), gid: meta.gid(), mode: meta.mode() }),
            id: Some((meta.dev(), meta.ino())),
        })
    }

    pub(crate) fn is_marked(&self, _rel: &Path, meta: &Meta) -> io::Result<bool> {
        Ok(meta.owner.is_some_and(|o| o.mode & super::UNCOMMITTED_BIT != 0))
    }

    pub(crate) fn set_mark(&self, rel: &Path, on: bool) -> io::Result<bool> {
        let (parent, leaf) = self.open_parent(rel)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent, leaf, flags, Mode::empty())?;
        let mode = rustix::fs::fstat(&fd)?.st_mode & 0o7777;
        let was = mode & super::UNCOMMITTED_BIT != 0;
        let wanted = if on { mode | super::UNCOMMITTED_BIT } else { mode & !super::UNCOMMITTED_BIT };
        if wanted != mode {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(wanted))?;
        }
        Ok(was)
    }

    /// The names in `rel` as the directory lists them, read as they are
    /// needed.
    pub(crate) fn read_dir_iter(&self, rel: &Path) -> io::Result<impl Iterator<Item = io::Result<DirEntry>>> {
        Ok(self.dir.read_dir(dot(rel))?.map(|entry| {
            let entry = entry?;
            Ok(DirEntry { name: entry.file_name(), kind: FileKind::of(&entry.file_type()?) })
        }))
    }

    pub(crate) fn read_dir(&self, rel: &Path) -> io::Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        for entry in self.dir.read_dir(dot(rel))? {
            let entry = entry?;
            out.push(DirEntry { name: entry.file_name(), kind: FileKind::of(&entry.file_type()?) });
        }
        Ok(out)
    }

    /// Opens the directory `rel` (one this process made) to rename many
    /// names into with [`Dir::rename_into`].
    pub(crate) fn open_target(&self, rel: &Path) -> io::Result<cap_std::fs::Dir> {
        self.dir.open_dir(rel)
    }

    /// [`Dir::rename`] of `from` to `leaf` in `target`, a directory
    /// [`Dir::open_target`] opened: no lookup of the target's path each time.
    pub(crate) fn rename_into(&self, from: &Path, target: &cap_std::fs::Dir, leaf: &Path) -> io::Result<()> {
        match self.dir.rename(from, target, leaf) {
            Err(e) if self.made_writable(from, &e)? => self.dir.rename(from, target, leaf),
            result => result,
        }
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match self.dir.rename(from, &self.dir, to) {
            Err(e) if self.made_writable(from, &e)? => self.dir.rename(from, &self.dir, to),
            result => result,
        }
    }

    /// After a rename of `from` failed with `e`: if that is because `from`
    /// is a directory its owner (this process) cannot write, which a
    /// directory moved to a new parent must be (its `..` changes), gives it
    /// `u+w` through a descriptor of it and says so, for one more try.
    fn made_writable(&self, from: &Path, e: &io::Error) -> io::Result<bool> {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return Ok(false);
        }
        let (parent, leaf) = self.open_parent(from)?;
        super::walk::make_writable_dir(parent.as_fd(), leaf)
    }

    /// `Unsupported` where the filesystem lacks `RENAME_NOREPLACE`.
    pub(crate) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_parent, from_leaf) = self.open_parent(Path::new(from))?;
        let (to_parent, to_leaf) = self.open_parent(Path::new(to))?;
        let rename = || {
            rustix::fs::renameat_with(&from_parent, from_leaf, &to_parent, to_leaf, rustix::fs::RenameFlags::NOREPLACE)
        };
        let result = match rename() {
            Err(rustix::io::Errno::ACCESS) if super::walk::make_writable_dir(from_parent.as_fd(), from_leaf)? => {
                rename()
            }
            result => result,
        };
        match result {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => Err(io::ErrorKind::Unsupported.into()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn remove_file(&self, rel: &Path) -> io::Result<()> {
        self.dir.remove_file(rel)
    }

    /// Deletes by descriptor, stopping at mount points (see `walk.rs`).
    pub(crate) fn remove_dir_all(&self, rel: &Path) -> io::Result<()> {
        let (parent, leaf) = self.open_parent(rel)?;
        super::walk::remove_dir_all(parent.as_fd(), leaf, &self.shown.join(rel))
    }

    /// Opens the directory `rel` to delete its children one by one (see
    /// `walk::Children`); `None` if it is not a directory.
    pub(crate) fn children(&self, rel: &Path) -> io::Result<Option<super::walk::Children>> {
        let (parent, leaf) = self.open_parent(rel)?;
        super::walk::Children::open(parent.as_fd(), leaf, &self.shown.join(rel))
    }

    /// Settles the tree `rel` for publishing (see `walk.rs`).
    pub(crate) fn settle_tree(&self, rel: &Path, sync: bool) -> io::Result<()> {
        let (parent, leaf) = self.open_parent(rel)?;
        let settle = super::walk::Settle { group: self.group, sync };
        super::walk::settle_tree(parent.as_fd(), leaf, &self.shown.join(rel), settle)
    }

    pub(crate) fn sync_file(&self, rel: &Path) -> io::Result<()> {
        self.open_file(rel, OFlags::RDONLY, false)?.sync_all()
    }

    pub(crate) fn sync_dir(&self, rel: &Path) -> io::Result<()> {
        // cap-std opens directories with `O_PATH`, which fsync refuses, so
        // this reopens `.` beneath the handle for reading.
        let dir = if rel.as_os_str().is_empty() { self.dir.try_clone()? } else { self.dir.open_dir(rel)? };
        let fd = rustix::fs::openat(&dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::fs::fsync(&fd)?;
        Ok(())
    }

    pub(crate) fn open_lock(&self, rel: &str, create: bool) -> io::Result<LockFile> {
        // flock needs no write access, so a read-only lock file still locks.
        Ok(LockFile { file: self.open_file(Path::new(rel), OFlags::RDONLY, create)? })
    }

    pub(crate) fn create_locked(&self, rel: &str, bytes: &[u8]) -> io::Result<LockFile> {
        let mut file = self.create_new(rel, true)?;
        if let Err(e) = file.write_all(bytes) {
            // A full disk: no half-written record is left to be scanned.
            self.discard(rel);
            return Err(e);
        }
        let file = file.into_std();
        file.lock().inspect_err(|_| self.discard(rel))?;
        Ok(LockFile { file })
    }
}

impl Dir {
    pub(crate) fn rewrite_locked(&self, _rel: &str, file: &LockFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&file.file, bytes, offset)
    }

    /// Maps the file `rel` (created empty if missing, then sized to
    /// `slots` u64s) shared and writable: see [`super::Root::map_counters`].
    pub(crate) fn map_counters(&self, rel: &str, slots: usize) -> io::Result<Mapped> {
        /// The shortest counters file any safecache wrote: a magic number,
        /// a time and six counters.
        const MIN_COUNTERS_LEN: u64 = 8 * 8;
        let len = slots * std::mem::size_of::<u64>();
        let untrusted = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
        let file = self.open_file(Path::new(rel), OFlags::RDWR, true)?;
        let st = rustix::fs::fstat(&file)?;
        let euid = rustix::process::geteuid().as_raw();
        if st.st_uid != euid && st.st_uid != 0 && !self.modes.shared {
            return Err(untrusted("it belongs to another user"));
        }
        if st.st_mode & 0o002 != 0 || (st.st_mode & 0o020 != 0 && !self.modes.shared) {
            return Err(untrusted("others can write to it"));
        }
        match u64::try_from(st.st_size) {
            // New (or its creator has not sized it yet), or of an earlier
            // safecache that knew fewer slots (whole ones, at least the
            // header's): grown to this length, which only ever grows it, so
            // growing it twice, or racing a process that maps the old
            // length, changes nothing anyone counted.
            Ok(size) if size < len as u64 && size % 8 == 0 && (size == 0 || size >= MIN_COUNTERS_LEN) => {
                // fallocate never shrinks a file that a later safecache grew
                // meanwhile (ftruncate would, under its mapping).
                match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len as u64) {
                    Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
                        rustix::fs::ftruncate(&file, len as u64)?;
                    }
                    other => other?,
                }
            }
            // This length, or a later safecache's longer file: the slots
            // this one knows are its first ones.
            Ok(size) if size >= len as u64 && size % 8 == 0 => {}
            _ => return Err(untrusted("it has the wrong size")),
        }
        let grown = u64::try_from(rustix::fs::fstat(&file)?.st_size).unwrap_or(0);
        if grown < len as u64 {
            return Err(untrusted("it has the wrong size"));
        }
        // In a group-shared cache the umask may have kept the group from
        // writing the file its creator made: give the group its access.
        if self.modes.shared && st.st_uid == euid && st.st_mode & 0o060 != 0o060 {
            rustix::fs::fchmod(&file, Mode::from_raw_mode(self.modes.file))?;
        }
        // SAFETY: a fresh mapping at an address the kernel picks, of a
        // regular file `len` bytes long; it is only ever accessed as
        // `AtomicU64`s (page alignment suffices) and unmapped on drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &file,
                0,
            )?
        };
        let ptr = std::ptr::NonNull::new(ptr.cast::<std::sync::atomic::AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapped { ptr, slots })
    }
}

/// A file of u64 counters mapped shared: every process that maps it sees
/// every other's atomic updates, with no lock and no write call.
#[derive(Debug)]
pub(crate) struct Mapped {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    slots: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// The counters.
    pub(crate) fn slots(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: `ptr` maps `slots` u64s for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.slots) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map_counters`, which
        // nothing borrows any more.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.slots * std::mem::size_of::<u64>()) };
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

    /// Releases the lock this descriptor holds, if any, keeping the file
    /// open.
    pub(crate) fn unlock(&self) {
        if let Err(e) = self.file.unlock() {
            tracing::debug!(error = %e, "could not release a lock");
        }
    }

    /// Takes the lock in `mode` if nobody conflicting holds it.
    pub(crate) fn try_lock(&self, mode: Flock) -> io::Result<bool> {
        super::fault(super::Op::Lock)?;
        self.try_raw(mode)
    }

    /// [`LockFile::try_lock`] without the fault-injection check.
    fn try_raw(&self, mode: Flock) -> io::Result<bool> {
        let result = match mode {
            Flock::Shared => self.file.try_lock_shared(),
            Flock::Exclusive => self.file.try_lock(),
        };
        match result {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Starts a wait for the lock in `mode` (see [`Waiting`]).
    pub(crate) fn into_waiting(self, mode: Flock) -> Waiting {
        Waiting { file: self, mode, helper: Helper::Idle }
    }

    /// Blocks in flock(2) until the lock is taken.
    fn lock_blocking(file: &File, mode: Flock) -> io::Result<()> {
        loop {
            let result = match mode {
                Flock::Shared => file.lock_shared(),
                Flock::Exclusive => file.lock(),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// The fallback where no helper thread can be started (a thread limit
    /// reached): tries with a capped exponential backoff.
    fn poll_within(&self, mode: Flock, timeout: Duration) -> io::Result<bool> {
        let Some(deadline) = super::monotonic().checked_add(timeout) else {
            Self::lock_blocking(&self.file, mode)?;
            return Ok(true);
        };
        let mut pause = Duration::from_millis(1);
        loop {
            if self.try_raw(mode)? {
                return Ok(true);
            }
            let now = super::monotonic();
            if now >= deadline {
                return Ok(false);
            }
            super::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// A wait for a lock that wakes when the kernel grants it, with or without
/// a timeout.
///
/// flock(2) has no timeout. A timed wait therefore blocks in flock in a
/// helper thread, on a duplicate of the lock file's descriptor (`dup`
/// shares the open file description, and flock locks belong to the open
/// file description: a lock the helper takes is the caller's lock, on the
/// descriptor the caller keeps). The caller waits on a channel with its
/// timeout. A caller that gives up drops its [`Waiting`], and with it its
/// own descriptor, and never locks that open file description again; the
/// helper stays blocked until the lock is free, and if it then takes the
/// lock, nobody receives it: the helper closes the last descriptor of the
/// description, which releases the lock at once. So no lock is ever left
/// held by a wait that gave up, and a wait that succeeds wakes within the
/// kernel's own wake-up latency rather than at the next poll.
///
/// A wait without a timeout that has not started a helper blocks in the
/// caller's own thread.
#[derive(Debug)]
pub(crate) struct Waiting {
    file: LockFile,
    mode: Flock,
    helper: Helper,
}

#[derive(Debug)]
enum Helper {
    /// No helper started: the caller may still lock `file` itself.
    Idle,
    /// A helper blocked in flock on a duplicate of `file`: it sends the
    /// outcome once.
    Blocked(mpsc::Receiver<io::Result<()>>),
    /// No helper could be started: poll.
    Unavailable,
}

impl Waiting {
    /// Waits for at most `timeout` (`None`: for as long as it takes) for
    /// the lock. Returns whether it was taken; after `true`, take the file
    /// with [`Waiting::into_file`]. Can be called again after `false`: the
    /// same wait continues.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        super::fault(super::Op::Lock)?;
        if let Helper::Idle = self.helper {
            let Some(timeout) = timeout else {
                LockFile::lock_blocking(&self.file.file, self.mode)?;
                return Ok(true);
            };
            if self.file.try_raw(self.mode)? {
                return Ok(true);
            }
            if timeout.is_zero() {
                return Ok(false);
            }
            self.helper = self.spawn();
        }
        let rx = match &self.helper {
            Helper::Blocked(rx) => rx,
            _ => {
                return match timeout {
                    Some(timeout) => self.file.poll_within(self.mode, timeout),
                    None => LockFile::lock_blocking(&self.file.file, self.mode).map(|()| true),
                };
            }
        };
        let outcome = match timeout {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(timeout) => rx.recv_timeout(timeout),
        };
        match outcome {
            Ok(result) => {
                // The helper is done: the file is the caller's again.
                self.helper = Helper::Idle;
                result.map(|()| true)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(false),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.helper = Helper::Unavailable;
                Err(io::Error::other("the thread waiting for the lock ended without an answer"))
            }
        }
    }

    /// Starts the helper thread, blocked in flock on a duplicate of the
    /// descriptor.
    fn spawn(&self) -> Helper {
        let Ok(dup) = self.file.file.try_clone() else { return Helper::Unavailable };
        let (tx, rx) = mpsc::sync_channel(1);
        let mode = self.mode;
        let spawned =
            std::thread::Builder::new().name("safecache-lock-wait".to_owned()).stack_size(64 * 1024).spawn(move || {
                let result = LockFile::lock_blocking(&dup, mode);
                // If the waiter gave up, this send fails, and dropping `dup`
                // (the description's last descriptor) releases the lock.
                let _ = tx.send(result);
                drop(dup);
            });
        match spawned {
            Ok(_) => Helper::Blocked(rx),
            Err(e) => {
                tracing::debug!(error = %e, "no thread to wait for a lock in; polling instead");
                Helper::Unavailable
            }
        }
    }

    /// The lock file, once no helper can still lock it: after a wait that
    /// took the lock, or before any helper started. `None` while a helper
    /// is blocked: the file is then closed, and the caller must open the
    /// lock file again to lock it (this open file description is the
    /// abandoned helper's to release).
    pub(crate) fn into_file(self) -> Option<LockFile> {
        match self.helper {
            Helper::Blocked(_) => None,
            Helper::Idle | Helper::Unavailable => Some(self.file),
        }
    }
}

pub(crate) fn process_identity() -> Identity {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    Identity { pid: std::process::id(), host, argv }
}
