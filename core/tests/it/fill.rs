//! Single-flight fills across processes and threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use safecache::{Cache, Error, Options, Wait};

use crate::support::{Child, key, names, new_cache};

/// Seeds 002 (Crafter.Build #2) and 000 (uv #5051): many builds fill the
/// same dependency at once. Exactly one fill runs; everyone gets its bytes.
#[test]
fn n_processes_fill_one_key_once() {
    let (tmp, cache) = new_cache();
    let log = tmp.path().join("fills.log");
    let mut children: Vec<Child> = (0..8)
        .map(|i| Child::spawn(cache.path(), &format!("fill dep/serde content-of-filler-{i} {}", log.display())))
        .collect();
    for child in &mut children {
        child.send();
    }
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for mut child in children {
        // A loser may first report that it is blocked, naming the filler
        // (even in the instant between the filler's lock and its holder
        // record: the waiter waits for the record before it reports).
        let mut event = child.event();
        while let Some(holders) = event.strip_prefix("waiting entry `dep/serde` holders=") {
            assert!(holders.parse::<u32>().is_ok(), "the filler is named: {event}");
            event = child.event();
        }
        assert!(event.starts_with("filled="), "{event}");
        let (filled, data) = event.split_once(' ').unwrap();
        if filled == "filled=true" {
            winners.push(data.to_owned());
        }
        seen.push(data.to_owned());
        assert!(child.wait().success());
    }
    let fills = std::fs::read_to_string(&log).unwrap();
    assert_eq!(fills.lines().count(), 1, "more than one fill ran: {fills}");
    assert_eq!(winners.len(), 1, "exactly one process reports that it filled");
    assert!(seen.iter().all(|d| *d == winners[0]), "all processes read the winner's entry: {seen:?}");
    assert!(names(&cache.path().join(".safecache/tmp")).is_empty(), "no temp is left behind");
}

/// Seed 004 (uv #544): the same archive unzipped twice in flight by one
/// process. Threads sharing one `Cache` share one fill.
#[test]
fn threads_of_one_process_share_one_fill() {
    let (_tmp, cache) = new_cache();
    let fills = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (cache, fills, barrier) = (cache.clone(), Arc::clone(&fills), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let filled = cache
                    .get_or_fill(&key("wheels/numpy"), Wait::Forever, |dir| {
                        fills.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50)); // the unzip
                        std::fs::write(dir.path().join("data"), "unzipped")
                    })
                    .unwrap();
                std::fs::read_to_string(filled.entry.path().join("data")).unwrap()
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), "unzipped");
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1);
}

/// Separate handles in one process lock separate open file descriptions,
/// which flock treats as separate holders: still one fill.
#[test]
fn threads_with_separate_handles_share_one_fill() {
    let (_tmp, cache) = new_cache();
    let path = cache.path().to_owned();
    let fills = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (path, fills, barrier) = (path.clone(), Arc::clone(&fills), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let cache = Cache::open_ambient(&path, Options::default()).unwrap();
                barrier.wait();
                cache
                    .get_or_fill(&key("k"), Wait::Forever, |dir| {
                        fills.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        std::fs::write(dir.path().join("data"), "x")
                    })
                    .unwrap();
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(fills.load(Ordering::SeqCst), 1);
}

#[test]
fn failing_fill_publishes_nothing_and_removes_its_temp() {
    let (_tmp, cache) = new_cache();
    let err = cache
        .get_or_fill(&key("k"), Wait::NoWait, |dir| {
            std::fs::write(dir.path().join("half"), "written before the failure")?;
            Err(std::io::Error::other("download failed"))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Fill { .. }), "{err:?}");
    assert_eq!(err.to_string(), "fill of `k` failed; nothing was published");
    assert!(cache.get(&key("k")).unwrap().is_none());
    assert!(names(&cache.path().join(".safecache/tmp")).is_empty());
    // The key is fillable again. (Not `NoWait`: a process another test
    // spawns holds a copy of every descriptor, and so of the entry lock's
    // flock, until it execs.)
    let filled = cache.get_or_fill(&key("k"), released(), |dir| std::fs::write(dir.path().join("d"), "ok")).unwrap();
    assert!(filled.filled);
}

#[test]
fn panicking_fill_publishes_nothing_and_removes_its_temp() {
    let (_tmp, cache) = new_cache();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = cache.get_or_fill(&key("k"), Wait::NoWait, |dir| -> std::io::Result<()> {
            std::fs::write(dir.path().join("half"), "x").unwrap();
            panic!("the filler crashed");
        });
    }));
    assert!(result.is_err());
    assert!(cache.get(&key("k")).unwrap().is_none());
    assert!(names(&cache.path().join(".safecache/tmp")).is_empty());
    let filled = cache.get_or_fill(&key("k"), released(), |dir| std::fs::write(dir.path().join("d"), "ok")).unwrap();
    assert!(filled.filled, "the in-process flight was released by the panic");
}

