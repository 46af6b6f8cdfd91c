//! This defines the cache's usage counters ([`Stats`], [`Counter`]), kept in
//! `.safecache/stats`: hits, misses, fills, failed fills, waits and bytes
//! filled, and the remote tier's hits, misses, errors, uploads, bytes and
//! time, since a time.
//!
//! The file is [`SLOTS`] u64s in the machine's byte order: a magic number,
//! the Unix time counting started, then one slot per [`Counter`]. Every
//! process maps it shared and adds with an atomic `fetch_add`, so counts
//! from any number of processes at once are exact, and a count costs no
//! lock, no write call and no fsync. It is made on first use, and sized by
//! whoever finds it empty (sizing it twice changes nothing). Counters are
//! only ever appended: a file of an earlier safecache, shorter by whole
//! slots, is grown (its new slots start at zero), and a longer one, of a
//! later safecache, is used for the slots this one knows.
//!
//! Counting is advice: it never fails an operation. A file that is not
//! ours to trust (a symlink, a FIFO, another size, another owner, writable
//! by others) is not counted into; [`Cache::stats`] names why, and
//! [`Cache::reset_stats`] replaces it. A reset stores zeros slot by slot:
//! a count that races it may land on either side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::Cache;
use crate::error::Error;
use crate::layout::STATS_FILE;
use crate::sys::{self, Mapped};

/// "safestat" in ASCII: marks a stats file of this layout.
const MAGIC: u64 = u64::from_be_bytes(*b"safestat");
const MAGIC_SLOT: usize = 0;
const SINCE_SLOT: usize = 1;
/// The number of u64 slots in the file.
pub(crate) const SLOTS: usize = 2 + Counter::ALL.len();

/// One of the cache's usage counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// A lookup found the entry.
    Hits,
    /// A lookup did not find the entry.
    Misses,
    /// A fill published an entry.
    Fills,
    /// A fill failed; nothing was published.
    FailedFills,
    /// A command waited for a lock.
    Waits,
    /// The bytes of the regular files of the entries fills published.
    BytesFilled,
    /// A fill found its entry in the remote tier and published it.
    RemoteHits,
    /// A fill looked its entry up in the remote tier and did not find it.
    RemoteMisses,
    /// A download or upload of the remote tier failed (a warning).
    RemoteErrors,
    /// Bytes of archives downloaded from the remote tier.
    BytesDownloaded,
    /// Entries uploaded to the remote tier (this upload's manifest won).
    Uploads,
    /// Bytes of archives uploaded to the remote tier.
    BytesUploaded,
    /// Milliseconds spent on the remote tier's downloads and uploads.
    RemoteMillis,
}

impl Counter {
    /// Every counter, in the file's order.
    pub const ALL: [Counter; 13] = [
        Counter::Hits,
        Counter::Misses,
        Counter::Fills,
        Counter::FailedFills,
        Counter::Waits,
        Counter::BytesFilled,
        Counter::RemoteHits,
        Counter::RemoteMisses,
        Counter::RemoteErrors,
        Counter::BytesDownloaded,
        Counter::Uploads,
        Counter::BytesUploaded,
        Counter::RemoteMillis,
    ];

    fn slot(self) -> usize {
        2 + match self {
            Counter::Hits => 0,
            Counter::Misses => 1,
            Counter::Fills => 2,
            Counter::FailedFills => 3,
            Counter::Waits => 4,
            Counter::BytesFilled => 5,
            Counter::RemoteHits => 6,
            Counter::RemoteMisses => 7,
            Counter::RemoteErrors => 8,
            Counter::BytesDownloaded => 9,
            Counter::Uploads => 10,
            Counter::BytesUploaded => 11,
            Counter::RemoteMillis => 12,
        }
    }
}

/// The cache's usage counters, as read by [`Cache::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// When counting started (the file was made, or last reset); `None`
    /// if nothing was counted yet.
    pub since: Option<SystemTime>,
    /// Lookups that found the entry.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Fills that published an entry.
    pub fills: u64,
    /// Fills that failed.
    pub failed_fills: u64,
    /// Commands that waited for a lock.
    pub waits: u64,
    /// Bytes of regular files that fills published.
    pub bytes_filled: u64,
    /// Fills the remote tier served.
    pub remote_hits: u64,
    /// Lookups in the remote tier that found nothing.
    pub remote_misses: u64,
    /// Downloads and uploads of the remote tier that failed.
    pub remote_errors: u64,
    /// Bytes of archives downloaded.
    pub bytes_downloaded: u64,
    /// Entries uploaded.
    pub uploads: u64,
    /// Bytes of archives uploaded.
    pub bytes_uploaded: u64,
    /// Milliseconds spent on downloads and uploads.
    pub remote_millis: u64,
}

