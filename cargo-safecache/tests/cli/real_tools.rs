//! Issue 15: the paths safecache hands out work where tools put paths, for
//! keys with a `/` and uppercase letters. Each test uses the real tool the
//! way a user does: cargo (and its default linker, LLVM's lld) with
//! `--target-dir` in an entry, `git clone file://ENTRY`, an entry's `bin`
//! in `PATH`, and make with the entry as a target directory. The paths are
//! always the ones the CLI prints or exports, never spelled by the test.
//!
//! Also here: a fresh filesystem (its `lost+found`) as a cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts::{Disk, Mount, skip};
use crate::support::{Sandbox, git, make_repo};

/// The key these tests use: a `/`, uppercase letters, a `.` and a `-`.
const KEY: &str = "Git/Serde-1.0";

/// The README's cargo recipe with a key like `Git/Serde-1.0`: the target
/// dir is built in place in the entry, lld links into it, and the binary in
/// the entry runs. With `%2F` in the entry's name, lld fails with "cannot
/// open output file".
#[test]
fn cargo_builds_into_an_entry_of_a_key_with_a_slash_and_uppercase() {
    let sb = Sandbox::new();
    let krate = sb.path("tiny");
    std::fs::create_dir_all(krate.join("src")).expect("create crate dir");
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )
    .expect("write Cargo.toml");
    std::fs::write(krate.join("src/main.rs"), "fn main() {\n    println!(\"tiny runs\");\n}\n").expect("write main.rs");
    let build = r#"cargo build -q --offline --manifest-path "$T/tiny/Cargo.toml" --target-dir "$SAFECACHE_OUT""#;
    let use_it = r#"cargo build -q --offline --manifest-path "$T/tiny/Cargo.toml" --target-dir "$SAFECACHE_ENTRY" && "$SAFECACHE_ENTRY/debug/tiny""#;
    let mut cmd = sb.cmd(["use", "--key", KEY, "--in-place", "--fill", build, "--", "sh", "-c", use_it]);
    // The outer `cargo test` must not steer the inner build elsewhere.
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    let out = crate::support::Out::of(&mut cmd);
    out.assert_code(0);
    assert!(out.stdout.contains("tiny runs"), "the binary built into the entry runs: {out}");
    let entry = path_of(&sb, KEY);
    assert!(entry.join("debug/tiny").is_file(), "the entry holds the target dir: {out}");
}

/// `git clone "file://$SAFECACHE_ENTRY"` of an entry that holds a
/// repository: a `%2F` in the path is decoded by git and the clone fails.
#[test]
fn git_clones_an_entry_through_a_file_url() {
    let sb = Sandbox::new();
    let head = make_repo(&sb.path("repo"));
    let fill = r#"git clone -q "$T/repo" "$SAFECACHE_OUT""#;
    let clone = r#"git clone -q "file://$SAFECACHE_ENTRY" "$T/x""#;
    sb.run(["use", "--key", KEY, "--fill", fill, "--", "sh", "-c", clone]).assert_code(0);
    assert_eq!(git(&sb.path("x"), &["rev-parse", "HEAD"]), head, "the clone of the entry has its commit");
}

/// An entry's `bin` dir in `PATH` runs the scripts in it.
#[test]
fn an_entrys_bin_dir_works_in_path() {
    let sb = Sandbox::new();
    let fill = r#"mkdir "$SAFECACHE_OUT/bin" && printf '#!/bin/sh\necho hello from the entry\n' > "$SAFECACHE_OUT/bin/hello" && chmod +x "$SAFECACHE_OUT/bin/hello""#;
    let out =
        sb.run(["use", "--key", KEY, "--fill", fill, "--", "sh", "-c", r#"PATH="$SAFECACHE_ENTRY/bin:$PATH" hello"#]);
    out.assert_code(0);
    assert!(out.stdout.contains("hello from the entry"), "{out}");
}

/// A Makefile whose pattern rule builds into the entry (the entry as a
/// target directory, as for an object dir, built in place at its final
/// path) and whose `use` target has the entry's file as a prerequisite,
/// with real make. A `%` in the entry's name is a second `%` in the
/// pattern, which then matches nothing: "No rule to make target".
#[test]
fn make_uses_an_entry_as_target_dir_and_prerequisite() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("out.in"), "made by make\n").expect("write input");
    std::fs::write(
        sb.path("Makefile"),
        "all: $(ENTRY)/out.txt\n\n$(ENTRY)/%.txt: %.in\n\tcp $< $@\n\nuse: $(ENTRY)/out.txt\n\tcat $<\n",
    )
    .expect("write Makefile");
    let fill = r#"make -s -C "$T" ENTRY="$SAFECACHE_OUT" all"#;
    let use_it = r#"make -s -C "$T" ENTRY="$SAFECACHE_ENTRY" use"#;
    let out = sb.run(["use", "--key", KEY, "--in-place", "--fill", fill, "--", "sh", "-c", use_it]);
    out.assert_code(0);
    assert!(out.stdout.contains("made by make"), "make read the entry as an up-to-date prerequisite: {out}");
    let entry = path_of(&sb, KEY);
    assert_eq!(std::fs::read_to_string(entry.join("out.txt")).expect("read"), "made by make\n");
    // Up to date: make has nothing to do in the published entry.
    let status = Command::new("make")
        .arg("-q")
        .arg("-C")
        .arg(sb.tmp.path())
        .arg(format!("ENTRY={}", entry.display()))
        .arg("all")
        .status()
        .expect("run make");
    assert!(status.success(), "make -q: the entry's target is up to date");
}

