//! This defines eviction: removing published entries least recently used
//! first, down to a size limit, and every entry unused for longer than an
//! age limit ([`GcOptions`], run by [`Cache::gc_with`]); and the automatic
//! gc ([`Cache::auto_gc`]), which runs it at most once per interval.
//!
//! Invariants kept here:
//! - a victim is removed only through `remove`'s rename-aside path, with its
//!   entry lock taken exclusively without waiting: a pinned entry (shared
//!   entry lock) or one being filled or removed (exclusive) is skipped and
//!   reported, never waited for and never removed;
//! - an entry with no last-use stamp is stamped when gc first sees it and
//!   counts as used then: the cache cannot know when it was last used, and a
//!   guess would delete data someone may need now;
//! - an entry is evicted for its age only if it was unused for longer than
//!   the limit even if it was used just before its stamp went stale
//!   ([`USE_RESOLUTION`] is counted in its favour);
//! - a dry run takes no lock and writes nothing;
//! - the automatic gc only ever tries locks, so it never makes its caller
//!   wait, and runs at most once per interval per cache (`gc.stamp`).

use std::time::{Duration, SystemTime};

use crate::cache::{Cache, Leased, USE_RESOLUTION};
use crate::error::Error;
use crate::gc::{GcReport, Scanned};
use crate::layout::{self, GC_LOCK, GC_STAMP};
use crate::lock::Deadline;
use crate::mode::{LockMode, LockName, Wait};
use crate::sys;

pub use crate::limits::{
    AutoGc, DEFAULT_AUTO_GC_EVERY, DEFAULT_MAX_AGE, EvictReason, EvictReport, GcOptions, Limits, SkipReason, Skipped,
    Victim,
};

/// An entry listed for eviction, before it is chosen.
struct Listed {
    entry: Scanned,
    last_use: SystemTime,
}

/// Whether the automatic gc should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    No,
    Yes,
    /// No `gc.stamp` yet: write one, and run an interval later.
    FirstUse,
}

/// Whether an entry last stamped at `last_use` has been unused for longer
/// than `max_age` at `now`, even if it was used just before its stamp went
/// stale (a use within [`USE_RESOLUTION`] of a stamp writes none).
fn unused_for_longer(last_use: SystemTime, max_age: Duration, now: SystemTime) -> bool {
    now.duration_since(last_use).is_ok_and(|idle| idle > max_age.saturating_add(USE_RESOLUTION))
}

