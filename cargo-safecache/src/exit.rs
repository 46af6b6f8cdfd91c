//! This defines the exit codes (docs/CLI.md lists them) and how an error
//! maps to one, with the hint that tells the user how to fix it.

use std::fmt;

use safecache::ErrorKind;

/// Everything went well.
pub(crate) const OK: u8 = 0;
/// `path` of an absent key.
pub(crate) const ABSENT: u8 = 1;
/// A usage error: bad option or argument, invalid key, a cache dir that is
/// not a directory or not a cache.
pub(crate) const USAGE: u8 = 2;
/// The cache's filesystem is full: a fill ran out of space in safecache's
/// own writes, or was not started because less than `--min-free` was left
/// (EX_IOERR).
pub(crate) const NO_SPACE: u8 = 74;
/// `verify` found a corrupt entry, or verify-on-read found one it could
/// not set aside (EX_DATAERR).
pub(crate) const CORRUPT: u8 = 65;
/// A lock timeout, or a busy lock under `--lock-timeout 0` (EX_TEMPFAIL).
pub(crate) const BUSY: u8 = 75;
/// A cache another user could tamper with (EX_NOPERM).
pub(crate) const UNTRUSTED: u8 = 77;
/// Any other failure.
pub(crate) const FAILURE: u8 = 101;

/// An error that carries its own exit code.
#[derive(Debug)]
pub(crate) struct Coded {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// How to change how long a command waits; every wait and timeout message
/// ends with it.
pub(crate) const TIMEOUT_HINT: &str =
    "set --lock-timeout SECS (or `never`) or SAFECACHE_LOCK_TIMEOUT to change how long to wait";

/// How to get out of a full disk; also the end of the warning `run` gives
/// when CMD fails on a nearly full one.
pub(crate) const NO_SPACE_HINT: &str =
    "free space with `cargo safecache gc` or `cargo safecache rm KEY…`, or delete files on that filesystem";

/// The exit code of each kind of core error, and what to append to its
/// message so that it says how to fix the problem. The match is exhaustive
/// on purpose: a new kind in the core fails to compile here until it has a
/// code and a hint.
fn classify(kind: ErrorKind) -> (u8, Option<&'static str>) {
    match kind {
        ErrorKind::InvalidKey | ErrorKind::NotACache | ErrorKind::NotADirectory => (USAGE, None),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => (BUSY, Some(TIMEOUT_HINT)),
        ErrorKind::LeaseConflict | ErrorKind::HeldByAncestor => (BUSY, None),
        ErrorKind::Io => (
            FAILURE,
            Some("check that the cache dir is writable, or pick another with --cache-dir DIR or SAFECACHE_DIR"),
        ),
        ErrorKind::UntrustedCache => (UNTRUSTED, None),
        ErrorKind::LocksUnsupported => {
            (FAILURE, Some("pick a cache dir on a local filesystem with --cache-dir DIR or SAFECACHE_DIR"))
        }
        ErrorKind::PeerFillFailed => (FAILURE, Some("to run the fill yourself instead, pass --retry-failed")),
        ErrorKind::NoSpace => (NO_SPACE, Some(NO_SPACE_HINT)),
        ErrorKind::BelowReserve => (
            NO_SPACE,
            Some(
                "free space with `cargo safecache gc` or `cargo safecache rm KEY…`, or lower the reserve with --min-free",
            ),
        ),
        ErrorKind::UnknownFormat | ErrorKind::NestedCache | ErrorKind::FillMoved | ErrorKind::Fill => (FAILURE, None),
        // The message names each mount point and says to unmount it.
        ErrorKind::MountPoint => (FAILURE, None),
        // The message names the file and the fix.
        ErrorKind::BadConfig => (FAILURE, None),
        // The message names the fix (`stats --reset`).
        ErrorKind::BadStats => (FAILURE, None),
        ErrorKind::Corrupt => (CORRUPT, None),
        // The message names the fix.
        ErrorKind::Unverifiable => (FAILURE, None),
        ErrorKind::Cancelled => (FAILURE, None),
    }
}

/// The exit code for `err`: the first cause in its chain that has one.
pub(crate) fn code_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(coded) = cause.downcast_ref::<Coded>() {
            return coded.code;
        }
        if let Some(e) = cause.downcast_ref::<safecache::Error>() {
            return classify(e.kind()).0;
        }
    }
    FAILURE
}

/// What to append to the message so it says how to fix the problem, when
/// the core's message does not already.
fn hint_for(err: &anyhow::Error) -> Option<&'static str> {
    err.chain().find_map(|c| c.downcast_ref::<safecache::Error>()).and_then(|e| classify(e.kind()).1)
}

/// The whole chain on one line, with its hint.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut msg = format!("{err:#}");
    if let Some(hint) = hint_for(err) {
        msg.push_str("; ");
        msg.push_str(hint);
    }
    msg.replace(['\n', '\r'], " ")
}
