//! Eviction and the automatic gc, end to end: `gc --max-size/--max-age
//! --dry-run` on entries whose last-use stamps are set with `touch -d`
//! (stamps are plain files), entries pinned by a real `run --pin` or locked
//! by a real `flock(1)` as a fill holds them, and the automatic gc after
//! `path` with `gc.lock` held by another process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{Bg, Out, Sandbox, names, snapshot};

/// Fills `key` with `bytes` bytes and returns the names its fill created
/// in `used/` and `locks/` (its last-use stamp and its entry lock).
fn fill_sized(sb: &Sandbox, key: &str, bytes: usize) -> (PathBuf, PathBuf) {
    let used = sb.cache.join(".safecache/used");
    let locks = sb.cache.join(".safecache/locks");
    let (used_before, locks_before) = (names(&used), names(&locks));
    let script = format!("head -c {bytes} /dev/zero > \"$SAFECACHE_OUT/f\"");
    sb.run(["run", "--key", key, "--", "sh", "-c", &script]).assert_code(0);
    let only_new = |dir: &Path, before: &BTreeSet<String>, suffix: &str| {
        let new: Vec<String> = names(dir).difference(before).filter(|n| n.ends_with(suffix)).cloned().collect();
        assert_eq!(new.len(), 1, "one new name in {}: {new:?}", dir.display());
        dir.join(&new[0])
    };
    (only_new(&used, &used_before, ""), only_new(&locks, &locks_before, ".lock"))
}

