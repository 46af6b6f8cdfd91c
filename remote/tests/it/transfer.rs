//! The transfers a fill makes: restore into an empty directory, upload
//! from an entry; neither leaves an archive behind.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use safecache::Key;
use safecache_remote::{
    ArchiveError, Counts, Namespace, Packed, Remote, TransferError, Trust, Uploaded, pack, restore, scratch_file,
    upload_entry,
};

use crate::support::{read_tree, temp_dir};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

fn remote(store: &Arc<dyn ObjectStore>) -> Remote {
    Remote::new(store.clone(), "", Namespace::new("main").unwrap(), Trust::Any).unwrap().writable(None)
}

fn key() -> Key {
    Key::new("venv/py312").unwrap()
}

fn names(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect()
}

#[test]
fn an_entry_uploaded_from_its_directory_is_restored_into_an_empty_one() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let entry = temp_dir();
    std::fs::create_dir(entry.temp.path().join("bin")).unwrap();
    std::fs::write(entry.temp.path().join("bin/tool"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("bin/tool", entry.temp.path().join("tool")).unwrap();
    let scratch = temp_dir();
    assert_eq!(block_on(upload_entry(&remote(&store), &key(), &entry.dir, &scratch.dir)).unwrap(), Uploaded::Published);
    assert_eq!(names(scratch.temp.path()), Vec::<std::ffi::OsString>::new(), "the packed archive was left behind");

    let out = temp_dir();
    let manifest = block_on(restore(&remote(&store), &key(), &out.dir)).unwrap();
    assert_eq!(manifest.counts, Counts { names: 3, bytes: 10 });
    assert_eq!(read_tree(out.temp.path()), read_tree(entry.temp.path()));
}

#[test]
fn a_restore_that_fails_is_a_miss() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let out = temp_dir();
    let err = block_on(restore(&remote(&store), &key(), &out.dir)).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(names(out.temp.path()).is_empty());

    // A manifest, signed or not, that declares fewer files than its
    // archive holds: the extraction stops at what it declares.
    let entry = temp_dir();
    std::fs::write(entry.temp.path().join("a"), b"x").unwrap();
    std::fs::write(entry.temp.path().join("b"), b"y").unwrap();
    let mut archive = Vec::new();
    let packed = pack(&entry.dir, &mut archive).unwrap();
    let lying = Packed { counts: Counts { names: 1, bytes: 2 }, ..packed };
    block_on(remote(&store).upload(&key(), &mut &archive[..], &lying)).unwrap();
    let err = block_on(restore(&remote(&store), &key(), &out.dir)).unwrap_err();
    assert!(
        matches!(err, TransferError::Archive(ArchiveError::OverDeclared { what: "names", declared: 1 })),
        "{err:?}"
    );
    assert!(!err.is_not_found());
}

#[test]
fn a_scratch_file_has_no_name() {
    use std::io::{Read, Seek, Write};
    let dir = temp_dir();
    let mut file = scratch_file(&dir.dir).unwrap();
    file.write_all(b"archive").unwrap();
    file.rewind().unwrap();
    let mut back = String::new();
    file.read_to_string(&mut back).unwrap();
    assert_eq!(back, "archive");
    assert!(names(dir.temp.path()).is_empty());
}
