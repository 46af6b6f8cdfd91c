//! This defines manifests (`manifests/<d>.json`): what an entry held when it
//! was published, file by file, with BLAKE3 hashes, sealed by a hash of the
//! manifest itself. `verify` (verify.rs) checks entries against them.
//!
//! A manifest lives in the cache's metadata, never inside the entry (an
//! entry is the user's bytes). It is built from the tree through the
//! directory handle: symlinks are recorded by their target text and never
//! followed; a FIFO, socket or device is recorded by kind and never opened;
//! files are hashed in a stream with a fixed buffer, and holes are skipped,
//! not read (`SEEK_DATA`/`SEEK_HOLE`), so hashing costs what the data
//! costs, not the apparent size.
//!
//! Invariant: the manifest of an entry is written (a fresh file, synced,
//! renamed into place, its directory synced) before the rename that
//! publishes the entry, under the exclusive entry lock. It is tied to its
//! entry by the key, and by the entry root's device and inode (which the
//! publishing rename keeps) or its modification time (format 2; copies
//! keep it: `tar`, `cp -a`, `rsync -a`); format 1 had only device and
//! inode, which no copy keeps, and is still read. A manifest that cannot be tied to its entry
//! never makes the entry corrupt: the entry is unverified.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cancel::Cancel;
use crate::display::escape;
use crate::error::Error;
use crate::key::Key;
use crate::layout::{self, MANIFESTS_DIR};
use crate::sys::{self, FileKind, Meta, Root};

/// The manifest format this build writes.
pub(crate) const FORMAT: u32 = 2;

/// The oldest manifest format this build reads.
const OLDEST_FORMAT: u32 = 1;

/// The largest manifest read back (a million files is about 150 MB).
const MAX_MANIFEST_LEN: u64 = 256 << 20;

/// The read buffer for hashing: large enough for BLAKE3's SIMD paths.
const CHUNK: usize = 256 << 10;

/// Format 2 hashes a file in blocks of this many bytes, aligned at
/// multiples of it: a whole block of zeros (a hole, or zeros written) is
/// left out of the data hash and counted in the zero-run list instead.
pub(crate) const ZERO_BLOCK: u64 = 64 << 10;

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

    fn of(kind: FileKind) -> Kind {
        match kind {
            FileKind::File => Kind::File,
            FileKind::Dir => Kind::Dir,
            FileKind::Symlink => Kind::Symlink,
            FileKind::Other => Kind::Other,
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
    /// A file's BLAKE3 hash, 64 hex digits: format 1, of its bytes; format
    /// 2, of its bytes without its whole zero blocks ([`ZERO_BLOCK`]).
    /// Absent for a file that could not be read when the entry was
    /// published: its content cannot be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) blake3: Option<String>,
    /// Format 2: the BLAKE3 hash of the file's zero-run list, absent if it
    /// has no whole zero block (docs/PROTOCOL.md, "Manifests").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) zeros: Option<String>,
    /// A symlink's target text, never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<Text>,
    /// Why the name could not be read while scanning (never written).
    #[serde(skip)]
    pub(crate) unreadable: Option<String>,
    /// Scanning could not even stat it: `kind` is the listing's, and
    /// `mode` and `size` are unknown (never written).
    #[serde(skip)]
    pub(crate) unstat: bool,
    /// It could not be read for want of permission (never written).
    #[serde(skip)]
    pub(crate) denied: bool,
}

/// A manifest, format 2 or 1 (docs/PROTOCOL.md, "Manifests").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format: u32,
    /// The key of the entry.
    pub(crate) key: String,
    /// Device and inode of the entry's root when it was published (the
    /// publishing rename keeps both; no copy does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) entry_id: Option<[u64; 2]>,
    /// Format 2: the entry root's modification time when it was
    /// published, `[seconds, nanoseconds]` since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) entry_mtime: Option<[u64; 2]>,
    /// Total bytes of its regular files (their apparent sizes).
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

/// How a scan hashes files: by the rules of a manifest format, stopping
/// once cancelled.
#[derive(Clone, Copy)]
pub(crate) struct Hashing<'a> {
    pub(crate) format: u32,
    pub(crate) cancel: &'a Cancel,
}

