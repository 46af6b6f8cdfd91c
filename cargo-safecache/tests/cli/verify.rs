//! `verify`: a damaged entry is found, named and quarantined whole (exit
//! 65), `--repair` removes it so `run --key` fills it again, a pinned entry
//! is never moved, and `--verify-on-read` treats a corrupt entry as absent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Bg, Out, Sandbox, bin, mkfifo, names};

/// Fills `key` with `f` ("one") and `d/g` ("two").
fn fill(sb: &Sandbox, key: &str) -> PathBuf {
    let script = r#"echo one > "$SAFECACHE_OUT/f"; mkdir "$SAFECACHE_OUT/d"; echo two > "$SAFECACHE_OUT/d/g""#;
    let out = sb.run(["run", "--key", key, "--", "sh", "-c", script]);
    out.assert_code(0);
    PathBuf::from(out.last_stdout_line())
}

fn quarantine(sb: &Sandbox) -> PathBuf {
    sb.cache.join(".safecache/quarantine")
}

fn json_lines(out: &Out) -> Vec<Value> {
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A flipped byte, an added file, a deleted file and an edited manifest,
/// one per key: one `verify` names each, quarantines each whole, exits 65,
/// and `run --key` then fills the key again.
#[test]
fn damage_is_named_and_quarantined_and_run_fills_again() {
    let sb = Sandbox::new();
    let flip = fill(&sb, "dep/flip");
    let add = fill(&sb, "dep/add");
    let del = fill(&sb, "dep/del");
    fill(&sb, "dep/manifest");
    fill(&sb, "dep/sound");
    std::fs::write(flip.join("f"), "onf\n").unwrap();
    std::fs::write(add.join("d/extra"), "x").unwrap();
    std::fs::remove_file(del.join("d/g")).unwrap();
    let manifests = sb.cache.join(".safecache/manifests");
    let edited = names(&manifests)
        .into_iter()
        .map(|n| manifests.join(n))
        .find(|m| std::fs::read_to_string(m).unwrap().contains("\"key\":\"dep/manifest\""))
        .expect("a manifest for dep/manifest");
    let text = std::fs::read_to_string(&edited).unwrap().replacen("\"size\":4", "\"size\":5", 1);
    std::fs::write(&edited, text).unwrap();

    let out = sb.run(["verify"]);
    out.assert_error(65, "4 entries are corrupt");
    for expected in [
        "`dep/flip` is corrupt, quarantined",
        "`f`: content differs",
        "`d/extra` was added (a file)",
        "`d/g` is missing",
        "fails its own hash",
        "Verified 5 entries: 1 good, 4 corrupt, 0 unverified",
    ] {
        assert!(out.stderr.contains(expected), "{expected:?} not in\n{out}");
    }
    // Each corrupt entry sits whole in quarantine, as found.
    let items = names(&quarantine(&sb));
    assert_eq!(items.len(), 4);
    let kept: Vec<String> =
        items.iter().filter_map(|i| std::fs::read_to_string(quarantine(&sb).join(i).join("entry/f")).ok()).collect();
    assert!(kept.contains(&"onf\n".to_owned()), "{kept:?}");
    sb.run(["path", "dep/flip"]).assert_code(1);
    sb.run(["path", "dep/sound"]).assert_code(0);

    let refilled = fill(&sb, "dep/flip");
    assert_eq!(std::fs::read_to_string(refilled.join("f")).unwrap(), "one\n");
    sb.run(["verify"]).assert_code(0);
}

/// `--repair` keeps nothing; the JSON says what was found; the next `run
/// --key` runs its fill again.
#[test]
fn repair_removes_and_the_next_run_refills() {
    let sb = Sandbox::new();
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("d/g"), "tw").unwrap();
    std::fs::remove_file(
        sb.cache.join(".safecache/manifests").join(names(&sb.cache.join(".safecache/manifests")).first().unwrap()),
    )
    .ok();
    // No manifest: unverified, not corrupt, and untouched, but never
    // passed in silence.
    let out = sb.run(["verify", "k"]);
    out.assert_error(101, "1 entry could not be checked");
    assert!(out.stderr.contains("Unverified `k`"), "{out}");
    assert!(entry.join("d/g").exists());

    sb.run(["rm", "k"]).assert_code(0);
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("d/g"), "tw").unwrap();
    let out = sb.run(["--message-format", "json", "verify", "--repair", "k", "absent/key"]);
    out.assert_code(65);
    let lines = json_lines(&out);
    let k = lines.iter().find(|l| l["reason"] == "verified" && l["key"] == "k").expect("a line for k");
    assert_eq!(k["state"], "corrupt");
    assert_eq!(k["action"], "removed");
    assert!(k["differences"][0].as_str().unwrap().contains("`d/g`: size 4 is now 2 bytes"), "{k}");
    assert!(lines.iter().any(|l| l["key"] == "absent/key" && l["state"] == "absent"));
    let summary = lines.iter().find(|l| l["reason"] == "verify-summary").expect("a summary");
    assert_eq!(
        (summary["checked"].as_u64(), summary["good"].as_u64(), summary["corrupt"].as_u64()),
        (Some(1), Some(0), Some(1))
    );
    assert!(lines.iter().any(|l| l["reason"] == "error" && l["exit_code"] == 65));
    assert!(!entry.exists());
    assert!(!quarantine(&sb).exists(), "repair keeps nothing");

    let log = sb.path("fills");
    let script = format!("echo ran >> '{}'; echo one > \"$SAFECACHE_OUT/f\"", log.display());
    sb.run(["run", "--key", "k", "--", "sh", "-c", &script]).assert_code(0);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n", "the fill ran again");
    sb.run(["verify", "k"]).assert_code(0);
}

