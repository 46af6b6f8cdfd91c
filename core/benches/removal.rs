//! The big removal rows of issue 17, measured once each beside `rm -rf`
//! of an identical tree in the same run (divan's repeated samples would
//! take minutes per row):
//! - `remove` of an entry of 100,000 files: how long until it returns, then
//!   how long [`Cache::reclaim`] takes to delete the trash, against `rm -rf`;
//! - `clean` of 100,000 one-file entries: the same.
//!
//! Run with `cargo bench -p safecache --bench removal` (or `cargo xtask
//! bench removal`); `SAFECACHE_BENCH_FILES` changes the 100,000.
#![allow(clippy::disallowed_methods, clippy::print_stdout)] // plain std::fs baselines, a report on stdout

use std::path::Path;
use std::time::{Duration, Instant};

use safecache::{Cache, Durability, Key, Options, Wait};

/// Builds `n` empty files under `dir`, 1,000 per subdirectory.
fn build_tree(dir: &Path, n: usize) -> std::io::Result<()> {
    for i in 0..n {
        let sub = dir.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::File::create(sub.join(format!("f{i}")))?;
    }
    Ok(())
}

/// How many names are under `dir`, directories included.
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() { count_files(&e.path()) } else { 0 }
        })
        .sum()
}

fn rm_rf(path: &Path) -> Duration {
    let start = Instant::now();
    let status = std::process::Command::new("rm").arg("-rf").arg(path).status().unwrap();
    assert!(status.success());
    start.elapsed()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let n: usize = std::env::var("SAFECACHE_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rows = std::env::var("SAFECACHE_BENCH_ROWS").unwrap_or_default();
    let base = std::env::var_os("SAFECACHE_BENCH_DIR").unwrap_or_else(|| "/tmp".into());
    let tmp = tempfile::tempdir_in(base).unwrap();

    let cache = Cache::open_ambient(tmp.path().join("cache"), Options::default()).unwrap();
    if rows != "clean" {
        rm_row(&cache, tmp.path(), n);
    }
    if rows != "rm" {
        clean_row(&cache, tmp.path(), n);
    }
}

/// rm of one entry of n files.
fn rm_row(cache: &Cache, tmp: &Path, n: usize) {
    let key = Key::new("big").unwrap();
    cache.get_or_fill(&key, Wait::NoWait, |d| build_tree(d.path(), n)).unwrap();
    let baseline = tmp.join("baseline");
    build_tree(&baseline, n).unwrap();
    let start = Instant::now();
    assert!(cache.remove(&key, Wait::NoWait).unwrap());
    let returned = start.elapsed();
    let start = Instant::now();
    let report = cache.reclaim(false).unwrap();
    let reclaim = start.elapsed();
    assert_eq!((report.items, report.failures.len()), (1, 0));
    let rf = rm_rf(&baseline);
    println!(
        "rm of an entry of {n} files: returns in {} (target ≤ 20 ms); reclaim {} vs rm -rf {}: {:.2}× (target ≤ 0.7×)",
        ms(returned),
        ms(reclaim),
        ms(rf),
        reclaim.as_secs_f64() / rf.as_secs_f64()
    );
}

/// clean of n one-file entries.
fn clean_row(cache: &Cache, tmp: &Path, n: usize) {
    // Filled without fsyncs (the setup is not
    // measured; clean itself runs with the default durability).
    let quick = Cache::open_ambient(cache.path(), Options { durability: Some(Durability::None), ..Options::default() })
        .unwrap();
    for i in 0..n {
        let key = Key::new(&format!("e{i}")).unwrap();
        quick.get_or_fill(&key, Wait::NoWait, |d| std::fs::File::create(d.path().join("f")).map(drop)).unwrap();
    }
    drop(quick);
    let baseline = tmp.join("baseline2");
    std::fs::create_dir(&baseline).unwrap();
    for i in 0..n {
        let e = baseline.join(format!("e{i}"));
        std::fs::create_dir(&e).unwrap();
        std::fs::File::create(e.join("f")).unwrap();
    }
    let start = Instant::now();
    let cleaned = cache.clean(Wait::NoWait).unwrap();
    let returned = start.elapsed();
    assert_eq!(cleaned.entries, n);
    // The same tree as the reclaim deletes: the entries and what the cache
    // kept of them (their lock files, last-use stamps and manifests).
    let same = tmp.join("same");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(cache.path().join(".safecache/trash"))
        .arg(&same)
        .status()
        .unwrap();
    assert!(status.success());
    let files = count_files(&same);
    let start = Instant::now();
    let report = cache.reclaim(false).unwrap();
    let reclaim = start.elapsed();
    assert!(report.failures.is_empty(), "first failure: {:?}", report.failures.first());
    let left = std::fs::read_dir(cache.path().join(".safecache/trash")).unwrap().count();
    assert_eq!(left, 0, "the reclaim deletes the whole trash");
    let rf = rm_rf(&baseline);
    let rf_same = rm_rf(&same);
    println!(
        "clean of {n} entries: returns in {} (target ≤ 1 s); reclaim {} vs rm -rf {} of the same tree \
         ({files} names): {:.2}× (target ≤ 0.7×); vs rm -rf {} of the entries alone: {:.2}×",
        ms(returned),
        ms(reclaim),
        ms(rf_same),
        reclaim.as_secs_f64() / rf_same.as_secs_f64(),
        ms(rf),
        reclaim.as_secs_f64() / rf.as_secs_f64()
    );
}
