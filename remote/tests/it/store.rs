//! The store layer over object_store's in-memory and local-file stores:
//! uploads publish once, with the manifest last; fetches take nothing that
//! does not match; every injected fault is an error, never a half-made
//! entry.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use safecache::Key;
use safecache_remote::faults::{Fault, Faulty, Gate};
use safecache_remote::{
    Checked, ManifestError, Namespace, Packed, Remote, SecretKey, SignedManifest, StoreError, Trust, Uploaded, extract,
    pack,
};

use crate::support::{TempDir, read_tree, temp_dir};

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

fn key() -> Key {
    Key::new("git/serde").unwrap()
}

fn main_ns() -> Namespace {
    Namespace::new("main").unwrap()
}

/// An entry holding `files`, packed.
struct Entry {
    dir: TempDir,
    packed: Packed,
    archive: Vec<u8>,
}

fn entry(files: &[(&str, &[u8])]) -> Entry {
    let dir = temp_dir();
    for (name, content) in files {
        let path = dir.temp.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let mut archive = Vec::new();
    let packed = pack(&dir.dir, &mut archive).unwrap();
    Entry { dir, packed, archive }
}

fn small() -> Entry {
    entry(&[("Cargo.toml", b"[package]\n"), ("src/lib.rs", b"pub fn f() {}\n")])
}

fn other() -> Entry {
    entry(&[("Cargo.toml", b"[package] # another\n")])
}

fn reader(store: Arc<dyn ObjectStore>, trust: Trust) -> Remote {
    Remote::new(store, "cache", main_ns(), trust).unwrap()
}

fn writer(store: Arc<dyn ObjectStore>, signer: Option<SecretKey>) -> Remote {
    reader(store, Trust::Any).writable(signer)
}

fn upload(remote: &Remote, entry: &Entry) -> Result<Uploaded, StoreError> {
    block_on(remote.upload(&key(), &mut &entry.archive[..], &entry.packed))
}

fn fetch(remote: &Remote) -> Result<Vec<u8>, StoreError> {
    let mut into = Vec::new();
    let manifest = block_on(remote.fetch(&key(), &mut into))?;
    assert_eq!(manifest.archive.size, into.len() as u64);
    Ok(into)
}

fn trusting(key: &SecretKey) -> Trust {
    Trust::Keys(BTreeSet::from([key.public_key()]))
}

fn signer() -> SecretKey {
    SecretKey::from_seed(&[1; 32])
}

/// Every store the tests run against: in memory, and a `file://` directory.
fn stores() -> Vec<(Arc<dyn ObjectStore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    vec![(Arc::new(InMemory::new()), None), (Arc::new(local), Some(dir))]
}

#[test]
fn an_uploaded_entry_is_fetched_and_extracted_whole() {
    for (store, _dir) in stores() {
        let entry = small();
        assert_eq!(upload(&writer(store.clone(), Some(signer())), &entry).unwrap(), Uploaded::Published);
        let remote = reader(store.clone(), trusting(&signer()));
        let mut archive = Vec::new();
        let manifest = block_on(remote.fetch(&key(), &mut archive)).unwrap();
        assert_eq!(archive, entry.archive);
        assert_eq!(manifest.counts, entry.packed.counts);
        let copy = temp_dir();
        extract(&archive[..], manifest.counts, &copy.dir).unwrap();
        assert_eq!(read_tree(copy.temp.path()), read_tree(entry.dir.temp.path()));
        // The objects are where docs/REMOTE.md says.
        let names: BTreeSet<String> = block_on(async { futures::StreamExt::collect::<Vec<_>>(store.list(None)).await })
            .into_iter()
            .map(|meta| meta.unwrap().location.to_string())
            .collect();
        let hash = entry.packed.blake3.to_hex();
        assert_eq!(
            names,
            BTreeSet::from([
                format!("cache/main/v1/archives/{hash}.tar.zst"),
                "cache/main/v1/manifests/git+serde".to_owned()
            ])
        );
    }
}

#[test]
fn a_large_archive_goes_up_in_parts() {
    let mut content = vec![0u8; safecache_remote::PART_SIZE * 2 + 12345];
    blake3::Hasher::new().finalize_xof().fill(&mut content);
    let entry = entry(&[("big", &content)]);
    assert!(entry.packed.size > 2 * safecache_remote::PART_SIZE as u64, "{}", entry.packed.size);
    for (store, _dir) in stores() {
        let faulty = Arc::new(Faulty::new(store));
        assert_eq!(upload(&writer(faulty.clone(), None), &entry).unwrap(), Uploaded::Published);
        assert!(faulty.calls().iter().any(|c| c.op == "put_multipart"), "{:?}", faulty.calls());
        assert_eq!(fetch(&reader(faulty, Trust::Any)).unwrap(), entry.archive);
    }
}

#[test]
fn the_first_writer_of_a_key_wins() {
    for (store, _dir) in stores() {
        let (first, second) = (small(), other());
        assert_eq!(upload(&writer(store.clone(), None), &first).unwrap(), Uploaded::Published);
        assert_eq!(upload(&writer(store.clone(), None), &second).unwrap(), Uploaded::AlreadyThere);
        assert_eq!(fetch(&reader(store, Trust::Any)).unwrap(), first.archive);
    }
}

#[test]
fn the_manifest_is_the_commit_point_and_a_writer_that_lost_the_race_publishes_nothing() {
    for (store, _dir) in stores() {
        let faulty = Arc::new(Faulty::new(store));
        // The first writer's calls: 1 head the manifest, 2 put the archive,
        // 3 put the manifest, which waits at the gate.
        let gate = Arc::new(Gate::default());
        faulty.plan(3, Fault::Hold(gate.clone()));
        let (slow, fast) = (small(), other());
        let slow_writer = writer(faulty.clone(), None);
        let (slow_result, fast_result) = block_on(async {
            let (slow_key, mut slow_archive) = (key(), &slow.archive[..]);
            let slow_upload = slow_writer.upload(&slow_key, &mut slow_archive, &slow.packed);
            let meanwhile = async {
                gate.reached().await;
                // Its archive is up, its manifest is not: a miss.
                let mut into = Vec::new();
                let miss = reader(faulty.clone(), Trust::Any).fetch(&key(), &mut into).await;
                assert!(matches!(miss, Err(StoreError::NotFound { .. })), "{miss:?}");
                let fast_result =
                    writer(faulty.clone(), None).upload(&key(), &mut &fast.archive[..], &fast.packed).await;
                gate.open();
                fast_result
            };
            tokio::join!(slow_upload, meanwhile)
        });
        assert_eq!(fast_result.unwrap(), Uploaded::Published);
        assert_eq!(slow_result.unwrap(), Uploaded::AlreadyThere);
        assert_eq!(fetch(&reader(faulty, Trust::Any)).unwrap(), fast.archive);
    }
}

#[test]
fn writers_racing_for_one_key_publish_exactly_once() {
    // Each thread is a machine of its own: its own store client on the
    // same directory, its own runtime, its own entry.
    let dir = tempfile::tempdir().unwrap();
    let writers = 8;
    let barrier = Arc::new(Barrier::new(writers));
    let results: Vec<Uploaded> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let (barrier, dir) = (barrier.clone(), dir.path().to_owned());
                scope.spawn(move || {
                    let content = format!("writer {i}\n");
                    let entry = entry(&[("out", content.as_bytes())]);
                    let store = Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap());
                    let remote = writer(store, Some(signer()));
                    barrier.wait();
                    upload(&remote, &entry).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| **r == Uploaded::Published).count(), 1, "{results:?}");
    let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
    let archive = fetch(&reader(store, trusting(&signer()))).unwrap();
    let copy = temp_dir();
    extract(&archive[..], safecache_remote::Counts { names: 1, bytes: 9 }, &copy.dir).unwrap();
}

