//! Deletion by rename-aside, by handle, never following symlinks.

use std::os::unix::fs::symlink;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use safecache::{Cache, Options, Wait};

use crate::support::{Child, key, names, new_cache, tree};

/// CVE-2022-21658: a symlink planted inside an entry, pointing outside the
/// cache, is unlinked, and what it points to is untouched.
#[test]
fn remove_never_follows_a_symlink_out_of_the_entry() {
    let (tmp, cache) = new_cache();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("precious"), "keep me").unwrap();
    std::fs::write(outside.join("sub/also"), "keep me too").unwrap();
    let before = tree(&outside);
    cache
        .get_or_fill(&key("dep"), Wait::NoWait, |dir| {
            let d = dir.path();
            std::fs::create_dir(d.join("nested"))?;
            std::fs::write(d.join("nested/file"), "x")?;
            symlink(&outside, d.join("to-dir"))?;
            symlink(outside.join("precious"), d.join("to-file"))?;
            symlink(&outside, d.join("nested/deeper"))?;
            symlink("../../../outside", d.join("relative"))
        })
        .unwrap();
    assert!(cache.remove(&key("dep"), Wait::NoWait).unwrap());
    assert!(!cache.path().join("dep").exists());
    assert_eq!(names(&cache.path().join(".safecache/trash")).len(), 1, "remove returns with the entry in the trash");
    assert_eq!(cache.reclaim(false).unwrap().items, 1);
    assert_eq!(tree(&outside), before, "the symlinks' targets are untouched");
    assert!(names(&cache.path().join(".safecache/trash")).is_empty());
    assert!(!cache.remove(&key("dep"), Wait::NoWait).unwrap(), "removing an absent key reports false");
}

/// An entry that is itself a symlink (adopted by `init`) is unlinked by
/// `clean`, not entered.
#[test]
fn clean_unlinks_adopted_symlinks_without_following_them() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), "keep me").unwrap();
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    symlink(&outside, dir.join("link")).unwrap();
    std::fs::create_dir(dir.join("old-tool-dir")).unwrap();
    std::fs::write(dir.join("old-tool-dir/f"), "x").unwrap();
    let before = tree(&outside);
    let cache = Cache::init_ambient(&dir, Options::default()).unwrap();
    assert_eq!(cache.entries().unwrap().len(), 2);
    let report = cache.clean(Wait::NoWait).unwrap();
    assert_eq!(report.entries, 2);
    assert_eq!(names(&dir), vec![".safecache", "CACHEDIR.TAG"], "clean keeps the marker and the tag");
    assert_eq!(tree(&outside), before);
}

