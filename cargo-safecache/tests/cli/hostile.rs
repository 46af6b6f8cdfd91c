//! A hostile cache directory: whatever someone with write access planted
//! in it (FIFOs, symlinks out of the cache, huge or garbage records, escape
//! sequences, undeletable orphans, nested caches, hard links to files
//! outside), every command finishes within its lock timeout, never panics,
//! never touches anything outside the cache, and fails, if it must, with one
//! line saying what is wrong.
//!
//! Each test runs the built binary with [`run_bounded`]: its time limit only
//! turns a hang into a test failure, it never orders events.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, Out, Sandbox, mkfifo, names, snapshot};

/// How long a command may take before the test calls it hung: far more than
/// `--lock-timeout 2` and a debug build's start-up.
const HANG: Duration = Duration::from_secs(20);

/// A command that ran to completion, with what it cost.
struct Ran {
    out: Out,
    elapsed: Duration,
}

/// Runs `cmd` (stdin null; stdout and stderr piped unless the caller set
/// them) and reaps it. Returns `Err` if it has
/// not exited after `limit`; it is then killed.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Ran, String> {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot spawn: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let pump = |stream: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = stream {
                let _ = s.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let stdout = pump(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let stderr = pump(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waitpid writes only to the local passed by pointer.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = tx.send((reaped, status));
    });
    let (reaped, status) = match rx.recv_timeout(limit) {
        Ok(done) => done,
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv_timeout(limit);
            return Err(format!("did not finish within {limit:?} (killed)"));
        }
    };
    let elapsed = start.elapsed();
    if reaped != pid {
        return Err(format!("waitpid failed: {}", std::io::Error::last_os_error()));
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    // CMDs of `run` die with it, so the pipes close soon after.
    let text =
        |rx: mpsc::Receiver<Vec<u8>>| String::from_utf8_lossy(&rx.recv_timeout(limit).unwrap_or_default()).into_owned();
    let out = Out { code, stdout: text(stdout), stderr: text(stderr) };
    Ok(Ran { out, elapsed })
}

