//! `run --key K --fill FILL -- CMD`: fill K if it is absent, then use it
//! pinned. The quickstart's old pattern, `cat "$(cargo safecache path K)/f"`,
//! broke 4 times in 81 under a concurrent `rm`.

use crate::support::{Sandbox, make_repo};

/// A git dependency filled once and used pinned: the second run does not
/// clone again, and a `rm` that comes while CMD runs waits for it.
#[test]
fn fill_then_use_a_git_checkout_pinned() {
    let sb = Sandbox::new();
    let origin = sb.path("origin");
    let head = make_repo(&origin);
    let fill = format!(
        "echo cloned >> '{}'; git clone -q '{}' \"$SAFECACHE_OUT/repo\"",
        sb.path("clones").display(),
        origin.display()
    );
    let use_it = ["sh", "-c", "git -C \"$SAFECACHE_ENTRY/repo\" rev-parse HEAD"];
    for _ in 0..2 {
        let mut args = vec!["use", "--key", "git/dep", "--fill", &fill, "--"];
        args.extend(use_it);
        let out = sb.run(&args);
        out.assert_code(0);
        assert_eq!(out.last_stdout_line(), head);
    }
    assert_eq!(std::fs::read_to_string(sb.path("clones")).expect("clone log"), "cloned\n", "cloned once");

    // While CMD uses the entry, `rm` waits (and with no wait, is refused).
    let gate = sb.path("gate");
    crate::support::mkfifo(&gate);
    let script = format!("echo using; read x < '{}'; test -d \"$SAFECACHE_ENTRY/repo/.git\"", gate.display());
    let mut user = sb.spawn(["use", "--key", "git/dep", "--fill", "false", "--", "sh", "-c", &script]);
    user.expect_stdout("using");
    sb.run(["--lock-timeout", "0", "rm", "git/dep"]).assert_code(75);
    std::fs::write(&gate, "go\n").expect("open the gate");
    let (status, lines) = user.finish();
    assert!(status.success(), "{lines:?}");
    sb.run(["--lock-timeout", "0", "rm", "git/dep"]).assert_code(0);
}

/// A failed FILL passes its status through and CMD does not run; `--pin` of
/// an absent key has its own exit code.
#[test]
fn a_failed_fill_skips_the_command_and_absent_pins_exit_1() {
    let sb = Sandbox::new();
    let marker = sb.path("ran");
    let use_it = format!("touch '{}'", marker.display());
    let out = sb.run(["use", "--key", "k", "--fill", "exit 9", "--", "sh", "-c", &use_it]);
    out.assert_code(9);
    assert!(!marker.exists(), "CMD ran without its entry");
    let out = sb.run(["use", "--key", "k", "--", "true"]);
    out.assert_one_line_error(1, "--fill");
}
