//! This defines the one liveness rule for leftovers: whether the owner of a
//! temp (`tmp/<d>.<r>`) or trash item (`trash/<d>.<r>`) may still be alive.
//! gc, clean and status all ask this one function, so what `status` calls
//! an orphan is exactly what gc reclaims.
//!
//! The rule: a filler or remover of digest `d` holds the entry lock
//! `locks/<d>.lock` exclusively from before it creates its temp or trash
//! until after it has deleted it or (`remove`, `clean`) made its rename
//! aside durable, a filler also holds its temp's `owner.lock`
//! exclusively, and a reclaimer deleting a trash item holds its claim lock
//! `trash/<item>.lock` (see `reclaim.rs`). So the owner is dead when these
//! locks can be taken shared. A name without a digest was never made by safecache
//! (nothing in the protocol owns it), so nobody can be alive behind it.
//!
//! Invariant: probing creates nothing and never blocks, and it uses shared
//! try-locks, so two probers never take each other for a live owner and a
//! pin (which holds the entry lock shared) never makes an orphan look alive.

use std::io;

use crate::layout;
use crate::sys::{DirEntry, FileKind, Flock, Root};

/// Whether the owner of the leftover `entry` in directory `dir` (the temp or
/// trash dir) may be alive.
pub(crate) fn owner_alive(root: &Root, dir: &str, entry: &DirEntry) -> io::Result<bool> {
    // A reclaimer deleting a trash item holds its claim lock.
    if dir == layout::TRASH_DIR && is_held(root, &layout::claim_lock(&entry.name.to_string_lossy()))? {
        return Ok(true);
    }
    let Some(digest) = entry.name.to_str().and_then(layout::digest_of_item) else {
        return Ok(false);
    };
    if is_held(root, &layout::entry_lock(digest))? {
        return Ok(true);
    }
    if dir == layout::TMP_DIR && entry.kind == FileKind::Dir {
        let name = entry.name.to_string_lossy();
        return is_held(root, &format!("{dir}/{name}/{}", layout::OWNER_LOCK));
    }
    Ok(false)
}

/// Whether a live fill may own the uncommitted in-place entry of digest
/// `digest`: an in-place filler holds the entry lock exclusively from
/// before it moves its directory into place until after it has committed
/// or removed it.
pub(crate) fn filler_alive(root: &Root, digest: &str) -> io::Result<bool> {
    is_held(root, &layout::entry_lock(digest))
}

/// Whether someone holds the lock file at `rel` exclusively. A missing file,
/// or something that is not a regular file (which no safecache process can
/// have locked), is not held.
pub(crate) fn is_held(root: &Root, rel: &str) -> io::Result<bool> {
    let file = match root.open_lock(rel, false) {
        Ok(file) => file,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::InvalidData) => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(!file.try_lock(Flock::Shared)?)
}
