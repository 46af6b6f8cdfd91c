//! This defines the directory-handle boundary: [`Root`], the only way the
//! library reaches the operating system, and the contract every target
//! keeps.
//!
//! Everything above this module names files by paths *relative to the cache
//! root* (`/`-separated, never `..`; `""` is the root itself) and reaches
//! them through a [`Root`]. This file is the front door: it states each
//! operation's contract and holds the logic both targets share (sorting,
//! fallbacks, tree walks, bounded reads). Each target file supplies only
//! primitives:
//!
//! - `native`: a `cap_std::fs::Dir` (every path resolved beneath the
//!   handle), flock through std's `File` lock family, and `openat` /
//!   `renameat2(RENAME_NOREPLACE)` through rustix on a parent opened by
//!   cap-std.
//! - `wasi`: std::fs relative to a preopened directory (the WASI host
//!   confines every path to it), with locks and the process id provided by
//!   host imports from the module `safecache_host`.
//!
//! cap-std does not build for wasm32-wasip1 on stable Rust, which is why it
//! stays behind this boundary on the native side.
//!
//! Contract, for every operation below:
//! - **Confinement.** No operation reaches outside the root, whatever
//!   symlinks, hard links or special files other processes leave inside it.
//! - **No symlink is followed at the last component.** `stat` describes the
//!   link itself; `read`, `open_lock` and `remove_*` never act on a link's
//!   target; a tree walk never enters a linked directory.
//! - **No operation blocks on a special file.** Files are opened
//!   non-blocking and anything that is not a regular file is refused with
//!   [`io::ErrorKind::InvalidData`] before it is read or locked.
//! - **Listings come back sorted** by name bytes, without `.` and `..`, so
//!   every caller visits entries in the same order on every target.
//! - **Errors are io errors**, with `NotFound` for a missing name and
//!   `AlreadyExists` for a taken one; callers add the path and the verb.
//!
//! Architecture invariant: no other module calls std::fs, touches an
//! absolute path, reads a clock or sleeps (clippy's `disallowed-methods`
//! enforces it; see core/clippy.toml).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::durability::Durability;

#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(not(target_os = "wasi"))]
mod walk;

mod records;
pub(crate) use records::{Pool, Slot};
#[cfg(not(target_os = "wasi"))]
pub(crate) use walk::Children;
#[cfg(not(target_os = "wasi"))]
pub(crate) use walk::is_mount_points;
#[cfg(target_os = "wasi")]
pub(crate) fn is_mount_points(_: &io::Error) -> bool {
    false
}
#[cfg(not(target_os = "wasi"))]
use native as imp;

#[cfg(target_os = "wasi")]
pub(crate) mod wasi;
#[cfg(target_os = "wasi")]
use wasi as imp;

pub(crate) use imp::{LockFile, Mapped, Waiting};

pub mod faults;

/// The fault-injection hook: a check per primitive in tests and with the
/// `fault-injection` feature, nothing otherwise.
use faults::{Op, check as fault};

/// What a directory entry is, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The three questions [`FileKind::of`] asks of a file type, so both
/// targets' file types map the same way.
pub(crate) trait FileTypeLike {
    fn is_symlink(&self) -> bool;
    fn is_dir(&self) -> bool;
    fn is_file(&self) -> bool;
}

macro_rules! file_type_like {
    ($ty:ty) => {
        impl FileTypeLike for $ty {
            fn is_symlink(&self) -> bool {
                <$ty>::is_symlink(self)
            }
            fn is_dir(&self) -> bool {
                <$ty>::is_dir(self)
            }
            fn is_file(&self) -> bool {
                <$ty>::is_file(self)
            }
        }
    };
}

file_type_like!(std::fs::FileType);
#[cfg(not(target_os = "wasi"))]
file_type_like!(cap_std::fs::FileType);

