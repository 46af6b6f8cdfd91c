//! The remote tier end to end (docs/REMOTE.md): real processes, each with a
//! cache of its own, sharing entries through a `file://` directory or an S3
//! server. The S3 tests (named `*s3*`) use the moto server that `cargo
//! xtask s3` and the gate start and name in `SAFECACHE_TEST_S3_ENDPOINT`;
//! without one they fail, they do not skip:
//!
//! ```sh
//! cargo xtask s3 -- -p cargo-safecache --test cli remote::
//! ```

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::support::{Bg, Out, Sandbox, files_containing, json_reports, mkfifo, names, snapshot, stdout_of, tree_of};

/// A marker in what [`SAMPLE`] fills, to find any trace of it.
const MARKER: &str = "REMOTE-CONTENT";

/// A fill with a directory, an executable, an empty file, a symlink that
/// stays inside, and bytes that zstd cannot shrink.
const SAMPLE: &str = r#"cd "$SAFECACHE_OUT" && mkdir -p d/e && echo REMOTE-CONTENT > f && printf '#!/bin/sh\necho hi\n' > d/run && chmod +x d/run && ln -s ../f d/link && : > d/e/empty && head -c 100000 /dev/urandom > blob"#;

/// A fill that leaves a trace if it runs and fails.
const MUST_NOT_RUN: &str = r#"touch "$T/ran"; exit 1"#;

/// A fill whose output is local.
const LOCAL: &str = r#"echo local > "$SAFECACHE_OUT/f""#;

/// Where the tests' entries go.
enum Store {
    /// A `file://` store: its directory.
    File(PathBuf),
    /// A bucket of an S3 server at `endpoint`.
    S3 { endpoint: String, bucket: String },
}

impl Store {
    /// A `file://` store in `dir`, which is made.
    fn file(dir: PathBuf) -> Store {
        std::fs::create_dir_all(&dir).expect("make the store's dir");
        Store::File(dir)
    }

    /// A new bucket on the test S3 server.
    fn s3() -> Store {
        let endpoint = s3_endpoint();
        let bucket = s3_bucket(&endpoint);
        Store::S3 { endpoint, bucket }
    }

    fn url(&self) -> String {
        match self {
            Store::File(dir) => format!("file://{}", dir.display()),
            Store::S3 { bucket, .. } => format!("s3://{bucket}/team/cache"),
        }
    }

    /// `cargo-safecache ARGS` on `sb`'s cache with this store as its remote
    /// (SAFECACHE_REMOTE), and no remote setting of the test's own
    /// environment.
    fn cmd<I, S>(&self, sb: &Sandbox, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = no_remote(sb, args);
        cmd.env("SAFECACHE_REMOTE", self.url());
        if let Store::S3 { endpoint, .. } = self {
            s3_env(&mut cmd, endpoint);
        }
        cmd
    }

    fn run<I, S>(&self, sb: &Sandbox, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Out::of(&mut self.cmd(sb, args))
    }

    fn spawn<I, S>(&self, sb: &Sandbox, args: I) -> Bg
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Bg::spawn(self.cmd(sb, args))
    }

    /// The keys `ls --remote` lists.
    fn listed(&self) -> Vec<String> {
        let out = self.run(&Sandbox::new(), ["--message-format", "json", "ls", "--remote"]);
        out.assert_code(0);
        json_reports(out.stdout.lines(), "remote-entry").iter().map(|v| v["key"].as_str().unwrap().to_owned()).collect()
    }
}

/// `cargo-safecache ARGS` on `sb`'s cache, with no remote setting from the
/// test's environment (AWS_*, SAFECACHE_REMOTE*).
fn no_remote<I, S>(sb: &Sandbox, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = sb.cmd(args);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if text.starts_with("AWS_") || text.starts_with("SAFECACHE_REMOTE") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The variables that point object_store's S3 client at `endpoint`.
pub(crate) fn s3_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
}

pub(crate) fn s3_endpoint() -> String {
    std::env::var("SAFECACHE_TEST_S3_ENDPOINT").expect(
        "SAFECACHE_TEST_S3_ENDPOINT names the S3 server the S3 tests use: run them with `cargo xtask s3 -- -p \
         cargo-safecache --test cli remote::` (the gate starts moto too)",
    )
}

/// A new bucket on the server, named at random: tests share the server.
pub(crate) fn s3_bucket(endpoint: &str) -> String {
    let mut random = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).expect("read /dev/urandom");
    let name = format!("safecache-cli-{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = std::net::TcpStream::connect(host).unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    write!(stream, "PUT /{name} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    assert!(response.starts_with("HTTP/1.1 200"), "creating bucket {name}: {response}");
    name
}

/// `--message-format json` and then `args`.
fn json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--message-format", "json"];
    all.extend_from_slice(args);
    all
}

/// The one JSON report of `reason` that `out` printed.
#[track_caller]
fn report(out: &Out, reason: &str) -> Value {
    let mut found = json_reports(out.stdout.lines(), reason);
    assert_eq!(found.len(), 1, "expected one {reason:?} report\n{out}");
    found.remove(0)
}

