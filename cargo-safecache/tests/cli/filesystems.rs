//! Issue 15: the filesystem matrix. One scenario, through the CLI, on each
//! filesystem the tests can mount: ext4, xfs and btrfs on loop images, a
//! btrfs snapshot of a cache, tmpfs, and overlayfs with a cache in its
//! lower layer. Then caches copied with `cp -a` and `tar` to another
//! filesystem, used and verified there. docs/PROTOCOL.md ("Filesystems")
//! names these tests.
//!
//! The scenario: several `run --key` at once (one runs CMD, the others wait
//! and reuse it), a pinned reader that `rm` cannot remove from under, `rm`,
//! `gc`, `verify` and `clean`. A mount the machine refuses is a skip, with
//! the reason printed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mounts::{Disk, Mount, skip};
use crate::support::{Line, Sandbox, mkfifo, names, stdout_of};

/// What a fill writes: a file, a 256 KiB blob (so that a truncation is a
/// real loss), a directory and a symlink.
const FILL: &str = r#"echo data > "$SAFECACHE_OUT/f"; head -c 262144 /dev/urandom > "$SAFECACHE_OUT/blob"; mkdir "$SAFECACHE_OUT/sub"; ln -s ../f "$SAFECACHE_OUT/sub/link""#;

/// How many `run --key` race for one fill.
const RACERS: usize = 4;

/// Runs the common scenario on `sb`'s cache, wherever it is mounted.
fn scenario(sb: &Sandbox) {
    // Several fills of one key at once: exactly one runs CMD.
    let fifo = sb.path("go.fifo");
    mkfifo(&fifo);
    let script = format!(r#"echo "$$" >> "$T/ran.log"; read go < "$T/go.fifo"; {FILL}"#);
    let mut runs: Vec<_> = (0..RACERS).map(|_| sb.spawn(["run", "--key", "dep", "--", "sh", "-c", &script])).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for run in runs.iter_mut() {
            let tx = tx.clone();
            s.spawn(move || {
                let line = run.expect(
                    "a wait or the fill",
                    |l| matches!(l, Line::Stderr(s) if s.contains("Blocking") || s.contains("Filling")),
                );
                let _ = tx.send(line.contains("Blocking"));
            });
        }
        drop(tx);
        let waiting = rx.iter().filter(|blocked| *blocked).count();
        assert_eq!(waiting, RACERS - 1, "all but one run wait for the one fill");
    });
    std::fs::write(&fifo, "go\n").expect("release the filler");
    let mut paths = BTreeSet::new();
    for run in runs {
        let (status, lines) = run.finish();
        assert_eq!(status.code(), Some(0), "every run succeeds: {lines:?}");
        paths.insert(stdout_of(&lines).last().expect("the entry's path").to_string());
    }
    assert_eq!(paths.len(), 1, "every run prints the same entry: {paths:?}");
    let ran = std::fs::read_to_string(sb.path("ran.log")).expect("the filler ran");
    assert_eq!(ran.lines().count(), 1, "CMD ran once: {ran:?}");
    let entry = PathBuf::from(paths.pop_first().unwrap_or_default());
    assert_eq!(std::fs::read_to_string(entry.join("sub/link")).expect("read through the symlink"), "data\n");

    // A pinned reader: `rm` cannot take the entry from under it.
    let reader_script = r#"echo ready; read go; cat "$SAFECACHE_ENTRY/f""#;
    let mut reader = sb.spawn(["use", "--key", "dep", "--fill", "exit 9", "--", "sh", "-c", reader_script]);
    reader.expect_stdout("ready");
    let out = sb.run(["rm", "dep", "--lock-timeout", "0"]);
    out.assert_code(75);
    reader.send("go");
    let (status, lines) = reader.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(stdout_of(&lines).contains(&"data"), "the pinned reader read its entry: {lines:?}");

    // rm, then fill again; gc leaves entries alone; verify finds them good.
    sb.run(["rm", "dep"]).assert_code(0);
    sb.run(["path", "dep"]).assert_code(1);
    assert!(!entry.exists(), "rm removed the entry");
    fill(sb, "dep");
    fill(sb, "other");
    sb.run(["gc"]).assert_code(0);
    sb.run(["path", "dep"]).assert_code(0);
    let out = sb.run(["verify"]);
    out.assert_code(0);
    // Two, or three where the cache came with `keep` (the overlay's lower
    // layer).
    assert!(out.stderr.contains(" good, 0 corrupt, 0 unverified"), "{out}");

    // clean empties it, and leaves a working cache.
    sb.run(["clean"]).assert_code(0);
    let out = sb.run(["--message-format", "json", "ls"]);
    out.assert_code(0);
    assert!(!out.stdout.contains("\"entry\""), "clean left entries: {out}");
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "no temp is left behind");
    fill(sb, "dep");

    restored_here(sb);
}

