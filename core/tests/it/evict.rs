//! Eviction through the library: `gc_with` limits, a pin held by another
//! process, dry runs and `auto_gc`'s interval. Stamps are plain files whose
//! mtimes are set with `touch -d`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use safecache::{AutoGc, Cache, GcOptions, Limits, Options, SkipReason, Wait};

use crate::support::{Child, key, names, new_cache, publish, tree};

/// Publishes `name` and returns its new last-use stamp.
fn publish_stamped(cache: &Cache, name: &str) -> PathBuf {
    let used = cache.path().join(".safecache/used");
    let before: BTreeSet<String> = names(&used).into_iter().collect();
    publish(cache, name, "0123456789");
    let new: Vec<String> = names(&used).into_iter().filter(|n| !before.contains(n)).collect();
    assert_eq!(new.len(), 1, "{new:?}");
    used.join(&new[0])
}

fn set_time(path: &Path, when: &str) {
    assert!(Command::new("touch").arg("-d").arg(when).arg(path).status().unwrap().success());
}

fn evicted(report: &safecache::GcReport) -> Vec<String> {
    report.evict.evicted.iter().map(|v| v.stored_name.clone()).collect()
}

#[test]
fn gc_with_evicts_lru_first_skips_pins_and_a_dry_run_changes_nothing() {
    let (_tmp, cache) = new_cache();
    for (name, when) in [("a", "3 days ago"), ("b", "10 days ago"), ("c", "5 days ago"), ("d", "1 day ago")] {
        set_time(&publish_stamped(&cache, name), when);
    }
    let mut pinner = Child::spawn(cache.path(), "pin b");
    pinner.expect("pinned");
    let limits = Limits { max_size: Some(20), max_age: None };

    let before = tree(cache.path());
    let dry = cache.gc_with(&GcOptions { limits, dry_run: true }, Wait::NoWait).unwrap();
    assert_eq!(tree(cache.path()), before, "a dry run changes nothing");
    assert!(dry.evict.dry_run);
    assert_eq!(dry.evict.entry_bytes, 40);

    // `b` was the oldest, but the pin's lookup made it the newest.
    let report = cache.gc_with(&GcOptions { limits, dry_run: false }, Wait::NoWait).unwrap();
    assert_eq!(evicted(&report), ["c", "a"]);
    assert_eq!((report.evict.freed, report.evict.entry_bytes_after()), (20, 20));
    assert!(report.evict.skipped.is_empty());
    let report = cache
        .gc_with(&GcOptions { limits: Limits { max_size: Some(0), max_age: None }, dry_run: false }, Wait::NoWait)
        .unwrap();
    assert_eq!(evicted(&report), ["d"]);
    let skipped: Vec<_> = report.evict.skipped.iter().map(|s| (s.victim.stored_name.as_str(), &s.why)).collect();
    assert_eq!(skipped, [("b", &SkipReason::InUse)]);
    assert!(cache.get(&key("b")).unwrap().is_some(), "the pinned entry stays");
    pinner.release();
    assert!(pinner.wait().success());
}

#[test]
fn auto_gc_starts_its_clock_then_runs_once_per_interval() {
    let (_tmp, cache) = new_cache();
    let stamp = publish_stamped(&cache, "old");
    set_time(&stamp, "40 days ago");
    assert!(cache.auto_gc().unwrap().is_none(), "off unless the options ask");
    let every = Duration::from_secs(3600);
    let options = Options { auto_gc: Some(AutoGc { every, ..AutoGc::default() }), ..Options::default() };
    let auto = Cache::open_ambient(cache.path(), options).unwrap();
    assert!(auto.auto_gc().unwrap().is_none(), "the first call starts the clock");
    let gc_stamp = cache.path().join(".safecache/gc.stamp");
    assert!(gc_stamp.is_file());
    assert!(auto.auto_gc().unwrap().is_none(), "not an hour yet");
    set_time(&gc_stamp, "2 hours ago");
    let report = auto.auto_gc().unwrap().expect("due");
    assert_eq!(evicted(&report), ["old"]);
    assert!(auto.auto_gc().unwrap().is_none(), "it just ran");
}

/// A hit through a handle that has written or seen a fresh stamp for the
/// key does nothing more (issue 17: the hit cost a second lstat, of the
/// stamp, every time); a handle that has not looks at the stamp on disk and
/// restamps one that is older than the resolution.
#[test]
fn a_repeat_hit_through_one_handle_leaves_the_stamp_alone() {
    let (_tmp, cache) = new_cache();
    let stamp = publish_stamped(&cache, "hot");
    let mtime = |p: &Path| std::fs::symlink_metadata(p).unwrap().modified().unwrap();
    set_time(&stamp, "2 hours ago");
    let backdated = mtime(&stamp);
    assert!(cache.get(&key("hot")).unwrap().is_some());
    assert_eq!(mtime(&stamp), backdated, "the handle that stamped it at publish does not look again");

    let fresh = Cache::open_ambient(cache.path(), Options::default()).unwrap();
    assert!(fresh.get(&key("hot")).unwrap().is_some());
    let restamped = mtime(&stamp);
    assert!(restamped > backdated, "a new handle looks at the stamp on disk and renews a stale one");
    set_time(&stamp, "2 hours ago");
    assert!(fresh.get(&key("hot")).unwrap().is_some());
    assert!(mtime(&stamp) < restamped, "within the resolution of its own stamp the handle does nothing");
}
