//! Ownership, permissions and moved fills: a cache another user could
//! tamper with is refused, a new cache is private whatever the umask, and a
//! fill whose directory moved while CMD ran publishes nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::support::{Sandbox, snapshot};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Every directory and file safecache made under `dir`: (path, mode).
fn modes_under(dir: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            out.push((path.display().to_string(), meta.mode() & 0o7777));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// umask 000 made the root, `.safecache`, `tmp`, the lock files and the
/// entries world-writable. Now everything safecache creates is private.
#[test]
fn a_new_cache_is_private_whatever_the_umask() {
    let sb = Sandbox::new();
    let cache = sb.cache.display().to_string();
    let script = format!(
        "umask 000 && exec {} --cache-dir {cache} run --key k -- sh -c 'echo x > \"$SAFECACHE_OUT/f\"'",
        crate::support::bin()
    );
    let mut sh = std::process::Command::new("sh");
    sh.args(["-c", &script]).env("CARGO_TERM_COLOR", "never").env_remove("SAFECACHE_LEASE");
    let out = crate::support::Out::of(&mut sh);
    out.assert_code(0);
    assert_eq!(std::fs::metadata(&sb.cache).expect("stat").mode() & 0o777, 0o700, "the cache root");
    for (path, mode) in modes_under(&sb.cache.join(".safecache")) {
        assert_eq!(mode & 0o077, 0, "{path} has mode {mode:o}: others can reach it");
    }
}

/// Another user's cache, or one others can write to, is refused with exit
/// 77 and left untouched, unless the user says to trust it.
#[test]
fn a_cache_others_can_write_is_refused() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let marker = sb.cache.join(".safecache");
    for (what, path, mode) in
        [("world-writable root", &sb.cache, 0o777), ("group-writable tmp", &marker.join("tmp"), 0o770)]
    {
        let old = std::fs::metadata(path).expect("stat").mode() & 0o7777;
        chmod(path, mode);
        let before = snapshot(&sb.cache);
        let out = sb.run(["run", "--key", "k2", "--allow-empty", "--", "true"]);
        out.assert_one_line_error(77, "another user could redirect");
        assert!(out.stderr.contains("--allow-untrusted-cache"), "{what}: the error names the override\n{out}");
        assert_eq!(snapshot(&sb.cache), before, "{what}: nothing changed");
        sb.run(["--allow-untrusted-cache", "path", "k"]).assert_code(0);
        chmod(path, old);
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("skip: only root can give the cache to another user");
        return;
    }
    std::os::unix::fs::chown(&marker, Some(65534), None).expect("chown");
    let out = sb.run(["path", "k"]);
    out.assert_one_line_error(77, "belongs to another user (uid 65534)");
}

/// A group-shared cache (setgid, 0770) is the documented opt-in: it is
/// accepted, and what safecache creates in it is shared with the group.
#[test]
fn a_group_shared_cache_is_accepted_and_stays_shared() {
    let sb = Sandbox::new();
    std::fs::create_dir(&sb.cache).expect("mkdir");
    chmod(&sb.cache, 0o2770);
    sb.fill("k", "v");
    for (path, mode) in modes_under(&sb.cache.join(".safecache")) {
        assert_eq!(mode & 0o007, 0, "{path}: never for others ({mode:o})");
        if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            assert_eq!(mode & 0o2070, 0o2070, "{path}: a group-shared dir ({mode:o})");
        }
    }
}

/// Renaming the cache dir during a fill published half an entry with exit
/// 0: CMD's later writes went to a recreated debris tree. Now the fill
/// notices its directory is no longer where its path leads.
#[test]
fn a_fill_whose_directory_moved_publishes_nothing() {
    let sb = Sandbox::new();
    let moved = sb.path("moved");
    let script = format!(
        "echo 1 > \"$SAFECACHE_OUT/a\" && mv \"$SAFECACHE_DIR\" {} && mkdir -p \"$SAFECACHE_OUT\" && echo 2 > \"$SAFECACHE_OUT/b\"",
        moved.display()
    );
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", &script]);
    out.assert_error(101, "nothing was published");
    assert!(!moved.join("k").exists(), "half an entry was published");
    // A temp swapped for a symlink inside the cache is refused the same way.
    let sb = Sandbox::new();
    let elsewhere = sb.path("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    let script = format!(
        "mv \"$SAFECACHE_OUT\" \"$SAFECACHE_OUT.x\" && ln -s {} \"$SAFECACHE_OUT\" && echo 2 > \"$SAFECACHE_OUT/b\"",
        elsewhere.display()
    );
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", &script]);
    out.assert_error(101, "was replaced");
    assert!(!sb.cache.join("k").exists());
}

/// `clean` replaces `locks/`, `used/`, `manifests/` and `failed/` whole
/// (issue 17) rather than emptying them: the new ones must have the modes
/// and group the cache makes its directories with, or the next command's
/// trust check would refuse the cache (a group-shared cache) or others
/// could reach them. Private and group-shared alike.
#[test]
fn directories_clean_replaces_keep_the_caches_modes_and_group() {
    for shared in [false, true] {
        let sb = Sandbox::new();
        std::fs::create_dir(&sb.cache).expect("mkdir");
        chmod(&sb.cache, if shared { 0o2770 } else { 0o700 });
        sb.fill("k", "v");
        let locks = sb.cache.join(".safecache/locks");
        let before = std::fs::metadata(&locks).expect("stat").ino();
        sb.run(["clean", "--wait"]).assert_code(0);
        let meta = std::fs::metadata(&locks).expect("stat");
        assert_ne!(meta.ino(), before, "shared={shared}: locks/ was replaced whole");
        let group = std::fs::metadata(&sb.cache).expect("stat").gid();
        for dir in ["locks", "used", "manifests", "failed"] {
            let meta = std::fs::metadata(sb.cache.join(".safecache").join(dir)).expect("stat");
            let want = if shared { 0o2770 } else { 0o700 };
            assert_eq!(meta.mode() & 0o7777, want, "shared={shared}: {dir} has mode {:o}", meta.mode() & 0o7777);
            assert_eq!(meta.gid(), group, "shared={shared}: {dir} is in the cache's group");
        }
        sb.fill("k2", "v");
        sb.run(["path", "k2"]).assert_code(0);
    }
}
