//! Costs of the core operations next to the bare filesystem calls they are
//! built on, so the protocol's overhead reads as a ratio.
//!
//! Run with `cargo bench -p safecache --bench ops` (or `cargo xtask bench`).
#![allow(clippy::disallowed_methods)] // the baselines are plain std::fs

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use divan::Bencher;
use safecache::{Cache, Counter, Key, Options, Wait};

fn main() {
    // A re-execution of this binary as one of `waiters_32`'s waiters.
    if let Some(dir) = std::env::var_os(waiters::DIR_VAR) {
        waiters::waiter(Path::new(&dir));
        return;
    }
    divan::main();
}

const PAYLOAD: &[u8] = &[42; 4096];

fn cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir_in(std::env::var_os("SAFECACHE_BENCH_DIR").unwrap_or_else(|| "/tmp".into())).unwrap();
    let cache = Cache::open_ambient(dir.path().join("cache"), Options::default()).unwrap();
    (dir, cache)
}

fn fresh_key() -> Key {
    static N: AtomicUsize = AtomicUsize::new(0);
    Key::new(&format!("bench/{}", N.fetch_add(1, Ordering::Relaxed))).unwrap()
}

fn write_payload(dir: &Path) -> std::io::Result<()> {
    std::fs::File::create(dir.join("payload"))?.write_all(PAYLOAD)
}

/// `get` of a published entry: one lstat plus the last-use stamp.
#[divan::bench]
fn get_hit(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let key = Key::new("hit").unwrap();
    cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
    bencher.bench_local(|| cache.get(&key).unwrap().unwrap());
}

/// `get` of a published entry on a handle just opened, as one `safecache
/// path K` process makes it: the baseline of `get_hit_counted_fresh_handle`.
#[divan::bench]
fn get_hit_fresh_handle(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let key = Key::new("hit").unwrap();
    cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
    let path = cache.path().to_owned();
    bencher.with_inputs(|| Cache::open_ambient(&path, Options::default()).unwrap()).bench_local_values(|fresh| {
        fresh.get(&key).unwrap().unwrap();
        fresh
    });
}

/// The same `get`, then the hit counted into `.safecache/stats` as `path`
/// counts it: the handle's first count opens, checks and maps the file,
/// then adds atomically (no lock, no write call, no fsync).
#[divan::bench]
fn get_hit_counted_fresh_handle(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let key = Key::new("hit").unwrap();
    cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
    let path = cache.path().to_owned();
    bencher.with_inputs(|| Cache::open_ambient(&path, Options::default()).unwrap()).bench_local_values(|fresh| {
        fresh.get(&key).unwrap().unwrap();
        fresh.count(Counter::Hits, 1);
        fresh
    });
}

/// A count on a handle that has mapped the stats file: one atomic add.
#[divan::bench]
fn count_mapped(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    cache.count(Counter::Hits, 1);
    bencher.bench_local(|| cache.count(Counter::Hits, 1));
}

/// The bare lstat `get` is built on.
#[divan::bench]
fn baseline_lstat(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let key = Key::new("hit").unwrap();
    let filled = cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
    let path = filled.entry.path().to_owned();
    bencher.bench_local(|| std::fs::symlink_metadata(&path).unwrap());
}

/// Pin and release a published entry: lease, entry lock, two holder records.
#[divan::bench]
fn pin_release(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let key = Key::new("hit").unwrap();
    cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
    bencher.bench_local(|| drop(cache.pin(&key, Wait::NoWait).unwrap().unwrap()));
}

/// Pin and release a published entry through a lease already held (as
/// `run --key K` pins under its one `Leased`): the shared entry lock alone.
#[divan::bench]
fn pin_release_leased(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let key = Key::new("hit").unwrap();
    cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
    let leased = cache.lease(safecache::LockMode::Shared, Wait::NoWait).unwrap();
    bencher.bench_local(|| drop(leased.pin(&key, Wait::NoWait).unwrap().unwrap()));
}

/// The bare calls a pin is built on: open one lock file, flock it shared,
/// fstat it, close it (which releases the flock).
#[divan::bench]
fn baseline_open_flock_fstat_close(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let path = cache.path().join("bench.lock");
    std::fs::File::create(&path).unwrap();
    bencher.bench_local(|| {
        let file = std::fs::File::open(&path).unwrap();
        file.lock_shared().unwrap();
        file.metadata().unwrap();
        drop(file);
    });
}

