//! This defines rename-aside, the one way an entry leaves its name before
//! it is deleted: `remove`, `clean`, a failed or cancelled fill, gc of an
//! uncommitted entry and `verify --repair` all go through [`set_aside`],
//! then [`delete`] and [`forget`].
//!
//! Invariant: from the moment [`set_aside`] returns, no reader finds the
//! entry at its name (it is in `trash/`, or marked uncommitted where it
//! stands), so no reader ever sees it half-deleted; what is deleted later
//! is deleted by handle, never through a symlink or a mount point.

use std::io;

use crate::layout;
use crate::sys::{FileKind, Root};

/// Where an entry went when it left its name.
#[derive(Debug)]
pub(crate) struct Aside {
    /// What to delete: `trash/<d>.<r>`, or the entry's own name when it
    /// could not be moved.
    pub(crate) rel: String,
}

/// Moves the entry at `name` (at the root) out of its name: by one rename
/// into `trash/<digest>.<random>`, or, where the filesystem cannot rename
/// it, by marking it uncommitted in place (readers take a marked directory
/// for absent; gc, or the next fill of the key, deletes one left behind).
/// The caller holds the exclusive entry lock of `digest`, and makes the
/// change durable (a sync of the root) before deleting anything.
pub(crate) fn set_aside(root: &Root, name: &str, digest: &str) -> io::Result<Aside> {
    let trash = layout::trash_item(digest, &layout::random_suffix().map_err(io::Error::other)?);
    set_aside_to(root, name, trash)
}

/// [`set_aside`] to the trash path `trash`: `clean`, under its own lease,
/// renames every entry into the one trash directory it holds
/// ([`layout::clean_trash`]).
pub(crate) fn set_aside_to(root: &Root, name: &str, trash: String) -> io::Result<Aside> {
    let renamed = root.rename(name, &trash);
    left(root, name, trash, renamed)
}

/// [`set_aside_to`] into `target`, a directory opened once (the clean's
/// trash), under the entry's own name.
pub(crate) fn set_aside_into(root: &Root, name: &str, target: &crate::sys::Target) -> io::Result<Aside> {
    let renamed = root.rename_into(name, target, name);
    left(root, name, format!("{}/{name}", target.rel), renamed)
}

/// How the entry at `name` left its name, given how its rename to `trash`
/// went.
fn left(root: &Root, name: &str, trash: String, renamed: io::Result<()>) -> io::Result<Aside> {
    match renamed {
        Ok(()) => {
            tracing::debug!(entry = %name, %trash, "renamed aside");
            Ok(Aside { rel: trash })
        }
        Err(e) if is_cross_device(&e) && root.kind(name)? == Some(FileKind::Dir) => {
            root.set_uncommitted(name, true)?;
            // The mark is the entry's own metadata: make it durable before
            // a single file of the entry goes.
            root.sync_metadata_dir(name)?;
            tracing::info!(entry = %name, "cannot rename this entry (a lower layer of an overlay?); deleting it in place, marked");
            Ok(Aside { rel: name.to_owned() })
        }
        Err(e) => Err(e),
    }
}

fn is_cross_device(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::CrossesDevices
}

/// Deletes what [`set_aside`] set aside, by handle; returns the bytes
/// freed. A deletion that stops half-way (a mount point inside, a kill)
/// leaves an orphan that gc reclaims: a trash item, or a marked entry.
pub(crate) fn delete(root: &Root, aside: &Aside) -> io::Result<u64> {
    let bytes = root.usage(&aside.rel).map(|u| u.bytes).unwrap_or(0);
    root.remove_tree(&aside.rel)?;
    Ok(bytes)
}

/// Forgets what the cache keeps about the entry of `digest` once it is
/// gone: its last-use stamp, its manifest and its change marker. Under the
/// exclusive entry lock, so no fill or change of the key is writing new
/// ones.
pub(crate) fn forget(root: &Root, digest: &str) {
    let _ = root.remove_file(layout::used_marker(digest));
    let _ = root.remove_file(layout::manifest(digest));
    let _ = root.remove_file(layout::changing_marker(digest));
}
