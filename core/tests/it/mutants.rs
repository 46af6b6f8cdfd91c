//! Tests that kill mutants which survived every other test: hand-made bugs
//! in the real core (issue "Reliability", point 9). Each test names the
//! mutant it catches.

use std::fs::{self, File};
use std::sync::mpsc;

use safecache::{Cache, ErrorKind, LockMode, Options, Wait};

use crate::support::{key, names, new_cache, publish};

/// Mutant: `publish` with a plain rename, which silently replaces an empty
/// directory that appeared at the entry's name.
#[test]
fn publish_never_replaces_a_directory_that_appeared_at_the_entry() {
    let (_dir, cache) = new_cache();
    let k = key("k");
    let squatter = cache.entry_path(&k);
    let err = cache
        .get_or_fill(&k, Wait::NoWait, |out| {
            fs::write(out.path().join("data"), "mine")?;
            // Something outside the protocol creates the entry's name.
            fs::create_dir(&squatter)
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(err.to_string().contains("publish"), "{err}");
    assert!(names(&squatter).is_empty(), "the squatting directory was replaced by the fill");
}

/// Mutant: gc reclaiming a temp after probing only the entry lock. The owner
/// lock alone can prove the owner alive: `run`'s supervisor keeps it (and
/// not the entry lock) while a killed `run`'s command tree is being ended.
#[test]
fn gc_leaves_a_temp_whose_owner_lock_is_held() {
    let (dir, cache) = new_cache();
    let temp = dir.path().join("cache/.safecache/tmp/0123456789abcdef0123456789abcdef.0123456789ab");
    fs::create_dir_all(temp.join("out")).unwrap();
    let owner = File::create(temp.join("owner.lock")).unwrap();
    owner.lock().unwrap();
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!((report.temps, report.busy), (0, 1), "{report:?}");
    assert!(temp.join("out").is_dir());
    drop(owner);
    assert_eq!(cache.gc(Wait::NoWait).unwrap().temps, 1, "once its owner is gone it is an orphan");
}

/// Mutant: `clean` emptying `locks/` under an inherited exclusive lease. The
/// parent's other children may hold entry locks: deleting a lock file under
/// a filler lets the next filler lock a new inode and fill the same key at
/// the same time.
#[test]
fn clean_under_an_inherited_lease_keeps_the_lock_files_of_running_fills() {
    let (_dir, cache) = new_cache();
    let _parent = cache.lease(LockMode::Exclusive, Wait::NoWait).unwrap();
    let child = || {
        Cache::open_ambient(cache.path(), Options { inherited_lease: Some(LockMode::Exclusive), ..Options::default() })
            .unwrap()
    };
    let (filling_tx, filling) = mpsc::channel();
    let (finish, finish_rx) = mpsc::channel::<()>();
    let filler = child();
    let first = std::thread::spawn(move || {
        filler
            .get_or_fill(&key("k"), Wait::NoWait, |out| {
                filling_tx.send(()).unwrap();
                finish_rx.recv().unwrap();
                fs::write(out.path().join("data"), "first")
            })
            .unwrap()
    });
    filling.recv().unwrap();
    publish(&child(), "other", "x");
    assert_eq!(child().clean(Wait::NoWait).unwrap().entries, 1);
    let err = child().get_or_fill(&key("k"), Wait::NoWait, |_| Ok::<(), std::io::Error>(())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "a second fill of `k` ran beside the first: {err}");
    finish.send(()).unwrap();
    assert!(first.join().unwrap().filled);
}

/// gc deletes the lock files, gates and stamps of removed entries, but only
/// while nobody uses the cache.
#[test]
fn gc_reclaims_the_locks_of_absent_entries_only_when_idle() {
    let (dir, cache) = new_cache();
    let locks = dir.path().join("cache/.safecache/locks");
    for k in ["a", "b"] {
        publish(&cache, k, k);
    }
    assert!(cache.remove(&key("a"), Wait::NoWait).unwrap());
    assert_eq!(names(&locks).len(), 2);
    let busy = cache.lease(LockMode::Shared, Wait::NoWait).unwrap();
    assert_eq!(cache.gc(Wait::NoWait).unwrap().locks, 0, "a user holds the lease");
    drop(busy);
    let report = cache.gc(Wait::NoWait).unwrap();
    assert!(report.locks >= 1, "{report:?}");
    assert_eq!(names(&locks).len(), 1, "the lock of `b`, which exists, stays");
    assert_eq!(fs::read_to_string(cache.get(&key("b")).unwrap().unwrap().path().join("data")).unwrap(), "b");
}