/// A full fill of a new 4 KiB entry: locks, temp, owner lock, fsyncs,
/// NOREPLACE rename, temp removal.
#[divan::bench(sample_count = 200)]
fn fill_4k(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    bencher.bench_local(|| cache.get_or_fill(&fresh_key(), Wait::NoWait, |d| write_payload(d.path())).unwrap());
}

/// What a careful tool does without safecache: mkdir a temp, write, fsync
/// the file and both directories, rename. No locks, no single-flight.
#[divan::bench(sample_count = 200)]
fn baseline_fill_4k_with_fsync(bencher: Bencher<'_, '_>) {
    let tmp = tempfile::tempdir().unwrap();
    bare_fills(bencher, tmp.path(), true, |temp, _| {
        let mut file = std::fs::File::create(temp.join("payload")).unwrap();
        file.write_all(PAYLOAD).unwrap();
        file.sync_all().unwrap();
        std::fs::File::open(temp).unwrap().sync_all().unwrap();
    });
}

/// Bare fills under `root`: mkdir `tmp-<i>`, `write` into it, rename it
/// to `entry-<i>`, then (with `sync`) fsync the root.
fn bare_fills(bencher: Bencher<'_, '_>, root: &Path, sync: bool, write: impl Fn(&Path, usize) + Sync) {
    let n = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        let temp = root.join(format!("tmp-{i}"));
        std::fs::create_dir(&temp).unwrap();
        write(&temp, i);
        std::fs::rename(&temp, root.join(format!("entry-{i}"))).unwrap();
        if sync {
            std::fs::File::open(root).unwrap().sync_all().unwrap();
        }
    });
}

/// A many-file entry: 256 files of 64 KiB (16 MiB), each file's bytes its
/// own.
const MANY_FILES: usize = 256;
const MANY_FILE_LEN: usize = 64 << 10;

fn write_many_files(dir: &Path, seed: usize) -> std::io::Result<()> {
    let mut data = vec![0u8; MANY_FILE_LEN];
    for i in 0..MANY_FILES {
        data[..16].copy_from_slice(&((seed as u128) << 64 | i as u128).to_le_bytes());
        data[16..].fill((i % 251) as u8 + 1);
        std::fs::File::create(dir.join(format!("f{i}")))?.write_all(&data)?;
    }
    Ok(())
}

/// A fill of a 16 MiB entry of 256 files without fsyncs: the manifest's
/// hashing (on every core) is most of what it adds to the bare writes.
#[divan::bench(sample_count = 20)]
fn fill_many_files_unsynced(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    let cache = Cache::open_ambient(
        cache.path(),
        Options { durability: Some(safecache::Durability::None), ..Options::default() },
    )
    .unwrap();
    let n = AtomicUsize::new(0);
    bencher.bench_local(|| {
        let seed = n.fetch_add(1, Ordering::Relaxed);
        cache.get_or_fill(&fresh_key(), Wait::NoWait, |d| write_many_files(d.path(), seed)).unwrap()
    });
}

/// Its limit: mkdir a temp, write the same files, rename. No fsync.
#[divan::bench(sample_count = 20)]
fn baseline_write_many_files(bencher: Bencher<'_, '_>) {
    let tmp = tempfile::tempdir_in(std::env::var_os("SAFECACHE_BENCH_DIR").unwrap_or_else(|| "/tmp".into())).unwrap();
    bare_fills(bencher, tmp.path(), false, |temp, i| write_many_files(temp, i).unwrap());
}

/// Remove a 4 KiB entry: entry lock, rename aside, fsync the root, forget
/// (the trash is left for `reclaim`).
#[divan::bench(sample_count = 200)]
fn remove_4k(bencher: Bencher<'_, '_>) {
    let (_tmp, cache) = cache();
    bencher
        .with_inputs(|| {
            let key = fresh_key();
            cache.get_or_fill(&key, Wait::NoWait, |d| write_payload(d.path())).unwrap();
            key
        })
        .bench_local_values(|key| assert!(cache.remove(&key, Wait::NoWait).unwrap()));
}

/// The limit `remove` is held to: a durable rename aside (rename into
/// another directory, then fsync the root).
#[divan::bench(sample_count = 200)]
fn baseline_rename_aside(bencher: Bencher<'_, '_>) {
    let tmp = tempfile::tempdir_in(std::env::var_os("SAFECACHE_BENCH_DIR").unwrap_or_else(|| "/tmp".into())).unwrap();
    let root = tmp.path();
    std::fs::create_dir(root.join("trash")).unwrap();
    let n = AtomicUsize::new(0);
    bencher
        .with_inputs(|| {
            let name = n.fetch_add(1, Ordering::Relaxed).to_string();
            std::fs::create_dir(root.join(&name)).unwrap();
            write_payload(&root.join(&name)).unwrap();
            name
        })
        .bench_local_values(|name| {
            std::fs::rename(root.join(&name), root.join("trash").join(&name)).unwrap();
            std::fs::File::open(root).unwrap().sync_all().unwrap();
        });
}

