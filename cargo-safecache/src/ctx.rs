//! This defines [`Ctx`], what every subcommand gets: the output channels,
//! the cache directory and the wait, and the one way to open the cache.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use safecache::{Cache, LockMode, Options, Wait};

use crate::inherit;
use crate::ui::Ui;

/// Everything a subcommand needs.
pub(crate) struct Ctx {
    pub(crate) ui: Arc<Ui>,
    /// The cache directory, absolute.
    pub(crate) cache_dir: PathBuf,
    pub(crate) wait: Wait,
    /// `--allow-untrusted-cache`.
    pub(crate) allow_untrusted: bool,
}

impl Ctx {
    pub(crate) fn options(&self, inherited_lease: Option<LockMode>) -> Options {
        let ui = Arc::clone(&self.ui);
        Options {
            inherited_lease,
            on_wait: Some(Arc::new(move |ev| ui.waiting(ev))),
            allow_untrusted: self.allow_untrusted,
        }
    }

    /// Opens (creating if missing or empty) the cache, under the lease a
    /// parent `run` holds on it, if any. Each command opens it once.
    pub(crate) fn open(&self) -> Result<Cache> {
        Cache::open_ambient(&self.cache_dir, self.options(inherit::inherited_lease(&self.cache_dir)))
            .with_context(|| format!("cannot use cache dir `{}`", self.cache_dir.display()))
    }

    /// Runs a core operation that may block, and clears the wait display
    /// after it.
    pub(crate) fn blocking<T>(&self, f: impl FnOnce() -> T) -> T {
        let out = f();
        self.ui.done_waiting();
        out
    }
}