/// Scans the entry at `rel` (a directory or a single file) into records,
/// sorted by path bytes. A name that cannot be read (permission denied,
/// gone since its directory was listed, an I/O error) is recorded with why,
/// and a directory that cannot be listed is not entered.
///
/// The walk (stat, list, read links) is one thread's; the files it finds
/// are then hashed on every core natively, when there are enough of them
/// to pay for the threads ([`hash_threads`]).
///
/// # Errors
/// Only when cancelled (kind `Interrupted`).
pub(crate) fn scan(root: &Root, rel: &Path, hashing: Hashing<'_>) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    visit(root, rel, None, &mut Vec::new(), &mut out, &mut files, hashing)?;
    let threads = hash_threads(&files);
    let buffer = || vec![0u8; CHUNK];
    let hashed =
        crate::parallel::run_with(&files, threads, buffer, |buf, file| hash_file(root, &file.rel, buf, hashing));
    for (file, result) in files.iter().zip(hashed) {
        let Some(record) = out.get_mut(file.index) else { continue };
        match result {
            Ok(hashed) => {
                record.size = Some(hashed.size);
                record.blake3 = Some(hashed.blake3);
                record.zeros = hashed.zeros;
            }
            Err(_) if hashing.cancel.is_cancelled() => return hashing.cancel.check().map(|()| Vec::new()),
            Err(e) => {
                record.denied = e.kind() == io::ErrorKind::PermissionDenied;
                record.unreadable = Some(why(&e));
            }
        }
    }
    out.sort_by_key(|r| r.path.sort_key());
    Ok(out)
}

/// A regular file the walk found, to hash: its record's index, its path
/// and its size when listed.
struct ToHash {
    index: usize,
    rel: std::path::PathBuf,
    len: u64,
}

/// Below this many files and bytes, one thread hashes: starting a thread
/// costs about as much as hashing a few small files.
const PARALLEL_FILES: usize = 16;
const PARALLEL_BYTES: u64 = 4 << 20;

/// How many threads hash `files`: every core when there are many files or
/// many bytes in more than one file, else one.
fn hash_threads(files: &[ToHash]) -> usize {
    let bytes = files.iter().map(|f| f.len).fold(0u64, u64::saturating_add);
    if files.len() >= PARALLEL_FILES || (files.len() > 1 && bytes >= PARALLEL_BYTES) {
        crate::parallel::cores()
    } else {
        1
    }
}

