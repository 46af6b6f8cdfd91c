//! Cancellation is not failure: a fill ended by SIGINT, SIGTERM or SIGHUP,
//! sent to `run` (which passes it on) or raised by CMD on itself, publishes
//! nothing and records no failure, and the run that waited for it fills the
//! key itself, as after a SIGKILL. Only a CMD that exits non-zero by itself
//! fails its waiters (tests/cli/failed.rs).

use crate::support::{Bg, Line, Sandbox, mkfifo, names, stdout_of};

/// The second fill of `k`, which must run once the first is cancelled.
const SECOND: &str = r#"echo second > "$SAFECACHE_OUT/f""#;

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Starts a fill of `k` running `script`, which says `filling` (on stderr,
/// where a fill's output goes)
/// once it runs, and then a second run of `k` that blocks on it.
fn filling_and_waiting(sb: &Sandbox, script: &str) -> (Bg, Bg) {
    let mut first = sb.spawn(["run", "--key", "k", "--", "sh", "-c", script]);
    first.expect_stderr_line("filling");
    let mut waiter = sb.spawn(["run", "--key", "k", "--", "sh", "-c", SECOND]);
    waiter.expect_stderr("Blocking");
    (first, waiter)
}

/// The cancelled fill exited 128+`sig` and said it was cancelled; the
/// waiter filled `k` itself and exited 0; no failure record is left.
#[track_caller]
fn assert_taken_over(sb: &Sandbox, first: Bg, waiter: Bg, sig: i32) {
    let (status, lines) = first.finish_keeping_stdin();
    assert_eq!(status.code(), Some(128 + sig), "{lines:?}");
    assert!(
        lines.iter().any(|l| matches!(l, Line::Stderr(s) if s.contains("the fill was cancelled by SIG"))),
        "the cancelled run says so: {lines:?}"
    );
    let (status, lines) = waiter.finish();
    assert_eq!(status.code(), Some(0), "the waiter fills the key itself: {lines:?}");
    let path = stdout_of(&lines).last().map(|s| s.to_string()).unwrap_or_default();
    assert_eq!(std::fs::read_to_string(format!("{path}/f")).ok().as_deref(), Some("second\n"), "{lines:?}");
    assert!(names(&sb.cache.join(".safecache/failed")).is_empty(), "no failure record is left");
}

/// SIGTERM, SIGINT or SIGHUP sent to a filling `run`: the run waiting for
/// it used to fail with the same 128+N, and the key stayed unfilled.
#[test]
fn a_fill_cancelled_by_a_signal_to_run_is_taken_over_by_its_waiter() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let sb = Sandbox::new();
        mkfifo(&sb.path("never"));
        let (first, waiter) =
            filling_and_waiting(&sb, r#"echo first > "$SAFECACHE_OUT/f"; echo filling; read x < "$T/never""#);
        kill(first.pid(), sig);
        assert_taken_over(&sb, first, waiter, sig);
    }
}

/// A CMD that kills itself with SIGTERM (`kill -TERM $$`), with no signal
/// sent to `run`, is cancelled too.
#[test]
fn a_fill_that_terminates_itself_is_taken_over_by_its_waiter() {
    let sb = Sandbox::new();
    mkfifo(&sb.path("gate"));
    let (first, waiter) = filling_and_waiting(
        &sb,
        r#"echo first > "$SAFECACHE_OUT/f"; echo filling; read x < "$T/gate"; kill -TERM $$; exit 3"#,
    );
    std::fs::write(sb.path("gate"), "go\n").expect("open the gate");
    assert_taken_over(&sb, first, waiter, libc::SIGTERM);
}

/// A CMD that catches the SIGTERM `run` passes on and exits 1 is cancelled,
/// not failed: the signal came from outside.
#[test]
fn a_fill_that_exits_on_a_forwarded_signal_is_cancelled() {
    let sb = Sandbox::new();
    mkfifo(&sb.path("never"));
    let (first, waiter) = filling_and_waiting(
        &sb,
        r#"trap "exit 1" TERM; echo first > "$SAFECACHE_OUT/f"; sleep 1000 & echo filling; wait"#,
    );
    kill(first.pid(), libc::SIGTERM);
    let (status, lines) = first.finish_keeping_stdin();
    assert_eq!(status.code(), Some(1), "{lines:?}");
    let (status, lines) = waiter.finish();
    assert_eq!(status.code(), Some(0), "the waiter fills the key itself: {lines:?}");
    assert!(names(&sb.cache.join(".safecache/failed")).is_empty(), "no failure record is left");
}
