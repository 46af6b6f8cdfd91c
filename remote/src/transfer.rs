//! This defines the two transfers a fill makes, each through directory
//! handles only: `restore`, an entry from the store into a fill's private,
//! empty output directory (the archive downloaded into an unnamed file on
//! the cache's filesystem, checked, then extracted), and `upload_entry`, a
//! published entry packed into an unnamed file and uploaded. An unnamed
//! file vanishes with its process, so a transfer killed at any point leaves
//! no archive behind; what an interrupted restore extracted is in the fill's
//! temp, which is never published.

use std::io::{self, Seek};

use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags};
use safecache::Key;

use crate::archive::ArchiveError;
use crate::extract::extract;
use crate::manifest::RemoteManifest;
use crate::pack::pack;
use crate::store::{Remote, StoreError, Uploaded};

/// Why a transfer failed. To a fill each is a miss: it runs its command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The store, the manifest or the downloaded archive failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive could not be packed or extracted.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// What an extraction wrote could not be removed after it failed
    /// (`after`): the directory is to be discarded.
    #[error("cannot empty the output after a failed restore")]
    Empty {
        /// Why the restore failed.
        after: Box<TransferError>,
        /// Why emptying failed.
        #[source]
        source: io::Error,
    },
    /// The unnamed file for the archive could not be made or rewound.
    #[error("cannot {op} a scratch file for the archive")]
    Scratch {
        /// `create`, `rewind`.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl TransferError {
    /// Whether this is the ordinary miss: the key is not in the store.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TransferError::Store(e) if e.is_not_found())
    }
}

/// Restores the entry of `key` from `remote` into `out`, a private, empty
/// directory (a fill's output): downloads its archive into an unnamed file
/// in `out` (so on the cache's filesystem, and never a name in the entry),
/// within its manifest's size and hash, then extracts it into `out` within
/// its manifest's counts. On an error, `out` is to be discarded whole.
pub async fn restore(remote: &Remote, key: &Key, out: &Dir) -> Result<RemoteManifest, TransferError> {
    restore_with(remote, key, out, &mut |_| {}).await
}

/// [`restore`], calling `progress` with the archive's bytes as they
/// arrive, and leaving `out` empty again on any error (so its caller can
/// fill it another way), unless emptying it fails too: then the error is
/// [`TransferError::Empty`], and `out` is to be discarded.
pub async fn restore_with(
    remote: &Remote,
    key: &Key,
    out: &Dir,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<RemoteManifest, TransferError> {
    let mut scratch = scratch_file(out).map_err(|source| TransferError::Scratch { op: "create", source })?;
    let manifest = remote.fetch(key, &mut Counting { inner: &mut scratch, progress }).await?;
    scratch.rewind().map_err(|source| TransferError::Scratch { op: "rewind", source })?;
    if let Err(e) = extract(io::BufReader::new(scratch), manifest.counts, out) {
        let e = TransferError::from(e);
        return Err(match empty_dir(out) {
            Ok(()) => e,
            Err(source) => TransferError::Empty { after: Box::new(e), source },
        });
    }
    Ok(manifest)
}

/// Removes everything in `dir`, never following a symlink: each name is
/// removed through `dir`'s handle, a directory with everything in it
/// (cap-std walks it by descriptor). For a private directory (a fill's
/// output) that a failed extraction wrote into.
pub fn empty_dir(dir: &Dir) -> io::Result<()> {
    for entry in dir.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        // The entry's own type, as the directory lists it: a symlink is
        // removed as a name, never followed.
        if entry.file_type()?.is_dir() {
            dir.remove_dir_all(&name)?;
        } else {
            dir.remove_file(&name)?;
        }
    }
    Ok(())
}

/// A writer that reports how many bytes went through it.
struct Counting<'a, W> {
    inner: &'a mut W,
    progress: &'a mut (dyn FnMut(u64) + Send),
}

impl<W: io::Write> io::Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that reports how many bytes went through it.
struct CountingReader<'a, R> {
    inner: R,
    progress: &'a mut (dyn FnMut(u64) + Send),
}

impl<R: io::Read> io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Packs the entry `entry` into an unnamed file in `scratch` (any
/// directory this process may write, on a filesystem with room for the
/// archive) and uploads it to `remote` as `key`'s (see
/// [`Remote::upload`]). The entry must not change meanwhile: hold a pin.
pub async fn upload_entry(remote: &Remote, key: &Key, entry: &Dir, scratch: &Dir) -> Result<Uploaded, TransferError> {
    upload_entry_with(remote, key, entry, scratch, &mut |_| {}).await.map(|(uploaded, _)| uploaded)
}

/// [`upload_entry`], calling `progress` with the archive's bytes as they
/// are read for the upload; also returns the archive's size.
pub async fn upload_entry_with(
    remote: &Remote,
    key: &Key,
    entry: &Dir,
    scratch: &Dir,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(Uploaded, u64), TransferError> {
    let mut file = scratch_file(scratch).map_err(|source| TransferError::Scratch { op: "create", source })?;
    let packed = pack(entry, io::BufWriter::new(&mut file))?;
    file.rewind().map_err(|source| TransferError::Scratch { op: "rewind", source })?;
    let mut reader = CountingReader { inner: io::BufReader::new(file), progress };
    Ok((remote.upload(key, &mut reader, &packed).await?, packed.size))
}

/// A new file in `dir` that has no name, readable and writable by its
/// owner only: `O_TMPFILE` where the filesystem has it, else a file
/// created under a random name and unlinked at once (a kill in between
/// leaves it in `dir`, which for a fill is its temp).
pub fn scratch_file(dir: &Dir) -> io::Result<std::fs::File> {
    #[cfg(target_os = "linux")]
    match rustix::fs::openat(dir, ".", OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, Mode::from_raw_mode(0o600)) {
        Ok(fd) => return Ok(std::fs::File::from(fd)),
        // Not supported by the filesystem (or the kernel): name it.
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    let name = format!(".safecache-scratch.{}", crate::keys::hex(&random));
    let fd = rustix::fs::openat(
        dir,
        name.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::fs::unlinkat(dir, name.as_str(), rustix::fs::AtFlags::empty())?;
    Ok(std::fs::File::from(fd))
}
