//! Manifests and `verify`: every kind of damage to a published entry is
//! found and named, a corrupt entry is set aside whole (or removed with
//! repair) and filled again, and nothing is moved while another process
//! pins it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use safecache::{Action, Cache, Error, Key, Options, VerifyReport, VerifyState, Wait};

use crate::support::{Child, key, new_cache};

/// Publishes `name` with `a` ("hello"), `d/b` ("world") and a symlink.
fn publish(cache: &Cache, name: &str) -> PathBuf {
    cache
        .get_or_fill(&key(name), Wait::NoWait, |dir| {
            std::fs::write(dir.path().join("a"), "hello")?;
            // Set, not left to the umask, so the chmod case knows the mode.
            std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o644))?;
            std::fs::create_dir(dir.path().join("d"))?;
            std::fs::write(dir.path().join("d/b"), "world")?;
            std::os::unix::fs::symlink("a", dir.path().join("link"))
        })
        .unwrap()
        .entry
        .path()
        .to_owned()
}

fn manifests(cache: &Cache) -> PathBuf {
    cache.path().join(".safecache/manifests")
}

fn quarantine(cache: &Cache) -> PathBuf {
    cache.path().join(".safecache/quarantine")
}

fn state_of<'a>(report: &'a VerifyReport, name: &str) -> &'a VerifyState {
    &report.entries.iter().find(|e| e.key == name).unwrap_or_else(|| panic!("{name} not in {report:?}")).state
}

fn differences(state: &VerifyState) -> String {
    match state {
        VerifyState::Corrupt { differences, .. } => differences.join("\n"),
        other => panic!("expected corrupt, got {other:?}"),
    }
}

/// One damage per key; one `verify` finds all of them, names what differs,
/// quarantines each entry whole, and leaves the sound one alone.
#[test]
fn every_kind_of_damage_is_found_named_and_quarantined_whole() {
    let (_dir, cache) = new_cache();
    type Damage = fn(&Path, &Path);
    let cases: [(&str, Damage, &str); 9] = [
        ("flip", |e, _| std::fs::write(e.join("a"), "hellp").unwrap(), "`a`: content differs"),
        // Changes the entry's top directory's modification time: still
        // tied to its manifest by device and inode, so corrupt.
        ("add-top", |e, _| std::fs::write(e.join("new"), "x").unwrap(), "`new` was added (a file)"),
        ("truncate", |e, _| std::fs::write(e.join("d/b"), "wor").unwrap(), "`d/b`: size 5 is now 3 bytes"),
        ("add", |e, _| std::fs::write(e.join("d/new"), "x").unwrap(), "`d/new` was added (a file)"),
        ("delete", |e, _| std::fs::remove_file(e.join("d/b")).unwrap(), "`d/b` is missing"),
        (
            "chmod",
            |e, _| std::fs::set_permissions(e.join("a"), std::fs::Permissions::from_mode(0o600)).unwrap(),
            "`a`: mode 0644 is now 0600",
        ),
        (
            "symlink",
            |e, _| {
                std::fs::remove_file(e.join("d/b")).unwrap();
                std::os::unix::fs::symlink("/etc/passwd", e.join("d/b")).unwrap();
            },
            "`d/b` was a file and is now a symlink",
        ),
        (
            "retarget",
            |e, _| {
                std::fs::remove_file(e.join("link")).unwrap();
                std::os::unix::fs::symlink("d", e.join("link")).unwrap();
            },
            "`link`: symlink target `a` is now `d`",
        ),
        (
            "manifest",
            |_, m| {
                let text = std::fs::read_to_string(m).unwrap().replacen("\"size\":5", "\"size\":6", 1);
                std::fs::write(m, text).unwrap();
            },
            "fails its own hash",
        ),
    ];
    let mut before = Vec::new();
    for (name, damage, _) in &cases {
        let entry = publish(&cache, name);
        let manifest = manifests(&cache).join(format!("{}.json", digest_of(&cache, name)));
        assert!(manifest.is_file(), "publish wrote a manifest for {name}");
        damage(&entry, &manifest);
        before.push(crate::support::tree(&entry));
    }
    publish(&cache, "sound");

    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!(report.checked(), cases.len() + 1, "{report:?}");
    assert_eq!(report.good(), 1, "{report:?}");
    assert_eq!(report.corrupt(), cases.len(), "{report:?}");
    assert_eq!(state_of(&report, "sound"), &VerifyState::Good);
    for ((name, _, expected), tree) in cases.iter().zip(before) {
        let state = state_of(&report, name);
        assert!(differences(state).contains(expected), "{name}: {state:?}");
        let VerifyState::Corrupt { action: Action::Quarantined { rel }, .. } = state else {
            panic!("{name} was not quarantined: {state:?}")
        };
        assert!(cache.get(&key(name)).unwrap().is_none(), "{name} reads as absent");
        let item = cache.path().join(rel);
        assert_eq!(crate::support::tree(&item.join("entry")), tree, "{name}: the quarantined bytes are kept as found");
        let report = std::fs::read_to_string(item.join("differences.txt")).unwrap();
        assert!(report.contains(expected), "{name}: {report}");
    }
    // A second pass finds only the sound entry.
    let again = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!((again.checked(), again.good(), again.corrupt()), (1, 1, 0), "{again:?}");
}