fn visit(
    root: &Root,
    rel: &Path,
    listed: Option<FileKind>,
    inner: &mut Vec<u8>,
    out: &mut Vec<Record>,
    files: &mut Vec<ToHash>,
    hashing: Hashing<'_>,
) -> io::Result<()> {
    hashing.cancel.check()?;
    let mut record = Record {
        path: Text::of(inner),
        kind: listed.map_or(Kind::Other, Kind::of),
        mode: None,
        size: None,
        blake3: None,
        zeros: None,
        target: None,
        unreadable: None,
        unstat: false,
        denied: false,
    };
    let meta = match root.stat(rel) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            record.unreadable = Some("it vanished while being checked".to_owned());
            record.unstat = true;
            out.push(record);
            return Ok(());
        }
        Err(e) => {
            record.unreadable = Some(e.to_string());
            record.unstat = true;
            out.push(record);
            return Ok(());
        }
    };
    let mut mode = meta.owner.map(|o| o.mode & 0o7777);
    if inner.is_empty() {
        // The entry root's mode is recorded without the uncommitted mark
        // (an in-place fill's), so committing does not change the manifest.
        mode = mode.map(|m| m & !crate::sys::UNCOMMITTED_BIT);
    }
    record.kind = Kind::of(meta.kind);
    record.mode = mode;
    match meta.kind {
        FileKind::File => {
            record.size = Some(meta.len);
            files.push(ToHash { index: out.len(), rel: rel.to_path_buf(), len: meta.len });
        }
        FileKind::Symlink => match root.read_link(rel) {
            Ok(target) => {
                record.size = Some(target.len() as u64);
                record.target = Some(Text::of(&target));
            }
            Err(e) => record.unreadable = Some(why(&e)),
        },
        FileKind::Other => {}
        FileKind::Dir => {
            let names = match root.read_dir(rel) {
                Ok(names) => names,
                Err(e) => {
                    record.unreadable = Some(why(&e));
                    out.push(record);
                    return Ok(());
                }
            };
            out.push(record);
            for entry in names {
                let len = inner.len();
                if !inner.is_empty() {
                    inner.push(b'/');
                }
                inner.extend_from_slice(entry.name.as_encoded_bytes());
                visit(root, &rel.join(&entry.name), Some(entry.kind), inner, out, files, hashing)?;
                inner.truncate(len);
            }
            return Ok(());
        }
    }
    out.push(record);
    Ok(())
}

/// An io error as a reason: "vanished" for a name gone meanwhile.
fn why(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "it vanished while being checked".to_owned(),
        io::ErrorKind::UnexpectedEof => "it changed size while being read".to_owned(),
        _ => e.to_string(),
    }
}

/// What hashing one file found.
struct Hashed {
    size: u64,
    blake3: String,
    zeros: Option<String>,
}

/// Hashes a regular file by `hashing.format`'s rules.
fn hash_file(root: &Root, rel: &Path, buf: &mut [u8], hashing: Hashing<'_>) -> io::Result<Hashed> {
    let mut file = root.open_read(rel)?;
    if hashing.format == 1 {
        return hash_whole(&mut file, buf, hashing.cancel);
    }
    let size = file.metadata()?.len();
    hash_blocks(&mut file, size, buf, hashing.cancel)
}

/// Format 1: BLAKE3 of every byte, read in a stream (holes included).
fn hash_whole(file: &mut std::fs::File, buf: &mut [u8], cancel: &Cancel) -> io::Result<Hashed> {
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    loop {
        cancel.check()?;
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Hashed { size, blake3: hasher.finalize().to_hex().to_string(), zeros: None })
}

