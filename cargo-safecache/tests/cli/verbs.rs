//! The verb says CMD's role (issue 16): `run --key K -- CMD` runs the
//! command that fills K; `use --key K [--fill FILL] -- CMD` runs the
//! command that uses it. Each test here reproduces a failure a new user
//! met with the old forms, where one CMD meant opposite things.

use std::time::{Duration, Instant};

use crate::support::{Line, Out, Sandbox, mkfifo};

/// The entry's path, alone, is stdout on a miss and on a hit: what the fill
/// prints goes to stderr, so `$(safecache run ...)` captures the path only
/// (pip's progress once ended up in a captured version string).
#[test]
fn run_key_prints_only_the_entry_path_on_a_miss_and_on_a_hit() {
    let sb = Sandbox::new();
    let build = r#"echo "Collecting progress 42%"; printf 'no newline'; echo v > "$SAFECACHE_OUT/f""#;
    let miss = sb.run(["run", "--key", "k", "--", "sh", "-c", build]);
    miss.assert_code(0);
    let hit = sb.run(["run", "--key", "k", "--", "sh", "-c", build]);
    hit.assert_code(0);
    for out in [&miss, &hit] {
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout is the path alone\n{out}");
        assert!(std::path::Path::new(lines[0]).join("f").is_file(), "{out}");
    }
    assert!(miss.stderr.contains("Collecting progress 42%"), "the fill's output went to stderr\n{miss}");
}

/// `run --key K --fill F -- CMD` and `run --pin K -- CMD` are gone: each
/// fails with one line naming the `use` form, and changes nothing.
#[test]
fn the_old_consuming_forms_of_run_name_use() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let marker = sb.path("ran");
    let touch = format!("touch '{}'", marker.display());
    let out = sb.run(["run", "--key", "k2", "--fill", "echo x > \"$SAFECACHE_OUT/f\"", "--", "sh", "-c", &touch]);
    out.assert_one_line_error(2, "use --key k2 --fill");
    let out = sb.run(["run", "--pin", "k", "--", "sh", "-c", &touch]);
    out.assert_one_line_error(2, "use --key k");
    assert!(!marker.exists(), "CMD ran");
    sb.run(["path", "k2"]).assert_code(1);
}

/// A fill that writes nothing is not published: the old forms published an
/// empty entry that every later run then used in silence (`run --key K --
/// CMD` read as "use K", or `--fill "... > $SAFECACHE_OUT/f"` in double
/// quotes, expanded by the caller's shell to `/f`).
#[test]
fn an_empty_output_is_not_published_unless_allowed() {
    let sb = Sandbox::new();
    // CMD that only reads: the misreading of `run --key K -- CMD`.
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", "ls >/dev/null"]);
    out.assert_error(101, "wrote nothing into $SAFECACHE_OUT");
    assert!(out.stdout.is_empty(), "no path printed\n{out}");
    sb.run(["path", "k"]).assert_code(1);
    // The double-quoted fill, as the caller's shell expanded it.
    let elsewhere = sb.path("f");
    let fill = format!("echo x > '{}'", elsewhere.display());
    let out = sb.run(["use", "--key", "k", "--fill", &fill, "--", "true"]);
    out.assert_error(101, "--allow-empty");
    sb.run(["path", "k"]).assert_code(1);
    assert_eq!(std::fs::read_dir(sb.cache.join(".safecache/tmp")).map(|d| d.count()).unwrap_or(0), 0, "no temp left");
    // Said on purpose, it is published.
    sb.run(["run", "--key", "k", "--allow-empty", "--", "true"]).assert_code(0);
    sb.run(["path", "k"]).assert_code(0);
}

/// `use` of an absent key without --fill runs nothing, exits 1, and names
/// both ways to fill it.
#[test]
fn use_of_an_absent_key_runs_nothing_and_names_both_fills() {
    let sb = Sandbox::new();
    let marker = sb.path("ran");
    let out = sb.run(["use", "--key", "dep", "--", "sh", "-c", &format!("touch '{}'", marker.display())]);
    out.assert_one_line_error(1, "run --key dep -- BUILD");
    assert!(out.stderr.contains("use --key dep --fill 'BUILD' -- CMD"), "{out}");
    assert!(!marker.exists(), "CMD ran without its entry");
    sb.run(["path", "dep"]).assert_code(1);
}

