//! A hostile cache directory, through the library: what someone with write
//! access to the cache plants there (FIFOs, hard links out of the cache,
//! huge or forged holder records, user files named like staging dirs,
//! nested caches) never hangs an operation, never reaches outside the
//! cache, and never costs more than a capped read.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use safecache::{Cache, ErrorKind, Options, Wait};

use crate::support::{key, names, new_cache, publish};

/// The wait of operations expected to succeed: not `NoWait`, because a
/// helper process another test forks shares this process's lock files
/// between fork and exec, so a just-released lock can look held.
const PATIENT: Wait = Wait::Timeout(std::time::Duration::from_secs(30));

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// Sets `path`'s mtime (not following a symlink) two hours back, so a stamp
/// there is due for replacement.
fn age_two_hours(path: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let status = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{}", old.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The last-use stamp of `k`, after one lookup has written it.
fn stamp_of(cache: &Cache, k: &str) -> std::path::PathBuf {
    cache.get(&key(k)).unwrap().unwrap();
    let used = cache.path().join(".safecache/used");
    let all = names(&used);
    assert_eq!(all.len(), 1, "{all:?}");
    used.join(&all[0])
}

/// A stamp that is a hard link to a file outside the cache, or a FIFO, is
/// replaced by rename: the outside file keeps its mtime and content, and a
/// lookup never opens the FIFO.
#[test]
fn a_planted_stamp_is_replaced_never_written_through() {
    let (tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    let stamp = stamp_of(&cache, "dep");
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "precious").unwrap();
    age_two_hours(&outside);
    std::fs::remove_file(&stamp).unwrap();
    std::fs::hard_link(&outside, &stamp).unwrap();
    let before = std::fs::metadata(&outside).unwrap();
    // A handle that stamped the entry within the hour does not look at the
    // stamp again; a new one does.
    let cache = Cache::open_ambient(cache.path(), Options::default()).unwrap();
    assert!(cache.get(&key("dep")).unwrap().is_some());
    let after = std::fs::metadata(&outside).unwrap();
    assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()));
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert_ne!(std::fs::metadata(&stamp).unwrap().ino(), after.ino(), "a new stamp took the link's place");

    std::fs::remove_file(&stamp).unwrap();
    mkfifo(&stamp);
    age_two_hours(&stamp);
    // A lookup that opened the FIFO for writing would block here forever.
    let cache = Cache::open_ambient(cache.path(), Options::default()).unwrap();
    assert!(cache.pin(&key("dep"), PATIENT).unwrap().is_some());
    assert!(std::fs::symlink_metadata(&stamp).unwrap().is_file());
    assert!(names(&cache.path().join(".safecache/tmp")).is_empty());
}

/// A FIFO, a directory or a symlink at the format file is refused at once,
/// by name, instead of blocking or being followed.
#[test]
fn a_format_file_that_is_not_a_file_is_refused_at_once() {
    let (tmp, cache) = new_cache();
    let format = cache.path().join(".safecache/format");
    let outside = tmp.path().join("outside-format");
    std::fs::write(&outside, "safecache-format 1\n").unwrap();
    for plant in
        [&(|p: &Path| mkfifo(p)) as &dyn Fn(&Path), &|p: &Path| std::fs::create_dir(p).unwrap(), &|p: &Path| {
            std::os::unix::fs::symlink(&outside, p).unwrap()
        }]
    {
        match std::fs::symlink_metadata(&format) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&format).unwrap(),
            _ => std::fs::remove_file(&format).unwrap(),
        }
        plant(&format);
        let err = Cache::open_ambient(cache.path(), Options::default()).unwrap_err();
        assert!(err.to_string().contains(".safecache/format"), "{err}");
        assert!(!matches!(err.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock), "{err:?}");
    }
}

