//! Pins and leases keep entries in use safe from remove, clean and gc.

use std::time::Duration;

use safecache::{Error, LockName, Wait};

use crate::support::{Child, key, new_cache, publish};

#[test]
fn remove_of_a_pinned_entry_waits_or_fails_fast_naming_the_holder() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    let mut pinner = Child::spawn(cache.path(), "pin dep");
    pinner.expect("pinned");

    let err = cache.remove(&key("dep"), Wait::NoWait).unwrap_err();
    let Error::Busy { lock, holders, waited, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*lock, LockName::Entry("dep".into()));
    assert_eq!(*waited, None);
    assert_eq!(holders.iter().map(|h| h.pid).collect::<Vec<_>>(), vec![pinner.pid()]);
    assert!(err.to_string().contains(&format!("pid {}", pinner.pid())), "{err}");

    let err = cache.remove(&key("dep"), Wait::Timeout(Duration::from_millis(100))).unwrap_err();
    assert!(
        err.to_string().starts_with("timed out after 100ms waiting for the exclusive lock on entry `dep`"),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("pid {}", pinner.pid())), "{err}");
    assert!(cache.get(&key("dep")).unwrap().is_some(), "a failed remove leaves the entry");

    // A remove that may wait blocks until the pin goes away.
    let mut remover = Child::spawn(cache.path(), "remove dep forever");
    assert_eq!(remover.expect("waiting "), format!("waiting entry `dep` holders={}", pinner.pid()));
    assert!(cache.get(&key("dep")).unwrap().is_some());
    pinner.release();
    assert_eq!(remover.expect("removed="), "removed=true");
    assert!(remover.wait().success());
    assert!(cache.get(&key("dep")).unwrap().is_none());
}

#[test]
fn gc_leaves_pinned_entries_and_clean_waits_for_them() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    let mut pinner = Child::spawn(cache.path(), "pin dep");
    pinner.expect("pinned");
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!((report.temps, report.trash), (0, 0));
    assert!(cache.get(&key("dep")).unwrap().is_some());
    let err = cache.clean(Wait::NoWait).unwrap_err();
    assert!(matches!(&err, Error::Busy { lock: LockName::Lease, .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("pid {}", pinner.pid())), "{err}");
    assert!(cache.get(&key("dep")).unwrap().is_some());
    pinner.release();
    assert!(pinner.wait().success());
    assert_eq!(cache.clean(Wait::NoWait).unwrap().entries, 1);
}

/// Seed 001 (pip-tools #2393, the race left open by #2384): a `--rebuild`
/// must not rename the cache out from under a process using it. `clean`
/// waits for every lease holder.
#[test]
fn clean_waits_for_processes_using_the_cache() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    let mut user = Child::spawn(cache.path(), "lease shared");
    user.expect("leased");
    let mut cleaner = Child::spawn(cache.path(), "clean forever");
    assert_eq!(cleaner.expect("waiting "), format!("waiting the cache lease holders={}", user.pid()));
    assert!(cache.get(&key("dep")).unwrap().is_some(), "nothing is removed from under the user");
    user.release();
    assert_eq!(cleaner.expect("cleaned="), "cleaned=1");
    assert!(cleaner.wait().success());
    assert!(cache.get(&key("dep")).unwrap().is_none());
}

/// Under `cargo safecache run --exclusive`, the command's own children share
/// the parent's lease; a `clean` among them must still wait for a sibling's
/// pin rather than delete the entry from under it.
#[test]
fn clean_under_an_inherited_exclusive_lease_still_respects_pins() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "dep", "v1");
    publish(&cache, "other", "v1");
    let mut pinner = Child::spawn(cache.path(), "pin dep");
    pinner.expect("pinned");
    let nested = safecache::Cache::open_ambient(
        cache.path(),
        safecache::Options { inherited_lease: Some(safecache::LockMode::Exclusive), ..Default::default() },
    )
    .unwrap();
    let err = nested.clean(Wait::NoWait).unwrap_err();
    assert!(matches!(&err, Error::Busy { lock: LockName::Entry(k), .. } if k == "dep"), "{err:?}");
    assert!(err.to_string().contains(&format!("pid {}", pinner.pid())), "{err}");
    assert!(cache.get(&key("dep")).unwrap().is_some());
    pinner.release();
    assert!(pinner.wait().success());
    assert_eq!(nested.clean(Wait::NoWait).unwrap().entries, 2);
}