/// The names at a cache's root, as a set of `&str`.
fn root(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The root of a cache holding the one entry `entry`: nothing else.
fn only_entry(entry: &str) -> BTreeSet<String> {
    root(&[".safecache", "CACHEDIR.TAG", entry])
}

/// The objects under `<store>/default/v1/<kind>`.
fn objects(store: &Path, kind: &str) -> BTreeSet<String> {
    names(&store.join("default/v1").join(kind))
}

/// Fills `demo/x` with [`SAMPLE`] in one cache, then `run --key demo/x`
/// in another with a fill that fails if it runs: the second restores the
/// entry from the store, whole, and never runs its command.
fn restored_in_another_cache(store: &Store) {
    let a = Sandbox::new();
    let out = store.run(&a, json(&["run", "--key", "demo/x", "--", "sh", "-c", SAMPLE]));
    out.assert_code(0);
    let filled = report(&out, "entry");
    assert_eq!(filled["remote"]["fetch"], "miss", "{out}");
    assert_eq!(filled["remote"]["upload"], "published", "{out}");
    assert!(filled["remote"]["bytes_uploaded"].as_u64().unwrap_or(0) > 100_000, "{out}");
    assert_eq!(store.listed(), ["demo/x"]);

    let b = Sandbox::new();
    let out = store.run(&b, json(&["run", "--key", "demo/x", "--", "sh", "-c", MUST_NOT_RUN]));
    out.assert_code(0);
    let restored = report(&out, "entry");
    assert_eq!(restored["remote"]["fetch"], "hit", "{out}");
    assert!(restored["remote"]["bytes_downloaded"].as_u64().unwrap_or(0) > 100_000, "{out}");
    assert_eq!(restored["remote"]["upload"], Value::Null, "a restored entry is not uploaded again\n{out}");
    assert!(!b.path("ran").exists(), "the fill command did not run\n{out}");
    let entry = b.cache.join("demo+x");
    assert_eq!(restored["path"], entry.display().to_string());
    let tree = tree_of(&entry);
    assert_eq!(tree, tree_of(&a.cache.join("demo+x")), "the restored entry is the filled one");
    assert!(tree["d/run"].starts_with("file exec "), "{tree:?}");
    assert_eq!(tree["d/link"], "symlink -> ../f");
    assert_eq!(names(&b.cache), only_entry("demo+x"));
    Out::of(&mut no_remote(&b, ["verify", "demo/x"])).assert_code(0);

    // Once there, it is a local hit: the remote is not consulted.
    let out = store.run(&b, json(&["run", "--key", "demo/x", "--", "sh", "-c", MUST_NOT_RUN]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], Value::Null, "{out}");
}

#[test]
fn an_entry_filled_in_one_cache_is_restored_in_another_over_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    restored_in_another_cache(&Store::file(tmp.path().join("store")));
}

#[test]
fn an_entry_filled_in_one_cache_is_restored_in_another_over_s3() {
    restored_in_another_cache(&Store::s3());
}

/// Six processes, each with a cache of its own, released at once by a
/// FIFO, fill one key with the same command: exactly one publishes, every
/// other finds it there, and all six end with the same entry.
fn six_caches_race(store: &Store) {
    let gate_dir = tempfile::tempdir().expect("temp dir");
    let gate = gate_dir.path().join("gate");
    mkfifo(&gate);
    // Held open for writing (and reading, so that this open does not block):
    // the fills' opens never block, their reads wait for a line each.
    let mut go = std::fs::OpenOptions::new().read(true).write(true).open(&gate).expect("open the gate");
    let script = format!(
        r#"echo filling; read go < '{}'; cd "$SAFECACHE_OUT" && mkdir d && echo same > d/f && printf '%s\n' 1 2 3 > n && chmod +x n"#,
        gate.display()
    );
    let caches: Vec<Sandbox> = (0..6).map(|_| Sandbox::new()).collect();
    let mut runs: Vec<Bg> =
        caches.iter().map(|sb| store.spawn(sb, json(&["run", "--key", "race/k", "--", "sh", "-c", &script]))).collect();
    for run in &mut runs {
        run.expect_stderr_line("filling");
    }
    // All six missed and are filling: release them at once.
    go.write_all("go\n".repeat(runs.len()).as_bytes()).expect("open the gate");
    let mut uploads = Vec::new();
    for run in runs {
        let (status, lines) = run.finish();
        assert_eq!(status.code(), Some(0), "{lines:?}");
        let reports = json_reports(stdout_of(&lines), "entry");
        assert_eq!(reports.len(), 1, "{lines:?}");
        assert_eq!(reports[0]["remote"]["fetch"], "miss", "{lines:?}");
        uploads.push(reports[0]["remote"]["upload"].as_str().unwrap_or("null").to_owned());
    }
    uploads.sort();
    let mut expected = vec!["already-there".to_owned(); 5];
    expected.push("published".to_owned());
    assert_eq!(uploads, expected, "exactly one publishes");
    let first = tree_of(&caches[0].cache.join("race+k"));
    for sb in &caches {
        assert_eq!(tree_of(&sb.cache.join("race+k")), first, "every cache holds the same entry");
    }
    match store {
        Store::File(dir) => assert_eq!(objects(dir, "manifests"), root(&["race+k"]), "exactly one manifest"),
        Store::S3 { .. } => assert_eq!(store.listed(), ["race/k"]),
    }
    // And what the store holds restores whole.
    let late = Sandbox::new();
    let out = store.run(&late, json(&["run", "--key", "race/k", "--", "sh", "-c", MUST_NOT_RUN]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "{out}");
    assert_eq!(tree_of(&late.cache.join("race+k")), first);
}

#[test]
fn six_caches_racing_for_one_key_publish_it_once_over_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    six_caches_race(&Store::file(tmp.path().join("store")));
}

#[test]
fn six_caches_racing_for_one_key_publish_it_once_over_s3() {
    six_caches_race(&Store::s3());
}