/// Replaces the object `path` of `store` with `bytes`.
fn overwrite(store: &Arc<dyn ObjectStore>, path: &object_store::path::Path, bytes: Vec<u8>) {
    block_on(store.put(path, PutPayload::from(bytes))).unwrap();
}

/// `small()` uploaded to `store`, signed, and its writer.
fn uploaded(store: &Arc<dyn ObjectStore>) -> (Entry, Remote) {
    let entry = small();
    let remote = writer(store.clone(), Some(signer()));
    assert_eq!(upload(&remote, &entry).unwrap(), Uploaded::Published);
    (entry, remote)
}

#[test]
fn a_tampered_truncated_or_oversized_archive_is_a_miss() {
    for (store, _dir) in stores() {
        let (entry, remote) = uploaded(&store);
        let path = remote.archive_path(&entry.packed.blake3);
        let mut flipped = entry.archive.clone();
        flipped[entry.archive.len() / 2] ^= 1;
        let truncated = entry.archive[..entry.archive.len() - 1].to_vec();
        let oversized = [&entry.archive[..], b"x"].concat();
        for (bytes, expected) in [(flipped, "hash"), (truncated, "size"), (oversized, "size"), (Vec::new(), "size")] {
            overwrite(&store, &path, bytes);
            let err = fetch(&reader(store.clone(), trusting(&signer()))).unwrap_err();
            match (expected, &err) {
                ("hash", StoreError::ArchiveHash { .. }) | ("size", StoreError::ArchiveSize { .. }) => {}
                _ => panic!("expected a wrong {expected}, got {err:?}"),
            }
        }
        block_on(store.delete(&path)).unwrap();
        let err = fetch(&reader(store.clone(), trusting(&signer()))).unwrap_err();
        assert!(matches!(err, StoreError::Store { op: "get", .. }), "{err:?}");
    }
}