impl FileKind {
    pub(crate) fn of(ty: &impl FileTypeLike) -> FileKind {
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
}

/// One name in a directory listing.
#[derive(Debug)]
pub(crate) struct DirEntry {
    pub(crate) name: OsString,
    pub(crate) kind: FileKind,
}

/// What `stat` tells about one name, without following a symlink.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub(crate) kind: FileKind,
    pub(crate) len: u64,
    pub(crate) modified: Option<SystemTime>,
    /// Who owns it and its permission bits (`None` under WASI, which has no
    /// users).
    pub(crate) owner: Option<Owner>,
    /// Device and inode (`None` under WASI).
    pub(crate) id: Option<(u64, u64)>,
}

/// What a name at the cache root holds, as a lookup sees it in one lstat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    Absent,
    /// Published: readers may use it.
    Committed(FileKind),
    /// A directory built in place whose fill has not committed it (yet, or
    /// ever: its filler may have died). Readers treat it as absent.
    Uncommitted,
}

/// The mode bit that marks a directory built in place as not yet committed:
/// the sticky bit, which means nothing else on a directory that only its
/// owner can write, and which the lookup's lstat already returns.
#[cfg_attr(target_os = "wasi", allow(dead_code))]
pub(crate) const UNCOMMITTED_BIT: u32 = 0o1000;

/// Ownership and permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

/// The modes new directories and files get. A cache is private to its
/// owner (0700, 0600) whatever the umask, unless its root is set up
/// group-shared: setgid and group-writable (`chmod 2770`), in which case
/// everything new is too (2770, 0660), set past the umask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Modes {
    pub(crate) shared: bool,
    pub(crate) dir: u32,
    pub(crate) file: u32,
}

impl Modes {
    pub(crate) const PRIVATE: Modes = Modes { shared: false, dir: 0o700, file: 0o600 };
    const SHARED: Modes = Modes { shared: true, dir: 0o2770, file: 0o660 };

    #[cfg_attr(target_os = "wasi", allow(dead_code))]
    fn for_root(owner: Option<Owner>) -> Modes {
        match owner {
            Some(o) if o.mode & 0o2000 != 0 && o.mode & 0o070 == 0o070 => Modes::SHARED,
            _ => Modes::PRIVATE,
        }
    }
}

/// The mode publish gives a directory (`dir`) or regular file that a fill
/// wrote, from the mode the fill left (`top`: the entry's own directory):
/// - no write for others (a CMD under umask 000 leaves files
///   world-writable);
/// - in a group-shared cache, read for the group (and search, `x`, on
///   files the owner may execute), so every member can read every entry,
///   and full access for the group on directories, as the cache's own
///   directories have (2770), so every member can delete every entry
///   (`rm`, `clean`, and gc's eviction); the group's write on files is
///   kept as the fill left it;
/// - the entry's own directory writable by its owner, since a directory
///   moved to a new parent must be (its `..` changes): publishing and
///   removing it are such moves.
///
/// Every other bit (the owner's, setuid, setgid, sticky) is kept.
#[cfg_attr(target_os = "wasi", allow(dead_code))]
pub(crate) fn settled_mode(mode: u32, dir: bool, top: bool, shared: bool) -> u32 {
    let mut settled = mode & !0o002;
    if shared {
        settled |= if dir { 0o070 } else { 0o040 };
        if mode & 0o100 != 0 {
            settled |= 0o010;
        }
    }
    if dir && top {
        settled |= 0o200;
    }
    settled
}

#[cfg(test)]
#[test]
fn settled_modes_take_write_from_others_and_give_read_to_a_shared_group() {
    assert_eq!(settled_mode(0o666, false, false, false), 0o664, "umask 000");
    assert_eq!(settled_mode(0o777, true, false, false), 0o775);
    assert_eq!(settled_mode(0o555, true, true, false), 0o755, "a read-only entry root");
    assert_eq!(settled_mode(0o555, true, false, false), 0o555, "directories inside it stay read-only");
    assert_eq!(settled_mode(0o600, false, false, true), 0o640, "umask 077 in a group cache");
    assert_eq!(settled_mode(0o700, false, false, true), 0o750, "an executable");
    assert_eq!(settled_mode(0o2700, true, false, true), 0o2770, "members can delete what is in it");
    assert_eq!(settled_mode(0o2555, true, false, true), 0o2575);
    assert_eq!(settled_mode(0o660, false, false, true), 0o660, "the group's write is kept");
    assert_eq!(settled_mode(0o1700, true, true, false), 0o1700, "the uncommitted mark is kept");
}