/// A `file://` store holding `k` (filled with [`SAMPLE`] by a cache of its
/// own), uploaded with `flags`.
fn store_with(dir: PathBuf, key: &str, flags: &[&str]) -> Store {
    let store = Store::file(dir);
    let sb = Sandbox::new();
    let mut args = flags.to_vec();
    args.extend(json(&["run", "--key", key, "--", "sh", "-c", SAMPLE]));
    let out = store.run(&sb, args);
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["upload"], "published", "{out}");
    store
}

/// The one archive of a `file://` store.
fn archive(store: &Store) -> PathBuf {
    let Store::File(dir) = store else { panic!("a file:// store") };
    let archives = objects(dir, "archives");
    assert_eq!(archives.len(), 1, "{archives:?}");
    dir.join("default/v1/archives").join(archives.first().unwrap())
}

/// `run --key k` in a new cache, reading `store` with `flags`: a miss, so
/// the fill runs and publishes its own output, and nothing of the store's
/// content is left anywhere in the cache.
#[track_caller]
fn misses(store: &Store, flags: &[&str], case: &str) {
    let b = Sandbox::new();
    let mut args = flags.to_vec();
    args.extend(json(&["run", "--key", "k", "--", "sh", "-c", LOCAL]));
    let out = store.run(&b, args);
    out.assert_code(0);
    let fetch = report(&out, "entry")["remote"]["fetch"].clone();
    assert!(fetch == "error" || fetch == "miss", "{case}: a miss\n{out}");
    if fetch == "error" {
        assert_eq!(out.stderr.matches("could not restore").count(), 1, "{case}: one warning\n{out}");
    }
    let entry = b.cache.join("k");
    assert_eq!(std::fs::read_to_string(entry.join("f")).ok().as_deref(), Some("local\n"), "{case}\n{out}");
    assert_eq!(tree_of(&entry).len(), 1, "{case}: the entry is the fill's output only");
    assert_eq!(names(&b.cache), only_entry("k"), "{case}");
    assert!(names(&b.cache.join(".safecache/tmp")).is_empty(), "{case}: no temp is left");
    assert_eq!(files_containing(&b.cache, MARKER.as_bytes()), Vec::<PathBuf>::new(), "{case}: no trace of the remote");
}

/// Makes a key pair `name` in `dir` with `remote keygen`, returning the
/// paths of its secret and public key files.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let sb = Sandbox::new();
    let out = no_remote(&sb, ["remote", "keygen"]).arg(dir.join(name)).output().expect("run keygen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(public.starts_with("ed25519:") && public.len() == 8 + 64, "{public}");
    (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")), public)
}

/// A store's archive or manifest that is tampered with, truncated,
/// oversized, unsigned or signed by an untrusted key while keys are
/// trusted, or moved from another key is a miss: the fill runs, and
/// nothing of the store's content reaches the cache.
#[test]
fn a_damaged_or_untrusted_remote_entry_is_a_miss_and_leaves_no_trace() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = tmp.path();

    // A control: the intact store hits.
    let intact = store_with(t.join("intact"), "k", &[]);
    let b = Sandbox::new();
    let out = intact.run(&b, json(&["run", "--key", "k", "--", "sh", "-c", MUST_NOT_RUN]));
    assert_eq!(report(out.assert_code(0), "entry")["remote"]["fetch"], "hit", "{out}");

    let flipped = store_with(t.join("flipped"), "k", &[]);
    let path = archive(&flipped);
    let mut bytes = std::fs::read(&path).expect("read the archive");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).expect("tamper");
    misses(&flipped, &[], "a byte flipped in the archive");

    let truncated = store_with(t.join("truncated"), "k", &[]);
    let path = archive(&truncated);
    let bytes = std::fs::read(&path).expect("read the archive");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    misses(&truncated, &[], "a truncated archive");

    let oversized = store_with(t.join("oversized"), "k", &[]);
    let path = archive(&oversized);
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open the archive");
    file.write_all(&[0u8; 4096]).expect("append");
    misses(&oversized, &[], "an archive with bytes appended");

    // An unsigned manifest (no keys trusted) that names the right archive
    // but fewer members than it holds: the extraction stops part-way, after
    // it wrote into the fill's output, which must be emptied before the
    // fill runs in it.
    let miscounted = store_with(t.join("miscounted"), "k", &[]);
    let Store::File(dir) = &miscounted else { unreachable!() };
    let path = dir.join("default/v1/manifests/k");
    // Edited in place: a manifest must be in its canonical form.
    let manifest = std::fs::read_to_string(&path).expect("the manifest");
    assert!(manifest.contains(r#""counts":{"names":7,"#), "{manifest}");
    std::fs::write(&path, manifest.replace(r#""counts":{"names":7,"#, r#""counts":{"names":5,"#)).expect("rewrite");
    misses(&miscounted, &[], "a manifest that counts fewer members than its archive holds");

    let (trusted_key, trusted_pub, _) = keygen(t, "trusted");
    let (other_key, _, _) = keygen(t, "other");
    let trust = ["--remote-trusted-keys", trusted_pub.to_str().unwrap()];
    let untrusted = store_with(t.join("untrusted"), "k", &["--remote-signing-key", other_key.to_str().unwrap()]);
    misses(&untrusted, &trust, "a manifest signed by an untrusted key");
    let unsigned = store_with(t.join("unsigned"), "k", &[]);
    misses(&unsigned, &trust, "an unsigned manifest while keys are trusted");

    // A manifest that a trusted key signed for `other`, moved to `k`'s name.
    let moved = store_with(t.join("moved"), "other", &["--remote-signing-key", trusted_key.to_str().unwrap()]);
    let Store::File(dir) = &moved else { unreachable!() };
    let manifests = dir.join("default/v1/manifests");
    std::fs::rename(manifests.join("other"), manifests.join("k")).expect("move the manifest");
    misses(&moved, &[], "a manifest moved from another key");
    misses(&moved, &trust, "a trusted manifest moved from another key");
}

/// `remote keygen` makes a pair; an upload signed with its secret key hits
/// for a reader that trusts its public key (as a file or as text), and
/// misses for a reader that trusts another key only.
#[test]
fn a_signed_upload_hits_only_for_readers_that_trust_its_key() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = tmp.path();
    let (secret, public_file, public) = keygen(t, "ci");
    let mode = std::fs::metadata(&secret).expect("the secret key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");
    assert_eq!(std::fs::read_to_string(&public_file).expect("the public key").trim(), public);
    // A key is never replaced.
    let sb = Sandbox::new();
    let before = std::fs::read(&secret).expect("read the secret key");
    let out = Out::of(no_remote(&sb, ["remote", "keygen"]).arg(t.join("ci")));
    out.assert_one_line_error(2, "never replaced");
    assert_eq!(std::fs::read(&secret).expect("read the secret key"), before);
    let (_, other_public_file, other_public) = keygen(t, "other");

    let store = store_with(t.join("store"), "k", &["--remote-signing-key", secret.to_str().unwrap()]);
    let Store::File(dir) = &store else { unreachable!() };
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("default/v1/manifests/k")).expect("the manifest"))
            .expect("one JSON line");
    assert_eq!(manifest["signatures"][0]["public_key"], public.as_str(), "{manifest}");

    for trusted in [public_file.to_str().unwrap(), &public, &format!("{other_public},{public}")] {
        let reader = Sandbox::new();
        let out = store.run(
            &reader,
            json(&["--remote-trusted-keys", trusted, "run", "--key", "k", "--", "sh", "-c", MUST_NOT_RUN]),
        );
        out.assert_code(0);
        assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "trusting {trusted}\n{out}");
    }
    for trusted in [other_public_file.to_str().unwrap(), &other_public] {
        misses(&store, &["--remote-trusted-keys", trusted], &format!("trusting only {trusted}"));
    }
}

