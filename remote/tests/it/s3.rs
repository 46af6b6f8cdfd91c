//! The store layer against a real S3 server: moto in server mode, which the
//! gate starts (docs/REMOTE.md, "Tests against S3") and names in
//! `SAFECACHE_TEST_S3_ENDPOINT`. Compiled with the `aws` feature only; with
//! it, a missing server is a failure, not a skip.

use std::io::{Read, Write};
use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use safecache::Key;
use safecache_remote::{Namespace, Remote, SecretKey, StoreError, Trust, Uploaded, open_store, restore, upload_entry};

use crate::support::{read_tree, temp_dir};

fn endpoint() -> String {
    std::env::var("SAFECACHE_TEST_S3_ENDPOINT")
        .expect("SAFECACHE_TEST_S3_ENDPOINT names the S3 server the aws tests use (the gate starts moto)")
}

/// A new bucket on the server, named at random so runs never share one.
fn bucket() -> String {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).unwrap();
    let name = format!("safecache-{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let endpoint = endpoint();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "creating bucket {name}: {response}");
    name
}

fn s3(bucket: &str) -> (Arc<dyn ObjectStore>, String) {
    s3_with(bucket, &[])
}

fn s3_with(bucket: &str, extra: &[(&str, &str)]) -> (Arc<dyn ObjectStore>, String) {
    let mut options: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    options.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    open_store(&format!("s3://{bucket}/team/cache"), &options).unwrap()
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

#[test]
fn s3_refuses_a_second_create() {
    let (store, prefix) = s3(&bucket());
    let path = object_store::path::Path::from(format!("{prefix}/probe"));
    let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
    block_on(store.put_opts(&path, PutPayload::from_static(b"first"), create())).unwrap();
    let err = block_on(store.put_opts(&path, PutPayload::from_static(b"second"), create())).unwrap_err();
    assert!(matches!(err, object_store::Error::AlreadyExists { .. }), "{err:?}");
    let kept = block_on(async { store.get(&path).await.unwrap().bytes().await.unwrap() });
    assert_eq!(&kept[..], b"first");
}

#[test]
fn an_entry_goes_through_s3_and_comes_back_whole() {
    let (store, prefix) = s3(&bucket());
    let signer = SecretKey::from_seed(&[1; 32]);
    let namespace = Namespace::new("main").unwrap();
    let trust = Trust::Keys([signer.public_key()].into());
    let writer = Remote::new(store.clone(), &prefix, namespace.clone(), trust.clone()).unwrap().writable(Some(signer));
    let reader = Remote::new(store.clone(), &prefix, namespace, trust).unwrap();
    let key = Key::new("git/serde").unwrap();

    // Large enough to go up in parts.
    let entry = temp_dir();
    let mut big = vec![0u8; safecache_remote::PART_SIZE + 4096];
    blake3::Hasher::new().finalize_xof().fill(&mut big);
    std::fs::write(entry.temp.path().join("big"), &big).unwrap();
    std::fs::write(entry.temp.path().join("small"), b"x").unwrap();
    let scratch = temp_dir();
    assert_eq!(block_on(upload_entry(&writer, &key, &entry.dir, &scratch.dir)).unwrap(), Uploaded::Published);
    assert_eq!(block_on(upload_entry(&writer, &key, &entry.dir, &scratch.dir)).unwrap(), Uploaded::AlreadyThere);

    let out = temp_dir();
    let manifest = block_on(restore(&reader, &key, &out.dir)).unwrap();
    assert_eq!(read_tree(out.temp.path()), read_tree(entry.temp.path()));

    // A tampered archive is a miss.
    let archive = reader.archive_path(&manifest.archive.blake3);
    block_on(store.put(&archive, PutPayload::from_static(b"not the archive"))).unwrap();
    let mut into = Vec::new();
    let err = block_on(reader.fetch(&key, &mut into)).unwrap_err();
    assert!(matches!(err, StoreError::ArchiveSize { .. }), "{err:?}");
    let missing = Key::new("git/missing").unwrap();
    assert!(block_on(reader.fetch(&missing, &mut into)).unwrap_err().is_not_found());
}

#[test]
fn a_check_passes_on_s3_and_fails_without_conditional_puts() {
    let bucket = bucket();
    let namespace = Namespace::new("main").unwrap();
    let (store, prefix) = s3(&bucket);
    let remote = Remote::new(store, &prefix, namespace.clone(), Trust::Any).unwrap().writable(None);
    let checked = block_on(remote.check()).unwrap();
    assert!(checked.wrote && checked.probe_left.is_none(), "{checked:?}");

    // object_store can be told not to send If-None-Match: a create-only
    // put is then refused by the client, and the check fails.
    let (store, prefix) = s3_with(&bucket, &[("aws_conditional_put", "disabled")]);
    let remote = Remote::new(store, &prefix, namespace, Trust::Any).unwrap().writable(None);
    let err = block_on(remote.check()).unwrap_err();
    assert!(matches!(err, StoreError::Store { op: "put", .. }), "{err:?}");
}
