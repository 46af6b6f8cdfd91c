//! This defines what the deterministic simulator's guest
//! (`wasm-tests/guest`) takes from the core instead of writing its own: the
//! digest and the on-disk names its buggy variants re-create bugs against,
//! and, under WASI, the `safecache_host` imports, declared once in
//! `sys/wasi.rs`. A guest that spelled these itself could drift from the
//! core and test a layout no build writes.
//!
//! Not a stable API: it changes with the format (docs/PROTOCOL.md, "The
//! tree").

use crate::key::Key;
use crate::layout;

/// The lease (`.safecache/lease.lock`).
pub const LEASE_LOCK: &str = layout::LEASE_LOCK;
/// The format file (`.safecache/format`).
pub const FORMAT_FILE: &str = layout::FORMAT_FILE;
/// The entry locks' directory.
pub const LOCKS_DIR: &str = layout::LOCKS_DIR;
/// The last-use stamps' directory.
pub const USED_DIR: &str = layout::USED_DIR;
/// The gc lock (`.safecache/gc.lock`).
pub const GC_LOCK: &str = layout::GC_LOCK;
/// The temps' directory.
pub const TMP_DIR: &str = layout::TMP_DIR;

/// The digest that names `key`'s lock, temps, trash, stamp and manifest.
pub fn digest(key: &Key) -> String {
    key.digest()
}

/// The digest of a stored name, valid key or not (an older format's name).
pub fn digest_of(stored_name: &str) -> String {
    crate::key::digest_of(stored_name)
}

/// The entry lock of digest `d` (`.safecache/locks/<d>.lock`).
pub fn entry_lock(digest: &str) -> String {
    layout::entry_lock(digest)
}

/// A temp (`.safecache/tmp/<d>.<r>`).
pub fn temp(digest: &str, random: &str) -> String {
    layout::temp(digest, random)
}

/// A trash item (`.safecache/trash/<d>.<r>`).
pub fn trash_item(digest: &str, random: &str) -> String {
    layout::trash_item(digest, random)
}

/// The manifest of digest `d` (`.safecache/manifests/<d>.json`).
pub fn manifest(digest: &str) -> String {
    layout::manifest(digest)
}

/// The last-use stamp of digest `d` (`.safecache/used/<d>`).
pub fn used_marker(digest: &str) -> String {
    layout::used_marker(digest)
}

/// A new format file being written (`.safecache/tmp/format.<r>`).
pub fn format_staging(random: &str) -> String {
    layout::format_staging(random)
}

/// The format file's contents for format `version`.
pub fn format_contents_of(version: u32) -> String {
    layout::format_contents_of(version)
}

/// The `safecache_host` imports, for the guest's own roles (its buggy
/// variants take host locks and sync through the host as the core does).
#[cfg(target_os = "wasi")]
pub mod host {
    pub use crate::sys::wasi::host::{lock, pid, sync, unlock};
}
