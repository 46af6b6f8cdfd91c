//! A full disk, for real: the cache on a 2 MiB tmpfs that each test mounts
//! (skipped, saying why, where mounting is not allowed), filled past its
//! end by CMD, or to its last byte by `dd` writing a file beside the cache.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{Sandbox, names};

/// A sandbox whose cache dir is on a tmpfs of its own; the tmpfs is
/// unmounted (lazily, if still busy) before the sandbox is deleted.
struct OnTmpfs {
    mnt: PathBuf,
    // Dropped after `Drop::drop` unmounts: fields drop after the struct.
    sb: Sandbox,
}

impl OnTmpfs {
    fn new(options: &str) -> Option<OnTmpfs> {
        let mut sb = Sandbox::new();
        let mnt = sb.path("mnt");
        std::fs::create_dir(&mnt).expect("create mount point");
        // Private to its owner, as safecache wants a cache dir to be.
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("{options},mode=0700"), "tmpfs"])
            .arg(&mnt)
            .output();
        let refused = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refused {
            eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {why}");
            return None;
        }
        sb.cache = mnt.join("cache");
        Some(OnTmpfs { mnt, sb })
    }

    /// Bytes still available on the tmpfs, as `df` tells.
    fn available(&self) -> u64 {
        let out = Command::new("df").args(["--output=avail", "-B1"]).arg(&self.mnt).output().expect("run df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df said {text:?}"))
    }

    /// Fills the tmpfs to its last byte with `dd`, writing a file beside
    /// the cache.
    fn fill_up(&self) {
        let out = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.mnt.join("ballast").display()))
            .args(["bs=4096", "oflag=append", "conv=notrunc"])
            .output()
            .expect("run dd");
        assert!(String::from_utf8_lossy(&out.stderr).contains("No space left on device"), "{out:?}");
        assert_eq!(self.available(), 0, "the disk is full");
    }

    /// What a failed write could have left in the cache's own dirs, as
    /// `ls -A` lists them.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in ["tmp", "holders", "failed"] {
            let ls = Command::new("ls").arg("-A").arg(self.sb.cache.join(".safecache").join(dir)).output();
            let ls = ls.expect("run ls");
            assert!(ls.status.success(), "{ls:?}");
            out.extend(String::from_utf8_lossy(&ls.stdout).lines().map(|n| format!("{dir}/{n}")));
        }
        out
    }
}