/// `--remote-mode read-only`: a fill uploads nothing (the store is byte for
/// byte the same, and not even a probe or an archive appeared and went),
/// and an entry still restores.
#[test]
fn a_read_only_remote_is_never_written() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = store_with(tmp.path().join("store"), "k", &[]);
    let Store::File(dir) = &store else { unreachable!() };
    let before = snapshot(dir);

    let sb = Sandbox::new();
    let ro = ["--remote-mode", "read-only"];
    let out = store.run(&sb, [&ro[..], &json(&["run", "--key", "new", "--", "sh", "-c", LOCAL])].concat());
    out.assert_code(0);
    let filled = report(&out, "entry");
    assert_eq!(filled["remote"]["fetch"], "miss", "{out}");
    assert!(filled["remote"]["upload"].is_null(), "{out}");
    let out = store.run(&sb, [&ro[..], &json(&["run", "--key", "k", "--", "sh", "-c", MUST_NOT_RUN])].concat());
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "{out}");
    let out = store.run(
        &sb,
        [&ro[..], &json(&["use", "--key", "new2", "--fill", LOCAL, "--", "sh", "-c", "cat \"$SAFECACHE_ENTRY/f\""])]
            .concat(),
    );
    out.assert_code(0);
    let out = store.run(&sb, [&ro[..], &["remote", "check"]].concat());
    out.assert_code(0);
    // SAFECACHE_REMOTE_MODE says the same.
    let mut cmd = store.cmd(&sb, ["run", "--key", "new3", "--", "sh", "-c", LOCAL]);
    Out::of(cmd.env("SAFECACHE_REMOTE_MODE", "read-only")).assert_code(0);
    let after = snapshot(dir);
    let changed: Vec<&String> = before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.is_empty(), "a read-only remote is never written; changed: {changed:?}");
}

/// A large entry: `files` files in 40 directories, about `bytes` in all, a
/// quarter of them random.
fn large_tree(dir: &Path, files: usize, bytes: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let each = bytes / files;
    for i in 0..files {
        let sub = dir.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&sub).expect("make a dir");
        let content: Vec<u8> = if i % 4 == 0 {
            (0..each / 8).flat_map(|_| next().to_le_bytes()).collect()
        } else {
            format!("file {i}\n").repeat(each / 10).into_bytes()
        };
        std::fs::write(sub.join(format!("f{i:04}")), content).expect("write a file");
    }
}

