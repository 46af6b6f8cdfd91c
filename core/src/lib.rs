//! safecache: cache directories that many processes can share without
//! corrupting them.
//!
//! Build tools and package managers share cache directories between
//! processes and break them when two run at once: two clones into one temp
//! dir, a `git clone` into a checkout a peer just created, two deletes of one
//! tree while a third process reads it. safecache is the protocol that makes
//! this safe, written once against a directory handle:
//!
//! - a cache-wide **lease** (shared while in use, exclusive to mutate all);
//! - per-entry **locks**: shared for [pins](Cache::pin), exclusive for a
//!   fill or a remove;
//! - **fills** into private temps named from the OS random source, owned by a
//!   held lock, and **published** by one atomic rename that never replaces;
//! - **deletion** by renaming aside into the cache's trash, then deleting by
//!   handle, never following symlinks;
//! - **gc** of what killed processes left, only once it can prove them dead;
//! - **holder records**, so every wait says who it is waiting for.
//!
//! ```no_run
//! use safecache::{Cache, Key, Options, Wait};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::open_ambient("/tmp/my-cache", Options::default())?;
//! let key: Key = "git/serde".parse()?;
//! let filled = cache.get_or_fill(&key, Wait::Forever, |dir| {
//!     std::fs::write(dir.path().join("README"), "hello")
//! })?;
//! println!("{}", filled.entry.path().display());
//! # Ok(()) }
//! ```
//!
//! The on-disk format and its invariants are in docs/PROTOCOL.md.
#![deny(missing_docs)]

mod ancestors;
mod aside;
mod cache;
mod cancel;
mod config;
pub mod display;
mod durability;
mod error;
mod evict;
mod failed;
mod fill;
mod fill_log;
mod format;
mod gc;
mod holder;
mod key;
mod layout;
mod limits;
mod listing;
mod lock;
mod manifest;
mod mode;
mod modify;
mod name;
mod once_map;
mod parallel;
mod probe;
mod reclaim;
mod remove;
#[doc(hidden)]
pub mod sim;
mod stats;
mod sys;
mod verify;

pub use ancestors::Ancestors;
pub use cache::{Cache, Entry, Leased, Options, Pin, USE_RESOLUTION};
pub use cancel::Cancel;
pub use config::{Config, Limit};
pub use durability::{Durability, InvalidDurability};
pub use error::{Error, ErrorKind, LowSpace};
pub use evict::{
    AutoGc, DEFAULT_AUTO_GC_EVERY, DEFAULT_MAX_AGE, EvictReason, EvictReport, GcOptions, Limits, SkipReason, Skipped,
    Victim,
};
pub use failed::{Cancelled, CommandFailed, FailedFill};
pub use fill::{FillDir, Filled, PinOrFill, PinnedFill};
pub use fill_log::{FillLog, LOG_MAX};
pub use format::{Described, Filesystem};
pub use gc::{EntryInfo, Failure, GcReport, Item, ItemKind, Status};
pub use holder::{Holder, describe_holders, set_process_command};
pub use key::{InvalidKey, Key, KeyRule, MAX_STORED_LEN};
pub use layout::{FORMAT_VERSION, MARKER_DIR, OLDEST_FORMAT_VERSION};
pub use lock::{WaitEvent, WaitObserver};
pub use mode::{LockMode, LockName, Wait};
pub use modify::{Changing, Modify};
pub use reclaim::ReclaimReport;
pub use remove::CleanReport;
pub use stats::{Counter, Stats};
#[cfg(feature = "fault-injection")]
pub use sys::faults;
pub use verify::{Action, QUARANTINE_KEEP, Verified, VerifyReport, VerifyState};
