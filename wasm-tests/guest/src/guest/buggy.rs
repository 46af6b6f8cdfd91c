//! The buggy variants: each re-creates one bug of the seed reports (or one
//! protocol step left out) against the same directory and the same host
//! locks as the core, so the simulation shows the invariant it breaks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use safecache::{Cache, Key, LockMode, sim};

use super::executor::Process;
use super::host::{report, sync};
use super::roles::{entry_path, exists, make_temp, observe, random_suffix, token, write_entry};
use super::{FILES, Fail, Opts, ROOT};

/// The mutant of `modify`: the same change under a pin (the *shared*
/// entry lock), so pinned readers and other changes overlap it.
pub(crate) fn modify_shared(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let token = token();
    let Some(pin) = cache.pin(key, opts.wait)? else {
        report(&format!("modify-absent {key}"));
        return Ok(());
    };
    report(&format!("modify-start {key} {token} interrupted=false"));
    write_entry(pin.entry().path(), key.as_str(), &token)?;
    opts.hold();
    drop(pin);
    report(&format!("modify-done {key} {token}"));
    Ok(())
}

/// A pinned read whose pin takes the shared lease but not the shared entry
/// lock, so a remover does not wait for it: the core's `pin` with its entry
/// lock left out.
pub(crate) fn pinread_unlocked(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let entry = cache.get(key)?;
    for _ in 0..opts.repeat {
        let seen = match &entry {
            Some(entry) => {
                let seen = observe(entry.path())?;
                opts.hold();
                seen
            }
            None => "absent".to_owned(),
        };
        report(&format!("read {key} pinned {seen}"));
    }
    Ok(())
}

/// The core's `remove` with the rename aside left out: under the shared
/// lease and the exclusive entry lock, it deletes the entry where it stands,
/// so an unpinned reader can list a half-deleted entry.
pub(crate) fn remove_inplace_locked(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let removed = process.with(&sim::entry_lock(&sim::digest(key)), || {
        let target = entry_path(key);
        let removed = exists(&target)?;
        if removed {
            fs::remove_dir_all(&target)?;
        }
        Ok(removed)
    })?;
    report(&format!("removed {key} {removed}"));
    Ok(())
}

