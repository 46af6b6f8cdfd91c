//! The command line's own cost, each row beside the bare command it is
//! measured against in the same run (docs/BENCHMARKS.md, "The command
//! line"): one process started by this bench per sample, stdin, stdout and
//! stderr on /dev/null, as a build script or CI step runs it.
//!
//! Run with `cargo bench -p cargo-safecache --bench cli` (or `cargo xtask
//! bench cli`). Under `cargo test` each row runs once (the CI smoke run).
#![allow(clippy::disallowed_methods)] // the baselines are plain std::fs

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use divan::Bencher;

fn main() {
    divan::main();
}

const BIN: &str = env!("CARGO_BIN_EXE_safecache");

/// A cache directory with the entry `hit` filled, and a lock file beside it
/// for the `flock(1)` baseline.
struct Fixture {
    _tmp: tempfile::TempDir,
    cache: PathBuf,
    lock: PathBuf,
}

fn fixture() -> Fixture {
    let base = std::env::var_os("SAFECACHE_BENCH_DIR").unwrap_or_else(|| "/tmp".into());
    let tmp = tempfile::tempdir_in(base).unwrap();
    let cache = tmp.path().join("cache");
    let lock = tmp.path().join("LOCK");
    std::fs::File::create(&lock).unwrap();
    let fixture = Fixture { cache, lock, _tmp: tmp };
    run(&mut fixture.safecache(&["run", "--key", "hit", "--", "sh", "-c", "echo 4k > \"$SAFECACHE_OUT/payload\""]));
    fixture
}

impl Fixture {
    fn safecache(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--cache-dir").arg(&self.cache).args(args);
        cmd
    }
}

/// Runs `cmd` to its end, quietly, and checks that it succeeded.
fn run(cmd: &mut Command) {
    // No SAFECACHE_* variable of the caller's may change what is measured.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SAFECACHE_") {
            cmd.env_remove(name);
        }
    }
    let status = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "{cmd:?} failed: {status}");
}

fn flock(lock: &Path) -> Command {
    let mut cmd = Command::new("flock");
    cmd.arg(lock).arg("true");
    cmd
}

/// The consuming form on a hit: lease, pin, run CMD (`true`).
#[divan::bench]
fn use_hit(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| run(&mut f.safecache(&["use", "--key", "hit", "--", "true"])));
}

/// The README's form, with a fill given, which a hit never runs.
#[divan::bench]
fn use_hit_with_fill(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| run(&mut f.safecache(&["use", "--key", "hit", "--fill", "exit 1", "--", "true"])));
}

/// CMD under the cache's lease only.
#[divan::bench]
fn run_lease(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| run(&mut f.safecache(&["run", "--", "true"])));
}

/// A hit without CMD: the entry's path on stdout.
#[divan::bench]
fn path_hit(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| run(&mut f.safecache(&["path", "hit"])));
}

/// The binary's start-up and exit: `dir` resolves the cache directory and
/// prints it, touching no cache.
#[divan::bench]
fn startup_dir(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| run(&mut f.safecache(&["dir"])));
}

/// The limit of every row above: `flock LOCKFILE true`, a lock taken and
/// CMD run under it by one small C program.
#[divan::bench]
fn baseline_flock_true(bencher: Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| run(&mut flock(&f.lock)));
}

/// What starting any process costs here: `true`.
#[divan::bench]
fn baseline_true(bencher: Bencher<'_, '_>) {
    bencher.bench_local(|| run(&mut Command::new("true")));
}
