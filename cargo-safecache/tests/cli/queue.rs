//! Waiters are not starved: readers that keep coming queue behind a waiting
//! `clean` or `rm` instead of overtaking it forever.

use std::process::Command;

use crate::support::{Bg, Sandbox, bin};

/// Starts `n` shell loops that run `run ARGS -- sh -c 'echo up; sleep 0.3'`
/// back to back until the file `stop` exists, and returns once each has
/// printed `up` at least once (so readers hold the lock from then on).
fn reader_loops(sb: &Sandbox, n: usize, args: &str) -> Vec<Bg> {
    let stop = sb.path("stop");
    let mut loops = Vec::new();
    for _ in 0..n {
        let script = format!(
            "while [ ! -e '{}' ]; do '{}' --cache-dir '{}' --lock-timeout never {args} -- sh -c 'echo up; sleep 0.3' || exit 9; done",
            stop.display(),
            bin(),
            sb.cache.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]).env("CARGO_TERM_COLOR", "never").env_remove("SAFECACHE_LEASE");
        loops.push(Bg::spawn(cmd));
    }
    for l in &mut loops {
        l.expect_stdout("up");
    }
    loops
}

fn stop(sb: &Sandbox, loops: Vec<Bg>) {
    std::fs::write(sb.path("stop"), "").expect("create stop file");
    for l in loops {
        let (status, seen) = l.finish();
        assert!(status.success(), "a reader loop failed: {status}; {seen:?}");
    }
}

/// Three loops of `run -- sleep 0.3` made `clean --lock-timeout 10` time out:
/// a waiting exclusive locker polled while shared lockers kept overtaking it.
#[test]
fn clean_is_not_starved_by_a_stream_of_readers() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let loops = reader_loops(&sb, 3, "run");
    let out = sb.run(["--lock-timeout", "10", "clean"]);
    stop(&sb, loops);
    out.assert_code(0);
}

/// `rm` waited 27 s behind pinned readers; now it queues and they wait for it.
#[test]
fn rm_is_not_starved_by_a_stream_of_pins() {
    let sb = Sandbox::new();
    sb.fill("k", "v");
    let loops = reader_loops(&sb, 3, "use --key k");
    let out = sb.run(["--lock-timeout", "10", "rm", "k"]);
    std::fs::write(sb.path("stop"), "").expect("create stop file");
    out.assert_code(0);
    // Once `k` is gone the pins fail (exit 9 from the loop): that is expected.
    for l in loops {
        let _ = l.finish();
    }
}
