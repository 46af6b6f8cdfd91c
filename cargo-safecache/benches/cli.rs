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

/// The remote tier's fixture: an entry of [`REMOTE_FILES`] files uploaded
/// to a fresh bucket of the S3 server the bench runs under (`cargo xtask
/// bench cli` starts moto and names it in `SAFECACHE_TEST_S3_ENDPOINT`),
/// and its archive fetched once to a local file, for the baselines.
struct RemoteFixture {
    tmp: tempfile::TempDir,
    url: String,
    archive: PathBuf,
    archive_url: String,
}

/// The files of the remote rows' entry: 100 directories of 10 files each,
/// 1 to 8 KiB of varied bytes each (about 4.5 MiB).
const REMOTE_FILES: usize = 1000;

/// curl's options to sign its requests with the dummy credentials.
const CURL_S3: [&str; 4] = ["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "bench:bench"];

/// The S3 server's endpoint: the remote rows need it.
fn endpoint() -> String {
    std::env::var("SAFECACHE_TEST_S3_ENDPOINT")
        .expect("the remote rows need an S3 server: run `cargo xtask bench cli`, which starts moto")
}

/// `cmd` with the S3 server's dummy credentials.
fn with_s3(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env("AWS_REGION", "us-east-1")
}

fn remote_fixture() -> RemoteFixture {
    let base = std::env::var_os("SAFECACHE_BENCH_DIR").unwrap_or_else(|| "/tmp".into());
    let tmp = tempfile::tempdir_in(base).unwrap();
    let bucket = format!("bench-{}", std::process::id());
    let endpoint = endpoint();
    let created = Command::new("curl")
        .args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success(), "cannot make the bucket {bucket} at {endpoint}");
    let src = tmp.path().join("src");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for d in 0..REMOTE_FILES / 10 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..10 {
            // Text-like bytes that zstd compresses about as source code does.
            let len = 1024 + (seed % 7168) as usize;
            let mut bytes = Vec::with_capacity(len);
            while bytes.len() < len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                bytes.extend_from_slice(format!("let x{} = {};\n", seed % 97, seed % 100_003).as_bytes());
            }
            bytes.truncate(len);
            std::fs::write(dir.join(format!("f{f}.rs")), bytes).unwrap();
        }
    }
    let url = format!("s3://{bucket}/bench");
    let fixture = RemoteFixture { url, archive: tmp.path().join("entry.tar.zst"), archive_url: String::new(), tmp };
    let fill = format!("cp -a '{}'/. \"$SAFECACHE_OUT\"", src.display());
    run(with_s3(
        &mut fixture.safecache(&fixture.tmp.path().join("writer"), &["run", "--key", "tree", "--", "sh", "-c", &fill]),
    ));
    // The archive's object, read from the manifest the fill uploaded, and
    // fetched once for the local baseline.
    let manifest_url = format!("{endpoint}/{bucket}/bench/default/v1/manifests/tree");
    let manifest = Command::new("curl").args(CURL_S3).args(["-sf", &manifest_url]).output().unwrap();
    assert!(manifest.status.success(), "the fill uploaded no manifest to {manifest_url}");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest.stdout).unwrap();
    let hash = manifest["archive"]["blake3"].as_str().unwrap().to_owned();
    let archive_url = format!("{endpoint}/{bucket}/bench/default/v1/archives/{hash}.tar.zst");
    let fetched = Command::new("curl")
        .args(CURL_S3)
        .args(["-sf", "-o"])
        .arg(&fixture.archive)
        .arg(&archive_url)
        .status()
        .unwrap();
    assert!(fetched.success(), "cannot fetch {archive_url}");
    RemoteFixture { archive_url, ..fixture }
}

impl RemoteFixture {
    fn safecache(&self, cache: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--cache-dir").arg(cache).args(["--remote-url", &self.url]).args(args);
        cmd
    }

    /// A fresh, empty directory for one sample (made outside the timing).
    fn fresh(&self) -> PathBuf {
        tempfile::tempdir_in(self.tmp.path()).unwrap().keep()
    }

    /// A fresh cache, made with `init` outside the timing.
    fn fresh_cache(&self, durability: &str) -> PathBuf {
        let cache = self.fresh();
        run(Command::new(BIN).arg("--cache-dir").arg(&cache).args(["--durability", durability, "init"]));
        cache
    }
}

/// A remote hit: `run --key` of a key the local cache lacks and the S3
/// server has, whose fill would fail: download, verify, extract, publish
/// (1,000 files, durability `none`, as the baselines sync nothing).
#[divan::bench(sample_count = 20)]
fn remote_hit_1000_files(bencher: Bencher<'_, '_>) {
    let f = remote_fixture();
    bencher
        .with_inputs(|| f.fresh_cache("none"))
        .bench_local_values(|cache| run(with_s3(&mut f.safecache(&cache, &["run", "--key", "tree", "--", "false"]))));
}

/// The same remote hit at the default durability (`full`): every file and
/// directory synced before the publish.
#[divan::bench(sample_count = 20)]
fn remote_hit_1000_files_synced(bencher: Bencher<'_, '_>) {
    let f = remote_fixture();
    bencher
        .with_inputs(|| f.fresh_cache("full"))
        .bench_local_values(|cache| run(with_s3(&mut f.safecache(&cache, &["run", "--key", "tree", "--", "false"]))));
}

/// The limit of the remote rows: the same archive fetched from the same
/// server by `curl` and unpacked by `zstd -dc | tar -x` (no check, no
/// sync, no lock).
#[divan::bench(sample_count = 20)]
fn baseline_curl_zstd_tar_1000_files(bencher: Bencher<'_, '_>) {
    let f = remote_fixture();
    bencher.with_inputs(|| f.fresh()).bench_local_values(|dir| {
        let script =
            format!("curl {} -sf '{}' | zstd -dcq | tar -x -C '{}'", CURL_S3.join(" "), f.archive_url, dir.display());
        run(Command::new("sh").args(["-c", &script]));
    });
}

/// `tar --zstd -x` of the same archive from a local file: the extraction
/// alone.
#[divan::bench(sample_count = 20)]
fn baseline_zstd_tar_local_1000_files(bencher: Bencher<'_, '_>) {
    let f = remote_fixture();
    bencher.with_inputs(|| f.fresh()).bench_local_values(|dir| {
        run(Command::new("tar").arg("--zstd").arg("-xf").arg(&f.archive).arg("-C").arg(&dir));
    });
}
