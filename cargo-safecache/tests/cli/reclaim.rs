//! Removal that returns at once (issue 17, item 4): `rm` and `clean`
//! return once the entries are renamed aside, durably; a detached reclaimer
//! deletes the trash after they exit, or the command itself with `--wait`.
//! A killed reclaimer's trash is finished by the next gc. Nothing outside
//! the trash is touched.

use std::path::{Path, PathBuf};

use crate::support::{PATIENCE, Sandbox, names, snapshot};

/// Fills `key` with `dirs` directories of `files` empty files each, a file,
/// and symlinks to `outside` (a directory and a file in it).
fn fill_big(sb: &Sandbox, key: &str, dirs: usize, files: usize, outside: &Path) -> PathBuf {
    let script = format!(
        r#"cd "$SAFECACHE_OUT" && for d in $(seq 1 {dirs}); do mkdir "d$d" && (cd "d$d" && seq 1 {files} | xargs touch); done && echo x > f && ln -s "$O" out && ln -s "$O/precious" d1/precious"#
    );
    let out = sb.cmd(["run", "--key", key, "--", "sh", "-c", &script]).env("O", outside).output().expect("fill");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().expect("entry path"))
}

/// A directory outside the cache the entries link to, and its contents.
fn outside(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("outside");
    std::fs::create_dir(&dir).expect("outside");
    std::fs::write(dir.join("precious"), "keep me").expect("write");
    dir
}

fn trash(sb: &Sandbox) -> PathBuf {
    sb.cache.join(".safecache/trash")
}

/// The detached reclaimers of this sandbox's cache, by pid.
fn reclaimers(sb: &Sandbox) -> Vec<i32> {
    let want = sb.cache.to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.iter().any(|a| a == "__safecache-reclaim") && args.contains(&want) {
            pids.push(pid);
        }
    }
    pids
}

/// The session of `pid` (field 6 of /proc/PID/stat), if it still runs.
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(3)?.parse().ok()
}

/// Waits (through a pidfd, without polling) until `pid` has exited.
fn wait_exit(pid: i32) {
    // SAFETY: pidfd_open and poll get an integer pid and a valid pollfd.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if fd < 0 {
            return; // already gone
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(PATIENCE.as_millis()).unwrap_or(i32::MAX);
        assert_eq!(libc::poll(&mut pfd, 1, ms), 1, "the reclaimer {pid} did not end within {PATIENCE:?}");
        libc::close(fd);
    }
}

/// `rm` returns with the entry gone from the cache but its files still in
/// the trash; a reclaimer in its own session, still running after `rm`
/// exited, deletes them; nothing outside the trash is touched.
#[test]
fn rm_returns_before_the_trash_is_deleted_and_a_detached_reclaimer_finishes_it() {
    let sb = Sandbox::new();
    let outside = outside(&sb);
    let before = snapshot(&outside);
    let entry = fill_big(&sb, "big", 4, 5000, &outside);
    sb.fill("other", "v");
    let started = std::time::Instant::now();
    let out = sb.run(["rm", "big"]);
    let took = started.elapsed();
    out.assert_code(0);
    assert!(!entry.exists(), "the entry left its name before rm returned");
    assert!(!names(&trash(&sb)).is_empty(), "rm returned before its 20,000 files were deleted (it took {took:?})");
    let pids = reclaimers(&sb);
    assert!(!pids.is_empty(), "a reclaimer outlives rm");
    for &pid in &pids {
        if let Some(sid) = session_of(pid) {
            assert_eq!(sid, pid, "the reclaimer leads a session of its own");
        }
    }
    pids.into_iter().for_each(wait_exit);
    assert!(names(&trash(&sb)).is_empty(), "the reclaimer emptied the trash");
    assert_eq!(snapshot(&outside), before, "nothing the entry linked to was touched");
    sb.run(["path", "other"]).assert_code(0);
    let out = sb.run(["status"]);
    out.assert_code(0);
}

/// A reclaimer killed half-way leaves trash that the next gc finishes.
#[test]
fn a_killed_reclaimer_leaves_trash_that_gc_finishes() {
    let sb = Sandbox::new();
    let outside = outside(&sb);
    let before = snapshot(&outside);
    fill_big(&sb, "big", 8, 5000, &outside);
    sb.run(["rm", "big"]).assert_code(0);
    let pids = reclaimers(&sb);
    assert!(!pids.is_empty(), "a reclaimer outlives rm");
    for &pid in &pids {
        // SAFETY: kill(2) of a process this test started (through rm).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        wait_exit(pid);
    }
    assert!(!names(&trash(&sb)).is_empty(), "the killed reclaimer left trash");
    let out = sb.run(["gc"]);
    out.assert_code(0);
    assert!(names(&trash(&sb)).is_empty(), "gc finished the abandoned reclaim\n{}", out.stderr);
    assert_eq!(snapshot(&outside), before, "nothing outside the trash was touched");
}

/// With `--wait`, `rm` and `clean` delete before they return, and start
/// no reclaimer.
#[test]
fn wait_deletes_before_returning() {
    let sb = Sandbox::new();
    let outside = outside(&sb);
    let before = snapshot(&outside);
    fill_big(&sb, "big", 2, 500, &outside);
    sb.run(["rm", "--wait", "big"]).assert_code(0);
    assert!(names(&trash(&sb)).is_empty(), "rm --wait emptied the trash");
    assert!(reclaimers(&sb).is_empty(), "no reclaimer was started");
    fill_big(&sb, "a", 2, 500, &outside);
    sb.fill("b", "v");
    let out = sb.run(["clean", "--wait"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Cleaned 2 entries, ") && out.stderr.contains(" freed"), "{}", out.stderr);
    assert!(names(&trash(&sb)).is_empty(), "clean --wait emptied the trash");
    assert_eq!(snapshot(&outside), before, "nothing outside the trash was touched");
}

/// `clean` returns once every entry is renamed aside, says the space is
/// freed in the background, and its reclaimer frees it.
#[test]
fn clean_returns_and_its_reclaimer_frees_the_space() {
    let sb = Sandbox::new();
    let outside = outside(&sb);
    let before = snapshot(&outside);
    for key in ["a", "b", "c"] {
        fill_big(&sb, key, 2, 2000, &outside);
    }
    let out = sb.run(["clean"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Cleaned 3 entries, disk space freed in the background"), "{}", out.stderr);
    assert!(sb.run(["ls"]).stdout.trim().is_empty(), "no entry is left");
    reclaimers(&sb).into_iter().for_each(wait_exit);
    assert!(names(&trash(&sb)).is_empty(), "the reclaimer emptied the trash");
    assert_eq!(snapshot(&outside), before, "nothing outside the trash was touched");
}