fn killpg(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

/// A remote hit killed at any point of its run leaves either no entry or
/// the whole entry, which verifies; the next run restores it whole, and gc
/// leaves no orphan.
#[test]
fn a_remote_hit_killed_anywhere_leaves_nothing_or_the_whole_entry() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("source");
    large_tree(&source, 2000, 20 << 20);
    let expected = tree_of(&source);
    let store = Store::file(tmp.path().join("store"));
    let a = Sandbox::new();
    let fill = format!(r#"cp -R '{}/.' "$SAFECACHE_OUT""#, source.display());
    let out = store.run(&a, json(&["run", "--key", "big", "--", "sh", "-c", &fill]));
    assert_eq!(report(out.assert_code(0), "entry")["remote"]["upload"], "published", "{out}");

    let restore = |sb: &Sandbox| {
        let mut cmd = store.cmd(sb, ["--quiet", "run", "--key", "big", "--", "false"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        cmd
    };
    // One whole run, to spread the kills over.
    let sb = Sandbox::new();
    let started = Instant::now();
    assert!(restore(&sb).status().expect("restore").success());
    let whole = started.elapsed();
    assert_eq!(tree_of(&sb.cache.join("big")), expected);

    let points = 10u32;
    let mut outcomes = Vec::new();
    for i in 0..points {
        let sb = Sandbox::new();
        let mut child = restore(&sb).spawn().expect("spawn");
        // The sleep is the perturbation: kills spread from the start to
        // just past the end of a run.
        std::thread::sleep(whole * i / (points - 2));
        killpg(child.id());
        let status = child.wait().expect("wait");
        let entry = sb.cache.join("big");
        let at = format!("kill {i} of {points} after {:?} of {whole:?}", whole * i / (points - 2));
        if entry.exists() {
            let out = Out::of(&mut no_remote(&sb, ["verify", "big"]));
            assert_eq!(out.code, Some(0), "{at}: a published entry verifies\n{out}");
            assert_eq!(tree_of(&entry), expected, "{at}: the entry is whole");
            outcomes.push(if status.success() { "finished" } else { "published" });
        } else {
            outcomes.push("absent");
        }
        // A kill during the cache's first open may leave the marker's
        // staging dir (`.safecache.init-<r>`), which gc deletes
        // (docs/PROTOCOL.md, "open"); nothing else.
        let rest: BTreeSet<String> =
            names(&sb.cache).into_iter().filter(|n| n != "big" && !n.starts_with(".safecache.init-")).collect();
        assert!(rest.is_subset(&root(&[".safecache", "CACHEDIR.TAG"])), "{at}: {rest:?}");

        let mut again = restore(&sb);
        assert!(again.status().expect("restore").success(), "{at}: a later run restores it");
        assert_eq!(tree_of(&entry), expected, "{at}: the later run restores it whole");
        Out::of(&mut no_remote(&sb, ["gc"])).assert_code(0);
        let out = Out::of(&mut no_remote(&sb, ["--message-format", "json", "status"]));
        out.assert_code(0);
        assert_eq!(report(&out, "summary")["orphans"], 0, "{at}: gc leaves no orphan\n{out}");
        assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "{at}: no temp is left");
        assert_eq!(names(&sb.cache), only_entry("big"), "{at}: after gc, the root holds the entry alone");
    }
    assert!(outcomes.contains(&"absent"), "some kills came before the entry was published: {outcomes:?}");
    eprintln!("a whole restore took {whole:?}; outcomes of the kills: {outcomes:?}");
}

/// A bad remote setting is a one-line usage error (exit 2) before anything
/// runs, and changes nothing in the cache.
#[test]
fn a_bad_remote_setting_is_a_one_line_error_that_changes_nothing() {
    let sb = Sandbox::new();
    let t = sb.tmp.path();
    sb.fill("k", "kept");
    let (secret, _, _) = keygen(t, "loose");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let store = t.join("store");
    std::fs::create_dir_all(&store).expect("make the store");
    let url = format!("file://{}", store.display());
    let cases: [(&[&str], &str); 6] = [
        (&["--remote-url", "nope://x"], "nope"),
        (&["--remote-url", &url, "--remote-namespace", "A B"], "namespace"),
        (&["--remote-url", &url, "--remote-signing-key", "/nonexistent/dir/ci.key"], "remote-signing-key"),
        (&["--remote-url", &url, "--remote-signing-key", "/nonexistent/ci.key"], "remote-signing-key"),
        (&["--remote-url", &url, "--remote-signing-key", secret.to_str().unwrap()], "remote-signing-key"),
        (&["--remote-url", &url, "--remote-trusted-keys", "ed25519:zz"], "trusted key"),
    ];
    let before = snapshot(&sb.cache);
    for (flags, fragment) in cases {
        for verb in [
            &["run", "--key", "new", "--", "sh", "-c", r#"touch "$T/ran"; echo x > "$SAFECACHE_OUT/f""#][..],
            &["use", "--key", "new", "--fill", r#"touch "$T/ran"; echo x > "$SAFECACHE_OUT/f""#, "--", "true"],
        ] {
            let out = Out::of(&mut no_remote(&sb, [flags, verb].concat()));
            out.assert_one_line_error(2, fragment);
            assert!(!sb.path("ran").exists(), "{flags:?}: nothing ran");
        }
        let out = Out::of(&mut no_remote(&sb, [flags, &["remote", "check"]].concat()));
        out.assert_one_line_error(2, fragment);
    }
    assert_eq!(snapshot(&sb.cache), before, "nothing changed in the cache");
    assert!(names(&store).is_empty(), "nothing was written to the store");
}

/// Holds every connection made to it, and never answers.
struct Silent {
    port: u16,
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                held.push(stream);
            }
        });
        Silent { port }
    }
}

/// `run --key` with an S3 remote at `endpoint` and a 1 s timeout: the fill
/// runs and its output is published here, the command succeeds, and each
/// transfer warns once.
#[track_caller]
fn fills_despite(endpoint: &str, case: &str, upload: &str) -> Out {
    let sb = Sandbox::new();
    let mut cmd = no_remote(&sb, json(&["--remote-timeout", "1s", "run", "--key", "k", "--", "sh", "-c", LOCAL]));
    cmd.env("SAFECACHE_REMOTE", "s3://bucket/prefix");
    s3_env(&mut cmd, endpoint);
    let out = Out::of(&mut cmd);
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(sb.cache.join("k/f")).ok().as_deref(), Some("local\n"), "{case}\n{out}");
    let filled = report(&out, "entry");
    assert_eq!(filled["remote"]["fetch"], "error", "{case}\n{out}");
    assert_eq!(filled["remote"]["upload"], upload, "{case}\n{out}");
    assert_eq!(
        out.stderr.matches("could not restore").count() + out.stderr.matches("while restoring").count(),
        1,
        "{out}"
    );
    let upload_warnings =
        out.stderr.matches("could not upload").count() + out.stderr.matches("was not uploaded").count();
    assert_eq!(upload_warnings, 1, "{case}: one warning for the upload\n{out}");
    out
}