/// Size and last modification of a tree, for `ls` and `status`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) modified: Option<SystemTime>,
}

/// How much room the filesystem holding the cache has, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Space {
    /// What an unprivileged process may still write (`f_bavail`).
    pub(crate) available: u64,
    /// The filesystem's size.
    pub(crate) total: u64,
    /// How many more files an unprivileged process may create
    /// (`f_favail`): a filesystem out of inodes is full however many bytes
    /// it has left.
    pub(crate) inodes: u64,
}

/// Whether `e` means the filesystem is full: no space (ENOSPC) or the
/// user's quota is used up (EDQUOT).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// Whether `e` says that this process (EMFILE) or the system (ENFILE) has
/// no descriptor left.
pub(crate) fn is_out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(not(target_os = "wasi"))]
    let (mfile, nfile) = (rustix::io::Errno::MFILE.raw_os_error(), rustix::io::Errno::NFILE.raw_os_error());
    // WASI preview 1's own numbering (`errno::mfile`, `errno::nfile`).
    #[cfg(target_os = "wasi")]
    let (mfile, nfile) = (33, 41);
    e.raw_os_error().is_some_and(|n| n == mfile || n == nfile)
}

/// The identity a holder record shows.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) argv: Vec<String>,
}

/// How a lock file is locked, in the handle's own terms (the lock module
/// maps its public modes onto this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flock {
    Shared,
    Exclusive,
}

/// A directory under the root, opened once to rename many names into
/// ([`Root::open_target`]).
#[derive(Debug)]
pub(crate) struct Target {
    #[cfg(not(target_os = "wasi"))]
    dir: cap_std::fs::Dir,
    /// Its path under the root.
    pub(crate) rel: String,
}

/// The cache root, as a capability.
#[derive(Debug)]
pub(crate) struct Root {
    imp: imp::Dir,
    /// What the per-level syncs below do: this is the one place that reads
    /// the level, so no caller can forget it.
    durability: Durability,
    /// The idle holder records this handle keeps for its next locks
    /// (holder.rs); deleted when the handle is dropped.
    pub(crate) records: Pool,
}

impl Drop for Root {
    fn drop(&mut self) {
        let records = std::mem::take(&mut self.records);
        records.drain(|rel| {
            if let Err(e) = self.remove_file(rel) {
                tracing::debug!(record = %rel, error = %e, "could not remove an idle holder record");
            }
        });
    }
}

impl Root {
    /// Opens the directory at `path`. This is the one place the library
    /// turns an ambient path into a handle.
    pub(crate) fn open_ambient(path: &Path) -> io::Result<Root> {
        Ok(Root { imp: imp::Dir::open_ambient(path)?, durability: Durability::Full, records: Pool::default() })
    }

    /// Sets the durability level of the per-level syncs ([`Root::settle_tree`],
    /// [`Root::sync_dir`], [`Root::write_new`]); [`Durability::Full`] until
    /// the cache's config is read.
    pub(crate) fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// The level in effect.
    pub(crate) fn durability(&self) -> Durability {
        self.durability
    }

    /// Whether the per-level syncs sync.
    fn syncs(&self) -> bool {
        self.durability == Durability::Full
    }

    /// Creates every missing directory of `path` (ambient, for a cache dir
    /// that does not exist yet).
    pub(crate) fn create_ambient_dir_all(path: &Path) -> io::Result<()> {
        imp::create_ambient_dir_all(path)
    }

    /// The native handle, for callers that want to work inside an entry.
    #[cfg(not(target_os = "wasi"))]
    pub(crate) fn cap_dir(&self) -> &cap_std::fs::Dir {
        self.imp.cap_dir()
    }

