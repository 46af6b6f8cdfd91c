//! End-to-end tests of `cargo safecache`: the built binary, real processes,
//! real git. Each test reads like the scenario it covers; the seeds are the
//! user stories in the project brief.

mod ancestor;
mod cancel;
mod case_insensitive;
mod durability;
mod everyday;
mod evict;
mod failed;
mod filesystems;
mod fill_and_use;
mod full_disk;
mod holders;
mod hostile;
mod in_place;
mod mounts;
mod outside;
mod queue;
mod readme;
mod real_tools;
mod reclaim;
mod remote;
mod remote_config;
mod support;
mod terminal;
mod tree;
mod trust;
mod upgrade;
mod usability;
mod verbs;
mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Line, Sandbox, git, make_repo, mkfifo, names, snapshot, stdout_of};

/// Seeds 000 (uv) and 002 (Crafter.Build): eight builds clone the same
/// dependency at once. Exactly one clone runs, all eight succeed and print
/// the same entry, and the entry is a valid repository.
#[test]
fn eight_concurrent_fills_clone_once() {
    let sb = Sandbox::new();
    let head = make_repo(&sb.path("repo"));
    let fifo = sb.path("go.fifo");
    mkfifo(&fifo);
    // The filler records itself outside the cache, then holds the fill open
    // until the test says go, so the other seven are sure to overlap it.
    let script = r#"echo "$$" >> "$T/clones.log"; read go < "$T/go.fifo"; git clone -q "$T/repo" "$SAFECACHE_OUT""#;
    let mut runs: Vec<_> = (0..8).map(|_| sb.spawn(["run", "--key", "git/repo", "--", "sh", "-c", script])).collect();

    // Seven of them must announce that they wait for the fill of the eighth.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut blocked = BTreeSet::new();
    std::thread::scope(|s| {
        for (i, run) in runs.iter_mut().enumerate() {
            let tx = tx.clone();
            s.spawn(move || {
                // Every run either blocks on the entry lock or is the filler;
                // only waiters print "Blocking".
                let line = run.expect(
                    "a wait or the fill",
                    |l| matches!(l, Line::Stderr(s) if s.contains("Blocking") || s.contains("Filling")),
                );
                let _ = tx.send((i, line));
            });
        }
        drop(tx);
        for (i, line) in rx {
            if line.contains("Blocking") {
                assert!(line.contains("entry `git/repo`"), "the wait names the entry: {line}");
                blocked.insert(i);
            }
        }
    });
    assert_eq!(blocked.len(), 7, "exactly seven runs wait for the one filler");

    std::fs::write(&fifo, "go\n").expect("release the filler");
    let mut paths = BTreeSet::new();
    for run in runs {
        let (status, lines) = run.finish();
        assert_eq!(status.code(), Some(0), "every run succeeds: {lines:?}");
        let stdout = stdout_of(&lines);
        paths.insert(stdout.last().expect("the entry's path is printed").to_string());
    }
    assert_eq!(paths.len(), 1, "all eight print the same entry: {paths:?}");
    let entry = PathBuf::from(paths.pop_first().unwrap_or_default());
    assert!(entry.is_absolute());
    assert_eq!(entry, sb.cache.join("git+repo"), "no `%` in the name: lld and file:// URLs accept it");
    let clones = std::fs::read_to_string(sb.path("clones.log")).expect("the filler ran");
    assert_eq!(clones.lines().count(), 1, "exactly one clone ran: {clones:?}");
    assert_eq!(git(&entry, &["rev-parse", "HEAD"]), head, "the entry is a valid clone");
    assert_eq!(git(&entry, &["status", "--porcelain"]), "");
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "no temp is left behind");

    // A ninth run finds the entry and does not run CMD at all.
    let out = sb.run(["run", "--key", "git/repo", "--", "sh", "-c", "echo ran >> \"$T/clones.log\""]);
    out.assert_code(0);
    assert_eq!(out.last_stdout_line(), entry.display().to_string());
    assert_eq!(std::fs::read_to_string(sb.path("clones.log")).unwrap_or_default().lines().count(), 1);
}

