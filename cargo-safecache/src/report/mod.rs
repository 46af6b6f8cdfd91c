//! This defines [`Report`]: the messages commands report, one type each
//! (as cargo's `machine_message`). Each serializes to the JSON object that
//! `--message-format json` prints on stdout, tagged by its `reason`, and
//! renders its own human lines; `Ui::report` prints one or the other.
//! docs/CLI.md's "JSON messages" lists every `reason` (a tidy test checks
//! [`Report::REASONS`] against it).
//!
//! Invariant: a report's JSON fields and `reason` are a documented
//! contract; its human lines are text for people and may change.

mod any;
mod config;
mod entries;
mod gc;
mod remote;
mod removal;
mod run;
mod stats;
mod status;
mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) use any::{Error, Waiting};
pub(crate) use config::{ConfigReport, ConfigShown};
pub(crate) use entries::{Dir, Entry, Initialized, Listed};
pub(crate) use gc::{AutoGc, Evicted, Gc, Skipped, VictimReport};
pub(crate) use remote::{KeyPair, Moved, RemoteChecked, RemoteListed};
pub(crate) use removal::{Cleaned, Removed, RemovedPrefix};
pub(crate) use run::{Exited, Filled};
use serde::{Serialize, Serializer};
pub(crate) use stats::Stats;
pub(crate) use status::{HolderReport, ItemReport, Summary};
pub(crate) use verify::{Verified, VerifySummary};

/// One line of a report's human form.
#[derive(Debug)]
pub(crate) enum Line {
    /// A line on stdout: the command's result (nothing in JSON mode).
    Out(String),
    /// A path on stdout, as its raw bytes (nothing in JSON mode); failing
    /// to write it fails the command, with `what` naming it.
    Path(PathBuf, &'static str),
    /// A cargo-style status line on stderr: a right-aligned verb, then text.
    Status(&'static str, String),
    /// A warning on stderr.
    Warn(String),
    /// A wait announced on stderr (even with `-q`).
    Blocking(String),
    /// The error that ends the command, on stderr.
    Error(String),
}

/// What a report shows people.
trait Human {
    fn human(&self) -> Vec<Line>;
}

/// Defines [`Report`], one variant per message with its `reason`, the list
/// of reasons, and a `From` for each message type.
macro_rules! reports {
    ($($(#[$doc:meta])* $reason:literal => $variant:ident($ty:ty),)*) => {
        /// A message a command reports: its JSON object carries `reason`.
        #[derive(Debug, Serialize)]
        #[serde(tag = "reason")]
        pub(crate) enum Report {
            $($(#[$doc])* #[serde(rename = $reason)] $variant($ty),)*
        }

        impl Report {
            /// Every `reason` a report may carry (one may appear twice:
            /// `path` and `ls` both print an `entry`).
            pub(crate) const REASONS: &[&str] = &[$($reason),*];

            /// The lines that say this report to people.
            pub(crate) fn human(&self) -> Vec<Line> {
                match self {
                    $(Report::$variant(r) => r.human(),)*
                }
            }
        }

        $(impl From<$ty> for Report {
            fn from(r: $ty) -> Report {
                Report::$variant(r)
            }
        })*
    };
}

reports! {
    /// Any command that blocks on a lock.
    "waiting" => Waiting(Waiting),
    /// Any failure after the command line was parsed.
    "error" => Error(Error),
    /// `path KEY`: the entry's path.
    "entry" => Entry(Entry),
    /// `ls`: one entry listed.
    "entry" => Listed(Listed),
    /// `run --key KEY`: the entry, filled or found (last).
    "entry" => Filled(Filled),
    /// `run` and `use`: how CMD or a fill ended.
    "exited" => Exited(Exited),
    /// `dir`: the cache directory in use.
    "dir" => Dir(Dir),
    /// `init`: the cache adopted.
    "initialized" => Initialized(Initialized),
    /// `status`: the totals.
    "summary" => Summary(Summary),
    /// `status`: one lock holder.
    "holder" => Holder(HolderReport),
    /// `status`: one temp, piece of trash or uncommitted entry.
    "item" => Item(ItemReport),
    /// `rm KEY`: one key removed.
    "removed" => Removed(Removed),
    /// `rm --prefix`: how many it removed.
    "removed-prefix" => RemovedPrefix(RemovedPrefix),
    /// `clean`: what it removed.
    "cleaned" => Cleaned(Cleaned),
    /// `gc`: what it reclaimed and evicted.
    "gc" => Gc(Gc),
    /// `gc` with a limit: one entry evicted.
    "evicted" => Evicted(Evicted),
    /// `gc` with a limit: one entry it left alone.
    "skipped" => Skipped(Skipped),
    /// `verify`: one entry checked.
    "verified" => Verified(Verified),
    /// `verify`: the totals.
    "verify-summary" => VerifySummary(VerifySummary),
    /// `stats`: the usage counters.
    "stats" => Stats(Stats),
    /// `config`: the cache's settings.
    "config" => Config(ConfigReport),
    /// `remote keygen`: the key pair written.
    "key-pair" => KeyPair(KeyPair),
    /// `remote check`: the store works.
    "remote-checked" => RemoteChecked(RemoteChecked),
    /// `ls --remote`: one key the remote holds.
    "remote-entry" => RemoteListed(RemoteListed),
}

/// A path for a JSON message: one that is not UTF-8 (a cache dir may be
/// any bytes) is shown lossily.
pub(crate) fn json_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A time as whole seconds since the Unix epoch.
pub(crate) fn unix_secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs())
}

/// Serializes a time as [`unix_secs`] does (null if unknown).
fn ser_unix_secs<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    unix_secs(*t).serialize(s)
}

/// How long ago `t` was, for people: "just now", "3d 1h ago", or "-".
pub(crate) fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) if d.as_secs() == 0 => "just now".to_owned(),
        Some(d) => format!("{} ago", safecache::display::duration(Duration::from_secs(d.as_secs()))),
        None => "-".to_owned(),
    }
}

/// Something gc or clean could not reclaim, in JSON.
#[derive(Debug, Serialize)]
pub(crate) struct FailureReport {
    path: String,
    reason: String,
}

impl From<&safecache::Failure> for FailureReport {
    fn from(f: &safecache::Failure) -> FailureReport {
        FailureReport { path: f.rel.clone(), reason: f.reason.clone() }
    }
}

/// The failures in JSON.
pub(crate) fn failures(failures: &[safecache::Failure]) -> Vec<FailureReport> {
    failures.iter().map(FailureReport::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each report's JSON carries the `reason` its variant is listed with.
    #[test]
    fn reports_are_tagged_by_reason() {
        let removed = serde_json::to_value(Report::from(Removed { key: "k".to_owned(), existed: true })).unwrap();
        assert_eq!(removed, serde_json::json!({ "reason": "removed", "key": "k", "existed": true }));
        let dir = serde_json::to_string(&Report::from(Dir::new(Path::new("/c")))).unwrap();
        assert_eq!(dir, r#"{"reason":"dir","path":"/c"}"#);
        assert!(Report::REASONS.contains(&"removed-prefix") && Report::REASONS.contains(&"verify-summary"));
    }
}