/// The digest docs/PROTOCOL.md defines: 32 hex digits of BLAKE3 of the
/// stored name.
fn digest_of(_cache: &Cache, name: &str) -> String {
    let stored = Key::new(name).unwrap().stored_name();
    blake3::hash(stored.as_bytes()).to_hex()[..32].to_owned()
}

/// An entry with no manifest (published by an older version), or with a
/// manifest left by an earlier entry of its key, is unverified, not
/// corrupt, and stays where it is.
#[test]
fn entries_without_their_own_manifest_are_unverified_and_kept() {
    let (_dir, cache) = new_cache();
    let old = publish(&cache, "old");
    std::fs::remove_file(manifests(&cache).join(format!("{}.json", digest_of(&cache, "old")))).unwrap();
    // `stale`: removed, then put back by something that writes no
    // manifest (an older safecache), so the manifest is the earlier one's.
    publish(&cache, "stale");
    cache.remove(&key("stale"), Wait::NoWait).unwrap();
    let stale = cache.entry_path(&key("stale"));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("other"), "x").unwrap();

    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!((report.checked(), report.unverified(), report.corrupt()), (2, 2, 0), "{report:?}");
    assert!(old.join("a").is_file() && stale.join("other").is_file());
    assert!(!quarantine(&cache).exists());
}

/// `--repair` removes a corrupt entry (nothing kept), and the next fill
/// fetches it again.
#[test]
fn repair_removes_a_corrupt_entry_and_the_next_fill_refetches_it() {
    let (_dir, cache) = new_cache();
    let entry = publish(&cache, "k");
    std::fs::write(entry.join("a"), "HELLO").unwrap();
    let report = cache.verify(Some(&[key("k")]), true, Wait::NoWait).unwrap();
    assert!(matches!(state_of(&report, "k"), VerifyState::Corrupt { action: Action::Removed, .. }), "{report:?}");
    assert!(!entry.exists());
    assert!(!quarantine(&cache).exists(), "repair keeps nothing");
    assert!(crate::support::names(&cache.path().join(".safecache/trash")).is_empty());
    let filled =
        cache.get_or_fill(&key("k"), Wait::NoWait, |dir| std::fs::write(dir.path().join("a"), "hello")).unwrap();
    assert!(filled.filled, "filled again");
    let report = cache.verify(Some(&[key("k")]), false, Wait::NoWait).unwrap();
    assert_eq!(state_of(&report, "k"), &VerifyState::Good);
}