    /// The name of the network or userspace filesystem the root is on (NFS,
    /// CIFS/SMB, FUSE, 9p, Ceph, ...), where flock may be missing, emulated,
    /// or not seen by other machines; `None` for a local filesystem or where
    /// it cannot be told.
    pub(crate) fn shared_filesystem(&self) -> Option<&'static str> {
        shared_filesystem_name(self.imp.fs_magic()?)
    }

    /// What the filesystem holding the root has left, measured through the
    /// root's handle; `None` where the target cannot tell (WASI p1 has no
    /// statvfs) or the query fails.
    pub(crate) fn space(&self) -> Option<Space> {
        #[cfg(not(target_os = "wasi"))]
        return self.imp.space().ok();
        #[cfg(target_os = "wasi")]
        return None;
    }

    /// The bytes an unprivileged process may still write on the filesystem
    /// holding the root; see [`Root::space`].
    pub(crate) fn available_space(&self) -> Option<u64> {
        self.space().map(|s| s.available)
    }

    /// Creates one directory, with [`Modes::dir`]; `AlreadyExists` if the
    /// name is taken.
    pub(crate) fn create_dir(&self, rel: &str) -> io::Result<()> {
        fault(Op::CreateDir)?;
        self.imp.create_dir(rel)
    }

    /// Creates a new, empty file (never replacing one) and opens it for
    /// writing, never synced: for what only needs to last while its writer
    /// lives (a fill's log).
    pub(crate) fn create_file(&self, rel: &str) -> io::Result<std::fs::File> {
        fault(Op::Write)?;
        self.imp.create_file(rel)
    }

    /// Creates a new file (never replacing one) holding `bytes`, synced if
    /// the durability level syncs. A write that fails after the file was
    /// created (a full disk) removes it.
    pub(crate) fn write_new(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        fault(Op::Write)?;
        self.imp.write_new(rel, bytes, self.syncs())
    }

    /// [`Root::write_new`], synced at every durability level: for the
    /// metadata without which the cache does not open (the format file, the
    /// config), written once, where a torn file would refuse the cache.
    pub(crate) fn write_metadata(&self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        fault(Op::Write)?;
        self.imp.write_new(rel, bytes, true)
    }

    /// Reads a small regular file whole, refusing symlinks and special files
    /// (without blocking on a FIFO) and anything longer than `cap` bytes
    /// ([`io::ErrorKind::InvalidData`] in both cases).
    pub(crate) fn read(&self, rel: &str, cap: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        fault(Op::Open)?;
        let file = self.imp.open_regular(rel)?;
        let mut bytes = Vec::new();
        file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > cap {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("longer than {cap} bytes")));
        }
        Ok(bytes)
    }

    /// Opens the regular file `rel` for reading in a stream (a manifest's
    /// hashing), refusing symlinks and special files as [`Root::read`] does,
    /// without blocking on a FIFO. The caller bounds what it keeps.
    pub(crate) fn open_read(&self, rel: &Path) -> io::Result<std::fs::File> {
        fault(Op::Open)?;
        self.imp.open_read(rel)
    }

    /// The target text of the symlink `rel`, as raw bytes; the link is never
    /// followed. `InvalidInput` if `rel` is not a symlink.
    pub(crate) fn read_link(&self, rel: &Path) -> io::Result<Vec<u8>> {
        fault(Op::Open)?;
        self.imp.read_link(rel)
    }

    /// Describes `rel` itself (a symlink is not followed); `None` if absent.
    pub(crate) fn stat(&self, rel: impl AsRef<Path>) -> io::Result<Option<Meta>> {
        match self.imp.stat(rel.as_ref()) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `rel` holds a committed entry, an uncommitted one (a
    /// directory carrying [`UNCOMMITTED_BIT`]) or nothing. Natively one
    /// lstat, as [`Root::kind`] is.
    pub(crate) fn presence(&self, rel: &str) -> io::Result<Presence> {
        let Some(meta) = self.stat(rel)? else { return Ok(Presence::Absent) };
        if meta.kind == FileKind::Dir {
            // Where reading the mark is a second call (WASI), the name may
            // have gone in between: then it is absent.
            match self.imp.is_marked(Path::new(rel), &meta) {
                Ok(true) => return Ok(Presence::Uncommitted),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Presence::Absent),
                Err(e) => return Err(e),
            }
        }
        Ok(Presence::Committed(meta.kind))
    }

    /// Sets (`on`) or clears the uncommitted mark of the directory `rel`,
    /// without following a symlink, and returns whether it was set before.
    /// Its other mode bits are kept.
    pub(crate) fn set_uncommitted(&self, rel: &str, on: bool) -> io::Result<bool> {
        fault(Op::Write)?;
        self.imp.set_mark(Path::new(rel), on)
    }

    /// What `rel` is; `None` if absent.
    pub(crate) fn kind(&self, rel: impl AsRef<Path>) -> io::Result<Option<FileKind>> {
        Ok(self.stat(rel)?.map(|m| m.kind))
    }

    /// When `rel` was last modified; `None` if absent.
    pub(crate) fn modified(&self, rel: &str) -> io::Result<Option<SystemTime>> {
        Ok(self.stat(rel)?.and_then(|m| m.modified))
    }

    /// The names in directory `rel`, sorted by name bytes.
    pub(crate) fn read_dir(&self, rel: impl AsRef<Path>) -> io::Result<Vec<DirEntry>> {
        let mut out = self.imp.read_dir(rel.as_ref())?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Calls `f` with each name in directory `rel`, in the order the
    /// directory lists them (not sorted), reading them as it goes: natively
    /// the memory this takes does not grow with the directory. An error
    /// listing it is given to `wrap`; the first error `f` returns stops it.
    pub(crate) fn for_each_in<E>(
        &self,
        rel: impl AsRef<Path>,
        wrap: impl Fn(io::Error) -> E,
        mut f: impl FnMut(DirEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        #[cfg(not(target_os = "wasi"))]
        for entry in self.imp.read_dir_iter(rel.as_ref()).map_err(&wrap)? {
            f(entry.map_err(&wrap)?)?;
        }
        // WASI lists a directory whole.
        #[cfg(target_os = "wasi")]
        for entry in self.imp.read_dir(rel.as_ref()).map_err(&wrap)? {
            f(entry)?;
        }
        Ok(())
    }

    /// Renames `from` to `to`, atomically replacing a file or an empty
    /// directory at `to`, as rename(2) does.
    pub(crate) fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> io::Result<()> {
        fault(Op::Rename)?;
        self.imp.rename(from.as_ref(), to.as_ref())
    }

    /// Opens the directory `rel` under the root once, to rename many names
    /// into ([`Root::rename_into`]): `clean`'s trash.
    pub(crate) fn open_target(&self, rel: &str) -> io::Result<Target> {
        fault(Op::Open)?;
        #[cfg(not(target_os = "wasi"))]
        return Ok(Target { dir: self.imp.open_target(Path::new(rel))?, rel: rel.to_owned() });
        #[cfg(target_os = "wasi")]
        return Ok(Target { rel: rel.to_owned() });
    }

    /// Renames `from` to `leaf` inside `target`, as [`Root::rename`] does
    /// (natively without looking the target's path up again).
    pub(crate) fn rename_into(&self, from: impl AsRef<Path>, target: &Target, leaf: &str) -> io::Result<()> {
        fault(Op::Rename)?;
        #[cfg(not(target_os = "wasi"))]
        return self.imp.rename_into(from.as_ref(), &target.dir, Path::new(leaf));
        #[cfg(target_os = "wasi")]
        return self.imp.rename(from.as_ref(), &Path::new(&target.rel).join(leaf));
    }

    /// Renames `from` to `to`, failing with `AlreadyExists` rather than
    /// replacing anything at `to` (even an empty directory, which plain
    /// rename(2) would silently replace).
    ///
    /// Where the filesystem (or WASI p1) has no `RENAME_NOREPLACE`, this is a
    /// check followed by a rename. That is race-free only if every process
    /// that could create `to` meanwhile is excluded, so callers must either
    /// hold the entry lock of `to`, or rename onto a name that, when present,
    /// is a non-empty directory (which rename(2) never replaces).
    pub(crate) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        fault(Op::Rename)?;
        match self.imp.rename_noreplace(from, to) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                if self.stat(to)?.is_some() {
                    return Err(io::Error::from(io::ErrorKind::AlreadyExists));
                }
                self.rename(from, to)
            }
            result => result,
        }
    }

    /// Unlinks a file or a symlink (never its target).
    pub(crate) fn remove_file(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        fault(Op::Remove)?;
        self.imp.remove_file(rel.as_ref())
    }

    /// Deletes `rel` and everything beneath it by handle, never following a
    /// symlink: a symlink is unlinked, not entered (CVE-2022-21658). Read-only
    /// directories inside it (Go's module cache makes them, and so does a
    /// CMD's `chmod -R a-w`) are made writable first. It never crosses into
    /// another filesystem: a mount point inside `rel` (a bind mount or a
    /// filesystem a CMD left) is left in place with what is under it and
    /// the directories above it, everything else is deleted, and the error
    /// names the mount points ([`is_mount_points`]). A missing `rel` is not
    /// an error.
    pub(crate) fn remove_tree(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        let rel = rel.as_ref();
        match self.kind(rel)? {
            None => Ok(()),
            Some(FileKind::Dir) => fault(Op::Remove).and_then(|()| self.imp.remove_dir_all(rel)),
            Some(_) => fault(Op::Remove).and_then(|()| self.imp.remove_file(rel)),
        }
    }

    /// Opens the directory `rel` to delete its children one at a time,
    /// each by descriptor and on any thread ([`Children::remove`] deletes
    /// one as [`Root::remove_tree`] does); `None` if `rel` is not a
    /// directory. Natively only: the reclaimer's parallel deletion.
    #[cfg(not(target_os = "wasi"))]
    pub(crate) fn children(&self, rel: impl AsRef<Path>) -> io::Result<Option<Children>> {
        fault(Op::Open)?;
        self.imp.children(rel.as_ref())
    }

    /// fsyncs every regular file and directory beneath `rel`, and `rel`
    /// itself, at every durability level (see [`Root::write_metadata`]).
    /// Symlinks are not followed.
    pub(crate) fn sync_metadata_tree(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        let rel = rel.as_ref();
        for entry in self.read_dir(rel)? {
            let child = rel.join(&entry.name);
            match entry.kind {
                FileKind::Dir => self.sync_metadata_tree(&child)?,
                FileKind::File => fault(Op::Sync).and_then(|()| self.imp.sync_file(&child))?,
                FileKind::Symlink | FileKind::Other => {}
            }
        }
        self.sync_metadata_dir(rel)
    }

    /// Settles the tree `rel` that a fill wrote, before its manifest is
    /// built and it is published, in one walk by descriptor: every directory
    /// and regular file gets the mode [`settled_mode`] gives it (and, in a
    /// group-shared cache, the cache's group), then is fsynced where the
    /// durability level syncs. Symlinks are never
    /// followed or changed. A mount point inside the tree fails it, naming
    /// the mount point, before anything beneath it is touched.
    pub(crate) fn settle_tree(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        #[cfg(not(target_os = "wasi"))]
        return self.imp.settle_tree(rel.as_ref(), self.syncs());
        // WASI has no modes, users or mounts: only the syncs are left.
        #[cfg(target_os = "wasi")]
        return if self.syncs() { self.sync_metadata_tree(rel) } else { Ok(()) };
    }

    /// Whether a publish should settle the modes first
    /// ([`Root::settle_tree_modes`]) and sync the tree on another thread
    /// while it hashes it: where [`Root::settle_tree`] syncs, on a
    /// filesystem whose fsync does something. On tmpfs and ramfs, where it
    /// does nothing, the thread and the second walk would only add (about
    /// 0.1 ms a fill on this project's machine).
    #[cfg(not(target_os = "wasi"))]
    pub(crate) fn overlaps_syncs(&self) -> bool {
        /// `TMPFS_MAGIC` and `RAMFS_MAGIC` (linux/magic.h).
        const MEMORY_FILESYSTEMS: [u64; 2] = [0x0102_1994, 0x8584_58F6];
        self.syncs() && self.imp.fs_magic().is_none_or(|magic| !MEMORY_FILESYSTEMS.contains(&magic))
    }

    /// [`Root::settle_tree`] without its syncs: the modes (and group) of
    /// every directory and regular file, the mount-point check. A second
    /// [`Root::settle_tree`] then finds nothing to change and only syncs.
    #[cfg(not(target_os = "wasi"))]
    pub(crate) fn settle_tree_modes(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        self.imp.settle_tree(rel.as_ref(), false)
    }

    /// fsyncs one directory, after a rename into or out of it. Nothing
    /// under [`Durability::None`].
    pub(crate) fn sync_dir(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        if !self.syncs() {
            return Ok(());
        }
        self.sync_metadata_dir(rel)
    }

    /// [`Root::sync_dir`] at every durability level (see
    /// [`Root::write_metadata`]).
    pub(crate) fn sync_metadata_dir(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        fault(Op::Sync)?;
        self.imp.sync_dir(rel.as_ref())
    }

    /// Sets the modification time of the regular file `rel` to now, creating
    /// it if needed. The stamp is written to a fresh private file and renamed
    /// over `rel`, so whatever was at `rel` (a hard link to a file outside the
    /// cache, a FIFO, a symlink) is replaced, never modified or followed.
    pub(crate) fn touch(&self, rel: &str, private: &str) -> io::Result<()> {
        fault(Op::Write)?;
        self.imp.create_empty(private)?;
        self.rename(private, rel).inspect_err(|_| {
            let _ = self.imp.remove_file(Path::new(private));
        })
    }

    /// Total size of the regular files beneath `rel` (symlinks count as
    /// themselves, never followed) and `rel`'s own modification time.
    pub(crate) fn usage(&self, rel: impl AsRef<Path>) -> io::Result<Usage> {
        let rel = rel.as_ref();
        let meta = self.imp.stat(rel)?;
        let bytes = match meta.kind {
            FileKind::Dir => self.tree_bytes(rel)?,
            FileKind::File => meta.len,
            FileKind::Symlink | FileKind::Other => 0,
        };
        Ok(Usage { bytes, modified: meta.modified })
    }

    fn tree_bytes(&self, rel: &Path) -> io::Result<u64> {
        let mut bytes = 0u64;
        for entry in self.read_dir(rel)? {
            let child = rel.join(&entry.name);
            bytes = bytes.saturating_add(match entry.kind {
                FileKind::Dir => self.tree_bytes(&child)?,
                FileKind::File => self.imp.stat(&child)?.len,
                FileKind::Symlink | FileKind::Other => 0,
            });
        }
        Ok(bytes)
    }

    /// Opens a lock file. With `create`, the file is created if missing but
    /// never truncated or replaced, so every process locks the same inode. A
    /// symlink or special file at `rel` is refused (`InvalidData`), never
    /// followed or blocked on.
    pub(crate) fn open_lock(&self, rel: &str, create: bool) -> io::Result<LockFile> {
        fault(Op::Open)?;
        self.imp.open_lock(rel, create)
    }

    /// Maps the file `rel` shared and writable as `slots` u64 counters,
    /// creating it (empty, then sized) if missing: no lock, no write call,
    /// no sync; updates are atomic across every process that maps it. The
    /// file is untrusted: a symlink, a special file (never blocked on), a
    /// file of another size, or one another user owns or others can write
    /// is refused with `InvalidData`. `Unsupported` where the target has no
    /// shared mappings (WASI).
    pub(crate) fn map_counters(&self, rel: &str, slots: usize) -> io::Result<Mapped> {
        fault(Op::Open)?;
        self.imp.map_counters(rel, slots)
    }

    /// Writes `bytes` at `offset` into the file `rel`, which this process
    /// created with [`Root::create_locked`] and holds locked as `file` (a
    /// holder record rewritten in place), without changing its length
    /// beyond what is written.
    pub(crate) fn rewrite_locked(&self, rel: &str, file: &LockFile, bytes: &[u8], offset: u64) -> io::Result<()> {
        fault(Op::Write)?;
        self.imp.rewrite_locked(rel, file, bytes, offset)
    }

    /// Creates a new file with `bytes` in it and returns it locked
    /// exclusively (a holder record). A write that fails after the file was
    /// created (a full disk) removes it.
    pub(crate) fn create_locked(&self, rel: &str, bytes: &[u8]) -> io::Result<LockFile> {
        fault(Op::Write)?;
        self.imp.create_locked(rel, bytes)
    }
}