/// The wait for a lock this process released: bounded, for the moment a
/// child another test is spawning holds a copy of its descriptor (between
/// the fork and the exec), and fails if the lock is still held after it.
fn released() -> Wait {
    Wait::Timeout(std::time::Duration::from_secs(10))
}

#[test]
fn fill_gets_a_private_empty_dir_inside_the_cache() {
    let (_tmp, cache) = new_cache();
    let mut seen = Vec::new();
    for name in ["a", "b"] {
        cache
            .get_or_fill(&key(name), Wait::NoWait, |dir| {
                assert!(dir.path().starts_with(cache.path()), "temps live on the cache's filesystem");
                assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
                seen.push(dir.path().to_owned());
                std::fs::write(dir.path().join("d"), name)
            })
            .unwrap();
    }
    assert_ne!(seen[0], seen[1]);
    let filled = cache.get_or_fill(&key("a"), Wait::NoWait, |_| -> std::io::Result<()> { panic!("refilled") }).unwrap();
    assert!(!filled.filled, "a published key is not filled again");
    assert_eq!(std::fs::read_to_string(filled.entry.path().join("d")).unwrap(), "a");
}

/// An in-place fill writes at the entry's final path; until it commits, the
/// entry reads as absent, and a panicking or failing fill removes it.
#[test]
fn an_in_place_fill_is_absent_until_committed() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, cache) = new_cache();
    let k = key("venv");
    let final_path = cache.entry_path(&k);
    let filled = cache
        .get_or_fill_in_place(&k, Wait::NoWait, |dir| {
            assert_eq!(dir.path(), final_path, "the fill writes at the final path");
            assert!(cache.get(&k).unwrap().is_none(), "absent while being built");
            assert!(cache.entries().unwrap().is_empty(), "not listed while being built");
            std::fs::write(dir.path().join("f"), "x")
        })
        .unwrap();
    assert!(filled.filled);
    assert_eq!(filled.entry.path(), final_path);
    assert_eq!(cache.get(&k).unwrap().unwrap().path(), final_path);
    let mode = std::fs::symlink_metadata(&final_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o1000, 0, "committed: the mark is gone");

    let failed = cache.get_or_fill_in_place(&key("bad"), Wait::NoWait, |dir| {
        std::fs::write(dir.path().join("f"), "half")?;
        Err(std::io::Error::other("tool failed"))
    });
    assert!(matches!(failed, Err(Error::Fill { .. })), "{failed:?}");
    assert!(!cache.entry_path(&key("bad")).exists(), "a failed in-place fill leaves nothing");
}

/// What a killed in-place fill leaves, a directory still marked at the
/// entry's name, is never served; gc removes it once its entry lock is
/// free, and so does the next fill of the key, in either mode.
#[test]
fn an_uncommitted_leftover_is_absent_and_reclaimed() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, cache) = new_cache();
    let leave = |name: &str| {
        let dir = cache.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("half"), "x").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1700)).unwrap();
    };
    leave("a");
    leave("b");
    leave("c");
    assert!(cache.get(&key("a")).unwrap().is_none());
    assert!(cache.pin(&key("a"), Wait::NoWait).unwrap().is_none());
    assert!(cache.entries().unwrap().is_empty());
    let status = cache.status().unwrap();
    assert_eq!(status.items.iter().filter(|i| !i.live).count(), 3, "{:?}", status.items);

    let filled = cache.get_or_fill(&key("b"), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "b")).unwrap();
    assert!(filled.filled);
    let filled =
        cache.get_or_fill_in_place(&key("c"), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "c")).unwrap();
    assert!(filled.filled);
    for k in ["b", "c"] {
        assert_eq!(names(&cache.path().join(k)), ["f"], "the leftover's files are gone");
    }
    let report = cache.gc(Wait::NoWait).unwrap();
    assert_eq!(report.uncommitted, 1, "{report:?}");
    assert!(!cache.path().join("a").exists());
    assert!(names(&cache.path().join(".safecache/trash")).is_empty());
}

