//! Issue 16, item 6: the commands users of ccache, uv and actions/cache
//! look for: `stats`, `config max-size/max-age/auto-gc`, `ls PREFIX` and
//! `rm --prefix`, and `dir`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::{Out, Sandbox, mkfifo};

/// The one `stats` JSON object.
#[track_caller]
fn stats(sb: &Sandbox, extra: &[&str]) -> Value {
    let mut args = vec!["--message-format", "json", "stats"];
    args.extend_from_slice(extra);
    let out = sb.run(&args);
    out.assert_code(0);
    let lines: Vec<Value> = out.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 1, "one object\n{out}");
    assert_eq!(lines[0]["reason"], "stats", "{out}");
    lines[0].clone()
}

#[track_caller]
fn assert_counts(v: &Value, hits: u64, misses: u64, fills: u64, failed: u64, waits: u64) {
    let got: Vec<u64> = ["hits", "misses", "fills", "failed_fills", "waits"]
        .iter()
        .map(|f| v[f].as_u64().unwrap_or_else(|| panic!("{f} in {v}")))
        .collect();
    assert_eq!(got, [hits, misses, fills, failed, waits], "hits, misses, fills, failed_fills, waits in {v}");
}

/// What is at `p`: its kind, mode, size, and a regular file's bytes (a
/// FIFO is not opened).
fn state(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(p).expect("stat");
    let bytes = if meta.is_file() { std::fs::read(p).expect("read") } else { Vec::new() };
    format!("{:?} {:o} {} {bytes:?}", meta.file_type(), meta.mode(), meta.len())
}

fn stats_file(sb: &Sandbox) -> std::path::PathBuf {
    sb.cache.join(".safecache/stats")
}

/// `path` and `run --key` count hits, misses, fills, failed fills and the
/// bytes filled; `--reset` zeroes them and moves `since`.
#[test]
fn stats_count_every_outcome_and_reset() {
    let sb = Sandbox::new();
    sb.run(["run", "--key", "big", "--", "sh", "-c", "head -c 5000 /dev/zero > \"$SAFECACHE_OUT/f\""]).assert_code(0);
    sb.run(["path", "big"]).assert_code(0);
    sb.run(["path", "absent"]).assert_code(1);
    sb.run(["run", "--key", "big", "--", "false"]).assert_code(0);
    sb.run(["run", "--key", "broken", "--", "false"]).assert_code(1);
    let fill = "echo hi > \"$SAFECACHE_OUT/x\"";
    sb.run(["use", "--key", "pinned", "--fill", fill, "--", "true"]).assert_code(0);
    sb.run(["use", "--key", "pinned", "--fill", fill, "--", "true"]).assert_code(0);
    let v = stats(&sb, &[]);
    // Hits: path big, run big, the second pinned. Misses: the fill of big,
    // path absent, broken, the fill of pinned.
    assert_counts(&v, 3, 4, 2, 1, 0);
    assert_eq!(v["bytes_filled"], 5003, "5000 + 3 bytes of regular files: {v}");
    let since = v["since"].as_u64().expect("since");
    assert!(since > 1_600_000_000, "a Unix time: {v}");

    let human = sb.run(["stats"]);
    human.assert_code(0);
    for line in ["hits:          3 (42.9%)", "misses:        4", "failed fills:  1", "bytes filled:  4.9 KiB"] {
        assert!(human.stdout.contains(line), "{line:?} in\n{human}");
    }

    let before = stats(&sb, &["--reset"]);
    assert_eq!(before["reset"], true);
    assert_counts(&before, 3, 4, 2, 1, 0);
    let after = stats(&sb, &[]);
    assert_counts(&after, 0, 0, 0, 0, 0);
    assert_eq!(after["bytes_filled"], 0);
    assert!(after["since"].as_u64() >= Some(since), "{after}");
}

