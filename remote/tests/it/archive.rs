//! Packing and extracting: any tree the format carries round-trips, and
//! packs to the same bytes every time, from the original or its copy.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use proptest::prelude::*;
use safecache_remote::{ArchiveError, Counts, Packed, extract, pack};

use crate::support::{Seen, read_tree, temp_dir};

#[derive(Debug, Clone)]
enum Node {
    File {
        content: Vec<u8>,
        exec: bool,
    },
    Dir(BTreeMap<Vec<u8>, Node>),
    /// A symlink climbing `ups` levels (at most to the root), then naming
    /// `rest`.
    Link {
        ups: usize,
        rest: Vec<u8>,
    },
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'.', b'-', b' ', 0xff]), 1..5),
        // Longer than a tar header's 100 bytes: GNU long-name records.
        1 => prop::collection::vec(prop::sample::select(vec![b'x', b'y']), 95..140),
    ]
    .prop_filter("not `.` or `..`", |n| n != b"." && n != b"..")
}

fn tree() -> impl Strategy<Value = BTreeMap<Vec<u8>, Node>> {
    let leaf = prop_oneof![
        (prop::collection::vec(any::<u8>(), 0..3000), any::<bool>())
            .prop_map(|(content, exec)| Node::File { content, exec }),
        (0..4usize, name()).prop_map(|(ups, rest)| Node::Link { ups, rest }),
    ];
    let node =
        leaf.prop_recursive(4, 40, 5, |inner| prop::collection::btree_map(name(), inner, 0..5).prop_map(Node::Dir));
    prop::collection::btree_map(name(), node, 0..6)
}

fn materialize(dir: &Path, children: &BTreeMap<Vec<u8>, Node>, depth: usize) {
    for (name, node) in children {
        let path = dir.join(OsStr::from_bytes(name));
        match node {
            Node::File { content, exec } => {
                std::fs::write(&path, content).unwrap();
                let mode = if *exec { 0o700 } else { 0o600 };
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::Dir(children) => {
                std::fs::create_dir(&path).unwrap();
                materialize(&path, children, depth + 1);
            }
            Node::Link { ups, rest } => {
                let mut target = b"../".repeat((*ups).min(depth));
                target.extend_from_slice(rest);
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path).unwrap();
            }
        }
    }
}

/// A tree as the archive carries it: files `0644` or `0755`, directories
/// whatever the umask made them.
fn normalized(tree: BTreeMap<Vec<u8>, Seen>) -> BTreeMap<Vec<u8>, Seen> {
    tree.into_iter()
        .map(|(name, seen)| {
            let seen = match seen {
                Seen::File(content, mode) => Seen::File(content, if mode & 0o111 != 0 { 0o755 } else { 0o644 }),
                Seen::Dir(_) => Seen::Dir(0),
                link => link,
            };
            (name, seen)
        })
        .collect()
}

fn pack_bytes(dir: &cap_std::fs::Dir) -> (Packed, Vec<u8>) {
    let mut bytes = Vec::new();
    let packed = pack(dir, &mut bytes).unwrap();
    assert_eq!(packed.size, bytes.len() as u64);
    assert_eq!(packed.blake3, blake3::hash(&bytes));
    (packed, bytes)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn pack_then_extract_round_trips_and_packs_to_the_same_bytes(tree in tree()) {
        let original = temp_dir();
        materialize(original.temp.path(), &tree, 0);
        let (packed, bytes) = pack_bytes(&original.dir);
        let (again, bytes_again) = pack_bytes(&original.dir);
        prop_assert_eq!(packed, again);
        prop_assert!(bytes == bytes_again, "the same tree packed to other bytes");

        let copy = temp_dir();
        let found = extract(&bytes[..], packed.counts, &copy.dir).unwrap();
        prop_assert_eq!(found, packed.counts);
        let (expected, got) = (normalized(read_tree(original.temp.path())), read_tree(copy.temp.path()));
        prop_assert_eq!(&normalized(got), &expected);
        prop_assert_eq!(packed.counts.names, expected.len() as u64);

        let (repacked, bytes_repacked) = pack_bytes(&copy.dir);
        prop_assert_eq!(repacked, packed);
        prop_assert!(bytes_repacked == bytes, "the extracted copy packed to other bytes");
    }
}