/// `use`: the fill's output goes to stderr, CMD's to stdout; CMD learns
/// whether the entry was there (SAFECACHE_HIT=1) or this run filled it (0).
#[test]
fn use_tells_cmd_whether_it_hit_and_keeps_the_fill_off_stdout() {
    let sb = Sandbox::new();
    let fill = r#"echo filling; echo v > "$SAFECACHE_OUT/f""#;
    let cmd = r#"echo "hit=$SAFECACHE_HIT $(cat "$SAFECACHE_ENTRY/f")""#;
    let first = sb.run(["use", "--key", "k", "--fill", fill, "--", "sh", "-c", cmd]);
    first.assert_code(0);
    assert_eq!(first.stdout, "hit=0 v\n", "{first}");
    assert!(first.stderr.contains("filling"), "{first}");
    let second = sb.run(["use", "--key", "k", "--fill", fill, "--", "sh", "-c", cmd]);
    second.assert_code(0);
    assert_eq!(second.stdout, "hit=1 v\n", "{second}");
    let plain = sb.run(["use", "--key", "k", "--", "sh", "-c", cmd]);
    assert_eq!(plain.stdout, "hit=1 v\n", "{plain}");
}

/// With --fill, the runs waiting for a failing fill share its failure
/// instead of running it again one after another (4 runs of a failing
/// fill ran it 3 to 4 times).
#[test]
fn waiters_share_a_failing_use_fill() {
    let sb = Sandbox::new();
    let count = sb.path("count");
    let gate = sb.path("gate");
    mkfifo(&gate);
    // The fill blocks until the test has seen every other run waiting.
    let fill = format!("echo run >> '{}'; read x < '{}'; exit 3", count.display(), gate.display());
    let mut runs: Vec<_> = (0..4).map(|_| sb.spawn(["use", "--key", "k", "--fill", &fill, "--", "true"])).collect();
    let mut waiting = 0;
    for r in &mut runs {
        let line = r.expect(
            "Filling or waiting",
            |l| matches!(l, Line::Stderr(s) if s.contains("Filling") || s.contains("waiting for")),
        );
        if line.contains("waiting for") {
            waiting += 1;
        }
    }
    assert_eq!(waiting, 3, "three runs wait for the one fill");
    std::fs::write(&gate, "go\n").expect("open the gate");
    for r in runs {
        let (status, seen) = r.finish();
        assert_eq!(status.code(), Some(3), "every run fails as the fill did: {seen:?}");
    }
    let runs = std::fs::read_to_string(&count).expect("count").lines().count();
    assert_eq!(runs, 1, "the failing fill ran once");
}

/// --fill-timeout: a hung fill has its whole tree killed, publishes
/// nothing, and fails with 124.
#[test]
fn a_fill_past_its_timeout_is_killed_with_its_tree() {
    let sb = Sandbox::new();
    let pid_file = sb.path("bg");
    let fill = format!("sleep 1000 & echo $! > '{}'; sleep 1000", pid_file.display());
    let started = Instant::now();
    let out = sb.run(["run", "--key", "k", "--fill-timeout", "1s", "--", "sh", "-c", &fill]);
    out.assert_error(124, "--fill-timeout 1s");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    let bg: i32 = std::fs::read_to_string(&pid_file).expect("pid").trim().parse().expect("a pid");
    // SAFETY: kill with signal 0 only checks that the process exists.
    assert!(unsafe { libc::kill(bg, 0) } != 0, "the fill's background process was killed");
    sb.run(["path", "k"]).assert_code(1);
    let out = sb.run(["use", "--key", "k", "--fill-timeout", "1", "--fill", &fill, "--", "true"]);
    out.assert_code(124);
}

/// --key-file: the same files give the same entry; a changed file gives a
/// new fill; a pattern that matches nothing is a usage error.
#[test]
fn key_files_derive_the_key_from_file_contents() {
    let sb = Sandbox::new();
    let dir = sb.path("src");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(sb.path("Cargo.lock"), "lock v1").expect("write");
    std::fs::write(dir.join("a.rs"), "fn a() {}").expect("write");
    std::fs::write(dir.join("sub/b.rs"), "fn b() {}").expect("write");
    let fills = sb.path("fills");
    let build = format!("echo x >> '{}'; echo x > \"$SAFECACHE_OUT/f\"", fills.display());
    let run = || -> Out {
        let mut cmd = sb.cmd([
            "run",
            "--key",
            "target",
            "--key-file",
            "Cargo.lock",
            "--key-file",
            "src/**/*.rs",
            "--",
            "sh",
            "-c",
            &build,
        ]);
        cmd.current_dir(sb.tmp.path());
        Out::of(&mut cmd)
    };
    let first = run();
    first.assert_code(0);
    let second = run();
    assert_eq!(first.last_stdout_line(), second.last_stdout_line());
    let name = std::path::Path::new(&first.last_stdout_line()).file_name().map(|n| n.to_string_lossy().into_owned());
    assert!(name.as_deref().is_some_and(|n| n.starts_with("target-") && n.len() == "target-".len() + 16), "{name:?}");
    std::fs::write(dir.join("sub/b.rs"), "fn b() { changed }").expect("write");
    let third = run();
    assert_ne!(first.last_stdout_line(), third.last_stdout_line(), "a changed file makes a new entry");
    assert_eq!(std::fs::read_to_string(&fills).expect("fills").lines().count(), 2);
    let mut cmd = sb.cmd(["run", "--key", "t", "--key-file", "nothing/*.lock", "--", "true"]);
    cmd.current_dir(sb.tmp.path());
    Out::of(&mut cmd).assert_one_line_error(2, "matches no file");
}

