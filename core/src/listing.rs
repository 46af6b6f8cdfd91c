//! This defines the one listing of the cache root: every name there,
//! classified once, so that `ls`, gc, eviction, `clean`, `verify`, `status`
//! and the upgrade agree on what is an entry.
//!
//! Invariant: a name is an entry (committed or not) only if it is neither
//! safecache's own nor the filesystem's ([`is_internal`]); whatever
//! else a command does with the root, it reads it through [`list`].

use std::ffi::OsString;

use crate::error::Error;
use crate::key::{Key, digest_of};
use crate::layout::{self, MARKER_DIR, MARKER_STAGING_PREFIX};
use crate::sys::{FileKind, Presence, Root};

/// Whether `name`, at the cache root, is not an entry: safecache's own
/// (the marker, `CACHEDIR.TAG`, a marker staging dir) or the filesystem's
/// (`lost+found` and the like, see [`crate::name::is_filesystem_owned`]).
pub(crate) fn is_internal(name: &str) -> bool {
    name == MARKER_DIR
        || name == layout::CACHEDIR_TAG
        || name.starts_with(MARKER_STAGING_PREFIX)
        || name.starts_with(layout::UPGRADE_HELD_PREFIX)
        || crate::name::is_filesystem_owned(name)
}

/// What a name at the root is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The marker, `CACHEDIR.TAG`, or what the filesystem keeps there
    /// (`lost+found`): never an entry, never touched.
    Internal,
    /// A marker being built by a process initializing the cache.
    MarkerStaging,
    /// A published entry (or a file `init` adopted).
    Committed,
    /// A directory built in place whose fill has not committed it: absent
    /// to readers until then (docs/PROTOCOL.md, "In-place fills").
    Uncommitted,
}

/// One name at the root.
#[derive(Clone, Debug)]
pub(crate) struct RootItem {
    /// The name as the directory holds it.
    pub(crate) name: OsString,
    /// The name, lossily as UTF-8 (names the code writes are ASCII).
    pub(crate) lossy: String,
    pub(crate) class: Class,
    /// The key this name is the entry of, if it is exactly the name the
    /// code writes for a key; `None` for a file without a key.
    pub(crate) key: Option<Key>,
    /// The digest of the name: its lock, stamp, manifest and failure record.
    pub(crate) digest: String,
}

impl RootItem {
    /// Whether this is an entry, committed or not.
    pub(crate) fn is_entry(&self) -> bool {
        matches!(self.class, Class::Committed | Class::Uncommitted)
    }
}

/// Lists and classifies the root. A directory's mark costs one lstat, which
/// is only paid for directories.
pub(crate) fn list(root: &Root) -> Result<Vec<RootItem>, Error> {
    let mut out = Vec::new();
    for entry in root.read_dir("").map_err(|e| Error::io("list", ".", e))? {
        out.push(item(root, entry)?);
    }
    Ok(out)
}

/// [`list`], one name at a time in the order the directory lists them (not
/// sorted), holding none: `ls` and `status` over a cache of any size take
/// the same memory.
pub(crate) fn for_each<E: From<Error>>(root: &Root, mut f: impl FnMut(RootItem) -> Result<(), E>) -> Result<(), E> {
    root.for_each_in("", |e| E::from(Error::io("list", ".", e)), |entry| f(item(root, entry)?))
}

fn item(root: &Root, entry: crate::sys::DirEntry) -> Result<RootItem, Error> {
    let lossy = entry.name.to_string_lossy().into_owned();
    let class = classify(root, &lossy, entry.kind)?;
    // A name that is not UTF-8 is not a key.
    let key = entry.name.to_str().and_then(Key::from_stored_name);
    let digest = digest_of(&lossy);
    Ok(RootItem { name: entry.name, lossy, class, key, digest })
}

fn classify(root: &Root, name: &str, kind: FileKind) -> Result<Class, Error> {
    if kind == FileKind::Dir && layout::is_marker_staging(name) {
        return Ok(Class::MarkerStaging);
    }
    if is_internal(name) {
        return Ok(Class::Internal);
    }
    if kind != FileKind::Dir {
        return Ok(Class::Committed);
    }
    match root.presence(name) {
        Ok(Presence::Uncommitted) => Ok(Class::Uncommitted),
        Ok(_) => Ok(Class::Committed),
        // Gone since the listing: a remove renamed it aside.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Class::Committed),
        Err(e) => Err(Error::io("inspect", name, e)),
    }
}
