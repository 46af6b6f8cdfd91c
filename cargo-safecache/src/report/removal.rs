//! The reports of `rm` and `clean`.

use safecache::display::{count, escape, size};
use serde::Serialize;

use super::{FailureReport, Human, Line};

/// `rm KEY`: one key, and whether it was there.
#[derive(Debug, Serialize)]
pub(crate) struct Removed {
    pub(crate) key: String,
    pub(crate) existed: bool,
}

impl Human for Removed {
    fn human(&self) -> Vec<Line> {
        vec![if self.existed {
            Line::Status("Removed", format!("`{}`", self.key))
        } else {
            Line::Status("Absent", format!("`{}` was not in the cache", self.key))
        }]
    }
}

/// `rm --prefix PREFIX`: how many entries it removed.
#[derive(Debug, Serialize)]
pub(crate) struct RemovedPrefix {
    pub(crate) prefix: String,
    pub(crate) removed: usize,
}

impl Human for RemovedPrefix {
    fn human(&self) -> Vec<Line> {
        vec![Line::Status(
            "Removed",
            format!("{} whose key starts with `{}`", count(self.removed, "entry", "entries"), escape(&self.prefix)),
        )]
    }
}

/// `clean`: what it removed, and what it could not.
#[derive(Debug, Serialize)]
pub(crate) struct Cleaned {
    pub(crate) entries: usize,
    /// Bytes freed before it returned.
    pub(crate) bytes: u64,
    /// Whether the rest is being freed by a detached reclaimer.
    pub(crate) background: bool,
    pub(crate) failures: Vec<FailureReport>,
}

impl Human for Cleaned {
    fn human(&self) -> Vec<Line> {
        let freed = if self.background {
            "disk space freed in the background".to_owned()
        } else {
            format!("{} freed", size(self.bytes))
        };
        vec![Line::Status("Cleaned", format!("{}, {freed}", count(self.entries, "entry", "entries")))]
    }
}
