//! This defines packing: an entry directory, read through its directory
//! handle without following any symlink, written as the deterministic
//! archive of docs/REMOTE.md ("The archive") and hashed as it streams. The
//! same tree always packs to the same bytes (with one zstd build), so its
//! BLAKE3 hash can name it in the store.

use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use cap_std::fs::Dir;
use rustix::fs::{Mode, OFlags};

use crate::archive::{self, ArchiveError, Counts, Kind};

/// What [`pack`] wrote: the archive's BLAKE3 hash and size (of the
/// compressed bytes, as stored), and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packed {
    /// BLAKE3 of the compressed archive.
    pub blake3: blake3::Hash,
    /// The compressed archive's length in bytes.
    pub size: u64,
    /// Its members and their bytes, for the remote manifest.
    pub counts: Counts,
}

/// Packs the entry directory `entry` into `out`: its members in
/// depth-first order, each directory's names sorted by their bytes and
/// listed before their contents; fixed times, owners and modes; zstd at
/// [`archive::ZSTD_LEVEL`].
///
/// Fails, and the caller discards what was written, if the entry holds
/// something the format cannot carry (a FIFO, socket or device, a symlink
/// that leaves the entry, a name too long or too deep), if a name cannot be
/// read, or if a file changes size while it is read.
pub fn pack<W: Write>(entry: &Dir, out: W) -> Result<Packed, ArchiveError> {
    let hashing = HashingWriter { inner: out, hasher: blake3::Hasher::new(), written: 0 };
    let encoder = zstd::stream::write::Encoder::new(hashing, archive::ZSTD_LEVEL)
        .map_err(|e| ArchiveError::io("start compressing", b"", e))?;
    let mut builder = tar::Builder::new(encoder);
    let mut counts = Counts::default();
    let mut name = Vec::new();
    walk(entry, &mut name, 0, &mut builder, &mut counts)?;
    let encoder = builder.into_inner().map_err(|e| ArchiveError::io("write", b"", e))?;
    let mut hashing = encoder.finish().map_err(|e| ArchiveError::io("write", b"", e))?;
    hashing.inner.flush().map_err(|e| ArchiveError::io("write", b"", e))?;
    Ok(Packed { blake3: hashing.hasher.finalize(), size: hashing.written, counts })
}

/// Appends every member below `dir`, whose name is `prefix` (empty for the
/// entry's root) at `depth` components.
fn walk<W: Write>(
    dir: &Dir,
    prefix: &mut Vec<u8>,
    depth: usize,
    builder: &mut tar::Builder<W>,
    counts: &mut Counts,
) -> Result<(), ArchiveError> {
    let mut names = Vec::new();
    for item in dir.entries().map_err(|e| ArchiveError::io("list", prefix, e))? {
        let item = item.map_err(|e| ArchiveError::io("list", prefix, e))?;
        names.push(item.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for file_name in names {
        let base = prefix.len();
        if base > 0 {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(file_name.as_bytes());
        let result = member(dir, &file_name, prefix, depth, builder, counts);
        prefix.truncate(base);
        result?;
    }
    Ok(())
}

/// Appends the member `name` of `dir`, whose whole name is `path`, and
/// everything below it.
fn member<W: Write>(
    dir: &Dir,
    name: &std::ffi::OsStr,
    path: &mut Vec<u8>,
    parent_depth: usize,
    builder: &mut tar::Builder<W>,
    counts: &mut Counts,
) -> Result<(), ArchiveError> {
    let depth = archive::check_member_name(path)
        .map_err(|reason| ArchiveError::InvalidName { path: archive::show(path), reason })?;
    counts.names += 1;
    // Open without following a symlink at the name and without blocking on
    // a FIFO; `O_PATH` so that a file without read permission still tells
    // its kind. Its kind comes from the descriptor, not from a separate
    // lstat that could see another file.
    let fd = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ArchiveError::io("open", path, e.into()))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| ArchiveError::io("stat", path, e.into()))?;
    let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let mode = stat.st_mode & 0o7777;
    match file_type {
        rustix::fs::FileType::Directory => {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ArchiveError::io("open", path, e.into()))?;
            let sub = Dir::from_std_file(std::fs::File::from(sub));
            let mut header = header(Kind::Dir, mode, 0);
            path.push(b'/');
            let appended = append_named(builder, &mut header, path, None, io::empty());
            path.pop();
            appended?;
            walk(&sub, path, depth, builder, counts)
        }
        rustix::fs::FileType::RegularFile => {
            let file = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| ArchiveError::io("open", path, e.into()))?;
            let mut file = std::fs::File::from(file);
            let meta = file.metadata().map_err(|e| ArchiveError::io("stat", path, e))?;
            if !meta.is_file() {
                // Replaced between the two opens: what it was is gone.
                return Err(ArchiveError::Changed { path: archive::show(path) });
            }
            let size = meta.len();
            counts.bytes = counts.bytes.saturating_add(size);
            let mut header = header(Kind::File, mode, size);
            let mut exact = ExactReader { inner: &mut file, left: size, short: false };
            let appended = append_named(builder, &mut header, path, None, &mut exact);
            if exact.short {
                return Err(ArchiveError::Changed { path: archive::show(path) });
            }
            appended?;
            let mut probe = [0u8; 1];
            match file.read(&mut probe) {
                Ok(0) => Ok(()),
                Ok(_) => Err(ArchiveError::Changed { path: archive::show(path) }),
                Err(e) => Err(ArchiveError::io("read", path, e)),
            }
        }
        rustix::fs::FileType::Symlink => {
            let target = dir.read_link_contents(name).map_err(|e| ArchiveError::io("read the link", path, e))?;
            let target = target.as_os_str().as_bytes();
            archive::check_link_target(target, parent_depth).map_err(|reason| ArchiveError::EscapingLink {
                path: archive::show(path),
                target: archive::show(target),
                reason,
            })?;
            let mut header = header(Kind::Symlink, mode, 0);
            append_named(builder, &mut header, path, Some(target), io::empty())
        }
        other => Err(ArchiveError::Unsupported { path: archive::show(path), kind: kind_name(other) }),
    }
}

