//! This defines manifests (`manifests/<d>.json`): what an entry held when it
//! was published, file by file, with BLAKE3 hashes, sealed by a hash of the
//! manifest itself. `verify` (verify.rs) checks entries against them.
//!
//! A manifest lives in the cache's metadata, never inside the entry (an
//! entry is the user's bytes). It is built from the tree through the
//! directory handle: symlinks are recorded by their target text and never
//! followed; a FIFO, socket or device is recorded by kind and never opened;
//! files are hashed in a stream with a fixed buffer.
//!
//! Invariant: the manifest of an entry is written (a fresh file, synced,
//! renamed into place, its directory synced) before the rename that
//! publishes the entry, under the exclusive entry lock; so a published
//! entry whose manifest is missing was published by a version that wrote
//! none. It records the entry directory's device and inode, which the
//! publishing rename keeps, so a manifest left by an earlier, removed entry
//! of the same key is never taken for the current one's.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::display::escape;
use crate::error::Error;
use crate::key::Key;
use crate::layout::{self, MANIFESTS_DIR};
use crate::sys::{FileKind, Root};

/// The manifest format this build writes and reads.
pub(crate) const FORMAT: u32 = 1;

/// The largest manifest read back (a million files is about 150 MB).
const MAX_MANIFEST_LEN: u64 = 256 << 20;

/// The read buffer for hashing: large enough for BLAKE3's SIMD paths.
const CHUNK: usize = 256 << 10;

/// The permission bit that marks an entry root as not yet committed (an
/// in-place fill); the entry root's mode is recorded without it, so
/// committing does not change the manifest.
const UNCOMMITTED_BIT: u32 = 0o1000;

/// Text from disk (a name, a symlink target): a JSON string when it is
/// UTF-8, else `{"hex": "..."}` of its raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Text {
    Utf8(String),
    Raw { hex: String },
}

impl Text {
    fn of(bytes: &[u8]) -> Text {
        match std::str::from_utf8(bytes) {
            Ok(s) => Text::Utf8(s.to_owned()),
            Err(_) => Text::Raw { hex: bytes.iter().map(|b| format!("{b:02x}")).collect() },
        }
    }

    /// For messages: escaped, so text from disk cannot drive a terminal.
    fn show(&self) -> String {
        match self {
            Text::Utf8(s) => escape(s),
            Text::Raw { hex } => format!("<hex {hex}>"),
        }
    }

    /// The key this text sorts and compares by.
    fn sort_key(&self) -> Vec<u8> {
        match self {
            Text::Utf8(s) => s.as_bytes().to_vec(),
            Text::Raw { hex } => {
                (0..hex.len() / 2).filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()).collect()
            }
        }
    }
}

/// What a name in an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device: recorded, never opened.
    Other,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::File => "a file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Other => "a special file",
        }
    }
}

/// One name in an entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Relative to the entry, `/`-separated; `""` is the entry itself.
    pub(crate) path: Text,
    pub(crate) kind: Kind,
    /// Permission bits (`st_mode & 0o7777`); absent where the platform has
    /// none (WASI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mode: Option<u32>,
    /// Bytes: a file's length, a symlink's target length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    /// A file's BLAKE3 hash, 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blake3: Option<String>,
    /// A symlink's target text, never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<Text>,
    /// Why the file could not be read while verifying (never written).
    #[serde(skip)]
    pub(crate) unreadable: Option<String>,
}

/// A manifest, format 1 (docs/PROTOCOL.md, "Manifests").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    /// The key of the entry.
    pub(crate) key: String,
    /// Device and inode of the entry's root when it was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) entry_id: Option<[u64; 2]>,
    /// Total bytes of its regular files.
    pub(crate) bytes: u64,
    /// Every name in the entry, sorted by path bytes.
    pub(crate) files: Vec<Record>,
}

/// The second line of a manifest file: the hash of the first.
#[derive(Serialize, Deserialize)]
struct Seal {
    blake3: String,
}