/// Format 2: the file is cut into [`ZERO_BLOCK`]-sized blocks at multiples
/// of it (the last one may be short). A whole block of zeros is not hashed
/// as data: it extends the current zero run; every other block's bytes go
/// into the data hash. The zero runs, `(first block, count)` as two
/// little-endian u64 each, go into a second hash. Holes (`SEEK_DATA`,
/// `SEEK_HOLE`) are whole zero blocks that are never read: only the blocks
/// that hold data, and the blocks a hole starts or ends inside, are read.
/// The result depends only on the file's bytes, not on where its holes are,
/// so a copy that fills holes or makes new ones hashes the same.
fn hash_blocks(file: &mut std::fs::File, size: u64, buf: &mut [u8], cancel: &Cancel) -> io::Result<Hashed> {
    let block = ZERO_BLOCK as usize;
    let mut data = blake3::Hasher::new();
    let mut runs = ZeroRuns::default();
    // Where the data extent being read ends; at or past it, ask for the
    // next one.
    let mut data_end = 0u64;
    let mut holes = true;
    let mut cursor = 0u64;
    let mut pos = 0u64;
    while pos < size {
        cancel.check()?;
        if holes && pos >= data_end {
            let next = match sys::next_data(file, pos) {
                Ok(next) => next,
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    holes = false;
                    Some((pos, size))
                }
                Err(e) => return Err(e),
            };
            // The lseeks moved the file's offset.
            cursor = u64::MAX;
            let (start, end) = next.unwrap_or((size, size));
            // Whole blocks before the data are zeros, unread.
            let skip_to = (start.min(size) / ZERO_BLOCK) * ZERO_BLOCK;
            if skip_to > pos {
                runs.add(pos / ZERO_BLOCK, (skip_to - pos) / ZERO_BLOCK);
                pos = skip_to;
            }
            // Past the data: read on to the end of the block it ends in.
            data_end = end.max(pos + 1);
            if pos >= size {
                break;
            }
        }
        // Read whole blocks, up to the buffer, not past the data extent's
        // last block.
        let extent_blocks = data_end.saturating_sub(pos).div_ceil(ZERO_BLOCK).max(1);
        let want = (size - pos).min(buf.len() as u64 / ZERO_BLOCK * ZERO_BLOCK).min(extent_blocks * ZERO_BLOCK);
        let want = want as usize;
        if cursor != pos {
            file.seek(SeekFrom::Start(pos))?;
        }
        read_full(file, &mut buf[..want])?;
        cursor = pos + want as u64;
        for piece in buf[..want].chunks(block) {
            if piece.len() == block && is_zero(piece) {
                runs.add(pos / ZERO_BLOCK, 1);
            } else {
                data.update(piece);
            }
            pos += piece.len() as u64;
        }
    }
    Ok(Hashed { size, blake3: data.finalize().to_hex().to_string(), zeros: runs.finish() })
}