/// Seed 001 (pip-tools #2384): one process deletes and rebuilds an entry
/// while others read it. A pinned reader always sees a complete entry, never
/// a half-deleted tree.
#[test]
fn pinned_readers_never_see_a_half_deleted_entry() {
    let (_tmp, cache) = new_cache();
    let files = 50;
    let (stop, rebuilder) = rebuild_in_a_loop(&cache, files);
    let mut complete_reads = 0;
    // Until 200 reads found the entry (a pin finds none while the rebuilder
    // is between its remove and its fill, which under load can be every try
    // of a fixed number of tries), within a bound that only a hang reaches.
    let deadline = Instant::now() + Duration::from_secs(120);
    while complete_reads < 200 && Instant::now() < deadline {
        let Some(pin) = cache.pin(&key("tree"), Wait::Forever).unwrap() else { continue };
        let count = std::fs::read_dir(pin.entry().path()).unwrap().count();
        assert_eq!(count, files, "a pinned entry is complete");
        for i in 0..files {
            assert_eq!(std::fs::read_to_string(pin.entry().path().join(format!("f{i}"))).unwrap(), "payload");
        }
        complete_reads += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = rebuilder.join().unwrap();
    assert!(complete_reads > 0 && rounds > 0, "reads {complete_reads}, rebuilds {rounds}");
}

/// Seed 001 (pip-tools #2384): `--rebuild` deleted the tree in place while a
/// reader walked it. With rename-aside, an unpinned reader that finds the
/// entry sees all of it, or (if it lost the race) nothing at all.
#[test]
fn unpinned_readers_see_a_whole_entry_or_none() {
    let (_tmp, cache) = new_cache();
    let files = 200;
    let (stop, rebuilder) = rebuild_in_a_loop(&cache, files);
    let mut whole = 0;
    // 2000 looks, and on until one saw the entry whole (under load every look
    // of a fixed number can fall between the rebuilder's remove and fill),
    // within a bound that only a hang reaches.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut looks = 0;
    while (looks < 2000 || whole == 0) && Instant::now() < deadline {
        looks += 1;
        let Some(entry) = cache.get(&key("tree")).unwrap() else { continue };
        match std::fs::read_dir(entry.path()) {
            Ok(listing) => {
                let count = listing.count();
                assert!(count == files || count == 0, "saw a half-deleted entry: {count} of {files} files");
                whole += usize::from(count == files);
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
    }
    stop.store(true, Ordering::SeqCst);
    assert!(rebuilder.join().unwrap() > 0);
    assert!(whole > 0);
}

/// Go's module cache makes its directories read-only, which keeps their
/// entries from being unlinked. A remove must still delete such an entry
/// completely, and not leave undeletable trash that jams every later gc.
#[test]
fn read_only_directories_do_not_jam_remove() {
    // Root ignores permissions, so the remover runs as `nobody`.
    const NOBODY: u32 = 65534;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run the remover as another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cache = Cache::open_ambient(tmp.path().join("cache"), Options::default()).unwrap();
    let filled = cache
        .get_or_fill(&key("gomod/pkg@v1"), Wait::NoWait, |dir| {
            std::fs::create_dir_all(dir.path().join("pkg@v1/sub"))?;
            std::fs::write(dir.path().join("pkg@v1/sub/go.mod"), "module pkg")?;
            std::fs::write(dir.path().join("pkg@v1/README"), "x")
        })
        .unwrap();
    for ro in ["pkg@v1/sub", "pkg@v1"] {
        std::fs::set_permissions(filled.entry.path().join(ro), std::os::unix::fs::PermissionsExt::from_mode(0o555))
            .unwrap();
    }
    let chown = std::process::Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(cache.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let mut remover = crate::support::Child::spawn_as(cache.path(), "remove gomod/pkg@v1 nowait", Some(NOBODY));
    assert_eq!(remover.expect("removed="), "removed=true");
    assert!(remover.wait().success());
    assert!(!filled.entry.path().exists());
    let mut reclaimer = crate::support::Child::spawn_as(cache.path(), "reclaim", Some(NOBODY));
    assert_eq!(reclaimer.expect("reclaimed="), "reclaimed=1 failures=0");
    assert!(reclaimer.wait().success());
    assert!(names(&cache.path().join(".safecache/trash")).is_empty(), "no undeletable trash is left");
}

/// Fills `tree` with `files` files.
fn fill_tree(cache: &Cache, files: usize) {
    cache
        .get_or_fill(&key("tree"), Wait::Forever, |dir| {
            for i in 0..files {
                std::fs::write(dir.path().join(format!("f{i}")), "payload")?;
            }
            std::io::Result::Ok(())
        })
        .unwrap();
}

/// Removes and refills `tree` in a loop on another thread (as repeated
/// `--rebuild`s do) until the returned flag is set; the thread returns how
/// many rounds it ran.
fn rebuild_in_a_loop(cache: &Cache, files: usize) -> (Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    fill_tree(cache, files);
    let stop = Arc::new(AtomicBool::new(false));
    let (cache, flag) = (cache.clone(), Arc::clone(&stop));
    let handle = std::thread::spawn(move || {
        let mut rounds = 0;
        while !flag.load(Ordering::SeqCst) {
            cache.remove(&key("tree"), Wait::Forever).unwrap();
            fill_tree(&cache, files);
            rounds += 1;
        }
        rounds
    });
    (stop, handle)
}

/// A trash of more items than the reclaimer may open descriptors (a `clean`
/// of many entries, reclaimed under `ulimit -n 200`) is reclaimed whole: it
/// claims a batch at a time, not every item at once.
#[test]
fn reclaim_of_more_items_than_descriptors_deletes_them_all() {
    let (_tmp, cache) = new_cache();
    let quick = Cache::open_ambient(
        cache.path(),
        Options { durability: Some(safecache::Durability::None), ..Options::default() },
    )
    .unwrap();
    for i in 0..300 {
        quick.get_or_fill(&key(&format!("e{i}")), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "x")).unwrap();
    }
    drop(quick);
    // An inherited exclusive lease (as `run --exclusive` gives its CMD)
    // renames each entry aside on its own: 300 trash items.
    let inherited = Cache::open_ambient(
        cache.path(),
        Options { inherited_lease: Some(safecache::LockMode::Exclusive), ..Options::default() },
    )
    .unwrap();
    let _lease = cache.lease(safecache::LockMode::Exclusive, Wait::NoWait).unwrap();
    assert_eq!(inherited.clean(Wait::NoWait).unwrap().entries, 300);
    assert_eq!(names(&cache.path().join(".safecache/trash")).len(), 300);
    let mut child = Child::spawn(cache.path(), "reclaim-fds 200");
    assert_eq!(child.expect("reclaimed="), "reclaimed=300 failures=0");
    assert!(child.wait().success());
    assert!(names(&cache.path().join(".safecache/trash")).is_empty());
}

/// `clean` under its own lease used to empty `locks/`, `used/`,
/// `manifests/` and `failed/` one file at a time (400,000 unlinks for
/// 100,000 entries, most of its 26 s). It now renames each aside whole and
/// makes it again, with the mode the cache makes its directories with, and
/// renames every entry into one trash directory it claims: one item for
/// the reclaimer, whatever the number of entries.
#[test]
fn clean_replaces_the_metadata_directories_whole_and_trashes_its_entries_as_one_item() {
    use std::os::unix::fs::MetadataExt;
    let (_tmp, cache) = new_cache();
    for i in 0..5 {
        cache.get_or_fill(&key(&format!("e{i}")), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "x")).unwrap();
    }
    let marker = cache.path().join(".safecache");
    let inode = |dir: &str| std::fs::symlink_metadata(marker.join(dir)).unwrap().ino();
    let before: Vec<u64> = ["locks", "used", "manifests"].iter().map(|d| inode(d)).collect();
    assert_eq!(names(&marker.join("locks")).len(), 5, "a lock per entry");

    let report = cache.clean(Wait::NoWait).unwrap();
    assert_eq!((report.entries, report.failures.len()), (5, 0), "{report:?}");
    for (dir, old) in ["locks", "used", "manifests"].iter().zip(before) {
        let meta = std::fs::symlink_metadata(marker.join(dir)).unwrap();
        assert!(meta.is_dir() && meta.ino() != old, "{dir} was replaced whole");
        assert_eq!(meta.mode() & 0o7777, 0o700, "{dir} has the mode the cache makes directories with");
        assert!(names(&marker.join(dir)).is_empty(), "{dir} is empty");
    }
    let trash = names(&marker.join("trash"));
    let cleans: Vec<&String> = trash.iter().filter(|n| n.starts_with("clean.") && !n.ends_with(".lock")).collect();
    assert_eq!(cleans.len(), 1, "one trash item holds every entry: {trash:?}");
    assert_eq!(names(&marker.join("trash").join(cleans[0])).iter().filter(|n| n.starts_with('e')).count(), 5);
    assert!(trash.iter().any(|n| n.starts_with("locks.")), "locks/ went to the trash whole: {trash:?}");

    let reclaimed = cache.reclaim(false).unwrap();
    assert!(reclaimed.failures.is_empty(), "{reclaimed:?}");
    assert!(names(&marker.join("trash")).is_empty(), "the reclaimer deletes it all, claim locks too");
    assert!(cache.entries().unwrap().is_empty());
    let filled = cache.get_or_fill(&key("e0"), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "y")).unwrap();
    assert!(filled.filled, "the cache works after clean");
}

/// A `clean` killed between renaming `locks/`, `used/` and `failed/` aside
/// and putting fresh ones in their place leaves them missing. The next open
/// makes them again (private, as the cache makes them), and a handle
/// opened before makes `locks/` again when it next takes a lock, instead
/// of failing every operation with "No such file or directory".
#[test]
fn metadata_directories_a_killed_clean_left_missing_are_made_again() {
    use std::os::unix::fs::MetadataExt;
    let (tmp, cache) = new_cache();
    cache.get_or_fill(&key("a"), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "x")).unwrap();
    let marker = cache.path().join(".safecache");
    for (i, dir) in ["locks", "used", "failed"].iter().enumerate() {
        std::fs::rename(marker.join(dir), marker.join(format!("trash/{dir}.{i:024}"))).unwrap();
    }

    let filled = cache.get_or_fill(&key("b"), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "y")).unwrap();
    assert!(filled.filled, "a handle opened before the clean still fills");
    assert!(cache.pin(&key("a"), Wait::NoWait).unwrap().is_some(), "and pins");

    std::fs::rename(marker.join("locks"), tmp.path().join("locks-again")).unwrap();
    let reopened = Cache::open_ambient(cache.path(), Options::default()).unwrap();
    for dir in ["locks", "used", "failed"] {
        let meta = std::fs::symlink_metadata(marker.join(dir)).unwrap();
        assert!(meta.is_dir(), "{dir} was made again");
        assert_eq!(meta.mode() & 0o7777, 0o700, "{dir}: the mode the cache makes directories with");
    }
    assert!(reopened.remove(&key("a"), Wait::NoWait).unwrap());
    let report = reopened.gc(Wait::NoWait).unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert!(names(&marker.join("trash")).is_empty(), "the directories set aside are reclaimed");
}
