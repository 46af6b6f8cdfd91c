//! Issue 15: a cache on a case-insensitive filesystem, the default on macOS
//! (APFS), in ext4 casefold directories and on SMB shares. Here it is the
//! FUSE passthrough `cifs.py` (`mounts::Mount::case_insensitive`): lookups
//! fold case and Unicode normalization, names keep their spelling. Keys that
//! differ only in case or normalization are different keys: each runs its
//! own command, and removing one never touches the other.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::mounts::{Mount, skip};
use crate::support::{Sandbox, stdout_of};

/// Moves `sb`'s cache onto a case-insensitive mount in it. The caller
/// binds the mount after `sb`, so that it is unmounted first.
fn on_case_insensitive_mount(sb: &mut Sandbox) -> Result<Mount, String> {
    let mount = Mount::case_insensitive(&sb.path("backing"), &sb.path("ci"))?;
    sb.cache = mount.path().join("cache");
    Ok(mount)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `run --key lib` after `Lib` was filled runs its own command: it must not
/// be served `Lib`'s entry because the filesystem folds `lib` to `Lib`.
#[test]
fn keys_that_differ_in_case_run_their_own_commands() {
    let mut sb = Sandbox::new();
    let _mount = match on_case_insensitive_mount(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let upper = sb.fill("Lib", "upper");
    let out =
        sb.run(["run", "--key", "lib", "--", "sh", "-c", r#"echo lower > "$SAFECACHE_OUT/f"; touch "$T/lib-ran""#]);
    out.assert_code(0);
    assert!(sb.path("lib-ran").exists(), "`run --key lib` was served the entry of `Lib` without running: {out}");
    let lower = PathBuf::from(out.last_stdout_line());
    assert!(
        !same_dir(&upper, &lower),
        "`Lib` and `lib` share one directory: {} and {}",
        upper.display(),
        lower.display()
    );
    assert_eq!(read(&lower.join("f")), "lower\n");
    assert_eq!(read(&upper.join("f")), "upper\n", "filling `lib` changed `Lib`");

    // Each key keeps its own entry, as `path`, `ls` and `verify` see it.
    for (key, content) in [("Lib", "upper\n"), ("lib", "lower\n")] {
        let out = sb.run(["path", key]);
        out.assert_code(0);
        assert_eq!(read(&PathBuf::from(out.last_stdout_line()).join("f")), content, "`path {key}`");
    }
    let out = sb.run(["ls"]);
    out.assert_code(0);
    let keys: Vec<&str> = out.stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(keys.contains(&"Lib") && keys.contains(&"lib"), "`ls` lists both keys: {out}");
    sb.run(["verify"]).assert_code(0);

    // A third spelling is a third key.
    let out = sb.run(["run", "--key", "LIB", "--", "sh", "-c", r#"echo shout > "$SAFECACHE_OUT/f""#]);
    out.assert_code(0);
    assert_eq!(read(&PathBuf::from(out.last_stdout_line()).join("f")), "shout\n");
    assert_eq!(read(&upper.join("f")), "upper\n");
    assert_eq!(read(&lower.join("f")), "lower\n");
}

/// `rm lib` while `Lib` is pinned and being read must not delete `Lib`:
/// a pin that does not protect is the one promise safecache must not break.
#[test]
fn rm_of_another_spelling_never_deletes_a_pinned_entry() {
    let mut sb = Sandbox::new();
    let _mount = match on_case_insensitive_mount(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let upper = sb.fill("Lib", "upper");
    let script = r#"echo ready; read go; cat "$SAFECACHE_ENTRY/f""#;
    let mut reader = sb.spawn(["use", "--key", "Lib", "--fill", "exit 9", "--", "sh", "-c", script]);
    reader.expect_stdout("ready");

    // The cache's locks work on this mount: `rm Lib` cannot take it.
    sb.run(["rm", "Lib", "--lock-timeout", "0"]).assert_code(75);

    // `lib` was never filled: there is nothing to remove, and `Lib` stays.
    let out = sb.run(["rm", "lib", "--lock-timeout", "0"]);
    assert!(upper.join("f").exists(), "`rm lib` deleted `Lib` while it was pinned: {out}");
    out.assert_code(0);
    reader.send("go");
    let (status, lines) = reader.finish();
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(stdout_of(&lines).contains(&"upper"), "the pinned reader read its entry: {lines:?}");
    sb.run(["path", "Lib"]).assert_code(0);

    // Once `lib` is filled, `rm lib` removes `lib` only.
    let lower = sb.fill("lib", "lower");
    sb.run(["rm", "lib"]).assert_code(0);
    sb.run(["path", "lib"]).assert_code(1);
    let out = sb.run(["path", "Lib"]);
    out.assert_code(0);
    assert_eq!(read(&PathBuf::from(out.last_stdout_line()).join("f")), "upper\n", "`rm lib` removed `Lib`");
    assert!(!same_dir(&upper, &lower) || !lower.exists());
}

/// Two keys that differ only in Unicode normalization (é as U+00E9, and as
/// `e` + U+0301: APFS stores names in NFD and compares them normalized) get
/// distinct entries.
#[test]
fn keys_that_differ_in_normalization_get_distinct_entries() {
    let mut sb = Sandbox::new();
    let _mount = match on_case_insensitive_mount(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let (nfc, nfd) = ("caf\u{e9}", "cafe\u{301}");
    let composed = sb.fill(nfc, "composed");
    let out =
        sb.run(["run", "--key", nfd, "--", "sh", "-c", r#"echo decomposed > "$SAFECACHE_OUT/f"; touch "$T/nfd-ran""#]);
    out.assert_code(0);
    assert!(sb.path("nfd-ran").exists(), "the NFD key was served the NFC key's entry: {out}");
    let decomposed = PathBuf::from(out.last_stdout_line());
    assert!(!same_dir(&composed, &decomposed), "the two keys share one directory");
    assert_eq!(read(&composed.join("f")), "composed\n");
    assert_eq!(read(&decomposed.join("f")), "decomposed\n");

    sb.run(["rm", nfd]).assert_code(0);
    let out = sb.run(["path", nfc]);
    out.assert_code(0);
    assert_eq!(
        read(&PathBuf::from(out.last_stdout_line()).join("f")),
        "composed\n",
        "`rm` of the NFD key removed the NFC key"
    );
}

/// The passthrough itself behaves as a case-insensitive filesystem should,
/// so the tests above test safecache and not the mount: names fold on
/// lookup, keep their spelling, and a second spelling of a name is EEXIST.
/// flock works on it (the kernel keeps the locks), so the cache's locks do.
#[test]
fn the_case_insensitive_mount_folds_names_and_keeps_spellings() {
    let mut sb = Sandbox::new();
    let mount = match on_case_insensitive_mount(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    let m = mount.path();
    std::fs::create_dir(m.join("Lib")).expect("mkdir Lib");
    let err = std::fs::create_dir(m.join("lib")).expect_err("mkdir lib when Lib exists");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    std::fs::write(m.join("LIB/f"), "x").expect("write through another spelling");
    assert_eq!(read(&m.join("lib/f")), "x");
    std::fs::write(m.join("caf\u{e9}"), "nfc").expect("write NFC");
    assert_eq!(read(&m.join("cafe\u{301}")), "nfc", "normalization folds");
    let names = crate::support::names(m);
    assert!(names.contains("Lib") && !names.contains("lib") && names.contains("caf\u{e9}"), "{names:?}");

    // flock: a second exclusive lock on the same file is refused.
    let a = std::fs::File::open(m.join("Lib/f")).expect("open");
    let b = std::fs::File::open(m.join("Lib/f")).expect("open");
    a.try_lock().expect("first lock");
    assert!(b.try_lock().is_err(), "flock on the FUSE mount keeps processes apart");
}

/// The remote tier onto the FUSE mount, which has no `O_TMPFILE`: the
/// restore's archive goes into a named file unlinked at once, and the
/// restored entry works and verifies; keys that differ in case stay apart
/// in the store as here.
#[test]
fn a_restore_onto_the_case_insensitive_mount_works() {
    let mut sb = Sandbox::new();
    let _mount = match on_case_insensitive_mount(&mut sb) {
        Ok(mount) => mount,
        Err(why) => return skip(why),
    };
    // The fallback is what this exercises: the mount refuses O_TMPFILE.
    std::fs::create_dir_all(&sb.cache).expect("mkdir");
    let tmpfile = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).open(&sb.cache)
    };
    assert!(tmpfile.is_err(), "the FUSE mount has O_TMPFILE: this test no longer tests the fallback");
    crate::filesystems::restored_here(&sb);
    let url = format!("file://{}", sb.path("store").display());
    let elsewhere = sb.path("elsewhere");
    let elsewhere = elsewhere.to_str().expect("utf-8");
    for (key, text) in [("Case", "upper"), ("case", "lower")] {
        let fill = format!(r#"echo {text} > "$SAFECACHE_OUT/f""#);
        sb.run(["--cache-dir", elsewhere, "--remote-url", &url, "run", "--key", key, "--", "sh", "-c", &fill])
            .assert_code(0);
    }
    for (key, text) in [("case", "lower\n"), ("Case", "upper\n")] {
        let out = sb.run(["--remote-url", &url, "run", "--key", key, "--", "false"]);
        out.assert_code(0);
        assert!(out.stderr.contains("Restored"), "{out}");
        assert_eq!(read(&PathBuf::from(out.last_stdout_line()).join("f")), text, "`{key}`");
    }
}
