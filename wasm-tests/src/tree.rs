//! This defines what the host itself reads and writes of the shared
//! directory (the power-loss model, the oracle, the old-format caches of
//! the upgrade scenarios), over either backend: a real directory
//! ([`HostTree`]) or the in-memory filesystem (`memfs.rs`). Paths are
//! relative to the cache root (the empty path is the root), and never fold
//! case: the host sees the names as they were made.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode.
pub(crate) type Ino = (u64, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    /// Symlinks and special files: the simulated processes make none.
    Other,
}

/// What the host needs to know of one path (never following a symlink).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    pub(crate) ino: Ino,
    pub(crate) kind: Kind,
    /// Whether a directory carries the uncommitted mark (the sticky bit).
    pub(crate) marked: bool,
}

/// The shared directory as the host sees it.
pub(crate) trait Tree {
    fn stat(&self, rel: &Path) -> io::Result<Stat>;
    /// The names in the directory `rel`, sorted.
    fn list(&self, rel: &Path) -> io::Result<Vec<String>>;
    fn read(&self, rel: &Path) -> io::Result<Vec<u8>>;
    fn create_dir(&mut self, rel: &Path) -> io::Result<()>;
    fn write(&mut self, rel: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Sets or clears the uncommitted mark of the directory `rel`.
    fn set_marked(&mut self, rel: &Path, on: bool) -> io::Result<()>;
    /// Deletes everything beneath the root.
    fn clear(&mut self) -> io::Result<()>;
    /// Something that keeps the inode at `rel` from being freed or reused
    /// while the power model's image names it (a real directory's inode
    /// numbers are reused; the in-memory one's never are).
    fn pin(&self, rel: &Path) -> io::Result<Option<File>>;
    /// The current bytes of the file `ino`, if the tree can read a file no
    /// name leads to.
    fn read_ino(&self, ino: Ino) -> Option<Vec<u8>>;

    fn exists(&self, rel: &Path) -> bool {
        self.stat(rel).is_ok()
    }

    fn read_string(&self, rel: &Path) -> io::Result<String> {
        String::from_utf8(self.read(rel)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Makes `rel` and its missing ancestors, as directories.
    fn create_dir_all(&mut self, rel: &Path) -> io::Result<()> {
        let mut at = PathBuf::new();
        for part in rel.components() {
            at.push(part);
            match self.stat(&at) {
                Ok(stat) if stat.kind == Kind::Dir => {}
                Ok(_) => return Err(io::ErrorKind::NotADirectory.into()),
                Err(_) => self.create_dir(&at)?,
            }
        }
        Ok(())
    }
}

/// A real directory.
#[derive(Debug)]
pub(crate) struct HostTree(pub(crate) PathBuf);

const STICKY: u32 = 0o1000;

impl Tree for HostTree {
    fn stat(&self, rel: &Path) -> io::Result<Stat> {
        let meta = fs::symlink_metadata(self.0.join(rel))?;
        let ty = meta.file_type();
        let kind = if ty.is_dir() {
            Kind::Dir
        } else if ty.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        Ok(Stat { ino: (meta.dev(), meta.ino()), kind, marked: meta.mode() & STICKY != 0 })
    }

    fn list(&self, rel: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.0.join(rel))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        fs::read(self.0.join(rel))
    }

    fn create_dir(&mut self, rel: &Path) -> io::Result<()> {
        fs::create_dir(self.0.join(rel))
    }

    fn write(&mut self, rel: &Path, bytes: &[u8]) -> io::Result<()> {
        fs::write(self.0.join(rel), bytes)
    }

    fn set_marked(&mut self, rel: &Path, on: bool) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(rel);
        let mode = fs::symlink_metadata(&path)?.mode() & 0o7777;
        let wanted = if on { mode | STICKY } else { mode & !STICKY };
        if wanted != mode {
            fs::set_permissions(&path, fs::Permissions::from_mode(wanted))?;
        }
        Ok(())
    }

    fn clear(&mut self) -> io::Result<()> {
        for entry in fs::read_dir(&self.0)? {
            let path = entry?.path();
            if fs::symlink_metadata(&path)?.is_dir() { fs::remove_dir_all(&path)? } else { fs::remove_file(&path)? }
        }
        Ok(())
    }

    fn pin(&self, rel: &Path) -> io::Result<Option<File>> {
        File::open(self.0.join(rel)).map(Some)
    }

    fn read_ino(&self, _: Ino) -> Option<Vec<u8>> {
        None
    }
}
