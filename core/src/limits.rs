//! This defines the vocabulary of eviction: the limits gc evicts by, the
//! automatic gc's settings and the report of what eviction did. It sits below `cache` (whose `Options`
//! carry them) and `evict` (which applies them), and imports neither.

use std::time::{Duration, SystemTime};

use crate::key::Key;

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
/// [`Cache::auto_gc`](crate::Cache::auto_gc) after its real work.
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

/// What [`Cache::gc_with`](crate::Cache::gc_with) does beyond reclaiming orphans.
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
    /// It holds a safecache cache of its own (see [`Error::NestedCache`](crate::Error::NestedCache)).
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