/// Reads exactly `buf.len()` bytes; a file that got shorter meanwhile is
/// an `UnexpectedEof`.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether every byte is 0 (OR-folded in 64-byte pieces, which the
/// compiler vectorizes).
fn is_zero(bytes: &[u8]) -> bool {
    bytes.chunks(64).all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

/// The zero-run list of format 2, hashed as it grows: adjacent runs merge,
/// so the list is the same however the zeros were found (holes or read).
#[derive(Default)]
struct ZeroRuns {
    hasher: Option<blake3::Hasher>,
    /// The run being extended: first block, count.
    open: Option<(u64, u64)>,
}

impl ZeroRuns {
    fn add(&mut self, first: u64, count: u64) {
        if count == 0 {
            return;
        }
        match &mut self.open {
            Some((start, n)) if *start + *n == first => *n += count,
            _ => {
                self.flush();
                self.open = Some((first, count));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((start, n)) = self.open.take() {
            let hasher = self.hasher.get_or_insert_with(blake3::Hasher::new);
            hasher.update(&start.to_le_bytes());
            hasher.update(&n.to_le_bytes());
        }
    }

    fn finish(mut self) -> Option<String> {
        self.flush();
        self.hasher.map(|h| h.finalize().to_hex().to_string())
    }
}

/// Seconds and nanoseconds since the epoch (`None` before it).
fn epoch(t: SystemTime) -> Option<[u64; 2]> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    Some([d.as_secs(), u64::from(d.subsec_nanos())])
}

/// What a check of an entry against its manifest found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Findings {
    /// What differs, one line each, escaped for display: the entry is not
    /// what was published.
    pub(crate) differences: Vec<String>,
    /// What could not be checked, and why: no verdict either way.
    pub(crate) unchecked: Vec<String>,
}

impl Manifest {
    /// The manifest of the tree at `rel`, for `key`, in this build's
    /// format. Fails if the tree cannot be read whole (a manifest that left
    /// a file out would make the entry unverifiable for good) or if
    /// cancelled (kind `Interrupted`).
    pub(crate) fn build(root: &Root, key: &str, rel: &Path, cancel: &Cancel) -> io::Result<Manifest> {
        let top = root.stat(rel)?;
        let entry_id = top.and_then(|m| m.id).map(|(dev, ino)| [dev, ino]);
        let entry_mtime = top.and_then(|m| m.modified).and_then(epoch);
        let files = scan(root, rel, Hashing { format: FORMAT, cancel })?;
        // A file its owner may not read (mode 000) is recorded without a
        // hash; anything else unreadable (an I/O error, a name gone) fails
        // the publish rather than leave an entry that can never be checked.
        if let Some(r) = files.iter().find(|r| r.unreadable.is_some() && !(r.kind == Kind::File && r.denied)) {
            let why = r.unreadable.as_deref().unwrap_or_default();
            return Err(io::Error::other(format!("cannot read `{}` in it: {why}", r.path.show())));
        }
        // Apparent sizes: sparse files can add up past u64.
        let bytes =
            files.iter().filter(|r| r.kind == Kind::File).filter_map(|r| r.size).fold(0u64, u64::saturating_add);
        Ok(Manifest { format: FORMAT, key: key.to_owned(), entry_id, entry_mtime, bytes, files })
    }

    /// Why this manifest cannot be tied to the entry whose root is `meta`,
    /// or `None` if it can: by the root's device and inode (kept while the
    /// entry stays where it was published, whatever is written into it), or
    /// (format 2) by the root's modification time to the second, as `tar`
    /// keeps it (kept by a copy or restore). A manifest without either
    /// field (written where the platform had none) is tied by its key alone.
    pub(crate) fn untied(&self, meta: &Meta) -> Option<String> {
        let id = match (meta.id, self.entry_id) {
            (Some(id), Some([dev, ino])) => Some(id == (dev, ino)),
            _ => None,
        };
        let mtime = match (meta.modified.and_then(epoch), self.entry_mtime) {
            (Some(now), Some([secs, _])) if self.format >= 2 => Some(now[0] == secs),
            _ => None,
        };
        match (id, mtime) {
            (Some(true), _) | (_, Some(true)) | (None, None) => None,
            (_, None) => Some(
                "its manifest (format 1) names the entry by device and inode, which a copy or restore \
                 (tar, cp -a, rsync) does not keep, and this entry's differ; or it is an earlier entry's, \
                 left when a version that writes no manifest published this one"
                    .to_owned(),
            ),
            (_, Some(false)) => Some(
                "it was moved or copied, and its top directory's modification time is not the one its \
                 manifest recorded (a copy that did not keep times, or a change to the entry's top \
                 directory), or the manifest is an earlier entry's, left when a version that writes no \
                 manifest published this one"
                    .to_owned(),
            ),
        }
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
            Ok(head) if !(OLDEST_FORMAT..=FORMAT).contains(&head.format) => {
                return Stored::Unsupported(head.format);
            }
            Ok(_) => {}
            Err(e) => return Stored::Broken(format!("the manifest does not parse: {e}")),
        }
        match serde_json::from_slice::<Manifest>(body) {
            Ok(manifest) => Stored::Sealed(manifest),
            Err(e) => Stored::Broken(format!("the manifest does not parse: {e}")),
        }
    }

    /// What differs and what could not be checked between this manifest
    /// and the `actual` scan (made with this manifest's format), one line
    /// each, escaped for display.
    pub(crate) fn findings(&self, actual: &[Record]) -> Findings {
        let expected: BTreeMap<Vec<u8>, &Record> = self.files.iter().map(|r| (r.path.sort_key(), r)).collect();
        let found: BTreeMap<Vec<u8>, &Record> = actual.iter().map(|r| (r.path.sort_key(), r)).collect();
        // Directories that could not be listed: what the manifest has
        // beneath them is unknown, not missing.
        let unlisted: Vec<&Vec<u8>> = found
            .iter()
            .filter(|(_, r)| r.unreadable.is_some() && (r.kind == Kind::Dir || r.unstat))
            .map(|(p, _)| p)
            .collect();
        let beneath = |path: &[u8]| {
            unlisted.iter().any(|dir| {
                dir.is_empty() && !path.is_empty()
                    || path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
            })
        };
        let mut out = Findings::default();
        let name = |r: &Record| match &r.path {
            Text::Utf8(s) if s.is_empty() => "the entry itself".to_owned(),
            path => format!("`{}`", path.show()),
        };
        for (path, want) in &expected {
            let Some(got) = found.get(path) else {
                if !beneath(path) {
                    out.differences.push(format!("{} is missing", name(want)));
                }
                continue;
            };
            let n = name(want);
            if got.unstat {
                out.unchecked.push(format!("{n} cannot be read: {}", escape(got.unreadable.as_deref().unwrap_or(""))));
                continue;
            }
            if want.kind != got.kind {
                out.differences.push(format!("{n} was {} and is now {}", want.kind.word(), got.kind.word()));
                continue;
            }
            if let (Some(a), Some(b)) = (want.mode, got.mode)
                && a != b
            {
                out.differences.push(format!("{n}: mode {a:04o} is now {b:04o}"));
            }
            if want.size != got.size {
                let show = |s: Option<u64>| s.map_or_else(|| "unknown".to_owned(), |s| s.to_string());
                out.differences.push(format!("{n}: size {} is now {} bytes", show(want.size), show(got.size)));
            }
            if let Some(why) = &got.unreadable {
                out.unchecked.push(format!("{n} cannot be read: {}", escape(why)));
                continue;
            }
            if want.kind == Kind::File {
                if want.blake3.is_none() {
                    out.unchecked.push(format!(
                        "{n} could not be read when the entry was published, so its content was not recorded"
                    ));
                } else if (&want.blake3, &want.zeros) != (&got.blake3, &got.zeros) {
                    out.differences
                        .push(format!("{n}: content differs (BLAKE3 {})", got.blake3.as_deref().unwrap_or("none")));
                }
            }
            if want.target != got.target {
                let show = |t: &Option<Text>| t.as_ref().map_or_else(String::new, Text::show);
                out.differences.push(format!(
                    "{n}: symlink target `{}` is now `{}`",
                    show(&want.target),
                    show(&got.target)
                ));
            }
        }
        for (path, got) in &found {
            if !expected.contains_key(path) {
                out.differences.push(format!("{} was added ({})", name(got), got.kind.word()));
            }
        }
        out
    }
}

