//! Entries that jobs change one at a time (issue 16, item 2): `modify`
//! holds the exclusive entry lock, marks the entry as changing durably,
//! and seals it with a new manifest.

use safecache::{Error, LockName, VerifyState, Wait};

use crate::support::{Child, key, names, new_cache, publish};

fn state_of(cache: &safecache::Cache, name: &str) -> VerifyState {
    let report = cache.verify(Some(&[key(name)]), false, Wait::NoWait).unwrap();
    report.entries.into_iter().next().unwrap().state
}

/// A sealed change verifies good against the new content; the marker is
/// gone, and an absent key is no change.
#[test]
fn a_sealed_change_verifies_good() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "target", "v1");
    assert!(cache.modify(&key("absent"), Wait::NoWait).unwrap().is_none());
    let change = cache.modify(&key("target"), Wait::NoWait).unwrap().unwrap();
    assert!(change.interrupted().is_none());
    assert!(cache.changing(&key("target")).is_some(), "marked before the change begins");
    std::fs::write(change.entry().path().join("data"), "v2").unwrap();
    std::fs::write(change.entry().path().join("new"), "added").unwrap();
    // Mid-change, nobody else takes the entry lock in any mode.
    assert!(matches!(cache.pin(&key("target"), Wait::NoWait), Err(Error::Busy { .. })));
    change.seal().unwrap();
    assert!(cache.changing(&key("target")).is_none());
    assert_eq!(state_of(&cache, "target"), VerifyState::Good);
    let pin = cache.pin(&key("target"), Wait::NoWait).unwrap().unwrap();
    assert_eq!(std::fs::read_to_string(pin.entry().path().join("data")).unwrap(), "v2");
}

/// Without the seal, verify used to find the entry corrupt (the manifest
/// describes the content before the change) and quarantine it: now it is
/// reported as changed, never moved, kept by gc, and sealed by the next
/// change.
#[test]
fn an_unsealed_change_is_reported_changed_and_kept() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "target", "v1");
    let change = cache.modify(&key("target"), Wait::NoWait).unwrap().unwrap();
    std::fs::write(change.entry().path().join("data"), "half of v2").unwrap();
    drop(change);
    let state = state_of(&cache, "target");
    let VerifyState::Unverified { reason } = &state else { panic!("{state:?}") };
    assert!(reason.contains("never sealed"), "{reason}");
    let repaired = cache.verify(None, true, Wait::NoWait).unwrap();
    assert_eq!(repaired.corrupt(), 0);
    assert!(cache.get(&key("target")).unwrap().is_some(), "verify --repair leaves it");
    cache.gc(Wait::NoWait).unwrap();
    assert!(cache.get(&key("target")).unwrap().is_some(), "gc keeps it");
    assert!(cache.changing(&key("target")).is_some(), "gc keeps its marker");
    let verified =
        safecache::Cache::open_ambient(cache.path(), safecache::Options { verify_on_read: true, ..Default::default() })
            .unwrap();
    assert!(matches!(verified.get(&key("target")), Err(Error::Unverifiable { .. })));

    let change = cache.modify(&key("target"), Wait::NoWait).unwrap().unwrap();
    assert!(change.interrupted().is_some(), "the next change is told");
    std::fs::write(change.entry().path().join("data"), "v2").unwrap();
    change.seal().unwrap();
    assert_eq!(state_of(&cache, "target"), VerifyState::Good);

    // A remove takes the marker with the entry.
    drop(cache.modify(&key("target"), Wait::NoWait).unwrap().unwrap());
    assert!(cache.remove(&key("target"), Wait::NoWait).unwrap());
    assert!(cache.changing(&key("target")).is_none());
    assert!(names(&cache.path().join(".safecache/changing")).is_empty());
}

/// Changes queue one behind another, and pins wait for a change, across
/// real processes; a holder killed mid-change leaves the entry
/// interrupted, which the next change sees and seals.
#[test]
fn changes_and_pins_wait_for_a_change_and_a_killed_change_is_interrupted() {
    let (_tmp, cache) = new_cache();
    publish(&cache, "target", "v1");
    let mut first = Child::spawn(cache.path(), "modify target");
    first.send();
    assert_eq!(first.expect("modifying"), "modifying interrupted=false");
    let mut second = Child::spawn(cache.path(), "modify target");
    second.send();
    assert_eq!(second.expect("waiting "), format!("waiting entry `target` holders={}", first.pid()));
    // A pin may not wait: it finds the change (or the second changer
    // queued behind it) in its way. The second says "waiting" just before
    // it queues, so its gate may be taken and its record not yet written:
    // a pin that may not wait then names nobody, but it is still refused.
    let err = cache.pin(&key("target"), Wait::NoWait).unwrap_err();
    let Error::Busy { lock, holders, .. } = &err else { panic!("{err:?}") };
    let by_first = *lock == LockName::Entry("target".into()) && holders.iter().any(|h| h.pid == first.pid());
    let queued = matches!(lock, LockName::Queue(_)) && holders.iter().all(|h| h.pid == second.pid());
    assert!(by_first || queued, "{err}");
    first.send();
    assert_eq!(first.expect("sealed"), "sealed");
    assert!(first.wait().success());
    assert_eq!(second.expect("modifying"), "modifying interrupted=false");
    // Killed mid-change: the entry stays, marked.
    second.kill();
    assert!(cache.get(&key("target")).unwrap().is_some());
    let state = state_of(&cache, "target");
    assert!(matches!(&state, VerifyState::Unverified { reason } if reason.contains("never sealed")), "{state:?}");
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!(report.temps, 0, "{report:?}");
    assert!(cache.get(&key("target")).unwrap().is_some());
    let mut third = Child::spawn(cache.path(), "modify target");
    third.send();
    assert_eq!(third.expect("modifying"), "modifying interrupted=true");
    third.send();
    assert_eq!(third.expect("sealed"), "sealed");
    assert!(third.wait().success());
    assert_eq!(state_of(&cache, "target"), VerifyState::Good);
}
