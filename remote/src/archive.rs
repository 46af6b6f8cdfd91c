//! This defines the remote archive format (docs/REMOTE.md, "The archive"):
//! its fixed header fields, the rules a member's name and a symlink's
//! target must meet, and the one error type of packing and extracting. The
//! packer and the extractor check the same rules, so every archive the one
//! writes the other accepts, and an entry that breaks a rule is never
//! uploaded rather than uploaded and refused by every reader.

use std::fmt;
use std::io;

/// The modification time of every member: the tar crate's deterministic
/// time (2006-07-24), so that GNU tar does not warn of an implausibly old
/// time stamp. Extraction ignores it.
pub const MTIME: u64 = 1_153_704_088;

/// The zstd compression level of a packed archive.
pub const ZSTD_LEVEL: i32 = 3;

/// The largest zstd window a reader accepts, as a power of two (128 MiB,
/// zstd's own default limit), so a frame cannot make the decoder allocate
/// more.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The longest member name, in bytes (Linux's `PATH_MAX` less its NUL).
pub const MAX_PATH_LEN: usize = 4095;

/// The longest component of a member name, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;

/// The longest symlink target, in bytes.
pub const MAX_TARGET_LEN: usize = 4095;

/// The deepest member: a name of at most this many components. Packing
/// and extracting keep one directory open per level.
pub const MAX_DEPTH: usize = 128;

/// The most bytes one member may add to the decompressed stream besides
/// its content: its header, a GNU long-name and a long-link record (each a
/// header and up to 4096 bytes of name padded to a block), and the padding
/// of its content.
pub const MEMBER_OVERHEAD: u64 = 512 + 2 * (512 + 4608) + 511;

/// What an archive holds, as its remote manifest declares it: the number
/// of members (files, directories and symlinks below the entry's root) and
/// the total size of its regular files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    /// Members: every name below the entry's root.
    pub names: u64,
    /// The total length of its regular files, in bytes.
    pub bytes: u64,
}

impl Counts {
    /// The most decompressed bytes an archive of these counts can take:
    /// its content, each member's overhead, and the end-of-archive blocks.
    /// Reading stops there, so a zstd bomb cannot fill a disk or memory.
    pub fn decompressed_limit(&self) -> u64 {
        self.bytes.saturating_add(self.names.saturating_add(1).saturating_mul(MEMBER_OVERHEAD)).saturating_add(1024)
    }
}

/// The mode a member is stored with: `0755` for directories and for files
/// with any execute bit, `0644` for other files, `0777` for symlinks.
pub fn normalized_mode(kind: Kind, mode: u32) -> u32 {
    match kind {
        Kind::Dir => 0o755,
        Kind::File if mode & 0o111 != 0 => 0o755,
        Kind::File => 0o644,
        Kind::Symlink => 0o777,
    }
}

/// The three kinds of member an archive may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, stored by its target text, never followed.
    Symlink,
}

/// A member name (or a symlink target) ready to print: lossy UTF-8 with
/// control characters escaped.
pub(crate) fn show(bytes: &[u8]) -> String {
    safecache::display::escape(&String::from_utf8_lossy(bytes))
}

/// Checks a member name: relative, `/`-separated, at most [`MAX_PATH_LEN`]
/// bytes and [`MAX_DEPTH`] components, each component non-empty, at most
/// [`MAX_COMPONENT_LEN`] bytes, not `.` or `..`, and without NUL. Returns
/// the number of components.
pub fn check_member_name(name: &[u8]) -> Result<usize, &'static str> {
    check_text(
        name,
        MAX_PATH_LEN,
        [
            "the name is empty",
            "the name is longer than 4095 bytes",
            "the name contains a NUL byte",
            "the name is absolute",
        ],
    )?;
    let mut depth = 0;
    for component in name.split(|b| *b == b'/') {
        depth += 1;
        match component {
            b"" => return Err("a component is empty"),
            b"." | b".." => return Err("a component is `.` or `..`"),
            c if c.len() > MAX_COMPONENT_LEN => return Err("a component is longer than 255 bytes"),
            _ => {}
        }
    }
    if depth > MAX_DEPTH {
        return Err("the name has more than 128 components");
    }
    Ok(depth)
}

/// Checks a symlink's target, for a link whose parent directory is
/// `parent_depth` components below the entry's root: it is relative, not
/// empty, at most [`MAX_TARGET_LEN`] bytes, without NUL, and its `..`
/// components all come first (before any other name; `.` and empty
/// components change nothing) and are at most `parent_depth` many.
///
/// So the target names a place inside the entry wherever the link is
/// followed from: its leading `..`s climb at most to the root, through real
/// directories (a member's parents are directories of the archive, never
/// symlinks), and the rest only descends, through directories or through
/// links that obey the same rule. A lexical check alone would not be
/// enough: `b/../..` looks like it stays inside, but `b` may itself be a
/// link that climbs.
pub fn check_link_target(target: &[u8], parent_depth: usize) -> Result<(), &'static str> {
    check_text(
        target,
        MAX_TARGET_LEN,
        [
            "the target is empty",
            "the target is longer than 4095 bytes",
            "the target contains a NUL byte",
            "the target is absolute",
        ],
    )?;
    let mut ups = 0;
    let mut descended = false;
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if descended => return Err("the target has `..` after a name"),
            b".." => {
                ups += 1;
                if ups > parent_depth {
                    return Err("the target climbs out of the entry");
                }
            }
            _ => descended = true,
        }
    }
    Ok(())
}

