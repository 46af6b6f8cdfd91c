//! This defines fault injection at the directory-handle boundary: a plan,
//! per thread, of which call of which operation fails and how. Tests (and,
//! with the `fault-injection` feature, the simulator) use it to check that
//! after any single fault the cache stays consistent and the error is clear.
//!
//! Invariant: without a plan nothing is injected; the check is one
//! thread-local read, and builds without the feature and outside tests have
//! no check at all.
// Public through `safecache::faults` with the feature; crate-only in tests.
#![cfg_attr(not(feature = "fault-injection"), allow(unreachable_pub))]

#[cfg(any(test, feature = "fault-injection"))]
use std::cell::RefCell;
use std::io;

/// An operation of the directory handle that a fault can hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(any(test, feature = "fault-injection")), allow(dead_code))]
pub enum Op {
    /// Creating a directory.
    CreateDir,
    /// Creating or writing a file.
    Write,
    /// Opening a file to read or lock it.
    Open,
    /// Taking a lock.
    Lock,
    /// fsync of a file or a directory.
    Sync,
    /// A rename (publish, rename-aside, stamps, records).
    Rename,
    /// Unlinking a file or deleting a tree.
    Remove,
}

/// The failure to inject: what the OS would say.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// ENOSPC: the disk is full.
    NoSpace,
    /// EIO: the device failed (as fsync reports lost writeback).
    Io,
    /// EACCES: permission denied (as Windows gives for a rename of an open file).
    Access,
    /// EBUSY: the file is in use (as Windows gives on rename).
    Busy,
    /// EINTR: a signal interrupted the call.
    Interrupted,
    /// ENOLCK or EOPNOTSUPP: the filesystem cannot lock (NFS without a
    /// lock daemon, some FUSE mounts).
    NoLocks,
}

#[cfg(any(test, feature = "fault-injection"))]
impl Failure {
    fn error(self) -> io::Error {
        let (kind, what) = match self {
            Failure::NoSpace => (io::ErrorKind::StorageFull, "injected: no space left on device"),
            Failure::Io => (io::ErrorKind::Other, "injected: input/output error"),
            Failure::Access => (io::ErrorKind::PermissionDenied, "injected: permission denied"),
            Failure::Busy => (io::ErrorKind::ResourceBusy, "injected: device or resource busy"),
            Failure::Interrupted => (io::ErrorKind::Interrupted, "injected: interrupted system call"),
            Failure::NoLocks => (io::ErrorKind::Unsupported, "injected: no locks available"),
        };
        io::Error::new(kind, what)
    }
}

/// One planned fault: the `nth` call (from 0) of `op` on this thread fails
/// with `failure`, once.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: Op,
    /// Which call of it, counting from 0 after [`inject`].
    pub nth: usize,
    /// How it fails.
    pub failure: Failure,
}

