//! This defines the native tree walks by directory descriptor: deleting a
//! tree ([`remove_dir_all`]) and settling a tree about to be published
//! ([`settle_tree`]: its modes, then an fsync of every file and directory).
//!
//! Invariants, for both walks:
//! - **Descriptors, not paths.** Each directory is opened relative to its
//!   parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, and every name in
//!   it is acted on relative to that descriptor, so a symlink is never
//!   followed and a rename elsewhere cannot steer the walk.
//! - **One filesystem.** A directory whose mount differs from the tree's
//!   own (another device, or the same device bind-mounted: statx's mount id
//!   tells them apart) is a mount point. A deletion leaves it, what is under
//!   it and the directories above it in place, and reports it
//!   ([`MountPoints`]), like `rm --one-file-system`; settling refuses the
//!   tree. Nothing outside the cache is ever changed through the cache.
//! - **Modes never stop the owner.** A directory the owner cannot write or
//!   read (a CMD's `chmod -R a-w`, Go's module cache) is given `u+rwx`
//!   through its own descriptor before its names are unlinked; one it
//!   cannot even open is changed through an `O_PATH` descriptor of it
//!   (`/proc/self/fd`), never through its name.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Where a mode change or a publish must stop: the mount points found in a
/// tree, as absolute paths for the user to unmount.
#[derive(Debug)]
pub(crate) struct MountPoints {
    pub(crate) paths: Vec<PathBuf>,
    /// True for a deletion (what they hold was left in place), false for a
    /// publish (which refused the tree).
    pub(crate) deleting: bool,
}

impl fmt::Display for MountPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> =
            self.paths.iter().map(|p| format!("`{}`", crate::display::escape(&p.to_string_lossy()))).collect();
        let list = shown.join(", ");
        let (is, them) = if self.paths.len() == 1 { ("is a mount point", "it") } else { ("are mount points", "them") };
        if self.deleting {
            write!(
                f,
                "{list} {is} (another filesystem, or a bind mount, inside the cache): {them} and everything under \
                 {them} were left in place, not deleted; unmount {them}, then run `cargo safecache gc` to finish"
            )
        } else {
            write!(
                f,
                "{list} {is} (another filesystem, or a bind mount): an entry cannot hold one; unmount {them}; \
                 nothing was published"
            )
        }
    }
}

impl std::error::Error for MountPoints {}

/// Whether `e` is (or wraps) a [`MountPoints`] report.
pub(crate) fn is_mount_points(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<MountPoints>())
}

/// The mount a file is on: its device and, where the kernel reports it
/// (statx's `STATX_MNT_ID`, Linux 5.8), its mount id, which tells a bind
/// mount of a directory of the same filesystem apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mount {
    dev: u64,
    id: Option<u64>,
}

