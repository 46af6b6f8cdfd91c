//! The stats file of an earlier safecache (eight slots: the magic, the time
//! counting started, six counters) is grown to this one's length when a
//! command counts into it: its counts are kept, and the remote tier's
//! counters, which it had no slots for, count from zero.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use safecache::{Cache, Counter, Options};

fn open(dir: &Path) -> Cache {
    Cache::open_ambient(dir, Options::default()).unwrap()
}

#[test]
fn an_earlier_shorter_stats_file_is_grown_keeping_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let since = 1_795_000_000u64;
    // hits, misses, fills, failed fills, waits, bytes filled.
    let old = [u64::from_be_bytes(*b"safestat"), since, 40, 10, 9, 1, 7, 4096];
    let bytes: Vec<u8> = old.iter().flat_map(|n| n.to_ne_bytes()).collect();
    let file = dir.path().join(".safecache/stats");
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64);

    let cache = open(dir.path());
    let before = cache.stats().unwrap();
    assert_eq!(before.since, Some(UNIX_EPOCH + Duration::from_secs(since)));
    assert_eq!(
        (before.hits, before.misses, before.fills, before.failed_fills, before.waits, before.bytes_filled),
        (40, 10, 9, 1, 7, 4096)
    );
    assert_eq!((before.remote_hits, before.uploads, before.remote_millis), (0, 0, 0));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 * (2 + Counter::ALL.len() as u64), "grown");

    cache.count(Counter::Hits, 1);
    cache.count(Counter::RemoteHits, 2);
    cache.count(Counter::BytesDownloaded, 100);
    cache.count(Counter::Uploads, 1);
    cache.count(Counter::RemoteMillis, 5);
    // Another handle (another process) maps the grown file and sees it all.
    let after = open(dir.path()).stats().unwrap();
    assert_eq!((after.hits, after.bytes_filled), (41, 4096));
    assert_eq!((after.remote_hits, after.bytes_downloaded, after.uploads, after.remote_millis), (2, 100, 1, 5));
    assert_eq!(after.since, before.since);
    // The old slots are where they were.
    let grown = std::fs::read(&file).unwrap();
    assert_eq!(&grown[..16], &bytes[..16]);
    assert_eq!(u64::from_ne_bytes(grown[16..24].try_into().unwrap()), 41);
}

#[test]
fn a_stats_file_shorter_than_any_safecache_wrote_is_refused_and_reset_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let file = dir.path().join(".safecache/stats");
    std::fs::write(&file, [0u8; 24]).unwrap();
    let cache = open(dir.path());
    cache.count(Counter::RemoteHits, 1);
    assert!(cache.stats().is_err(), "not counted into, and named");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 24, "left as it was");
    cache.reset_stats().unwrap();
    let fresh = open(dir.path());
    fresh.count(Counter::RemoteHits, 1);
    assert_eq!(fresh.stats().unwrap().remote_hits, 1);
}
