//! The protocol's roles: each runs one operation through the core and
//! reports what it saw (the lines are described in `guest.rs`), with the
//! helpers that write, copy and observe entries.

use std::cell::Cell;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use safecache::{Cache, Key, LockMode, Wait, sim};

use super::host::{self, pid, report};
use super::{FILES, Fail, Opts, ROOT, other};

/// A name for this process's next fill: `p<pid>.<n>`.
pub(crate) fn token() -> String {
    thread_local!(static NEXT: Cell<u32> = const { Cell::new(0) });
    let n = NEXT.with(|c| {
        let n = c.get();
        c.set(n + 1);
        n
    });
    format!("p{}.{n}", pid())
}

pub(crate) fn entry_path(key: &Key) -> PathBuf {
    Path::new(ROOT).join(key.stored_name())
}

/// A private temp made by hand as the core makes one (`tmp/<d>.<r>/`,
/// with `out/` inside): the temp and its `out/`.
pub(crate) fn make_temp(key: &Key) -> Result<(PathBuf, PathBuf), Fail> {
    let temp = Path::new(ROOT).join(sim::temp(&sim::digest(key), &random_suffix()?));
    let out = temp.join("out");
    fs::create_dir(&temp)?;
    fs::create_dir(&out)?;
    Ok((temp, out))
}

pub(crate) fn random_suffix() -> Result<String, Fail> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| other(format!("random: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the entry's files one by one (each write is a scheduling point).
pub(crate) fn write_entry(dir: &Path, content_key: &str, token: &str) -> io::Result<()> {
    for i in 0..FILES {
        fs::write(dir.join(format!("f{i}")), format!("{content_key}|{token}|{i}"))?;
    }
    Ok(())
}

/// Copies the files of `from` into `to`, one by one.
pub(crate) fn copy_entry(from: &Path, to: &Path) -> io::Result<()> {
    let mut names = fs::read_dir(from)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
    names.sort();
    for name in names {
        fs::write(to.join(&name), fs::read(from.join(&name))?)?;
    }
    Ok(())
}

/// What a reader sees at `path`: `vanished`, or every file with its content.
pub(crate) fn observe(path: &Path) -> io::Result<String> {
    let vanished = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let listing = match fs::read_dir(path) {
        Ok(rd) => rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<io::Result<Vec<_>>>(),
        Err(e) => Err(e),
    };
    let mut names = match listing {
        Ok(names) => names,
        Err(e) if vanished(&e) => return Ok("vanished".to_owned()),
        Err(e) => return Err(e),
    };
    names.sort();
    let mut parts = Vec::new();
    for name in names {
        match fs::read_to_string(Path::new(path).join(&name)) {
            Ok(content) => parts.push(format!("{name}={content}")),
            Err(e) if vanished(&e) => return Ok("vanished".to_owned()),
            Err(e) => return Err(e),
        }
    }
    Ok(format!("files {}", parts.join(",")))
}

pub(crate) fn fill(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let token = token();
    let fill = |dir: &safecache::FillDir<'_>| {
        report(&format!("fill-start {key} {token}"));
        write_entry(dir.path(), key.as_str(), &token)?;
        opts.hold();
        Ok::<(), io::Error>(())
    };
    let filled = if opts.inplace {
        cache.get_or_fill_in_place(key, opts.wait, fill)?
    } else {
        cache.get_or_fill(key, opts.wait, fill)?
    };
    report(&format!("fill-done {key} filled={}", filled.filled));
    Ok(())
}

/// Changes the entry of `key` in place under `modify`: rewrites every file
/// with a new token, one by one (each write a scheduling point), holds the
/// lock `hold=MS` more, and seals.
pub(crate) fn modify(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let token = token();
    let Some(change) = cache.modify(key, opts.wait)? else {
        report(&format!("modify-absent {key}"));
        return Ok(());
    };
    report(&format!("modify-start {key} {token} interrupted={}", change.interrupted().is_some()));
    write_entry(change.entry().path(), key.as_str(), &token)?;
    opts.hold();
    change.seal()?;
    report(&format!("modify-done {key} {token}"));
    Ok(())
}

pub(crate) fn read(cache: &Cache, key: &Key, pinned: bool, opts: Opts) -> Result<(), Fail> {
    let how = if pinned { "pinned" } else { "unpinned" };
    if pinned {
        // One pin for every read: a remover or a cleaner must wait for all.
        // The last read is reported after the pin is released, as the
        // single read always was, so the schedules of older seeds stay.
        let pin = cache.pin(key, opts.wait)?;
        let mut last = String::new();
        for i in 0..opts.repeat {
            let seen = match &pin {
                Some(pin) => {
                    let seen = observe(pin.entry().path())?;
                    opts.hold();
                    seen
                }
                None => "absent".to_owned(),
            };
            if i + 1 < opts.repeat {
                report(&format!("read {key} {how} {seen}"));
            } else {
                last = seen;
            }
        }
        drop(pin);
        report(&format!("read {key} {how} {last}"));
    } else {
        for _ in 0..opts.repeat {
            let seen = match cache.get(key)? {
                Some(entry) => observe(entry.path())?,
                None => "absent".to_owned(),
            };
            report(&format!("read {key} {how} {seen}"));
        }
    }
    Ok(())
}

/// The parent of `cargo safecache run --exclusive`: takes the exclusive
/// lease, tells the host (which then starts the children, the roles with
/// `inherit`), and keeps the lease until every child has exited. With
/// `early` (a harness self-test) it lets the lease go before the children
/// start, which the host must report.
pub(crate) fn lease_parent(cache: &Cache, early: bool) -> Result<(), Fail> {
    let lease = cache.lease(LockMode::Exclusive, Wait::Forever)?;
    report("lease-held");
    let lease = if early {
        drop(lease);
        None
    } else {
        Some(lease)
    };
    host::wait_children();
    drop(lease);
    Ok(())
}

/// Installs `src` as `dst`: a copy of the source entry into a target that
/// other processes install into too (uv #516).
///
/// The real protocol makes the target an entry of its own, filled by the
/// core. The buggy one deletes whatever is at the target and copies in place.
pub(crate) fn install(cache: &Cache, src: &Key, dst: &Key, delete_then_copy: bool, opts: Opts) -> Result<(), Fail> {
    fill(cache, src, opts)?;
    let pin = cache.pin(src, opts.wait)?.ok_or_else(|| other(format!("source `{src}` vanished")))?;
    let from = pin.entry().path().to_owned();
    if delete_then_copy {
        let target = entry_path(dst);
        report(&format!("copy-start {dst}"));
        if exists(&target)? {
            fs::remove_dir_all(&target)?;
        }
        fs::create_dir(&target)?;
        copy_entry(&from, &target)?;
    } else {
        let token = token();
        let filled = cache.get_or_fill(dst, opts.wait, |dir| {
            report(&format!("fill-start {dst} {token}"));
            copy_entry(&from, dir.path())
        })?;
        report(&format!("fill-done {dst} filled={}", filled.filled));
    }
    drop(pin);
    Ok(())
}
