//! This defines the on-disk layout: the names of everything safecache keeps
//! under the marker directory. docs/PROTOCOL.md draws the same tree.
//!
//! ```text
//! <cache>/
//! ├── .safecache/            marker dir; its presence makes <cache> a cache
//! │   ├── format             "safecache-format 1\n"
//! │   ├── lease.lock         cache-wide lease (shared = in use, exclusive = mutate all)
//! │   ├── gc.lock            one gc at a time
//! │   ├── locks/<d>.lock     entry lock of the key whose digest is <d>; never deleted
//! │   │                      while the cache is in use
//! │   ├── holders/<r>.json   holder record of one held lock, flocked by its holder
//! │   ├── used/<d>           mtime = last use of the entry with digest <d>
//! │   ├── tmp/<d>.<r>/       a fill in flight (or an orphan): owner.lock + out/
//! │   └── trash/<d>.<r>      an entry renamed aside, being deleted (or an orphan)
//! └── <stored name>          a published entry: the key with `/` as `%2F`
//! ```

/// The marker directory at the cache root.
pub const MARKER_DIR: &str = ".safecache";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const FORMAT_FILE: &str = ".safecache/format";
pub(crate) const LEASE_LOCK: &str = ".safecache/lease.lock";
pub(crate) const GC_LOCK: &str = ".safecache/gc.lock";
pub(crate) const LOCKS_DIR: &str = ".safecache/locks";
pub(crate) const HOLDERS_DIR: &str = ".safecache/holders";
pub(crate) const USED_DIR: &str = ".safecache/used";
pub(crate) const TMP_DIR: &str = ".safecache/tmp";
pub(crate) const TRASH_DIR: &str = ".safecache/trash";

/// The subdirectories `init` creates inside the marker directory.
pub(crate) const SUBDIRS: [&str; 5] = [LOCKS_DIR, HOLDERS_DIR, USED_DIR, TMP_DIR, TRASH_DIR];

/// Prefix of the staging directory a new marker is built in before it is
/// renamed into place, so that two processes initializing one empty
/// directory at once both end up with one complete marker.
pub(crate) const MARKER_STAGING_PREFIX: &str = ".safecache.init-";

pub(crate) fn format_contents() -> String {
    format!("safecache-format {FORMAT_VERSION}\n")
}

pub(crate) fn entry_lock(digest: &str) -> String {
    format!("{LOCKS_DIR}/{digest}.lock")
}

pub(crate) fn used_marker(digest: &str) -> String {
    format!("{USED_DIR}/{digest}")
}

/// A fresh unguessable suffix from the OS's random source (never a
/// clock-seeded generator: under a virtual clock those repeat).
pub(crate) fn random_suffix() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Splits a `<digest>.<random>` temp or trash name into its digest.
pub(crate) fn digest_of_item(name: &str) -> Option<&str> {
    let (digest, rest) = name.split_once('.')?;
    (digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()) && !rest.is_empty()).then_some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_names_carry_their_digest() {
        let digest = "0123456789abcdef0123456789abcdef";
        assert_eq!(digest_of_item(&format!("{digest}.deadbeef")), Some(digest));
        assert_eq!(digest_of_item(digest), None, "no random part");
        assert_eq!(digest_of_item(&format!("{digest}.")), None);
        assert_eq!(digest_of_item("short.abc"), None);
        assert_eq!(digest_of_item("0123456789abcdef0123456789abcdeg.x"), None, "not hex");
    }

    #[test]
    fn random_suffixes_are_unguessable_and_distinct() {
        let a = random_suffix().unwrap();
        let b = random_suffix().unwrap();
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn entry_locks_live_under_locks() {
        assert_eq!(entry_lock("ab"), ".safecache/locks/ab.lock");
        assert_eq!(format_contents(), "safecache-format 1\n");
    }
}
