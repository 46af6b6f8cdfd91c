//! No command waits for a lock that its own ancestor holds: a nested
//! command that needs a lock the `run` above it keeps until the nested
//! command ends fails at once, naming that ancestor and the lock, instead of
//! waiting out its timeout (or forever, on a terminal).
//!
//! Each nested command gets `--lock-timeout 60`: before the fix it waited
//! that long and then failed with a timeout, which the test rejects by its
//! message and by the time taken.

use std::time::{Duration, Instant};

use crate::support::Sandbox;

/// Runs `outer` (a `run` whose CMD is `sh -c NESTED`, with `$SC` the
/// binary under test), where NESTED saves its stderr to `$T/err` and its exit code to
/// `$T/code`; returns the nested command's code and error, and the outer
/// run's pid.
fn nested(sb: &Sandbox, outer: &[&str], nested: &str) -> (i32, String, u32) {
    let script = format!(r#"{nested} 2> "$T/err"; echo $? > "$T/code""#);
    let mut args: Vec<&str> = outer.to_vec();
    args.extend(["--", "sh", "-c", &script]);
    let started = Instant::now();
    let mut cmd = sb.cmd(&args);
    cmd.env("SC", crate::support::bin());
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the outer run");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the outer run");
    let took = started.elapsed();
    let code = std::fs::read_to_string(sb.path("code")).expect("the nested command ran");
    let err = std::fs::read_to_string(sb.path("err")).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "the outer run: {}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_secs(30), "the nested `{nested}` waited {took:?}: {err}");
    (code.trim().parse().expect("a code"), err, pid)
}

#[track_caller]
fn assert_refused(what: &str, (code, err, pid): (i32, String, u32), lock: &str) {
    assert_eq!(code, 75, "{what}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: a one-line error: {err}");
    assert!(lines[0].starts_with("error: "), "{what}: {err}");
    assert!(lines[0].contains(&format!("held by this process's own ancestor, pid {pid} ")), "{what}: {err}");
    assert!(lines[0].contains(lock), "{what}: names the lock: {err}");
}

/// `run --key k -- safecache rm k`: the fill holds the entry lock.
#[test]
fn rm_of_the_key_being_filled_by_an_ancestor_fails_at_once() {
    let sb = Sandbox::new();
    let got = nested(&sb, &["run", "--key", "k", "--allow-empty"], r#""$SC" rm --lock-timeout 60 k"#);
    assert_refused("rm", got, "entry `k`");
}

/// `use --key k -- safecache rm k`: the pin holds the entry lock shared.
#[test]
fn rm_of_a_key_an_ancestor_pins_fails_at_once() {
    let sb = Sandbox::new();
    sb.fill("k", "x");
    let got = nested(&sb, &["use", "--key", "k"], r#""$SC" rm --lock-timeout 60 k"#);
    assert_refused("rm", got, "entry `k`");
    sb.run(["path", "k"]).assert_code(0);
}

/// A fill that runs `run --key k` of its own key.
#[test]
fn a_fill_of_its_own_key_fails_at_once() {
    let sb = Sandbox::new();
    let got = nested(
        &sb,
        &["run", "--key", "k", "--allow-empty"],
        r#""$SC" run --lock-timeout 60 --key k --allow-empty -- true"#,
    );
    assert_refused("run --key", got, "entry `k`");
}

/// `clean` under a `run` that holds the lease shared: with the lease
/// exported, and with the exported variables removed (`env -u`), when only
/// the holder record and the process tree tell.
#[test]
fn clean_under_a_run_fails_at_once() {
    let sb = Sandbox::new();
    let got = nested(&sb, &["run"], r#""$SC" clean --lock-timeout 60"#);
    assert_refused("clean", got, "cache lease");
    let sb = Sandbox::new();
    let got = nested(
        &sb,
        &["run"],
        r#"env -u SAFECACHE_LEASE -u SAFECACHE_LEASE_DIR -u SAFECACHE_RUN_PIDS "$SC" clean --lock-timeout 60"#,
    );
    assert_refused("clean without the exported lease", got, "cache lease");
}

/// What only tries a lock, without waiting, is not refused: `gc` (with the
/// exported lease or without it) under a filling `run` skips what that run
/// holds and exits 0.
#[test]
fn gc_under_a_run_skips_what_its_ancestor_holds() {
    let sb = Sandbox::new();
    let (code, err, _) = nested(&sb, &["run", "--key", "k", "--allow-empty"], r#""$SC" gc"#);
    assert_eq!(code, 0, "{err}");
    let sb = Sandbox::new();
    let (code, err, _) = nested(
        &sb,
        &["run", "--key", "k", "--allow-empty"],
        r#"env -u SAFECACHE_LEASE -u SAFECACHE_LEASE_DIR -u SAFECACHE_RUN_PIDS "$SC" gc"#,
    );
    assert_eq!(code, 0, "{err}");
}