/// Writes the manifest of the tree at `entry_rel` (about to be published as
/// `key`, or just committed in place): a fresh file in `tmp/`, synced, then
/// renamed to `manifests/<d>.json` and the directory synced. The caller
/// holds `key`'s exclusive entry lock and publishes after this returns.
/// Returns the bytes of the entry's regular files.
///
/// # Errors
/// [`Error::Cancelled`] once `cancel` is set (nothing is written then).
pub(crate) fn write(root: &Root, key: &Key, entry_rel: &str, cancel: &Cancel) -> Result<u64, Error> {
    let digest = key.digest();
    let manifest = Manifest::build(root, key.as_str(), Path::new(entry_rel), cancel).map_err(|e| {
        if cancel.is_cancelled() {
            Error::Cancelled { doing: format!("hashing `{key}` for its manifest") }
        } else {
            Error::io("build the manifest of", entry_rel, e)
        }
    })?;
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
    root.sync_dir(MANIFESTS_DIR).map_err(|e| Error::io("sync", MANIFESTS_DIR, e))?;
    Ok(manifest.bytes)
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
            zeros: None,
            target: None,
            unreadable: None,
            unstat: false,
            denied: false,
        }
    }

    fn manifest(files: Vec<Record>) -> Manifest {
        Manifest { format: FORMAT, key: "k".to_owned(), entry_id: None, entry_mtime: Some([1, 2]), bytes: 1, files }
    }

    #[test]
    fn files_hashed_on_many_threads_keep_each_its_own_hash() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open_ambient(dir.path()).unwrap();
        root.create_dir("e").unwrap();
        root.create_dir("e/sub").unwrap();
        let n = PARALLEL_FILES * 3;
        let mut want = BTreeMap::new();
        for i in 0..n {
            let path = if i % 2 == 0 { format!("e/f{i:03}") } else { format!("e/sub/g{i:03}") };
            let data = format!("file {i}").repeat(i * 97 % 500 + 1);
            root.write_new(&path, data.as_bytes()).unwrap();
            want.insert(path[2..].to_owned(), blake3::hash(data.as_bytes()).to_hex().to_string());
        }
        let files: Vec<_> = (0..n).map(|i| ToHash { index: i, rel: Path::new("e").to_path_buf(), len: 1 }).collect();
        assert!(hash_threads(&files) >= crate::parallel::cores(), "this many files are hashed on every core");
        let cancel = Cancel::new();
        let records = scan(&root, Path::new("e"), Hashing { format: FORMAT, cancel: &cancel }).unwrap();
        let got: BTreeMap<_, _> = records
            .iter()
            .filter(|r| r.kind == Kind::File)
            .map(|r| (r.path.show(), r.blake3.clone().unwrap_or_default()))
            .collect();
        assert_eq!(got, want);
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
        let body = b"{\"format\":3}\n".to_vec();
        let seal = format!("{{\"blake3\":\"{}\"}}\n", blake3::hash(&body).to_hex());
        let bytes = [body, seal.into_bytes()].concat();
        assert!(matches!(Manifest::parse(&bytes), Stored::Unsupported(3)));
    }

    #[test]
    fn differences_name_each_change() {
        let m = manifest(vec![record("", Kind::Dir), record("a", Kind::File), record("b", Kind::File)]);
        let mut changed = record("a", Kind::File);
        changed.mode = Some(0o600);
        changed.blake3 = Some("11".to_owned());
        let actual = vec![record("", Kind::Dir), changed, record("c\u{1b}", Kind::Symlink)];
        let diffs = m.findings(&actual).differences;
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
    fn what_cannot_be_read_is_unchecked_not_different() {
        let m = manifest(vec![
            record("", Kind::Dir),
            record("a", Kind::File),
            record("d", Kind::Dir),
            record("d/x", Kind::File),
            record("gone", Kind::File),
            record("short", Kind::File),
        ]);
        let unreadable = |path: &str, kind: Kind, why: &str, unstat: bool| {
            let mut r = record(path, kind);
            r.unreadable = Some(why.to_owned());
            r.unstat = unstat;
            if unstat {
                (r.mode, r.size) = (None, None);
            }
            r.blake3 = None;
            r
        };
        let mut short = unreadable("short", Kind::File, "Permission denied", false);
        short.size = Some(0);
        let actual = vec![
            record("", Kind::Dir),
            unreadable("a", Kind::File, "Permission denied", false),
            // A directory that cannot be listed: `d/x` is unknown, not missing.
            unreadable("d", Kind::Dir, "Permission denied", false),
            unreadable("gone", Kind::File, "it vanished while being checked", true),
            short,
        ];
        let found = m.findings(&actual);
        assert_eq!(found.differences, vec!["`short`: size 1 is now 0 bytes"], "lstat still shows a truncation");
        assert_eq!(
            found.unchecked,
            vec![
                "`a` cannot be read: Permission denied",
                "`d` cannot be read: Permission denied",
                "`gone` cannot be read: it vanished while being checked",
                "`short` cannot be read: Permission denied",
            ]
        );
        let mut unhashed = m.clone();
        unhashed.files[1].blake3 = None;
        let found = unhashed.findings(&m.files);
        assert_eq!(found.differences, Vec::<String>::new());
        assert!(found.unchecked[0].contains("its content was not recorded"), "{found:?}");
    }

    #[test]
    fn a_manifest_is_tied_by_inode_or_by_the_second_of_its_mtime() {
        let meta = |id: (u64, u64), secs: u64| Meta {
            kind: FileKind::Dir,
            len: 0,
            modified: Some(UNIX_EPOCH + std::time::Duration::new(secs, 999)),
            owner: None,
            id: Some(id),
        };
        let mut m = manifest(vec![]);
        m.entry_id = Some([1, 2]);
        m.entry_mtime = Some([100, 5]);
        assert_eq!(m.untied(&meta((1, 2), 100)), None, "where it was published");
        assert_eq!(m.untied(&meta((1, 2), 200)), None, "its top directory changed in place: still its manifest");
        assert_eq!(m.untied(&meta((7, 8), 100)), None, "copied with its times (tar keeps whole seconds)");
        assert!(m.untied(&meta((7, 8), 200)).is_some(), "copied without its times, or another entry's manifest");
        m.format = 1;
        m.entry_mtime = None;
        assert_eq!(m.untied(&meta((1, 2), 200)), None);
        assert!(m.untied(&meta((7, 8), 100)).is_some(), "format 1 has only the inode");
        m.entry_id = None;
        assert_eq!(m.untied(&meta((7, 8), 100)), None, "no tie field (WASI): the key alone");
    }

    #[test]
    // The test makes a sparse file from outside, as a filler would.
    #[allow(clippy::disallowed_methods)]
    fn zero_blocks_hash_the_same_whether_holes_or_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open_ambient(dir.path()).unwrap();
        let block = ZERO_BLOCK as usize;
        // Data, two zero blocks, data ending mid-block, a zero tail block
        // and a short zero tail.
        let mut bytes = vec![7u8; block + 3];
        bytes.resize(3 * block + 3, 0);
        bytes.extend_from_slice(&[9u8; 10]);
        bytes.resize(6 * block + 17, 0);
        root.write_new("dense", &bytes).unwrap();
        let sparse = {
            use std::io::{Seek, Write};
            let mut f = std::fs::File::create(dir.path().join("sparse")).unwrap();
            f.write_all(&bytes[..block + 3]).unwrap();
            f.seek(SeekFrom::Start(3 * block as u64 + 3)).unwrap();
            f.write_all(&[9u8; 10]).unwrap();
            f.set_len(bytes.len() as u64).unwrap();
            "sparse"
        };
        let cancel = Cancel::new();
        let hashing = Hashing { format: 2, cancel: &cancel };
        let mut buf = vec![0u8; CHUNK];
        let a = hash_file(&root, Path::new("dense"), &mut buf, hashing).unwrap();
        let b = hash_file(&root, Path::new(sparse), &mut buf, hashing).unwrap();
        assert_eq!((a.size, &a.blake3, &a.zeros), (b.size, &b.blake3, &b.zeros));
        assert!(a.zeros.is_some());
        // Data hash: the non-zero blocks' bytes, in order.
        let mut data = bytes[..block].to_vec();
        data.extend_from_slice(&bytes[block..2 * block]);
        data.extend_from_slice(&bytes[3 * block..4 * block]);
        data.extend_from_slice(&bytes[6 * block..]);
        assert_eq!(a.blake3, blake3::hash(&data).to_hex().to_string());
        // A file without zero blocks hashes as b3sum does.
        root.write_new("plain", b"hello").unwrap();
        let c = hash_file(&root, Path::new("plain"), &mut buf, hashing).unwrap();
        assert_eq!((c.blake3, c.zeros), (blake3::hash(b"hello").to_hex().to_string(), None));
        cancel.cancel();
        let e = hash_file(&root, Path::new("dense"), &mut buf, hashing).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted);
    }

    #[test]
    fn names_that_are_not_utf8_are_kept_as_hex() {
        let t = Text::of(b"a\xffb");
        assert_eq!(t, Text::Raw { hex: "61ff62".to_owned() });
        assert_eq!(t.sort_key(), b"a\xffb");
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"hex":"61ff62"}"#);
    }
}
