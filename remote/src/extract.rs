//! This defines extraction: an archive from the store, untrusted, written
//! into a private, empty directory through its handle. Only files,
//! directories and symlinks that stay inside the entry are made, each by an
//! exclusive create beneath a directory the archive itself made, so no name
//! can be replaced and no write can be redirected; and the decompressed
//! stream, the members and their bytes stop at what the manifest declares,
//! so a zstd bomb or a lying header cannot fill the disk. On any error the
//! caller discards the directory whole, as a failed fill's temp.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags};

use crate::archive::{self, ArchiveError, Counts, Kind};

/// Extracts the zstd-compressed tar stream `archive` into `into`, a
/// private, empty directory that becomes the entry's root, and returns what
/// it held, which is exactly `declared`.
///
/// Rejects (and stops at) absolute names and `..`, names the format does
/// not allow, a name twice, a member whose parent is not a directory made
/// earlier by the archive, symlinks whose target leaves the entry, hard
/// links, devices, FIFOs, sparse files and pax records, content on a
/// member that is not a file, more members, file bytes or decompressed
/// bytes than `declared` allows, fewer than it declares, and data after the
/// archive's end. Times, owners and modes are not taken from the archive:
/// files are made `0644`, or `0755` if the archive marks them executable,
/// directories `0755`.
pub fn extract<R: Read>(archive: R, declared: Counts, into: &Dir) -> Result<Counts, ArchiveError> {
    let over = Cell::new(false);
    let limit = declared.decompressed_limit();
    let stream = |source: io::Error| {
        if over.get() {
            ArchiveError::OverDeclared { what: "decompressed bytes", declared: limit }
        } else {
            ArchiveError::Malformed { source }
        }
    };
    let mut decoder = zstd::stream::read::Decoder::new(archive).map_err(stream)?;
    decoder.window_log_max(archive::ZSTD_WINDOW_LOG_MAX).map_err(stream)?;
    let capped = Capped { inner: decoder, left: limit, over: &over };
    let mut tar = tar::Archive::new(capped);
    let found = members(&mut tar, declared, into, &stream)?;
    // The tar reader stops at the first zero block; the rest of the stream
    // must be the end-of-archive padding and nothing else.
    let mut rest = tar.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        let n = rest.read(&mut buf).map_err(stream)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(ArchiveError::TrailingData);
        }
    }
    if found != declared {
        return Err(ArchiveError::UnderDeclared { found, declared });
    }
    Ok(found)
}

fn members<R: Read>(
    tar: &mut tar::Archive<R>,
    declared: Counts,
    into: &Dir,
    stream: &dyn Fn(io::Error) -> ArchiveError,
) -> Result<Counts, ArchiveError> {
    let mut found = Counts::default();
    // Every name made so far, and which of them are directories.
    let mut seen = BTreeSet::<Vec<u8>>::new();
    let mut dirs = BTreeSet::<Vec<u8>>::new();
    let mut cursor = Cursor { root: into, open: Vec::new() };
    for member in tar.entries().map_err(stream)? {
        let mut member = member.map_err(stream)?;
        found.names += 1;
        if found.names > declared.names {
            return Err(ArchiveError::OverDeclared { what: "names", declared: declared.names });
        }
        let entry_type = member.header().entry_type();
        let raw_name = member.path_bytes().into_owned();
        let kind = match entry_type {
            tar::EntryType::Regular => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            other => return Err(ArchiveError::Unsupported { path: archive::show(&raw_name), kind: type_name(other) }),
        };
        if member.pax_extensions().map_err(stream)?.is_some() {
            return Err(ArchiveError::Unsupported { path: archive::show(&raw_name), kind: "member with pax records" });
        }
        let name = match (kind, raw_name.strip_suffix(b"/")) {
            (Kind::Dir, Some(name)) => name.to_vec(),
            _ => raw_name,
        };
        let depth = archive::check_member_name(&name)
            .map_err(|reason| ArchiveError::InvalidName { path: archive::show(&name), reason })?;
        if !seen.insert(name.clone()) {
            return Err(ArchiveError::Duplicate { path: archive::show(&name) });
        }
        let (parent, base) = match name.iter().rposition(|b| *b == b'/') {
            Some(at) => (&name[..at], &name[at + 1..]),
            None => (&name[..0], &name[..]),
        };
        if !parent.is_empty() && !dirs.contains(parent) {
            return Err(ArchiveError::NoParent { path: archive::show(&name) });
        }
        let size = member.size();
        if kind != Kind::File && size != 0 {
            return Err(ArchiveError::UnexpectedContent { path: archive::show(&name) });
        }
        let base = OsStr::from_bytes(base);
        let at = cursor.enter(parent).map_err(|e| ArchiveError::io("open", parent, e))?;
        match kind {
            Kind::Dir => {
                rustix::fs::mkdirat(at, base, Mode::from_raw_mode(0o755))
                    .map_err(|e| ArchiveError::io("create", &name, e.into()))?;
                dirs.insert(name);
            }
            Kind::Symlink => {
                let target = member.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                archive::check_link_target(&target, depth.saturating_sub(1)).map_err(|reason| {
                    ArchiveError::EscapingLink { path: archive::show(&name), target: archive::show(&target), reason }
                })?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), at, base)
                    .map_err(|e| ArchiveError::io("create", &name, e.into()))?;
            }
            Kind::File => {
                found.bytes = found.bytes.saturating_add(size);
                if found.bytes > declared.bytes {
                    return Err(ArchiveError::OverDeclared { what: "bytes", declared: declared.bytes });
                }
                let mode = archive::normalized_mode(Kind::File, member.header().mode().map_err(stream)?);
                let fd = rustix::fs::openat(
                    at,
                    base,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| ArchiveError::io("create", &name, e.into()))?;
                let mut file = std::fs::File::from(fd);
                let copied = copy(&mut member, &mut file, &name, stream)?;
                if copied != size {
                    let source = io::Error::new(io::ErrorKind::UnexpectedEof, "a member ends before its size");
                    return Err(stream(source));
                }
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| ArchiveError::io("set the mode of", &name, e.into()))?;
            }
        }
    }
    Ok(found)
}

