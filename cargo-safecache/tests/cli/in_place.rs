//! `run --key K --in-place`: outputs that record their own absolute path (a
//! Python venv, a cargo target dir) built at the entry's final path, and
//! seen by readers only once committed. Each tool is also killed mid-fill:
//! what it left must never be served, and the next fill starts afresh.

use std::path::{Path, PathBuf};

use crate::support::{Sandbox, mkfifo};

/// A sandbox with a fifo nobody ever writes, for a CMD to block on.
fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    mkfifo(&sb.path("never"));
    sb
}

/// Whether the venv at `venv` works from where it is: its `pip` script's
/// shebang names its own interpreter, so it runs only at the path it was
/// made at.
fn venv_works(venv: &Path) -> bool {
    let out = std::process::Command::new(venv.join("bin/pip")).arg("--version").output();
    out.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&venv.display().to_string()))
}

#[test]
fn a_venv_filled_in_place_works_at_its_published_path() {
    let sb = sandbox();
    let out = sb.run(["run", "--key", "venv", "--in-place", "--", "sh", "-c", "python3 -m venv \"$SAFECACHE_OUT\""]);
    out.assert_code(0);
    let entry = PathBuf::from(out.last_stdout_line());
    assert!(venv_works(&entry), "the venv's pip runs from the entry: {out}");
    // The same fill built in a temp and renamed breaks: pip's shebang names
    // the temp. This is what --in-place is for.
    let out = sb.run(["run", "--key", "moved", "--", "sh", "-c", "python3 -m venv \"$SAFECACHE_OUT\""]);
    out.assert_code(0);
    assert!(!venv_works(Path::new(&out.last_stdout_line())), "a venv built elsewhere and renamed is broken");
}

/// Fills `key` in place with `script`, which says `ready` once its tool has
/// written part of the entry and then blocks; kills `run` there; and checks
/// that nothing serves the half entry, that `status` shows it uncommitted,
/// and that gc or the next fill removes it.
fn kill_mid_fill(sb: &Sandbox, key: &str, script: &str) {
    let mut run = sb.spawn(["run", "--key", key, "--in-place", "--", "sh", "-c", script]);
    run.expect_stderr_line("ready");
    let entry = sb.cache.join(key);
    assert!(entry.is_dir(), "the fill writes at the final path");
    run.child.kill().expect("SIGKILL run");
    run.child.wait().expect("wait for run");

    sb.run(["path", key]).assert_code(1);
    sb.run(["--lock-timeout", "0", "use", "--key", key, "--", "true"]).assert_code(1);
    let ls = sb.run(["ls"]);
    assert!(!ls.stdout.contains(key), "ls lists no uncommitted entry: {ls}");
    let status = sb.run(["status"]);
    assert!(status.stdout.contains(&format!("uncommitted {key}")), "{status}");
}

#[test]
fn a_venv_killed_mid_fill_is_never_served_and_is_refilled() {
    let sb = sandbox();
    let script = "python3 -m venv \"$SAFECACHE_OUT\" && echo ready && read x < \"$T/never\"";
    kill_mid_fill(&sb, "venv", script);
    // The next fill waits for the killed fill's processes to end, removes
    // what they left, and builds afresh.
    let out = sb.run(["run", "--key", "venv", "--in-place", "--", "sh", "-c", "python3 -m venv \"$SAFECACHE_OUT\""]);
    out.assert_code(0);
    assert!(venv_works(&PathBuf::from(out.last_stdout_line())), "{out}");
    let status = sb.run(["status"]);
    assert!(!status.stdout.contains("uncommitted"), "{status}");
}