/// A fresh filesystem's root holds `lost+found`: the directory becomes a
/// cache anyway (directly, and by `init`), and `lost+found` is never
/// adopted, listed, evicted or deleted.
#[test]
fn a_fresh_filesystem_with_lost_and_found_becomes_a_cache() {
    let mut sb = Sandbox::new();
    let fresh = match Mount::disk(Disk::Ext4, &sb.path("fresh.img"), &sb.path("fresh")) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let adopted = match Mount::disk(Disk::Ext4, &sb.path("adopted.img"), &sb.path("adopted")) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    for m in [&fresh, &adopted] {
        assert!(m.path().join("lost+found").is_dir(), "mkfs.ext4 made lost+found");
        std::fs::write(m.path().join("lost+found/#12"), "recovered by fsck").expect("write into lost+found");
    }

    // Used directly: the first fill makes it a cache.
    sb.cache = fresh.path().to_owned();
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", r#"echo v > "$SAFECACHE_OUT/f""#]);
    out.assert_code(0);
    leaves_lost_and_found_alone(&sb, fresh.path());

    // By `init`: it must not adopt lost+found as an entry.
    sb.cache = adopted.path().to_owned();
    std::fs::write(adopted.path().join("legacy"), "data").expect("write legacy");
    sb.run(["init", adopted.path().to_str().expect("utf-8")]).assert_code(0);
    let out = sb.run(["ls"]);
    out.assert_code(0);
    assert!(out.stdout.contains("legacy"), "init adopted the user's file: {out}");
    sb.fill("k", "v");
    leaves_lost_and_found_alone(&sb, adopted.path());

    // A key that would be stored as `lost+found` is refused or stored
    // apart; either way the filesystem's `lost+found` is not its entry.
    let lost = adopted.path().join("lost+found");
    let out = sb.run(["run", "--key", "lost/found", "--", "sh", "-c", r#"echo mine > "$SAFECACHE_OUT/f""#]);
    match out.code {
        Some(2) => {}
        Some(0) => assert_ne!(PathBuf::from(out.last_stdout_line()), lost, "{out}"),
        _ => panic!("`run --key lost/found` neither refused nor filled\n{out}"),
    }
    sb.run(["rm", "lost/found"]);
    assert!(lost.join("#12").is_file(), "`rm lost/found` deleted lost+found");
    assert!(!lost.join("f").exists(), "a fill wrote into lost+found");
}

/// `ls`, `status`, `verify`, `gc` (evicting everything it may) and `clean`
/// neither list nor touch `root/lost+found`.
fn leaves_lost_and_found_alone(sb: &Sandbox, root: &Path) {
    let lost = root.join("lost+found");
    for args in [&["ls"][..], &["status"], &["verify"], &["--message-format", "json", "ls"]] {
        let out = sb.run(args);
        // An adopted entry has no manifest: `verify` says it could not be
        // checked (101), and says nothing of lost+found.
        if args == ["verify"] && out.code == Some(101) {
            assert!(out.stderr.contains("no manifest"), "{out}");
        } else {
            out.assert_code(0);
        }
        assert!(
            !out.stdout.contains("lost+found") && !out.stderr.contains("lost+found"),
            "`{args:?}` lists lost+found: {out}"
        );
    }
    let out = sb.run(["gc", "--max-age", "0s", "--max-size", "0"]);
    out.assert_code(0);
    assert!(!out.stderr.contains("lost+found"), "gc considered lost+found: {out}");
    assert!(lost.join("#12").is_file(), "gc evicted lost+found: {out}");
    sb.fill("k", "v");
    let out = sb.run(["clean"]);
    out.assert_code(0);
    assert!(lost.join("#12").is_file(), "clean deleted lost+found: {out}");
    sb.run(["path", "k"]).assert_code(1);
    let out = sb.run(["ls"]);
    out.assert_code(0);
    assert!(!out.stdout.contains("lost+found"), "{out}");
}

fn path_of(sb: &Sandbox, key: &str) -> PathBuf {
    let out = sb.run(["path", key]);
    out.assert_code(0);
    PathBuf::from(out.last_stdout_line())
}