/// [`run_bounded`] with piped output, failing the test on a hang.
#[track_caller]
fn run(sb: &Sandbox, args: &[&str]) -> Out {
    let mut cmd = sb.cmd(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    match run_bounded(&mut cmd, HANG) {
        Ok(ran) => ran.out,
        Err(e) => panic!("`cargo-safecache {}` {e}", args.join(" ")),
    }
}

/// Asserts the command did not panic.
#[track_caller]
fn assert_sane(args: &[&str], out: &Out) {
    assert!(!out.stderr.contains("panicked"), "`{}` panicked\n{out}", args.join(" "));
}

/// A flock held by this test process: a holder record it plants reads as
/// live, so `status` shows it.
struct Flocked(#[allow(dead_code)] File);

fn plant_live_record(cache: &Path, name: &str, bytes: &[u8]) -> Flocked {
    let path = cache.join(".safecache/holders").join(name);
    std::fs::write(&path, bytes).expect("write record");
    flock_file(&path)
}

fn flock_file(path: &Path) -> Flocked {
    let file = File::open(path).expect("open record");
    // SAFETY: flock(2) on a descriptor this File owns.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "flock");
    Flocked(file)
}

/// Sets `path`'s mtime (not following a symlink) to `secs_ago` seconds ago.
fn set_mtime_ago(path: &Path, secs_ago: i64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let t = libc::timespec { tv_sec: now - secs_ago, tv_nsec: 0 };
    let times = [t, t];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: utimensat reads the NUL-terminated path and the two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(rc, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

/// The one name in `dir`.
#[track_caller]
fn only_name(dir: &Path) -> String {
    let all = names(dir);
    assert_eq!(all.len(), 1, "expected one name in {}: {all:?}", dir.display());
    all.into_iter().next().unwrap_or_default()
}

/// A published entry `k`, its last-use stamp written: returns the digest.
fn cache_with_entry(sb: &Sandbox) -> String {
    sb.fill("k", "v");
    run(sb, &["path", "k"]).assert_code(0);
    let stamp = only_name(&sb.cache.join(".safecache/used"));
    assert_eq!(only_name(&sb.cache.join(".safecache/locks")), format!("{stamp}.lock"));
    stamp
}

/// A holder record of the lease by pid 4242.
fn record_json(host: &str, command: &str, since: &str) -> String {
    format!(
        r#"{{"lock":{{"kind":"lease"}},"lock_file":".safecache/lease.lock","mode":"shared","pid":4242,"host":{},"command":{},"since":{since}}}"#,
        serde_json::to_string(host).expect("json"),
        serde_json::to_string(command).expect("json"),
    )
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

/// Item 1: a FIFO planted as the last-use stamp is replaced, not opened;
/// one planted as the format file is refused by name. Nothing hangs.
#[test]
fn fifos_at_the_stamp_or_the_format_file_never_hang() {
    let sb = Sandbox::new();
    let digest = cache_with_entry(&sb);
    let stamp = sb.cache.join(".safecache/used").join(&digest);
    std::fs::remove_file(&stamp).expect("remove stamp");
    mkfifo(&stamp);
    // An old stamp, so that the next use writes a new one.
    set_mtime_ago(&stamp, 7200);
    for args in [&["path", "k"][..], &["use", "--key", "k", "--", "true"], &["status"], &["ls"]] {
        let args = [&["--lock-timeout", "2"][..], args].concat();
        let out = run(&sb, &args);
        assert_sane(&args, &out);
        out.assert_code(0);
    }
    let meta = std::fs::symlink_metadata(&stamp).expect("stamp");
    assert!(meta.is_file(), "the FIFO was replaced by a fresh stamp: {meta:?}");

    let format = sb.cache.join(".safecache/format");
    std::fs::remove_file(&format).expect("remove format");
    mkfifo(&format);
    for args in [&["path", "k"][..], &["use", "--key", "k", "--", "true"], &["status"], &["gc"], &["clean"]] {
        let args = [&["--lock-timeout", "2"][..], args].concat();
        let out = run(&sb, &args);
        assert_sane(&args, &out);
        out.assert_one_line_error(101, ".safecache/format");
    }
}

/// Item 2: a holder record as big as the disk allows is read only up to the
/// cap: `status` stays fast and small.
#[test]
fn a_huge_sparse_holder_record_is_not_read_whole() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let path = sb.cache.join(".safecache/holders/0123456789abcdef01234567.json");
    let file = File::create(&path).expect("create record");
    file.set_len(1 << 30).expect("a sparse GiB");
    drop(file);
    let _live = flock_file(&path);
    let (ran, peak_kib) = peak_memory(&sb, &["status"]);
    assert_sane(&["status"], &ran.out);
    ran.out.assert_code(0);
    assert!(peak_kib < 64 * 1024, "status used {peak_kib} KiB of memory\n{}", ran.out);
    // Not a timing test (the memory bound is the check): only a bound
    // that a 1 GiB read on a loaded machine would still stay under.
    assert!(ran.elapsed < Duration::from_secs(60), "status took {:?}", ran.elapsed);
}

/// Runs the binary with `args` on `sb`'s cache and returns what it did and
/// its peak resident memory in KiB. The peak is GNU time's report of its
/// own child: a process this test starts directly has its peak start at
/// this test binary's (a spawn shares the parent's memory until the exec,
/// and the kernel keeps the larger peak), which grows with the tests that
/// run beside it.
fn peak_memory(sb: &Sandbox, args: &[&str]) -> (Ran, i64) {
    let peak = sb.path("peak");
    let cmd = sb.cmd(args);
    let program = cmd.get_program().to_owned();
    let argv: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.args(["-f", "%M", "-o"]).arg(&peak).arg(program).args(argv);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    timed.stdout(Stdio::piped()).stderr(Stdio::piped());
    let ran = run_bounded(&mut timed, HANG).unwrap_or_else(|e| panic!("{args:?} {e}"));
    let peak_kib: i64 = std::fs::read_to_string(&peak)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time (Debian package `time`) reports the peak memory of {args:?}"));
    (ran, peak_kib)
}

/// Issue 17: `ls` and `status` held every entry before printing the first
/// (44 and 53 MB over 100,000 entries, against `find`'s 32 MB), so a big
/// cache took memory in proportion. They now print (or count) each entry
/// as it is listed: over four times the entries, the peak is the same.
#[test]
fn ls_and_status_take_the_same_memory_over_four_times_the_entries() {
    let mut peaks = Vec::new();
    for n in [5_000, 20_000] {
        let sb = Sandbox::new();
        // Adopted by `init`: a cache of n entries in a moment.
        std::fs::create_dir(&sb.cache).expect("mkdir");
        for i in 0..n {
            std::fs::write(sb.cache.join(format!("entry-with-a-longish-name-{i:06}")), "x").expect("write");
        }
        sb.run(["init"]).assert_code(0);
        let mut row = Vec::new();
        for args in [&["ls"][..], &["--message-format", "json", "ls"], &["status"]] {
            let (ran, peak) = peak_memory(&sb, args);
            ran.out.assert_code(0);
            if args.contains(&"ls") {
                assert_eq!(ran.out.stdout.lines().count(), n, "{args:?} lists every entry");
            }
            if args.contains(&"json") {
                for line in ran.out.stdout.lines() {
                    let v: Value = serde_json::from_str(line).expect("each line is a JSON object");
                    assert_eq!(v["reason"], "entry");
                }
            }
            row.push((args, peak));
        }
        peaks.push(row);
    }
    for ((args, small), (_, big)) in peaks[0].iter().zip(&peaks[1]) {
        // 15,000 more entries held at even 100 bytes each would be 1.4 MiB.
        assert!(big - small < 1024, "{args:?}: {small} KiB over 5,000 entries, {big} KiB over 20,000");
    }
}

/// Item 3: records that overflow, garbage records, a binary format file and
/// escape sequences in holder fields: no panic, nothing raw on the terminal.
#[test]
fn hostile_records_and_format_files_are_escaped_and_never_panic() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let record = record_json;
    let _overflow = plant_live_record(
        &sb.cache,
        "00000000000000000000000a.json",
        record("h", "c", "18446744073709551615").as_bytes(),
    );
    let _garbage = plant_live_record(&sb.cache, "00000000000000000000000b.json", b"\xff{\"lock\": not json\x1b[2J");
    let _evil = plant_live_record(
        &sb.cache,
        "00000000000000000000000c.json",
        record("ci\x1b[2J\nerror: forged host", "make\x1b]0;pwned\x07\nerror: forged command\r", "1").as_bytes(),
    );
    for args in [&["status"][..], &["--message-format", "json", "status"]] {
        let out = run(&sb, args);
        assert_sane(args, &out);
        out.assert_code(0);
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains('\x1b') && !text.contains('\x07') && !text.contains('\r'),
                "raw control bytes\n{out}"
            );
            assert!(!text.lines().any(|l| l.starts_with("error: forged")), "a forged line\n{out}");
        }
    }
    let human = run(&sb, &["status"]);
    assert!(human.stdout.contains("\\u{1b}"), "the escape is shown escaped\n{human}");
    assert_eq!(human.stdout.matches("pid 4242").count(), 2, "both parseable records are listed\n{human}");

    std::fs::write(sb.cache.join(".safecache/format"), b"\x1b[2J\x00\xff\nerror: forged\n").expect("write format");
    let out = run(&sb, &["status"]);
    assert_sane(&["status"], &out);
    out.assert_one_line_error(101, "format");
    assert!(!out.stderr.contains('\x1b') && !out.stderr.contains('\0'), "{out}");
}

/// Item 4: a cache dir whose path is not UTF-8 works in both output modes,
/// and `path` prints its bytes intact.
#[test]
fn a_cache_path_that_is_not_utf8_works() {
    let sb = Sandbox::new();
    let dir = sb.tmp.path().join(std::ffi::OsStr::from_bytes(b"cache-\xff"));
    std::fs::create_dir(&dir).expect("create dir");
    std::fs::write(dir.join("k"), "adopted").expect("write");
    let with_dir = |args: &[&str]| {
        let mut cmd = sb.cmd(args);
        cmd.env("SAFECACHE_DIR", &dir).stdout(Stdio::piped()).stderr(Stdio::piped());
        let ran = run_bounded(&mut cmd, HANG).unwrap_or_else(|e| panic!("{args:?} {e}"));
        assert_sane(args, &ran.out);
        ran
    };
    with_dir(&["init"]).out.assert_code(0);
    for args in [&["ls"][..], &["status"], &["gc"]] {
        with_dir(args).out.assert_code(0);
        with_dir(&[&["--message-format", "json"][..], args].concat()).out.assert_code(0);
    }
    with_dir(&["--message-format", "json", "path", "k"]).out.assert_code(0);
    for mode in [&[][..], &["--message-format", "json"]] {
        with_dir(&[mode, &["run", "--key", "k2", "--allow-empty", "--", "true"]].concat()).out.assert_code(0);
    }
    let mut cmd = sb.cmd(["path", "k"]);
    cmd.env("SAFECACHE_DIR", &dir).stderr(Stdio::piped());
    let raw = cmd.output().expect("run path");
    assert_eq!(raw.status.code(), Some(0), "{}", String::from_utf8_lossy(&raw.stderr));
    let mut expected = dir.join("k").into_os_string().into_vec();
    expected.push(b'\n');
    assert_eq!(raw.stdout, expected, "`path` prints the entry's path byte for byte");
}

/// Item 4: stderr that cannot be written (a full device, a pipe nobody
/// reads) costs the messages, not the command: no panic, the exit code of
/// what happened.
#[test]
fn unwritable_stderr_does_not_panic() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let cases: [(&[&str], i32); 5] =
        [(&["gc"], 0), (&["ls"], 0), (&["rm", "absent"], 0), (&["path", "absent"], 1), (&["frobnicate"], 2)];
    for (args, code) in cases {
        let mut cmd = sb.cmd(args);
        cmd.stdout(Stdio::null()).stderr(File::options().write(true).open("/dev/full").expect("/dev/full"));
        let ran = run_bounded(&mut cmd, HANG).unwrap_or_else(|e| panic!("{args:?} {e}"));
        assert_eq!(ran.out.code, Some(code), "{args:?} with stderr on /dev/full");

        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut cmd = sb.cmd(args);
        cmd.stdout(Stdio::null()).stderr(writer);
        let ran = run_bounded(&mut cmd, HANG).unwrap_or_else(|e| panic!("{args:?} {e}"));
        assert_eq!(ran.out.code, Some(code), "{args:?} with stderr on a pipe nobody reads");
    }
    // A full stdout is not a crash either; for `path`, whose result is what
    // it prints, it is a one-line error rather than a silent success.
    let mut cmd = sb.cmd(["path", "k"]);
    cmd.stdout(File::options().write(true).open("/dev/full").expect("/dev/full")).stderr(Stdio::piped());
    let ran = run_bounded(&mut cmd, HANG).unwrap_or_else(|e| panic!("path {e}"));
    assert_sane(&["path", "k"], &ran.out);
    ran.out.assert_one_line_error(101, "cannot write the entry's path to stdout");
}