/// Just the version, read first so a newer format is told apart from a
/// broken one.
#[derive(Deserialize)]
struct Head {
    format: u32,
}

/// What is stored for an entry.
#[derive(Debug)]
pub(crate) enum Stored {
    /// No manifest (published by a version that wrote none).
    Absent,
    /// A manifest of a format this build does not know.
    Unsupported(u32),
    /// A manifest that fails its own hash or does not parse.
    Broken(String),
    /// A sound manifest.
    Sealed(Manifest),
}

/// Scans the entry at `rel` (a directory or a single file) into records,
/// sorted by path bytes.
pub(crate) fn scan(root: &Root, rel: &Path) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    visit(root, rel, &mut Vec::new(), &mut out, &mut buf)?;
    out.sort_by_key(|r| r.path.sort_key());
    Ok(out)
}

fn visit(root: &Root, rel: &Path, inner: &mut Vec<u8>, out: &mut Vec<Record>, buf: &mut [u8]) -> io::Result<()> {
    // A name that vanished since its directory was listed is simply not
    // recorded; verify then reports it missing.
    let Some(meta) = root.stat(rel)? else { return Ok(()) };
    let mut mode = meta.owner.map(|o| o.mode & 0o7777);
    if inner.is_empty() {
        mode = mode.map(|m| m & !UNCOMMITTED_BIT);
    }
    let mut record = Record {
        path: Text::of(inner),
        kind: Kind::Other,
        mode,
        size: None,
        blake3: None,
        target: None,
        unreadable: None,
    };
    match meta.kind {
        FileKind::File => {
            record.kind = Kind::File;
            match hash_file(root, rel, buf) {
                Ok((hash, size)) => {
                    record.blake3 = Some(hash);
                    record.size = Some(size);
                }
                Err(e) => {
                    record.size = Some(meta.len);
                    record.unreadable = Some(e.to_string());
                }
            }
        }
        FileKind::Symlink => {
            record.kind = Kind::Symlink;
            let target = root.read_link(rel)?;
            record.size = Some(target.len() as u64);
            record.target = Some(Text::of(&target));
        }
        FileKind::Other => {}
        FileKind::Dir => {
            record.kind = Kind::Dir;
            out.push(record);
            for entry in root.read_dir(rel)? {
                let len = inner.len();
                if !inner.is_empty() {
                    inner.push(b'/');
                }
                inner.extend_from_slice(entry.name.as_encoded_bytes());
                visit(root, &rel.join(&entry.name), inner, out, buf)?;
                inner.truncate(len);
            }
            return Ok(());
        }
    }
    out.push(record);
    Ok(())
}