/// The core's `clean`, followed by what it must not do under an inherited
/// lease: deleting the lock files (and use stamps), which the parent's
/// other children may hold. A child that then locks a key creates a new
/// lock file, which excludes nobody holding the old one.
pub(crate) fn clean_empties_locks(cache: &Cache, opts: Opts) -> Result<(), Fail> {
    let r = cache.clean(opts.wait)?;
    for dir in [sim::USED_DIR, sim::LOCKS_DIR] {
        for entry in fs::read_dir(Path::new(ROOT).join(dir))? {
            let entry = entry?;
            match fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    report(&format!("clean entries={}", r.entries));
    Ok(())
}

/// Crafter.Build #2: every filler clones into the same `<digest>.tmp`, with
/// no lock, then renames it into place.
pub(crate) fn fill_shared_temp(key: &Key) -> Result<(), Fail> {
    let target = entry_path(key);
    if exists(&target)? {
        report(&format!("fill-done {key} filled=false"));
        return Ok(());
    }
    let temp = Path::new(ROOT).join(format!("{}/{}.tmp", sim::TMP_DIR, sim::digest(key)));
    fs::create_dir_all(&temp)?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    write_entry(&temp, key.as_str(), &token)?;
    fs::rename(&temp, &target)?;
    report(&format!("fill-done {key} filled=true"));
    Ok(())
}

/// An in-place fill under the entry lock that writes at the final path
/// without the uncommitted mark: readers see it half-built, and a killed
/// one leaves a half entry that looks published.
pub(crate) fn fill_inplace_unmarked(key: &Key, opts: Opts) -> Result<(), Fail> {
    let process = Process::default();
    let filled = process.with(&sim::entry_lock(&sim::digest(key)), || {
        let target = entry_path(key);
        if exists(&target)? {
            return Ok(false);
        }
        fs::create_dir(&target)?;
        let token = token();
        report(&format!("fill-start {key} {token}"));
        // A tool that takes a while between its first file and the rest.
        fs::write(target.join("f0"), format!("{key}|{token}|0"))?;
        opts.hold();
        write_entry(&target, key.as_str(), &token)?;
        Ok(true)
    })?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

/// The core's fill without its entry lock (and so without its owner lock):
/// private temp, check, rename; the loser of a visible race discards.
pub(crate) fn fill_unlocked(key: &Key) -> Result<(), Fail> {
    let target = entry_path(key);
    if exists(&target)? {
        report(&format!("fill-done {key} filled=false"));
        return Ok(());
    }
    let (temp, out) = make_temp(key)?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    write_entry(&out, key.as_str(), &token)?;
    let filled = if exists(&target)? {
        false
    } else {
        fs::rename(&out, &target)?;
        true
    };
    fs::remove_dir_all(&temp)?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

/// The core's fill, with every file and the tree synced before the
/// publishing rename, but without the sync of the root after it: the
/// published name can be lost in a power cut after the fill has returned.
/// Under the shared lease and the exclusive entry lock, as the core's.
pub(crate) fn fill_no_parent_sync(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let filled = process.with(&sim::entry_lock(&sim::digest(key)), || fill_no_parent_sync_locked(key))?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

pub(crate) fn fill_no_parent_sync_locked(key: &Key) -> Result<bool, Fail> {
    if exists(&entry_path(key))? {
        return Ok(false);
    }
    let temp = sim::temp(&sim::digest(key), &random_suffix()?);
    let out = format!("{temp}/out");
    fs::create_dir(Path::new(ROOT).join(&temp))?;
    fs::create_dir(Path::new(ROOT).join(&out))?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    write_entry(&Path::new(ROOT).join(&out), key.as_str(), &token)?;
    for i in 0..FILES {
        sync(&format!("{out}/f{i}"))?;
    }
    sync(&out)?;
    fs::rename(Path::new(ROOT).join(&out), entry_path(key))?;
    // The mutant: no `sync("")` here.
    fs::remove_dir_all(Path::new(ROOT).join(&temp))?;
    Ok(true)
}

/// pip-tools #2384: `rmtree` of the entry where it stands, with no lock.
pub(crate) fn remove_inplace(key: &Key) -> Result<(), Fail> {
    let target = entry_path(key);
    let removed = exists(&target)?;
    if removed {
        fs::remove_dir_all(&target)?;
    }
    report(&format!("removed {key} {removed}"));
    Ok(())
}

/// The upgrade without its journal: under the exclusive lease, each entry
/// of a format-1 or format-2 cache is renamed from its old name to its new
/// one where it stands, in listing order, and then the format file says 3.
/// The entry's manifest and stamp move with it. An old name can be another
/// key's new name: in sorted order `x%2Fy` comes before `x+y`, so it is
/// renamed onto the entry of `x+y` (which fails, or on a filesystem that
/// replaces an empty directory, loses it), and a kill between two renames
/// leaves names the next upgrade reads by the old format's rules (`x@@2by`
/// read as a key of its own).
pub(crate) fn naive_upgrade() -> Result<(), Fail> {
    let format = Path::new(ROOT).join(sim::FORMAT_FILE);
    let old = match fs::read_to_string(&format) {
        Ok(text) => text != sim::format_contents_of(safecache::FORMAT_VERSION),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    if !old {
        return Ok(());
    }
    let process = Process::default();
    process.with(sim::LEASE_LOCK, || naive_upgrade_locked(&format))
}

pub(crate) fn naive_upgrade_locked(format: &Path) -> Result<(), Fail> {
    if fs::read_to_string(format)? == sim::format_contents_of(safecache::FORMAT_VERSION) {
        return Ok(());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(ROOT)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        if name.starts_with('.') || name == "lost+found" || name == "CACHEDIR.TAG" {
            continue;
        }
        let Ok(key) = name.replace("%2F", "/").parse::<Key>() else { continue };
        let new = key.stored_name();
        if new == name {
            continue;
        }
        let at = |rel: String| Path::new(ROOT).join(rel);
        fs::rename(at(name.clone()), at(new.clone()))?;
        // The entry's manifest and last-use stamp, named by the digest of
        // its name, follow it.
        let (od, nd) = (sim::digest_of(&name), sim::digest_of(&new));
        for (from, to) in [(sim::manifest(&od), sim::manifest(&nd)), (sim::used_marker(&od), sim::used_marker(&nd))] {
            match fs::rename(at(from), at(to)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    let staging = Path::new(ROOT).join(sim::format_staging("new"));
    fs::write(&staging, sim::format_contents_of(safecache::FORMAT_VERSION))?;
    fs::rename(&staging, format)?;
    Ok(())
}

/// An entry's path under format 2's names: the key as it is, `/` as `%2F`.
pub(crate) fn legacy_path(key: &Key) -> PathBuf {
    Path::new(ROOT).join(key.as_str().replace('/', "%2F"))
}

/// The lock of a key under format 2's names.
pub(crate) fn legacy_lock(key: &Key) -> String {
    let name = key.as_str().replace('/', "%2F");
    sim::entry_lock(&sim::digest_of(&name))
}

/// The core's fill (shared lease, entry lock, private temp, rename), with
/// the entry named as format 2 named it. On a case-insensitive filesystem
/// `lib` then finds the entry of `Lib`, and takes it for its own.
pub(crate) fn fill_legacy_name(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let result = process.with(&legacy_lock(key), || {
        let target = legacy_path(key);
        if exists(&target)? {
            return Ok(false);
        }
        let (temp, out) = make_temp(key)?;
        let token = token();
        report(&format!("fill-start {key} {token}"));
        write_entry(&out, key.as_str(), &token)?;
        opts.hold();
        fs::rename(&out, &target)?;
        fs::remove_dir_all(&temp)?;
        Ok(true)
    });
    let filled = result?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

/// A read (pinned: under the entry lock) of the entry at its format-2 name.
pub(crate) fn read_legacy_name(cache: &Cache, key: &Key, pinned: bool, opts: Opts) -> Result<(), Fail> {
    let how = if pinned { "pinned" } else { "unpinned" };
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let lock = legacy_lock(key);
    if pinned {
        process.lock(&lock)?;
    }
    let mut result = Ok(());
    for _ in 0..opts.repeat {
        let target = legacy_path(key);
        let seen = match exists(&target) {
            Ok(true) => observe(&target),
            Ok(false) => Ok("absent".to_owned()),
            Err(e) => Err(e),
        };
        match seen {
            Ok(seen) => report(&format!("read {key} {how} {seen}")),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
        opts.hold();
    }
    if pinned {
        process.unlock(&lock);
    }
    result
}

/// The core's remove (entry lock, rename aside, delete), at the format-2
/// name: on a case-insensitive filesystem `remove lib` takes `Lib`, whose
/// pin is on another lock.
pub(crate) fn remove_legacy_name(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let result = process.with(&legacy_lock(key), || {
        let target = legacy_path(key);
        if !exists(&target)? {
            return Ok(false);
        }
        let trash = Path::new(ROOT).join(sim::trash_item(&sim::digest(key), &random_suffix()?));
        fs::rename(&target, &trash)?;
        fs::remove_dir_all(&trash)?;
        Ok(true)
    });
    let removed = result?;
    report(&format!("removed {key} {removed}"));
    Ok(())
}