/// Seed 001 (pip-tools): a `clean` issued while another process uses the
/// cache waits for it instead of deleting from under it, says who it waits
/// for and how to stop waiting, and finishes once the user is done.
#[test]
fn clean_waits_for_a_running_command() {
    let sb = Sandbox::new();
    let entry = sb.fill("wheels/numpy", "payload");
    // The user reads the entry only after `clean` has been issued.
    let mut user =
        sb.spawn(["run", "--", "sh", "-c", r#"echo ready; read go; cat "$0/f""#, entry.to_str().expect("utf-8")]);
    user.expect_stdout("ready");

    // Without waiting, clean fails at once, naming the holder and the fix,
    // and changes nothing.
    let before = snapshot(&sb.cache);
    let out = sb.run(["clean", "--lock-timeout", "0"]);
    out.assert_one_line_error(75, &format!("pid {}", user.pid()));
    assert!(out.stderr.contains("SAFECACHE_LOCK_TIMEOUT"), "{out}");
    // With a short timeout, it times out, naming the lock.
    let out = sb.run(["clean", "--lock-timeout", "0.3"]);
    out.assert_error(75, "timed out");
    assert!(out.stderr.contains("the cache lease") && out.stderr.contains(&format!("pid {}", user.pid())), "{out}");
    assert_eq!(snapshot(&sb.cache), before, "a refused clean changes nothing");

    // With the default wait, it announces the wait at once and blocks.
    let mut clean = sb.spawn(["clean"]);
    let notice = clean.expect_stderr("Blocking");
    assert!(notice.contains("in use") && notice.contains(&format!("pid {}", user.pid())), "{notice}");
    assert!(notice.contains("--lock-timeout"), "the notice says how to stop waiting: {notice}");
    assert!(entry.join("f").exists(), "nothing is removed while the command runs");

    // The command still reads its entry after clean was issued.
    user.send("go");
    let (status, lines) = user.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(stdout_of(&lines).contains(&"payload"), "the running command read the entry: {lines:?}");

    let (status, lines) = clean.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(!entry.exists(), "clean removed the entry once the command was done");
    sb.run(["path", "wheels/numpy"]).assert_code(1);
}

/// `rm` of a pinned entry under `--lock-timeout 0` exits 75 and names the
/// pinning process; once the pin is gone, `rm` works.
#[test]
fn rm_of_a_pinned_entry_without_waiting_exits_75() {
    let sb = Sandbox::new();
    let entry = sb.fill("dep", "v1");
    let mut pinner = sb.spawn(["use", "--key", "dep", "--", "sh", "-c", "echo ready; read go"]);
    pinner.expect_stdout("ready");

    let before = snapshot(&sb.cache);
    let out = sb.run(["rm", "dep", "--lock-timeout", "0"]);
    out.assert_one_line_error(75, &format!("pid {}", pinner.pid()));
    assert!(out.stderr.contains("entry `dep`"), "{out}");
    assert_eq!(snapshot(&sb.cache), before, "a refused rm changes nothing");

    // `status` lists the live pin and the lease of the pinner.
    let out = sb.run(["--message-format", "json", "status"]);
    out.assert_code(0);
    let holders: Vec<Value> = json_lines(&out.stdout).into_iter().filter(|v| v["reason"] == "holder").collect();
    assert!(
        holders.iter().any(|h| h["pid"] == pinner.pid() && h["lock"]["kind"] == "entry" && h["mode"] == "shared"),
        "{holders:?}"
    );

    pinner.send("go");
    let (status, lines) = pinner.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    sb.run(["rm", "dep", "--lock-timeout", "0"]).assert_code(0);
    assert!(!entry.exists());
}

/// A `run --key` killed by SIGKILL in the middle of its fill leaves the
/// cache usable: nothing is published, `status` shows the orphan and no dead
/// holder, a new fill works, and `gc` reclaims the orphan.
#[test]
fn sigkill_mid_fill_leaves_a_usable_cache_and_gc_reclaims_the_orphan() {
    let sb = Sandbox::new();
    let script = r#"echo partial > "$SAFECACHE_OUT/half"; echo "$$" > "$T/cmd.pid"; echo ready; read go"#;
    let mut fill = sb.spawn(["run", "--key", "big", "--", "sh", "-c", script]);
    fill.expect_stderr_line("ready");
    let pid = fill.pid();
    fill.child.kill().expect("SIGKILL the filler");
    let (status, _) = fill.finish(); // returns once CMD is gone too: it dies with its parent
    assert_eq!(status.code(), None, "killed by a signal");

    sb.run(["path", "big"]).assert_code(1);
    let out = sb.run(["--message-format", "json", "status"]);
    out.assert_code(0);
    let lines = json_lines(&out.stdout);
    assert!(!lines.iter().any(|v| v["reason"] == "holder" && v["pid"] == pid), "a dead holder is not listed: {out}");
    let orphans: Vec<&Value> = lines.iter().filter(|v| v["reason"] == "item" && v["live"] == false).collect();
    assert_eq!(orphans.len(), 1, "the killed fill's temp is an orphan: {out}");
    let human = sb.run(["status"]);
    assert!(human.stdout.contains("orphan"), "{human}");
    assert!(!human.stdout.contains(&format!("pid {pid} ")), "{human}");

    // The cache stays usable: the same key fills again.
    let entry = sb.fill("big", "whole");
    assert_eq!(std::fs::read_to_string(entry.join("f")).expect("entry file"), "whole\n");
    assert!(!entry.join("half").exists(), "nothing of the killed fill was published");

    let out = sb.run(["--message-format", "json", "gc"]);
    out.assert_code(0);
    let report = json_lines(&out.stdout).pop().expect("a gc report");
    assert_eq!(report["reason"], "gc");
    assert_eq!(report["temps"], 1, "gc reclaimed the orphan: {out}");
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty());
    assert!(entry.join("f").exists(), "gc leaves published entries alone");
}

/// A failing CMD publishes nothing and its status passes through.
#[test]
fn failed_fill_publishes_nothing_and_passes_the_status_through() {
    let sb = Sandbox::new();
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", r#"echo x > "$SAFECACHE_OUT/f"; exit 7"#]);
    out.assert_code(7);
    assert!(out.stderr.contains("nothing was published"), "{out}");
    sb.run(["path", "k"]).assert_code(1);
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "the temp is removed");
    sb.run(["run", "--", "sh", "-c", "exit 42"]).assert_code(42);
    sb.run(["run", "--key", "k", "--", "/nonexistent/command"]).assert_error(101, "/nonexistent/command");
}

