//! A full disk, for real: a 2 MiB tmpfs mounted for each test (skipped,
//! saying why, where mounting is not allowed), filled past its end by a fill
//! or to its last byte by a file outside the cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use safecache::{Cache, Error, ErrorKind, Options, Wait};

use crate::disk::Mount;
use crate::support::{key, names, publish};

/// What an unprivileged process may still write on the filesystem at `path`.
fn available(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bavail * st.f_frsize
}

/// Writes `path` (outside the cache, on the same filesystem) until the disk
/// is full, and checks that not one byte is left.
fn fill_up(path: &Path) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    assert_eq!(available(path.parent().unwrap()), 0, "the disk is full");
}

/// Writes `bytes` into `dir/blob` through std, as a fill or a user would.
fn write_blob(dir: &Path, bytes: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(dir.join("blob"))?;
    file.write_all(&vec![7u8; bytes])?;
    file.sync_all()
}

/// Everything a failed write could have left in the cache's own dirs:
/// temps, half-written holder records and failure records.
fn leftovers(cache: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["tmp", "holders", "failed"] {
        out.extend(names(&cache.join(".safecache").join(dir)).into_iter().map(|n| format!("{dir}/{n}")));
    }
    out
}

/// The error and its sources on one line, as a front end shows it.
fn chain(err: &Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[test]
fn a_fill_larger_than_the_disk_fails_naming_the_space_left_and_leaves_nothing() {
    let Some(mount) = Mount::tmpfs("2m") else { return };
    let cache = Cache::open_ambient(mount.path().join("cache"), Options::default()).unwrap();
    publish(&cache, "small", "fits");

    let err = cache.get_or_fill(&key("huge"), Wait::NoWait, |dir| write_blob(dir.path(), 4 << 20)).unwrap_err();
    let low = err.low_space().unwrap_or_else(|| panic!("the error notes the full disk: {err:?}"));
    assert_eq!(low.available, 0, "measured while the failed fill still took the space");
    assert_eq!(low.cache, cache.path());
    let text = chain(&err);
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains(&format!("the filesystem of cache `{}` had 0 B free", cache.path().display())), "{text}");
    assert!(text.contains("safecache gc"), "{text}");

    assert!(cache.get(&key("huge")).unwrap().is_none(), "nothing published");
    assert_eq!(leftovers(cache.path()), Vec::<String>::new(), "no temp, no half-written record");
    assert!(available(mount.path()) > 1 << 20, "the temp's space came back");
    assert_eq!(std::fs::read_to_string(cache.path().join("small/data")).unwrap(), "fits");
    publish(&cache, "after", "ok");
}

#[test]
fn a_fill_that_fails_for_another_reason_on_a_roomy_disk_gets_no_note() {
    let Some(mount) = Mount::tmpfs("2m") else { return };
    let cache = Cache::open_ambient(mount.path().join("cache"), Options::default()).unwrap();
    let err = cache.get_or_fill(&key("k"), Wait::NoWait, |_| Err::<(), _>("bad input")).unwrap_err();
    assert!(err.low_space().is_none(), "{err:?}");
    assert_eq!(chain(&err), "fill of `k` failed; nothing was published: bad input");
}

