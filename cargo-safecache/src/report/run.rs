//! The reports of the commands that run CMD: `run` and `use`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Human, Line, json_path};

/// `run --key KEY`: the entry, filled now or found; for people, a status
/// line and the path, alone, on stdout.
#[derive(Debug, Serialize)]
pub(crate) struct Filled {
    key: String,
    path: String,
    filled: bool,
    /// What the remote tier did, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<super::Moved>,
    #[serde(skip)]
    raw: PathBuf,
}

impl Filled {
    pub(crate) fn new(key: &safecache::Key, path: &Path, filled: bool, remote: Option<super::Moved>) -> Filled {
        Filled { key: key.as_str().to_owned(), path: json_path(path), filled, remote, raw: path.to_owned() }
    }
}

impl Human for Filled {
    fn human(&self) -> Vec<Line> {
        let status = if self.filled {
            Line::Status("Filled", format!("`{}` at {}", self.key, self.raw.display()))
        } else {
            Line::Status("Fresh", format!("`{}` is already in the cache; the command was not run", self.key))
        };
        vec![status, Line::Path(self.raw.clone(), "the entry's path")]
    }
}

/// How CMD, or a fill, ended: the exit code `run` or `use` exits with. Its
/// human form is the message said beside it (none for a CMD that ran).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Exited {
    pub(crate) exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    /// `use`: whether the entry was there before this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) hit: Option<bool>,
    /// A fill that ended without publishing: `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) published: Option<bool>,
    /// A fill cancelled by a signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cancelled: Option<bool>,
    /// A fill killed for running past --fill-timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timed_out: Option<bool>,
    /// A failed fill: the bytes free when it failed, if the filesystem was
    /// nearly full (else null).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fs_available: Option<Option<u64>>,
    /// What the remote tier did, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) remote: Option<super::Moved>,
}

impl Human for Exited {
    fn human(&self) -> Vec<Line> {
        Vec::new()
    }
}