/// SIGINT and SIGTERM reach CMD; `run` exits with CMD's status, 128+N for a
/// death by signal N.
#[test]
fn signals_are_forwarded_and_the_status_passed_through() {
    let sb = Sandbox::new();
    let mut run = sb.spawn(["run", "--", "sh", "-c", "echo ready; exec cat"]);
    run.expect_stdout("ready");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(run.pid() as i32, libc::SIGINT) };
    // CMD's stdin stays open: only the forwarded signal can end it.
    let (status, lines) = run.finish_keeping_stdin();
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{lines:?}");

    let mut run = sb.spawn(["run", "--key", "k", "--", "sh", "-c", "echo ready; exec cat"]);
    run.expect_stderr_line("ready");
    // SAFETY: as above.
    unsafe { libc::kill(run.pid() as i32, libc::SIGTERM) };
    // CMD's stdin stays open: only the forwarded signal can end it.
    let (status, lines) = run.finish_keeping_stdin();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{lines:?}");
    sb.run(["path", "k"]).assert_code(1);
}

/// Commands run under `run` may call safecache again on the same cache:
/// they inherit the lease instead of locking it again or deadlocking.
#[test]
fn nested_invocations_inherit_the_lease() {
    let sb = Sandbox::new();
    let bin = support::bin();
    let inner = format!(
        r#"echo "lease=$SAFECACHE_LEASE dir=$SAFECACHE_DIR"
        "{bin}" run --key nested -- sh -c 'echo n > "$SAFECACHE_OUT/f"' >/dev/null || exit 10
        "{bin}" --lock-timeout 30 clean; echo "clean=$?""#
    );
    // Under a shared lease, a nested fill works; a nested clean would need
    // the exclusive lease its own parent blocks, so it fails at once (75).
    let out = sb.run(["run", "--", "sh", "-c", &inner]);
    out.assert_code(0);
    assert!(out.stdout.contains(&format!("lease=shared dir={}", sb.cache.display())), "{out}");
    assert!(out.stdout.contains("clean=75"), "{out}");
    assert!(out.stderr.contains("--exclusive"), "the conflict says how to fix it: {out}");
    sb.run(["path", "nested"]).assert_code(0);

    // Under an exclusive lease, the nested clean proceeds without waiting.
    let out = sb.run(["run", "--exclusive", "--", "sh", "-c", &inner]);
    out.assert_code(0);
    assert!(out.stdout.contains("lease=exclusive") && out.stdout.contains("clean=0"), "{out}");
    sb.run(["path", "nested"]).assert_code(1);
    // `run --exclusive` also excludes others meanwhile.
    let mut holder = sb.spawn(["run", "--exclusive", "--", "sh", "-c", "echo ready; read go"]);
    holder.expect_stdout("ready");
    sb.run(["run", "--lock-timeout", "0", "--", "true"]).assert_one_line_error(75, &format!("pid {}", holder.pid()));
    holder.send("go");
    assert_eq!(holder.finish().0.code(), Some(0));
}