#[cfg(any(test, feature = "fault-injection"))]
thread_local! {
    static PLAN: RefCell<Vec<(Fault, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Replaces this thread's plan.
#[cfg(any(test, feature = "fault-injection"))]
pub fn inject(plan: &[Fault]) {
    PLAN.with(|p| *p.borrow_mut() = plan.iter().map(|f| (*f, 0)).collect());
}

/// Clears this thread's plan; returns whether every planned fault fired.
#[cfg(any(test, feature = "fault-injection"))]
pub fn clear() -> bool {
    PLAN.with(|p| p.borrow_mut().drain(..).all(|(f, seen)| seen > f.nth))
}

/// Called by the front door before each primitive.
#[cfg(any(test, feature = "fault-injection"))]
pub(crate) fn check(op: Op) -> io::Result<()> {
    PLAN.with(|p| {
        for (fault, seen) in p.borrow_mut().iter_mut().filter(|(f, _)| f.op == op) {
            let this = *seen;
            *seen += 1;
            if this == fault.nth {
                return Err(fault.failure.error());
            }
        }
        Ok(())
    })
}

/// Without the feature, nothing is ever injected.
#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub(crate) fn check(_op: Op) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
// The test builds and inspects caches from outside, as a user would.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::{Cache, ErrorKind, Key, Options, Wait};

    /// Each operation with the failures the OS gives it in practice.
    const PLANS: [(Op, Failure); 10] = [
        (Op::CreateDir, Failure::NoSpace),
        (Op::Write, Failure::NoSpace),
        (Op::Open, Failure::Interrupted),
        (Op::Lock, Failure::Interrupted),
        (Op::Lock, Failure::NoLocks),
        (Op::Sync, Failure::Io),
        (Op::Rename, Failure::Access),
        (Op::Rename, Failure::Busy),
        (Op::Remove, Failure::Access),
        (Op::Remove, Failure::Busy),
    ];

    fn key(s: &str) -> Key {
        Key::new(s).unwrap()
    }

    /// A day in the life of a cache: every operation once.
    fn scenario(cache: &Cache) -> Vec<crate::Error> {
        let fill = |k: &str| {
            cache.get_or_fill(&key(k), Wait::NoWait, |dir| {
                fs::create_dir(dir.path().join("sub"))?;
                fs::write(dir.path().join("sub/data"), k)
            })
        };
        let mut errors = Vec::new();
        let mut note = |r: Result<(), crate::Error>| errors.extend(r.err());
        note(fill("a").map(drop));
        note(fill("b").map(drop));
        note(cache.pin(&key("a"), Wait::NoWait).map(drop));
        note(cache.get(&key("b")).map(drop));
        note(cache.remove(&key("b"), Wait::NoWait).map(drop));
        note(cache.gc(Wait::NoWait).map(drop));
        note(fill("c").map(drop));
        note(cache.clean(Wait::NoWait).map(drop));
        note(fill("d").map(drop));
        errors
    }

    /// Every entry at the root is complete, and once faults stop, gc leaves
    /// no orphans behind.
    fn check_consistent(root: &Path, cache: &Cache, context: &str) {
        for entry in fs::read_dir(root).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".safecache") || name == crate::layout::CACHEDIR_TAG {
                continue;
            }
            let data = fs::read_to_string(root.join(&name).join("sub/data"));
            assert_eq!(data.ok().as_deref(), Some(name.as_str()), "{context}: entry `{name}` is not complete");
        }
        let report = cache.gc(Wait::NoWait).unwrap();
        assert!(report.failures.is_empty(), "{context}: {report:?}");
        for dir in ["tmp", "trash"] {
            let left: Vec<_> = fs::read_dir(root.join(".safecache").join(dir)).unwrap().collect();
            assert!(left.is_empty(), "{context}: gc left {left:?} in {dir}");
        }
    }

    /// An fsync that fails at any point of a fill, the ones after the
    /// publishing rename included, never makes the outcome contradict the
    /// cache: a fill that reports an error left the key absent, and one that
    /// reports success left it complete. The fsync of the cache dir after the
    /// rename used to fail the fill with the entry published and served.
    #[test]
    fn a_failed_sync_never_contradicts_what_the_cache_holds() {
        for in_place in [false, true] {
            let mut warned = 0;
            for nth in 0.. {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path().join("cache");
                let cache = Cache::open_ambient(&root, Options::default()).unwrap();
                let write = |dir: &crate::FillDir<'_>| fs::write(dir.path().join("data"), "a");
                inject(&[Fault { op: Op::Sync, nth, failure: Failure::Io }]);
                let filled = if in_place {
                    cache.get_or_fill_in_place(&key("a"), Wait::NoWait, write)
                } else {
                    cache.get_or_fill(&key("a"), Wait::NoWait, write)
                };
                let hit = clear();
                let context = format!("sync {nth} fails (in place: {in_place})");
                let held = cache.get(&key("a")).unwrap();
                match filled {
                    Ok(filled) => {
                        let entry = held.unwrap_or_else(|| panic!("{context}: reported filled, but absent"));
                        let data = fs::read_to_string(entry.path().join("data")).unwrap();
                        assert_eq!(data, "a", "{context}");
                        if let Some(warning) = filled.warning {
                            assert!(warning.contains("injected"), "{context}: {warning}");
                            warned += 1;
                        }
                    }
                    Err(e) => assert!(held.is_none(), "{context}: reported `{e}`, but the entry is published"),
                }
                if !hit {
                    break;
                }
            }
            assert!(warned > 0, "no fault hit a sync after the publication (in place: {in_place})");
        }
    }

    /// After any single fault, at any call of any operation, the cache stays
    /// consistent, and the operation that hit it fails with a clear error
    /// that keeps the injected cause.
    #[test]
    fn every_single_fault_leaves_the_cache_consistent() {
        let mut fired = 0;
        for (op, failure) in PLANS {
            for nth in 0.. {
                let dir = tempfile::tempdir().unwrap();
                let root = dir.path().join("cache");
                let cache = Cache::open_ambient(&root, Options::default()).unwrap();
                inject(&[Fault { op, nth, failure }]);
                let errors = scenario(&cache);
                let hit = clear();
                let context = format!("{failure:?} at call {nth} of {op:?}");
                for e in &errors {
                    let expected = match failure {
                        Failure::NoLocks => ErrorKind::LocksUnsupported,
                        _ => ErrorKind::Io,
                    };
                    // A fill names a full disk as such.
                    let no_space = failure == Failure::NoSpace && e.kind() == ErrorKind::NoSpace;
                    assert!(e.kind() == expected || e.kind() == ErrorKind::Fill || no_space, "{context}: {e}");
                    let chain =
                        format!("{e}: {}", std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default());
                    assert!(chain.contains("injected"), "{context}: the cause is lost: {chain}");
                }
                check_consistent(&root, &cache, &context);
                if !hit {
                    break;
                }
                fired += 1;
            }
        }
        assert!(fired > 100, "only {fired} faults fired");
        eprintln!("{fired} single faults injected");
    }
}