#[test]
fn a_tampered_or_wrongly_signed_manifest_is_a_miss() {
    for (store, _dir) in stores() {
        let (_, remote) = uploaded(&store);
        let stranger = SecretKey::from_seed(&[2; 32]);
        let refused = |trust: Trust| match fetch(&reader(store.clone(), trust)) {
            Err(StoreError::Manifest { source, .. }) => source,
            other => panic!("expected a refused manifest, got {other:?}"),
        };
        assert!(matches!(refused(trusting(&stranger)), ManifestError::Untrusted));
        assert!(fetch(&reader(store.clone(), Trust::Any)).is_ok());

        let path = remote.manifest_path(&key());
        let good = block_on(async { store.get(&path).await.unwrap().bytes().await.unwrap() }).to_vec();
        let mut signed = SignedManifest::parse(&good).unwrap();
        signed.manifest.counts.bytes += 1;
        overwrite(&store, &path, signed.to_bytes());
        assert!(matches!(refused(trusting(&signer())), ManifestError::BadSignature(_)));

        // Another key's manifest, signed, moved to this key's name.
        let mut moved = SignedManifest::parse(&good).unwrap().manifest;
        moved.key = Key::new("git/other").unwrap();
        overwrite(&store, &path, moved.sign(&[&signer()]).to_bytes());
        assert!(matches!(refused(trusting(&signer())), ManifestError::Mismatch { .. }));

        // Unsigned, when keys are configured.
        overwrite(&store, &path, SignedManifest::parse(&good).unwrap().manifest.sign(&[]).to_bytes());
        assert!(matches!(refused(trusting(&signer())), ManifestError::Untrusted));

        overwrite(&store, &path, vec![b' '; 100_000]);
        assert!(matches!(refused(Trust::Any), ManifestError::TooLong));
        overwrite(&store, &path, good[..good.len() / 2].to_vec());
        assert!(matches!(refused(Trust::Any), ManifestError::Malformed(_)));
    }
}

#[test]
fn a_read_only_remote_makes_no_write_calls() {
    let faulty = Arc::new(Faulty::new(InMemory::new()));
    let remote = reader(faulty.clone(), Trust::Any);
    assert!(matches!(upload(&remote, &small()), Err(StoreError::ReadOnly)));
    assert!(faulty.calls().is_empty(), "{:?}", faulty.calls());
    assert!(fetch(&remote).unwrap_err().is_not_found());
    assert!(faulty.calls().iter().all(|c| !c.writes()), "{:?}", faulty.calls());
}

#[test]
fn a_failure_at_any_call_of_an_upload_publishes_nothing() {
    for n in 1..=3 {
        for (store, _dir) in stores() {
            let faulty = Arc::new(Faulty::new(store));
            faulty.plan(n, Fault::Fail);
            let err = upload(&writer(faulty.clone(), None), &small()).unwrap_err();
            assert!(matches!(err, StoreError::Store { .. }), "call {n}: {err:?}");
            assert!(fetch(&reader(faulty.clone(), Trust::Any)).unwrap_err().is_not_found(), "call {n}");
            // A later upload is not hindered by what the failed one left.
            assert_eq!(upload(&writer(faulty.clone(), None), &small()).unwrap(), Uploaded::Published);
            assert_eq!(fetch(&reader(faulty, Trust::Any)).unwrap(), small().archive);
        }
    }
}

