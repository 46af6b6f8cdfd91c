//! This defines failure records: a fill whose filler fails says so, while it
//! still holds the entry lock, so that the processes that were waiting for
//! that fill fail the same way instead of running it again one after
//! another (eight waiters on a fill that exits 7 used to run it eight times).
//!
//! A record is `failed/<d>.json`, replaced whole by rename. It only speaks to
//! processes that were already waiting when the fill failed: a waiter
//! compares the record's time with the time it started, so a process that
//! starts later tries the fill itself. A successful fill deletes the record.
//!
//! A fill that was cancelled ([`Cancelled`]: its command was interrupted or
//! terminated by a signal) is not a failure of the fill: it writes no record,
//! and one of its waiters runs the fill itself, as after a SIGKILL.
//!
//! Invariant: records are advice, read only under the entry lock, and never
//! decide anything about an entry, a temp or trash; a garbage record reads
//! as none.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::display::{self, escape};
use crate::holder;
use crate::layout::{self, FAILED_DIR};
use crate::mode::{LockMode, LockName};
use crate::sys::{self, Root};

/// The largest failure record read; a real one is a few hundred bytes.
const MAX_RECORD_LEN: u64 = 64 * 1024;
/// The longest failure message kept.
const MAX_MESSAGE_LEN: usize = 4096;

/// A fill that failed, as its waiters learn of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedFill {
    /// The key whose fill failed.
    pub key: String,
    /// The failing filler's process id.
    pub pid: u32,
    /// Its host name.
    pub host: String,
    /// Its command line.
    pub command: String,
    /// When it failed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What went wrong, as the filler's error said.
    pub message: String,
    /// The exit code of the command that failed, when the filler ran one
    /// (see [`CommandFailed`]).
    pub exit_code: Option<i32>,
}

/// Escaped for a terminal: the fields come from a file on disk.
impl fmt::Display for FailedFill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ago = now_ms().saturating_sub(self.at_ms);
        let when = match ago / 1000 {
            0 => "under a second ago".to_owned(),
            secs => format!("{} ago", display::duration(Duration::from_secs(secs))),
        };
        write!(
            f,
            "pid {} (`{}`) on {} failed {when}: {}",
            self.pid,
            display::short_command(&self.command),
            escape(&self.host),
            escape(&self.message)
        )
    }
}

/// What a fill function returns when a command it ran failed, so that the
/// processes waiting for the fill can fail with the same exit code.
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct CommandFailed {
    /// The exit code to pass on (128+N for a death by signal N).
    pub code: i32,
    /// How it failed: "the command exited with status 7".
    pub description: String,
}

/// What a fill function returns when it was cancelled rather than failed:
/// its command was ended by SIGINT, SIGTERM or SIGHUP (sent to it, or to the
/// process that ran it and passed it on). Nothing is published and no
/// failure record is written, so a process waiting for the fill runs it
/// itself instead of failing too.
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct Cancelled {
    /// The exit code to report (128+N for signal N).
    pub code: i32,
    /// How it ended: "the command was killed by signal 15".
    pub description: String,
}

/// Whether `error`, or any error in its chain, is a [`Cancelled`].
pub(crate) fn is_cancelled(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<Cancelled>() {
            return true;
        }
        next = e.source();
    }
    false
}

pub(crate) fn now_ms() -> u64 {
    sys::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Records that the fill of `key` failed with `error`. Best effort: a
/// record that cannot be written only costs the waiters a retry.
/// `command`, if given, names the filler instead of the process-wide name.
pub(crate) fn record(
    root: &Root,
    key: &str,
    digest: &str,
    error: &(dyn std::error::Error + 'static),
    command: Option<&[String]>,
) {
    let me = holder::this_process_as(&LockName::Entry(key.to_owned()), "", LockMode::Exclusive, command);
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if message.len() > MAX_MESSAGE_LEN {
        let cut = (0..=MAX_MESSAGE_LEN).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
    }
    let failure = FailedFill {
        key: key.to_owned(),
        pid: me.pid,
        host: me.host,
        command: me.command,
        at_ms: now_ms(),
        message,
        exit_code: error.downcast_ref::<CommandFailed>().map(|c| c.code),
    };
    let written = serde_json::to_vec(&failure).map_err(std::io::Error::other).and_then(|bytes| {
        let suffix = layout::random_suffix().map_err(std::io::Error::other)?;
        let staging = format!("{FAILED_DIR}/{digest}.{suffix}.new");
        match root.create_dir(FAILED_DIR) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        root.write_new(&staging, &bytes)?;
        root.rename(&staging, layout::failure_record(digest)).inspect_err(|_| {
            let _ = root.remove_file(&staging);
        })
    });
    if let Err(e) = written {
        tracing::warn!(%key, error = %e, "could not record the failed fill");
    }
}

/// The failure record of `digest`, if there is a readable one.
pub(crate) fn read(root: &Root, digest: &str) -> Option<FailedFill> {
    let bytes = root.read(&layout::failure_record(digest), MAX_RECORD_LEN).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Deletes the failure record of `digest`, after a fill succeeded.
pub(crate) fn clear(root: &Root, digest: &str) {
    match root.remove_file(layout::failure_record(digest)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::debug!(%digest, error = %e, "could not delete a failure record");
        }
        _ => {}
    }
}
