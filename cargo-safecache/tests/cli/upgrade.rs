//! Caches an older build left: each is upgraded in place by the first
//! command of this build, and nothing in it is read with a newer format's
//! meaning (issue 15, "Upgrades never reinterpret old data").

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{Sandbox, names};

/// A cache as a format-`version` build left it, with the entries
/// `(stored name, content of its file f)`.
fn old_cache(sb: &Sandbox, version: u32, entries: &[(&str, &str)]) {
    for sub in ["locks", "holders", "used", "tmp", "trash", "failed"] {
        fs::create_dir_all(sb.cache.join(".safecache").join(sub)).unwrap();
    }
    fs::write(sb.cache.join(".safecache/format"), format!("safecache-format {version}\n")).unwrap();
    for (stored, content) in entries {
        fs::create_dir(sb.cache.join(stored)).unwrap();
        fs::write(sb.cache.join(stored).join("f"), content).unwrap();
    }
}

fn format_of(cache: &Path) -> String {
    fs::read_to_string(cache.join(".safecache/format")).unwrap()
}

/// A format-1 cache holding a directory `init` adopted with the sticky bit
/// (an `rsync -a` of a `/tmp`-like tree). Format 2 reads that bit as "an
/// uncommitted in-place entry": a78183c hid it from `ls` and `path`, and the
/// automatic gc deleted the user's data. Format 1 gave the bit no meaning,
/// so it stays an entry.
#[test]
fn a_sticky_dir_in_a_format1_cache_is_never_taken_for_an_unfinished_fill() {
    let sb = Sandbox::new();
    old_cache(&sb, 1, &[("thesis", "chapter 1")]);
    fs::set_permissions(sb.cache.join("thesis"), fs::Permissions::from_mode(0o1755)).unwrap();
    let out = sb.run(["ls"]);
    out.assert_code(0);
    assert!(out.stdout.contains("thesis"), "listed: {out}");
    sb.run(["path", "thesis"]).assert_code(0);
    // gc, automatic or not, deletes only what the format defines as
    // deletable.
    sb.run(["gc"]).assert_code(0);
    sb.run(["--auto-gc", "1s", "path", "thesis"]).assert_code(0);
    assert_eq!(fs::read_to_string(sb.cache.join("thesis/f")).unwrap(), "chapter 1");
    assert_eq!(format_of(&sb.cache), "safecache-format 3\n");
}

/// A format-2 cache whose names collide with format 3's: `a+b` was the key
/// `a+b` and is now the key `a/b`'s name. Each key keeps its own content.
#[test]
fn a_format2_cache_keeps_every_key_through_the_upgrade() {
    let sb = Sandbox::new();
    old_cache(&sb, 2, &[("a%2Fb", "slash"), ("a+b", "plus"), ("Lib", "upper"), ("serde", "plain")]);
    for (key, content) in [("a/b", "slash"), ("a+b", "plus"), ("Lib", "upper"), ("serde", "plain")] {
        let out = sb.run(["path", key]);
        out.assert_code(0);
        let path = out.last_stdout_line();
        assert_eq!(fs::read_to_string(Path::new(&path).join("f")).unwrap(), content, "{key} at {path}");
    }
    let expected: std::collections::BTreeSet<String> =
        [".safecache", "@lib", "a+b", "a@@2bb", "serde"].into_iter().map(String::from).collect();
    let mut found = names(&sb.cache);
    found.remove("CACHEDIR.TAG");
    assert_eq!(found, expected);
}

/// `status` reports the cache's own format, read from its marker, and what
/// its filesystem does to names; a78183c printed the build's constant.
#[test]
fn status_reports_the_cache_and_its_filesystem() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let out = sb.run(["--message-format", "json", "status"]);
    out.assert_code(0);
    let summary = out.stdout.lines().find(|l| l.contains("\"summary\"")).expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(summary).unwrap();
    let on_disk = format_of(&sb.cache);
    assert_eq!(format!("safecache-format {}\n", summary["format"]), on_disk);
    assert_eq!(summary["case_insensitive"], false, "{summary}");
    let out = sb.run(["status"]);
    assert!(out.stdout.contains("filesystem: case-sensitive"), "{out}");
}

/// An older build's process still holding the lease: the upgrade waits for
/// it as `--lock-timeout` allows, names it, and changes nothing meanwhile.
#[test]
fn the_upgrade_waits_for_an_older_builds_lease() {
    let sb = Sandbox::new();
    old_cache(&sb, 2, &[("a%2Fb", "slash")]);
    let lease = sb.cache.join(".safecache/lease.lock");
    fs::write(&lease, "").unwrap();
    let mut holder = std::process::Command::new("flock")
        .args(["--shared", lease.to_str().unwrap(), "sh", "-c", "echo held; read x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line, "held\n");
    let before = crate::support::snapshot(&sb.cache);
    let out = sb.run(["--lock-timeout", "0", "path", "a/b"]);
    out.assert_code(75);
    assert!(out.stderr.contains("lease"), "names what it waits for: {out}");
    assert_eq!(crate::support::snapshot(&sb.cache), before);
    drop(holder.stdin.take());
    holder.wait().unwrap();
    sb.run(["path", "a/b"]).assert_code(0);
}