/// An orphaned temp `tmp/<d>.<r>` with an `out/` holding `files`, and its
/// owner lock made by `owner`; returns its path.
fn plant_orphan_temp(cache: &Path, digest: &str, random: &str, owner: impl FnOnce(&Path)) -> PathBuf {
    let temp = cache.join(".safecache/tmp").join(format!("{digest}.{random}"));
    std::fs::create_dir_all(temp.join("out")).expect("create temp");
    std::fs::write(temp.join("out/half"), "half an entry").expect("write");
    owner(&temp.join("owner.lock"));
    temp
}

/// Item 5: owner locks that are a directory or a symlink out of the cache
/// do not stop gc or clean: those orphans are reclaimed without following
/// the symlink, and so is everything else.
#[test]
fn odd_owner_locks_do_not_stop_gc_or_clean() {
    for command in ["gc", "clean"] {
        let sb = Sandbox::new();
        let digest = cache_with_entry(&sb);
        let outside = sb.path("outside");
        std::fs::create_dir(&outside).expect("create outside");
        std::fs::write(outside.join("precious"), "keep me").expect("write");
        let before = snapshot(&outside);
        plant_orphan_temp(&sb.cache, &digest, "aaaaaaaaaaaaaaaaaaaaaaaa", |p| {
            std::fs::create_dir(p).expect("owner.lock dir")
        });
        plant_orphan_temp(&sb.cache, &digest, "bbbbbbbbbbbbbbbbbbbbbbbb", |p| {
            std::os::unix::fs::symlink(outside.join("precious"), p).expect("owner.lock symlink")
        });
        plant_orphan_temp(&sb.cache, &digest, "cccccccccccccccccccccccc", |p| {
            std::fs::write(p, "").expect("owner.lock file")
        });
        let out = run(&sb, &["--lock-timeout", "2", command]);
        assert_sane(&[command], &out);
        out.assert_code(0);
        assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "{command} reclaimed every orphan\n{out}");
        assert_eq!(snapshot(&outside), before, "{command} followed the symlink");
    }
}

