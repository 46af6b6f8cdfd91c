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
    let mut scratch = scratch_file(out).map_err(|source| TransferError::Scratch { op: "create", source })?;
    let manifest = remote.fetch(key, &mut scratch).await?;
    scratch.rewind().map_err(|source| TransferError::Scratch { op: "rewind", source })?;
    extract(io::BufReader::new(scratch), manifest.counts, out)?;
    Ok(manifest)
}

/// Packs the entry `entry` into an unnamed file in `scratch` (any
/// directory this process may write, on a filesystem with room for the
/// archive) and uploads it to `remote` as `key`'s (see
/// [`Remote::upload`]). The entry must not change meanwhile: hold a pin.
pub async fn upload_entry(remote: &Remote, key: &Key, entry: &Dir, scratch: &Dir) -> Result<Uploaded, TransferError> {
    let mut file = scratch_file(scratch).map_err(|source| TransferError::Scratch { op: "create", source })?;
    let packed = pack(entry, io::BufWriter::new(&mut file))?;
    file.rewind().map_err(|source| TransferError::Scratch { op: "rewind", source })?;
    Ok(remote.upload(key, &mut io::BufReader::new(file), &packed).await?)
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