/// A store that accepts connections and never answers: `--remote-timeout`
/// bounds the download, the fill's command still publishes, and the upload
/// is skipped rather than made to wait as long again.
#[test]
fn a_store_that_never_answers_costs_the_timeout_once_and_a_warning() {
    let silent = Silent::start();
    let out = fills_despite(&format!("http://127.0.0.1:{}", silent.port), "a silent store", "skipped");
    assert!(out.stderr.contains("took longer than 1s (--remote-timeout sets the limit) while restoring"), "{out}");
    assert!(out.stderr.contains("did not answer the download within the remote timeout"), "{out}");
}

/// A store whose port is closed: both transfers fail, each with a
/// warning, and the command's outcome is unchanged.
#[test]
fn an_unreachable_store_warns_and_the_fill_succeeds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    fills_despite(&format!("http://127.0.0.1:{port}"), "a closed port", "error");
}

/// `ls --remote` lists what was uploaded; `remote check` works on a
/// `file://` store; with no remote, both are usage errors.
#[test]
fn ls_remote_and_remote_check_over_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = store_with(tmp.path().join("store"), "demo/a", &[]);
    let sb = Sandbox::new();
    store.run(&sb, ["run", "--key", "demo/b", "--", "sh", "-c", LOCAL]).assert_code(0);
    assert_eq!(store.listed(), ["demo/a", "demo/b"]);
    let out = store.run(&sb, ["ls", "--remote"]);
    out.assert_code(0);
    assert!(out.stdout.contains("demo/a") && out.stdout.contains("demo/b"), "{out}");
    let Store::File(dir) = &store else { unreachable!() };
    let before = snapshot(dir);
    let out = store.run(&sb, json(&["remote", "check"]));
    out.assert_code(0);
    let checked = report(&out, "remote-checked");
    assert_eq!(checked["create_exclusive"], true, "{out}");
    assert!(checked["probe_left"].is_null(), "{out}");
    assert!(objects(dir, "probe").is_empty(), "the probe is deleted");
    assert_eq!(snapshot(dir).len(), before.len() + 1, "only the probe's directory is left");

    for args in [&["remote", "check"][..], &["ls", "--remote"]] {
        Out::of(&mut no_remote(&sb, args)).assert_one_line_error(2, "no remote is configured");
        let mut off = store.cmd(&sb, args);
        Out::of(off.env("SAFECACHE_REMOTE_MODE", "off")).assert_one_line_error(2, "no remote is configured");
    }
}

#[test]
fn ls_remote_and_remote_check_over_s3() {
    let store = Store::s3();
    let sb = Sandbox::new();
    let out = store.run(&sb, json(&["remote", "check"]));
    out.assert_code(0);
    assert_eq!(report(&out, "remote-checked")["create_exclusive"], true, "{out}");
    assert_eq!(store.listed(), Vec::<String>::new());
    store.run(&sb, ["run", "--key", "demo/b", "--", "sh", "-c", LOCAL]).assert_code(0);
    assert_eq!(store.listed(), ["demo/b"]);
}

/// `use --key K --fill F -- CMD` with a remote: CMD runs with the entry
/// and the upload happens beside it. In another cache, `use --fill`
/// restores it without running its fill; `use` without `--fill` does not
/// fill, so it exits 1 without consulting the remote.
#[test]
fn use_with_fill_uploads_and_restores() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::file(tmp.path().join("store"));
    let read = r#"cat "$SAFECACHE_ENTRY/f""#;
    let a = Sandbox::new();
    let out = store.run(&a, json(&["use", "--key", "u", "--fill", SAMPLE, "--", "sh", "-c", read]));
    out.assert_code(0);
    assert!(out.stderr.lines().any(|l| l == MARKER), "CMD read the entry (its stdout goes to stderr with JSON)\n{out}");
    let exited = report(&out, "exited");
    assert_eq!(exited["remote"]["fetch"], "miss", "{out}");
    assert_eq!(exited["remote"]["upload"], "published", "{out}");
    assert_eq!(store.listed(), ["u"]);

    // Without --fill, a local miss is restored from the store too (a fill
    // that runs no command), and CMD runs with it.
    let b = Sandbox::new();
    let out = store.run(&b, json(&["use", "--key", "u", "--", "sh", "-c", read]));
    out.assert_code(0);
    assert!(out.stderr.lines().any(|l| l == MARKER), "CMD read the restored entry\n{out}");
    let exited = report(&out, "exited");
    assert_eq!((&exited["remote"]["fetch"], &exited["hit"]), (&Value::from("hit"), &Value::from(false)), "{out}");
    assert_eq!(tree_of(&b.cache.join("u")), tree_of(&a.cache.join("u")));
    b.run(["verify", "u"]).assert_code(0);

    // A key the store lacks either: exit 1 without running CMD, nothing
    // published, no failure recorded (there was no command to fail), no temp
    // left; and without a remote, nothing is even locked.
    let c = Sandbox::new();
    let out = store.run(&c, ["use", "--key", "nowhere", "--", "touch", c.path("ran").to_str().unwrap()]);
    out.assert_one_line_error(1, "not in the cache");
    assert!(!c.path("ran").exists(), "CMD did not run");
    assert!(out.stderr.contains("nor in the remote tier"), "{out}");
    assert_eq!(names(&c.cache), root(&[".safecache", "CACHEDIR.TAG"]), "{out}");
    assert!(names(&c.cache.join(".safecache/failed")).is_empty(), "no failure record");
    assert!(names(&c.cache.join(".safecache/tmp")).is_empty(), "no temp left");
    // `use --exclusive` restores the same way, then changes it.
    let d = Sandbox::new();
    let change = r#"echo changed >> "$SAFECACHE_ENTRY/f""#;
    store.run(&d, ["use", "--key", "u", "--exclusive", "--", "sh", "-c", change]).assert_code(0);
    assert_eq!(std::fs::read_to_string(d.cache.join("u/f")).expect("read"), format!("{MARKER}\nchanged\n"));

    let out = store.run(&b, json(&["use", "--key", "u2", "--fill", MUST_NOT_RUN, "--", "sh", "-c", read]));
    out.assert_code(1);
    assert!(b.path("ran").exists(), "a key the store lacks: the fill runs (and fails here)");
}