/// Sets `path`'s mtime with `touch -d WHEN`.
fn set_time(path: &Path, when: &str) {
    let status = Command::new("touch").arg("-d").arg(when).arg(path).status().expect("run touch");
    assert!(status.success(), "touch -d {when} {}", path.display());
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

/// The keys of the JSON messages with `reason`.
fn keys_of(lines: &[Value], reason: &str) -> Vec<String> {
    lines.iter().filter(|v| v["reason"] == reason).map(|v| v["key"].as_str().unwrap_or_default().to_owned()).collect()
}

/// The published entries, by stored name.
fn entries(sb: &Sandbox) -> BTreeSet<String> {
    names(&sb.cache).into_iter().filter(|n| n != ".safecache" && n != "CACHEDIR.TAG").collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// LRU order is the stamps' order, not the names': the least recently used
/// go first, and `--max-size` stops as soon as the entries fit.
#[test]
fn gc_evicts_least_recently_used_first_and_stops_under_the_limit() {
    let sb = Sandbox::new();
    for (key, when) in [("a", "3 days ago"), ("b", "10 days ago"), ("c", "2 days ago"), ("d", "5 days ago")] {
        let (stamp, _) = fill_sized(&sb, key, 1000);
        set_time(&stamp, when);
    }
    let out = sb.run(["--message-format", "json", "gc", "--max-size", "2500"]);
    out.assert_code(0);
    let lines = json_lines(&out.stdout);
    assert_eq!(keys_of(&lines, "evicted"), ["b", "d"], "oldest first, and no more than needed: {out}");
    let report = lines.last().expect("a gc report");
    assert_eq!((report["reason"].as_str(), report["freed"].as_u64()), (Some("gc"), Some(2000)), "{out}");
    assert_eq!(report["entry_bytes_after"], 2000, "{out}");
    assert_eq!(entries(&sb), set(&["a", "c"]));
    // Already under the limit: nothing more goes.
    let out = sb.run(["--message-format", "json", "gc", "--max-size", "2000"]);
    assert!(keys_of(&json_lines(&out.stdout), "evicted").is_empty(), "{out}");
    assert_eq!(entries(&sb), set(&["a", "c"]));
}

/// `--max-age` evicts every entry unused for longer, and gives an entry the
/// benefit of the stamp's hour: one stamped 30 days and 30 minutes ago may
/// have been used 29 days and 31 minutes ago. The human output says what
/// was evicted and what was freed.
#[test]
fn gc_max_age_evicts_entries_unused_for_longer() {
    let sb = Sandbox::new();
    for (key, when) in [("old", "40 days ago"), ("edge", "30 days ago 30 minutes ago"), ("new", "1 hour ago")] {
        let (stamp, _) = fill_sized(&sb, key, 2048);
        set_time(&stamp, when);
    }
    let out = sb.run(["gc", "--max-age", "30d"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Evicted `old` (2.0 KiB, last used 40d"), "{out}");
    assert!(out.stderr.contains("unused for longer than 30d"), "{out}");
    assert!(out.stderr.contains("Freed 2.0 KiB by evicting 1 entry"), "{out}");
    assert_eq!(entries(&sb), set(&["edge", "new"]));
}

/// A pinned entry (a real `run --pin` whose CMD blocks on a pipe) and one
/// whose entry lock is held exclusively, as a fill or a remove holds it (a
/// real `flock -x`), are skipped and named; gc takes the next one. Once
/// released, they go.
#[test]
fn gc_never_evicts_a_pinned_entry_or_one_being_filled() {
    let sb = Sandbox::new();
    let mut locks = Vec::new();
    for key in ["pinned", "filling", "free"] {
        let (stamp, lock) = fill_sized(&sb, key, 100);
        set_time(&stamp, "40 days ago");
        locks.push(lock);
    }
    let mut pin = sb.spawn(["use", "--key", "pinned", "--", "sh", "-c", "echo ready; read go"]);
    pin.expect_stdout("ready");
    let mut filler = Command::new("flock");
    filler.arg("-x").arg(&locks[1]).args(["-c", "echo locked; read go"]);
    let mut filler = Bg::spawn(filler);
    filler.expect_stdout("locked");

    let out = sb.run(["--message-format", "json", "gc", "--max-size", "0", "--max-age", "1d"]);
    out.assert_code(0);
    let lines = json_lines(&out.stdout);
    assert_eq!(keys_of(&lines, "evicted"), ["free"], "{out}");
    let mut skipped = keys_of(&lines, "skipped");
    skipped.sort();
    assert_eq!(skipped, ["filling", "pinned"], "{out}");
    assert!(lines.iter().filter(|v| v["reason"] == "skipped").all(|v| v["why"] == "it is pinned or being filled"));
    assert_eq!(entries(&sb), set(&["filling", "pinned"]));
    let human = sb.run(["gc", "--max-size", "0"]);
    assert!(human.stderr.contains("Skipped `pinned`") && human.stderr.contains("still over --max-size"), "{human}");

    pin.send("go");
    assert_eq!(pin.finish().0.code(), Some(0));
    filler.send("go");
    assert!(filler.finish().0.success());
    sb.run(["gc", "--max-size", "0"]).assert_code(0);
    assert!(entries(&sb).is_empty());
}

/// `--dry-run` says what would go and changes nothing at all: no entry, no
/// stamp (not even for an entry that has none), no lock file.
#[test]
fn dry_run_changes_nothing() {
    let sb = Sandbox::new();
    let (old, _) = fill_sized(&sb, "old", 100);
    set_time(&old, "40 days ago");
    let (unstamped, _) = fill_sized(&sb, "unstamped", 100);
    std::fs::remove_file(&unstamped).expect("remove a stamp");
    let before = snapshot(&sb.cache);
    let out = sb.run(["gc", "--max-size", "0", "--max-age", "1d", "--dry-run"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Would evict `old`") && out.stderr.contains("Would evict `unstamped`"), "{out}");
    assert!(out.stderr.contains("Would free 200 B by evicting 2 entries"), "{out}");
    let json = sb.run(["--message-format", "json", "gc", "--max-age", "1d", "--dry-run"]);
    assert_eq!(keys_of(&json_lines(&json.stdout), "evicted"), ["old"], "{json}");
    assert_eq!(snapshot(&sb.cache), before, "a dry run changed the cache");
}

/// An entry without a stamp counts as used when gc first sees it, whatever
/// its mtime: gc stamps it and leaves it.
#[test]
fn an_unstamped_entry_counts_as_used_when_gc_first_sees_it() {
    let sb = Sandbox::new();
    let (stamp, _) = fill_sized(&sb, "adopted", 100);
    std::fs::remove_file(&stamp).expect("remove the stamp");
    set_time(&sb.cache.join("adopted"), "100 days ago");
    sb.run(["gc", "--max-age", "30d"]).assert_code(0);
    assert_eq!(entries(&sb), set(&["adopted"]));
    assert!(stamp.is_file(), "gc stamped it");
}

/// Limits are checked on the command line, from flags and variables alike:
/// one line, exit 2, saying what would work.
#[test]
fn bad_limits_are_usage_errors() {
    let sb = Sandbox::new();
    sb.run(["gc", "--max-size", "5X"]).assert_one_line_error(2, "expected a size such as `500M`");
    sb.run(["gc", "--max-age", "30"]).assert_one_line_error(2, "expected a duration such as `30d`");
    sb.run(["--auto-gc", "sometimes", "ls"]).assert_one_line_error(2, "`off`");
    let mut cmd = sb.cmd(["path", "k"]);
    cmd.env("SAFECACHE_MAX_AGE", "soon");
    Out::of(&mut cmd).assert_one_line_error(2, "expected a duration such as `30d`");
    assert!(!sb.cache.exists(), "bad input never touches the cache");
}

/// The automatic gc after `path`: its clock starts at the first command,
/// it runs once the interval has passed, at most once per interval, with
/// the default age limit, says what it evicted, and can be turned off.
#[test]
fn automatic_gc_runs_at_most_once_per_interval_and_can_be_turned_off() {
    let sb = Sandbox::new();
    let gc_stamp = sb.cache.join(".safecache/gc.stamp");
    let (a, _) = fill_sized(&sb, "a", 100);
    assert!(gc_stamp.is_file(), "the first command started the clock");
    fill_sized(&sb, "b", 100);
    set_time(&a, "40 days ago");
    // Not a day yet: nothing happens.
    sb.run(["path", "b"]).assert_code(0);
    assert_eq!(entries(&sb), set(&["a", "b"]));

    set_time(&gc_stamp, "2 days ago");
    let out = sb.run(["path", "b"]);
    out.assert_code(0);
    assert_eq!(out.stdout.trim(), sb.cache.join("b").display().to_string(), "stdout is still just the path");
    assert!(out.stderr.contains("Evicted 1 unused entry (100 B) by the automatic gc"), "{out}");
    assert_eq!(entries(&sb), set(&["b"]));

    // It just ran: another old entry waits for the next interval...
    let (c, _) = fill_sized(&sb, "c", 100);
    set_time(&c, "40 days ago");
    sb.run(["path", "b"]).assert_code(0);
    assert_eq!(entries(&sb), set(&["b", "c"]));
    // ...unless the interval is shorter.
    sb.run(["--auto-gc", "0s", "path", "b"]).assert_code(0);
    assert_eq!(entries(&sb), set(&["b"]));

    // Off, by flag or variable, it never runs.
    let (d, _) = fill_sized(&sb, "d", 100);
    set_time(&d, "40 days ago");
    set_time(&gc_stamp, "2 days ago");
    sb.run(["--auto-gc", "off", "path", "b"]).assert_code(0);
    let mut cmd = sb.cmd(["path", "b"]);
    cmd.env("SAFECACHE_AUTO_GC", "off");
    Out::of(&mut cmd).assert_code(0);
    assert_eq!(entries(&sb), set(&["b", "d"]));
    // A longer age limit keeps it too.
    sb.run(["--max-age", "60d", "path", "b"]).assert_code(0);
    assert_eq!(entries(&sb), set(&["b", "d"]));
}

/// With `gc.lock` held by another process (a real `flock -x` that blocks on
/// a pipe), the automatic gc is skipped: `path` returns while the holder
/// still holds it, and evicts nothing. Once it is free, the next command
/// runs the gc that is still due.
#[test]
fn automatic_gc_never_waits_for_a_busy_gc_lock() {
    let sb = Sandbox::new();
    let (a, _) = fill_sized(&sb, "a", 100);
    fill_sized(&sb, "b", 100);
    set_time(&a, "40 days ago");
    set_time(&sb.cache.join(".safecache/gc.stamp"), "2 days ago");
    let mut holder = Command::new("flock");
    holder.arg("-x").arg(sb.cache.join(".safecache/gc.lock")).args(["-c", "echo locked; read go"]);
    let mut holder = Bg::spawn(holder);
    holder.expect_stdout("locked");

    // `finish` fails the test if `path` has not ended within its patience;
    // the holder only lets go when told to, after that.
    let (status, _) = sb.spawn(["path", "b"]).finish();
    assert_eq!(status.code(), Some(0));
    assert!(holder.child.try_wait().expect("poll the holder").is_none(), "path returned while gc.lock was held");
    assert_eq!(entries(&sb), set(&["a", "b"]), "the busy gc was skipped");

    holder.send("go");
    assert!(holder.finish().0.success());
    sb.run(["path", "b"]).assert_code(0);
    assert_eq!(entries(&sb), set(&["b"]), "the gc still due ran once gc.lock was free");
}