/// Runs `chattr` on `path`.
fn chattr(flag: &str, path: &Path) -> bool {
    Command::new("chattr").arg(flag).arg(path).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Takes the immutable flag off again, even if the test fails, so the
/// sandbox can be deleted.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

/// Item 5: an orphan gc or clean cannot delete is named with its reason,
/// the rest is still reclaimed, and the command fails (101), never exit 0.
#[test]
fn an_undeletable_orphan_is_reported_and_fails_gc_and_clean() {
    for command in ["gc", "clean"] {
        let sb = Sandbox::new();
        let digest = cache_with_entry(&sb);
        let stuck = plant_orphan_temp(&sb.cache, &digest, "dddddddddddddddddddddddd", |p| {
            std::fs::write(p, "").expect("owner.lock file")
        });
        plant_orphan_temp(&sb.cache, &digest, "eeeeeeeeeeeeeeeeeeeeeeee", |p| {
            std::fs::write(p, "").expect("owner.lock file")
        });
        std::fs::create_dir(sb.cache.join(".safecache/trash").join(format!("{digest}.ffffffffffffffffffffffff")))
            .expect("create trash");
        let pinned_file = stuck.join("out/half");
        if !chattr("+i", &pinned_file) {
            eprintln!("skipped: chattr +i does not work here (not root, or the filesystem lacks it)");
            return;
        }
        let _guard = Immutable(pinned_file);
        // clean leaves its trash to a reclaimer unless told to wait.
        let args: &[&str] = if command == "clean" {
            &["--lock-timeout", "2", command, "--wait"]
        } else {
            &["--lock-timeout", "2", command]
        };
        let out = run(&sb, args);
        assert_sane(&[command], &out);
        out.assert_error(101, &format!("{command} could not reclaim 1 item"));
        let stuck_rel = format!(".safecache/tmp/{digest}.dddddddddddddddddddddddd");
        assert!(
            out.stderr.lines().any(|l| l.starts_with("warning: ") && l.contains(&stuck_rel) && l.contains("ermitted")),
            "the failure is named with its reason\n{out}"
        );
        assert_eq!(
            names(&sb.cache.join(".safecache/tmp")).into_iter().collect::<Vec<_>>(),
            vec![format!("{digest}.dddddddddddddddddddddddd")],
            "the other orphan was reclaimed\n{out}"
        );
        assert!(names(&sb.cache.join(".safecache/trash")).is_empty(), "the trash was reclaimed\n{out}");
    }
}

/// Item 5: a leftover in `tmp/` that safecache never made (no digest in
/// its name) is an orphan to `status`, and `gc` reclaims it: they agree.
#[test]
fn a_foreign_leftover_in_tmp_is_an_orphan_and_gc_reclaims_it() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    std::fs::create_dir_all(sb.cache.join(".safecache/tmp/junk/deeper")).expect("create junk");
    std::fs::write(sb.cache.join(".safecache/tmp/junk/deeper/f"), "x").expect("write");
    std::fs::write(sb.cache.join(".safecache/tmp/stray-file"), "x").expect("write");
    let out = run(&sb, &["--message-format", "json", "status"]);
    out.assert_code(0);
    let orphans: Vec<Value> =
        json_lines(&out.stdout).into_iter().filter(|v| v["reason"] == "item" && v["live"] == false).collect();
    assert_eq!(orphans.len(), 2, "status calls both orphans\n{out}");
    let out = run(&sb, &["--message-format", "json", "gc"]);
    out.assert_code(0);
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "gc reclaimed what status called orphans\n{out}");
}

