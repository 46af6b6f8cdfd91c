//! A fill's output, kept while it runs (issue 16, item 5): a bounded log in
//! the cache's metadata, its latest line readable by waiters, removed when
//! the fill ends, and reclaimed by gc after a killed filler.

use std::os::unix::fs::symlink;

use safecache::Wait;

use crate::support::{Child, key, names, new_cache};

fn logs(cache: &safecache::Cache) -> Vec<String> {
    names(&cache.path().join(".safecache/fills"))
}

#[test]
fn a_waiter_reads_the_fillers_latest_line_and_the_log_goes_with_the_fill() {
    let (_tmp, cache) = new_cache();
    for outcome in ["publish", "fail"] {
        let k = key(&format!("dep-{outcome}"));
        let mut filler = Child::spawn(cache.path(), &format!("fill-log {k} {outcome}"));
        filler.expect("logged");
        assert_eq!(cache.fill_log_tail(&k).as_deref(), Some("progress 50%"), "the latest state of a progress bar");
        let [log] = logs(&cache).try_into().unwrap();
        let kept = std::fs::read_to_string(cache.path().join(".safecache/fills").join(log)).unwrap();
        assert!(kept.len() as u64 <= safecache::LOG_MAX, "{} bytes kept", kept.len());
        assert!(!kept.contains("line 0 "), "the oldest output is dropped");
        assert!(kept.contains("line 1999 of the fill's output"), "the newest is kept");
        filler.send();
        let end = filler.event();
        assert!(end.starts_with(if outcome == "fail" { "error" } else { "filled=true" }), "{end}");
        filler.wait();
        assert!(logs(&cache).is_empty(), "the log is removed when the fill ends ({outcome})");
        assert_eq!(cache.fill_log_tail(&k), None);
    }
}

#[test]
fn a_killed_fillers_log_is_reclaimed_by_gc_once_its_entry_lock_is_free() {
    let (_tmp, cache) = new_cache();
    let k = key("dep");
    let mut filler = Child::spawn(cache.path(), "fill-log dep publish");
    filler.expect("logged");
    // Alive: gc leaves it.
    assert_eq!(cache.gc(Wait::NoWait).unwrap().logs, 0);
    assert_eq!(logs(&cache).len(), 1);
    filler.kill();
    assert_eq!(cache.gc(Wait::NoWait).unwrap().logs, 1);
    assert!(logs(&cache).is_empty());
    assert_eq!(cache.fill_log_tail(&k), None);
}

/// The log is read as untrusted: a symlink is not followed, an oversized
/// file is not read, and what is shown is escaped for a terminal.
#[test]
fn a_hostile_log_is_never_followed_and_always_escaped() {
    let (tmp, cache) = new_cache();
    let k = key("dep");
    let mut seen = Vec::new();
    cache
        .get_or_fill(&k, Wait::NoWait, |dir| {
            use std::io::Write;
            let mut log = dir.log();
            write!(log, "ok\n\x1b[2Jevil\u{202e}txt.exe\n\n  ")?;
            seen.push(cache.fill_log_tail(&k));
            let fills = cache.path().join(".safecache/fills");
            let log_path = fills.join(&logs(&cache)[0]);
            std::fs::write(tmp.path().join("secret"), "secret line\n")?;
            std::fs::remove_file(&log_path)?;
            symlink(tmp.path().join("secret"), &log_path)?;
            seen.push(cache.fill_log_tail(&k));
            std::fs::remove_file(&log_path)?;
            std::fs::write(&log_path, "x\n".repeat(64 * 1024))?;
            seen.push(cache.fill_log_tail(&k));
            std::io::Result::Ok(())
        })
        .unwrap();
    let shown = seen[0].clone().unwrap();
    assert!(!shown.contains('\x1b') && !shown.contains('\u{202e}'), "{shown:?}");
    assert!(shown.contains("evil"), "{shown:?}");
    assert_eq!(seen[1], None, "a symlinked log is not followed");
    assert_eq!(seen[2], None, "an oversized log is not read");
    assert!(logs(&cache).is_empty());
}