/// The bare delete `remove` replaces: remove_dir_all in place.
#[divan::bench(sample_count = 200)]
fn baseline_remove_dir_all(bencher: Bencher<'_, '_>) {
    let tmp = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    bencher
        .with_inputs(|| {
            let dir = tmp.path().join(n.fetch_add(1, Ordering::Relaxed).to_string());
            std::fs::create_dir(&dir).unwrap();
            write_payload(&dir).unwrap();
            dir
        })
        .bench_local_values(|dir| std::fs::remove_dir_all(dir).unwrap());
}

/// The last of 32 waiters for a fill, after the fill's CMD ends, beside 32
/// `flock -s LOCK true` blocked behind a holder (issue 17): the time from
/// the release to the last waiter's exit, every waiter a process of its
/// own, blocked before the release.
mod waiters {
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::time::Duration;

    use divan::Bencher;
    use safecache::{Cache, Key, Options, Wait};

    pub(crate) const DIR_VAR: &str = "SAFECACHE_BENCH_WAITER_DIR";
    const KEY_VAR: &str = "SAFECACHE_BENCH_WAITER_KEY";
    const WAITERS: usize = 32;

    /// One waiter: `get_or_fill` with the 300 s wait every waiter off a
    /// terminal gets, saying `waiting` on stdout once it blocks.
    pub(crate) fn waiter(dir: &Path) {
        let key = Key::new(&std::env::var(KEY_VAR).unwrap()).unwrap();
        let options = Options {
            on_wait: Some(Arc::new(|_: &safecache::WaitEvent<'_>| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "waiting");
                let _ = out.flush();
            })),
            ..Options::default()
        };
        let cache = Cache::open_ambient(dir, options).unwrap();
        let filled =
            cache.get_or_fill(&key, Wait::Timeout(Duration::from_secs(300)), |d| super::write_payload(d.path()));
        assert!(!filled.unwrap().filled, "a waiter filled the entry");
    }

    /// Waits for every child to say its first line.
    fn until_all_say(children: &mut [(Child, BufReader<std::process::ChildStdout>)], what: &str) {
        for (_, out) in children.iter_mut() {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            assert_eq!(line.trim_end(), what);
        }
    }

    /// The pids blocked in flock(2), from /proc/locks.
    fn blocked() -> usize {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        locks.lines().filter(|l| l.split_whitespace().nth(1) == Some("->")).count()
    }

    struct Filling {
        go: mpsc::Sender<()>,
        filler: std::thread::JoinHandle<()>,
        children: Vec<(Child, BufReader<std::process::ChildStdout>)>,
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn waiters_32_last_after_fill(bencher: Bencher<'_, '_>) {
        let (_tmp, cache) = super::cache();
        let cache = Arc::new(cache);
        let exe = std::env::current_exe().unwrap();
        bencher
            .with_inputs(|| {
                let key = super::fresh_key();
                let (go, wait_go) = mpsc::channel();
                let (started, filling) = mpsc::channel();
                let filler = {
                    let (cache, key) = (Arc::clone(&cache), key.clone());
                    std::thread::spawn(move || {
                        cache
                            .get_or_fill(&key, Wait::NoWait, |d| {
                                started.send(()).unwrap();
                                // The fill's CMD runs until the bench says.
                                wait_go.recv().unwrap();
                                super::write_payload(d.path())
                            })
                            .unwrap();
                    })
                };
                filling.recv().unwrap();
                let mut children: Vec<_> = (0..WAITERS)
                    .map(|_| {
                        let mut child = Command::new(&exe)
                            .env(DIR_VAR, cache.path())
                            .env(KEY_VAR, key.as_str())
                            .stdout(Stdio::piped())
                            .spawn()
                            .unwrap();
                        let out = BufReader::new(child.stdout.take().unwrap());
                        (child, out)
                    })
                    .collect();
                until_all_say(&mut children, "waiting");
                Filling { go, filler, children }
            })
            .bench_local_values(|filling| {
                filling.go.send(()).unwrap();
                filling.filler.join().unwrap();
                for (mut child, _) in filling.children {
                    assert!(child.wait().unwrap().success());
                }
            });
    }

    /// The baseline: 32 `flock -s LOCK true` blocked behind a holder (in
    /// /proc/locks) before the holder lets go.
    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn baseline_waiters_32_flock(bencher: Bencher<'_, '_>) {
        let (tmp, _cache) = super::cache();
        let lock = tmp.path().join("LOCK");
        bencher
            .with_inputs(|| {
                let holder = std::fs::File::create(&lock).unwrap();
                holder.lock().unwrap();
                let before = blocked();
                let children: Vec<Child> = (0..WAITERS)
                    .map(|_| Command::new("flock").arg("-s").arg(&lock).arg("true").spawn().unwrap())
                    .collect();
                while blocked() < before + WAITERS {
                    std::thread::sleep(Duration::from_millis(1));
                }
                (holder, children)
            })
            .bench_local_values(|(holder, children)| {
                drop(holder);
                for mut child in children {
                    assert!(child.wait().unwrap().success());
                }
            });
    }
}

