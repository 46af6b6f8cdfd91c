//! Bad keys and bad cache directories are refused without changing anything.

use safecache::{Cache, Error, InvalidKey, Key, KeyRule, LockMode, Options, Wait};

use crate::support::{key, new_cache, publish, tree};

#[test]
fn bad_keys_are_rejected_naming_key_and_rule() {
    let cases: &[(&str, KeyRule)] = &[
        ("", KeyRule::Empty),
        ("/etc/passwd", KeyRule::Absolute),
        ("a\0b", KeyRule::Nul),
        ("a\\b", KeyRule::Backslash),
        ("tab\there", KeyRule::Control),
        ("a//b", KeyRule::EmptyComponent),
        ("../../home", KeyRule::DotComponent),
        ("a/./b", KeyRule::DotComponent),
        (".safecache/format", KeyRule::Reserved),
    ];
    for (key, expected) in cases {
        match Key::new(key) {
            Err(InvalidKey { key: shown, rule }) => {
                assert_eq!(rule, *expected, "{key:?}");
                let message = Key::new(key).unwrap_err().to_string();
                assert!(message.starts_with(&format!("invalid key `{shown}`: ")), "{message}");
            }
            other => panic!("{key:?} was not rejected: {other:?}"),
        }
    }
    assert!(matches!(Key::new(&"k".repeat(300)), Err(InvalidKey { rule: KeyRule::TooLong { len: 300 }, .. })));
}

#[test]
fn a_non_empty_dir_without_marker_is_refused_until_init() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("thesis.tex"), "years of work").unwrap();
    let before = tree(&home);
    let err = Cache::open_ambient(&home, Options::default()).unwrap_err();
    assert!(matches!(err, Error::NotACache { .. }), "{err:?}");
    assert!(err.to_string().contains("cargo safecache init"), "{err}");
    assert_eq!(tree(&home), before, "nothing was created");

    let cache = Cache::init_ambient(&home, Options::default()).unwrap();
    let entries = cache.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].key.as_ref().map(Key::as_str), Some("thesis.tex"));
    // Once adopted, it opens normally.
    Cache::open_ambient(&home, Options::default()).unwrap();
}

#[test]
fn an_unknown_format_is_refused_without_touching_the_cache() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    std::fs::write(cache.path().join(".safecache/format"), "safecache-format 99\n").unwrap();
    let before = tree(cache.path());
    let err = Cache::open_ambient(cache.path(), Options::default()).unwrap_err();
    match &err {
        Error::UnknownFormat { found, supported, .. } => {
            assert_eq!((found.as_str(), *supported), ("safecache-format 99", safecache::FORMAT_VERSION));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(tree(cache.path()), before);
}

#[test]
fn a_file_is_not_a_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = Cache::open_ambient(&file, Options::default()).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn missing_and_empty_dirs_become_caches_and_concurrent_opens_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("a/b/c");
    Cache::open_ambient(&missing, Options::default()).unwrap();
    assert!(missing.join(".safecache/format").is_file());

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let empty = empty.clone();
            std::thread::spawn(move || Cache::open_ambient(&empty, Options::default()).map(|_| ()))
        })
        .collect();
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
    let mut names: Vec<_> = std::fs::read_dir(&empty).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, vec![".safecache", "CACHEDIR.TAG"], "one marker and its tag, no staging dirs left");
}

#[test]
fn nested_under_a_shared_lease_exclusive_work_fails_instead_of_deadlocking() {
    let (_tmp, cache) = new_cache();
    let nested =
        Cache::open_ambient(cache.path(), Options { inherited_lease: Some(LockMode::Shared), ..Options::default() })
            .unwrap();
    let _parent = cache.lease(LockMode::Shared, Wait::NoWait).unwrap();
    let err = nested.clean(Wait::Forever).unwrap_err();
    assert!(matches!(err, Error::LeaseConflict), "{err:?}");
    assert!(err.is_busy());
    publish(&nested, "dep", "shared work still runs");
}

#[test]
fn an_enormous_timeout_means_forever_and_budgets_are_shared() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    let huge = Wait::Timeout(std::time::Duration::MAX);
    assert!(cache.pin(&key("dep"), huge).unwrap().is_some());
    assert!(cache.remove(&key("dep"), huge).unwrap());
    // One budget for the whole operation: a fill blocked on the lease does
    // not get the timeout again for the entry lock.
    let _user = cache.lease(LockMode::Exclusive, Wait::NoWait).unwrap();
    let start = std::time::Instant::now();
    let err = cache
        .get_or_fill(&key("dep"), Wait::Timeout(std::time::Duration::from_millis(200)), |_| std::io::Result::Ok(()))
        .unwrap_err();
    assert!(
        err.to_string().starts_with("timed out after 200ms waiting for the shared lock on the cache lease"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}