#[test]
fn a_failure_at_any_call_of_a_fetch_is_a_miss() {
    for (store, _dir) in stores() {
        let entry = small();
        upload(&writer(store.clone(), None), &entry).unwrap();
        let faulty = Arc::new(Faulty::new(store));
        for fault in [Fault::Fail, Fault::BreakAfter(0), Fault::BreakAfter(entry.packed.size / 2)] {
            for n in 1..=2 {
                faulty.reset();
                faulty.plan(n, fault.clone());
                let err = fetch(&reader(faulty.clone(), Trust::Any)).unwrap_err();
                assert!(matches!(err, StoreError::Store { op: "get", .. }), "call {n}: {err:?}");
            }
        }
        faulty.reset();
        assert_eq!(fetch(&reader(faulty, Trust::Any)).unwrap(), entry.archive);
    }
}

#[test]
fn an_archive_that_changed_since_it_was_packed_is_not_published() {
    let entry = small();
    let mut changed = entry.archive.clone();
    changed[10] ^= 1;
    let longer = [&entry.archive[..], b"x"].concat();
    for bytes in [changed, entry.archive[..entry.archive.len() - 1].to_vec(), longer] {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let err = block_on(writer(store.clone(), None).upload(&key(), &mut &bytes[..], &entry.packed)).unwrap_err();
        assert!(matches!(err, StoreError::LocalChanged), "{err:?}");
        assert!(fetch(&reader(store, Trust::Any)).unwrap_err().is_not_found());
    }
}

#[test]
fn a_check_writes_a_probe_twice_and_leaves_nothing() {
    for (store, _dir) in stores() {
        let faulty = Arc::new(Faulty::new(store.clone()));
        let checked = block_on(writer(faulty.clone(), None).check()).unwrap();
        assert_eq!(checked, Checked { wrote: true, probe_left: None });
        let ops: Vec<&str> = faulty.calls().iter().map(|c| c.op).collect();
        assert_eq!(ops, ["get", "put", "put", "get", "delete"]);
        let left = block_on(async { futures::StreamExt::collect::<Vec<_>>(store.list(None)).await });
        assert!(left.is_empty(), "{left:?}");

        // Read-only: one read, no write.
        faulty.reset();
        let checked = block_on(reader(faulty.clone(), Trust::Any).check()).unwrap();
        assert_eq!(checked, Checked { wrote: false, probe_left: None });
        assert!(faulty.calls().iter().all(|c| !c.writes()), "{:?}", faulty.calls());

        // A probe that cannot be deleted is reported, not an error.
        faulty.reset();
        faulty.plan(5, Fault::Fail);
        let checked = block_on(writer(faulty.clone(), None).check()).unwrap();
        assert!(checked.probe_left.is_some(), "{checked:?}");
    }
}

#[test]
fn a_store_that_ignores_create_only_puts_fails_the_check() {
    let faulty = Arc::new(Faulty::new(InMemory::new()));
    faulty.ignore_create(true);
    let err = block_on(writer(faulty.clone(), None).check()).unwrap_err();
    assert!(matches!(err, StoreError::CreateNotExclusive { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot hold a remote cache safely"), "{err}");
    // An unreachable store fails it too.
    faulty.reset();
    faulty.plan(1, Fault::Fail);
    let err = block_on(reader(faulty, Trust::Any).check()).unwrap_err();
    assert!(matches!(err, StoreError::Store { op: "head", .. }), "{err:?}");
}

#[test]
fn a_listing_names_the_keys_with_manifests_and_nothing_else() {
    for (store, _dir) in stores() {
        let remote = writer(store.clone(), None);
        let entry = small();
        for key in ["git/serde", "Lib", "a b"] {
            block_on(remote.upload(&Key::new(key).unwrap(), &mut &entry.archive[..], &entry.packed)).unwrap();
        }
        block_on(remote.check()).unwrap();
        // Another namespace's key, and objects no key is stored as.
        let pr = Remote::new(store.clone(), "cache", Namespace::new("pr").unwrap(), Trust::Any).unwrap().writable(None);
        block_on(pr.upload(&Key::new("pr-only").unwrap(), &mut &entry.archive[..], &entry.packed)).unwrap();
        for stray in ["cache/main/v1/manifests/@@61", "cache/main/v1/manifests/x/y"] {
            block_on(store.put(&object_store::path::Path::from(stray), PutPayload::from_static(b"{}"))).unwrap();
        }
        let listing = block_on(remote.list()).unwrap();
        let keys: Vec<&str> = listing.keys.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["Lib", "a b", "git/serde"]);
        assert!(listing.keys.iter().all(|l| l.manifest_size > 100 && l.modified_unix > 1_700_000_000));
        assert_eq!(listing.foreign, ["cache/main/v1/manifests/@@61", "cache/main/v1/manifests/x/y"]);
    }
}
