//! The durability level on the command line: `--durability`,
//! `SAFECACHE_DURABILITY`, `init --durability` and `config`, and what each
//! level syncs, counted with strace on a real fill.

use std::process::Command;

use crate::support::{Out, Sandbox, bin};

fn run(sb: &Sandbox, args: &[&str]) -> Out {
    Out::of(sb.cmd(args).env_remove("SAFECACHE_DURABILITY"))
}

#[test]
fn init_stores_the_level_and_config_shows_and_changes_it() {
    let sb = Sandbox::new();
    run(&sb, &["config"]).assert_code(0);
    assert_eq!(run(&sb, &["config", "durability"]).stdout, "durability = full (default)\n");
    run(&sb, &["init", "--durability", "none"]).assert_code(0);
    assert_eq!(run(&sb, &["config", "durability"]).stdout, "durability = none\n");
    let set = run(&sb, &["config", "durability", "full"]);
    set.assert_code(0);
    assert!(set.stderr.contains("Configured durability full"), "{}", set.stderr);
    let json = run(&sb, &["--message-format", "json", "config"]);
    assert!(json.stdout.contains(r#""durability":"full","durability_stored":true"#), "{}", json.stdout);
    run(&sb, &["config", "durability", "fast"])
        .assert_one_line_error(2, "unknown durability `fast`; one of: none, full");
    let bad_env = Out::of(sb.cmd(["ls"]).env("SAFECACHE_DURABILITY", "fast"));
    bad_env.assert_one_line_error(2, "unknown durability `fast`");
}

#[test]
fn a_garbage_config_fails_every_command_until_config_repairs_it() {
    let sb = Sandbox::new();
    run(&sb, &["init"]).assert_code(0);
    let file = sb.cache.join(".safecache/config.json");
    std::fs::write(&file, "durability=none").unwrap();
    run(&sb, &["ls"]).assert_one_line_error(101, ".safecache/config.json");
    run(&sb, &["config"]).assert_one_line_error(101, "config durability full");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "durability=none", "nothing changed");
    run(&sb, &["config", "durability", "none"]).assert_code(0);
    run(&sb, &["ls"]).assert_code(0);
    assert_eq!(run(&sb, &["config", "durability"]).stdout, "durability = none\n");
}

/// Counts the fsync calls of one fill of `key` at the level the options
/// give, or `None` where strace cannot run.
fn fsyncs_of_a_fill(sb: &Sandbox, key: &str, level: &[&str]) -> Option<usize> {
    let log = sb.path(&format!("strace-{key}"));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range", "-o"]).arg(&log).arg(bin());
    let script = "echo x > \"$SAFECACHE_OUT/f\"; mkdir \"$SAFECACHE_OUT/d\"; echo y > \"$SAFECACHE_OUT/d/g\"";
    cmd.args(level).args(["run", "--key", key, "--", "sh", "-c", script]);
    let base = sb.cmd(["ls"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env_remove("SAFECACHE_DURABILITY");
    match cmd.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "strace cannot trace here ({}); not counting fsyncs",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("strace is not available ({e}); not counting fsyncs");
            return None;
        }
    }
    // A call that another thread's call interrupts in the log is written
    // twice, `fsync(3 <unfinished ...>` and `<... fsync resumed>) = 0`: it
    // is counted once, where it starts.
    let log = std::fs::read_to_string(&log).unwrap();
    Some(log.lines().filter(|l| l.contains("sync") && !l.contains(" resumed>")).count())
}

#[test]
fn full_syncs_every_file_and_directory_of_a_fill_and_none_syncs_nothing() {
    let sb = Sandbox::new();
    run(&sb, &["init"]).assert_code(0);
    let Some(full) = fsyncs_of_a_fill(&sb, "a", &[]) else { return };
    // f, d/g, d, out, and the root after the rename.
    assert!(full >= 5, "a fill at `full` made {full} fsync calls");
    assert_eq!(fsyncs_of_a_fill(&sb, "b", &["--durability", "none"]), Some(0));
    run(&sb, &["config", "durability", "none"]).assert_code(0);
    assert_eq!(fsyncs_of_a_fill(&sb, "c", &[]), Some(0), "the stored level");
    assert_eq!(fsyncs_of_a_fill(&sb, "d", &["--durability", "full"]), Some(full), "the option overrides it");
}
