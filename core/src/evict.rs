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
use crate::key::Key;
use crate::layout::{self, GC_LOCK, GC_STAMP};
use crate::lock::Deadline;
use crate::mode::{LockMode, LockName, Wait};
use crate::sys;

/// How often the automatic gc runs by default: once a day, as cargo's.
pub const DEFAULT_AUTO_GC_EVERY: Duration = Duration::from_secs(86_400);

/// The age limit the automatic gc applies by default: entries unused for
/// 30 days. Long enough that nothing in use by a weekly or monthly job goes
/// (Go uses 5 days, cargo 1 to 3 months).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// How far gc may evict published entries. The default evicts nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Evict least recently used entries until the bytes of regular files
    /// in all entries are at most this.
    pub max_size: Option<u64>,
    /// Evict every entry unused for longer than this.
    pub max_age: Option<Duration>,
}

/// The automatic gc: how often, and with which limits. A front end sets it
/// in [`Options::auto_gc`](crate::Options::auto_gc) and calls
/// [`Cache::auto_gc`] after its real work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoGc {
    /// The least time between two runs on one cache.
    pub every: Duration,
    /// What it evicts, besides reclaiming orphans as every gc does.
    pub limits: Limits,
}

impl Default for AutoGc {
    /// Once a day, evicting entries unused for [`DEFAULT_MAX_AGE`], with no
    /// size limit: a size limit depends on the disk and the workload, and
    /// evicting by size can take entries in use every day.
    fn default() -> AutoGc {
        AutoGc { every: DEFAULT_AUTO_GC_EVERY, limits: Limits { max_size: None, max_age: Some(DEFAULT_MAX_AGE) } }
    }
}

/// What [`Cache::gc_with`] does beyond reclaiming orphans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Which entries to evict.
    pub limits: Limits,
    /// Report what would be reclaimed and evicted, and change nothing.
    pub dry_run: bool,
}

/// Why an entry was chosen for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EvictReason {
    /// Unused for longer than [`Limits::max_age`].
    Age,
    /// Least recently used while the cache was over [`Limits::max_size`].
    Size,
}

/// Why an entry chosen for eviction was left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// It is pinned, being filled or being removed: its entry lock was busy.
    InUse,
    /// Someone used it after gc listed it.
    UsedMeanwhile,
    /// It holds a safecache cache of its own (see [`Error::NestedCache`]).
    HoldsCache,
    /// A file adopted by `init` whose name is not a valid key; `clean`
    /// removes it.
    NotAKey,
    /// Removing it failed.
    Failed(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::InUse => f.write_str("it is pinned or being filled"),
            SkipReason::UsedMeanwhile => f.write_str("it was used while gc ran"),
            SkipReason::HoldsCache => f.write_str("it holds a safecache cache of its own"),
            SkipReason::NotAKey => f.write_str("its name is not a valid key; `clean` removes it"),
            SkipReason::Failed(why) => write!(f, "{}", crate::display::escape(why)),
        }
    }
}

/// A published entry as eviction sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// The name stored at the cache root (as on disk; escape it to print).
    pub stored_name: String,
    /// The key it maps to (`None` for an adopted file whose name is not a
    /// valid key).
    pub key: Option<Key>,
    /// Bytes of regular files in it, counted as `ls` counts them.
    pub bytes: u64,
    /// Its last use, as its stamp says; when gc first saw it, if it had no
    /// stamp.
    pub last_use: SystemTime,
    /// Why it was chosen.
    pub reason: EvictReason,
}

/// An entry chosen for eviction but left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The entry.
    pub victim: Victim,
    /// Why it stays.
    pub why: SkipReason,
}

/// What eviction did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictReport {
    /// Entries evicted (would be evicted, in a dry run), least recently used
    /// first.
    pub evicted: Vec<Victim>,
    /// Entries chosen but left alone.
    pub skipped: Vec<Skipped>,
    /// Bytes of regular files in the evicted entries.
    pub freed: u64,
    /// Published entries before eviction.
    pub entries: usize,
    /// Bytes of regular files in them before eviction.
    pub entry_bytes: u64,
    /// Entries seen without a last-use stamp and stamped now.
    pub stamped: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl EvictReport {
    /// Bytes in published entries once the evicted ones are gone.
    pub fn entry_bytes_after(&self) -> u64 {
        self.entry_bytes.saturating_sub(self.freed)
    }
}

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
        let Some(auto) = self.inner.options.auto_gc else { return Ok(None) };
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