/// Network and userspace filesystems by their Linux statfs magic numbers.
fn shared_filesystem_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "NFS",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x517B => "SMB",
        0x6573_5546 => "FUSE",
        0x0102_1997 => "9p",
        0x00C3_6400 => "Ceph",
        0x5346_414F => "AFS",
        0x0BD0_0BD0 => "Lustre",
        0x4750_4653 => "GPFS",
        _ => return None,
    })
}

/// The device and inode that the ambient `path` names, without following a
/// symlink at its end (`None` where the target has no such identity). Only
/// for checking that a path handed to another program still leads where
/// the handle does; never for opening anything.
pub(crate) fn ambient_id(path: &Path) -> io::Result<Option<(u64, u64)>> {
    imp::ambient_id(path)
}

/// Where the next data of the open regular file `file` is at or after
/// `pos`, and where it ends: `(data, hole)` with `pos <= data <= hole`;
/// `None` when only a hole is left up to the end. `Unsupported` where the
/// target or filesystem cannot tell holes from data (WASI): then every
/// byte counts as data and the caller reads it.
pub(crate) fn next_data(file: &std::fs::File, pos: u64) -> io::Result<Option<(u64, u64)>> {
    imp::next_data(file, pos)
}

/// This process's effective user id (`None` under WASI).
pub(crate) fn effective_uid() -> Option<u32> {
    imp::effective_uid()
}