#[test]
fn a_full_disk_still_serves_reads_and_frees_space_by_rm_gc_and_clean() {
    let Some(mount) = Mount::tmpfs("2m") else { return };
    let cache = Cache::open_ambient(mount.path().join("cache"), Options::default()).unwrap();
    for k in ["a", "b"] {
        cache.get_or_fill(&key(k), Wait::NoWait, |dir| write_blob(dir.path(), 256 << 10)).unwrap();
    }
    publish(&cache, "c", "small");
    // A killed fill's temp: its owner lock is free, so gc may reclaim it.
    let orphan = cache.path().join(".safecache/tmp/0123456789abcdef0123456789abcdef.0123456789abcdef01234567");
    std::fs::create_dir_all(orphan.join("out")).unwrap();
    write_blob(&orphan.join("out"), 256 << 10).unwrap();
    let ballast = mount.path().join("ballast");
    fill_up(&ballast);

    // Reads: lookups, pins (whose holder records cannot be written), `ls`
    // and `status`.
    assert!(cache.get(&key("a")).unwrap().is_some());
    let pin = cache.pin(&key("a"), Wait::NoWait).unwrap().expect("a is pinned");
    assert_eq!(std::fs::metadata(pin.entry().path().join("blob")).unwrap().len(), 256 << 10);
    assert_eq!(cache.entries().unwrap().len(), 3);
    let status = cache.status().unwrap();
    assert_eq!((status.entries, status.items.len()), (3, 1));
    drop(pin);
    // The pin's holder record could not be written, and left no half of
    // itself (before gc, which would reap it).
    assert_eq!(leftovers(cache.path()), vec![format!("tmp/{}", orphan.file_name().unwrap().to_string_lossy())]);

    // A fill that keeps a reserve does not start at all.
    let reserved = Cache::open_ambient(cache.path(), Options { min_free: 1 << 20, ..Options::default() }).unwrap();
    let mut ran = false;
    let err = reserved
        .get_or_fill(&key("new"), Wait::NoWait, |_| {
            ran = true;
            Ok::<(), std::io::Error>(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BelowReserve, "{err:?}");
    assert!(
        err.to_string().contains("has 0 B free, less than the 1.0 MiB kept free, so the fill of `new` was not started"),
        "{err}"
    );
    assert!(!ran, "the fill's command was not run");

    // rm, gc and clean need no new space, and free some.
    assert!(cache.remove(&key("a"), Wait::NoWait).unwrap());
    assert_eq!(cache.reclaim(false).unwrap().items, 1, "the trash is reclaimed without new space");
    assert!(available(mount.path()) >= 256 << 10, "rm freed the entry's space");
    fill_up(&ballast);
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!((report.temps, report.failures.len()), (1, 0), "{report:?}");
    assert!(available(mount.path()) >= 256 << 10, "gc freed the orphan's space");
    fill_up(&ballast);
    let report = cache.clean(Wait::NoWait).unwrap();
    assert_eq!((report.entries, report.failures.len()), (2, 0), "{report:?}");
    let reclaimed = cache.reclaim(false).unwrap();
    assert!(reclaimed.items >= 1 && reclaimed.failures.is_empty(), "{reclaimed:?}");
    assert!(names(&cache.path().join(".safecache/trash")).is_empty(), "the trash is reclaimed whole");
    assert!(available(mount.path()) >= 256 << 10, "clean freed the entries' space");
    assert_eq!(leftovers(cache.path()), Vec::<String>::new(), "no half-written record");
    assert!(cache.entries().unwrap().is_empty());
}

#[test]
fn safecaches_own_writes_on_a_disk_out_of_inodes_fail_with_no_space() {
    let Some(mount) = Mount::tmpfs_with("size=2m,nr_inodes=48") else { return };
    let cache = Cache::open_ambient(mount.path().join("cache"), Options::default()).unwrap();
    publish(&cache, "a", "kept");
    // Empty files outside the cache until no inode is left.
    let outside: PathBuf = mount.path().join("inodes");
    std::fs::create_dir(&outside).unwrap();
    for i in 0.. {
        match std::fs::File::create(outside.join(i.to_string())) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("using up the inodes: {e}"),
        }
    }

    let mut ran = false;
    let err = cache
        .get_or_fill(&key("new"), Wait::NoWait, |_| {
            ran = true;
            Ok::<(), std::io::Error>(())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("no space left to "), "{text}");
    assert!(text.contains(&format!("the filesystem of cache `{}` has ", cache.path().display())), "{text}");
    assert!(text.contains("but no inodes left"), "{text}");
    assert!(!ran, "no fill ran without its temp");
    assert!(cache.get(&key("new")).unwrap().is_none());
    assert_eq!(leftovers(cache.path()), Vec::<String>::new());

    // The published entry is still served, pinned (though its entry lock's
    // gate cannot be created) and removable.
    assert_eq!(std::fs::read_to_string(cache.get(&key("a")).unwrap().unwrap().path().join("data")).unwrap(), "kept");
    let pin = cache.pin(&key("a"), Wait::NoWait).unwrap().expect("a is pinned");
    assert_eq!(std::fs::read_to_string(pin.entry().path().join("data")).unwrap(), "kept");
    drop(pin);
    assert!(cache.remove(&key("a"), Wait::NoWait).unwrap());
}