/// An entry another process pins is never moved: verify reports it corrupt
/// and leaves it; once the pin is gone, it quarantines it.
#[test]
fn a_pinned_corrupt_entry_is_left_in_place_until_the_pin_goes() {
    let (_dir, cache) = new_cache();
    let entry = publish(&cache, "k");
    std::fs::write(entry.join("a"), "HELLO").unwrap();
    let mut pin = Child::spawn(cache.path(), "pin k");
    pin.expect("pinned");
    let report = cache.verify(None, false, Wait::Timeout(Duration::from_millis(300))).unwrap();
    match state_of(&report, "k") {
        VerifyState::Corrupt { action: Action::Kept { reason }, .. } => assert!(reason.contains("lock"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(entry.join("a")).unwrap(), "HELLO", "untouched under the pin");
    pin.release();
    assert!(pin.wait().success());
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert!(matches!(state_of(&report, "k"), VerifyState::Corrupt { action: Action::Quarantined { .. }, .. }));
    assert!(!entry.exists());
}

/// A `verify` and a `remove` of the same keys, in two processes at once:
/// nothing is reported corrupt, nothing is quarantined, and every entry
/// ends removed whole or intact.
#[test]
fn verify_beside_removes_never_calls_a_vanishing_entry_corrupt() {
    let (_dir, cache) = new_cache();
    let names: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for name in &names {
        publish(&cache, name);
    }
    let removers: Vec<Child> =
        names.iter().step_by(2).map(|n| Child::spawn(cache.path(), &format!("remove {n} forever"))).collect();
    let report = cache.verify(None, false, Wait::Forever).unwrap();
    for remover in removers {
        assert!(remover.wait().success());
    }
    assert_eq!(report.corrupt(), 0, "{report:?}");
    assert_eq!(report.failed(), 0, "{report:?}");
    assert!(!quarantine(&cache).exists());
    for (i, name) in names.iter().enumerate() {
        let present = cache.get(&key(name)).unwrap();
        assert_eq!(present.is_some(), i % 2 == 1, "{name}");
    }
    let after = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!((after.checked(), after.good()), (names.len() / 2, names.len() / 2));
}

/// With verify-on-read, a corrupt entry reads as absent (quarantined), so
/// `get_or_fill` fills it again and `pin` pins nothing; a corrupt entry
/// another process pins fails with `Error::Corrupt` instead of being used.
#[test]
fn verify_on_read_sets_a_corrupt_entry_aside_and_fills_it_again() {
    let (dir, plain) = new_cache();
    let options = Options { verify_on_read: true, ..Options::default() };
    let cache = Cache::open_ambient(dir.path().join("cache"), options).unwrap();
    for name in ["g", "p", "busy"] {
        let entry = publish(&plain, name);
        std::fs::write(entry.join("a"), "HELLO").unwrap();
    }
    publish(&plain, "fine");
    assert!(cache.get(&key("fine")).unwrap().is_some());

    let filled = cache.get_or_fill(&key("g"), Wait::NoWait, |d| std::fs::write(d.path().join("a"), "hello")).unwrap();
    assert!(filled.filled, "the corrupt entry was not used");
    assert_eq!(std::fs::read_to_string(filled.entry.path().join("a")).unwrap(), "hello");

    assert!(cache.pin(&key("p"), Wait::NoWait).unwrap().is_none(), "pinned a corrupt entry");
    assert!(plain.get(&key("p")).unwrap().is_none());
    assert_eq!(crate::support::names(&quarantine(&cache)).len(), 2);

    let mut pin = Child::spawn(cache.path(), "pin busy");
    pin.expect("pinned");
    match cache.get(&key("busy")) {
        Err(Error::Corrupt { key, differences }) => {
            assert_eq!(key, "busy");
            assert!(differences.iter().any(|d| d.contains("`a`: content differs")), "{differences:?}");
        }
        other => panic!("expected Error::Corrupt, got {other:?}"),
    }
    pin.release();
    assert!(pin.wait().success());
    assert!(cache.get(&key("busy")).unwrap().is_none(), "quarantined once free");
}

/// Two thousand entries verify correctly in one call (on several threads).
#[test]
fn two_thousand_entries_verify_in_one_call() {
    // On tmpfs where there is one: 2,000 fills cost 2,000 rounds of fsyncs,
    // a minute on a disk, and this test is about verify.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let cache = Cache::open_ambient(dir.path().join("cache"), Options::default()).unwrap();
    let lease = cache.lease(safecache::LockMode::Shared, Wait::NoWait).unwrap();
    for i in 0..2000 {
        lease
            .get_or_fill(&key(&format!("e{i}")), Wait::NoWait, |d| std::fs::write(d.path().join("f"), i.to_string()))
            .unwrap();
    }
    for i in [7, 1234, 1999] {
        std::fs::write(cache.entry_path(&key(&format!("e{i}"))).join("f"), "bad").unwrap();
    }
    let started = std::time::Instant::now();
    let report = lease.verify(None, false, Wait::NoWait).unwrap();
    eprintln!("verified 2,000 entries in {:?}", started.elapsed());
    assert_eq!((report.checked(), report.good(), report.corrupt()), (2000, 1997, 3), "{:?}", report.entries.len());
    let corrupt: Vec<&str> = report
        .entries
        .iter()
        .filter(|e| matches!(e.state, VerifyState::Corrupt { .. }))
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(corrupt, ["e1234", "e1999", "e7"]);
}

/// gc keeps a quarantined entry for inspection for 7 days, then deletes
/// it; when the cache is idle it also deletes the manifests of entries that
/// are gone.
#[test]
fn gc_deletes_week_old_quarantine_and_manifests_of_gone_entries() {
    let (_dir, cache) = new_cache();
    for name in ["old", "new"] {
        let entry = publish(&cache, name);
        std::fs::write(entry.join("a"), "HELLO").unwrap();
    }
    // `rm` deletes the manifest with the entry.
    publish(&cache, "removed");
    cache.remove(&key("removed"), Wait::NoWait).unwrap();
    // A fill killed between writing its manifest and publishing leaves a
    // manifest without an entry; so does an entry deleted behind the
    // cache's back.
    let gone = publish(&cache, "gone");
    std::fs::rename(&gone, _dir.path().join("elsewhere")).unwrap();
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!(report.corrupt(), 2);
    let old = match state_of(&report, "old") {
        VerifyState::Corrupt { action: Action::Quarantined { rel }, .. } => cache.path().join(rel),
        other => panic!("{other:?}"),
    };
    // Quarantined eight days ago, as far as its modification time says.
    let touched = std::process::Command::new("touch").arg("-d").arg("8 days ago").arg(&old).status().unwrap();
    assert!(touched.success());
    assert_eq!(crate::support::names(&manifests(&cache)).len(), 1, "only the manifest of `gone` is left");

    let gc = cache.gc(Wait::NoWait).unwrap();
    assert_eq!(gc.quarantined, 1, "{gc:?}");
    assert!(!old.exists());
    assert_eq!(crate::support::names(&quarantine(&cache)).len(), 1, "the fresh one is kept");
    assert!(crate::support::names(&manifests(&cache)).is_empty(), "the manifest of a gone entry is reclaimed");
}

/// Holes are hashed as what they read as, zeros, without being read: a
/// sparse file and a dense file of the same bytes (as `tar` or `rsync`
/// without `-S` restore it) have the same manifest, and a byte written into
/// what was a hole is found.
#[test]
fn sparse_files_are_hashed_by_their_bytes_not_their_holes() {
    use std::io::{Seek, SeekFrom, Write};
    let (_dir, cache) = new_cache();
    let entry = cache
        .get_or_fill(&key("sparse"), Wait::NoWait, |dir| {
            let mut f = std::fs::File::create(dir.path().join("f"))?;
            f.seek(SeekFrom::Start(3 << 20))?;
            f.write_all(b"data in the middle")?;
            f.set_len(8 << 20)?;
            // A whole file of holes, and one whose size is not a block's.
            std::fs::File::create(dir.path().join("empty"))?.set_len(1 << 30)?;
            std::fs::File::create(dir.path().join("odd"))?.set_len((1 << 20) + 7)
        })
        .unwrap()
        .entry
        .path()
        .to_owned();
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!(state_of(&report, "sparse"), &VerifyState::Good);
    // The same bytes, written out densely (no holes at all).
    let bytes = std::fs::read(entry.join("f")).unwrap();
    std::fs::write(entry.join("f"), &bytes).unwrap();
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!(state_of(&report, "sparse"), &VerifyState::Good, "a dense copy hashes the same");
    // One byte where a hole was, in the middle of a zero block.
    let mut f = std::fs::OpenOptions::new().write(true).open(entry.join("empty")).unwrap();
    f.seek(SeekFrom::Start((1 << 29) + 12345)).unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert!(differences(state_of(&report, "sparse")).contains("`empty`: content differs"), "{report:?}");
}

/// A fill whose handle is cancelled while its output is hashed publishes
/// nothing, records no failure, leaves its temp for gc, and leaves the key
/// free for the next fill.
#[test]
fn a_fill_cancelled_while_hashing_publishes_nothing() {
    let (dir, _plain) = new_cache();
    let cancel = safecache::Cancel::new();
    let options = Options { cancel: cancel.clone(), ..Options::default() };
    let cache = Cache::open_ambient(dir.path().join("cache"), options).unwrap();
    let result = cache.get_or_fill(&key("k"), Wait::NoWait, |d| {
        std::fs::write(d.path().join("f"), "x")?;
        // The signal comes after the fill's command has exited.
        cancel.cancel();
        Ok::<(), std::io::Error>(())
    });
    match result {
        Err(e @ Error::Cancelled { .. }) => assert!(e.to_string().contains("nothing was published"), "{e}"),
        other => panic!("expected Error::Cancelled, got {other:?}"),
    }
    let plain = Cache::open_ambient(dir.path().join("cache"), Options::default()).unwrap();
    assert!(plain.get(&key("k")).unwrap().is_none());
    // The temp is left for gc (deleting a large output would delay the
    // exit the cancel asked for), and gc reclaims it.
    plain.gc(Wait::NoWait).unwrap();
    assert!(crate::support::names(&dir.path().join("cache/.safecache/tmp")).is_empty(), "gc left the temp");
    let failed = dir.path().join("cache/.safecache/failed");
    assert!(!failed.exists() || crate::support::names(&failed).is_empty(), "no failure is recorded");
    let filled = plain.get_or_fill(&key("k"), Wait::NoWait, |d| std::fs::write(d.path().join("f"), "x")).unwrap();
    assert!(filled.filled);

    // In place: the uncommitted entry leaves its name (into the trash, for
    // gc), and the key reads as absent.
    let result = cache.get_or_fill_in_place(&key("p"), Wait::NoWait, |d| {
        std::fs::write(d.path().join("f"), "x")?;
        cancel.cancel();
        Ok::<(), std::io::Error>(())
    });
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    assert!(plain.get(&key("p")).unwrap().is_none());
    assert!(!plain.entry_path(&key("p")).exists(), "the uncommitted entry left its name");
    plain.gc(Wait::NoWait).unwrap();
    assert!(crate::support::names(&dir.path().join("cache/.safecache/trash")).is_empty(), "gc left the trash");
}

/// A manifest that an older build wrote (format 1: tied by device and
/// inode, plain hashes) is still read and checked by its own rules.
#[test]
fn format_1_manifests_are_still_checked() {
    let (_dir, cache) = new_cache();
    let entry = publish(&cache, "old");
    let path = manifests(&cache).join(format!("{}.json", digest_of(&cache, "old")));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    body["format"] = 1.into();
    body.as_object_mut().unwrap().remove("entry_mtime");
    let body = serde_json::to_string(&body).unwrap() + "\n";
    let seal = format!("{{\"blake3\":\"{}\"}}\n", blake3::hash(body.as_bytes()).to_hex());
    std::fs::write(&path, body + &seal).unwrap();
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert_eq!(state_of(&report, "old"), &VerifyState::Good);
    std::fs::write(entry.join("a"), "hellp").unwrap();
    let report = cache.verify(None, false, Wait::NoWait).unwrap();
    assert!(differences(state_of(&report, "old")).contains("`a`: content differs"), "{report:?}");
}