/// Item 6: an entry of an outer cache that holds an inner cache, with a
/// pinned entry, survives the outer `clean` (reported, 101) and `rm`
/// (refused, 101).
#[test]
fn clean_and_rm_spare_an_entry_that_holds_a_cache_of_its_own() {
    let sb = Sandbox::new();
    sb.fill("other", "v");
    run(&sb, &["run", "--key", "inner", "--allow-empty", "--", "true"]).assert_code(0);
    let inner = sb.cache.join("inner");
    let inner_dir = inner.to_str().expect("utf-8");
    run(&sb, &["--cache-dir", inner_dir, "run", "--key", "dep", "--", "sh", "-c", "echo v > \"$SAFECACHE_OUT/f\""])
        .assert_code(0);
    let mut pinner = support::Bg::spawn({
        let mut cmd =
            sb.cmd(["--cache-dir", inner_dir, "use", "--key", "dep", "--", "sh", "-c", "echo ready; read go"]);
        cmd.env("SAFECACHE_DIR", &inner);
        cmd
    });
    pinner.expect_stdout("ready");

    let out = run(&sb, &["--lock-timeout", "2", "clean"]);
    assert_sane(&["clean"], &out);
    out.assert_error(101, "clean could not reclaim 1 item");
    assert!(out.stderr.lines().any(|l| l.starts_with("warning: ") && l.contains("`inner`")), "{out}");
    assert!(inner.join("dep/f").is_file(), "the inner cache's pinned entry survived\n{out}");
    assert!(!sb.cache.join("other").exists(), "clean went on with the rest\n{out}");

    let out = run(&sb, &["--lock-timeout", "2", "rm", "inner"]);
    assert_sane(&["rm"], &out);
    out.assert_one_line_error(101, "holds a safecache cache of its own");
    assert!(inner.join("dep/f").is_file());

    pinner.send("go");
    assert_eq!(pinner.finish().0.code(), Some(0));
}

