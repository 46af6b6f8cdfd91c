//! This defines the directory-handle boundary: the only code in the library
//! that talks to the operating system.
//!
//! Everything above this module names files by paths *relative to the cache
//! root* and reaches them through a [`Root`]. There are two implementations
//! with the same shape:
//!
//! - `native`: a `cap_std::fs::Dir` (every path confined beneath the handle)
//!   with flock locks, `renameat2(RENAME_NOREPLACE)` and handle-relative
//!   deletion.
//! - `wasi`: std::fs relative to a preopened directory (the WASI host
//!   confines it), with locks, the process id and waiting provided by host
//!   imports from the module `safecache_host`.
//!
//! Architecture invariant: no other module calls std::fs, touches an
//! absolute path, reads a clock for locking, or sleeps.

use std::ffi::OsString;
use std::time::SystemTime;

#[cfg(not(target_os = "wasi"))]
mod native;
#[cfg(not(target_os = "wasi"))]
pub(crate) use native::{LockFile, Root, process_identity};

#[cfg(target_os = "wasi")]
mod wasi;
#[cfg(target_os = "wasi")]
pub(crate) use wasi::{LockFile, Root, process_identity};

/// What a directory entry is, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One name in a directory listing.
#[derive(Debug)]
pub(crate) struct DirEntry {
    pub(crate) name: OsString,
    pub(crate) kind: FileKind,
}

/// Size and last modification of a tree, for `ls` and `status`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) modified: Option<SystemTime>,
}

/// The identity a holder record shows.
#[derive(Clone, Debug)]
pub(crate) struct Identity {
    pub(crate) pid: u32,
    pub(crate) host: String,
    pub(crate) command: String,
}