/// What the walks need to know of a file, from one statx of it.
#[derive(Clone, Copy, Debug)]
struct Info {
    kind: FileType,
    mount: Mount,
    /// Whether statx says it is the root of a mount.
    mount_root: bool,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Info {
    /// Whether this file is on another mount than `tree`: a mount point.
    fn crosses(&self, tree: Mount) -> bool {
        self.mount_root || self.mount != tree
    }
}

/// statx of `name` in `dir` (`""`: `dir` itself), never following a
/// symlink; fstat where statx is missing (old kernels, some seccomp
/// filters), which knows only the device.
fn info(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Info> {
    use rustix::fs::{StatxAttributes, StatxFlags};
    let flags =
        if name.as_os_str().is_empty() { AtFlags::EMPTY_PATH } else { AtFlags::empty() } | AtFlags::SYMLINK_NOFOLLOW;
    match rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS | StatxFlags::MNT_ID) {
        Ok(st) => {
            let has = |a: StatxAttributes| st.stx_attributes_mask.contains(a) && st.stx_attributes.contains(a);
            Ok(Info {
                kind: FileType::from_raw_mode(st.stx_mode.into()),
                mount: Mount {
                    dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
                    id: (st.stx_mask & StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id),
                },
                mount_root: has(StatxAttributes::MOUNT_ROOT),
                mode: u32::from(st.stx_mode) & 0o7777,
                uid: st.stx_uid,
                gid: st.stx_gid,
            })
        }
        Err(Errno::NOSYS | Errno::PERM) => {
            let st = rustix::fs::statat(dir, name, flags)?;
            Ok(Info {
                kind: FileType::from_raw_mode(st.st_mode),
                #[allow(clippy::useless_conversion)] // the type of st_dev differs between targets
                mount: Mount { dev: u64::from(st.st_dev), id: None },
                mount_root: false,
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the directory `name` in `dir` for listing, without following a
/// symlink (ELOOP or ENOTDIR if it is not a directory).
fn open_dir(dir: BorrowedFd<'_>, name: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// Sets the mode of `name` in `dir` to `mode`, never following a symlink:
/// through an `O_PATH | O_NOFOLLOW` descriptor of it, which needs no access
/// to the file itself (so it works on a directory its owner cannot open),
/// and whose `/proc/self/fd` link names that very inode. Returns false,
/// changing nothing, if `name` is a symlink or `check` refuses what it is.
fn chmod_nofollow(dir: BorrowedFd<'_>, name: &Path, check: impl FnOnce(&Info) -> Option<u32>) -> io::Result<bool> {
    let fd = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let info = info(fd.as_fd(), Path::new(""))?;
    if info.kind == FileType::Symlink {
        return Ok(false);
    }
    let Some(mode) = check(&info) else { return Ok(false) };
    #[cfg(target_os = "linux")]
    {
        let proc = rustix_linux_procfs::proc_self_fd()?;
        rustix::fs::chmodat(proc, rustix::path::DecInt::from_fd(&fd), Mode::from_raw_mode(mode), AtFlags::empty())?;
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = mode;
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
}

/// The names in the directory `dir`, with their types where the
/// filesystem reports them.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Option<FileType>)>> {
    let mut out = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = Some(entry.file_type()).filter(|t| *t != FileType::Unknown);
        out.push((OsString::from_vec(name.to_vec()), kind));
    }
    Ok(out)
}

/// Deletes the directory `leaf` in `parent` and everything beneath it, by
/// descriptor, never following a symlink and never crossing into another
/// mount. `shown` is its absolute path, for messages. If a mount point was
/// found, everything else is deleted and the error is [`MountPoints`].
pub(super) fn remove_dir_all(parent: BorrowedFd<'_>, leaf: &Path, shown: &Path) -> io::Result<()> {
    let tree = info(parent, Path::new(""))?.mount;
    let mut kept = Vec::new();
    if !remove_child_dir(parent, leaf, tree, shown, &mut kept)? {
        // Not a directory (any more): unlinked like a file.
        return Ok(rustix::fs::unlinkat(parent, leaf, AtFlags::empty())?);
    }
    if !kept.is_empty() {
        return Err(io::Error::other(MountPoints { paths: kept, deleting: true }));
    }
    Ok(())
}

/// Deletes the directory `name` in `dir` (on mount `tree`); adds to `kept`
/// what it left because it is a mount point. Returns false if `name` turned
/// out not to be a directory (the caller unlinks it instead).
fn remove_child_dir(
    dir: BorrowedFd<'_>,
    name: &Path,
    tree: Mount,
    shown: &Path,
    kept: &mut Vec<PathBuf>,
) -> io::Result<bool> {
    let child = match open_dir(dir, name) {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // Its owner cannot read or search it: give the owner access
            // through a descriptor of it, then open it.
            if !chmod_nofollow(dir, name, |i| (i.kind == FileType::Directory).then_some(i.mode | 0o700))? {
                return Ok(false);
            }
            open_dir(dir, name)?
        }
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::LOOP | Errno::NOTDIR)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let here = info(child.as_fd(), Path::new(""))?;
    if here.crosses(tree) {
        kept.push(shown.to_owned());
        return Ok(true);
    }
    let before = kept.len();
    empty_dir(child.as_fd(), &here, tree, shown, kept)?;
    drop(child);
    if kept.len() == before {
        match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Unlinks everything in the open directory `dir`.
fn empty_dir(dir: BorrowedFd<'_>, here: &Info, tree: Mount, shown: &Path, kept: &mut Vec<PathBuf>) -> io::Result<()> {
    // Read-only directories keep their names from being unlinked; the tree
    // is the caller's to delete. Another user's directory stays as it is
    // (the unlink below then says why).
    if here.mode & 0o700 != 0o700 && Some(here.uid) == super::effective_uid() {
        rustix::fs::fchmod(dir, Mode::from_raw_mode(here.mode | 0o700))?;
    }
    for (name, kind) in list(dir)? {
        let name = PathBuf::from(name);
        let child_shown = shown.join(&name);
        let kind = match kind {
            Some(kind) => kind,
            None => match info(dir, &name) {
                Ok(i) => i.kind,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        if kind == FileType::Directory && remove_child_dir(dir, &name, tree, &child_shown, kept)? {
            continue;
        }
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // A file bind-mounted onto this name.
            Err(Errno::BUSY) => kept.push(child_shown),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What [`settle_tree`] does to each name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settle {
    /// The group of a group-shared cache (`None`: a private cache).
    pub(crate) group: Option<u32>,
    /// Whether to fsync every file and directory.
    pub(crate) sync: bool,
}

/// Settles the tree `leaf` in `parent` for publishing: gives each
/// directory and regular file the mode [`super::settled_mode`] asks for
/// (and, in a group-shared cache, the cache's group), then fsyncs it if
/// `settle.sync`. Symlinks are neither followed nor changed; FIFOs, sockets
/// and devices are left as they are. A mount point inside the tree fails it
/// with [`MountPoints`] before anything beneath it is touched. `shown` is the
/// tree's absolute path, for messages.
pub(super) fn settle_tree(parent: BorrowedFd<'_>, leaf: &Path, shown: &Path, settle: Settle) -> io::Result<()> {
    let tree = info(parent, Path::new(""))?.mount;
    let top = info(parent, leaf)?;
    if top.kind != FileType::Directory {
        return settle_file(parent, leaf, Some(&top), tree, shown, settle, true);
    }
    settle_dir(parent, leaf, tree, shown, settle, true)
}

fn settle_dir(
    parent: BorrowedFd<'_>,
    name: &Path,
    tree: Mount,
    shown: &Path,
    settle: Settle,
    top: bool,
) -> io::Result<()> {
    let dir = open_dir(parent, name)?;
    let here = info(dir.as_fd(), Path::new(""))?;
    if here.crosses(tree) {
        return Err(io::Error::other(MountPoints { paths: vec![shown.to_owned()], deleting: false }));
    }
    fix(dir.as_fd(), &here, settle, top, shown)?;
    for (child, kind) in list(dir.as_fd())? {
        let child = PathBuf::from(child);
        let child_shown = shown.join(&child);
        if kind == Some(FileType::Directory) {
            settle_dir(dir.as_fd(), &child, tree, &child_shown, settle, false)?;
            continue;
        }
        let found = match kind {
            Some(FileType::RegularFile) if settle.sync => None,
            Some(FileType::RegularFile | FileType::Unknown) | None => match info(dir.as_fd(), &child) {
                Ok(found) => Some(found),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
            // Symlinks are never changed; FIFOs, sockets and devices are
            // left as they are.
            Some(_) => continue,
        };
        match found.map(|f| f.kind) {
            Some(FileType::Directory) => settle_dir(dir.as_fd(), &child, tree, &child_shown, settle, false)?,
            None | Some(FileType::RegularFile) => {
                settle_file(dir.as_fd(), &child, found.as_ref(), tree, &child_shown, settle, false)?;
            }
            Some(_) => {}
        }
    }
    if settle.sync {
        super::fault(super::Op::Sync)?;
        rustix::fs::fsync(&dir)?;
    }
    Ok(())
}

/// Settles the regular file `name` in `dir`. `found` is what a statx of it
/// found, if the caller made one: without an fsync to do, it is opened only
/// when its mode or group must change.
fn settle_file(
    dir: BorrowedFd<'_>,
    name: &Path,
    found: Option<&Info>,
    tree: Mount,
    shown: &Path,
    settle: Settle,
    top: bool,
) -> io::Result<()> {
    let mut regroup = true;
    if let Some(found) = found {
        if found.crosses(tree) {
            return Err(io::Error::other(MountPoints { paths: vec![shown.to_owned()], deleting: false }));
        }
        let wanted = super::settled_mode(found.mode, false, top, settle.group.is_some());
        regroup = settle.group.is_some_and(|g| g != found.gid);
        if !settle.sync && wanted == found.mode && !regroup {
            return Ok(());
        }
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let file = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(file) => file,
        // The owner may not read it (mode 0200, 0000): only a mode change can
        // be done without opening it; an fsync cannot.
        Err(Errno::ACCESS) if !settle.sync && !regroup => {
            chmod_nofollow(dir, name, |i| {
                let shared = settle.group.is_some();
                (i.kind == FileType::RegularFile).then(|| super::settled_mode(i.mode, false, top, shared))
            })?;
            return Ok(());
        }
        Err(Errno::LOOP) => return Err(io::Error::new(io::ErrorKind::InvalidData, "a symlink, not a regular file")),
        Err(e) => return Err(e.into()),
    };
    let here = info(file.as_fd(), Path::new(""))?;
    if here.kind != FileType::RegularFile {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    if here.crosses(tree) {
        return Err(io::Error::other(MountPoints { paths: vec![shown.to_owned()], deleting: false }));
    }
    fix(file.as_fd(), &here, settle, top, shown)?;
    if settle.sync {
        super::fault(super::Op::Sync)?;
        rustix::fs::fsync(&file)?;
    }
    Ok(())
}

/// Gives the open file or directory `fd` its settled mode and, in a
/// group-shared cache, the cache's group.
fn fix(fd: BorrowedFd<'_>, here: &Info, settle: Settle, top: bool, shown: &Path) -> io::Result<()> {
    let mut mode = here.mode;
    if let Some(group) = settle.group.filter(|g| *g != here.gid) {
        rustix::fs::fchown(fd, None, Some(rustix::fs::Gid::from_raw(group))).map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "`{}` belongs to group {}, not to the cache's group {group}, and it could not be given to the \
                     cache's group ({e}); the other members could not read it, so it is not published: make the \
                     command leave its output in the group it is created in",
                    crate::display::escape(&shown.to_string_lossy()),
                    here.gid,
                ),
            )
        })?;
        // chown clears the setuid and setgid bits of a file.
        mode = info(fd, Path::new(""))?.mode;
    }
    let wanted = super::settled_mode(mode, here.kind == FileType::Directory, top, settle.group.is_some());
    if wanted != mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(wanted))?;
    }
    Ok(())
}

/// Gives the directory `leaf` in `parent` write access for its owner if it
/// lacks it, through a descriptor of it, and says whether it changed it: a
/// directory renamed to a new parent must be writable (its `..` changes).
pub(super) fn make_writable_dir(parent: BorrowedFd<'_>, leaf: &Path) -> io::Result<bool> {
    let uid = super::effective_uid();
    chmod_nofollow(parent, leaf, |i| {
        (i.kind == FileType::Directory && i.mode & 0o200 == 0 && Some(i.uid) == uid).then_some(i.mode | 0o200)
    })
}
