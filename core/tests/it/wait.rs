//! Waits wake when the kernel grants the lock, not at the next poll: a
//! timed wait (every wait off a terminal is, 300 s by default) blocks in
//! flock(2), through the writer-intent gate too, and a wait that gives up
//! never leaves a lock held.
//!
//! "Blocked in flock" is read from the kernel itself: /proc/locks lists a
//! request that waits in flock(2) as `-> FLOCK ... <pid>`. A waiter that
//! polls (tries, sleeps, tries again) never appears there.

use std::time::{Duration, Instant};

use safecache::Wait;

use crate::support::{Child, key, new_cache};

/// The waits given to waiters: 300 s, the CLI's default off a terminal.
const LONG: &str = "300000";

/// The pids with a flock request blocked in the kernel, from /proc/locks;
/// `None` where /proc/locks cannot be read.
fn blocked_pids() -> Option<Vec<u32>> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    Some(
        locks
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                match fields.as_slice() {
                    [_, "->", "FLOCK", _, _, pid, ..] => pid.parse().ok(),
                    _ => None,
                }
            })
            .collect(),
    )
}

/// The pids with a *shared* flock request blocked in the kernel
/// (`-> FLOCK ADVISORY READ`), from /proc/locks.
fn blocked_shared_pids() -> Vec<u32> {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [_, "->", "FLOCK", _, "READ", pid, ..] => pid.parse().ok(),
            _ => None,
        })
        .collect()
}

/// Waits until every one of `pids` has a request blocked in flock(2).
/// Returns false (after printing why) where the kernel does not say.
fn until_blocked_in_kernel(pids: &[u32]) -> bool {
    let start = Instant::now();
    loop {
        let Some(blocked) = blocked_pids() else {
            eprintln!("skipped: /proc/locks cannot be read here");
            return false;
        };
        let missing: Vec<&u32> = pids.iter().filter(|p| !blocked.contains(p)).collect();
        if missing.is_empty() {
            return true;
        }
        // A waiter that polls never shows up: give it far more time than
        // a helper thread needs to enter flock(2).
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "waiters {missing:?} are not blocked in flock(2) (polling instead?); /proc/locks lists {blocked:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_timed_waiter_blocks_in_flock_and_is_handed_the_lock_at_release() {
    let (dir, cache) = new_cache();
    let mut holder = Child::spawn(cache.path(), "fill-named a holder");
    holder.expect("filling");
    let mut waiter = Child::spawn(cache.path(), &format!("fill-wait a {LONG}"));
    waiter.expect("waiting");
    if !until_blocked_in_kernel(&[waiter.pid()]) {
        return;
    }
    holder.send();
    holder.expect("filled=true");
    // The kernel wakes the blocked request: the waiter finds the entry.
    waiter.expect("filled=false");
    assert!(holder.wait().success());
    assert!(waiter.wait().success());
    drop(dir);
}

#[test]
fn waiters_behind_the_gate_block_in_flock_too() {
    let (dir, cache) = new_cache();
    let mut holder = Child::spawn(cache.path(), "fill-named a holder");
    holder.expect("filling");
    // The first exclusive waiter queues at the gate and waits for the
    // entry lock; the second waits for the gate; a reader defers to them
    // at the gate.
    let mut first = Child::spawn(cache.path(), &format!("fill-wait a {LONG}"));
    first.expect("waiting");
    if !until_blocked_in_kernel(&[first.pid()]) {
        return;
    }
    let mut second = Child::spawn(cache.path(), &format!("fill-wait a {LONG}"));
    second.expect("waiting");
    let mut reader = Child::spawn(cache.path(), &format!("pin-wait a {LONG}"));
    reader.expect("waiting");
    if !until_blocked_in_kernel(&[first.pid(), second.pid(), reader.pid()]) {
        return;
    }
    holder.send();
    holder.expect("filled=true");
    first.expect("filled=false");
    second.expect("filled=false");
    reader.expect("pinned=true");
    for child in [holder, first, second, reader] {
        assert!(child.wait().success());
    }
    drop(dir);
}

#[test]
fn a_wait_that_gives_up_leaves_no_lock_held() {
    let (dir, cache) = new_cache();
    let mut holder = Child::spawn(cache.path(), "fill-named a holder");
    holder.expect("filling");
    // This waiter gives up after 200 ms and stays alive: its wait for the
    // lock may still be blocked in flock when the holder lets go, and
    // must then let go too.
    let mut waiter = Child::spawn(cache.path(), "fill-wait a 200");
    waiter.expect("waiting");
    let gave_up = waiter.expect("error");
    assert!(gave_up.starts_with("error busy=true"), "{gave_up}");
    holder.send();
    holder.expect("filled=true");
    // While the waiter lives on, the entry lock is free for anyone: a
    // remove takes it exclusively.
    let removed = cache.remove(&key("a"), Wait::Timeout(Duration::from_secs(60)));
    assert_eq!(removed.map_err(|e| e.to_string()), Ok(true));
    // And the waiter's process can lock it again itself.
    let mut again = Child::spawn(cache.path(), &format!("fill-wait a {LONG}"));
    again.expect("filled=true");
    for child in [holder, waiter, again] {
        assert!(child.wait().success());
    }
    drop(dir);
}

/// The waiters of a fill under way wait as readers, shared, so that they
/// all wake at once when it ends, instead of taking the entry lock
/// exclusively one after another; each then finds the entry and none of
/// them fills it again.
#[test]
fn the_waiters_of_a_fill_wait_shared_and_all_find_its_entry() {
    let (dir, cache) = new_cache();
    let mut holder = Child::spawn(cache.path(), "fill-named a holder");
    holder.expect("filling");
    let mut waiters: Vec<Child> = (0..3).map(|_| Child::spawn(cache.path(), &format!("fill-wait a {LONG}"))).collect();
    for w in &mut waiters {
        w.expect("waiting");
    }
    let pids: Vec<u32> = waiters.iter().map(Child::pid).collect();
    if !until_blocked_in_kernel(&pids) {
        return;
    }
    let shared = blocked_shared_pids();
    assert!(pids.iter().all(|p| shared.contains(p)), "every waiter of the fill blocks shared: {pids:?}, {shared:?}");
    holder.send();
    holder.expect("filled=true");
    for w in &mut waiters {
        w.expect("filled=false");
    }
    assert!(holder.wait().success());
    for w in waiters {
        assert!(w.wait().success());
    }
    assert!(cache.get(&key("a")).unwrap().is_some());
    drop(dir);
}
