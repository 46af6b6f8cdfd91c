//! `verify`: a damaged entry is found, named and quarantined whole (exit
//! 65), `--repair` removes it so `run --key` fills it again, a pinned entry
//! is never moved, and `--verify-on-read` treats a corrupt entry as absent.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Out, Sandbox, mkfifo, names};

/// Fills `key` with `f` ("one") and `d/g` ("two").
fn fill(sb: &Sandbox, key: &str) -> PathBuf {
    let script = r#"echo one > "$SAFECACHE_OUT/f"; mkdir "$SAFECACHE_OUT/d"; echo two > "$SAFECACHE_OUT/d/g""#;
    let out = sb.run(["run", "--key", key, "--", "sh", "-c", script]);
    out.assert_code(0);
    PathBuf::from(out.last_stdout_line())
}

fn quarantine(sb: &Sandbox) -> PathBuf {
    sb.cache.join(".safecache/quarantine")
}

fn json_lines(out: &Out) -> Vec<Value> {
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// A flipped byte, an added file, a deleted file and an edited manifest,
/// one per key: one `verify` names each, quarantines each whole, exits 65,
/// and `run --key` then fills the key again.
#[test]
fn damage_is_named_and_quarantined_and_run_fills_again() {
    let sb = Sandbox::new();
    let flip = fill(&sb, "dep/flip");
    let add = fill(&sb, "dep/add");
    let del = fill(&sb, "dep/del");
    fill(&sb, "dep/manifest");
    fill(&sb, "dep/sound");
    std::fs::write(flip.join("f"), "onf\n").unwrap();
    std::fs::write(add.join("d/extra"), "x").unwrap();
    std::fs::remove_file(del.join("d/g")).unwrap();
    let manifests = sb.cache.join(".safecache/manifests");
    let edited = names(&manifests)
        .into_iter()
        .map(|n| manifests.join(n))
        .find(|m| std::fs::read_to_string(m).unwrap().contains("\"key\":\"dep/manifest\""))
        .expect("a manifest for dep/manifest");
    let text = std::fs::read_to_string(&edited).unwrap().replacen("\"size\":4", "\"size\":5", 1);
    std::fs::write(&edited, text).unwrap();

    let out = sb.run(["verify"]);
    out.assert_error(65, "4 entries are corrupt");
    for expected in [
        "`dep/flip` is corrupt, quarantined",
        "`f`: content differs",
        "`d/extra` was added (a file)",
        "`d/g` is missing",
        "fails its own hash",
        "Verified 5 entries: 1 good, 4 corrupt, 0 unverified",
    ] {
        assert!(out.stderr.contains(expected), "{expected:?} not in\n{out}");
    }
    // Each corrupt entry sits whole in quarantine, as found.
    let items = names(&quarantine(&sb));
    assert_eq!(items.len(), 4);
    let kept: Vec<String> =
        items.iter().filter_map(|i| std::fs::read_to_string(quarantine(&sb).join(i).join("entry/f")).ok()).collect();
    assert!(kept.contains(&"onf\n".to_owned()), "{kept:?}");
    sb.run(["path", "dep/flip"]).assert_code(1);
    sb.run(["path", "dep/sound"]).assert_code(0);

    let refilled = fill(&sb, "dep/flip");
    assert_eq!(std::fs::read_to_string(refilled.join("f")).unwrap(), "one\n");
    sb.run(["verify"]).assert_code(0);
}

/// `--repair` keeps nothing; the JSON says what was found; the next `run
/// --key` runs its fill again.
#[test]
fn repair_removes_and_the_next_run_refills() {
    let sb = Sandbox::new();
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("d/g"), "tw").unwrap();
    std::fs::remove_file(
        sb.cache.join(".safecache/manifests").join(names(&sb.cache.join(".safecache/manifests")).first().unwrap()),
    )
    .ok();
    // No manifest: unverified, not corrupt, and untouched.
    let out = sb.run(["verify", "k"]);
    out.assert_code(0);
    assert!(out.stderr.contains("Unverified `k`"), "{out}");
    assert!(entry.join("d/g").exists());

    sb.run(["rm", "k"]).assert_code(0);
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("d/g"), "tw").unwrap();
    let out = sb.run(["--message-format", "json", "verify", "--repair", "k", "absent/key"]);
    out.assert_code(65);
    let lines = json_lines(&out);
    let k = lines.iter().find(|l| l["reason"] == "verified" && l["key"] == "k").expect("a line for k");
    assert_eq!(k["state"], "corrupt");
    assert_eq!(k["action"], "removed");
    assert!(k["differences"][0].as_str().unwrap().contains("`d/g`: size 4 is now 2 bytes"), "{k}");
    assert!(lines.iter().any(|l| l["key"] == "absent/key" && l["state"] == "absent"));
    let summary = lines.iter().find(|l| l["reason"] == "verify-summary").expect("a summary");
    assert_eq!(
        (summary["checked"].as_u64(), summary["good"].as_u64(), summary["corrupt"].as_u64()),
        (Some(1), Some(0), Some(1))
    );
    assert!(lines.iter().any(|l| l["reason"] == "error" && l["exit_code"] == 65));
    assert!(!entry.exists());
    assert!(!quarantine(&sb).exists(), "repair keeps nothing");

    let log = sb.path("fills");
    let script = format!("echo ran >> '{}'; echo one > \"$SAFECACHE_OUT/f\"", log.display());
    sb.run(["run", "--key", "k", "--", "sh", "-c", &script]).assert_code(0);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ran\n", "the fill ran again");
    sb.run(["verify", "k"]).assert_code(0);
}