/// `path K` while K is being filled says who fills it (pid, command, since
/// when) and how to wait for it, instead of "not in the cache" and a hint
/// that leads to an empty entry.
#[test]
fn path_during_a_fill_names_the_filler() {
    let sb = Sandbox::new();
    let gate = sb.path("gate");
    mkfifo(&gate);
    let fill = format!("read x < '{}'; echo v > \"$SAFECACHE_OUT/f\"", gate.display());
    let mut filler = sb.spawn(["run", "--key", "dep", "--", "sh", "-c", &fill]);
    filler.expect_stderr("Filling");
    let out = sb.run(["path", "dep"]);
    out.assert_one_line_error(1, "being filled by pid");
    assert!(out.stderr.contains("read x <"), "names the fill's command\n{out}");
    assert!(out.stderr.contains("use --key dep -- CMD"), "{out}");
    assert!(!out.stderr.contains("run --key dep -- BUILD"), "no hint to fill it again\n{out}");
    // As the hint says, `use` waits for the fill and then reads the entry.
    let mut reader = sb.spawn(["use", "--key", "dep", "--", "sh", "-c", "cat \"$SAFECACHE_ENTRY/f\""]);
    reader.expect_stderr("Blocking");
    std::fs::write(&gate, "go\n").expect("open the gate");
    let (status, _) = filler.finish();
    assert!(status.success());
    let (status, seen) = reader.finish();
    assert!(status.success(), "{seen:?}");
    assert!(seen.iter().any(|l| matches!(l, Line::Stdout(s) if s == "v")), "{seen:?}");
    sb.run(["path", "dep"]).assert_code(0);
}

/// `use --exclusive`: jobs that change one entry run one at a time, a pin
/// waits for the change, and the entry verifies after each change (its
/// manifest is sealed again).
#[test]
fn exclusive_uses_change_an_entry_one_at_a_time() {
    let sb = Sandbox::new();
    sb.fill("venv", "v0");
    let log = sb.path("log");
    // Each change appends to the entry; overlapping changes would
    // interleave their start and end lines in the log.
    let change = format!(
        "echo start >> '{log}'; n=$(cat \"$SAFECACHE_ENTRY/f\" | wc -l); echo line$n >> \"$SAFECACHE_ENTRY/f\"; \
         sleep 0.2; echo end >> '{log}'",
        log = log.display()
    );
    let jobs: Vec<_> =
        (0..4).map(|_| sb.spawn(["use", "--key", "venv", "--exclusive", "--", "sh", "-c", &change])).collect();
    for job in jobs {
        let (status, seen) = job.finish();
        assert!(status.success(), "{seen:?}");
    }
    let lines: Vec<String> = std::fs::read_to_string(&log).expect("log").lines().map(str::to_owned).collect();
    assert_eq!(lines, ["start", "end"].repeat(4), "changes overlapped");
    let entry = sb.run(["path", "venv"]).last_stdout_line();
    assert_eq!(std::fs::read_to_string(std::path::Path::new(&entry).join("f")).expect("f").lines().count(), 5);
    sb.run(["verify", "venv"]).assert_code(0);

    // A pin waits for a change under way.
    let gate = sb.path("gate");
    mkfifo(&gate);
    let held = format!("echo x >> \"$SAFECACHE_ENTRY/f\"; echo ready; read x < '{}'", gate.display());
    let mut changer = sb.spawn(["use", "--key", "venv", "--exclusive", "--", "sh", "-c", &held]);
    changer.expect_stdout("ready");
    sb.run(["--lock-timeout", "0", "use", "--key", "venv", "--", "true"]).assert_code(75);
    std::fs::write(&gate, "go\n").expect("open the gate");
    assert!(changer.finish().0.success());
    sb.run(["--lock-timeout", "0", "use", "--key", "venv", "--", "true"]).assert_code(0);
    sb.run(["verify", "venv"]).assert_code(0);
}

