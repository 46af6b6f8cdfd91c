//! This defines the on-disk layout: the name of everything safecache keeps
//! under the marker directory. docs/PROTOCOL.md draws the tree; the test
//! `the_tree_in_protocol_md_matches_layout_rs` fails when the drawing and
//! the names here disagree.
//!
//! Invariant: every path the library builds under the marker comes from a
//! constant or a function of this module.

/// The marker directory at the cache root.
pub const MARKER_DIR: &str = ".safecache";
/// The format version this build writes. Format 2 added entries built in
/// place, which carry the uncommitted mark until committed. Format 3 names
/// entries so that no two keys share a directory on any filesystem and
/// every name is safe where tools put paths (`name.rs`), and records the
/// filesystem probe. A format-2 reader would take `git+serde` for the key
/// `git+serde`, so it must refuse format 3, and does.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format this build reads: a cache in it is upgraded to
/// [`FORMAT_VERSION`] when this build first opens it (`format.rs`).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

pub(crate) const FORMAT_FILE: &str = ".safecache/format";
/// What the filesystem does to names, probed when the cache was made
/// (`format.rs`).
pub(crate) const FILESYSTEM_FILE: &str = ".safecache/filesystem";
/// The upgrade's journal, while an upgrade is under way (`format.rs`).
pub(crate) const UPGRADE_DIR: &str = ".safecache/upgrade";
/// The upgrade's plan, inside its journal.
pub(crate) const UPGRADE_PLAN: &str = ".safecache/upgrade/plan.json";
/// The per-cache settings (config.rs); optional.
pub(crate) const CONFIG_FILE: &str = ".safecache/config.json";
/// The usage counters (stats.rs), mapped shared by every process.
pub(crate) const STATS_FILE: &str = ".safecache/stats";
pub(crate) const LEASE_LOCK: &str = ".safecache/lease.lock";
pub(crate) const GC_LOCK: &str = ".safecache/gc.lock";
pub(crate) const LOCKS_DIR: &str = ".safecache/locks";
pub(crate) const HOLDERS_DIR: &str = ".safecache/holders";
pub(crate) const USED_DIR: &str = ".safecache/used";
pub(crate) const TMP_DIR: &str = ".safecache/tmp";
pub(crate) const TRASH_DIR: &str = ".safecache/trash";
pub(crate) const FAILED_DIR: &str = ".safecache/failed";
/// Logs of fills in flight (`fill_log.rs`; made on first need).
pub(crate) const FILLS_DIR: &str = ".safecache/fills";
/// Change markers of entries being changed in place, or whose change was
/// interrupted (`modify.rs`; made on first need).
pub(crate) const CHANGING_DIR: &str = ".safecache/changing";
/// Its mtime is when the automatic gc last ran (see `evict.rs`).
pub(crate) const GC_STAMP: &str = ".safecache/gc.stamp";

/// Manifests of published entries (made on first need).
pub(crate) const MANIFESTS_DIR: &str = ".safecache/manifests";
/// Corrupt entries set aside by `verify` (made on first need).
pub(crate) const QUARANTINE_DIR: &str = ".safecache/quarantine";
/// Inside a quarantine item: the corrupt entry itself.
pub(crate) const QUARANTINED_ENTRY: &str = "entry";
/// Inside a quarantine item: the entry's manifest, as it was.
pub(crate) const QUARANTINED_MANIFEST: &str = "manifest.json";
/// Inside a quarantine item: what `verify` found different, one per line.
pub(crate) const QUARANTINED_REPORT: &str = "differences.txt";

/// The manifest of the entry whose digest is `<d>`.
pub(crate) fn manifest(digest: &str) -> String {
    format!("{MANIFESTS_DIR}/{digest}.json")
}

/// A corrupt entry set aside, with its manifest and what differed.
pub(crate) fn quarantine_item(digest: &str, random: &str) -> String {
    format!("{QUARANTINE_DIR}/{digest}.{random}")
}

