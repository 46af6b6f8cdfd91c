//! Hostile archives: each one the extractor must refuse, built member by
//! member (as the packer never would) and compressed like a real archive.

use safecache_remote::{ArchiveError, Counts, extract};
use tar::EntryType;

use crate::support::temp_dir;

/// A tar stream written by hand.
#[derive(Default)]
struct Raw {
    tar: Vec<u8>,
}

impl Raw {
    fn member(self, kind: EntryType, name: &[u8], link: Option<&[u8]>, data: &[u8]) -> Raw {
        self.member_sized(kind, name, link, data.len() as u64, data)
    }

    /// A member whose header says `size`, followed by `data` padded to a
    /// block.
    fn member_sized(mut self, kind: EntryType, name: &[u8], link: Option<&[u8]>, size: u64, data: &[u8]) -> Raw {
        if name.len() > 100 {
            self = self.member(EntryType::GNULongName, b"././@LongLink", None, &[name, b"\0"].concat());
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(size);
        header.set_mtime(0);
        let n = name.len().min(100);
        header.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        header.set_cksum();
        self.tar.extend_from_slice(header.as_bytes());
        self.tar.extend_from_slice(data);
        self.pad();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Raw {
        self.member(EntryType::Regular, name.as_bytes(), None, data)
    }

    fn dir(self, name: &str) -> Raw {
        self.member(EntryType::Directory, name.as_bytes(), None, b"")
    }

    fn link(self, name: &str, target: &str) -> Raw {
        self.member(EntryType::Symlink, name.as_bytes(), Some(target.as_bytes()), b"")
    }

    fn pad(&mut self) {
        while !self.tar.len().is_multiple_of(512) {
            self.tar.push(0);
        }
    }

    /// The stream with its end-of-archive blocks, compressed.
    fn finish(mut self) -> Vec<u8> {
        self.tar.extend_from_slice(&[0; 1024]);
        self.compressed()
    }

    /// The stream as it is, compressed.
    fn compressed(self) -> Vec<u8> {
        zstd::encode_all(&self.tar[..], 3).unwrap()
    }
}

/// Generous counts, so that only the rule under test can refuse.
const ROOMY: Counts = Counts { names: 100, bytes: 1 << 20 };

fn refused(archive: &[u8], declared: Counts) -> ArchiveError {
    let into = temp_dir();
    match extract(archive, declared, &into.dir) {
        Ok(found) => panic!("extracted {found:?}, expected a refusal"),
        Err(err) => err,
    }
}

fn refused_name(archive: Raw) -> (String, &'static str) {
    match refused(&archive.finish(), ROOMY) {
        ArchiveError::InvalidName { path, reason } => (path, reason),
        other => panic!("expected an invalid name, got {other:?}"),
    }
}

#[test]
fn absolute_names_and_dot_dot_are_refused() {
    assert_eq!(refused_name(Raw::default().file("/etc/passwd", b"x")).1, "the name is absolute");
    assert_eq!(refused_name(Raw::default().file("../x", b"x")).1, "a component is `.` or `..`");
    assert_eq!(refused_name(Raw::default().dir("a").file("a/../../x", b"x")).1, "a component is `.` or `..`");
    assert_eq!(refused_name(Raw::default().file("./x", b"x")).1, "a component is `.` or `..`");
}

#[test]
fn invalid_names_are_refused() {
    assert_eq!(refused_name(Raw::default().dir("a").file("a//b", b"x")).1, "a component is empty");
    assert_eq!(refused_name(Raw::default().file("a/", b"x")).1, "a component is empty");
    let long = "x".repeat(256);
    assert_eq!(refused_name(Raw::default().file(&long, b"x")).1, "a component is longer than 255 bytes");
    // A GNU long name may carry a NUL that a header field cannot.
    let raw = Raw::default().member(EntryType::GNULongName, b"././@LongLink", None, b"a\0b\0");
    let raw = raw.member(EntryType::Regular, b"a", None, b"x");
    assert_eq!(refused_name(raw).1, "the name contains a NUL byte");
}

#[test]
fn hard_links_devices_fifos_and_sparse_files_are_refused() {
    for (kind, name) in [
        (EntryType::Link, "hard link"),
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "FIFO"),
        (EntryType::Continuous, "contiguous file"),
        (EntryType::XGlobalHeader, "pax global header"),
    ] {
        let archive = Raw::default().file("f", b"x").member(kind, b"g", Some(b"f"), b"").finish();
        let err = refused(&archive, ROOMY);
        assert!(matches!(&err, ArchiveError::Unsupported { path, kind } if path == "g" && *kind == name), "{err:?}");
    }
    let archive = Raw::default().member(EntryType::GNUSparse, b"s", None, b"").finish();
    let err = refused(&archive, ROOMY);
    assert!(matches!(err, ArchiveError::Unsupported { .. } | ArchiveError::Malformed { .. }), "{err:?}");
}

#[test]
fn pax_records_are_refused() {
    // A pax record could rename the member after its name was checked by
    // another reader; the format has none.
    let archive =
        Raw::default().member(EntryType::XHeader, b"pax", None, b"18 path=evil/path\n").file("f", b"x").finish();
    let err = refused(&archive, ROOMY);
    assert!(matches!(err, ArchiveError::Unsupported { kind: "member with pax records", .. }), "{err:?}");
}

#[test]
fn symlinks_that_leave_the_entry_are_refused() {
    for (raw, link) in [
        (Raw::default().link("l", "/etc/passwd"), "l"),
        (Raw::default().link("l", "../x"), "l"),
        (Raw::default().dir("d").link("d/l", "../../x"), "d/l"),
        (Raw::default().dir("d").link("d/l", "x/../.."), "d/l"),
        (Raw::default().link("l", ""), "l"),
    ] {
        let err = refused(&raw.finish(), ROOMY);
        assert!(matches!(&err, ArchiveError::EscapingLink { path, .. } if path == link), "{err:?}");
    }
}

#[test]
fn nothing_is_written_through_a_symlink_or_into_a_file() {
    let outside = temp_dir();
    let target = outside.temp.path().to_str().unwrap().to_owned();
    for raw in [
        // An absolute link is refused before anything is written below it;
        // here the link is legal, but a member below it is not.
        Raw::default().dir("d").link("l", "d").file("l/f", b"x"),
        Raw::default().link("l", ".").file("l/f", b"x"),
        Raw::default().file("f", b"x").file("f/g", b"x"),
        Raw::default().file("a/f", b"x"),
    ] {
        let err = refused(&raw.finish(), ROOMY);
        assert!(matches!(err, ArchiveError::NoParent { .. }), "{err:?}");
    }
    let err = refused(&Raw::default().link("l", &target).file("l/f", b"x").finish(), ROOMY);
    assert!(matches!(err, ArchiveError::EscapingLink { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(outside.temp.path()).unwrap().count(), 0);
}

#[test]
fn duplicate_names_are_refused() {
    for raw in [
        Raw::default().file("f", b"x").file("f", b"y"),
        Raw::default().dir("d/").dir("d"),
        Raw::default().file("f", b"x").link("f", "g"),
    ] {
        let err = refused(&raw.finish(), ROOMY);
        assert!(matches!(err, ArchiveError::Duplicate { .. }), "{err:?}");
    }
}

#[test]
fn more_than_declared_is_refused_before_it_is_written() {
    let two = Raw::default().file("a", b"x").file("b", b"y").finish();
    let err = refused(&two, Counts { names: 1, bytes: 2 });
    assert!(matches!(err, ArchiveError::OverDeclared { what: "names", declared: 1 }), "{err:?}");

    let big = Raw::default().file("a", &[7; 100]).finish();
    let into = temp_dir();
    let err = extract(&big[..], Counts { names: 1, bytes: 99 }, &into.dir).unwrap_err();
    assert!(matches!(err, ArchiveError::OverDeclared { what: "bytes", declared: 99 }), "{err:?}");
    assert!(!into.temp.path().join("a").exists(), "the file was created before its size was checked");
}

#[test]
fn less_than_declared_is_refused() {
    let one = Raw::default().file("a", b"xy").finish();
    let err = refused(&one, Counts { names: 2, bytes: 2 });
    assert!(matches!(err, ArchiveError::UnderDeclared { .. }), "{err:?}");
    let err = refused(&one, Counts { names: 1, bytes: 3 });
    assert!(matches!(err, ArchiveError::UnderDeclared { .. }), "{err:?}");
}

#[test]
fn zstd_bombs_stop_at_the_declared_size() {
    // A long name of 1 MiB: the tar reader would hold it all in memory.
    let name = vec![b'a'; 1 << 20];
    let bomb = Raw::default().member(EntryType::GNULongName, b"././@LongLink", None, &name).file("f", b"").finish();
    assert!(bomb.len() < 1024, "not a bomb: {} bytes", bomb.len());
    let err = refused(&bomb, Counts { names: 1, bytes: 0 });
    assert!(matches!(err, ArchiveError::OverDeclared { what: "decompressed bytes", .. }), "{err:?}");

    // 64 MiB of zeros after the archive's end.
    let mut raw = Raw::default().file("f", b"x");
    raw.tar.extend_from_slice(&vec![0; 64 << 20]);
    let bomb = raw.compressed();
    assert!(bomb.len() < 64 * 1024, "not a bomb: {} bytes", bomb.len());
    let err = refused(&bomb, Counts { names: 1, bytes: 1 });
    assert!(matches!(err, ArchiveError::OverDeclared { what: "decompressed bytes", .. }), "{err:?}");
}

#[test]
fn data_after_the_end_is_refused() {
    let mut raw = Raw::default().file("f", b"x");
    raw.tar.extend_from_slice(&[0; 512]);
    raw.tar.extend_from_slice(&[b'x'; 512]);
    let err = refused(&raw.compressed(), Counts { names: 1, bytes: 1 });
    assert!(matches!(err, ArchiveError::TrailingData), "{err:?}");

    // After the zstd frame, bytes that are not another frame.
    let mut archive = Raw::default().file("f", b"x").finish();
    archive.extend_from_slice(b"garbage");
    let err = refused(&archive, Counts { names: 1, bytes: 1 });
    assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");
}

#[test]
fn content_on_a_directory_or_symlink_is_refused() {
    let archive = Raw::default().member(EntryType::Directory, b"d/", None, &[1; 10]).finish();
    let err = refused(&archive, ROOMY);
    assert!(matches!(err, ArchiveError::UnexpectedContent { .. }), "{err:?}");
    let archive = Raw::default().member(EntryType::Symlink, b"l", Some(b"x"), &[1; 10]).finish();
    let err = refused(&archive, ROOMY);
    assert!(matches!(err, ArchiveError::UnexpectedContent { .. }), "{err:?}");
}

#[test]
fn truncated_and_corrupt_archives_are_malformed() {
    let archive = Raw::default().file("f", &[5; 5000]).file("g", b"y").finish();
    for cut in [1, archive.len() / 2, archive.len() - 1] {
        let err = refused(&archive[..cut], Counts { names: 2, bytes: 5001 });
        assert!(matches!(err, ArchiveError::Malformed { .. }), "cut at {cut}: {err:?}");
    }
    let err = refused(b"not zstd at all", ROOMY);
    assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");

    // A member whose stream ends before its size.
    let raw = Raw::default().member_sized(EntryType::Regular, b"f", None, 1000, b"short");
    let err = refused(&raw.compressed(), Counts { names: 1, bytes: 1000 });
    assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");

    // A header whose checksum does not match.
    let mut raw = Raw::default().file("f", b"x");
    raw.tar[0] = b'g';
    let err = refused(&raw.finish(), ROOMY);
    assert!(matches!(err, ArchiveError::Malformed { .. }), "{err:?}");
}
