//! This defines the marker and what it says about a cache: creating it,
//! trusting it, the format it records, the filesystem probe, and the
//! upgrade of an older format to this build's.
//!
//! Invariants kept here:
//! - a directory becomes a cache only if it is empty (but for names its
//!   filesystem owns, such as `lost+found`) or `init` adopts it, and the
//!   marker appears by one atomic rename, complete;
//! - a cache whose format this build does not know is refused before
//!   anything in it is touched;
//! - nothing written under an older format is read with a newer format's
//!   meaning: a cache is upgraded, under the exclusive lease, before any
//!   other operation of this build touches it, and the upgrade resumes from
//!   its journal after a crash or a power cut at any step.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::layout::{self, FORMAT_FILE, FORMAT_VERSION, MARKER_DIR, MARKER_STAGING_PREFIX};
use crate::listing::{Class, is_internal};
use crate::name;
use crate::sys::{self, Root};

/// The largest format file read; the real one is 20 bytes.
const MAX_FORMAT_LEN: u64 = 4096;
/// The largest upgrade journal read: 100,000 entries of 255-byte names fit.
const MAX_PLAN_LEN: u64 = 128 << 20;
/// The largest filesystem record read.
const MAX_FILESYSTEM_LEN: u64 = 4096;

/// How opening treats a directory without a marker.
pub(crate) enum Open {
    /// Create the marker only in an empty directory.
    IfEmpty,
    /// Adopt a non-empty directory (`init`).
    Adopt,
}

/// The format a cache's format file names, or the error that refuses it.
pub(crate) fn read_format(root: &Root, path: &Path) -> Result<u32, Error> {
    let bytes = root.read(FORMAT_FILE, MAX_FORMAT_LEN).map_err(|e| Error::io("read", FORMAT_FILE, e))?;
    check_format(&bytes, path)
}

fn check_format(bytes: &[u8], path: &Path) -> Result<u32, Error> {
    layout::readable_format(bytes).ok_or_else(|| Error::UnknownFormat {
        path: path.to_owned(),
        found: crate::display::escape(String::from_utf8_lossy(bytes).trim()),
        supported: FORMAT_VERSION,
    })
}