/// `use --exclusive --fill` with a writable remote: the fill's upload (which
/// pins the entry) ends before the change takes the entry exclusively, so
/// the change does not wait on this run's own pin; the store gets the entry
/// as filled, not as changed.
#[test]
fn a_changing_use_uploads_what_it_filled_and_then_changes_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::file(tmp.path().join("store"));
    let a = Sandbox::new();
    let change = r#"echo changed >> "$SAFECACHE_ENTRY/f""#;
    let args = json(&[
        "--lock-timeout",
        "20",
        "use",
        "--key",
        "x",
        "--exclusive",
        "--fill",
        r#"echo filled > "$SAFECACHE_OUT/f""#,
        "--",
        "sh",
        "-c",
        change,
    ]);
    let out = store.run(&a, args);
    out.assert_code(0);
    assert_eq!(report(&out, "exited")["remote"]["upload"], "published", "{out}");
    assert_eq!(std::fs::read_to_string(a.cache.join("x/f")).expect("read"), "filled\nchanged\n");
    let b = Sandbox::new();
    store.run(&b, ["run", "--key", "x", "--", "false"]).assert_code(0);
    assert_eq!(std::fs::read_to_string(b.cache.join("x/f")).expect("read"), "filled\n", "the entry as filled");
}

/// Namespaces share nothing: an entry uploaded to `pr` is a miss for a
/// reader of `main` (its own fill runs), and a hit for a reader of `pr`.
#[test]
fn namespaces_share_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::file(tmp.path().join("store"));
    let writer = Sandbox::new();
    store.run(&writer, ["--remote-namespace", "pr", "run", "--key", "k", "--", "sh", "-c", SAMPLE]).assert_code(0);
    let Store::File(dir) = &store else { unreachable!() };
    assert_eq!(names(dir), BTreeSet::from(["pr".to_owned()]), "objects go under their namespace");

    let main = Sandbox::new();
    let out = store.run(&main, json(&["--remote-namespace", "main", "run", "--key", "k", "--", "sh", "-c", LOCAL]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "miss", "{out}");
    assert_eq!(std::fs::read_to_string(main.cache.join("k/f")).ok().as_deref(), Some("local\n"));
    // The default namespace is `default`, not `pr` either.
    let other = Sandbox::new();
    let out = store.run(&other, json(&["run", "--key", "k", "--", "sh", "-c", LOCAL]));
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "miss", "{out}");

    let pr = Sandbox::new();
    let out = store.run(&pr, json(&["--remote-namespace", "pr", "run", "--key", "k", "--", "false"]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "{out}");
    assert_eq!(tree_of(&pr.cache.join("k")), tree_of(&writer.cache.join("k")));
}

/// An in-place fill (`--in-place`: built at the entry's final path) restores
/// from the store the same way, and what it restored verifies.
#[test]
fn an_in_place_fill_restores_too() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::file(tmp.path().join("store"));
    let a = Sandbox::new();
    store.run(&a, ["run", "--key", "v", "--in-place", "--", "sh", "-c", SAMPLE]).assert_code(0);
    let b = Sandbox::new();
    let out = store.run(&b, json(&["run", "--key", "v", "--in-place", "--", "sh", "-c", MUST_NOT_RUN]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "{out}");
    assert!(!b.path("ran").exists(), "the fill did not run");
    assert_eq!(tree_of(&b.cache.join("v")), tree_of(&a.cache.join("v")));
    b.run(["verify", "v"]).assert_code(0);
}

