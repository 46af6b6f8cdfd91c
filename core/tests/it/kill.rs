//! Fillers killed with SIGKILL mid-fill.

use safecache::{ItemKind, Wait};

use crate::support::{Child, key, names, new_cache};

#[test]
fn killed_filler_leaves_an_orphan_that_gc_reclaims() {
    let (_tmp, cache) = new_cache();
    let tmp_dir = cache.path().join(".safecache/tmp");
    let mut filler = Child::spawn(cache.path(), "fill-hang dep");
    let out = filler.expect("filling ");
    assert!(std::path::Path::new(out.trim_start_matches("filling ")).join("partial").exists());

    // While the filler lives, its temp is not an orphan: gc leaves it alone.
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!((report.temps, report.busy), (0, 1), "{report:?}");
    assert_eq!(names(&tmp_dir).len(), 1);
    let status = cache.status().unwrap();
    assert!(status.items.iter().all(|i| i.kind == ItemKind::Temp && i.live), "{:?}", status.items);
    assert!(status.holders.iter().any(|h| h.pid == filler.pid()), "{:?}", status.holders);

    filler.kill();

    // Half an entry is never visible, and the holder is no longer listed.
    assert!(cache.get(&key("dep")).unwrap().is_none());
    let status = cache.status().unwrap();
    assert!(status.items.iter().all(|i| !i.live), "{:?}", status.items);
    assert!(status.holders.is_empty(), "dead holders are not listed: {:?}", status.holders);

    // The next fill succeeds...
    let filled =
        cache.get_or_fill(&key("dep"), Wait::NoWait, |dir| std::fs::write(dir.path().join("data"), "whole")).unwrap();
    assert!(filled.filled);
    // ...and gc reclaims the orphan, and only it.
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!((report.temps, report.trash, report.busy), (1, 0, 0), "{report:?}");
    assert!(report.records >= 1, "the dead filler's holder records are reaped: {report:?}");
    assert!(names(&tmp_dir).is_empty());
    assert_eq!(std::fs::read_to_string(filled.entry.path().join("data")).unwrap(), "whole");
}

#[test]
fn a_waiting_filler_is_told_who_fills_and_takes_over_when_it_dies() {
    let (tmp, cache) = new_cache();
    let log = tmp.path().join("fills.log");
    let mut first = Child::spawn(cache.path(), "fill-hang dep");
    first.expect("filling ");
    let mut second = Child::spawn(cache.path(), &format!("fill dep second {}", log.display()));
    second.send();
    let waiting = second.expect("waiting ");
    assert_eq!(waiting, format!("waiting entry `dep` holders={}", first.pid()));
    first.kill();
    assert_eq!(second.expect("filled="), "filled=true data=second");
    assert!(second.wait().success());
}