#[test]
fn extracted_files_get_normalized_modes() {
    let original = temp_dir();
    let root = original.temp.path();
    std::fs::write(root.join("run"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run"), std::fs::Permissions::from_mode(0o4711)).unwrap();
    std::fs::write(root.join("data"), b"x").unwrap();
    std::fs::set_permissions(root.join("data"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (packed, bytes) = pack_bytes(&original.dir);
    let copy = temp_dir();
    extract(&bytes[..], packed.counts, &copy.dir).unwrap();
    let tree = read_tree(copy.temp.path());
    assert_eq!(tree[&b"run"[..]], Seen::File(b"#!/bin/sh\n".to_vec(), 0o755));
    assert_eq!(tree[&b"data"[..]], Seen::File(b"x".to_vec(), 0o644));
}

#[test]
fn an_empty_entry_packs_and_extracts() {
    let original = temp_dir();
    let (packed, bytes) = pack_bytes(&original.dir);
    assert_eq!(packed.counts, Counts::default());
    let copy = temp_dir();
    assert_eq!(extract(&bytes[..], Counts::default(), &copy.dir).unwrap(), Counts::default());
    assert!(read_tree(copy.temp.path()).is_empty());
}

#[test]
fn the_archive_is_a_tar_that_other_tools_read() {
    let original = temp_dir();
    std::fs::create_dir(original.temp.path().join("d")).unwrap();
    std::fs::write(original.temp.path().join("d/f"), b"hello").unwrap();
    let (_, bytes) = pack_bytes(&original.dir);
    let tar = zstd::decode_all(&bytes[..]).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let members: Vec<(Vec<u8>, u64, u64, u64, u32)> = archive
        .entries()
        .unwrap()
        .map(|m| {
            let m = m.unwrap();
            let h = m.header();
            (m.path_bytes().into_owned(), h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap())
        })
        .collect();
    assert_eq!(
        members,
        vec![(b"d/".to_vec(), 1_153_704_088, 0, 0, 0o755), (b"d/f".to_vec(), 1_153_704_088, 0, 0, 0o644)]
    );
}

#[test]
fn packing_refuses_what_the_format_cannot_carry() {
    // A FIFO: never opened for reading, so packing cannot block on it.
    let fifo = temp_dir();
    rustix::fs::mknodat(&fifo.dir, "pipe", rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
    let err = pack(&fifo.dir, &mut Vec::new()).unwrap_err();
    assert!(matches!(&err, ArchiveError::Unsupported { path, kind: "FIFO" } if path == "pipe"), "{err:?}");

    // Symlinks that leave the entry, absolutely or by climbing.
    for (link, target) in [("abs", "/etc/passwd"), ("d/up", "../../x"), ("d/mid", "x/../../y")] {
        let entry = temp_dir();
        std::fs::create_dir(entry.temp.path().join("d")).unwrap();
        std::os::unix::fs::symlink(target, entry.temp.path().join(link)).unwrap();
        let err = pack(&entry.dir, &mut Vec::new()).unwrap_err();
        assert!(matches!(&err, ArchiveError::EscapingLink { path, .. } if path == link), "{err:?}");
    }

    // A symlink to a directory is stored as the link: its target's files
    // are not packed.
    let entry = temp_dir();
    std::fs::create_dir(entry.temp.path().join("d")).unwrap();
    std::fs::write(entry.temp.path().join("d/f"), b"x").unwrap();
    std::os::unix::fs::symlink("d", entry.temp.path().join("l")).unwrap();
    let packed = pack(&entry.dir, &mut Vec::new()).unwrap();
    assert_eq!(packed.counts, Counts { names: 3, bytes: 1 });
}

#[test]
fn a_deep_tree_is_refused_past_the_depth_limit() {
    let entry = temp_dir();
    let mut path = entry.temp.path().to_owned();
    for _ in 0..129 {
        path.push("d");
    }
    std::fs::create_dir_all(&path).unwrap();
    let err = pack(&entry.dir, &mut Vec::new()).unwrap_err();
    assert!(
        matches!(err, ArchiveError::InvalidName { reason: "the name has more than 128 components", .. }),
        "{err:?}"
    );
}