/// Item 7: a hard link planted as the last-use stamp, to a file outside the
/// cache: `path` replaces the stamp and leaves that file's mtime and
/// content alone.
#[test]
fn a_hard_linked_stamp_never_touches_the_file_outside() {
    let sb = Sandbox::new();
    let digest = cache_with_entry(&sb);
    let stamp = sb.cache.join(".safecache/used").join(&digest);
    let outside = sb.path("outside-file");
    std::fs::write(&outside, "precious").expect("write");
    set_mtime_ago(&outside, 7200);
    std::fs::remove_file(&stamp).expect("remove stamp");
    std::fs::hard_link(&outside, &stamp).expect("hard link");
    let before = std::fs::metadata(&outside).expect("stat");
    run(&sb, &["path", "k"]).assert_code(0);
    let after = std::fs::metadata(&outside).expect("stat");
    assert_eq!((after.mtime(), after.mtime_nsec()), (before.mtime(), before.mtime_nsec()), "the outside mtime moved");
    assert_eq!(std::fs::read_to_string(&outside).expect("read"), "precious");
    assert_ne!(std::fs::metadata(&stamp).expect("stamp").ino(), after.ino(), "the stamp was replaced");
}

/// Item 8: adopting a directory keeps the user's files whose names merely
/// start like a marker staging dir; gc deletes only real staging dirs.
#[test]
fn gc_keeps_user_data_named_like_a_staging_dir() {
    let sb = Sandbox::new();
    let dir = sb.path("adopted");
    std::fs::create_dir_all(dir.join(".safecache.init-keep")).expect("create");
    std::fs::write(dir.join(".safecache.init-keep/data"), "keep").expect("write");
    std::fs::write(dir.join(".safecache.init-notes"), "notes").expect("write");
    std::fs::write(dir.join(".safecache.init-0123456789abcdef01234567"), "a file, not a staging dir").expect("write");
    std::fs::write(dir.join("tool-data"), "x").expect("write");
    let dir_s = dir.to_str().expect("utf-8");
    run(&sb, &["init", dir_s]).assert_code(0);
    std::fs::create_dir(dir.join(".safecache.init-89abcdef0123456789abcdef")).expect("a real staging dir");
    let out = run(&sb, &["--cache-dir", dir_s, "gc"]);
    out.assert_code(0);
    assert_eq!(std::fs::read_to_string(dir.join(".safecache.init-keep/data")).expect("kept"), "keep", "{out}");
    assert_eq!(std::fs::read_to_string(dir.join(".safecache.init-notes")).expect("kept"), "notes");
    assert!(dir.join(".safecache.init-0123456789abcdef01234567").is_file());
    assert!(!dir.join(".safecache.init-89abcdef0123456789abcdef").exists(), "the real staging dir is reclaimed");
}