/// The checks names and targets share: not empty, at most `max` bytes, no
/// NUL, relative; each failure reported by its own words.
fn check_text(text: &[u8], max: usize, words: [&'static str; 4]) -> Result<(), &'static str> {
    let [empty, long, nul, absolute] = words;
    match () {
        () if text.is_empty() => Err(empty),
        () if text.len() > max => Err(long),
        () if text.contains(&0) => Err(nul),
        () if text.starts_with(b"/") => Err(absolute),
        () => Ok(()),
    }
}

/// Why an entry could not be packed, or an archive could not be extracted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A filesystem or stream operation failed.
    #[error("cannot {op} `{path}`")]
    Io {
        /// What was being done (`open`, `read`, `create`, ...).
        op: &'static str,
        /// The member concerned, escaped; empty for the entry's root.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The archive is not a well-formed zstd-compressed tar stream.
    #[error("the archive is malformed")]
    Malformed {
        /// What the decoder or the tar reader reported.
        #[source]
        source: io::Error,
    },
    /// A member of a kind the format does not carry: a device, FIFO or
    /// socket in an entry; a hard link, device, FIFO, sparse file or pax
    /// record in an archive.
    #[error("`{path}` is a {kind}, which a remote archive cannot hold")]
    Unsupported {
        /// The member, escaped.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// A member's name breaks a rule of [`check_member_name`].
    #[error("invalid member name `{path}`: {reason}")]
    InvalidName {
        /// The name, escaped.
        path: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A symlink's target breaks a rule of [`check_link_target`].
    #[error("symlink `{path}` points to `{target}`: {reason}")]
    EscapingLink {
        /// The link, escaped.
        path: String,
        /// Its target, escaped.
        target: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A name that an earlier member already had.
    #[error("`{path}` appears twice in the archive")]
    Duplicate {
        /// The name, escaped.
        path: String,
    },
    /// A member whose parent is not a directory that the archive made
    /// before it (missing, a file, or a symlink that would redirect it).
    #[error("`{path}` is not inside a directory of the archive")]
    NoParent {
        /// The name, escaped.
        path: String,
    },
    /// More of something than the manifest declares.
    #[error("the archive holds more {what} than its manifest declares ({declared})")]
    OverDeclared {
        /// `names`, `bytes` or `decompressed bytes`.
        what: &'static str,
        /// The declared count (for decompressed bytes, the limit).
        declared: u64,
    },
    /// Fewer members or bytes than the manifest declares.
    #[error("the archive holds {found} but its manifest declares {declared}")]
    UnderDeclared {
        /// What the archive held.
        found: Counts,
        /// What the manifest declared.
        declared: Counts,
    },
    /// A member of a kind that the archive's header marks nonzero size for.
    #[error("`{path}` is not a file but has content")]
    UnexpectedContent {
        /// The member, escaped.
        path: String,
    },
    /// Bytes after the archive's end that are not its zero padding.
    #[error("the archive has data after its end")]
    TrailingData,
    /// A file changed size while it was packed.
    #[error("`{path}` changed while it was packed")]
    Changed {
        /// The file, escaped.
        path: String,
    },
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = safecache::display::count(usize::try_from(self.names).unwrap_or(usize::MAX), "name", "names");
        write!(f, "{names} and {} bytes", self.bytes)
    }
}

impl ArchiveError {
    #[cold]
    pub(crate) fn io(op: &'static str, path: &[u8], source: io::Error) -> Self {
        ArchiveError::Io { op, path: show(path), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(check_member_name(b"a/b/c"), Ok(3));
        assert_eq!(check_member_name("é/\u{1}".as_bytes()), Ok(2));
        for bad in [&b""[..], b"/a", b"a//b", b"a/", b"./a", b"a/..", b"a\0b"] {
            assert!(check_member_name(bad).is_err(), "{}", show(bad));
        }
        assert!(check_member_name(&[b'x'; 256]).is_err());
        assert!(check_member_name(&b"a/".repeat(128)[..255]).is_ok());
        assert!(check_member_name(&b"a/".repeat(129)[..257]).is_err());
    }

    #[test]
    fn link_targets() {
        assert!(check_link_target(b"x", 0).is_ok());
        assert!(check_link_target(b"./x/./y/", 0).is_ok());
        assert!(check_link_target(b"../x", 1).is_ok());
        assert!(check_link_target(b"..//../x", 2).is_ok());
        assert!(check_link_target(b"..", 1).is_ok());
        assert!(check_link_target(b"../x", 0).is_err());
        assert!(check_link_target(b"x/../y", 3).is_err());
        assert!(check_link_target(b"b/../..", 3).is_err());
        assert!(check_link_target(b"/etc", 3).is_err());
        assert!(check_link_target(b"", 3).is_err());
    }

    #[test]
    fn the_decompressed_limit_saturates() {
        let huge = Counts { names: u64::MAX, bytes: u64::MAX };
        assert_eq!(huge.decompressed_limit(), u64::MAX);
        assert_eq!(Counts::default().decompressed_limit(), MEMBER_OVERHEAD + 1024);
    }
}