/// The subdirectories `init` creates inside the marker directory. A cache
/// made before `failed/` existed gets it when a fill first fails.
pub(crate) const SUBDIRS: [&str; 6] = [LOCKS_DIR, HOLDERS_DIR, USED_DIR, TMP_DIR, TRASH_DIR, FAILED_DIR];

/// The cache directory tag (https://bford.info/cachedir/) at the cache root,
/// which backup and archiving tools (tar --exclude-caches, restic, borg)
/// take as "skip this directory", as they do cargo's and uv's.
pub(crate) const CACHEDIR_TAG: &str = "CACHEDIR.TAG";

pub(crate) const CACHEDIR_TAG_CONTENTS: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
     # This file is a cache directory tag created by safecache.\n\
     # For information about cache directory tags, see https://bford.info/cachedir/\n";

/// Prefix of the staging directory a new marker is built in before it is
/// renamed into place, so that two processes initializing one empty
/// directory at once both end up with one complete marker.
pub(crate) const MARKER_STAGING_PREFIX: &str = ".safecache.init-";

/// Whether `name` is exactly a marker staging name this library makes
/// (the prefix, then a [`random_suffix`]), so that gc never deletes a
/// user's file that merely starts with the prefix in an adopted directory.
pub(crate) fn is_marker_staging(name: &str) -> bool {
    name.strip_prefix(MARKER_STAGING_PREFIX)
        .is_some_and(|r| r.len() == 24 && r.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

pub(crate) fn format_contents() -> String {
    format_contents_of(FORMAT_VERSION)
}

pub(crate) fn format_contents_of(version: u32) -> String {
    format!("safecache-format {version}\n")
}

/// The version a format file's bytes name, if this build reads it.
pub(crate) fn readable_format(bytes: &[u8]) -> Option<u32> {
    (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).find(|&v| bytes == format_contents_of(v).as_bytes())
}

/// The journal being written, renamed to [`UPGRADE_DIR`] once its plan is
/// durable. Only a holder of the exclusive lease writes one.
pub(crate) fn upgrade_staging(random: &str) -> String {
    format!("{MARKER_DIR}/upgrade.{random}")
}

/// Present once every old name has been moved into the journal.
pub(crate) fn upgrade_phase2() -> String {
    format!("{UPGRADE_DIR}/phase2")
}

/// An item the upgrade holds between its two phases: the entry, manifest
/// or last-use stamp of the plan's `i`-th rename. Each is held in the
/// directory it lives in (an entry at the root, under a name no key maps
/// to), so that every move of the upgrade is a rename within one directory,
/// atomic even where a power cut keeps one directory's changes and not
/// another's.
pub(crate) fn upgrade_held(i: &str, what: Held) -> String {
    match what {
        Held::Entry => format!("{UPGRADE_HELD_PREFIX}{i}"),
        Held::Manifest => format!("{MANIFESTS_DIR}/held-{i}.json"),
        Held::Used => format!("{USED_DIR}/held-{i}"),
    }
}

/// What [`upgrade_held`] holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Held {
    Entry,
    Manifest,
    Used,
}

/// Prefix of an entry the upgrade holds at the root (no key's name starts
/// with `.`).
pub(crate) const UPGRADE_HELD_PREFIX: &str = ".safecache.held-";

/// The gate of the lease or of an entry lock (`lease.gate`,
/// `locks/<d>.gate`), where exclusive waiters queue; `None` for other locks.
pub(crate) fn gate_of(lock: &str) -> Option<String> {
    let queued = lock == LEASE_LOCK || lock.strip_prefix(LOCKS_DIR).is_some_and(|rest| rest.starts_with('/'));
    lock.strip_suffix(".lock").filter(|_| queued).map(|stem| format!("{stem}.gate"))
}

/// A temp's owner lock, inside the temp.
pub(crate) const OWNER_LOCK: &str = "owner.lock";
/// What a fill writes, inside the temp.
pub(crate) const TEMP_OUT: &str = "out";

/// The suffix of a claim lock in `trash/`.
pub(crate) const CLAIM: &str = ".lock";

/// The claim lock of the trash item `name`.
pub(crate) fn claim_lock(name: &str) -> String {
    format!("{TRASH_DIR}/{name}{CLAIM}")
}

/// Whether `name` in `trash/` is a claim lock rather than an item.
pub(crate) fn is_claim(name: &str) -> bool {
    name.len() > CLAIM.len() && name.ends_with(CLAIM)
}

pub(crate) fn entry_lock(digest: &str) -> String {
    format!("{LOCKS_DIR}/{digest}.lock")
}

pub(crate) fn used_marker(digest: &str) -> String {
    format!("{USED_DIR}/{digest}")
}

/// A temp (`tmp/<d>.<r>`): a fill's private directory, or a last-use stamp
/// being written.
pub(crate) fn temp(digest: &str, random: &str) -> String {
    format!("{TMP_DIR}/{digest}.{random}")
}

/// The automatic gc's stamp while it is written, renamed to [`GC_STAMP`].
/// Only a holder of `gc.lock` writes one, so no gc deletes it in flight; a
/// killed writer's is an orphan (it has no digest) that the next gc deletes.
pub(crate) fn gc_stamp_temp(random: &str) -> String {
    format!("{TMP_DIR}/gc.{random}")
}

/// A new config file being written, renamed over [`CONFIG_FILE`]. It has no
/// digest, so gc reclaims one a killed writer left; the writer holds
/// `gc.lock` meanwhile.
pub(crate) fn config_staging(random: &str) -> String {
    format!("{TMP_DIR}/config.{random}")
}

/// A new format file being written, renamed over [`FORMAT_FILE`] to upgrade
/// the cache's format. It has no digest, so gc may delete one in flight (the
/// upgrader then writes it again) or one a killed upgrader left.
pub(crate) fn format_staging(random: &str) -> String {
    format!("{TMP_DIR}/format.{random}")
}

/// An entry renamed aside for deletion.
pub(crate) fn trash_item(digest: &str, random: &str) -> String {
    format!("{TRASH_DIR}/{digest}.{random}")
}

/// The trash of one `clean` under its own lease: a directory it renames
/// every entry into, under the entry's stored name, claimed
/// (`trash/clean.<r>.lock`) by `clean` until its renames are durable.
pub(crate) fn clean_trash(random: &str) -> String {
    format!("{TRASH_DIR}/clean.{random}")
}

/// A metadata directory (`locks`, `used`, ...: [`CLEANED_DIRS`]) that
/// `clean` renamed aside whole, under its own lease, and made again empty.
/// It has no digest: nobody owns it once it is here.
pub(crate) fn trash_dir_item(dir: &str, random: &str) -> String {
    let leaf = dir.rsplit('/').next().unwrap_or(dir);
    format!("{TRASH_DIR}/{leaf}.{random}")
}

/// The metadata directories `clean` empties under its own lease, by
/// renaming each aside whole into the trash and making it again.
pub(crate) const CLEANED_DIRS: [&str; 7] =
    [USED_DIR, LOCKS_DIR, FAILED_DIR, MANIFESTS_DIR, CHANGING_DIR, FILLS_DIR, QUARANTINE_DIR];

/// The failure record of the last failed fill of digest `<d>`.
pub(crate) fn failure_record(digest: &str) -> String {
    format!("{FAILED_DIR}/{digest}.json")
}

/// The log of the fill in flight of digest `<d>` (`fill_log.rs`).
pub(crate) fn fill_log(digest: &str) -> String {
    format!("{FILLS_DIR}/{digest}.log")
}

/// The change marker of the entry of digest `<d>` (`modify.rs`).
pub(crate) fn changing_marker(digest: &str) -> String {
    format!("{CHANGING_DIR}/{digest}.json")
}

/// A holder record, as scans see it.
pub(crate) fn holder_record(random: &str) -> String {
    format!("{HOLDERS_DIR}/{random}.json")
}

/// A holder record while it is written, under a name scans skip.
pub(crate) fn holder_staging(random: &str) -> String {
    format!("{HOLDERS_DIR}/{random}.new")
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

    /// Every path under the marker, in the order docs/PROTOCOL.md draws
    /// them, built by the same functions the library uses.
    fn tree() -> Vec<String> {
        let temp_dir = format!("{}/", temp("<d>", "<r>"));
        vec![
            FORMAT_FILE.to_owned(),
            FILESYSTEM_FILE.to_owned(),
            CONFIG_FILE.to_owned(),
            STATS_FILE.to_owned(),
            LEASE_LOCK.to_owned(),
            gate_of(LEASE_LOCK).unwrap_or_default(),
            GC_LOCK.to_owned(),
            GC_STAMP.to_owned(),
            entry_lock("<d>"),
            gate_of(&entry_lock("<d>")).unwrap_or_default(),
            holder_record("<r>"),
            used_marker("<d>"),
            temp_dir.clone(),
            format!("{temp_dir}{OWNER_LOCK}"),
            format!("{temp_dir}{TEMP_OUT}/"),
            temp("<d>", "<r>"),
            gc_stamp_temp("<r>"),
            config_staging("<r>"),
            format_staging("<r>"),
            trash_item("<d>", "<r>"),
            format!("{}/", clean_trash("<r>")),
            format!("{}/", trash_dir_item("<dir>", "<r>")),
            failure_record("<d>"),
            changing_marker("<d>"),
            fill_log("<d>"),
            manifest("<d>"),
            format!("{}/", quarantine_item("<d>", "<r>")),
            format!("{}/{QUARANTINED_ENTRY}", quarantine_item("<d>", "<r>")),
            format!("{}/{QUARANTINED_MANIFEST}", quarantine_item("<d>", "<r>")),
            format!("{}/{QUARANTINED_REPORT}", quarantine_item("<d>", "<r>")),
            format!("{UPGRADE_DIR}/"),
            UPGRADE_PLAN.to_owned(),
            upgrade_phase2(),
            upgrade_held("<i>", Held::Manifest),
            upgrade_held("<i>", Held::Used),
            format!("{}/", upgrade_staging("<r>")),
        ]
    }

    /// The paths drawn under `.safecache/` in docs/PROTOCOL.md's tree.
    fn drawn() -> Vec<String> {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let block = doc.split("```text\n").nth(1).and_then(|b| b.split("```").next()).expect("a text block");
        let mut stack: Vec<String> = Vec::new();
        let mut out = Vec::new();
        for line in block.lines() {
            let Some(at) = line.find("── ") else { continue };
            let depth = line[..at].chars().count() / 4;
            let name = line[at + "── ".len()..].split_whitespace().next().unwrap_or_default().to_owned();
            stack.truncate(depth);
            let path = format!("{}{name}", stack.concat());
            stack.push(if name.ends_with('/') { name } else { format!("{name}/") });
            if path.starts_with(".safecache/") && path != ".safecache/" {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn the_tree_in_protocol_md_matches_layout_rs() {
        assert_eq!(drawn(), tree(), "docs/PROTOCOL.md's tree and core/src/layout.rs disagree");
        let drawn_format = format!("`{}\\n`", format_contents().trim_end());
        assert!(include_str!("../../docs/PROTOCOL.md").contains(&drawn_format), "PROTOCOL.md: {drawn_format}");
    }

    #[test]
    fn entry_locks_live_under_locks() {
        assert_eq!(entry_lock("ab"), ".safecache/locks/ab.lock");
        assert_eq!(gate_of(&entry_lock("ab")).as_deref(), Some(".safecache/locks/ab.gate"));
        assert_eq!(gate_of(LEASE_LOCK).as_deref(), Some(".safecache/lease.gate"));
        assert_eq!(gate_of(GC_LOCK), None);
        assert_eq!(format_contents(), "safecache-format 3\n");
        assert_eq!(readable_format(b"safecache-format 1\n"), Some(1));
        assert_eq!(readable_format(b"safecache-format 2\n"), Some(2));
        assert_eq!(readable_format(b"safecache-format 3\n"), Some(3));
        assert_eq!(readable_format(b"safecache-format 4\n"), None);
        assert!(is_marker_staging(&format!("{MARKER_STAGING_PREFIX}{}", random_suffix().unwrap())));
        assert!(!is_marker_staging(".safecache.init-notes"), "a user's file with the prefix");
    }
}