impl Drop for OnTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// Writes `kib` KiB of zeros into "$SAFECACHE_OUT/blob", as a fill's CMD.
fn blob(kib: u32) -> String {
    format!(r#"head -c {} /dev/zero > "$SAFECACHE_OUT/blob""#, kib * 1024)
}

#[test]
fn a_cmd_that_fills_the_disk_fails_naming_the_space_left_and_the_cache_still_works() {
    let Some(t) = OnTmpfs::new("size=2m") else { return };
    let sb = &t.sb;
    sb.run(["run", "--key", "small", "--", "sh", "-c", &blob(4)]).assert_code(0);

    // 4 MiB into 2 MiB: head fails with ENOSPC and exits 1.
    let out = sb.run(["run", "--key", "huge", "--", "sh", "-c", &blob(4096)]);
    out.assert_code(1);
    assert!(out.stderr.contains("No space left on device"), "CMD's own error shows: {out}");
    let warning = format!("the filesystem of cache `{}` had 0 B free when the fill failed", sb.cache.display());
    assert!(out.stderr.contains(&warning), "{out}");
    assert!(out.stderr.contains("nothing was published") && out.stderr.contains("`cargo-safecache gc`"), "{out}");
    sb.run(["path", "huge"]).assert_code(1);
    assert_eq!(t.leftovers(), Vec::<String>::new(), "no temp, no half-written record");
    assert!(t.available() > 1 << 20, "the temp's space came back");

    // The cache still works: the entry from before, and a new fill.
    sb.run(["path", "small"]).assert_code(0);
    sb.run(["run", "--key", "after", "--", "sh", "-c", &blob(4)]).assert_code(0);
}

#[test]
fn on_a_full_disk_reads_work_fills_are_refused_and_rm_gc_clean_free_space() {
    let Some(t) = OnTmpfs::new("size=2m") else { return };
    let sb = &t.sb;
    for key in ["a", "b", "c"] {
        sb.run(["run", "--key", key, "--", "sh", "-c", &blob(256)]).assert_code(0);
    }
    // A killed fill's temp, whose owner lock nobody holds: gc's to reclaim.
    let orphan = sb.cache.join(".safecache/tmp/0123456789abcdef0123456789abcdef.0123456789abcdef01234567/out");
    std::fs::create_dir_all(&orphan).expect("create orphan");
    std::fs::write(orphan.join("blob"), vec![0u8; 256 << 10]).expect("write orphan");
    t.fill_up();

    // Reads: a hit (CMD not run), `path`, a pin, `ls`, `status`. Their
    // holder records cannot be written, which costs only the display.
    let out = sb.run(["run", "--key", "a", "--", "false"]);
    out.assert_code(0);
    assert_eq!(out.last_stdout_line(), sb.cache.join("a").display().to_string());
    sb.run(["path", "a"]).assert_code(0);
    sb.run(["use", "--key", "a", "--", "sh", "-c", r#"test -s "$SAFECACHE_DIR/a/blob""#]).assert_code(0);
    let out = sb.run(["ls"]);
    out.assert_code(0);
    assert!(["a", "b", "c"].iter().all(|k| out.stdout.lines().any(|l| l.starts_with(k))), "{out}");
    let out = sb.run(["status"]);
    out.assert_code(0);
    assert!(out.stdout.contains("orphan"), "{out}");
    assert_eq!(t.leftovers().len(), 1, "only the orphan: {:?}", t.leftovers());

    // A new fill is refused before CMD runs (the 1 MiB reserve), and without
    // the reserve CMD runs and fails on the full disk, saying so.
    let ran = sb.path("ran");
    let touch = format!(r#"touch "{}"; echo x > "$SAFECACHE_OUT/f""#, ran.display());
    let out = sb.run(["run", "--key", "new", "--", "sh", "-c", &touch]);
    out.assert_one_line_error(
        74,
        "has 0 B free, less than the 1.0 MiB kept free, so the fill of `new` was not started",
    );
    assert!(out.stderr.contains("--min-free"), "{out}");
    assert!(!ran.exists(), "CMD did not run");
    let out = sb.run(["run", "--min-free", "0", "--key", "new", "--", "sh", "-c", &touch]);
    out.assert_code(1);
    assert!(ran.exists() && out.stderr.contains("had 0 B free when the fill failed"), "{out}");
    sb.run(["path", "new"]).assert_code(1);

    // rm, gc and clean need no new space, and free some.
    sb.run(["rm", "--wait", "a"]).assert_code(0);
    assert!(t.available() >= 256 << 10, "rm --wait freed the entry");
    t.fill_up();
    let out = sb.run(["--message-format", "json", "gc"]);
    out.assert_code(0);
    assert!(out.stdout.contains(r#""temps":1"#), "{out}");
    assert!(t.available() >= 256 << 10, "gc freed the orphan");
    t.fill_up();
    sb.run(["clean", "--wait"]).assert_code(0);
    assert!(t.available() >= 512 << 10, "clean --wait freed the entries");
    assert_eq!(t.leftovers(), Vec::<String>::new());
    assert!(names(&sb.cache).iter().all(|n| n == ".safecache" || n == "CACHEDIR.TAG"), "{:?}", names(&sb.cache));
}

#[test]
fn safecaches_own_writes_out_of_inodes_exit_74_naming_the_cache() {
    let Some(t) = OnTmpfs::new("size=2m,nr_inodes=64") else { return };
    let sb = &t.sb;
    sb.run(["run", "--key", "a", "--", "sh", "-c", &blob(4)]).assert_code(0);
    // Empty files beside the cache until no inode is left.
    let script = r#"mkdir "$1/inodes" && i=0; while touch "$1/inodes/$i" 2>/dev/null; do i=$((i+1)); done"#;
    let status = Command::new("sh").args(["-c", script, "sh"]).arg(&t.mnt).status().expect("run sh");
    assert!(status.success());

    let ran = sb.path("ran");
    let out = sb.run(["run", "--key", "new", "--", "touch", ran.to_str().expect("utf-8")]);
    out.assert_one_line_error(74, "no space left to ");
    assert!(out.stderr.contains(&format!("the filesystem of cache `{}` has ", sb.cache.display())), "{out}");
    assert!(out.stderr.contains("no inodes left"), "{out}");
    assert!(out.stderr.contains("`cargo-safecache gc`"), "the error says how to make room: {out}");
    assert!(!ran.exists());
    assert_eq!(t.leftovers(), Vec::<String>::new());
    sb.run(["path", "a"]).assert_code(0);
    sb.run(["rm", "a"]).assert_code(0);
}