/// While `run --pin` uses a corrupt entry, `verify` reports it and leaves it
/// in place; once the pin is gone, it quarantines it. A `rm` that comes
/// meanwhile waits, and nothing is lost or half deleted.
#[test]
fn a_pinned_entry_is_reported_but_never_moved() {
    let sb = Sandbox::new();
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("f"), "ONE\n").unwrap();
    let gate = sb.path("gate");
    mkfifo(&gate);
    let script = format!("echo using; read x < '{}'; cat \"$SAFECACHE_ENTRY/f\"", gate.display());
    let mut user = sb.spawn(["use", "--key", "k", "--fill", "false", "--", "sh", "-c", &script]);
    user.expect_stdout("using");
    let out = sb.run(["--lock-timeout", "0.3", "verify"]);
    out.assert_code(65);
    assert!(out.stderr.contains("left in place"), "{out}");
    assert_eq!(std::fs::read_to_string(entry.join("f")).unwrap(), "ONE\n");
    std::fs::write(&gate, "go\n").unwrap();
    let (status, lines) = user.finish();
    assert!(status.success(), "{lines:?}");
    assert!(crate::support::stdout_of(&lines).contains(&"ONE"), "CMD read its entry whole: {lines:?}");
    sb.run(["verify"]).assert_code(65);
    assert!(!entry.exists());
    assert_eq!(names(&quarantine(&sb)).len(), 1);
}

/// `--verify-on-read` (or its variable): a corrupt entry reads as absent
/// and is quarantined, so `run --key` fills it again.
#[test]
fn verify_on_read_treats_a_corrupt_entry_as_absent() {
    let sb = Sandbox::new();
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("f"), "ONE\n").unwrap();
    sb.run(["path", "k"]).assert_code(0);
    let out = Out::of(sb.cmd(["path", "k"]).env("SAFECACHE_VERIFY_ON_READ", "1"));
    out.assert_code(1);
    assert_eq!(names(&quarantine(&sb)).len(), 1);
    fill(&sb, "k");
    let read = ["use", "--key", "k", "--fill", "false", "--", "sh", "-c", "cat \"$SAFECACHE_ENTRY/f\""];
    let out = sb.run([&["--verify-on-read"][..], &read].concat());
    out.assert_code(0);
    assert_eq!(out.last_stdout_line(), "one");
    // Damaged again: `run --key --fill` under the variable fills it afresh.
    std::fs::write(sb.cache.join("k/f"), "ONE\n").unwrap();
    let fill = r#"echo fresh > "$SAFECACHE_OUT/f""#;
    let out = Out::of(
        sb.cmd(["use", "--key", "k", "--fill", fill, "--", "sh", "-c", "cat \"$SAFECACHE_ENTRY/f\""])
            .env("SAFECACHE_VERIFY_ON_READ", "1"),
    );
    out.assert_code(0);
    assert_eq!(out.last_stdout_line(), "fresh");
    assert_eq!(names(&quarantine(&sb)).len(), 2);
    assert!(Path::new(&sb.cache).join("k").exists());
}

/// `cargo-safecache ARGS` on the cache at `cache` (a copy of a sandbox's).
fn on(sb: &Sandbox, cache: &Path, args: &[&str]) -> Out {
    Out::of(sb.cmd(args).env("SAFECACHE_DIR", cache))
}