impl Stats {
    /// The value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        match counter {
            Counter::Hits => self.hits,
            Counter::Misses => self.misses,
            Counter::Fills => self.fills,
            Counter::FailedFills => self.failed_fills,
            Counter::Waits => self.waits,
            Counter::BytesFilled => self.bytes_filled,
            Counter::RemoteHits => self.remote_hits,
            Counter::RemoteMisses => self.remote_misses,
            Counter::RemoteErrors => self.remote_errors,
            Counter::BytesDownloaded => self.bytes_downloaded,
            Counter::Uploads => self.uploads,
            Counter::BytesUploaded => self.bytes_uploaded,
            Counter::RemoteMillis => self.remote_millis,
        }
    }

    fn read(slots: &[AtomicU64]) -> Stats {
        let at = |c: Counter| slots[c.slot()].load(Ordering::Relaxed);
        let since = match slots[SINCE_SLOT].load(Ordering::Relaxed) {
            0 => None,
            secs => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        };
        Stats {
            since,
            hits: at(Counter::Hits),
            misses: at(Counter::Misses),
            fills: at(Counter::Fills),
            failed_fills: at(Counter::FailedFills),
            waits: at(Counter::Waits),
            bytes_filled: at(Counter::BytesFilled),
            remote_hits: at(Counter::RemoteHits),
            remote_misses: at(Counter::RemoteMisses),
            remote_errors: at(Counter::RemoteErrors),
            bytes_downloaded: at(Counter::BytesDownloaded),
            uploads: at(Counter::Uploads),
            bytes_uploaded: at(Counter::BytesUploaded),
            remote_millis: at(Counter::RemoteMillis),
        }
    }
}

fn now_secs() -> u64 {
    sys::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1))
}

/// Maps the file and checks (or, for a new one, writes) its header.
fn map(cache: &Cache) -> Result<Mapped, String> {
    let mapped = cache.root().map_counters(STATS_FILE, SLOTS).map_err(|e| e.to_string())?;
    let slots = mapped.slots();
    // A new file is all zeros: the first to see it claims it.
    match slots[MAGIC_SLOT].compare_exchange(0, MAGIC, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => {}
        Err(MAGIC) => {}
        Err(_) => return Err("it is not a safecache stats file".to_owned()),
    }
    let _ = slots[SINCE_SLOT].compare_exchange(0, now_secs(), Ordering::Relaxed, Ordering::Relaxed);
    Ok(mapped)
}

impl Cache {
    fn mapped_stats(&self) -> Result<&Mapped, &str> {
        self.inner.stats.get_or_init(|| map(self)).as_ref().map_err(String::as_str)
    }

    /// Adds `n` to `counter` in the cache's stats file: one atomic add in
    /// a shared mapping (the first count of a handle maps the file). Never
    /// fails: a file that cannot be used is not counted into.
    pub fn count(&self, counter: Counter, n: u64) {
        match self.mapped_stats() {
            Ok(mapped) => {
                mapped.slots()[counter.slot()].fetch_add(n, Ordering::Relaxed);
            }
            Err(why) => tracing::debug!(%why, ?counter, "not counted"),
        }
    }

    /// The cache's usage counters.
    ///
    /// # Errors
    /// [`Error::BadStats`] if `.safecache/stats` cannot be used (it is not
    /// a regular file of the right size and owner), naming the fix.
    pub fn stats(&self) -> Result<Stats, Error> {
        match self.mapped_stats() {
            Ok(mapped) => Ok(Stats::read(mapped.slots())),
            Err(why) => Err(Error::BadStats { path: self.path().join(STATS_FILE), reason: why.to_owned() }),
        }
    }

    /// Zeroes every counter and starts counting now; returns the counters
    /// as they were. A stats file that cannot be used is replaced (removed
    /// by name, never followed, and made again).
    ///
    /// # Errors
    /// [`Error::BadStats`] if the file could not be made usable.
    pub fn reset_stats(&self) -> Result<Stats, Error> {
        let bad = |reason: String| Error::BadStats { path: self.path().join(STATS_FILE), reason };
        let fresh;
        let mapped = match self.mapped_stats() {
            Ok(mapped) => mapped,
            Err(_) => {
                // Not through this handle's mapping, which stays as it was.
                match self.root().remove_file(STATS_FILE) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bad(e.to_string())),
                    _ => {}
                }
                fresh = map(self).map_err(bad)?;
                &fresh
            }
        };
        let slots = mapped.slots();
        let before = Stats::read(slots);
        for counter in Counter::ALL {
            slots[counter.slot()].store(0, Ordering::Relaxed);
        }
        slots[SINCE_SLOT].store(now_secs(), Ordering::Relaxed);
        Ok(before)
    }
}