/// Issue 16: "pin, else fill, then pin" by N processes on a failing fill.
/// Every waiter blocks on the pin while the first process fills; when that
/// fill fails, they all fail the same way and the fill runs exactly once
/// (with a pin then a separate fill, each waiter ran it again in turn).
#[test]
fn waiters_of_a_failing_pin_or_fill_share_its_failure() {
    let (tmp, cache) = new_cache();
    let log = tmp.path().join("fills.log");
    let role = format!("pin-or-fill-fail k {}", log.display());
    let mut filler = Child::spawn(cache.path(), &role);
    filler.send();
    filler.expect("filling");
    let mut waiters: Vec<Child> = (0..6).map(|_| Child::spawn(cache.path(), &role)).collect();
    for waiter in &mut waiters {
        waiter.send();
        // Blocked on the pin's shared lock, behind the filler.
        assert_eq!(waiter.expect("waiting "), format!("waiting entry `k` holders={}", filler.pid()));
    }
    filler.send();
    assert!(filler.expect("failed ").contains("fill of `k` failed"));
    for mut waiter in waiters {
        // It may wait again, for the exclusive lock behind another waiter.
        let mut event = waiter.event();
        while event.starts_with("waiting ") {
            event = waiter.event();
        }
        assert_eq!(event, format!("peer-failed pid={} code=Some(7)", filler.pid()), "a waiter ran the fill again");
        assert!(waiter.wait().success());
    }
    assert!(filler.wait().success());
    let fills = std::fs::read_to_string(&log).unwrap();
    assert_eq!(fills.lines().count(), 1, "the failing fill ran more than once: {fills}");
    assert!(cache.get(&key("k")).unwrap().is_none());
    // A later call is no waiter of that fill: it fills, and pins the result.
    let pinned = cache
        .pin_or_fill(&key("k"), safecache::PinOrFill::default(), |dir| std::fs::write(dir.path().join("d"), "ok"))
        .unwrap();
    assert!(pinned.filled);
    assert!(cache.remove(&key("k"), Wait::NoWait).is_err(), "the entry is pinned");
    drop(pinned);
    let pinned = cache
        .pin_or_fill(&key("k"), safecache::PinOrFill::default(), |_| -> std::io::Result<()> { panic!("filled again") });
    assert!(!pinned.unwrap().filled);
}

/// Issue 16: "for an instant, a process that has not identified itself".
/// Processes that start a fill of one key at the same moment, round after
/// round (a new key each round): every wait event of a loser names the
/// filler, however soon after the filler's lock it looks. (The same eight
/// processes play every round: spawning hundreds from this test binary
/// would hold other tests' lock descriptors in forked children.)
#[test]
fn waiters_never_see_an_unidentified_filler() {
    let (_tmp, cache) = new_cache();
    let rounds = 40;
    let mut children: Vec<Child> =
        (0..8).map(|_| Child::spawn(cache.path(), &format!("fill-rounds {rounds}"))).collect();
    let mut events = 0;
    for round in 0..rounds {
        for child in &mut children {
            child.send();
        }
        for child in &mut children {
            let mut event = child.event();
            while event.starts_with("waiting ") {
                events += 1;
                let holders = event.rsplit_once("holders=").map(|(_, h)| h).unwrap_or_default();
                assert!(!holders.is_empty(), "round {round}: a waiter saw no holder: {event}");
                event = child.event();
            }
            assert!(event.starts_with("filled="), "{event}");
        }
    }
    for child in children {
        assert!(child.wait().success());
    }
    assert!(events > 0, "no process ever waited");
}

/// A fill's locks are named by the fill's command (Options::fill_command),
/// in holder records and in the wait events of its waiters.
#[test]
fn a_fill_is_named_by_its_fill_command() {
    let (_tmp, cache) = new_cache();
    let mut filler = Child::spawn(cache.path(), "fill-named k my-fill");
    filler.expect("filling");
    let status = cache.status().unwrap();
    let entry = status.holders.iter().find(|h| h.lock == safecache::LockName::Entry("k".into())).unwrap();
    assert_eq!(entry.pid, filler.pid());
    assert_eq!(entry.argv, ["my-fill", "--from-fill"], "{entry:?}");
    assert_eq!(entry.command, "my-fill --from-fill");
    let err = cache.remove(&key("k"), Wait::NoWait).unwrap_err();
    assert!(err.to_string().contains("`my-fill --from-fill`"), "{err}");
    filler.send();
    assert_eq!(filler.expect("filled="), "filled=true");
    assert!(filler.wait().success());
}