/// Copies a member's content, telling the stream's errors (malformed,
/// over the cap) from the file's.
fn copy(
    from: &mut impl Read,
    to: &mut std::fs::File,
    name: &[u8],
    stream: &dyn Fn(io::Error) -> ArchiveError,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream(e)),
        };
        to.write_all(&buf[..n]).map_err(|e| ArchiveError::io("write", name, e))?;
        copied += n as u64;
    }
}

fn type_name(entry_type: tar::EntryType) -> &'static str {
    match entry_type {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::Continuous => "contiguous file",
        tar::EntryType::GNUSparse => "sparse file",
        tar::EntryType::XGlobalHeader => "pax global header",
        _ => "member of unknown type",
    }
}

/// The directories open along the path to the last member's parent, below
/// the root. Members come parents first, so this is a cursor that mostly
/// moves one level at a time, holding at most [`archive::MAX_DEPTH`]
/// descriptors.
struct Cursor<'a> {
    root: &'a Dir,
    open: Vec<(Vec<u8>, Dir)>,
}

impl Cursor<'_> {
    /// The directory named `parent` (empty for the root), opened one
    /// component at a time without following symlinks: each is a
    /// directory this extraction made, so nothing can have replaced it
    /// but a process that can write the private temp, which is ours.
    fn enter(&mut self, parent: &[u8]) -> io::Result<&Dir> {
        while let Some((open, _)) = self.open.last() {
            let inside = parent == &open[..] || (parent.starts_with(open) && parent.get(open.len()) == Some(&b'/'));
            if inside {
                break;
            }
            self.open.pop();
        }
        loop {
            let have = self.open.last().map_or(0, |(open, _)| open.len());
            if have == parent.len() {
                break;
            }
            let start = if have == 0 { 0 } else { have + 1 };
            let end = parent[start..].iter().position(|b| *b == b'/').map_or(parent.len(), |at| start + at);
            let base = self.open.last().map_or(self.root, |(_, dir)| dir);
            let fd = rustix::fs::openat(
                base,
                OsStr::from_bytes(&parent[start..end]),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.open.push((parent[..end].to_vec(), Dir::from_std_file(std::fs::File::from(fd))));
        }
        Ok(self.open.last().map_or(self.root, |(_, dir)| dir))
    }
}

/// Reads at most `left` bytes of `inner`; past them, an error, with `over`
/// set so the caller reports the cap rather than a malformed stream.
struct Capped<'a, R> {
    inner: R,
    left: u64,
    over: &'a Cell<bool>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One byte more tells a stream that ends exactly at the cap
            // from one that goes on.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.over.set(true);
                    Err(io::Error::other("the decompressed archive is over its declared size"))
                }
            };
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}
