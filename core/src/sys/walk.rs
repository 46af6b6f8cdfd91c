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
    /// Device and inode.
    id: (u64, u64),
}

impl Info {
    /// Whether this file is on another mount than `tree`: a mount point.
    fn crosses(&self, tree: Mount) -> bool {
        self.mount_root || self.mount != tree
    }
}

/// statx of `name` in `dir` (`""`: `dir` itself), never following a
/// symlink; fstat where statx is missing (old kernels, some seccomp
/// filters). Where statx gives no mount id (before Linux 5.8), the mount id
/// of a descriptor (`name` empty) comes from `/proc/self/fdinfo` (Linux
/// 3.15); without either, only the device tells mounts apart.
fn info(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Info> {
    let mut info = statx_info(dir, name)?;
    if info.mount.id.is_none() && name.as_os_str().is_empty() {
        info.mount.id = fdinfo_mount_id(dir);
    }
    Ok(info)
}

/// The mount id `/proc/self/fdinfo/<fd>` gives for `fd` (its `mnt_id:`
/// line), if procfs can be had.
#[cfg(target_os = "linux")]
fn fdinfo_mount_id(fd: BorrowedFd<'_>) -> Option<u64> {
    use std::io::Read;
    // `fdinfo/` beside the checked `/proc/self/fd` (the crate's own
    // `proc_self_fdinfo_fd` refuses it on some kernels), on procfs.
    const PROC_SUPER_MAGIC: u64 = 0x9fa0;
    let proc_fd = rustix_linux_procfs::proc_self_fd().ok()?;
    let name = format!("../fdinfo/{}", rustix::path::DecInt::from_fd(fd).as_ref().to_string_lossy());
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    let info = rustix::fs::openat(proc_fd, name.as_str(), flags, Mode::empty()).ok()?;
    let magic = rustix::fs::fstatfs(&info).ok().map(|s| u64::try_from(s.f_type).unwrap_or(0));
    if magic != Some(PROC_SUPER_MAGIC) {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(info).take(4096).read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| l.strip_prefix("mnt_id:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(not(target_os = "linux"))]
fn fdinfo_mount_id(_: BorrowedFd<'_>) -> Option<u64> {
    None
}

fn statx_info(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Info> {
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
                id: (rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor), st.stx_ino),
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
                #[allow(clippy::useless_conversion)] // the types of st_dev and st_ino differ between targets
                id: (u64::from(st.st_dev), u64::from(st.st_ino)),
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

/// How many directory descriptors a deletion keeps open at once: deeper
/// than this, the ancestors' are closed and reopened through `..` on the
/// way back up, so a tree of any depth is deleted within a small share of
/// the descriptor limit (a CMD can build one thousands of levels deep).
const MAX_OPEN: usize = 32;

/// One directory on a deletion's path down the tree.
struct Frame {
    /// Open unless closed to bound the descriptors in use.
    fd: Option<OwnedFd>,
    /// Device and inode, to check a reopened descriptor.
    id: (u64, u64),
    /// Its name in its parent.
    name: PathBuf,
    /// Its absolute path, for messages.
    shown: PathBuf,
    /// The names in it not yet deleted.
    names: std::vec::IntoIter<(OsString, Option<FileType>)>,
    /// How many mount points had been found when it was entered: more, when
    /// it is done, means it cannot be removed.
    kept_before: usize,
}

impl Frame {
    /// Enters the open directory `fd`: makes it writable for its owner and
    /// lists it.
    fn enter(fd: OwnedFd, here: &Info, name: &Path, shown: PathBuf, kept_before: usize) -> io::Result<Frame> {
        // Read-only directories keep their names from being unlinked; the
        // tree is the caller's to delete. Another user's directory stays as
        // it is (an unlink in it then says why).
        if here.mode & 0o700 != 0o700 && Some(here.uid) == super::effective_uid() {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(here.mode | 0o700))?;
        }
        let names = list(fd.as_fd())?.into_iter();
        Ok(Frame { fd: Some(fd), id: here.id, name: name.to_owned(), shown, names, kept_before })
    }
}

/// Deletes the directory `leaf` in `parent` and everything beneath it, by
/// descriptor, never following a symlink and never crossing into another
/// mount. `shown` is its absolute path, for messages. If a mount point was
/// found, everything else is deleted and the error is [`MountPoints`].
pub(super) fn remove_dir_all(parent: BorrowedFd<'_>, leaf: &Path, shown: &Path) -> io::Result<()> {
    remove_dir_all_within(parent, leaf, shown, info(parent, Path::new(""))?.mount)
}

/// [`remove_dir_all`] with the mount of `parent`, the tree's, known.
fn remove_dir_all_within(parent: BorrowedFd<'_>, leaf: &Path, shown: &Path, tree: Mount) -> io::Result<()> {
    let Some(top) = open_for_delete(parent, leaf)? else {
        // Not a directory (any more): unlinked like a file.
        return Ok(rustix::fs::unlinkat(parent, leaf, AtFlags::empty())?);
    };
    let here = info(top.as_fd(), Path::new(""))?;
    if here.crosses(tree) {
        return Err(io::Error::other(MountPoints { paths: vec![shown.to_owned()], deleting: true }));
    }
    let mut kept = Vec::new();
    let mut stack = vec![Frame::enter(top, &here, leaf, shown.to_owned(), 0)?];
    while let Some(frame) = stack.last_mut() {
        let Some((name, kind)) = frame.names.next() else {
            // Done with it: remove it from its parent (reopened if it was
            // closed), unless a mount point below keeps it.
            let Some(done) = stack.pop() else { break };
            let Some(done_fd) = done.fd else { return Err(io::Error::other("a deletion lost its place")) };
            let keep = kept.len() > done.kept_before;
            match stack.last_mut() {
                Some(up) => {
                    if up.fd.is_none() {
                        up.fd = Some(reopen_parent(done_fd.as_fd(), up.id)?);
                    }
                    drop(done_fd);
                    if !keep && let Some(up_fd) = &up.fd {
                        remove_empty_dir(up_fd.as_fd(), &done.name)?;
                    }
                }
                None => {
                    drop(done_fd);
                    if !keep {
                        remove_empty_dir(parent, leaf)?;
                    }
                }
            }
            continue;
        };
        let Some(dir) = frame.fd.as_ref().map(|fd| fd.as_fd()) else {
            return Err(io::Error::other("a deletion lost its place"));
        };
        let name = PathBuf::from(name);
        let child_shown = frame.shown.join(&name);
        let kind = match kind {
            Some(kind) => kind,
            None => match info(dir, &name) {
                Ok(i) => i.kind,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        if kind == FileType::Directory
            && let Some(child) = open_for_delete(dir, &name)?
        {
            let here = info(child.as_fd(), Path::new(""))?;
            if here.crosses(tree) {
                kept.push(child_shown);
                continue;
            }
            let entered = Frame::enter(child, &here, &name, child_shown, kept.len())?;
            stack.push(entered);
            if stack.len() > MAX_OPEN {
                let far = stack.len() - MAX_OPEN - 1;
                stack[far].fd = None;
            }
            continue;
        }
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            // A file bind-mounted onto this name.
            Err(Errno::BUSY) => kept.push(child_shown),
            Err(e) => return Err(e.into()),
        }
    }
    if !kept.is_empty() {
        return Err(io::Error::other(MountPoints { paths: kept, deleting: true }));
    }
    Ok(())
}

/// A directory opened once so that its children can be deleted by
/// descriptor, each on its own, on several threads at once (a reclaimer's
/// trash item: one `clean` renames every entry into one).
pub(crate) struct Children {
    fd: OwnedFd,
    /// Its mount: what each child's deletion must not leave.
    tree: Mount,
    shown: PathBuf,
    /// Each child's name, and its type where the filesystem reports it.
    pub(crate) names: Vec<(OsString, Option<FileType>)>,
}

impl Children {
    /// Opens `leaf` in `parent` (never through a symlink) and lists it;
    /// `None` if it is not a directory.
    pub(super) fn open(parent: BorrowedFd<'_>, leaf: &Path, shown: &Path) -> io::Result<Option<Children>> {
        let Some(fd) = open_for_delete(parent, leaf)? else { return Ok(None) };
        let here = info(fd.as_fd(), Path::new(""))?;
        if here.crosses(info(parent, Path::new(""))?.mount) {
            return Err(io::Error::other(MountPoints { paths: vec![shown.to_owned()], deleting: true }));
        }
        // As a walk entering it: its names must be unlinkable.
        if here.mode & 0o700 != 0o700 && Some(here.uid) == super::effective_uid() {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(here.mode | 0o700))?;
        }
        let names = list(fd.as_fd())?;
        Ok(Some(Children { fd, tree: here.mount, shown: shown.to_owned(), names }))
    }

    /// Deletes the `i`-th child and everything beneath it, as
    /// [`remove_dir_all`] deletes a tree (a file by one `unlinkat`).
    pub(crate) fn remove(&self, i: usize) -> io::Result<()> {
        super::fault(super::Op::Remove)?;
        let Some((name, kind)) = self.names.get(i) else { return Ok(()) };
        let name = Path::new(name);
        if kind.is_some_and(|k| k != FileType::Directory) {
            match rustix::fs::unlinkat(self.fd.as_fd(), name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => return Ok(()),
                // A directory now (or, as Linux says for one, EISDIR):
                // deleted as a tree below.
                Err(Errno::ISDIR | Errno::PERM) => {}
                Err(Errno::BUSY) => {
                    return Err(io::Error::other(MountPoints { paths: vec![self.shown.join(name)], deleting: true }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        remove_dir_all_within(self.fd.as_fd(), name, &self.shown.join(name), self.tree)
    }
}

/// Opens the directory `name` in `dir` for deleting what is in it; `None`
/// if it is not a directory (any more). One its owner cannot read or
/// search is given owner access first, through a descriptor of it.
fn open_for_delete(dir: BorrowedFd<'_>, name: &Path) -> io::Result<Option<OwnedFd>> {
    match open_dir(dir, name) {
        Ok(child) => Ok(Some(child)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if !chmod_nofollow(dir, name, |i| (i.kind == FileType::Directory).then_some(i.mode | 0o700))? {
                return Ok(None);
            }
            open_dir(dir, name).map(Some)
        }
        Err(e) if matches!(Errno::from_io_error(&e), Some(Errno::LOOP | Errno::NOTDIR)) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The parent of the open directory `child` through its `..`, checked to be
/// the directory `id` the deletion came down through.
fn reopen_parent(child: BorrowedFd<'_>, id: (u64, u64)) -> io::Result<OwnedFd> {
    let up = open_dir(child, Path::new(".."))?;
    if info(up.as_fd(), Path::new(""))?.id != id {
        return Err(io::Error::other("the tree was moved while it was being deleted"));
    }
    Ok(up)
}

/// rmdir of `name` in `dir`; a name already gone is not an error.
fn remove_empty_dir(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
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
    settle_dir(parent, leaf, tree, shown, settle, 0)
}

/// How deep [`settle_tree`] goes: a path deeper than this is longer than
/// `PATH_MAX` (4096 bytes) even with one-letter names, so no tool could
/// open what is there, and the manifest could not name it either.
const MAX_DEPTH: usize = 2048;

/// Settles the directory `name` in `parent`, `depth` levels below the tree.
fn settle_dir(
    parent: BorrowedFd<'_>,
    name: &Path,
    tree: Mount,
    shown: &Path,
    settle: Settle,
    depth: usize,
) -> io::Result<()> {
    let dir = open_dir(parent, name)?;
    settle_open_dir(dir, tree, shown, settle, depth).map(drop)
}

/// Settles the open directory `dir` and what is beneath it; returns its
/// descriptor, which it may have closed and reopened on the way: deeper
/// than [`MAX_OPEN`] levels an ancestor's descriptor is closed while a
/// subdirectory is settled and reopened through the subdirectory's `..`,
/// so a tree of any depth needs a bounded number of descriptors.
fn settle_open_dir(mut dir: OwnedFd, tree: Mount, shown: &Path, settle: Settle, depth: usize) -> io::Result<OwnedFd> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "`{}` is more than {MAX_DEPTH} directories deep",
            crate::display::escape(&shown.to_string_lossy())
        )));
    }
    let here = info(dir.as_fd(), Path::new(""))?;
    if here.crosses(tree) {
        return Err(io::Error::other(MountPoints { paths: vec![shown.to_owned()], deleting: false }));
    }
    fix(dir.as_fd(), &here, settle, depth == 0, shown)?;
    for (child, kind) in list(dir.as_fd())? {
        let child = PathBuf::from(child);
        let child_shown = shown.join(&child);
        let found = match kind {
            Some(FileType::Directory) => None,
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
        match found.map_or(kind, |f| Some(f.kind)) {
            Some(FileType::Directory) => {
                let sub = open_dir(dir.as_fd(), &child)?;
                if depth + 1 < MAX_OPEN {
                    settle_open_dir(sub, tree, &child_shown, settle, depth + 1)?;
                } else {
                    drop(dir);
                    let sub = settle_open_dir(sub, tree, &child_shown, settle, depth + 1)?;
                    dir = reopen_parent(sub.as_fd(), here.id)?;
                }
            }
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
    Ok(dir)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback for kernels without statx's mount id reads the same id.
    #[test]
    fn fdinfo_and_statx_agree_on_the_mount_id() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir(rustix::fs::CWD, dir.path()).unwrap();
        let from_statx = statx_info(fd.as_fd(), Path::new("")).unwrap().mount.id;
        assert!(from_statx.is_some(), "this kernel's statx gives a mount id");
        assert_eq!(fdinfo_mount_id(fd.as_fd()), from_statx);
    }
}