/// 8 processes at once, 50 `path` hits each, on a cache without a stats
/// file: every one of the 400 hits is counted, though the first of them
/// race to create the file.
#[test]
fn concurrent_hits_are_counted_exactly() {
    let sb = Sandbox::new();
    sb.fill("hot", "x");
    std::fs::remove_file(stats_file(&sb)).expect("remove the stats file");
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    sb.run(["path", "hot"]).assert_code(0);
                }
            });
        }
    });
    assert_counts(&stats(&sb, &[]), 400, 0, 0, 0, 0);
}

/// A command that waited for a lock counts one wait; a run that waited for
/// a peer's fill and then found the entry counts a hit.
#[test]
fn a_wait_for_a_fill_is_counted() {
    let sb = Sandbox::new();
    let script = "echo ready >&2; read go; echo x > \"$SAFECACHE_OUT/f\"";
    let mut filler = sb.spawn(["run", "--key", "k", "--", "sh", "-c", script]);
    filler.expect_stderr_line("ready");
    let mut waiter = sb.spawn(["run", "--key", "k", "--", "false"]);
    waiter.expect_stderr("Blocking");
    filler.send("go");
    let (status, _) = filler.finish();
    assert!(status.success());
    let (status, lines) = waiter.finish();
    assert!(status.success(), "{lines:?}");
    assert_counts(&stats(&sb, &[]), 1, 1, 1, 0, 1);
}

