//! This defines the exit codes (docs/CLI.md lists them) and how an error
//! maps to one, with the hint that tells the user how to fix it.

use std::fmt;

use safecache::ErrorKind;

use crate::hint;

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

/// Every exit status and what it means, in the order the top-level
/// `--help` lists them: the one definition of the table. docs/CLI.md's
/// table lists the same codes in the same order, each meaning starting with
/// the one here (a tidy test checks it).
pub(crate) const CODES: [(&str, &str); 11] = [
    ("0", "ok"),
    ("N", "`run`, `use`: CMD's own exit status; 128 + N if signal N killed CMD"),
    ("1", "`path`, `use` without --fill: the key is not in the cache"),
    ("2", "usage error: a bad option or argument, an invalid key, a cache dir that is not a directory or not a cache"),
    ("65", "`verify`: an entry is corrupt; --verify-on-read: a corrupt entry is in use"),
    ("74", "the cache's filesystem is full, or had less than `run --min-free` or `use --min-free` free for a fill"),
    (
        "75",
        "a lock timed out, or was busy under --lock-timeout 0, or is held by the command's own ancestor (a `run` \
         it runs under)",
    ),
    ("77", "the cache belongs to another user or others can write to it"),
    ("101", "any other failure"),
    (
        "124",
        "a fill ran longer than `run --fill-timeout` or `use --fill-timeout` allows and was killed with every process it started",
    ),
    (
        "128 + N",
        "`run`, `use`: signal N came after a fill's command exited, while its output was hashed: nothing was published",
    ),
];

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

/// The exit code of each kind of core error, and what to append to its
/// message so that it says how to fix the problem. The match is exhaustive
/// on purpose: a new kind in the core fails to compile here until it has a
/// code and a hint.
fn classify(kind: ErrorKind) -> (u8, Option<String>) {
    match kind {
        ErrorKind::InvalidKey | ErrorKind::NotACache | ErrorKind::NotADirectory => (USAGE, None),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => (BUSY, Some(hint::TIMEOUT.to_owned())),
        ErrorKind::LeaseConflict | ErrorKind::HeldByAncestor => (BUSY, None),
        ErrorKind::Io => (FAILURE, Some(hint::UNWRITABLE.to_owned())),
        ErrorKind::UntrustedCache => (UNTRUSTED, None),
        ErrorKind::LocksUnsupported => (FAILURE, Some(hint::NOT_LOCAL.to_owned())),
        ErrorKind::PeerFillFailed => (FAILURE, Some(hint::RETRY_FAILED.to_owned())),
        ErrorKind::NoSpace => (NO_SPACE, Some(hint::no_space())),
        ErrorKind::BelowReserve => (NO_SPACE, Some(hint::below_reserve())),
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
fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|c| c.downcast_ref::<safecache::Error>()).and_then(|e| classify(e.kind()).1)
}

/// The whole chain on one line, with its hint.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut msg = format!("{err:#}");
    if let Some(hint) = hint_for(err) {
        msg.push_str("; ");
        msg.push_str(&hint);
    }
    msg.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    /// Every code the program exits with is in the table `--help` shows.
    #[test]
    fn every_code_is_in_the_table() {
        for code in [super::OK, super::ABSENT, super::USAGE, super::NO_SPACE, super::CORRUPT, super::BUSY] {
            assert!(super::CODES.iter().any(|(c, _)| *c == code.to_string()), "{code} is missing from exit::CODES");
        }
        for code in [super::UNTRUSTED, super::FAILURE] {
            assert!(super::CODES.iter().any(|(c, _)| *c == code.to_string()), "{code} is missing from exit::CODES");
        }
    }
}
