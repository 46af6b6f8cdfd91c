#!/usr/bin/python3
"""A case-insensitive passthrough filesystem for tests: cifs.py BACKING MOUNTPOINT.

It mounts BACKING at MOUNTPOINT with FUSE and behaves the way APFS, an ext4
casefold directory or an SMB share does for the names in it:

- a lookup folds case and Unicode normalization: `lib`, `LIB` and `Lib` are
  one name, and so are `é` written as U+00E9 and as `e` + U+0301;
- a name keeps the spelling it was created with (`ls` shows `Lib`);
- creating a name that folds to an existing one opens, or fails with EEXIST
  on, the existing one (`mkdir lib` when `Lib` exists: EEXIST);
- renaming onto a name that folds to an existing one replaces that one, and
  renaming a name to another spelling of itself changes its spelling.

Everything else passes through to BACKING: data, modes, owners, times,
symlinks, hard links, statfs, xattrs and inode numbers (`use_ino`). Names
that are not UTF-8 pass through as bytes and fold only in their UTF-8 parts.

Locks: fusepy has no flock operation and this class defines no `lock`, so
libfuse2 does not ask for FUSE_FLOCK_LOCKS or FUSE_POSIX_LOCKS and the
kernel keeps flock and POSIX/OFD locks itself, which keeps the processes of
this machine apart. One difference from APFS: libfuse2's high-level API
gives each spelling its own node, so `Lib/x` and `lib/x` are two inodes to
the kernel, and a flock taken through one spelling does not exclude one
taken through the other. safecache locks files whose names it spells one
way (lowercase hex digests), so this does not weaken its locks here.

It needs Debian's python3-fusepy and fuse (libfuse2); run it with
/usr/bin/python3. It runs in the foreground until unmounted
(`fusermount -u MOUNTPOINT` or `umount MOUNTPOINT`).
"""

import codecs
import errno
import os
import sys
import threading
import unicodedata

from fusepy import FUSE, FuseOSError, Operations, fuse_get_context


def _utf8_bytes_codec(name):
    """utf-8 that passes undecodable bytes through (as os does)."""
    if name != "utf8b":
        return None
    return codecs.CodecInfo(
        name="utf8b",
        encode=lambda s, errors="strict": codecs.utf_8_encode(s, "surrogateescape"),
        decode=lambda b, errors="strict": codecs.utf_8_decode(b, "surrogateescape", True),
    )


codecs.register(_utf8_bytes_codec)


def fold(name):
    """The name as a case-insensitive, normalization-insensitive filesystem compares it."""
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", name).casefold())