/// A tiny cargo package, built offline.
fn package(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("pkg");
    std::fs::create_dir_all(dir.join("src")).expect("package dir");
    std::fs::write(dir.join("Cargo.toml"), "[package]\nname = \"pkg\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
        .expect("Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), "fn main() { println!(\"built\"); }\n").expect("main.rs");
    dir
}

/// `cargo build` into `target`, returning whether the package was fresh
/// (nothing rebuilt: its fingerprints, which record absolute paths, hold).
fn cargo_build_fresh(sb: &Sandbox, pkg: &Path, target: &Path) -> bool {
    let manifest = pkg.join("Cargo.toml");
    let out = sb.run([
        "run",
        "--",
        "cargo",
        "build",
        "--offline",
        "--message-format=json",
        "--manifest-path",
        manifest.to_str().expect("utf-8"),
        "--target-dir",
        target.to_str().expect("utf-8"),
    ]);
    out.assert_code(0);
    out.stdout.lines().any(|l| l.contains("\"compiler-artifact\"") && l.contains("\"fresh\":true"))
}

#[test]
fn a_cargo_target_dir_filled_in_place_is_fresh_at_its_published_path_even_after_a_kill() {
    let sb = sandbox();
    let pkg = package(&sb);
    let build = format!(
        "cargo build --offline --quiet --manifest-path '{}' --target-dir \"$SAFECACHE_OUT\"",
        pkg.join("Cargo.toml").display()
    );
    kill_mid_fill(&sb, "target", &format!("{build} && echo ready && read x < \"$T/never\""));
    let out = sb.run(["run", "--key", "target", "--in-place", "--", "sh", "-c", &build]);
    out.assert_code(0);
    let entry = PathBuf::from(out.last_stdout_line());
    assert!(entry.join("debug/pkg").is_file(), "{out}");
    assert!(cargo_build_fresh(&sb, &pkg, &entry), "a target dir built in place needs no rebuild");
}

/// A fill that clears the directory's mark (its sticky bit) may have been
/// read half-built: the fill fails and nothing is published.
#[test]
fn a_fill_that_clears_the_mark_publishes_nothing() {
    let sb = sandbox();
    let clear = "echo x > \"$SAFECACHE_OUT/f\"; chmod 700 \"$SAFECACHE_OUT\"";
    let out = sb.run(["run", "--key", "k", "--in-place", "--", "sh", "-c", clear]);
    out.assert_error(101, "uncommitted mark");
    sb.run(["path", "k"]).assert_code(1);
    assert!(!sb.cache.join("k").exists());
}

/// A failed in-place fill removes its uncommitted entry at once.
#[test]
fn a_failed_in_place_fill_leaves_nothing() {
    let sb = sandbox();
    let out = sb.run(["run", "--key", "k", "--in-place", "--", "sh", "-c", "echo x > \"$SAFECACHE_OUT/f\"; exit 3"]);
    out.assert_code(3);
    assert!(!sb.cache.join("k").exists());
    let names: Vec<_> = std::fs::read_dir(sb.cache.join(".safecache/trash")).expect("trash").collect();
    assert!(names.is_empty(), "{names:?}");
}

/// The entry's path is stdout's one line even when the fill's output ends
/// mid-line: the fill printed to stderr.
#[test]
fn the_entry_path_is_a_line_of_its_own() {
    let sb = sandbox();
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", "printf 'progress 100%%'; : > \"$SAFECACHE_OUT/f\""]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, [sb.cache.join("k").to_str().expect("utf-8")], "{out}");
    assert!(out.stderr.contains("progress 100%"), "{out}");
}

/// A fill in a temp whose command sets the sticky bit on its output (as
/// `rsync -a src/ "$SAFECACHE_OUT"` does when `src` has it) is published
/// committed: it is served, and gc never takes it for a dead in-place
/// fill. So are directories `init` adopts.
#[test]
fn a_sticky_output_or_adopted_dir_is_a_committed_entry() {
    let sb = sandbox();
    let out =
        sb.run(["run", "--key", "k", "--", "sh", "-c", "echo x > \"$SAFECACHE_OUT/f\"; chmod 1700 \"$SAFECACHE_OUT\""]);
    out.assert_code(0);
    sb.run(["path", "k"]).assert_code(0);
    sb.run(["gc"]).assert_code(0);
    assert_eq!(std::fs::read_to_string(sb.cache.join("k/f")).expect("k survives gc"), "x\n");

    let adopted = sb.path("adopted");
    std::fs::create_dir_all(adopted.join("shared")).expect("dir");
    std::fs::write(adopted.join("shared/f"), "y").expect("file");
    let sticky = std::process::Command::new("chmod").arg("1777").arg(adopted.join("shared")).status();
    assert!(sticky.is_ok_and(|s| s.success()));
    sb.run([std::ffi::OsStr::new("init"), adopted.as_os_str()]).assert_code(0);
    let mut at = sb.cmd(["path", "shared"]);
    at.env("SAFECACHE_DIR", &adopted);
    crate::support::Out::of(&mut at).assert_code(0);
    let mut gc = sb.cmd(["gc"]);
    gc.env("SAFECACHE_DIR", &adopted);
    crate::support::Out::of(&mut gc).assert_code(0);
    assert!(adopted.join("shared/f").is_file(), "gc keeps the adopted directory");
}
