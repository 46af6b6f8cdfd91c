//! Holders show the real CMD: the command after `--`, quoted as a shell
//! would, with its argv as an array in JSON, and each process once.

use serde_json::Value;

use crate::support::{Sandbox, mkfifo};

#[test]
fn holders_show_the_command_after_the_separator() {
    let sb = Sandbox::new();
    let gate = sb.path("gate");
    mkfifo(&gate);
    let script = format!("echo ready; read x < \"{}\"; : > \"$SAFECACHE_OUT/f\"", gate.display());
    let mut filler = sb.spawn(["run", "--key", "k", "--", "sh", "-c", &script]);
    filler.expect_stderr_line("ready");
    let shown = format!("sh -c '{script}'");

    let out = sb.run(["status"]);
    out.assert_code(0);
    let lease_lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains("the cache lease")).collect();
    assert_eq!(lease_lines.len(), 1, "one process, one lease line:\n{out}");
    assert!(out.stdout.contains("(`sh -c 'echo ready; read x < "), "the real CMD, quoted:\n{out}");

    let out = sb.run(["--message-format", "json", "status"]);
    let holders: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "holder")
        .collect();
    assert!(!holders.is_empty(), "{out}");
    for h in &holders {
        assert_eq!(h["argv"], serde_json::json!(["sh", "-c", script]), "{h}");
        assert_eq!(h["command"], shown.as_str(), "{h}");
    }

    // A waiter names the filler by its CMD too, once.
    let waiter = sb.run(["--lock-timeout", "0", "run", "--key", "k", "--allow-empty", "--", "true"]);
    waiter.assert_code(75);
    assert!(waiter.stderr.contains("(`sh -c 'echo ready;"), "{waiter}");
    assert!(!waiter.stderr.contains("other process"), "the filler counted twice: {waiter}");
    std::fs::write(&gate, "go\n").expect("open the gate");
    assert!(filler.finish().0.success());
}