/// Real tools through the store: a `git clone` filled in one cache is
/// restored in another, where git finds the repository whole (`fsck`, the
/// same HEAD); a Python virtualenv, whose `bin/python` is an absolute
/// symlink, is not uploaded (it would not work elsewhere) and says so, and
/// the fill that made it still succeeds.
#[test]
fn a_git_checkout_travels_and_a_venv_stays_local() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::file(tmp.path().join("store"));
    let repo = tmp.path().join("repo");
    let head = crate::support::make_repo(&repo);
    let clone = format!(r#"git clone -q '{}' "$SAFECACHE_OUT""#, repo.display());
    let a = Sandbox::new();
    let out = store.run(&a, json(&["run", "--key", "git/repo", "--", "sh", "-c", &clone]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["upload"], "published", "{out}");

    let b = Sandbox::new();
    let read = r#"git -C "$SAFECACHE_ENTRY" fsck --strict --no-progress && git -C "$SAFECACHE_ENTRY" rev-parse HEAD"#;
    let mut cmd = store.cmd(&b, ["use", "--key", "git/repo", "--", "sh", "-c", read]);
    cmd.env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null");
    let out = Out::of(&mut cmd);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), head, "the restored checkout is the same commit\n{out}");
    assert!(out.stderr.contains("Restored"), "{out}");

    let venv = r#"python3 -m venv --without-pip "$SAFECACHE_OUT""#;
    let out = store.run(&a, json(&["run", "--key", "venv/app", "--in-place", "--", "sh", "-c", venv]));
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["upload"], "skipped", "{out}");
    assert!(out.stderr.contains("stays local"), "{out}");
    assert_eq!(store.listed(), ["git/repo"], "only the checkout is in the store");
    let python = a.cache.join("venv+app/bin/python");
    let works = Command::new(&python).args(["-c", "import sys; print(sys.prefix)"]).output().expect("run python");
    assert!(works.status.success(), "the local venv works");
}

/// A restore into a group-shared cache (setgid, group-writable root:
/// docs/SECURITY.md) is published like any fill: every file the archive
/// made gets the cache's group and group read access, every directory full
/// group access, so every member can read and remove it; nothing is
/// writable by others, whatever the process's umask.
#[test]
fn a_restore_into_a_group_shared_cache_is_shared_like_any_fill() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = Store::file(tmp.path().join("store"));
    let a = Sandbox::new();
    store.run(&a, ["run", "--key", "k", "--", "sh", "-c", SAMPLE]).assert_code(0);

    let b = Sandbox::new();
    std::fs::create_dir(&b.cache).expect("mkdir");
    std::fs::set_permissions(&b.cache, std::fs::Permissions::from_mode(0o2770)).expect("chmod");
    let group = std::fs::metadata(&b.cache).expect("stat").gid();
    let mut cmd = store.cmd(&b, json(&["run", "--key", "k", "--", "false"]));
    // A umask that would leave everything open to others, and closed to the
    // group: the publish settles both.
    // SAFETY: umask(2) is async-signal-safe, and the closure runs in the
    // child between fork and exec, touching nothing else.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o070);
            Ok(())
        });
    }
    let out = Out::of(&mut cmd);
    out.assert_code(0);
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "{out}");
    let entry = b.cache.join("k");
    let mut seen = 0;
    let mut stack = vec![entry.clone()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).expect("read dir") {
            let path = item.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.file_type().is_symlink() {
                continue;
            }
            seen += 1;
            let mode = meta.mode() & 0o7777;
            assert_eq!(meta.gid(), group, "{}: the cache's group", path.display());
            assert_eq!(mode & 0o002, 0, "{}: not writable by others ({mode:o})", path.display());
            if meta.is_dir() {
                assert_eq!(mode & 0o070, 0o070, "{}: full group access ({mode:o})", path.display());
                stack.push(path);
            } else {
                assert_ne!(mode & 0o040, 0, "{}: group may read ({mode:o})", path.display());
            }
        }
    }
    assert!(seen >= 5, "the entry's files and directories were looked at: {seen}");
}

/// A `file://` store is a directory that anyone with write access can put
/// anything into: a FIFO, a symlink or a directory in place of a manifest
/// or an archive is refused before it is opened (a FIFO would block the
/// open until the remote timeout), and is a miss with one warning.
#[test]
fn special_files_in_a_file_store_are_refused_before_they_are_opened() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = store_with(tmp.path().join("store"), "k", &[]);
    let Store::File(dir) = &store else { unreachable!() };
    let manifest = dir.join("default/v1/manifests/k");
    let archive = archive(&store);
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::copy(&manifest, &elsewhere).expect("copy the manifest");
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, &Path, Make<'_>); 4] = [
        ("a FIFO as the manifest", &manifest, &|p| mkfifo(p)),
        ("a symlink as the manifest", &manifest, &|p| std::os::unix::fs::symlink(&elsewhere, p).expect("symlink")),
        ("a directory as the manifest", &manifest, &|p| std::fs::create_dir(p).expect("mkdir")),
        ("a FIFO as the archive", &archive, &|p| mkfifo(p)),
    ];
    for (case, path, make) in cases {
        let saved = tmp.path().join("saved");
        std::fs::rename(path, &saved).expect("move the object aside");
        make(path);
        let b = Sandbox::new();
        let mut args = vec!["--remote-timeout", "60s"];
        args.extend(json(&["run", "--key", "k", "--", "sh", "-c", LOCAL]));
        let out = store.run(&b, args);
        out.assert_code(0);
        assert_eq!(report(&out, "entry")["remote"]["fetch"], "error", "{case}\n{out}");
        assert!(out.stderr.contains("not a regular file"), "{case}: refused before it is opened\n{out}");
        assert_eq!(std::fs::read_to_string(b.cache.join("k/f")).ok().as_deref(), Some("local\n"), "{case}");
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir(path).expect("rmdir"),
            _ => std::fs::remove_file(path).expect("remove"),
        }
        std::fs::rename(&saved, path).expect("put the object back");
    }
    // The store, whole again, serves the entry.
    let c = Sandbox::new();
    let out = store.run(&c, json(&["run", "--key", "k", "--", "false"]));
    assert_eq!(report(&out, "entry")["remote"]["fetch"], "hit", "{out}");
}