/// A holder record flocked by a live process (this one) but holding a
/// sparse GiB: `status` reads at most the cap, and skips what is not a
/// record; a record whose `since` overflows and whose fields hold escape
/// sequences is listed, escaped, without a panic.
#[test]
fn huge_garbage_and_forged_records_cost_nothing_and_print_inert() {
    let (_tmp, cache) = new_cache();
    let holders = cache.path().join(".safecache/holders");
    let huge = holders.join("0123456789abcdef01234567.json");
    std::fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let forged = holders.join("0123456789abcdef01234568.json");
    std::fs::write(
        &forged,
        r#"{"lock":{"kind":"lease"},"lock_file":".safecache/lease.lock","mode":"shared","pid":4242,
            "host":"ci\u001b[2J","command":"make\nerror: forged","since":18446744073709551615}"#,
    )
    .unwrap();
    let flocks: Vec<std::fs::File> = [&huge, &forged]
        .iter()
        .map(|p| {
            let f = std::fs::File::open(p).unwrap();
            rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
            f
        })
        .collect();
    let peak_before = peak_rss_kib();
    let status = cache.status().unwrap();
    let grown = peak_rss_kib() - peak_before;
    assert!(grown < 256 * 1024, "status grew this process's peak memory by {grown} KiB");
    assert_eq!(status.holders.len(), 1, "only the parseable record is listed: {:?}", status.holders);
    let shown = status.holders[0].to_string();
    assert!(!shown.contains('\x1b') && !shown.contains('\n'), "{shown:?}");
    assert!(shown.contains("\\u{1b}") && shown.contains("\\u{a}"), "{shown:?}");
    drop(flocks);
}

/// This process's peak resident set size so far, from /proc.
fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// An entry that holds a cache of its own is refused by `remove` and
/// skipped (and reported) by `clean`, which goes on with the rest.
#[test]
fn an_entry_holding_a_cache_survives_remove_and_clean() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "other", "v1");
    cache.get_or_fill(&key("inner"), PATIENT, |_| std::io::Result::Ok(())).unwrap();
    let inner = Cache::open_ambient(cache.path().join("inner"), Options::default()).unwrap();
    publish(&inner, "dep", "inner data");
    let pin = inner.pin(&key("dep"), PATIENT).unwrap().unwrap();

    let err = cache.remove(&key("inner"), PATIENT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NestedCache, "{err}");
    let report = cache.clean(PATIENT).unwrap();
    assert_eq!(report.entries, 1, "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].rel, "inner");
    assert_eq!(std::fs::read_to_string(pin.entry().path().join("data")).unwrap(), "inner data");
    assert!(cache.get(&key("other")).unwrap().is_none());
}

/// Adopting a directory keeps user files and dirs that merely start like a
/// marker staging dir; gc deletes only `.safecache.init-<24 hex>` dirs.
#[test]
fn gc_deletes_only_real_staging_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("adopted");
    std::fs::create_dir_all(dir.join(".safecache.init-keep")).unwrap();
    std::fs::write(dir.join(".safecache.init-keep/data"), "keep").unwrap();
    std::fs::write(dir.join(".safecache.init-notes"), "notes").unwrap();
    let cache = Cache::init_ambient(&dir, Options::default()).unwrap();
    std::fs::create_dir(dir.join(".safecache.init-0123456789abcdef01234567")).unwrap();
    let report = cache.gc(PATIENT).unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(std::fs::read_to_string(dir.join(".safecache.init-keep/data")).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(dir.join(".safecache.init-notes")).unwrap(), "notes");
    assert!(!dir.join(".safecache.init-0123456789abcdef01234567").exists());
}

/// What safecache never made in `tmp/` is an orphan to `status`, and gc
/// reclaims it: the two agree.
#[test]
fn status_and_gc_agree_on_foreign_leftovers() {
    let (_tmp, cache) = new_cache();
    std::fs::create_dir_all(cache.path().join(".safecache/tmp/junk/deeper")).unwrap();
    std::fs::write(cache.path().join(".safecache/trash/stray"), "x").unwrap();
    let status = cache.status().unwrap();
    assert_eq!(status.items.iter().filter(|i| !i.live).count(), 2, "{:?}", status.items);
    let report = cache.gc(PATIENT).unwrap();
    assert_eq!((report.temps, report.trash), (1, 1), "{report:?}");
    assert!(names(&cache.path().join(".safecache/tmp")).is_empty());
    assert!(names(&cache.path().join(".safecache/trash")).is_empty());
}