/// Copies the directory `from` to `to` (which must not exist) with a real
/// tool, as a backup and restore would.
fn copy_with(tool: &str, from: &Path, to: &Path) {
    let (from_s, to_s) = (from.display().to_string(), to.display().to_string());
    let status = match tool {
        "tar" => {
            std::fs::create_dir(to).unwrap();
            Command::new("sh").args(["-c", r#"tar -C "$1" -cf - . | tar -C "$2" -xf -"#, "sh", &from_s, &to_s]).status()
        }
        "cp -a" => Command::new("cp").args(["-a", &from_s, &to_s]).status(),
        "cp -r" => Command::new("cp").args(["-r", &from_s, &to_s]).status(),
        "rsync -a" => Command::new("rsync").args(["-a", &format!("{from_s}/"), &to_s]).status(),
        other => panic!("no tool {other}"),
    };
    assert!(status.expect(tool).success(), "{tool} failed");
}

fn installed(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Truncates the file at `path` to `len` bytes.
fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

/// Issue 15: manifests were tied to the entry's inode, so after a `tar`,
/// `cp -a` or `rsync -a` copy of a cache `verify` called every entry
/// "unverified" (exit 0) and `--verify-on-read` served a truncated file.
/// Now each copy verifies as good, a file truncated after the copy is found
/// (65), and `--verify-on-read` sets that entry aside instead of serving it.
#[test]
fn copied_and_restored_caches_are_checked_and_a_truncated_file_is_found() {
    let sb = Sandbox::new();
    let damaged = fill(&sb, "dep/damaged");
    fill(&sb, "dep/sound");
    let inside = damaged.strip_prefix(&sb.cache).unwrap().join("d/g");
    let mut tools = vec!["tar", "cp -a"];
    if installed("rsync") {
        tools.push("rsync -a");
    } else {
        eprintln!("skipping rsync -a: rsync is not installed (cargo xtask ci installs it)");
    }
    for tool in tools {
        let copy = sb.path(&format!("copy-{}", tool.replace([' ', '-'], "")));
        copy_with(tool, &sb.cache, &copy);
        let out = on(&sb, &copy, &["verify"]);
        out.assert_code(0);
        assert!(out.stderr.contains("Verified 2 entries: 2 good, 0 corrupt, 0 unverified"), "{tool}: {out}");

        truncate(&copy.join(&inside), 2);
        let out = on(&sb, &copy, &["verify"]);
        out.assert_error(65, "1 entry is corrupt");
        assert!(out.stderr.contains("`dep/damaged` is corrupt, quarantined"), "{tool}: {out}");
        assert!(out.stderr.contains("`d/g`: size 4 is now 2 bytes"), "{tool}: {out}");

        // Copied again and damaged again: --verify-on-read never hands the
        // truncated file to CMD.
        let again = sb.path(&format!("again-{}", tool.replace([' ', '-'], "")));
        copy_with(tool, &sb.cache, &again);
        truncate(&again.join(&inside), 2);
        let cat = r#"cat "$SAFECACHE_ENTRY/d/g""#;
        let read = ["--verify-on-read", "use", "--key", "dep/damaged", "--fill", "false", "--", "sh", "-c", cat];
        let out = on(&sb, &again, &read);
        assert_ne!(out.code, Some(0), "{tool}: CMD ran on the truncated entry\n{out}");
        assert!(!out.stdout.contains("tw"), "{tool}: {out}");
        on(&sb, &again, &["path", "dep/damaged"]).assert_code(1);
        on(&sb, &again, &["verify"]).assert_code(0);
    }
}

/// A copy that does not keep modification times cannot tie the manifests
/// to their entries: an intact entry still verifies (its content is what
/// was published), and a damaged one is reported as unverified with exit
/// 101, never passed and never moved.
#[test]
fn a_copy_without_times_reports_damage_as_unverifiable_not_good() {
    let sb = Sandbox::new();
    let damaged = fill(&sb, "dep/damaged");
    let sound = fill(&sb, "dep/sound");
    let copy = sb.path("copy");
    copy_with("cp -a", &sb.cache, &copy);
    let entry = copy.join(damaged.strip_prefix(&sb.cache).unwrap());
    // As `cp -r` or `tar --touch` would leave them.
    for e in [&entry, &copy.join(sound.strip_prefix(&sb.cache).unwrap())] {
        assert!(Command::new("touch").arg("-d").arg("@1000000000").arg(e).status().unwrap().success());
    }
    on(&sb, &copy, &["verify"]).assert_code(0);
    truncate(&entry.join("f"), 1);
    let out = on(&sb, &copy, &["verify"]);
    out.assert_error(101, "1 entry could not be checked");
    assert!(out.stderr.contains("cannot be tied"), "{out}");
    assert!(out.stderr.contains("`f`: size 4 is now 1 bytes"), "{out}");
    assert!(entry.join("f").exists(), "left in place");
    let out = on(&sb, &copy, &["--verify-on-read", "path", "dep/damaged"]);
    out.assert_error(101, "could not be checked, so it was not used");
}

/// Whether this process is root (the permission tests need to run
/// another user's processes).
fn root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cargo-safecache ARGS` as `uid`, with primary group 65534 and no
/// other groups, on the sandbox's cache.
fn as_user(sb: &Sandbox, uid: u32, args: &[&str]) -> Out {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}")).args(["--regid=65534", "--clear-groups", bin()]).args(args);
    for (k, v) in sb.cmd(args).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Out::of(cmd.env("HOME", "/nonexistent").stdin(std::process::Stdio::null()))
}

fn as_nobody(sb: &Sandbox, args: &[&str]) -> Out {
    as_user(sb, 65534, args)
}

/// A sandbox whose cache dir another user (65534) can reach.
fn open_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    std::fs::set_permissions(sb.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    sb
}

/// Issue 15: in a group-shared cache, a member who cannot read another
/// member's 0600 file called the entry corrupt (65), and `verify --repair`
/// removed it. A file that cannot be read is "could not be checked" (101)
/// and nothing is moved, even with `--repair`.
#[test]
fn a_file_another_member_cannot_read_is_not_corrupt() {
    if !root() {
        eprintln!("skipping: needs root to run a second user's processes");
        return;
    }
    let sb = open_sandbox();
    // The cache is made by 65533 alone, and the entry published there keeps
    // its 0600 file (publish gives the group read access only in a
    // group-shared cache: outside.rs tests that).
    std::fs::create_dir(&sb.cache).unwrap();
    std::os::unix::fs::chown(&sb.cache, Some(65533), Some(65534)).unwrap();
    let script = r#"echo secret > "$SAFECACHE_OUT/private"; chmod 600 "$SAFECACHE_OUT/private"; echo open > "$SAFECACHE_OUT/open""#;
    let out = as_user(&sb, 65533, &["run", "--key", "k", "--", "sh", "-c", script]);
    out.assert_code(0);
    let entry = PathBuf::from(out.last_stdout_line());
    // Then it is shared with group 65534 (members 65533 and 65534), as
    // docs/SECURITY.md says: the cache's own directories, not the entries.
    let share = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"chgrp 65534 "$1" && chgrp -R 65534 "$1/.safecache" && chmod 2770 "$1" && find "$1/.safecache" -type d -exec chmod 2770 {} + && find "$1/.safecache" -type f -exec chmod g+rw {} +"#)
        .arg("sh")
        .arg(&sb.cache)
        .status()
        .unwrap();
    assert!(share.success());
    for args in [&["verify"][..], &["verify", "--repair"]] {
        let out = as_nobody(&sb, args);
        out.assert_error(101, "1 entry could not be checked");
        // The entry's directory is the filler's own (0700): the member
        // cannot even list it.
        assert!(out.stderr.contains("cannot be read"), "{out}");
        assert!(!out.stderr.contains("is corrupt"), "{out}");
    }
    assert_eq!(std::fs::read_to_string(entry.join("private")).unwrap(), "secret\n", "left intact");
    assert!(!quarantine(&sb).exists());
    as_nobody(&sb, &["--verify-on-read", "path", "k"]).assert_error(101, "could not be checked, so it was not used");
    // The member who owns it can read it, and it is good.
    as_user(&sb, 65533, &["verify"]).assert_code(0);
}

/// Issue 15: the owner's own `verify` called an entry with a mode-000 file
/// corrupt and quarantined it. (Root reads any file, so the owner here is
/// uid 65534; at `--durability none`, since the sync before publishing
/// must open every file.) The file could not be hashed when published, so
/// its content cannot be checked: 101, and nothing moves, even with
/// `--repair`.
#[test]
fn an_unreadable_file_of_the_owner_is_not_corrupt() {
    if !root() {
        eprintln!("skipping: needs root to run as another user");
        return;
    }
    let sb = open_sandbox();
    std::fs::create_dir(&sb.cache).unwrap();
    std::os::unix::fs::chown(&sb.cache, Some(65534), Some(65534)).unwrap();
    let script = r#"echo x > "$SAFECACHE_OUT/f"; chmod 000 "$SAFECACHE_OUT/f"; echo y > "$SAFECACHE_OUT/g""#;
    let out = as_nobody(&sb, &["--durability", "none", "run", "--key", "k", "--", "sh", "-c", script]);
    out.assert_code(0);
    let entry = PathBuf::from(out.last_stdout_line());
    for args in [&["verify"][..], &["verify", "--repair"]] {
        let out = as_nobody(&sb, args);
        out.assert_error(101, "1 entry could not be checked");
        assert!(out.stderr.contains("`f`"), "{out}");
        assert!(!out.stderr.contains("is corrupt"), "{out}");
    }
    assert!(entry.join("f").exists() && entry.join("g").exists(), "left intact");
    assert!(!quarantine(&sb).exists());
    as_nobody(&sb, &["--verify-on-read", "path", "k"]).assert_error(101, "could not be checked, so it was not used");
}

/// Issue 15: an entry of sparse files took as long to publish as reading
/// its apparent size (minutes for 1 TB). Holes are skipped: a 1 TB sparse
/// file publishes and verifies in seconds, and a byte written into what was
/// a hole is still found.
#[test]
fn a_sparse_terabyte_publishes_and_verifies_in_seconds() {
    let sb = Sandbox::new();
    let script = r#"truncate -s 1T "$SAFECACHE_OUT/big" && printf data > "$SAFECACHE_OUT/tail" && truncate -s 3G "$SAFECACHE_OUT/tail""#;
    let started = Instant::now();
    let (status, lines) = Bg::spawn(sb.cmd(["run", "--key", "sparse", "--", "sh", "-c", script])).finish();
    let published = started.elapsed();
    assert!(status.success(), "{lines:?}");
    eprintln!("published a 1 TB sparse file in {published:?}");
    assert!(published < Duration::from_secs(10), "took {published:?}");
    let entry = PathBuf::from(*crate::support::stdout_of(&lines).last().unwrap());
    let started = Instant::now();
    sb.run(["verify"]).assert_code(0);
    assert!(started.elapsed() < Duration::from_secs(10), "verify took {:?}", started.elapsed());
    // One byte in the middle of a hole.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(entry.join("big")).unwrap();
        f.seek(SeekFrom::Start(1 << 39)).unwrap();
        f.write_all(b"x").unwrap();
    }
    assert_eq!(std::fs::metadata(entry.join("big")).unwrap().len(), 1 << 40);
    let out = sb.run(["verify"]);
    out.assert_error(65, "1 entry is corrupt");
    assert!(out.stderr.contains("`big`: content differs"), "{out}");
}

/// Waits until the process `pid` (not a child of this one) has exited, by
/// polling a pidfd for it; false if it had already gone.
fn wait_gone(pid: i32) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return false;
    }
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; the fd is closed once, after the wait.
    unsafe {
        libc::poll(&mut poll, 1, 120_000);
        libc::close(fd);
    }
    true
}

/// Issue 15: while `run` hashed a fill for its manifest it ignored SIGTERM
/// and SIGINT, and published once done. A SIGTERM that comes after CMD has
/// exited, while the output is being hashed, stops `run` promptly with
/// 143, nothing is published, and gc leaves no temp behind.
#[test]
fn sigterm_while_hashing_stops_run_and_publishes_nothing() {
    let sb = Sandbox::new();
    // 2 GiB of data without a zero block: seconds of hashing. No syncs, so
    // the time is the hashing's.
    let script =
        r#"echo $$ > "$T/cmd.pid"; yes abcdefghijklmnopqrstuvwxyz | head -c 2G > "$SAFECACHE_OUT/big"; echo written"#;
    let mut run = sb.spawn(["--durability", "none", "run", "--key", "big", "--", "sh", "-c", script]);
    run.expect_stderr_line("written");
    let cmd: i32 = std::fs::read_to_string(sb.path("cmd.pid")).unwrap().trim().parse().unwrap();
    // CMD has exited: `run` is hashing (or about to).
    wait_gone(cmd);
    let signalled = Instant::now();
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(run.pid() as i32, libc::SIGTERM) };
    let (status, lines) = run.finish();
    let took = signalled.elapsed();
    eprintln!("run exited {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(143), "{lines:?}");
    assert!(
        lines.iter().any(|l| matches!(l, crate::support::Line::Stderr(s) if s.contains("nothing was published"))),
        "{lines:?}"
    );
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
    sb.run(["path", "big"]).assert_code(1);
    sb.run(["gc"]).assert_code(0);
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "a temp was left after gc");
}