/// Every kind of bad input: a one-line error with the documented exit code,
/// CMD not run, and nothing in the cache changed.
#[test]
fn bad_input_is_refused_with_one_line_and_no_change() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let ran = sb.path("ran");
    let touch = format!("touch {}", ran.display());
    let check = |args: &[&str], code: i32, fragment: &str| {
        let before = snapshot(&sb.cache);
        let out = sb.run(args);
        out.assert_one_line_error(code, fragment);
        assert_eq!(snapshot(&sb.cache), before, "`{args:?}` changed the cache");
        assert!(!ran.exists(), "`{args:?}` ran its command");
    };
    // Bad keys.
    check(&["run", "--key", "a//b", "--", "sh", "-c", &touch], 2, "invalid key `a//b`");
    check(&["run", "--key", "../etc", "--", "sh", "-c", &touch], 2, "`.` or `..`");
    check(&["path", "/etc/passwd"], 2, "absolute");
    check(&["rm", ".safecache"], 2, "reserved");
    check(&["use", "--key", "a\\b", "--", "sh", "-c", &touch], 2, "backslash");
    // Unknown flags and bad option values.
    check(&["ls", "--bogus"], 2, "--bogus");
    check(&["run", "--bogus", "--", "sh", "-c", &touch], 2, "--bogus");
    check(&["--lock-timeout", "soon", "gc"], 2, "number of seconds");
    check(&["--message-format", "xml", "ls"], 2, "xml");
    check(&["frobnicate"], 2, "frobnicate");
    check(&["rm"], 2, "KEYS");
    check(&["run", "--key", "k2"], 2, "CMD");
    // A pin of an absent key fails before CMD starts.
    check(&["use", "--key", "absent", "--", "sh", "-c", &touch], 1, "not in the cache");

    // An unknown format version: refused before anything is touched.
    std::fs::write(sb.cache.join(".safecache/format"), "safecache-format 99\n").expect("write format");
    check(&["run", "--key", "k2", "--", "sh", "-c", &touch], 101, "safecache-format 99");
    check(&["rm", "k"], 101, "format");
    check(&["clean"], 101, "format");
    check(&["gc"], 101, "format");

    // A cache dir that is a file, or a non-empty dir without a marker.
    let file = sb.path("a-file");
    std::fs::write(&file, "not a cache").expect("write file");
    let foreign = sb.path("home");
    std::fs::create_dir(&foreign).expect("create dir");
    std::fs::write(foreign.join("precious"), "keep me").expect("write file");
    for (dir, fragment) in [(&file, "not a directory"), (&foreign, "`cargo-safecache init ")] {
        let before = snapshot(dir);
        let out = sb.run(["--cache-dir", dir.to_str().expect("utf-8"), "run", "--key", "x", "--", "sh", "-c", &touch]);
        out.assert_one_line_error(2, fragment);
        let out = sb.run(["clean", "--cache-dir", dir.to_str().expect("utf-8")]);
        out.assert_one_line_error(2, fragment);
        assert_eq!(snapshot(dir), before);
        assert!(!ran.exists());
    }
}

/// An unwritable cache dir: a one-line error saying so and how to fix it,
/// exit 101, and the dir left as it was. As root, the binary runs as
/// `nobody`, for whom a root-owned dir is unwritable.
#[test]
fn unwritable_cache_dir_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = sb.path("locked");
    std::fs::create_dir(&dir).expect("create dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let before = snapshot(&dir);
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        // `nobody` may not reach the build's target dir (a clone under
        // /root): run a copy from the world-readable sandbox.
        let copy = sb.path("cargo-safecache");
        std::fs::copy(support::bin(), &copy).expect("copy the binary");
        let mut cmd = Command::new(&copy);
        cmd.args(["run", "--key", "k", "--allow-empty", "--", "true"])
            .env("CARGO_TERM_COLOR", "never")
            .uid(65534)
            .gid(65534);
        cmd
    } else {
        sb.cmd(["run", "--key", "k", "--allow-empty", "--", "true"])
    };
    cmd.env("SAFECACHE_DIR", &dir).env_remove("SAFECACHE_LEASE").env_remove("SAFECACHE_LOG");
    let out = support::Out::of(&mut cmd);
    out.assert_one_line_error(101, "writable");
    assert!(out.stderr.contains("--cache-dir"), "the error says how to fix it: {out}");
    assert_eq!(snapshot(&dir), before);
}

