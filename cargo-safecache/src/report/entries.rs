//! The reports that name entries and caches: `path`, `ls`, `dir`, `init`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use safecache::display::{count, escape, size};
use serde::Serialize;

use super::{Human, Line, ago, json_path, ser_unix_secs};

/// `path KEY`: the entry's path; for people, its raw bytes on stdout.
#[derive(Debug, Serialize)]
pub(crate) struct Entry {
    pub(crate) key: String,
    path: String,
    #[serde(skip)]
    raw: PathBuf,
}

impl Entry {
    pub(crate) fn new(key: &safecache::Key, path: &Path) -> Entry {
        Entry { key: key.as_str().to_owned(), path: json_path(path), raw: path.to_owned() }
    }
}

impl Human for Entry {
    fn human(&self) -> Vec<Line> {
        vec![Line::Path(self.raw.clone(), "the entry's path")]
    }
}

/// `ls`: one entry; for people, a row of a table whose name column is
/// `width` characters wide.
#[derive(Debug, Serialize)]
pub(crate) struct Listed {
    /// Null for a file adopted by `init` whose name is not a key.
    pub(crate) key: Option<String>,
    pub(crate) stored_name: String,
    pub(crate) path: String,
    pub(crate) bytes: u64,
    #[serde(serialize_with = "ser_unix_secs")]
    pub(crate) last_use: Option<SystemTime>,
    #[serde(skip)]
    pub(crate) width: usize,
}

impl Listed {
    /// The name people see: the key, or the stored name, escaped (names of
    /// adopted files come from disk and may hold control characters).
    pub(crate) fn name(&self) -> String {
        escape(self.key.as_deref().unwrap_or(&self.stored_name))
    }

    /// How many characters [`Listed::name`] takes for an entry with `key`
    /// stored as `stored`.
    pub(crate) fn width_of(key: Option<&str>, stored: &str) -> usize {
        escape(key.unwrap_or(stored)).chars().count()
    }
}

impl Human for Listed {
    fn human(&self) -> Vec<Line> {
        let width = self.width;
        vec![Line::Out(format!("{:<width$}  {:>10}  {}", self.name(), size(self.bytes), ago(self.last_use)))]
    }
}

/// `dir`: the cache directory in use; for people, its raw bytes on stdout.
#[derive(Debug, Serialize)]
pub(crate) struct Dir {
    path: String,
    #[serde(skip)]
    raw: PathBuf,
}

impl Dir {
    pub(crate) fn new(dir: &Path) -> Dir {
        Dir { path: json_path(dir), raw: dir.to_owned() }
    }
}

impl Human for Dir {
    fn human(&self) -> Vec<Line> {
        vec![Line::Path(self.raw.clone(), "the cache directory")]
    }
}

/// `init`: the directory adopted as a cache.
#[derive(Debug, Serialize)]
pub(crate) struct Initialized {
    pub(crate) path: String,
    pub(crate) entries: usize,
    /// It was a cache before.
    pub(crate) already: bool,
}

impl Human for Initialized {
    fn human(&self) -> Vec<Line> {
        let entries = count(self.entries, "entry", "entries");
        vec![if self.already {
            Line::Status("Unchanged", format!("`{}` is already a cache ({entries})", self.path))
        } else {
            Line::Status("Initialized", format!("a cache at `{}` ({entries})", self.path))
        }]
    }
}
