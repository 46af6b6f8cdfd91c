//! This defines [`Ctx`], what every subcommand gets: the output channels,
//! the cache directory and the wait, and the one way to open the cache.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use safecache::{AutoGc, Cache, Durability, Limits, LockMode, Options, Wait};

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
    /// `--max-size` and `--max-age`, as given (`gc` applies them).
    pub(crate) limits: Limits,
    /// The automatic gc (`--auto-gc` and the limits, with its defaults).
    pub(crate) auto_gc: Option<AutoGc>,
    /// The cache the command opened, for the automatic gc after it.
    pub(crate) opened: std::sync::OnceLock<Cache>,
    /// `--durability` or `SAFECACHE_DURABILITY`: overrides the cache's own.
    pub(crate) durability: Option<Durability>,
    /// `--verify-on-read`.
    pub(crate) verify_on_read: bool,
}

impl Ctx {
    pub(crate) fn options(&self, inherited_lease: Option<LockMode>) -> Options {
        let ui = Arc::clone(&self.ui);
        Options {
            inherited_lease,
            on_wait: Some(Arc::new(move |ev| ui.waiting(ev))),
            ancestors: inherit::ancestors(),
            allow_untrusted: self.allow_untrusted,
            retry_failed: false,
            min_free: 0,
            auto_gc: self.auto_gc,
            durability: self.durability,
            verify_on_read: self.verify_on_read,
            upgrade_wait: self.wait,
            cancel: safecache::Cancel::default(),
            fill_command: None,
        }
    }

    /// Opens (creating if missing or empty) the cache, under the lease a
    /// parent `run` holds on it, if any. Each command opens it once.
    pub(crate) fn open(&self) -> Result<Cache> {
        self.open_with(self.options(inherit::inherited_lease(&self.cache_dir)))
    }

    /// Like [`Ctx::open`], with the options adjusted by `adjust`.
    pub(crate) fn open_adjusted(&self, adjust: impl FnOnce(&mut Options)) -> Result<Cache> {
        let mut options = self.options(inherit::inherited_lease(&self.cache_dir));
        adjust(&mut options);
        self.open_with(options)
    }

    fn open_with(&self, options: Options) -> Result<Cache> {
        let cache = crate::ui::naming_dir(
            Cache::open_ambient(&self.cache_dir, options),
            "cannot use cache dir",
            &self.cache_dir,
            "",
        )?;
        // Said once per command: each command opens the cache once.
        if let Some(warning) = cache.lock_warning() {
            self.ui.warn(warning);
        }
        let _ = self.opened.set(cache.clone());
        Ok(cache)
    }

    /// Runs a core operation that may block, and clears the wait display
    /// after it.
    pub(crate) fn blocking<T>(&self, f: impl FnOnce() -> T) -> T {
        let out = f();
        self.ui.done_waiting();
        out
    }
}
