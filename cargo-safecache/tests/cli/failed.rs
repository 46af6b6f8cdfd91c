//! A failed fill is shared with the processes that waited for it: they fail
//! the same way, naming who failed, instead of running the fill again one
//! after another.

use crate::support::{Bg, Line, Sandbox, mkfifo};

/// A fill CMD that counts its runs, blocks until the test writes to `gate`,
/// then exits with `code`.
fn gated_fill(sb: &Sandbox, code: i32) -> Vec<String> {
    let script =
        format!("echo ran >> '{}'; read x < '{}'; exit {code}", sb.path("runs").display(), sb.path("gate").display());
    ["run", "--key", "k", "--", "sh", "-c", &script].map(str::to_owned).to_vec()
}

fn runs(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.path("runs")).map_or(0, |s| s.lines().count())
}

/// Starts the first fill of `k` and, once it is filling, the others, and
/// returns once each of those is blocked on it.
fn start_waiting(sb: &Sandbox, args: &[Vec<String>]) -> Vec<Bg> {
    let mut procs = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let mut p = sb.spawn(a);
        p.expect_stderr(if i == 0 { "Filling" } else { "Blocking" });
        procs.push(p);
    }
    procs
}

/// Eight processes wait on one fill that exits 7: it ran eight times in a
/// row (4.2 s). Now it runs once, and all eight exit 7; the waiters say who
/// failed.
#[test]
fn waiters_of_a_failed_fill_fail_the_same_way() {
    let sb = Sandbox::new();
    mkfifo(&sb.path("gate"));
    let procs = start_waiting(&sb, &vec![gated_fill(&sb, 7); 8]);
    std::fs::write(sb.path("gate"), "go\n").expect("open the gate");
    let mut told = 0;
    for p in procs {
        let (status, lines) = p.finish();
        assert_eq!(status.code(), Some(7), "{lines:?}");
        told += usize::from(
            lines.iter().any(|l| matches!(l, Line::Stderr(s) if s.contains("that this run waited for failed: pid "))),
        );
    }
    assert_eq!(runs(&sb), 1, "the failing fill ran more than once");
    assert_eq!(told, 7, "every waiter names the failed fill");
    assert!(!sb.cache.join("k").exists());
    // A run that starts after the failure tries again itself.
    sb.run(["run", "--key", "k", "--", "sh", "-c", "echo ok > \"$SAFECACHE_OUT/f\""]).assert_code(0);
}

/// `--retry-failed`: a waiter runs the fill itself when the one it waited
/// for fails.
#[test]
fn retry_failed_runs_the_fill_again() {
    let sb = Sandbox::new();
    mkfifo(&sb.path("gate"));
    let retry = ["run", "--key", "k", "--retry-failed", "--", "sh", "-c", "echo retried > \"$SAFECACHE_OUT/f\""];
    let procs = start_waiting(&sb, &[gated_fill(&sb, 7), retry.map(str::to_owned).to_vec()]);
    std::fs::write(sb.path("gate"), "go\n").expect("open the gate");
    let codes: Vec<_> = procs.into_iter().map(|p| p.finish().0.code()).collect();
    assert_eq!(codes, [Some(7), Some(0)]);
    assert_eq!(std::fs::read_to_string(sb.cache.join("k/f")).expect("published"), "retried\n");
}

/// A CMD that writes nothing (a forgotten `sh -c`) is a failed fill, shared
/// like any other: a run waiting for it fails the same way instead of
/// publishing the empty output or running it again (`verbs.rs` covers the
/// lone run and --allow-empty).
#[test]
fn an_empty_fill_fails_its_waiters_too() {
    let sb = Sandbox::new();
    mkfifo(&sb.path("gate"));
    let empty = ["run", "--key", "k", "--", "sh", "-c", "read x < \"$T/gate\""];
    let waiter = ["run", "--key", "k", "--", "sh", "-c", "echo x > \"$SAFECACHE_OUT/f\""];
    let procs = start_waiting(&sb, &[empty.map(str::to_owned).to_vec(), waiter.map(str::to_owned).to_vec()]);
    std::fs::write(sb.path("gate"), "go\n").expect("open the gate");
    let codes: Vec<_> = procs.into_iter().map(|p| p.finish().0.code()).collect();
    assert_eq!(codes, [Some(101), Some(101)]);
    sb.run(["path", "k"]).assert_code(1);
}