/// Whether this process is a member of group `gid`.
pub(crate) fn in_group(gid: u32) -> bool {
    imp::in_group(gid)
}

/// The identity shown in holder records: pid, host name, command line.
pub(crate) fn process_identity() -> Identity {
    imp::process_identity()
}

/// The wall clock, for holder records and last-use stamps.
#[allow(clippy::disallowed_methods)] // the one place that reads it
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// The monotonic clock, for wait deadlines.
#[allow(clippy::disallowed_methods)] // the one place that reads it
pub(crate) fn monotonic() -> Instant {
    Instant::now()
}

#[cfg(test)]
#[test]
fn network_filesystems_are_told_apart_from_local_ones() {
    assert_eq!(shared_filesystem_name(0x6969), Some("NFS"));
    assert_eq!(shared_filesystem_name(0x6573_5546), Some("FUSE"));
    assert_eq!(shared_filesystem_name(0xEF53), None, "ext4");
    assert_eq!(shared_filesystem_name(0x0102_1994), None, "tmpfs");
}

/// Sleeps this thread (native lock polling only).
#[allow(clippy::disallowed_methods, dead_code)] // the one place that sleeps; unused under WASI
pub(crate) fn sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(test)]
mod durability_tests {
    use super::*;
    use crate::sys::faults::{Failure, Fault, Op, clear, inject};

    /// Plans a failure of the first sync call, runs `f`, and says whether
    /// any sync call was made.
    fn synced(f: impl FnOnce() -> io::Result<()>) -> bool {
        inject(&[Fault { op: Op::Sync, nth: 0, failure: Failure::Io }]);
        let _ = f();
        clear()
    }

    #[test]
    fn the_level_decides_every_per_level_sync_and_metadata_is_synced_at_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut root = Root::open_ambient(dir.path()).unwrap();
        root.create_dir("d").unwrap();
        root.write_new("d/f", b"x").unwrap();
        for (level, expect) in [(Durability::None, false), (Durability::Full, true)] {
            root.set_durability(level);
            assert_eq!(synced(|| root.settle_tree("d")), expect, "settle_tree at {level}");
            assert_eq!(synced(|| root.sync_dir("")), expect, "sync_dir at {level}");
            assert!(synced(|| root.sync_metadata_dir("")), "the marker's sync at {level}");
            assert!(synced(|| root.sync_metadata_tree("d")), "the marker's tree sync at {level}");
        }
    }
}