/// A peer in the same run (issue 17, item 7): the same hit and 1 KiB fill
/// through `cacache` (13, sync API, no async runtime), a content-addressed
/// key-value cache. Same durability on both sides: cacache syncs nothing
/// (its write is a temp file renamed into `content-v2/`, then a line
/// appended to the key's bucket in `index-v5/`, no fsync), so safecache's
/// side runs at `Durability::None` (no fsync either: temp dir, write,
/// manifest, NOREPLACE rename, with its locks); `fill_1k` is the default,
/// fsynced fill beside them. Every fill writes different bytes (the
/// counter is in the payload), so cacache's content addressing dedupes
/// nothing.
mod peer {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use divan::Bencher;
    use safecache::{Cache, Durability, Key, Options, Wait};

    fn payload(i: usize) -> Vec<u8> {
        let mut data = vec![b'x'; 1024];
        let tag = i.to_le_bytes();
        data[..tag.len()].copy_from_slice(&tag);
        data
    }

    fn counter() -> usize {
        static N: AtomicUsize = AtomicUsize::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn fill(cache: &Cache, key: &Key, data: &[u8]) {
        cache.get_or_fill(key, Wait::NoWait, |d| std::fs::write(d.path().join("payload"), data)).unwrap();
    }

    /// safecache's hit on a 1 KiB entry (as `get_hit`).
    #[divan::bench]
    fn safecache_get_hit_1k(bencher: Bencher<'_, '_>) {
        let (_tmp, cache) = super::cache();
        let key = Key::new("hit").unwrap();
        fill(&cache, &key, &payload(0));
        bencher.bench_local(|| cache.get(&key).unwrap().unwrap());
    }

    /// cacache's hit: `metadata_sync` of a 1 KiB entry (reads and parses
    /// the key's index bucket).
    #[divan::bench]
    fn cacache_metadata_hit_1k(bencher: Bencher<'_, '_>) {
        let (tmp, _cache) = super::cache();
        let dir = tmp.path().join("cacache");
        cacache::write_sync(&dir, "hit", payload(0)).unwrap();
        bencher.bench_local(|| cacache::metadata_sync(&dir, "hit").unwrap().unwrap());
    }

    /// safecache's fill of a new 1 KiB entry with no fsync.
    #[divan::bench(sample_count = 200)]
    fn safecache_fill_1k_unsynced(bencher: Bencher<'_, '_>) {
        let (_tmp, cache) = super::cache();
        let cache =
            Cache::open_ambient(cache.path(), Options { durability: Some(Durability::None), ..Options::default() })
                .unwrap();
        bencher.with_inputs(|| (super::fresh_key(), payload(counter()))).bench_local_values(|(key, data)| {
            fill(&cache, &key, &data);
        });
    }

    /// safecache's default fill of a new 1 KiB entry: every file and
    /// directory fsynced, and the root after the rename.
    #[divan::bench(sample_count = 200)]
    fn safecache_fill_1k_fsynced(bencher: Bencher<'_, '_>) {
        let (_tmp, cache) = super::cache();
        bencher.with_inputs(|| (super::fresh_key(), payload(counter()))).bench_local_values(|(key, data)| {
            fill(&cache, &key, &data);
        });
    }

    /// cacache's `write_sync` of a new 1 KiB entry under a new key (no
    /// fsync).
    #[divan::bench(sample_count = 200)]
    fn cacache_write_1k(bencher: Bencher<'_, '_>) {
        let (tmp, _cache) = super::cache();
        let dir = tmp.path().join("cacache");
        bencher.with_inputs(|| (counter(), payload(counter()))).bench_local_values(|(i, data)| {
            cacache::write_sync(&dir, format!("bench/{i}"), data).unwrap();
        });
    }
}
