//! This defines a fill's log: the latest output of a fill, kept while it
//! runs in `.safecache/fills/<d>.log`, so that a process waiting for the
//! fill can show what the filler is doing ([`Cache::fill_log_tail`]).
//!
//! The filler writes through [`FillLog`] ([`crate::FillDir::log`]), which
//! appends to the file and, once it holds more than [`LOG_MAX`] bytes,
//! replaces it (a new file renamed over it) by the last [`LOG_KEEP`] bytes:
//! older output is dropped, so the log never holds more than `LOG_MAX`
//! plus one write.
//!
//! Invariants:
//! - only the holder of the exclusive entry lock of `<d>` (the filler)
//!   creates, writes or deletes `fills/<d>.log`; the fill deletes it when it
//!   ends, published, failed, cancelled or panicking;
//! - a log left by a killed filler is deleted by gc only while gc itself
//!   holds that entry lock (taken without waiting), so never while a fill
//!   of the key runs;
//! - a reader takes the log as untrusted: no symlink followed, no FIFO
//!   opened, at most [`READ_MAX`] bytes read, and the line it returns is
//!   escaped for a terminal and cut to [`LINE_MAX`] characters;
//! - the log is display only: a write that fails disables it, never the
//!   fill.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;

use crate::cache::Cache;
use crate::display;
use crate::gc::{Failure, GcReport};
use crate::key::Key;
use crate::layout::{self, FILLS_DIR};
use crate::lock::Deadline;
use crate::mode::{LockMode, LockName, Wait};
use crate::sys::Root;

/// The size past which the log is cut down to its last 8 KiB.
pub const LOG_MAX: u64 = 16 * 1024;
/// What is kept of the log when it is cut.
const LOG_KEEP: usize = 8 * 1024;
/// The most a reader reads of a log: a larger file is not one a filler
/// wrote, and reads as no log.
const READ_MAX: u64 = 4 * LOG_MAX;
/// The longest line [`Cache::fill_log_tail`] returns, in characters.
const LINE_MAX: usize = 200;

/// The log of a fill in flight: everything written to it is kept in the
/// cache's metadata, bounded, for as long as the fill runs. Writes never
/// fail: a log that cannot be written is dropped, and the fill goes on.
#[derive(Debug)]
pub struct FillLog<'a> {
    root: &'a Arc<Root>,
    rel: String,
    digest: String,
    /// `None` once a write failed: the log is given up.
    file: Option<std::fs::File>,
    len: u64,
    /// The last [`LOG_KEEP`] bytes written, for when the file is cut.
    tail: VecDeque<u8>,
}

impl<'a> FillLog<'a> {
    /// Starts the log of the fill of `digest` afresh (a dead fill's log is
    /// replaced). The caller holds the exclusive entry lock.
    pub(crate) fn start(root: &'a Arc<Root>, digest: &str) -> FillLog<'a> {
        let rel = layout::fill_log(digest);
        let file = crate::manifest::ensure_dir(root, FILLS_DIR)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| {
                match root.remove_file(&rel) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                root.create_file(&rel)
            })
            .inspect_err(|e| tracing::debug!(log = %rel, error = %e, "cannot keep the fill's log"))
            .ok();
        FillLog { root, rel, digest: digest.to_owned(), file, len: 0, tail: VecDeque::with_capacity(LOG_KEEP) }
    }

    /// Replaces the file by a new one holding the last [`LOG_KEEP`] bytes.
    fn cut(&mut self) -> io::Result<()> {
        let kept: Vec<u8> = self.tail.iter().copied().collect();
        let staging = layout::temp(&self.digest, &layout::random_suffix().map_err(io::Error::other)?);
        let mut file = self.root.create_file(&staging)?;
        file.write_all(&kept).and_then(|()| self.root.rename(&staging, &self.rel)).inspect_err(|_| {
            let _ = self.root.remove_file(&staging);
        })?;
        self.file = Some(file);
        self.len = kept.len() as u64;
        Ok(())
    }
}

impl Write for FillLog<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(file) = &mut self.file else { return Ok(buf.len()) };
        let keep = buf.len().min(LOG_KEEP);
        self.tail.extend(&buf[buf.len() - keep..]);
        let excess = self.tail.len().saturating_sub(LOG_KEEP);
        self.tail.drain(..excess);
        let mut written = file.write_all(buf);
        self.len += buf.len() as u64;
        if written.is_ok() && self.len > LOG_MAX {
            written = self.cut();
        }
        if let Err(e) = written {
            tracing::debug!(log = %self.rel, error = %e, "giving up the fill's log");
            self.file = None;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Deletes the fill's log when dropped: the fill has ended, however it
/// ended. The fill holds the exclusive entry lock until after this.
pub(crate) struct LogGuard {
    pub(crate) root: Arc<Root>,
    pub(crate) digest: String,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        match self.root.remove_file(layout::fill_log(&self.digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                tracing::debug!(digest = %self.digest, error = %e, "could not delete the fill's log; gc will");
            }
            _ => {}
        }
    }
}

impl Cache {
    /// The latest line of output of the fill of `key` now in flight, if it
    /// keeps a log ([`crate::FillDir::log`]) and has written a line: the
    /// last non-blank line (split at `\n` or `\r`, so a progress bar's
    /// latest state), trimmed, escaped for a terminal and cut to 200
    /// characters. `None` when no fill of `key` keeps a log.
    ///
    /// It takes no lock: a waiter calls it while it waits for the filler.
    pub fn fill_log_tail(&self, key: &Key) -> Option<String> {
        let bytes = self.root().read(&layout::fill_log(&key.digest()), READ_MAX).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let line = text.split(['\n', '\r']).map(str::trim).rfind(|l| !l.is_empty())?;
        let escaped = display::escape(line);
        Some(if escaped.chars().count() > LINE_MAX {
            escaped.chars().take(LINE_MAX - 3).collect::<String>() + "..."
        } else {
            escaped
        })
    }

    /// Deletes the logs of fills that are over (their filler killed): each
    /// only while this gc holds its entry lock, taken without waiting.
    pub(crate) fn reclaim_fill_logs(&self, report: &mut GcReport) {
        let root = self.root();
        let Ok(names) = root.read_dir(FILLS_DIR) else { return };
        for entry in names {
            let name = entry.name.to_string_lossy();
            let rel = format!("{FILLS_DIR}/{name}");
            let digest =
                name.strip_suffix(".log").filter(|d| d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()));
            let Some(digest) = digest else {
                // Not a name a filler makes: nobody owns it.
                if let Err(e) = root.remove_tree(&rel) {
                    report.failures.push(Failure::new(&rel, e));
                }
                continue;
            };
            let lock_rel = layout::entry_lock(digest);
            let name = LockName::Entry(digest.to_owned());
            let _lock = match self.lock(&lock_rel, name, LockMode::Exclusive, Deadline::start(Wait::NoWait)) {
                Ok(lock) => lock,
                Err(crate::Error::Busy { .. }) => continue,
                Err(e) => {
                    report.failures.push(Failure::new(&rel, e));
                    continue;
                }
            };
            match root.remove_file(&rel) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => report.failures.push(Failure::new(&rel, e)),
                _ => report.logs += 1,
            }
        }
    }
}
