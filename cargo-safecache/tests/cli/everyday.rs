//! Issue 16, item 6: the commands users of ccache, uv and actions/cache
//! look for: `stats`, `config max-size/max-age/auto-gc`, `ls PREFIX` and
//! `rm --prefix`, and `dir`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::{Sandbox, mkfifo};

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
    sb.run(["run", "--key", "pinned", "--fill", fill, "--", "true"]).assert_code(0);
    sb.run(["run", "--key", "pinned", "--fill", fill, "--", "true"]).assert_code(0);
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
    filler.expect_stderr("ready");
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
        assert!(meta.is_file() && meta.len() == 64, "{what}: replaced by a stats file");
        assert_eq!(std::fs::read(&outside).ok(), outside_before, "{what}: the symlink's target untouched");
    }
}