/// Item 9: `ls` escapes adopted names and does not count what a symlink
/// points to.
#[test]
fn ls_escapes_names_and_does_not_follow_symlinks() {
    let sb = Sandbox::new();
    let dir = sb.path("adopted");
    std::fs::create_dir(&dir).expect("create");
    std::fs::write(dir.join("evil\x1b[2Jname\nerror: forged"), "x").expect("write");
    let big = sb.path("big");
    File::create(&big).and_then(|mut f| f.write_all(&vec![7u8; 1 << 20])).expect("write big");
    std::os::unix::fs::symlink(&big, dir.join("link")).expect("symlink");
    let dir_s = dir.to_str().expect("utf-8");
    run(&sb, &["init", dir_s]).assert_code(0);
    let out = run(&sb, &["--cache-dir", dir_s, "ls"]);
    out.assert_code(0);
    assert!(!out.stdout.contains('\x1b'), "a raw ESC\n{out}");
    assert!(out.stdout.contains("evil\\u{1b}[2Jname\\u{a}error: forged"), "{out}");
    assert!(!out.stdout.lines().any(|l| l.starts_with("error: forged")), "{out}");
    let out = run(&sb, &["--cache-dir", dir_s, "--message-format", "json", "ls"]);
    let link = json_lines(&out.stdout).into_iter().find(|v| v["stored_name"] == "link").expect("the link is listed");
    assert!(link["bytes"].as_u64().is_some_and(|b| b < 4096), "a symlink's size is its own\n{out}");
}

/// What the garbage sweep plants in place of a file of the layout.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    Fifo,
    SymlinkOut,
    Dir,
    RandomMiB,
    Empty,
}

impl Garbage {
    const ALL: [Garbage; 5] = [Garbage::Fifo, Garbage::SymlinkOut, Garbage::Dir, Garbage::RandomMiB, Garbage::Empty];

    /// Replaces whatever is at `path` with this garbage; a symlink points at
    /// `target`, outside the cache.
    fn plant(self, path: &Path, target: &Path, random: &[u8]) {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path).expect("remove dir"),
            Ok(_) => std::fs::remove_file(path).expect("remove file"),
            Err(_) => {}
        }
        match self {
            Garbage::Fifo => mkfifo(path),
            Garbage::SymlinkOut => std::os::unix::fs::symlink(target, path).expect("symlink"),
            Garbage::Dir => std::fs::create_dir(path).expect("create dir"),
            Garbage::RandomMiB => std::fs::write(path, random).expect("write"),
            Garbage::Empty => std::fs::write(path, "").expect("write"),
        }
    }
}