/// `--message-format json`: every stdout line is a JSON object with a
/// `reason`; CMD's own output and human text go to stderr.
#[test]
fn json_messages_have_a_reason_on_every_line() {
    let sb = Sandbox::new();
    let out = sb.run([
        "--message-format",
        "json",
        "run",
        "--key",
        "j",
        "--",
        "sh",
        "-c",
        r#"echo noise; echo x > "$SAFECACHE_OUT/f""#,
    ]);
    out.assert_code(0);
    let lines = json_lines(&out.stdout);
    let last = lines.last().expect("a line");
    assert_eq!(last["reason"], "entry");
    assert_eq!(last["filled"], true);
    let path = last["path"].as_str().expect("path");
    assert!(Path::new(path).join("f").exists());
    assert!(out.stderr.contains("noise"), "CMD's stdout goes to stderr in JSON mode: {out}");

    for args in [&["ls"][..], &["status"], &["gc"], &["path", "j"], &["rm", "j"], &["clean"]] {
        let out = sb.run([&["--message-format", "json"][..], args].concat());
        out.assert_code(0);
        assert!(!json_lines(&out.stdout).is_empty(), "{args:?} printed JSON: {out}");
    }
    let out = sb.run(["path", "j", "--message-format", "json"]);
    out.assert_code(1);
    let lines = json_lines(&out.stdout);
    assert_eq!(lines[0]["reason"], "error");
    assert_eq!(lines[0]["exit_code"], 1);
}

/// `ls` and `path` see entries; `init` adopts a non-empty directory.
#[test]
fn ls_path_and_init() {
    let sb = Sandbox::new();
    let entry = sb.fill("git/serde", "s");
    let out = sb.run(["path", "git/serde"]);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), entry.display().to_string());
    let out = sb.run(["ls"]);
    out.assert_code(0);
    assert!(out.stdout.contains("git/serde") && out.stdout.contains(" B "), "{out}");

    let old = sb.path("old-cache");
    std::fs::create_dir(&old).expect("create dir");
    std::fs::write(old.join("legacy"), "data").expect("write");
    let out = sb.run(["init", old.to_str().expect("utf-8")]);
    out.assert_code(0);
    let out = sb.run(["--cache-dir", old.to_str().expect("utf-8"), "ls"]);
    out.assert_code(0);
    assert!(out.stdout.contains("legacy"), "{out}");
    sb.run(["--cache-dir", old.to_str().expect("utf-8"), "clean"]).assert_code(0);
    assert!(!old.join("legacy").exists());
}

/// Cargo runs `cargo-safecache safecache ARGS`; both forms work, global
/// options go before or after the subcommand, and the top-level `--help`
/// documents the exit codes and environment.
#[test]
fn cargo_form_global_options_and_help() {
    let sb = Sandbox::new();
    let entry = sb.fill("k", "v");
    let other = sb.path("other");
    for args in [
        vec!["safecache", "path", "k"],
        vec!["safecache", "--cache-dir", sb.cache.to_str().expect("utf-8"), "path", "k"],
        vec!["path", "--cache-dir", sb.cache.to_str().expect("utf-8"), "k"],
    ] {
        let out = sb.cmd(&args).env("SAFECACHE_DIR", &other).output().expect("run");
        let out = support::Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if args.len() == 3 {
            out.assert_code(1); // SAFECACHE_DIR points elsewhere
        } else {
            out.assert_code(0);
            assert_eq!(out.stdout.trim(), entry.display().to_string());
        }
    }
    let out = sb.run(["safecache", "--help"]);
    out.assert_code(0);
    for needle in ["Usage: cargo safecache", "Exit codes:", "75", "101", "SAFECACHE_LOCK_TIMEOUT", "SAFECACHE_LOG"] {
        assert!(out.stdout.contains(needle), "--help mentions {needle}: {out}");
    }
    let out = sb.run(["--help"]);
    out.assert_code(0);
    assert!(out.stdout.contains("Usage: cargo-safecache"), "{out}");
    // Subcommands' help leaves the reference to the top level:
    // `usability::help_is_short_then_long_without_a_repeated_footer`.

    // Empty variables count as unset.
    let out =
        sb.cmd(["path", "k"]).env("SAFECACHE_LOCK_TIMEOUT", "").env("CARGO_TERM_COLOR", "").output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
            assert!(v["reason"].is_string(), "every line has a reason: {l}");
            v
        })
        .collect()
}