/// While `run --pin` uses a corrupt entry, `verify` reports it and leaves it
/// in place; once the pin is gone, it quarantines it. A `rm` that comes
/// meanwhile waits, and nothing is lost or half deleted.
#[test]
fn a_pinned_entry_is_reported_but_never_moved() {
    let sb = Sandbox::new();
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("f"), "ONE\n").unwrap();
    let gate = sb.path("gate");
    mkfifo(&gate);
    let script = format!("echo using; read x < '{}'; cat \"$SAFECACHE_ENTRY/f\"", gate.display());
    let mut user = sb.spawn(["run", "--key", "k", "--fill", "false", "--", "sh", "-c", &script]);
    user.expect_stdout("using");
    let out = sb.run(["--lock-timeout", "0.3", "verify"]);
    out.assert_code(65);
    assert!(out.stderr.contains("left in place"), "{out}");
    assert_eq!(std::fs::read_to_string(entry.join("f")).unwrap(), "ONE\n");
    std::fs::write(&gate, "go\n").unwrap();
    let (status, lines) = user.finish();
    assert!(status.success(), "{lines:?}");
    assert!(crate::support::stdout_of(&lines).contains(&"ONE"), "CMD read its entry whole: {lines:?}");
    sb.run(["verify"]).assert_code(65);
    assert!(!entry.exists());
    assert_eq!(names(&quarantine(&sb)).len(), 1);
}

/// `--verify-on-read` (or its variable): a corrupt entry reads as absent
/// and is quarantined, so `run --key` fills it again.
#[test]
fn verify_on_read_treats_a_corrupt_entry_as_absent() {
    let sb = Sandbox::new();
    let entry = fill(&sb, "k");
    std::fs::write(entry.join("f"), "ONE\n").unwrap();
    sb.run(["path", "k"]).assert_code(0);
    let out = Out::of(sb.cmd(["path", "k"]).env("SAFECACHE_VERIFY_ON_READ", "1"));
    out.assert_code(1);
    assert_eq!(names(&quarantine(&sb)).len(), 1);
    fill(&sb, "k");
    let read = ["run", "--key", "k", "--fill", "false", "--", "sh", "-c", "cat \"$SAFECACHE_ENTRY/f\""];
    let out = sb.run([&["--verify-on-read"][..], &read].concat());
    out.assert_code(0);
    assert_eq!(out.last_stdout_line(), "one");
    // Damaged again: `run --key --fill` under the variable fills it afresh.
    std::fs::write(sb.cache.join("k/f"), "ONE\n").unwrap();
    let fill = r#"echo fresh > "$SAFECACHE_OUT/f""#;
    let out = Out::of(
        sb.cmd(["run", "--key", "k", "--fill", fill, "--", "sh", "-c", "cat \"$SAFECACHE_ENTRY/f\""])
            .env("SAFECACHE_VERIFY_ON_READ", "1"),
    );
    out.assert_code(0);
    assert_eq!(out.last_stdout_line(), "fresh");
    assert_eq!(names(&quarantine(&sb)).len(), 2);
    assert!(Path::new(&sb.cache).join("k").exists());
}