/// The garbage sweep: every file of the layout, in turn, replaced by each
/// kind of garbage, under every command. None may hang, panic, or change,
/// delete or follow anything outside the cache; a failure is one `error:`
/// line (after any `warning:` lines naming what gc or clean could not
/// reclaim). Every combination that misbehaves is listed, with the exact
/// command, before the test fails.
#[test]
fn garbage_sweep_over_every_file_of_the_layout() {
    let sb = Sandbox::new();
    let digest = cache_with_entry(&sb);
    run(&sb, &["gc"]).assert_code(0); // creates gc.lock
    let temp_name = format!("{digest}.111111111111111111111111");
    plant_orphan_temp(&sb.cache, &digest, "111111111111111111111111", |p| std::fs::write(p, "").expect("owner"));
    let trash = sb.cache.join(".safecache/trash").join(format!("{digest}.222222222222222222222222"));
    std::fs::create_dir(&trash).expect("trash");
    std::fs::write(trash.join("f"), "x").expect("write");
    let holder = record_json("h", "c", "1");
    std::fs::write(sb.cache.join(".safecache/holders/333333333333333333333333.json"), holder).expect("record");

    let outside = sb.path("outside");
    std::fs::create_dir(&outside).expect("outside");
    let target = outside.join("target");
    std::fs::write(&target, "outside the cache").expect("write");
    set_mtime_ago(&target, 7200);
    let mut random = vec![0u8; 1 << 20];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random)).expect("random bytes");

    let files = [
        ".safecache/format".to_owned(),
        ".safecache/lease.lock".to_owned(),
        ".safecache/gc.lock".to_owned(),
        format!(".safecache/locks/{digest}.lock"),
        ".safecache/holders/333333333333333333333333.json".to_owned(),
        format!(".safecache/used/{digest}"),
        format!(".safecache/tmp/{temp_name}/owner.lock"),
        format!(".safecache/trash/{digest}.222222222222222222222222"),
    ];
    let commands: [&[&str]; 8] = [
        &["path", "k"],
        &["run", "--key", "k2", "--allow-empty", "--", "true"],
        &["use", "--key", "k", "--", "true"],
        &["status"],
        &["ls"],
        &["rm", "k"],
        &["gc"],
        &["clean"],
    ];
    let before = snapshot(&outside);
    let mut misbehaved = Vec::new();
    let mut n = 0;
    for file in &files {
        for garbage in Garbage::ALL {
            for args in commands {
                n += 1;
                let cache = sb.path(&format!("sweep-{n}"));
                let copied = Command::new("cp").arg("-a").arg(&sb.cache).arg(&cache).status().expect("cp");
                assert!(copied.success());
                let planted = cache.join(file);
                garbage.plant(&planted, &target, &random);
                // Old, so a garbage stamp is due for replacement rather than
                // left alone as fresh.
                set_mtime_ago(&planted, 7200);
                let args = [&["--lock-timeout", "2"][..], args].concat();
                let shown = format!(
                    "{file} as {garbage:?}: SAFECACHE_DIR={} cargo-safecache {}",
                    cache.display(),
                    args.join(" ")
                );
                let mut cmd = sb.cmd(&args);
                cmd.env("SAFECACHE_DIR", &cache).stdout(Stdio::piped()).stderr(Stdio::piped());
                match run_bounded(&mut cmd, HANG) {
                    Err(e) => misbehaved.push(format!("{shown}: {e}")),
                    Ok(ran) => {
                        if let Some(problem) = sweep_problem(&ran) {
                            misbehaved.push(format!("{shown}: {problem}\n{}", ran.out));
                        }
                    }
                }
                if snapshot(&outside) != before {
                    misbehaved.push(format!("{shown}: changed something outside the cache"));
                    std::fs::write(&target, "outside the cache").expect("restore");
                    set_mtime_ago(&target, 7200);
                }
                // Its own FIFOs and symlinks must not stop the sandbox's removal.
                let _ = std::fs::remove_dir_all(&cache);
            }
        }
    }
    assert!(misbehaved.is_empty(), "{} of {n} runs misbehaved:\n{}", misbehaved.len(), misbehaved.join("\n"));
}

/// What is wrong with one sweep run, if anything.
fn sweep_problem(ran: &Ran) -> Option<String> {
    let out = &ran.out;
    if out.stderr.contains("panicked") {
        return Some("panicked".to_owned());
    }
    if ran.elapsed > Duration::from_secs(7) {
        return Some(format!("took {:?} under --lock-timeout 2", ran.elapsed));
    }
    match out.code {
        Some(0) => return None,
        Some(1 | 2 | 75 | 101) => {}
        other => return Some(format!("exit status {other:?}")),
    }
    let lines: Vec<&str> = out.stderr.lines().collect();
    let errors = lines.iter().filter(|l| l.starts_with("error")).count();
    let last = lines.last().copied().unwrap_or_default();
    let stray = lines.iter().any(|l| !(l.starts_with("error: ") || l.starts_with("warning: ") || l.starts_with("  ")));
    if errors != 1 || !last.starts_with("error: ") || stray {
        return Some("the failure is not one `error:` line".to_owned());
    }
    None
}