impl Cache {
    /// Every published entry, least recently used first (ties: the older
    /// mtime, then the name). Entries without a stamp are stamped now unless
    /// `dry_run`, and count as used now either way.
    fn listed_for_eviction(&self, dry_run: bool, report: &mut EvictReport) -> Result<Vec<Listed>, Error> {
        let now = sys::now();
        let mut out = Vec::new();
        for entry in self.scan_entries()? {
            let last_use = entry.stamp.unwrap_or_else(|| {
                if !dry_run {
                    if let Err(e) = self.stamp_use(&entry.digest) {
                        tracing::debug!(entry = %entry.stored_name, error = %e, "could not stamp an unstamped entry");
                    }
                    report.stamped += 1;
                }
                now
            });
            report.entries += 1;
            report.entry_bytes += entry.bytes;
            out.push(Listed { entry, last_use });
        }
        let order = |l: &Listed| (l.last_use, l.entry.modified);
        out.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.entry.stored_name.cmp(&b.entry.stored_name)));
        Ok(out)
    }

    /// Chooses victims least recently used first and evicts each through
    /// `evict_one` (a dry run: `None`, which evicts nothing and changes
    /// nothing). Stops at the first entry that is neither too old nor needed
    /// to get under the size limit: the list is in last-use order, so none
    /// after it is either.
    pub(crate) fn evict(
        &self,
        limits: &Limits,
        leased: Option<&Leased>,
        report: &mut EvictReport,
    ) -> Result<(), Error> {
        let _span = tracing::info_span!("evict", dry_run = leased.is_none()).entered();
        report.dry_run = leased.is_none();
        if limits.max_size.is_none() && limits.max_age.is_none() {
            return Ok(());
        }
        let listed = self.listed_for_eviction(leased.is_none(), report)?;
        let now = sys::now();
        let mut total = report.entry_bytes;
        for Listed { entry, last_use } in listed {
            let reason = if limits.max_age.is_some_and(|age| unused_for_longer(last_use, age, now)) {
                EvictReason::Age
            } else if limits.max_size.is_some_and(|max| total > max) {
                EvictReason::Size
            } else {
                break;
            };
            let victim = Victim {
                stored_name: entry.stored_name.clone(),
                key: entry.key.clone(),
                bytes: entry.bytes,
                last_use,
                reason,
            };
            let outcome = match leased {
                None => Ok(true),
                Some(leased) => self.evict_one(leased, &entry, last_use),
            };
            match outcome {
                Ok(true) => {
                    tracing::info!(entry = %entry.stored_name, bytes = entry.bytes, ?reason, "evicted");
                    total = total.saturating_sub(entry.bytes);
                    report.freed += entry.bytes;
                    report.evicted.push(victim);
                }
                // Someone else removed it meanwhile: it no longer counts.
                Ok(false) => total = total.saturating_sub(entry.bytes),
                Err(why) => report.skipped.push(Skipped { victim, why }),
            }
        }
        Ok(())
    }

    /// Removes one victim the way `rm --lock-timeout 0` would: `Ok(false)`
    /// if it was already gone.
    fn evict_one(&self, leased: &Leased, entry: &Scanned, last_use: SystemTime) -> Result<bool, SkipReason> {
        let Some(key) = &entry.key else { return Err(SkipReason::NotAKey) };
        // A use since the listing makes it no longer the least recently used.
        let stamp = self.root().modified(&layout::used_marker(&entry.digest)).ok().flatten();
        if stamp.is_some_and(|t| t > last_use) {
            return Err(SkipReason::UsedMeanwhile);
        }
        match leased.remove(key, Wait::NoWait) {
            Ok(existed) => Ok(existed),
            Err(e) if e.is_busy() => Err(SkipReason::InUse),
            Err(Error::NestedCache { .. }) => Err(SkipReason::HoldsCache),
            Err(e) => Err(SkipReason::Failed(e.to_string())),
        }
    }

    /// Whether the automatic gc is due: `gc.stamp` is at least `every` old,
    /// or (after a clock change) more than `every` in the future. A missing
    /// stamp starts the clock instead: a new cache has nothing to evict, and
    /// a cache first used by a build with automatic gc gets a full interval
    /// before anything is evicted from it.
    fn auto_gc_due(&self, every: Duration) -> Due {
        match self.root().modified(GC_STAMP) {
            Ok(None) => Due::FirstUse,
            Ok(Some(last)) => match sys::now().duration_since(last) {
                Ok(age) if age >= every => Due::Yes,
                Err(ahead) if ahead.duration() > every => Due::Yes,
                _ => Due::No,
            },
            // Unreadable: let the locked path find out, and report.
            Err(_) => Due::Yes,
        }
    }

    /// Runs gc with the limits of [`Options::auto_gc`](crate::Options::auto_gc)
    /// if it is set and its interval has passed since the last automatic gc
    /// on this cache, and nobody holds what it needs. Returns what it did, or
    /// `None` if it did not run.
    ///
    /// It only ever tries locks (the lease shared, `gc.lock`, each victim's
    /// entry lock), so it never waits: call it after a command's real work.
    /// It stamps `gc.stamp` before it starts, so that a gc that fails does
    /// not run again on every call. On a cache without `gc.stamp` it only
    /// writes the stamp: the first automatic gc comes an interval later.
    pub fn auto_gc(&self) -> Result<Option<GcReport>, Error> {
        self.auto_gc_with(self.inner.options.auto_gc)
    }

    /// [`Cache::auto_gc`] with `auto` instead of
    /// [`Options::auto_gc`](crate::Options::auto_gc): for a front end that
    /// resolves the settings after opening the cache (from its config).
    pub fn auto_gc_with(&self, auto: Option<AutoGc>) -> Result<Option<GcReport>, Error> {
        let Some(auto) = auto else { return Ok(None) };
        if self.auto_gc_due(auto.every) == Due::No {
            return Ok(None);
        }
        let _span = tracing::info_span!("auto_gc").entered();
        let no_wait = Deadline::start(Wait::NoWait);
        let busy = |e: Error| if e.is_busy() { Ok(None) } else { Err(e) };
        let leased = match self.lease_by(LockMode::Shared, no_wait) {
            Ok(leased) => leased,
            Err(e) => return busy(e),
        };
        let gc = match self.lock(GC_LOCK, LockName::Gc, LockMode::Exclusive, no_wait) {
            Ok(gc) => gc,
            Err(e) => return busy(e),
        };
        // A peer may have run it between the check above and the lock.
        let due = self.auto_gc_due(auto.every);
        if due == Due::No {
            return Ok(None);
        }
        let temp = layout::gc_stamp_temp(&layout::random_suffix()?);
        self.root().touch(GC_STAMP, &temp).map_err(|e| Error::io("write", GC_STAMP, e))?;
        if due == Due::FirstUse {
            return Ok(None);
        }
        let mut report = leased.gc_locked(&auto.limits)?;
        drop(gc);
        drop(leased);
        self.reclaim_locks_if_idle(&mut report)?;
        Ok(Some(report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_the_stamp_resolution_in_the_entrys_favour() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        assert!(!unused_for_longer(now - day, day, now), "exactly the limit");
        assert!(!unused_for_longer(now - day - USE_RESOLUTION, day, now), "within the resolution");
        assert!(unused_for_longer(now - day - USE_RESOLUTION - Duration::from_secs(1), day, now));
        assert!(!unused_for_longer(now + day, Duration::ZERO, now), "a stamp in the future");
    }
}
