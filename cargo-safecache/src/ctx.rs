//! This defines [`Ctx`], what every subcommand gets: the output channels,
//! the resolved [`Settings`] (which it dereferences to: `ctx.wait`), and
//! the one way to open the cache.

use std::sync::Arc;

use anyhow::Result;
use safecache::{Cache, LockMode, Options};

use crate::inherit;
use crate::settings::Settings;
use crate::ui::Ui;

/// Everything a subcommand needs.
pub(crate) struct Ctx {
    pub(crate) ui: Arc<Ui>,
    /// What the flags, the environment and the cache's config resolved to.
    pub(crate) settings: Settings,
    /// The cache the command opened, for the automatic gc after it.
    pub(crate) opened: std::sync::OnceLock<Cache>,
}

impl std::ops::Deref for Ctx {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl Ctx {
    pub(crate) fn options(&self, inherited_lease: Option<LockMode>) -> Options {
        let ui = Arc::clone(&self.ui);
        Options {
            inherited_lease,
            on_wait: Some(Arc::new(move |ev| ui.waiting(ev))),
            ancestors: safecache::Ancestors::lazy(inherit::ancestors),
            allow_untrusted: self.allow_untrusted,
            retry_failed: false,
            min_free: 0,
            // Resolved after the command, with the cache's config.
            auto_gc: None,
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
        let _ = self.ui.cache.set(cache.clone());
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
