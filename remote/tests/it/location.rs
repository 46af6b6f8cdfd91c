//! Remote URLs and their options.

use safecache::Key;
use safecache_remote::{LocationError, Namespace, Remote, Trust, Uploaded, open_store, upload_entry};

use crate::support::temp_dir;

fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn a_file_url_names_a_directory_and_its_objects_go_below_it() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/shared/cache", root.path().display());
    let (store, prefix) = open_store(&url, &[]).unwrap();
    assert_eq!(prefix, format!("{}/shared/cache", root.path().display()).trim_start_matches('/'));
    let remote = Remote::new(store, &prefix, Namespace::new("ci").unwrap(), Trust::Any).unwrap().writable(None);
    let (entry, scratch) = (temp_dir(), temp_dir());
    std::fs::write(entry.temp.path().join("f"), b"x").unwrap();
    let key = Key::new("k").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(upload_entry(&remote, &key, &entry.dir, &scratch.dir)).unwrap(), Uploaded::Published);
    assert!(root.path().join("shared/cache/ci/v1/manifests/k").is_file());
}

#[test]
fn unknown_options_are_errors_not_ignored() {
    let err = open_store("file:///tmp/x", &opts(&[("aws_endpoint_url", "http://127.0.0.1:1")])).unwrap_err();
    assert!(
        matches!(&err, LocationError::UnknownOption { backend: "file", key } if key == "aws_endpoint_url"),
        "{err:?}"
    );
    let err = open_store("memory://", &opts(&[("x", "y")])).unwrap_err();
    assert!(matches!(err, LocationError::UnknownOption { backend: "memory", .. }), "{err:?}");
}

#[test]
fn urls_of_no_store_are_refused() {
    for url in ["not a url", "ftp://host/x", "/tmp/x"] {
        let err = open_store(url, &[]).unwrap_err();
        assert!(matches!(err, LocationError::InvalidUrl { .. } | LocationError::Unsupported(_)), "{url}: {err:?}");
    }
}

#[cfg(feature = "aws")]
#[test]
fn s3_options_are_checked_by_name_in_any_case() {
    let good = opts(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("aws_region", "us-east-1"),
    ]);
    let (_, prefix) = open_store("s3://bucket/some/prefix", &good).unwrap();
    assert_eq!(prefix, "some/prefix");
    let err = open_store("s3://bucket/p", &opts(&[("aws_endpoit_url", "http://x")])).unwrap_err();
    assert!(matches!(&err, LocationError::UnknownOption { backend: "S3", key } if key == "aws_endpoit_url"), "{err:?}");
}

#[cfg(not(feature = "aws"))]
#[test]
fn s3_without_the_aws_feature_says_how_to_get_it() {
    let err = open_store("s3://bucket/p", &[]).unwrap_err();
    assert!(matches!(err, LocationError::NotBuilt { feature: "aws", .. }), "{err:?}");
    assert!(err.to_string().contains("`aws` feature"), "{err}");
}

/// The environment's variables of the backend's prefix are options when
/// object_store knows them and are left alone when it does not; written
/// options must be known and override the environment's.
#[cfg(feature = "aws")]
#[test]
fn environment_variables_are_taken_when_known_and_written_options_win() {
    use safecache_remote::{open_store_from, store_spec};
    let env = opts(&[
        ("AWS_PROFILE", "dev"),
        ("AWS_PAGER", ""),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("HOME", "/root"),
    ]);
    let spec = store_spec("s3://bucket/p", &[], env.clone()).unwrap();
    assert!(format!("{spec:?}").contains("eu-west-1"), "{spec:?}");
    assert!(!format!("{spec:?}").contains("dev"), "AWS_PROFILE is no option: {spec:?}");
    let written = opts(&[("aws_region", "us-east-2")]);
    let spec = store_spec("s3://bucket/p", &written, env.clone()).unwrap();
    assert!(format!("{spec:?}").contains("us-east-2") && !format!("{spec:?}").contains("eu-west-1"), "{spec:?}");
    // A written option that no backend knows is still an error.
    let err = store_spec("s3://bucket/p", &opts(&[("aws_profile", "dev")]), env.clone()).unwrap_err();
    assert!(matches!(err, LocationError::UnknownOption { .. }), "{err:?}");
    // The file store takes no options and ignores the environment.
    assert!(open_store_from("file:///tmp/x", &[], env).is_ok());
}

/// An endpoint that is no http(s) URL is refused when the store is
/// checked: object_store accepts it and panics at the first request.
#[cfg(feature = "aws")]
#[test]
fn an_endpoint_that_is_no_url_is_refused_before_any_request() {
    use safecache_remote::store_spec;
    for bad in ["::bad", "127.0.0.1:9000", "ftp://host", "http://"] {
        let err = store_spec("s3://bucket/p", &[], opts(&[("AWS_ENDPOINT_URL", bad)])).unwrap_err();
        assert!(matches!(err, LocationError::InvalidEndpoint { .. }), "{bad}: {err:?}");
        let err = store_spec("s3://bucket/p", &opts(&[("aws_endpoint", bad)]), []).unwrap_err();
        assert!(matches!(err, LocationError::InvalidEndpoint { .. }), "{bad}: {err:?}");
    }
    assert!(store_spec("s3://bucket/p", &[], opts(&[("AWS_ENDPOINT_URL", "https://s3.example:9000")])).is_ok());
}