class CaseInsensitive(Operations):
    use_ns = True
    # Operations on a file that was unlinked while open get a null path and
    # use the file handle (with `hard_remove`, nothing is renamed aside).
    flag_nullpath_ok = 1

    def __init__(self, root):
        self.root = os.path.realpath(root)
        # Held while a name is looked up and then created, renamed or
        # removed, so that two creators of `Lib` and `lib` make one name.
        self.names = threading.RLock()

    # ---- name resolution ----

    def _match(self, directory, name):
        """The stored spelling of `name` in `directory`, or None."""
        try:
            os.lstat(os.path.join(directory, name))
            return name
        except FileNotFoundError:
            pass
        except OSError:
            return None
        wanted = fold(name)
        try:
            for stored in os.listdir(directory):
                if fold(stored) == wanted:
                    return stored
        except OSError:
            return None
        return None

    def _real(self, path):
        real = self.root
        for part in path.split("/"):
            if part:
                real = os.path.join(real, self._match(real, part) or part)
        return real

    def _parent_and_leaf(self, path):
        parent, leaf = os.path.split(path.rstrip("/"))
        return self._real(parent), leaf

    def _target(self, path):
        """Where a new name `path` goes: the existing spelling if there is one."""
        parent, leaf = self._parent_and_leaf(path)
        return os.path.join(parent, self._match(parent, leaf) or leaf)

    def _own(self, real):
        uid, gid, _pid = fuse_get_context()
        os.lchown(real, uid, gid)

    # ---- metadata ----

    def getattr(self, path, fh=None):
        if fh is not None:
            st = os.fstat(fh.fh)
        else:
            st = os.lstat(self._real(path))
        attrs = {key: getattr(st, key) for key in (
            "st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks", "st_blksize",
            "st_rdev")}
        attrs["st_atime"] = st.st_atime_ns
        attrs["st_mtime"] = st.st_mtime_ns
        attrs["st_ctime"] = st.st_ctime_ns
        return attrs

    def access(self, path, amode):
        if not os.access(self._real(path), amode, follow_symlinks=False):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        real = self._real(path)
        if not os.path.islink(real):  # Linux has no mode on a symlink
            os.chmod(real, mode)

    def chown(self, path, uid, gid):
        os.lchown(self._real(path), uid, gid)

    def utimens(self, path, times=None):
        real = self._real(path)
        if times is None:
            os.utime(real, follow_symlinks=False)
        else:
            os.utime(real, ns=times, follow_symlinks=False)

    def truncate(self, path, length, fh=None):
        if fh is not None:
            os.ftruncate(fh.fh, length)
        else:
            os.truncate(self._real(path), length)

    def statfs(self, path):
        sv = os.statvfs(self._real(path))
        return {key: getattr(sv, key) for key in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail", "f_flag",
            "f_namemax")}

    def getxattr(self, path, name, position=0):
        return os.getxattr(self._real(path), name, follow_symlinks=False)

    def setxattr(self, path, name, value, options, position=0):
        os.setxattr(self._real(path), name, value, options, follow_symlinks=False)

    def listxattr(self, path):
        return os.listxattr(self._real(path), follow_symlinks=False)

    def removexattr(self, path, name):
        os.removexattr(self._real(path), name, follow_symlinks=False)

    # ---- directories and names ----

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def readlink(self, path):
        return os.readlink(self._real(path))

    def mkdir(self, path, mode):
        with self.names:
            target = self._target(path)
            os.mkdir(target, mode)
            self._own(target)

    def mknod(self, path, mode, dev):
        with self.names:
            target = self._target(path)
            os.mknod(target, mode, dev)
            self._own(target)

    def symlink(self, target, source):
        # `ln -s source target`: the link is `target`.
        with self.names:
            link = self._target(target)
            os.symlink(source, link)
            self._own(link)

    def link(self, target, source):
        # `ln source target`: the new name is `target`.
        with self.names:
            os.link(self._real(source), self._target(target), follow_symlinks=False)

    def unlink(self, path):
        with self.names:
            os.unlink(self._real(path))

    def rmdir(self, path):
        with self.names:
            os.rmdir(self._real(path))

    def rename(self, old, new):
        with self.names:
            source = self._real(old)
            parent, leaf = self._parent_and_leaf(new)
            stored = self._match(parent, leaf)
            if stored is not None and os.path.join(parent, stored) == source:
                # Another spelling of the same name: change its spelling.
                stored = None
            os.rename(source, os.path.join(parent, stored or leaf))

    # ---- files ----

    def open(self, path, fi):
        fi.fh = os.open(self._real(path), fi.flags)
        return 0

    def create(self, path, mode, fi):
        with self.names:
            target = self._target(path)
            existed = os.path.lexists(target)
            fi.fh = os.open(target, fi.flags | os.O_CREAT, mode)
            if not existed:
                self._own(target)
        return 0

    def read(self, path, size, offset, fh):
        return os.pread(fh.fh, size, offset)

    def write(self, path, data, offset, fh):
        return os.pwrite(fh.fh, data, offset)

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        if datasync:
            os.fdatasync(fh.fh)
        else:
            os.fsync(fh.fh)

    def release(self, path, fh):
        os.close(fh.fh)

    def opendir(self, path):
        return 0

    def releasedir(self, path, fh):
        return 0

    def fsyncdir(self, path, datasync, fh):
        fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: cifs.py BACKING MOUNTPOINT")
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(
        CaseInsensitive(backing),
        mountpoint,
        raw_fi=True,
        encoding="utf8b",
        foreground=True,
        fsname="safecache-cifs",
        subtype="cifs",
        allow_other=True,
        default_permissions=True,
        use_ino=True,
        hard_remove=True,
        entry_timeout=0,
        negative_timeout=0,
        attr_timeout=0,
    )


if __name__ == "__main__":
    main()