/// What sits at `.safecache/stats` is untrusted: a FIFO is never blocked
/// on, a symlink never followed, a file of another size or writable by
/// others never written. Commands work as if it were absent; `stats` says
/// what is wrong and how to fix it; `stats --reset` replaces it.
#[test]
fn an_untrusted_stats_file_is_ignored_then_replaced() {
    let sb = Sandbox::new();
    sb.fill("k", "x");
    let file = stats_file(&sb);
    let outside = sb.path("outside");
    type Make<'a> = &'a dyn Fn(&Path);
    let bad: [(&str, Make<'_>); 4] = [
        ("fifo", &|p| mkfifo(p)),
        ("symlink", &|p| {
            std::fs::write(&outside, [0u8; 64]).expect("write");
            std::os::unix::fs::symlink(&outside, p).expect("symlink");
        }),
        ("short", &|p| std::fs::write(p, b"safestat").expect("write")),
        ("world-writable", &|p| {
            std::fs::write(p, [0u8; 64]).expect("write");
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        }),
    ];
    for (what, make) in bad {
        std::fs::remove_file(&file).expect("remove");
        make(&file);
        let before = state(&file);
        let outside_before = std::fs::read(&outside).ok();
        sb.run(["path", "k"]).assert_code(0);
        sb.run(["run", "--key", "k", "--", "true"]).assert_code(0);
        let out = sb.run(["stats"]);
        out.assert_one_line_error(101, "stats --reset");
        assert!(out.stderr.contains(".safecache/stats"), "{what}: names the file\n{out}");
        assert_eq!(state(&file), before, "{what}: left alone");
        assert_eq!(std::fs::read(&outside).ok(), outside_before, "{what}: not written through");

        let reset = stats(&sb, &["--reset"]);
        assert_counts(&reset, 0, 0, 0, 0, 0);
        sb.run(["path", "k"]).assert_code(0);
        assert_counts(&stats(&sb, &[]), 1, 0, 0, 0, 0);
        let meta = std::fs::symlink_metadata(&file).expect("stats");
        // Fifteen u64 slots: the header, six counters, seven of the remote tier.
        assert!(meta.is_file() && meta.len() == 120, "{what}: replaced by a stats file");
        assert_eq!(std::fs::read(&outside).ok(), outside_before, "{what}: the symlink's target untouched");
    }
}

/// `config` lists every setting, prints one, stores one, and `--unset`
/// removes one; a bad value is a one-line usage error that changes nothing;
/// a config file written before these settings existed still reads.
#[test]
fn config_stores_lists_and_unsets_the_gc_settings() {
    let sb = Sandbox::new();
    let file = sb.cache.join(".safecache/config.json");
    sb.run(["init"]).assert_code(0);
    std::fs::write(&file, r#"{"durability":"none"}"#).expect("an old config file");
    let listed = sb.run(["config"]);
    listed.assert_code(0);
    assert_eq!(
        listed.stdout,
        "durability = none\nmax-size = none (default)\nmax-age = none (default; 30d for the automatic gc)\n\
         auto-gc = 1d (default)\nremote-url = off (default)\nremote-mode = read-write (default)\n\
         remote-namespace = default (default)\n\
         remote-trusted-keys = none (default: any entry whose archive matches its manifest)\n\
         remote-signing-key = none (default: uploads are unsigned)\nremote-timeout = 10m (default)\n\
         remote-option = none (default)\n",
        "{listed}"
    );
    for (name, value) in [("max-size", "10GiB"), ("max-age", "30d"), ("auto-gc", "12h")] {
        let set = sb.run(["config", name, value]);
        set.assert_code(0);
        assert!(set.stderr.contains(&format!("Configured {name} ")), "{set}");
    }
    assert_eq!(sb.run(["config", "max-size"]).stdout, "max-size = 10.0 GiB\n");
    assert_eq!(sb.run(["config", "max-age"]).stdout, "max-age = 30d\n");
    assert_eq!(sb.run(["config", "auto-gc"]).stdout, "auto-gc = 12h\n");
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
    assert_eq!(
        stored,
        serde_json::json!({"durability": "none", "max_size": 10_737_418_240_u64, "max_age": 2_592_000, "auto_gc": 43_200})
    );
    let json = sb.run(["--message-format", "json", "config"]);
    let v: Value = serde_json::from_str(json.stdout.trim()).expect("one JSON line");
    assert_eq!(
        (&v["max_size"], &v["max_age"], &v["auto_gc"]),
        (&10_737_418_240_u64.into(), &2_592_000.into(), &43_200.into())
    );

    // The words for no limit are stored as such, not as unset.
    sb.run(["config", "max-age", "never"]).assert_code(0);
    sb.run(["config", "auto-gc", "off"]).assert_code(0);
    sb.run(["config", "max-size", "none"]).assert_code(0);
    assert_eq!(sb.run(["config", "max-age"]).stdout, "max-age = never\n");
    let v: Value = serde_json::from_str(sb.run(["--message-format", "json", "config"]).stdout.trim()).expect("JSON");
    assert_eq!((&v["max_size"], &v["max_age"], &v["auto_gc"]), (&"none".into(), &"never".into(), &"off".into()));

    // An override is named beside the stored value.
    let over = sb.cmd(["config", "auto-gc"]).env("SAFECACHE_AUTO_GC", "2h").output().expect("run");
    assert_eq!(
        String::from_utf8_lossy(&over.stdout),
        "auto-gc = off; --auto-gc or SAFECACHE_AUTO_GC (2h) overrides it\n"
    );

    let before = std::fs::read(&file).expect("read");
    for (args, fragment) in [
        (&["config", "max-size", "banana"][..], "invalid value `banana` for `max-size`"),
        (&["config", "max-age", "1y"], "invalid value `1y` for `max-age`"),
        (&["config", "auto-gc", "soon"], "for `auto-gc`"),
        (&["config", "durability", "fast"], "unknown durability `fast`; one of: none, full"),
        (&["config", "colour", "red"], "possible values: durability, max-size, max-age, auto-gc"),
        (&["config", "--unset", "max-size", "max-age"], "cannot be used with"),
    ] {
        sb.run(args).assert_one_line_error(2, fragment);
        assert_eq!(std::fs::read(&file).expect("read"), before, "{args:?} changed nothing");
    }

    let unset = sb.run(["config", "--unset", "max-age"]);
    unset.assert_code(0);
    assert!(unset.stderr.contains("Unset max-age"), "{unset}");
    assert_eq!(sb.run(["config", "max-age"]).stdout, "max-age = none (default; 30d for the automatic gc)\n");
    for name in ["durability", "max-size", "auto-gc"] {
        sb.run(["config", "--unset", name]).assert_code(0);
    }
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "{}");
}

/// The stored age limit is `gc`'s, and `--max-age` or `SAFECACHE_MAX_AGE`
/// override it for one command.
#[test]
fn a_stored_max_age_applies_to_gc_and_flags_override_it() {
    let sb = Sandbox::new();
    sb.fill("old", "x");
    let used = sb.cache.join(".safecache/used");
    let stamps: Vec<_> = std::fs::read_dir(&used).expect("used").map(|e| e.expect("entry").path()).collect();
    assert_eq!(stamps.len(), 1);
    let status = std::process::Command::new("touch").arg("-d").arg("40 days ago").arg(&stamps[0]).status();
    assert!(status.expect("touch").success());
    sb.fill("new", "y");
    let evicted = |out: &Out| -> Vec<String> {
        out.assert_code(0);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
            .filter(|v| v["reason"] == "evicted")
            .map(|v| v["key"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let dry = ["--message-format", "json", "gc", "--dry-run"];
    assert!(evicted(&sb.run(dry)).is_empty(), "no limit stored: gc evicts nothing");
    sb.run(["config", "max-age", "30d"]).assert_code(0);
    assert_eq!(evicted(&sb.run(dry)), ["old"]);
    assert!(evicted(&sb.run([&["--max-age", "never"][..], &dry].concat())).is_empty());
    assert!(evicted(&Out::of(sb.cmd(dry).env("SAFECACHE_MAX_AGE", "never"))).is_empty());
    assert_eq!(evicted(&sb.run([&["--max-age", "50d"][..], &dry].concat())), Vec::<String>::new());
    sb.run(["config", "max-size", "1"]).assert_code(0);
    let both = evicted(&sb.run(dry));
    assert_eq!(both.len(), 2, "the stored size limit evicts the rest: {both:?}");
    assert_eq!(evicted(&Out::of(sb.cmd(dry).env("SAFECACHE_MAX_SIZE", "none"))), ["old"]);
}

/// `config auto-gc off` turns the automatic gc off for everyone who uses
/// the cache (it never even stamps `gc.stamp`); `SAFECACHE_AUTO_GC`
/// overrides it.
#[test]
fn a_stored_auto_gc_off_turns_it_off_and_the_variable_overrides_it() {
    let sb = Sandbox::new();
    sb.run(["config", "auto-gc", "off"]).assert_code(0);
    sb.fill("k", "x");
    sb.run(["path", "k"]).assert_code(0);
    let stamp = sb.cache.join(".safecache/gc.stamp");
    assert!(!stamp.exists(), "the automatic gc did not run");
    Out::of(sb.cmd(["path", "k"]).env("SAFECACHE_AUTO_GC", "1d")).assert_code(0);
    assert!(stamp.exists(), "SAFECACHE_AUTO_GC=1d turned it on for that command");
}

fn json_lines(out: &Out) -> Vec<Value> {
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"))).collect()
}

fn listed(sb: &Sandbox, prefix: Option<&str>) -> Vec<String> {
    let out = sb.run([&["--message-format", "json", "ls"][..], prefix.as_slice()].concat());
    out.assert_code(0);
    // In the order the directory lists them (docs/CLI.md, `ls`): sorted here.
    let mut keys: Vec<String> =
        json_lines(&out).iter().map(|v| v["key"].as_str().unwrap_or_default().to_owned()).collect();
    keys.sort();
    keys
}

/// `ls PREFIX` lists only keys that start with PREFIX; `rm --prefix`
/// removes exactly those and says how many; an empty prefix is refused
/// with a pointer to `clean`.
#[test]
fn ls_and_rm_by_prefix() {
    let sb = Sandbox::new();
    for key in ["git/serde", "git/tokio", "gitx", "npm/left-pad"] {
        sb.fill(key, "x");
    }
    assert_eq!(listed(&sb, Some("git/")), ["git/serde", "git/tokio"]);
    assert_eq!(listed(&sb, Some("git")), ["git/serde", "git/tokio", "gitx"]);
    let none = sb.run(["ls", "pip/"]);
    none.assert_code(0);
    assert!(none.stdout.is_empty() && none.stderr.contains("no key in the cache"), "{none}");

    sb.run(["rm", "--prefix", ""]).assert_one_line_error(2, "safecache clean`");
    assert_eq!(listed(&sb, None).len(), 4, "nothing was removed");

    let out = sb.run(["--message-format", "json", "rm", "--prefix", "git/"]);
    out.assert_code(0);
    let lines = json_lines(&out);
    let removed: Vec<&str> =
        lines.iter().filter(|v| v["reason"] == "removed").filter_map(|v| v["key"].as_str()).collect();
    assert_eq!(removed, ["git/serde", "git/tokio"]);
    assert_eq!(lines.last().map(|v| (&v["reason"], &v["removed"])), Some((&"removed-prefix".into(), &2.into())));
    assert!(out.stderr.contains("Removed 2 entries whose key starts with `git/`"), "{out}");
    assert_eq!(listed(&sb, None), ["gitx", "npm/left-pad"]);

    let nothing = sb.run(["rm", "--prefix", "git/"]);
    nothing.assert_code(0);
    assert!(nothing.stderr.contains("Removed 0 entries"), "{nothing}");
}

/// `rm --prefix` waits for a pin on a matching entry like `rm`, and with
/// `--lock-timeout 0` fails at once (exit 75) naming it.
#[test]
fn rm_by_prefix_waits_for_pins() {
    let sb = Sandbox::new();
    sb.fill("git/a", "x");
    sb.fill("git/b", "y");
    let mut pin = sb.spawn(["use", "--key", "git/a", "--", "sh", "-c", "echo ready >&2; read go"]);
    pin.expect_stderr_line("ready");
    sb.run(["--lock-timeout", "0", "rm", "--prefix", "git/"]).assert_error(75, "git/a");
    let mut rm = sb.spawn(["rm", "--prefix", "git/"]);
    rm.expect_stderr("Blocking");
    pin.send("go");
    assert!(pin.finish().0.success());
    let (status, lines) = rm.finish();
    assert!(status.success(), "{lines:?}");
    assert!(listed(&sb, None).is_empty());
}

/// `dir` prints the cache directory every other command would use, made
/// absolute, without creating it.
#[test]
fn dir_prints_the_cache_dir_without_creating_it() {
    let sb = Sandbox::new();
    let out = sb.run(["dir"]);
    out.assert_code(0);
    assert_eq!(out.stdout, format!("{}\n", sb.cache.display()));
    assert!(!sb.cache.exists(), "not created");

    let rel = Out::of(sb.cmd(["--cache-dir", "some/where", "dir"]).current_dir(sb.tmp.path()));
    assert_eq!(rel.stdout.trim_end(), sb.path("some/where").display().to_string());
    assert!(!sb.path("some").exists());

    let home = Out::of(sb.cmd(["dir"]).env_remove("SAFECACHE_DIR").env("XDG_CACHE_HOME", sb.path("xdg")));
    assert_eq!(home.stdout.trim_end(), sb.path("xdg/safecache").display().to_string());

    let json = sb.run(["--message-format", "json", "dir"]);
    let v: Value = serde_json::from_str(json.stdout.trim()).expect("one JSON line");
    assert_eq!((&v["reason"], v["path"].as_str()), (&"dir".into(), sb.cache.to_str()));
    assert!(!sb.cache.exists());
}
