//! This defines the locking vocabulary every other module shares: how a
//! lock is held ([`LockMode`]), what it protects ([`LockName`]) and how long
//! an operation may wait for it ([`Wait`]).
//!
//! Invariant: this module imports nothing from the rest of the crate but
//! `display`, so the modules that use these words never import each other
//! for them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Many holders at once; excludes exclusive holders.
    Shared,
    /// One holder; excludes everyone else.
    Exclusive,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// How long an operation may wait for a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Wait {
    /// Fail at once with [`Error::Busy`](crate::Error::Busy) if the lock is held.
    NoWait,
    /// Wait at most this long, then fail with [`Error::Busy`](crate::Error::Busy).
    Timeout(Duration),
    /// Wait for as long as it takes.
    #[default]
    Forever,
}

impl Wait {
    /// `Some(d)` maps to a timeout of `d` (zero meaning no wait), `None` to
    /// forever.
    pub fn from_timeout(timeout: Option<Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(d) if d.is_zero() => Wait::NoWait,
            Some(d) => Wait::Timeout(d),
        }
    }
}

/// What a lock protects, for messages and holder records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "lowercase")]
#[non_exhaustive]
pub enum LockName {
    /// The cache-wide lease.
    Lease,
    /// The lock of one entry, held shared by pins and exclusive by a fill or
    /// a remove.
    Entry(String),
    /// The lock that lets one gc run at a time.
    Gc,
    /// The queue of a lock: held exclusively by a process waiting to take
    /// that lock exclusively, so shared lockers arriving meanwhile wait
    /// behind it instead of starving it.
    Queue(Box<LockName>),
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockName::Lease => f.write_str("the cache lease"),
            // The key may come from a holder record on disk.
            LockName::Entry(key) => write!(f, "entry `{}`", crate::display::escape(key)),
            LockName::Gc => f.write_str("the cache's gc"),
            LockName::Queue(of) => write!(f, "the queue for {of}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_map_to_waits() {
        assert_eq!(Wait::from_timeout(None), Wait::Forever);
        assert_eq!(Wait::from_timeout(Some(Duration::ZERO)), Wait::NoWait);
        assert_eq!(Wait::from_timeout(Some(Duration::from_secs(3))), Wait::Timeout(Duration::from_secs(3)));
    }

    #[test]
    fn lock_names_serialize_for_holder_records() {
        let json = serde_json::to_string(&LockName::Entry("a/b".into())).unwrap();
        assert_eq!(json, r#"{"kind":"entry","key":"a/b"}"#);
        assert_eq!(serde_json::to_string(&LockName::Lease).unwrap(), r#"{"kind":"lease"}"#);
        assert_eq!(LockName::Gc.to_string(), "the cache's gc");
    }
}