/// The remote tier onto this filesystem: an entry that a cache elsewhere
/// uploaded to a `file://` store is restored into the cache here (its
/// archive in an unnamed file in the fill's output: `O_TMPFILE`, or a name
/// unlinked at once where the filesystem has none), and verifies.
pub(crate) fn restored_here(sb: &Sandbox) {
    let store = sb.path("store");
    std::fs::create_dir_all(&store).expect("mkdir store");
    let url = format!("file://{}", store.display());
    let elsewhere = sb.path("elsewhere");
    let args =
        ["--cache-dir", dir_arg(&elsewhere), "--remote-url", &url, "run", "--key", "far", "--", "sh", "-c", FILL];
    let out = sb.run(args);
    out.assert_code(0);
    assert!(out.stderr.contains("Uploaded"), "{out}");
    let out = sb.run(["--remote-url", &url, "run", "--key", "far", "--", "false"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Restored"), "restored here, the fill not run: {out}");
    let entry = PathBuf::from(out.last_stdout_line());
    assert_eq!(std::fs::read_to_string(entry.join("sub/link")).expect("read through the symlink"), "data\n");
    assert_eq!(std::fs::metadata(entry.join("blob")).expect("blob").len(), 262_144);
    sb.run(["verify", "far"]).assert_code(0);
    assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "no temp is left behind");
}

/// Fills `key` with [`FILL`] and returns its entry.
fn fill(sb: &Sandbox, key: &str) -> PathBuf {
    let out = sb.run(["run", "--key", key, "--", "sh", "-c", FILL]);
    out.assert_code(0);
    PathBuf::from(out.last_stdout_line())
}

/// `sb` with its cache in `dir` (for `--cache-dir`).
fn dir_arg(dir: &Path) -> &str {
    dir.to_str().expect("utf-8 path")
}

/// A cache at `copy` that came from elsewhere (a copy, a snapshot, a lower
/// layer) holding `dep` and `keep` as [`fill`] made them: it serves them
/// without running CMD, fills new keys, `verify` checks every entry against
/// its manifest (none is left unverified), and it finds a truncated file.
fn copied_cache_works_and_verifies(sb: &Sandbox, copy: &Path) {
    let cache = dir_arg(copy);
    let out = sb.run(["--cache-dir", cache, "run", "--key", "keep", "--", "sh", "-c", "exit 9"]);
    out.assert_code(0);
    assert!(Path::new(&out.last_stdout_line()).join("f").is_file(), "the copy serves its entry: {out}");
    sb.run(["--cache-dir", cache, "run", "--key", "new", "--", "sh", "-c", FILL]).assert_code(0);

    let out = sb.run(["--cache-dir", cache, "verify"]);
    assert!(
        out.code == Some(0) && out.stderr.contains("3 good, 0 corrupt, 0 unverified"),
        "verify checks every entry of a copied cache against its manifest\n{out}"
    );

    // A file truncated in the copy: verify finds it (exit 65) and sets it aside.
    let out = sb.run(["--cache-dir", cache, "path", "dep"]);
    out.assert_code(0);
    let blob = PathBuf::from(out.last_stdout_line()).join("blob");
    std::fs::OpenOptions::new().write(true).open(&blob).and_then(|f| f.set_len(1000)).expect("truncate");
    let out = sb.run(["--cache-dir", cache, "verify"]);
    assert_eq!(out.code, Some(65), "verify finds the truncated file of a copied cache\n{out}");
    assert!(out.stderr.contains("`dep`"), "{out}");
    sb.run(["--cache-dir", cache, "path", "dep"]).assert_code(1);
    sb.run(["--cache-dir", cache, "path", "keep"]).assert_code(0);
}

/// A sandbox whose cache is on `disk`, and the mount (bound after it).
fn disk_test(disk: Disk) {
    let mut sb = Sandbox::new();
    let mount = match Mount::disk(disk, &sb.path("fs.img"), &sb.path("fs")) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    sb.cache = mount.path().join("cache");
    scenario(&sb);
}

#[test]
fn ext4() {
    disk_test(Disk::Ext4);
}

#[test]
fn xfs() {
    disk_test(Disk::Xfs);
}

#[test]
fn btrfs() {
    disk_test(Disk::Btrfs);
}

#[test]
fn tmpfs() {
    let mut sb = Sandbox::new();
    let mount = match Mount::tmpfs(&sb.path("fs"), "64m") {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    sb.cache = mount.path().join("cache");
    scenario(&sb);
}

/// A cache on btrfs, in a subvolume that is then snapshotted.
fn btrfs_snapshot(sb: &mut Sandbox) -> Result<(Mount, PathBuf), String> {
    let mount = Mount::disk(Disk::Btrfs, &sb.path("fs.img"), &sb.path("fs"))?;
    let volume = mount.path().join("vol");
    let btrfs = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("btrfs").args(args).output().map_err(|e| format!("cannot run btrfs: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("btrfs {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    };
    btrfs(&["subvolume", "create", dir_arg(&volume)])?;
    sb.cache = volume.join("cache");
    fill(sb, "dep");
    fill(sb, "keep");
    let snapshot = mount.path().join("snap");
    btrfs(&["subvolume", "snapshot", dir_arg(&volume), dir_arg(&snapshot)])?;
    Ok((mount, snapshot.join("cache")))
}

/// A btrfs snapshot of a cache is a cache: the scenario runs on it, and
/// the original is unchanged.
#[test]
fn btrfs_snapshot_of_a_cache_is_a_working_cache() {
    let mut sb = Sandbox::new();
    let (_mount, snapshot) = match btrfs_snapshot(&mut sb) {
        Ok(it) => it,
        Err(why) => return skip(why),
    };
    let original = std::mem::replace(&mut sb.cache, snapshot);
    let out = sb.run(["run", "--key", "keep", "--", "sh", "-c", "exit 9"]);
    out.assert_code(0);
    assert!(out.last_stdout_line().starts_with(dir_arg(&sb.cache)), "the snapshot serves its own entry: {out}");
    // Remove the snapshot's entries (the scenario starts empty; whether
    // they verify is `btrfs_snapshot_entries_verify`), which leaves the
    // original's alone.
    sb.run(["rm", "dep", "keep"]).assert_code(0);
    scenario(&sb);
    sb.cache = original;
    sb.run(["path", "keep"]).assert_code(0);
    sb.run(["path", "dep"]).assert_code(0);
}

/// The entries of a btrfs snapshot verify against their manifests, and a
/// file truncated in the snapshot is found.
#[test]
fn btrfs_snapshot_entries_verify() {
    let mut sb = Sandbox::new();
    let (_mount, snapshot) = match btrfs_snapshot(&mut sb) {
        Ok(it) => it,
        Err(why) => return skip(why),
    };
    copied_cache_works_and_verifies(&sb, &snapshot);
    let out = sb.run(["verify"]);
    out.assert_code(0);
    assert!(out.stderr.contains("2 good"), "the original is intact: {out}");
}

/// An overlay whose lower layer holds a cache, as a container image layer
/// does, with a writable upper layer.
fn overlay(sb: &mut Sandbox) -> Result<Mount, String> {
    let lower = sb.path("lower");
    sb.cache = lower.join("cache");
    fill(sb, "dep");
    fill(sb, "keep");
    let mount = Mount::overlay(&lower, &sb.path("upper"), &sb.path("work"), &sb.path("merged"))?;
    sb.cache = mount.path().join("cache");
    Ok(mount)
}

/// The merged dir of an overlay whose lower layer holds a cache is a
/// working cache: its entries are served, and entries from the lower layer
/// can be pinned, removed and cleaned.
#[test]
fn overlayfs_over_a_cache_is_a_working_cache() {
    let mut sb = Sandbox::new();
    let _mount = match overlay(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let out = sb.run(["run", "--key", "keep", "--", "sh", "-c", "exit 9"]);
    out.assert_code(0);
    assert!(out.last_stdout_line().starts_with(dir_arg(&sb.cache)), "{out}");
    // `dep` (from the lower layer) is what the scenario's racers would find
    // filled: remove it first, through the overlay. Renaming a directory of
    // the lower layer fails with EXDEV unless the overlay was mounted with
    // `redirect_dir=on`, and this one is mounted with the defaults, as
    // container runtimes do.
    sb.run(["rm", "dep"]).assert_code(0);
    sb.run(["path", "dep"]).assert_code(1);
    scenario(&sb);
    assert!(sb.path("lower/cache").join(".safecache").is_dir(), "the lower layer is untouched");
}

/// The entries of a cache in an overlay's lower layer verify through the
/// merged dir, and a file truncated there (copied up) is found.
#[test]
fn overlayfs_lower_layer_entries_verify() {
    let mut sb = Sandbox::new();
    let _mount = match overlay(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let merged = sb.cache.clone();
    copied_cache_works_and_verifies(&sb, &merged);
}

/// A cache on `source` copied with `cp -a` and with `tar` to the sandbox
/// (another filesystem): each copy is a working cache that verifies.
fn copies_to_another_filesystem(sb: &Sandbox, copy_by: &str) {
    fill(sb, "dep");
    fill(sb, "keep");
    let copy = sb.path(&format!("{copy_by}-copy"));
    let source = sb.cache.parent().expect("the cache is in the mount");
    let status = match copy_by {
        "cp" => Command::new("cp").arg("-a").arg(&sb.cache).arg(&copy).status(),
        _ => {
            std::fs::create_dir(&copy).expect("create the restore dir");
            let script = r#"tar -C "$1" -cf - cache | tar -C "$2" -xf - --strip-components 1"#;
            Command::new("sh").args(["-c", script, "sh"]).arg(source).arg(&copy).status()
        }
    };
    assert!(status.expect("run the copy").success(), "{copy_by} copied the cache");
    copied_cache_works_and_verifies(sb, &copy);
    let out = sb.run(["verify"]);
    out.assert_code(0);
    assert!(out.stderr.contains("2 good"), "the original is intact: {out}");
}

#[test]
fn copy_by_cp_a_to_another_filesystem_verifies() {
    let mut sb = Sandbox::new();
    let mount = match Mount::tmpfs(&sb.path("fs"), "64m") {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    sb.cache = mount.path().join("cache");
    copies_to_another_filesystem(&sb, "cp");
}

#[test]
fn copy_by_tar_to_another_filesystem_verifies() {
    let mut sb = Sandbox::new();
    let mount = match Mount::tmpfs(&sb.path("fs"), "64m") {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    sb.cache = mount.path().join("cache");
    copies_to_another_filesystem(&sb, "tar");
}