/// A header with every field but the name fixed by the format.
fn header(kind: Kind, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(match kind {
        Kind::File => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink => tar::EntryType::Symlink,
    });
    header.set_mode(archive::normalized_mode(kind, mode));
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(archive::MTIME);
    header.set_size(size);
    header
}

/// Appends a member named `name` with `data`: the name (and a symlink's
/// `target`) byte for byte in the header when it fits its 100 bytes, else
/// in a GNU long-name (long-link) record before it, with the first 100
/// bytes in the header, as GNU tar writes them. The tar crate's own naming
/// would normalize both (`./x` → `x`), so a target would not round-trip.
fn append_named<W: Write, R: Read>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &[u8],
    target: Option<&[u8]>,
    data: R,
) -> Result<(), ArchiveError> {
    let fail = |e| ArchiveError::io("write", name, e);
    if name.len() > 100 {
        builder.append(&long_record(tar::EntryType::GNULongName, name), &[name, b"\0"].concat()[..]).map_err(fail)?;
    }
    copy_field(&mut header.as_old_mut().name, name);
    if let Some(target) = target {
        if target.len() > 100 {
            builder
                .append(&long_record(tar::EntryType::GNULongLink, target), &[target, b"\0"].concat()[..])
                .map_err(fail)?;
        }
        copy_field(&mut header.as_old_mut().linkname, target);
    }
    header.set_cksum();
    builder.append(header, data).map_err(fail)
}

/// The header of a GNU long-name or long-link record carrying `text`.
fn long_record(kind: tar::EntryType, text: &[u8]) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    copy_field(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(text.len() as u64 + 1);
    header.set_cksum();
    header
}

/// Writes `text` into a fixed-size header field, truncated to it and
/// padded with NULs.
fn copy_field(field: &mut [u8], text: &[u8]) {
    field.fill(0);
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text[..n]);
}

fn kind_name(file_type: rustix::fs::FileType) -> &'static str {
    match file_type {
        rustix::fs::FileType::Fifo => "FIFO",
        rustix::fs::FileType::Socket => "socket",
        rustix::fs::FileType::CharacterDevice => "character device",
        rustix::fs::FileType::BlockDevice => "block device",
        _ => "file of unknown kind",
    }
}

/// Reads exactly `left` bytes from `inner`, and remembers if it ended
/// before (a file truncated while packed), so the tar stream never gets a
/// member shorter than its header says.
struct ExactReader<'a, R> {
    inner: &'a mut R,
    left: u64,
    short: bool,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was packed"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Passes writes through to `inner`, hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
