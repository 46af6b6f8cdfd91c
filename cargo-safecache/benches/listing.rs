//! The listing rows of issue 17: `ls`, `status` and `init` (of the cache
//! directory itself, which counts its entries) over a cache of 100,000
//! one-file entries, each beside a `find` walk of the same directory in the
//! same run, with each process's peak resident memory (`ru_maxrss` from
//! wait4(2)). Every row runs the real `safecache` binary, stdout and stderr
//! on /dev/null, `ROUNDS` times in turn with `find`; the medians are
//! reported (divan's repeated samples of a one-second row would take
//! minutes).
//!
//! The cache is on tmpfs (`/dev/shm`, where there is one) unless
//! `SAFECACHE_BENCH_DIR` names another place: building 100,000 entries on
//! this machine's ext4 takes minutes while other builds sync (7 ms a fill),
//! and on tmpfs 25 s. Every row walks a warm tree either way, from the
//! kernel's dentry and inode caches, `find` as much as the others.
//!
//! Run with `cargo bench -p cargo-safecache --bench listing` (or `cargo
//! xtask bench listing`); `SAFECACHE_BENCH_FILES` changes the 100,000 (the
//! CI smoke run uses 1,000).
#![allow(clippy::disallowed_methods, clippy::print_stdout)] // plain std::fs setup, a report on stdout

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use safecache::{Cache, Durability, Key, Options, Wait};

const BIN: &str = env!("CARGO_BIN_EXE_safecache");
const ROUNDS: usize = 3;

/// One run of a process: how long from spawn to its exit, and its peak
/// resident set in KiB.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    max_rss_kib: i64,
}

/// Runs `cmd` quietly to its end and checks that it succeeded. The child is
/// reaped by wait4(2), which gives its own rusage.
fn measure(cmd: &mut Command) -> Run {
    // No SAFECACHE_* variable of the caller's may change what is measured.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SAFECACHE_") {
            cmd.env_remove(name);
        }
    }
    let start = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; `status` and `usage` are valid
    // for writes. `child` is never waited on by std after this.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed: {status:#x}");
    drop(child);
    Run { wall, max_rss_kib: usage.ru_maxrss }
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.wall);
    let wall = runs[runs.len() / 2].wall;
    let max_rss_kib = runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
    Run { wall, max_rss_kib }
}

fn main() {
    let n: usize = std::env::var("SAFECACHE_BENCH_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let base = std::env::var_os("SAFECACHE_BENCH_DIR")
        .unwrap_or_else(|| if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" }.into());
    let tmp = tempfile::tempdir_in(base).unwrap();
    let dir = tmp.path().join("cache");

    let start = Instant::now();
    build(&dir, n);
    println!("built a cache of {n} one-file entries in {:.1} s", start.elapsed().as_secs_f64());

    let safecache = |args: &[&OsStr]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--cache-dir").arg(&dir).args(args);
        cmd
    };
    let find = || {
        let mut cmd = Command::new("find");
        cmd.arg(&dir);
        cmd
    };
    // Warm the page cache and the dentries for every row alike.
    measure(&mut find());
    let rows: [(&str, &[&OsStr]); 3] = [
        ("ls", &[OsStr::new("ls")]),
        ("status", &[OsStr::new("status")]),
        ("init", &[OsStr::new("init"), dir.as_os_str()]),
    ];
    let mut finds = Vec::new();
    let mut measured: Vec<Vec<Run>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        finds.push(measure(&mut find()));
        for ((_, args), runs) in rows.iter().zip(&mut measured) {
            runs.push(measure(&mut safecache(args)));
        }
    }
    let find = median(finds);
    println!(
        "find {}: {:.0} ms, peak RSS {:.1} MB (medians of {ROUNDS})",
        dir.display(),
        ms(find.wall),
        mb(find.max_rss_kib)
    );
    for ((name, _), runs) in rows.iter().zip(measured) {
        let run = median(runs);
        println!(
            "{name} over {n} entries: {:.0} ms, {:.2}× find (target ≤ 2×); peak RSS {:.1} MB",
            ms(run.wall),
            run.wall.as_secs_f64() / find.wall.as_secs_f64(),
            mb(run.max_rss_kib)
        );
    }
}

/// Fills `n` entries of one small file each, without fsyncs (the setup is
/// not measured; the rows read the cache, they do not sync it).
fn build(dir: &Path, n: usize) {
    let quick = Cache::open_ambient(dir, Options { durability: Some(Durability::None), ..Options::default() }).unwrap();
    for i in 0..n {
        let key = Key::new(&format!("pkg/e{i}")).unwrap();
        quick.get_or_fill(&key, Wait::NoWait, |d| std::fs::write(d.path().join("f"), b"x")).unwrap();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mb(kib: i64) -> f64 {
    kib as f64 / 1024.0
}