/// Checks the marker, creating it if allowed. Two processes racing here
/// both build a complete marker in a private staging dir; the first rename
/// wins and the other discards its copy.
/// Returns the format the cache is in.
pub(crate) fn ensure_marker(root: &Root, path: &Path, mode: &Open) -> Result<u32, Error> {
    for _ in 0..8 {
        match root.read(FORMAT_FILE, MAX_FORMAT_LEN) {
            Ok(bytes) => return check_format(&bytes, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", FORMAT_FILE, e)),
        }
        if root.kind(MARKER_DIR).map_err(|e| Error::io("inspect", MARKER_DIR, e))?.is_some() {
            // A peer may have renamed a complete marker into place since
            // the read above.
            match root.read(FORMAT_FILE, MAX_FORMAT_LEN) {
                Ok(bytes) => return check_format(&bytes, path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("read", FORMAT_FILE, e)),
            }
            return Err(Error::UnknownFormat {
                path: path.to_owned(),
                found: "a marker without a format file".to_owned(),
                supported: FORMAT_VERSION,
            });
        }
        if matches!(mode, Open::IfEmpty) {
            #[cfg(test)]
            tests::pause_before_listing();
            let names = root.read_dir("").map_err(|e| Error::io("list", path.display().to_string(), e))?;
            // The marker itself counts as ours: a peer may have just created
            // it. So does what the filesystem keeps at its root.
            let foreign = names.iter().any(|e| !e.name.to_str().is_some_and(is_internal));
            if foreign {
                // A peer may have created the marker and published an entry
                // since the checks above: look again before refusing.
                if root.kind(FORMAT_FILE).map_err(|e| Error::io("inspect", FORMAT_FILE, e))?.is_some() {
                    continue;
                }
                return Err(Error::NotACache { path: path.to_owned() });
            }
        }
        // What `init` adopts is named as the user named it: the way format 1
        // named entries (but for `%2F`). So the marker it makes says format
        // 1, and the upgrade that follows at once renames each item whose
        // name is not the one format 3 writes for it (`Makefile` becomes
        // `@makefile`, the entry of the key `Makefile`), by its journal.
        let version = match mode {
            Open::Adopt => {
                clear_adopted_marks(root)?;
                let adopted = root.read_dir("").map_err(|e| Error::io("list", path.display().to_string(), e))?;
                if adopted.iter().any(|e| !e.name.to_str().is_some_and(is_internal)) { 1 } else { FORMAT_VERSION }
            }
            Open::IfEmpty => FORMAT_VERSION,
        };
        let staging = format!("{MARKER_STAGING_PREFIX}{}", layout::random_suffix()?);
        match build_marker(root, &staging, version) {
            Ok(()) => {
                write_cachedir_tag(root);
                let _ = root.sync_metadata_dir("");
                return Ok(version);
            }
            Err(e) => {
                let _ = root.remove_tree(&staging);
                // Losing the rename to a peer is expected; anything else (a
                // read-only or full filesystem) is the caller's to see.
                // So is a peer's gc deleting this staging dir once the
                // marker exists; WASI does not classify every such error.
                let marker_now = matches!(root.kind(FORMAT_FILE), Ok(Some(_)));
                if !marker_now
                    && e.kind() != io::ErrorKind::AlreadyExists
                    && e.kind() != io::ErrorKind::DirectoryNotEmpty
                {
                    return Err(Error::io("create the cache marker in", path.display().to_string(), e));
                }
                tracing::debug!(error = %e, "marker creation lost a race; checking again");
            }
        }
    }
    Err(Error::io("initialize", MARKER_DIR, io::Error::other("the marker kept changing")))
}

/// Refuses a cache that another user could tamper with: one whose root,
/// marker or marker subdirectories are owned by another user (other than
/// root), or writable by others. A group-shared cache (setgid and
/// group-writable, `chmod 2770`) trusts its group's members, if this
/// process is one. Anything less lets another user swap a temp for a
/// symlink and redirect this process's writes (docs/SECURITY.md).
///
/// Returns whether every one of those directories was there to check
/// (`None`: nothing was checked): a caller that then makes the marker, or
/// [`repair_subdirs`] makes one, checks again.
pub(crate) fn check_trust(root: &Root, path: &Path, allow_untrusted: bool) -> Result<Option<bool>, Error> {
    let Some(euid) = sys::effective_uid() else { return Ok(None) };
    if allow_untrusted {
        return Ok(None);
    }
    let mut complete = true;
    for rel in ["", MARKER_DIR].into_iter().chain(layout::SUBDIRS) {
        let meta = root.stat(rel).map_err(|e| Error::io("inspect", display_rel(rel), e))?;
        complete &= meta.is_some();
        let Some(owner) = meta.and_then(|m| m.owner) else { continue };
        let group_shared = owner.mode & 0o2000 != 0 && sys::in_group(owner.gid);
        let reason = if owner.mode & 0o002 != 0 {
            "can be written by every user".to_owned()
        } else if owner.uid != euid && owner.uid != 0 && !group_shared {
            format!("belongs to another user (uid {})", owner.uid)
        } else if owner.mode & 0o020 != 0 && !group_shared {
            format!("can be written by its group (gid {}) but is not a group-shared cache", owner.gid)
        } else {
            continue;
        };
        return Err(Error::UntrustedCache { path: path.to_owned(), rel: rel.to_owned(), reason });
    }
    Ok(Some(complete))
}

/// Whether every subdirectory the marker is made with is there.
pub(crate) fn subdirs_present(root: &Root) -> bool {
    layout::SUBDIRS.iter().all(|dir| matches!(root.kind(dir), Ok(Some(_))))
}

/// Makes again, empty, each subdirectory of the marker that is missing: a
/// `clean` killed between renaming `locks/`, `used/` or `failed/` aside
/// and making it again leaves it missing (docs/PROTOCOL.md, "clean").
/// Best effort: a cache this process cannot write (a read-only mount) is
/// still read, and what needs the directory fails on its own.
pub(crate) fn repair_subdirs(root: &Root) {
    for dir in layout::SUBDIRS {
        match root.create_dir(dir) {
            Ok(()) => tracing::info!(%dir, "made a missing metadata directory again"),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => tracing::debug!(%dir, error = %e, "cannot make a missing metadata directory"),
        }
    }
}

fn display_rel(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

fn build_marker(root: &Root, staging: &str, version: u32) -> io::Result<()> {
    root.create_dir(staging)?;
    for sub in layout::SUBDIRS {
        let leaf = sub.strip_prefix(".safecache/").unwrap_or(sub);
        root.create_dir(&format!("{staging}/{leaf}"))?;
    }
    root.write_metadata(&format!("{staging}/format"), layout::format_contents_of(version).as_bytes())?;
    let probed = probe_filesystem(root, staging)?;
    root.write_metadata(&format!("{staging}/filesystem"), probed.contents().as_bytes())?;
    root.sync_metadata_tree(staging)?;
    root.rename_noreplace(staging, MARKER_DIR)
}

/// What the filesystem under a cache does to names, probed once when the
/// cache is made (or upgraded) and kept in `.safecache/filesystem`. Entry
/// names never depend on it (they are safe on every filesystem); `status`
/// reports it, and it tells a reader of a copied cache where it was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Filesystem {
    /// `A` and `a` name one file (APFS by default, ext4 casefold, SMB).
    pub case_insensitive: bool,
    /// `é` as one code point and as `e` plus a combining accent name one
    /// file (APFS, ext4 casefold, ZFS with normalization).
    pub normalizes_unicode: bool,
}

impl Filesystem {
    fn contents(self) -> String {
        format!(
            "case-insensitive {}\nnormalizes-unicode {}\n",
            yes_no(self.case_insensitive),
            yes_no(self.normalizes_unicode)
        )
    }

    fn parse(bytes: &[u8]) -> Option<Filesystem> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut out = Filesystem::default();
        let mut seen = 0;
        for line in text.lines() {
            let (field, value) = line.split_once(' ')?;
            let value = match value {
                "yes" => true,
                "no" => false,
                _ => return None,
            };
            match field {
                "case-insensitive" => out.case_insensitive = value,
                "normalizes-unicode" => out.normalizes_unicode = value,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 2).then_some(out)
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Creates two probe files in `dir` (the marker being built, or the
/// upgrade's journal dir) and looks each up under another spelling.
fn probe_filesystem(root: &Root, dir: &str) -> io::Result<Filesystem> {
    let mut out = Filesystem::default();
    let cases = [("probe-Case", "probe-cASE"), ("probe-\u{e9}", "probe-e\u{301}")];
    for (i, (made, other)) in cases.into_iter().enumerate() {
        let made = format!("{dir}/{made}");
        match root.write_new(&made, b"") {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let same = root.kind(format!("{dir}/{other}"))?.is_some();
        root.remove_file(&made)?;
        if i == 0 {
            out.case_insensitive = same;
        } else {
            out.normalizes_unicode = same;
        }
    }
    Ok(out)
}

/// What `.safecache/filesystem` says, if it is there and well-formed.
pub(crate) fn read_filesystem(root: &Root) -> Option<Filesystem> {
    root.read(layout::FILESYSTEM_FILE, MAX_FILESYSTEM_LEN).ok().and_then(|b| Filesystem::parse(&b))
}

/// Clears the sticky bit of every directory `init` is about to adopt: at a
/// cache's root that bit means "an in-place fill has not committed this",
/// and an adopted directory is an entry. Runs before the marker exists, so
/// no in-place fill can have marked anything yet.
fn clear_adopted_marks(root: &Root) -> Result<(), Error> {
    for item in crate::listing::list(root)?.into_iter().filter(|i| i.class == Class::Uncommitted) {
        let name = item.lossy.as_str();
        root.set_uncommitted(name, false).map_err(|e| Error::io("adopt", name, e))?;
        // The mode is the directory's own metadata: only its own fsync makes
        // the cleared bit durable. Without it, a power cut after the new
        // marker or format is durable brings the bit back, and gc deletes
        // the entry as a dead in-place fill (power-upgrade, seed 1).
        root.sync_metadata_dir(name).map_err(|e| Error::io("sync", name, e))?;
    }
    Ok(())
}

/// Writes `CACHEDIR.TAG` at the root unless something is there already.
/// Best effort: backup tools that skip caches are a courtesy, and a cache
/// works without its tag.
pub(crate) fn write_cachedir_tag(root: &Root) {
    match root.write_new(layout::CACHEDIR_TAG, layout::CACHEDIR_TAG_CONTENTS.as_bytes()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => tracing::debug!(error = %e, "could not write CACHEDIR.TAG"),
    }
}

/// The upgrade's journal: every rename it makes, written (and made durable)
/// before the first one, so that a crash at any step is finished by the
/// next process to open the cache, never guessed at from what the root
/// holds (an old name and a new name can be the same string: `a+b` was the
/// key `a+b` in format 2 and is the key `a/b` in format 3).
#[derive(Serialize, Deserialize, Debug)]
struct Plan {
    /// The format upgraded from.
    from: u32,
    /// `(old name, new name)` of every entry that changes name.
    renames: Vec<(String, String)>,
}

/// Upgrades the cache to this build's format, if it is older, under the
/// exclusive lease (the upgrade waits, as the caller's deadline allows, for
/// every process of an older build to let go of the cache). Idempotent and
/// resumable: racing upgraders agree, and one killed at any step leaves a
/// journal the next finishes.
///
/// What each older format meant, and what the upgrade does about it:
/// - format 1 had no in-place fills, so a sticky bit on an entry was the
///   user's (an adopted directory's): it is cleared, never read as
///   "uncommitted";
/// - formats 1 and 2 stored `/` as `%2F` and every other byte as is: each
///   entry whose format-3 name differs is renamed, with its manifest and
///   last-use stamp (both named by the digest of the name). Its failure
///   record, if any, is dropped: nobody waits on it under the exclusive
///   lease.
///
/// `lease` takes the exclusive lease; the upgrade holds what it returns
/// until it is done.
pub(crate) fn upgrade<L>(root: &Root, path: &Path, lease: impl FnOnce() -> Result<L, Error>) -> Result<(), Error> {
    let lease = lease()?;
    let from = read_format(root, path)?;
    let journal = root.kind(layout::UPGRADE_PLAN).map_err(|e| Error::io("inspect", layout::UPGRADE_PLAN, e))?;
    // A journal being written by an upgrader killed before it renamed it in
    // (only a holder of this lease writes one, so none is in flight): the
    // format is still the old one, so this open is the one to discard it
    // (upgrade, seed 0, kill 6@98+restart left `.safecache/upgrade.<r>`).
    remove_stale_staging(root).map_err(|e| upgrade_error(path, e))?;
    if from == FORMAT_VERSION {
        // A peer finished while this one waited. The format is written only
        // once the plan is carried out, so a journal beside it (its
        // upgrader was stopped while deleting it) is never replayed: that
        // would move entries that already have their new names.
        let _ = discard_journal(root);
        return Ok(());
    }
    let _span = tracing::info_span!("upgrade", from).entered();
    let plan = match journal {
        Some(_) => {
            let bytes = root.read(layout::UPGRADE_PLAN, MAX_PLAN_LEN).map_err(|e| upgrade_error(path, e))?;
            serde_json::from_slice::<Plan>(&bytes).map_err(|e| {
                upgrade_error(
                    path,
                    io::Error::new(io::ErrorKind::InvalidData, format!("its journal is unreadable: {e}")),
                )
            })?
        }
        None => {
            if from == 1 {
                clear_format1_marks(root)?;
            }
            write_plan(root, &make_plan(root, from)?).map_err(|e| upgrade_error(path, e))?
        }
    };
    apply_plan(root, &plan).map_err(|e| upgrade_error(path, e))?;
    drop(lease);
    tracing::info!(from = plan.from, to = FORMAT_VERSION, renamed = plan.renames.len(), "upgraded the cache's format");
    Ok(())
}

fn remove_stale_staging(root: &Root) -> io::Result<()> {
    let prefix = layout::upgrade_staging("");
    for entry in root.read_dir(MARKER_DIR)? {
        let Some(name) = entry.name.to_str() else { continue };
        let rel = format!("{MARKER_DIR}/{name}");
        if rel.starts_with(&prefix) && entry.kind == crate::sys::FileKind::Dir {
            root.remove_tree(&rel)?;
        }
    }
    Ok(())
}

fn upgrade_error(path: &Path, e: io::Error) -> Error {
    Error::io("upgrade the format of the cache at", path.display().to_string(), e)
}

/// Format 1 had no in-place fills: a sticky directory at its root is an
/// adopted directory of the user's, and format 3 would read the bit as
/// "uncommitted" (and gc would delete it). Runs under the exclusive lease,
/// so no in-place fill of this build is marking anything meanwhile.
fn clear_format1_marks(root: &Root) -> Result<(), Error> {
    clear_adopted_marks(root)?;
    root.sync_metadata_dir("").map_err(|e| Error::io("sync", ".", e))
}

fn make_plan(root: &Root, from: u32) -> Result<Plan, Error> {
    let mut renames = Vec::new();
    for item in crate::listing::list(root)?.into_iter().filter(|i| i.is_entry()) {
        let Some(old) = item.name.to_str() else { continue };
        let Some(key) = name::decode_legacy(old) else {
            // Not a key by the old format's rules either (an adopted file
            // with a `%` in its name): it stays what it was, a file `clean`
            // may remove.
            continue;
        };
        let new = key.stored_name();
        if new != old {
            renames.push((old.to_owned(), new));
        }
    }
    Ok(Plan { from, renames })
}

/// Writes the journal: a new dir holding the plan, renamed into place.
fn write_plan(root: &Root, plan: &Plan) -> io::Result<Plan> {
    let staging = layout::upgrade_staging(&layout::random_suffix().map_err(io::Error::other)?);
    root.create_dir(&staging)?;
    let bytes = serde_json::to_vec(plan).map_err(io::Error::other)?;
    let written = root
        .write_metadata(&format!("{staging}/plan.json"), &bytes)
        .and_then(|()| root.sync_metadata_tree(&staging))
        .and_then(|()| {
            // A dir left by a crash before its plan was renamed in.
            let _ = root.remove_tree(layout::UPGRADE_DIR);
            root.rename_noreplace(&staging, layout::UPGRADE_DIR)
        })
        .and_then(|()| root.sync_metadata_dir(MARKER_DIR));
    if let Err(e) = written {
        let _ = root.remove_tree(&staging);
        return Err(e);
    }
    Ok(Plan { from: plan.from, renames: plan.renames.clone() })
}

/// The three places an entry's name shows: the root, its manifest and its
/// last-use stamp (named by the digest of the name).
fn places(old: &str, new: &str, i: usize) -> [(String, String, String); 3] {
    let (od, nd) = (crate::key::digest_of(old), crate::key::digest_of(new));
    let i = i.to_string();
    let held = |what| layout::upgrade_held(&i, what);
    [
        (old.to_owned(), held(layout::Held::Entry), new.to_owned()),
        (layout::manifest(&od), held(layout::Held::Manifest), layout::manifest(&nd)),
        (layout::used_marker(&od), held(layout::Held::Used), layout::used_marker(&nd)),
    ]
}

/// Carries the plan out in two phases, each resumable: first every old name
/// is moved to its held name, then every held item to its new name. No
/// new name is made before every old one is gone, so an old name that is
/// also a new one (`a+b`) is never mistaken for the other.
fn apply_plan(root: &Root, plan: &Plan) -> io::Result<()> {
    let phase2 = layout::upgrade_phase2();
    if root.kind(&phase2)?.is_none() {
        for (i, (old, new)) in plan.renames.iter().enumerate() {
            for (from, held, _) in places(old, new, i) {
                if root.kind(&held)?.is_none() && root.kind(&from)?.is_some() {
                    root.rename(&from, &held)?;
                }
            }
            let od = crate::key::digest_of(old);
            let _ = root.remove_file(layout::failure_record(&od));
        }
        for dir in ["", layout::MANIFESTS_DIR, layout::USED_DIR] {
            sync_if_there(root, dir)?;
        }
        root.write_metadata(&phase2, b"")?;
        root.sync_metadata_dir(layout::UPGRADE_DIR)?;
    }
    for (i, (old, new)) in plan.renames.iter().enumerate() {
        for (n, (_, held, to)) in places(old, new, i).into_iter().enumerate() {
            if root.kind(&held)?.is_none() {
                continue;
            }
            if n == 0 {
                match root.rename_noreplace(&held, &to) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Two old names for one key cannot both decode (the
                        // old code was injective), so this is a name made
                        // behind the journal's back: keep the one in place,
                        // and let gc reclaim the other.
                        tracing::warn!(entry = %to, "an entry already had its new name; the old one goes to trash");
                        let trash = layout::trash_item(
                            &crate::key::digest_of(&to),
                            &layout::random_suffix().map_err(io::Error::other)?,
                        );
                        root.rename(&held, &trash)?;
                    }
                    other => other?,
                }
            } else {
                ensure_parent(root, &to)?;
                root.rename(&held, &to)?;
            }
        }
    }
    for dir in ["", layout::MANIFESTS_DIR, layout::USED_DIR] {
        sync_if_there(root, dir)?;
    }
    write_format(root)?;
    discard_journal(root)
}

/// Deletes the journal of a finished upgrade: its plan first, so that no
/// half-deleted journal ever reads as one with a plan to resume.
fn discard_journal(root: &Root) -> io::Result<()> {
    match root.remove_file(layout::UPGRADE_PLAN) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match root.remove_tree(layout::UPGRADE_DIR) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    root.sync_metadata_dir(MARKER_DIR)
}

fn sync_if_there(root: &Root, dir: &str) -> io::Result<()> {
    match root.sync_metadata_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `manifests/` is made on first need.
fn ensure_parent(root: &Root, rel: &str) -> io::Result<()> {
    let Some((parent, _)) = rel.rsplit_once('/') else { return Ok(()) };
    match root.create_dir(parent) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Writes this build's format file, by a private file renamed over the old
/// one, and records the filesystem probe if the cache has none.
fn write_format(root: &Root) -> io::Result<()> {
    if read_filesystem(root).is_none() {
        let probed = probe_filesystem(root, layout::UPGRADE_DIR)?;
        let private = layout::format_staging(&layout::random_suffix().map_err(io::Error::other)?);
        root.write_new(&private, probed.contents().as_bytes())?;
        root.rename(&private, layout::FILESYSTEM_FILE)?;
    }
    let private = layout::format_staging(&layout::random_suffix().map_err(io::Error::other)?);
    root.write_new(&private, layout::format_contents().as_bytes())?;
    root.rename(&private, FORMAT_FILE)?;
    root.sync_metadata_dir(MARKER_DIR)
}

/// The format a cache was found in, and what its filesystem does to names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Described {
    /// The version in its format file.
    pub format: u32,
    /// What `.safecache/filesystem` records; `None` if it is missing or
    /// unreadable.
    pub filesystem: Option<Filesystem>,
}

#[cfg(test)]
mod tests {
    // The tests build caches from outside, as a peer process would.
    #![allow(clippy::disallowed_methods)]

    use std::cell::RefCell;

    use super::*;
    use crate::key::Key;
    use crate::mode::Wait;
    use crate::{Cache, Options};

    thread_local! {
        /// Runs once at the pause point in `ensure_marker`, between the check
        /// for the marker and the listing of the directory.
        static PAUSE: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    pub(super) fn pause_before_listing() {
        if let Some(at_pause) = PAUSE.with(|p| p.borrow_mut().take()) {
            at_pause();
        }
    }

    /// The first-open race: while this process checks an empty directory
    /// for a marker, a peer creates the cache and publishes an entry. The
    /// listing then shows that entry, which must not read as "not a cache".
    #[test]
    fn a_peer_creating_the_cache_and_an_entry_mid_open_is_not_a_foreign_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        std::fs::create_dir(&path).unwrap();
        let peer_path = path.clone();
        PAUSE.with(|p| {
            *p.borrow_mut() = Some(Box::new(move || {
                let peer = Cache::open_ambient(&peer_path, Options::default()).unwrap();
                let key = Key::new("k").unwrap();
                peer.get_or_fill(&key, Wait::NoWait, |d| std::fs::write(d.path().join("f"), "x")).unwrap();
            }));
        });
        let cache = Cache::open_ambient(&path, Options::default()).unwrap();
        assert!(cache.get(&Key::new("k").unwrap()).unwrap().is_some());
    }

    use std::fs;
    use std::path::PathBuf;

    use crate::sys::faults::{self, Failure, Fault, Op};

    /// A format-`version` cache as an older build left it: entries under
    /// the old names (`a%2Fb` is the key `a/b`, `a+b` the key `a+b`), a
    /// manifest and a stamp for two of them, and the filesystem's
    /// `lost+found`.
    fn old_cache(version: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache");
        for sub in ["locks", "holders", "used", "tmp", "trash", "failed", "manifests"] {
            fs::create_dir_all(path.join(".safecache").join(sub)).unwrap();
        }
        fs::write(path.join(".safecache/format"), format!("safecache-format {version}\n")).unwrap();
        for (old, content) in
            [("a%2Fb", "a/b"), ("a+b", "a+b"), ("git%2Fserde", "git/serde"), ("Lib", "Lib"), ("plain", "plain")]
        {
            fs::create_dir(path.join(old)).unwrap();
            fs::write(path.join(old).join("f"), content).unwrap();
        }
        for old in ["a%2Fb", "a+b"] {
            let d = crate::key::digest_of(old);
            fs::write(path.join(format!(".safecache/manifests/{d}.json")), format!("m-{old}")).unwrap();
            fs::write(path.join(format!(".safecache/used/{d}")), "").unwrap();
        }
        fs::create_dir(path.join("lost+found")).unwrap();
        fs::write(path.join("lost+found/#123"), "fsck's").unwrap();
        (dir, path)
    }

    fn check_upgraded(path: &Path) {
        let cache = Cache::open_ambient(path, Options::default()).unwrap();
        assert_eq!(cache.describe().unwrap().format, FORMAT_VERSION);
        for key in ["a/b", "a+b", "git/serde", "Lib", "plain"] {
            let entry = cache.get(&Key::new(key).unwrap()).unwrap().unwrap_or_else(|| panic!("{key} lost"));
            assert_eq!(fs::read_to_string(entry.path().join("f")).unwrap(), key);
        }
        let mut names: Vec<String> =
            fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, [".safecache", "@lib", "a+b", "a@@2bb", "git+serde", "lost+found", "plain"]);
        assert_eq!(fs::read_to_string(path.join("lost+found/#123")).unwrap(), "fsck's");
        for (new, from) in [("a+b", "a%2Fb"), ("a@@2bb", "a+b")] {
            let d = crate::key::digest_of(new);
            let manifest = fs::read_to_string(path.join(format!(".safecache/manifests/{d}.json"))).unwrap();
            assert_eq!(manifest, format!("m-{from}"), "the manifest follows its entry");
            assert!(path.join(format!(".safecache/used/{d}")).exists());
        }
        // A journal left beside the new format (its removal failed) holds
        // only its plan, and gc deletes it.
        cache.gc(Wait::NoWait).unwrap();
        assert!(!path.join(".safecache/upgrade").exists());
        assert!(read_filesystem(cache.root()).is_some());
    }

    #[test]
    fn an_old_cache_is_upgraded_in_place() {
        for version in [1, 2] {
            let (_dir, path) = old_cache(version);
            check_upgraded(&path);
        }
    }

    /// A failure at any one rename, sync, write or removal of the upgrade
    /// leaves a cache that the next open finishes upgrading, with every
    /// entry under its key: what a crash at that step would leave, but for
    /// the lease, which the failed open released.
    #[test]
    fn an_upgrade_stopped_at_any_step_is_finished_by_the_next_open() {
        for op in [Op::Rename, Op::Sync, Op::Write, Op::Remove, Op::CreateDir] {
            for nth in 0..40 {
                let (_dir, path) = old_cache(2);
                faults::inject(&[Fault { op, nth, failure: Failure::Io }]);
                let first = Cache::open_ambient(&path, Options::default());
                if !faults::clear() {
                    first.unwrap();
                }
                check_upgraded(&path);
            }
        }
    }

    /// A format-1 cache knew nothing of in-place fills: a sticky directory
    /// in it is the user's, and stays an entry.
    #[test]
    fn a_sticky_dir_of_a_format1_cache_stays_an_entry() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, path) = old_cache(1);
        fs::set_permissions(path.join("plain"), fs::Permissions::from_mode(0o1755)).unwrap();
        let cache = Cache::open_ambient(&path, Options::default()).unwrap();
        assert!(cache.get(&Key::new("plain").unwrap()).unwrap().is_some());
        cache.gc(Wait::NoWait).unwrap();
        assert_eq!(fs::read_to_string(path.join("plain/f")).unwrap(), "plain");
    }

    /// `init` adopts what a directory holds under the names format 3 writes
    /// for them, so `path Makefile` finds what was `Makefile`.
    #[test]
    fn init_names_adopted_items_as_entries() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["Makefile", "plain", "a%20b"] {
            fs::write(dir.path().join(name), name).unwrap();
        }
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        let cache = Cache::init_ambient(dir.path(), Options::default()).unwrap();
        assert_eq!(cache.describe().unwrap().format, FORMAT_VERSION);
        let entry = cache.get(&Key::new("Makefile").unwrap()).unwrap().unwrap();
        assert_eq!(entry.path(), dir.path().join("@makefile"));
        assert!(cache.get(&Key::new("plain").unwrap()).unwrap().is_some());
        let mut keys: Vec<Option<String>> =
            cache.entries().unwrap().into_iter().map(|e| e.key.map(|k| k.to_string())).collect();
        keys.sort();
        // `a%20b` was no key in format 1 either: a file without a key.
        assert_eq!(keys, [None, Some("Makefile".to_owned()), Some("plain".to_owned())]);
        assert!(dir.path().join("lost+found").is_dir());
    }

    #[test]
    fn a_fresh_filesystem_root_becomes_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        let cache = Cache::open_ambient(dir.path(), Options::default()).unwrap();
        assert!(cache.entries().unwrap().is_empty(), "lost+found is not an entry");
        cache.clean(Wait::NoWait).unwrap();
        assert!(dir.path().join("lost+found").is_dir(), "clean leaves it");
    }

    #[test]
    fn the_filesystem_record_round_trips() {
        let fs = Filesystem { case_insensitive: true, normalizes_unicode: false };
        assert_eq!(Filesystem::parse(fs.contents().as_bytes()), Some(fs));
        assert_eq!(Filesystem::parse(b"case-insensitive maybe\n"), None);
        assert_eq!(Filesystem::parse(b""), None);
    }
}