/// Hashes a regular file in a stream; returns the hex hash and the bytes
/// read.
fn hash_file(root: &Root, rel: &Path, buf: &mut [u8]) -> io::Result<(String, u64)> {
    let mut file = root.open_read(rel)?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

impl Manifest {
    /// The manifest of the tree at `rel`, for `key`.
    pub(crate) fn build(root: &Root, key: &str, rel: &Path) -> io::Result<Manifest> {
        let entry_id = root.stat(rel)?.and_then(|m| m.id).map(|(dev, ino)| [dev, ino]);
        let files = scan(root, rel)?;
        let bytes = files.iter().filter(|r| r.kind == Kind::File).filter_map(|r| r.size).sum();
        Ok(Manifest { format: FORMAT, key: key.to_owned(), entry_id, bytes, files })
    }

    /// The file's bytes: the manifest on one line, then its seal.
    fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut body = serde_json::to_vec(self).map_err(io::Error::other)?;
        body.push(b'\n');
        let seal = Seal { blake3: blake3::hash(&body).to_hex().to_string() };
        let mut bytes = body;
        bytes.extend_from_slice(&serde_json::to_vec(&seal).map_err(io::Error::other)?);
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses a manifest file, checking its seal first.
    fn parse(bytes: &[u8]) -> Stored {
        let Some(split) = bytes.iter().position(|&b| b == b'\n').map(|i| i + 1) else {
            return Stored::Broken("the manifest is truncated (no seal)".to_owned());
        };
        let (body, seal) = bytes.split_at(split);
        let Ok(seal) = serde_json::from_slice::<Seal>(seal) else {
            return Stored::Broken("the manifest's seal is missing or unreadable".to_owned());
        };
        if blake3::hash(body).to_hex().as_str() != seal.blake3 {
            return Stored::Broken("the manifest fails its own hash (it was edited or torn)".to_owned());
        }
        match serde_json::from_slice::<Head>(body) {
            Ok(head) if head.format != FORMAT => return Stored::Unsupported(head.format),
            Ok(_) => {}
            Err(e) => return Stored::Broken(format!("the manifest does not parse: {e}")),
        }
        match serde_json::from_slice::<Manifest>(body) {
            Ok(manifest) => Stored::Sealed(manifest),
            Err(e) => Stored::Broken(format!("the manifest does not parse: {e}")),
        }
    }

    /// What differs between this manifest and the `actual` scan, one line
    /// each, escaped for display; empty if the entry matches.
    pub(crate) fn differences(&self, actual: &[Record]) -> Vec<String> {
        let expected: BTreeMap<Vec<u8>, &Record> = self.files.iter().map(|r| (r.path.sort_key(), r)).collect();
        let found: BTreeMap<Vec<u8>, &Record> = actual.iter().map(|r| (r.path.sort_key(), r)).collect();
        let mut out = Vec::new();
        let name = |r: &Record| match &r.path {
            Text::Utf8(s) if s.is_empty() => "the entry itself".to_owned(),
            path => format!("`{}`", path.show()),
        };
        for (path, want) in &expected {
            let Some(got) = found.get(path) else {
                out.push(format!("{} is missing", name(want)));
                continue;
            };
            let n = name(want);
            if want.kind != got.kind {
                out.push(format!("{n} was {} and is now {}", want.kind.word(), got.kind.word()));
                continue;
            }
            if let (Some(a), Some(b)) = (want.mode, got.mode)
                && a != b
            {
                out.push(format!("{n}: mode {a:04o} is now {b:04o}"));
            }
            if want.size != got.size {
                let show = |s: Option<u64>| s.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                out.push(format!("{n}: size {} is now {} bytes", show(want.size), show(got.size)));
            }
            if let Some(why) = &got.unreadable {
                out.push(format!("{n} cannot be read: {}", escape(why)));
            } else if want.blake3 != got.blake3 {
                out.push(format!("{n}: content differs (BLAKE3 {})", got.blake3.as_deref().unwrap_or("none")));
            }
            if want.target != got.target {
                let show = |t: &Option<Text>| t.as_ref().map_or_else(String::new, Text::show);
                out.push(format!("{n}: symlink target `{}` is now `{}`", show(&want.target), show(&got.target)));
            }
        }
        for (path, got) in &found {
            if !expected.contains_key(path) {
                out.push(format!("{} was added ({})", name(got), got.kind.word()));
            }
        }
        out
    }
}

/// Writes the manifest of the tree at `entry_rel` (about to be published as
/// `key`, or just committed in place): a fresh file in `tmp/`, synced, then
/// renamed to `manifests/<d>.json` and the directory synced. The caller
/// holds `key`'s exclusive entry lock and publishes after this returns.
pub(crate) fn write(root: &Root, key: &Key, entry_rel: &str) -> Result<(), Error> {
    let digest = key.digest();
    let manifest = Manifest::build(root, key.as_str(), Path::new(entry_rel))
        .map_err(|e| Error::io("build the manifest of", entry_rel, e))?;
    let bytes = manifest.to_bytes().map_err(|e| Error::io("encode the manifest of", entry_rel, e))?;
    ensure_dir(root, MANIFESTS_DIR)?;
    // A temp name: gc reclaims one a killed publisher leaves, once the
    // entry lock is free.
    let staging = layout::temp(&digest, &layout::random_suffix()?);
    let dest = layout::manifest(&digest);
    root.write_new(&staging, &bytes).map_err(|e| Error::io("write", &staging, e))?;
    if let Err(e) = root.rename(&staging, &dest) {
        let _ = root.remove_file(&staging);
        return Err(Error::io("write", dest, e));
    }
    root.sync_dir(MANIFESTS_DIR).map_err(|e| Error::io("sync", MANIFESTS_DIR, e))
}

/// Reads what is stored for digest `digest`.
pub(crate) fn read(root: &Root, digest: &str) -> io::Result<Stored> {
    match root.read(&layout::manifest(digest), MAX_MANIFEST_LEN) {
        Ok(bytes) => Ok(Manifest::parse(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Stored::Absent),
        // A symlink, a FIFO or an oversized file where a manifest belongs.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Ok(Stored::Broken(format!("the manifest is unreadable: {e}")))
        }
        Err(e) => Err(e),
    }
}

/// Creates a metadata directory that caches made before it existed lack.
pub(crate) fn ensure_dir(root: &Root, rel: &str) -> Result<(), Error> {
    match root.create_dir(rel) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(Error::io("create", rel, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, kind: Kind) -> Record {
        Record {
            path: Text::Utf8(path.to_owned()),
            kind,
            mode: Some(0o644),
            size: Some(1),
            blake3: Some("00".to_owned()),
            target: None,
            unreadable: None,
        }
    }

    fn manifest(files: Vec<Record>) -> Manifest {
        Manifest { format: FORMAT, key: "k".to_owned(), entry_id: Some([1, 2]), bytes: 1, files }
    }

    #[test]
    fn a_manifest_round_trips_and_any_edit_breaks_its_seal() {
        let m = manifest(vec![record("", Kind::Dir), record("a", Kind::File)]);
        let bytes = m.to_bytes().unwrap();
        match Manifest::parse(&bytes) {
            Stored::Sealed(back) => assert_eq!(back, m),
            other => panic!("{other:?}"),
        }
        let text = String::from_utf8(bytes.clone()).unwrap();
        let edited = text.replacen("\"size\":1", "\"size\":2", 1);
        assert!(matches!(Manifest::parse(edited.as_bytes()), Stored::Broken(_)));
        assert!(matches!(Manifest::parse(&bytes[..bytes.len() / 2]), Stored::Broken(_)), "torn");
    }

    #[test]
    fn a_newer_format_is_unsupported_not_broken() {
        let body = b"{\"format\":2}\n".to_vec();
        let seal = format!("{{\"blake3\":\"{}\"}}\n", blake3::hash(&body).to_hex());
        let bytes = [body, seal.into_bytes()].concat();
        assert!(matches!(Manifest::parse(&bytes), Stored::Unsupported(2)));
    }

    #[test]
    fn differences_name_each_change() {
        let m = manifest(vec![record("", Kind::Dir), record("a", Kind::File), record("b", Kind::File)]);
        let mut changed = record("a", Kind::File);
        changed.mode = Some(0o600);
        changed.blake3 = Some("11".to_owned());
        let actual = vec![record("", Kind::Dir), changed, record("c\u{1b}", Kind::Symlink)];
        let diffs = m.differences(&actual);
        assert_eq!(
            diffs,
            vec![
                "`a`: mode 0644 is now 0600",
                "`a`: content differs (BLAKE3 11)",
                "`b` is missing",
                "`c\\u{1b}` was added (a symlink)",
            ],
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_as_hex() {
        let t = Text::of(b"a\xffb");
        assert_eq!(t, Text::Raw { hex: "61ff62".to_owned() });
        assert_eq!(t.sort_key(), b"a\xffb");
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"hex":"61ff62"}"#);
    }
}
