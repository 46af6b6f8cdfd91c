//! The remote tier composed with the core's fill, as the CLI will compose
//! them: a restore inside `get_or_fill` publishes by the fill's own rename
//! and verifies good; a failed one leaves no entry.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use safecache::{Cache, Key, Options, VerifyState, Wait};
use safecache_remote::{Namespace, Remote, SecretKey, Trust, Uploaded, restore, upload_entry};

use crate::support::{read_tree, temp_dir};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

/// A fill that restores `key` from `remote`, as `run --key` will on a
/// local miss.
fn fill_from(cache: &Cache, remote: &Remote, key: &Key) -> Result<safecache::Filled, safecache::Error> {
    cache.get_or_fill(key, Wait::NoWait, |fill| {
        let out = fill.open_dir()?;
        block_on(restore(remote, key, &out)).map(drop).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
    })
}

#[test]
fn a_restore_inside_a_fill_publishes_an_entry_that_verifies_good() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let signer = SecretKey::from_seed(&[4; 32]);
    let trust = Trust::Keys([signer.public_key()].into());
    let ns = Namespace::new("main").unwrap();
    let writer = Remote::new(store.clone(), "", ns.clone(), trust.clone()).unwrap().writable(Some(signer));
    let reader = Remote::new(store.clone(), "", ns, trust).unwrap();
    let key = Key::new("target/debug").unwrap();

    let source = temp_dir();
    std::fs::create_dir(source.temp.path().join("deps")).unwrap();
    std::fs::write(source.temp.path().join("deps/libx.rlib"), b"rlib").unwrap();
    std::os::unix::fs::symlink("deps/libx.rlib", source.temp.path().join("libx.rlib")).unwrap();
    let scratch = temp_dir();
    assert_eq!(block_on(upload_entry(&writer, &key, &source.dir, &scratch.dir)).unwrap(), Uploaded::Published);

    let root = tempfile::tempdir().unwrap();
    let cache = Cache::init_ambient(root.path().join("cache"), Options::default()).unwrap();
    let filled = fill_from(&cache, &reader, &key).unwrap();
    assert!(filled.filled);
    assert_eq!(read_tree(filled.entry.path()), read_tree(source.temp.path()));
    let report = cache.verify(Some(std::slice::from_ref(&key)), false, Wait::NoWait).unwrap();
    assert!(matches!(report.entries[..], [ref v] if v.state == VerifyState::Good), "{:?}", report.entries);
}

#[test]
fn a_failed_restore_inside_a_fill_leaves_no_entry() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let ns = Namespace::new("main").unwrap();
    let remote = Remote::new(store.clone(), "", ns, Trust::Any).unwrap().writable(None);
    let key = Key::new("k").unwrap();
    let source = temp_dir();
    std::fs::write(source.temp.path().join("f"), vec![7u8; 100_000]).unwrap();
    let scratch = temp_dir();
    block_on(upload_entry(&remote, &key, &source.dir, &scratch.dir)).unwrap();
    // The archive replaced by one of the right size but other bytes.
    let listing = block_on(async { futures::StreamExt::collect::<Vec<_>>(store.list(None)).await });
    let archive = listing.into_iter().map(|m| m.unwrap()).find(|m| m.location.as_ref().contains("/archives/")).unwrap();
    let mut bytes = block_on(async { store.get(&archive.location).await.unwrap().bytes().await.unwrap() }).to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    block_on(store.put(&archive.location, PutPayload::from(bytes))).unwrap();

    let root = tempfile::tempdir().unwrap();
    let cache = Cache::init_ambient(root.path().join("cache"), Options::default()).unwrap();
    assert!(fill_from(&cache, &remote, &key).is_err());
    assert!(cache.entries().unwrap().is_empty());
    let mut names: Vec<String> = std::fs::read_dir(root.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".safecache", "CACHEDIR.TAG"]);
    // A miss is a miss: the key's command runs and publishes as usual.
    let filled = cache.get_or_fill(&key, Wait::NoWait, |fill| std::fs::write(fill.path().join("f"), b"built")).unwrap();
    assert!(filled.filled);
}
