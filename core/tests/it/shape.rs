//! The leased handle and the one liveness rule: code that holds the lease
//! passes it on, and gc, clean and status judge leftovers alike.

use std::fs;

use safecache::{ErrorKind, LockMode, LockName, Wait};

use crate::support::{key, names, new_cache, publish};

/// Everything done through one `Leased` shows one lease holder for this
/// process: pins and fills never take the lease a second time.
#[test]
fn a_leased_handle_never_takes_the_lease_again() {
    let (_dir, cache) = new_cache();
    publish(&cache, "a", "1");
    let leased = cache.lease(LockMode::Shared, Wait::NoWait).unwrap();
    let pin = leased.pin(&key("a"), Wait::NoWait).unwrap().unwrap();
    leased.get_or_fill(&key("b"), Wait::NoWait, |d| fs::write(d.path().join("x"), "y")).unwrap();
    let holders = cache.status().unwrap().holders;
    let leases = holders.iter().filter(|h| h.lock == LockName::Lease && h.pid == std::process::id()).count();
    assert_eq!(leases, 1, "{holders:#?}");
    // The pin keeps the lease even once the handle is gone.
    drop(leased);
    let err = cache.clean(Wait::NoWait).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    drop(pin);
    assert_eq!(cache.clean(Wait::NoWait).unwrap().entries, 2);
}

/// `clean` needs the exclusive lease; through a shared handle it refuses
/// rather than deadlocking on its own lease.
#[test]
fn clean_through_a_shared_handle_is_a_lease_conflict() {
    let (_dir, cache) = new_cache();
    let leased = cache.lease(LockMode::Shared, Wait::NoWait).unwrap();
    assert_eq!(leased.clean(Wait::NoWait).unwrap_err().kind(), ErrorKind::LeaseConflict);
    let exclusive = {
        drop(leased);
        cache.lease(LockMode::Exclusive, Wait::NoWait).unwrap()
    };
    assert!(exclusive.is_own());
    assert_eq!(exclusive.mode(), LockMode::Exclusive);
}

/// A name in `tmp/` or `trash/` without a digest was never made by
/// safecache: status calls it an orphan, and gc and clean both reclaim it.
#[test]
fn a_digestless_leftover_is_judged_alike_by_status_gc_and_clean() {
    for reclaim in ["gc", "clean"] {
        let (dir, cache) = new_cache();
        let marker = dir.path().join("cache/.safecache");
        fs::create_dir(marker.join("tmp/junk")).unwrap();
        fs::write(marker.join("tmp/junk/file"), "x").unwrap();
        fs::write(marker.join("trash/junk"), "y").unwrap();
        let status = cache.status().unwrap();
        assert_eq!(status.items.len(), 2);
        assert!(status.items.iter().all(|i| !i.live), "status calls both orphans: {:?}", status.items);
        match reclaim {
            "gc" => {
                let report = cache.gc(Wait::NoWait).unwrap();
                assert_eq!((report.temps, report.trash, report.failures.len()), (1, 1, 0), "{report:?}");
            }
            _ => {
                assert!(cache.clean(Wait::NoWait).unwrap().failures.is_empty());
                let report = cache.reclaim(false).unwrap();
                assert_eq!(report.failures.len(), 0, "{report:?}");
            }
        }
        assert!(names(&marker.join("tmp")).is_empty() && names(&marker.join("trash")).is_empty(), "{reclaim}");
    }
}

/// A live fill's temp is live to all three.
#[test]
fn a_live_temp_is_live_to_status_and_gc() {
    let (dir, cache) = new_cache();
    let tmp = dir.path().join("cache/.safecache/tmp");
    cache
        .get_or_fill(&key("k"), Wait::NoWait, |_| {
            let status = cache.status().unwrap();
            assert_eq!(status.items.len(), 1);
            assert!(status.items[0].live);
            let report = cache.gc(Wait::NoWait).unwrap();
            assert_eq!((report.temps, report.busy), (0, 1));
            assert_eq!(names(&tmp).len(), 1);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
}