/// While `use --fill FILL -- CMD` fills, waiters and `status` name FILL,
/// the command being run, not CMD (they named `true` while a clone ran).
#[test]
fn a_filler_is_named_by_its_fill() {
    let sb = Sandbox::new();
    let gate = sb.path("gate");
    mkfifo(&gate);
    let fill = format!("read x < '{}'; echo v > \"$SAFECACHE_OUT/f\"", gate.display());
    let mut user = sb.spawn(["use", "--key", "dep", "--fill", &fill, "--", "true"]);
    user.expect_stderr("Filling");
    let status = sb.run(["--message-format", "json", "status"]);
    status.assert_code(0);
    let holders: Vec<serde_json::Value> = status
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "holder")
        .collect();
    let entry: Vec<_> = holders.iter().filter(|h| h["lock"].to_string().contains("dep")).collect();
    assert!(!entry.is_empty(), "the entry lock is listed: {status}");
    for h in entry {
        let command = h["command"].as_str().unwrap_or_default();
        assert!(command.contains("read x <"), "the fill's lock names the fill: {h}");
    }
    let waiter = sb.run(["--lock-timeout", "0", "use", "--key", "dep", "--", "true"]);
    waiter.assert_code(75);
    assert!(waiter.stderr.contains("read x <"), "{waiter}");
    assert!(!waiter.stderr.contains("(`true`)"), "{waiter}");
    std::fs::write(&gate, "go\n").expect("open the gate");
    assert!(user.finish().0.success());
}

/// An unquoted `--key-file` glob, expanded by the shell into several
/// paths, names key files, never CMD (the extra matches became CMD); a
/// directory, an empty fill and `path --key-file` say what they mean.
#[test]
fn key_file_paths_stop_at_the_separator() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("src")).expect("mkdir");
    for f in ["a.rs", "b.rs"] {
        std::fs::write(sb.path("src").join(f), f).expect("write");
    }
    let in_tmp = |args: &[&str]| {
        let mut cmd = sb.cmd(args);
        cmd.current_dir(sb.tmp.path());
        Out::of(&mut cmd)
    };
    let build = "echo x > \"$SAFECACHE_OUT/f\"";
    let out = in_tmp(&["run", "--key", "g", "--key-file", "src/a.rs", "src/b.rs", "--", "sh", "-c", build]);
    out.assert_code(0);
    let quoted = in_tmp(&["run", "--key", "g", "--key-file", "src/*.rs", "--", "sh", "-c", build]);
    assert_eq!(out.stdout, quoted.stdout, "the shell's expansion and the glob name one entry");
    let found = in_tmp(&["path", "g", "--key-file", "src/*.rs"]);
    found.assert_code(0);
    assert_eq!(found.stdout, out.stdout, "path --key-file finds the entry run --key-file made");
    // Without `--`, a key file is never taken for CMD: CMD is missing.
    in_tmp(&["run", "--key", "g", "--key-file", "src/a.rs", "true"]).assert_one_line_error(2, "CMD");
    in_tmp(&["run", "--key", "g", "--key-file", "src", "--", "true"]).assert_one_line_error(2, "src/**");
    sb.run(["use", "--key", "e", "--fill", " ", "--", "true"]).assert_one_line_error(2, "--fill is empty");
}

/// The runs waiting for a fill killed past --fill-timeout fail with it
/// (124), and it counts as a failed fill.
#[test]
fn waiters_share_a_fill_timeout() {
    let sb = Sandbox::new();
    let fill = "echo started; sleep 1000";
    let mut first = sb.spawn(["run", "--key", "k", "--fill-timeout", "2s", "--", "sh", "-c", fill]);
    first.expect_stderr_line("started");
    let mut waiter = sb.spawn(["run", "--key", "k", "--", "sh", "-c", "echo x > \"$SAFECACHE_OUT/f\""]);
    waiter.expect_stderr("Blocking");
    assert_eq!(first.finish().0.code(), Some(124));
    let (status, seen) = waiter.finish();
    assert_eq!(status.code(), Some(124), "{seen:?}");
    let stats = sb.run(["--message-format", "json", "stats"]);
    let v: serde_json::Value = serde_json::from_str(stats.stdout.trim()).expect("stats JSON");
    assert_eq!(v["failed_fills"], 1, "{v}");
    sb.run(["path", "k"]).assert_code(1);
}

/// A wait message gives the time limit in the one duration format: the
/// 300 s default off a terminal reads `5m`, not `4m 59s`.
#[test]
fn the_wait_limit_reads_in_whole_units() {
    let sb = Sandbox::new();
    let mut holder = sb.spawn(["run", "--", "sh", "-c", "echo ready; read x"]);
    holder.expect_stdout("ready");
    let mut waiter = sb.spawn(["clean"]);
    let line = waiter.expect_stderr("Blocking");
    assert!(line.contains("waiting up to 5m;"), "{line}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(waiter.pid() as i32, libc::SIGTERM) };
    let _ = waiter.finish();
    holder.send("go");
    assert!(holder.finish().0.success());
}
