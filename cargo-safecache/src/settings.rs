//! This defines [`Settings`] and [`Output`]: what the command line, the
//! environment and the cache's config resolve to (as ripgrep's `HiArgs` is
//! to its parsed `LowArgs`). Commands read these values, never the flags:
//! every default, every precedence rule and every derived value (the wait,
//! the limits, the automatic gc) is decided here.
//!
//! Precedence, for each setting: the flag, else its environment variable
//! (clap reads both into [`GlobalOpts`]), else what the cache's config
//! stores (`config max-size`, `config max-age`, `config auto-gc`), else the
//! default. Everything but the gc settings is resolved before any command
//! runs; the gc settings ([`Given`]) are resolved against the config of the
//! cache a command opened, once it has opened it. `gc` applies only the
//! limits given or stored; the automatic gc adds its own defaults (once a
//! day, entries unused for 30 days). Durability is resolved by the core,
//! which reads the cache's stored level itself: the flag or variable is
//! passed on as an override.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use etcetera::BaseStrategy;
use safecache::{AutoGc, Config, Durability, Limit, Limits, Wait};

use crate::cli::{AutoGcEvery, ColorWhen, GlobalOpts, MaxAge, MaxSize, MessageFormat, RemoteOpts};

/// The lock timeout when stderr is not a terminal and none was given.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How the CLI talks: resolved for every command, including those that
/// need no cache (`completions`, `man`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Output {
    /// `--message-format json`.
    pub(crate) json: bool,
    /// `--quiet`.
    pub(crate) quiet: bool,
    /// `--color`, `CARGO_TERM_COLOR` and `NO_COLOR`, against stderr.
    pub(crate) color: bool,
    /// `-v` count (`SAFECACHE_LOG` overrides it when tracing starts).
    pub(crate) verbose: u8,
}

impl Output {
    pub(crate) fn resolve(g: &GlobalOpts) -> Output {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match g.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => std::io::stderr().is_terminal() && !no_color,
        };
        Output { json: g.message_format == MessageFormat::Json, quiet: g.quiet, color, verbose: g.verbose }
    }
}

/// Everything a command that uses a cache needs to know, resolved.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The cache directory, absolute.
    pub(crate) cache_dir: PathBuf,
    /// How long to wait for a lock: `--lock-timeout`, else forever on a
    /// terminal and [`DEFAULT_TIMEOUT`] elsewhere.
    pub(crate) wait: Wait,
    /// `--allow-untrusted-cache`.
    pub(crate) allow_untrusted: bool,
    /// `--auto-gc`, `--max-size` and `--max-age`, as given: resolved
    /// against the config of the cache a command opens.
    pub(crate) given: Given,
    /// `--durability` or `SAFECACHE_DURABILITY`: overrides the cache's own.
    pub(crate) durability: Option<Durability>,
    /// `--verify-on-read`.
    pub(crate) verify_on_read: bool,
    /// The remote tier's options, as given: resolved against the config of
    /// the cache a command opens (`remote::Setup`).
    pub(crate) remote: RemoteOpts,
}

impl Settings {
    /// Resolves `g` for a command that uses a cache.
    pub(crate) fn resolve(g: &GlobalOpts) -> Result<Settings> {
        let cache_dir = resolve_cache_dir(g.cache_dir.as_deref())?;
        Ok(Settings::from_parts(g, cache_dir, std::io::stderr().is_terminal()))
    }

    /// [`Settings::resolve`] once the cache dir and whether stderr is a
    /// terminal are known.
    fn from_parts(g: &GlobalOpts, cache_dir: PathBuf, terminal: bool) -> Settings {
        let timeout = match g.lock_timeout {
            Some(t) => Some(t),
            None if terminal => None,
            None => Some(DEFAULT_TIMEOUT),
        };
        Settings {
            cache_dir,
            wait: Wait::from_timeout(timeout),
            allow_untrusted: g.allow_untrusted_cache,
            given: Given { auto_gc: g.auto_gc, max_size: g.max_size, max_age: g.max_age },
            durability: g.durability,
            verify_on_read: g.verify_on_read,
            remote: g.remote.clone(),
        }
    }
}

/// The gc settings given on the command line or in the environment.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Given {
    pub(crate) auto_gc: Option<AutoGcEvery>,
    pub(crate) max_size: Option<MaxSize>,
    pub(crate) max_age: Option<MaxAge>,
}

impl Given {
    /// The size limit: `Some(None)` for explicitly none, `None` for unset.
    fn max_size(&self, config: &Config) -> Option<Option<u64>> {
        self.max_size.map(|s| s.0).or_else(|| config.max_size.map(Limit::value))
    }

    fn max_age(&self, config: &Config) -> Option<Option<Duration>> {
        self.max_age.map(|a| a.0).or_else(|| config.max_age.map(Limit::value))
    }

    /// The limits `gc` applies: given, else stored, else none.
    pub(crate) fn limits(&self, config: &Config) -> Limits {
        Limits { max_size: self.max_size(config).flatten(), max_age: self.max_age(config).flatten() }
    }

    /// The automatic gc: off if `off` was given or stored; else as often as
    /// given or stored (once a day by default), with the limits given or
    /// stored and, unless one was, the default age limit.
    pub(crate) fn auto_gc(&self, config: &Config) -> Option<AutoGc> {
        let every = match self.auto_gc.map(|e| e.0).or_else(|| config.auto_gc.map(Limit::value)) {
            Some(None) => return None,
            Some(Some(every)) => every,
            None => safecache::DEFAULT_AUTO_GC_EVERY,
        };
        let max_age = self.max_age(config).unwrap_or(Some(safecache::DEFAULT_MAX_AGE));
        Some(AutoGc { every, limits: Limits { max_size: self.max_size(config).flatten(), max_age } })
    }
}

/// `--cache-dir`, else `SAFECACHE_DIR` (clap reads both), else the platform
/// cache dir; made absolute so that exported paths work from any directory.
fn resolve_cache_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given.filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => etcetera::choose_base_strategy()
            .context("cannot find the platform cache dir (is HOME set?); pass --cache-dir DIR or set SAFECACHE_DIR")?
            .cache_dir()
            .join("safecache"),
    };
    std::path::absolute(&dir).with_context(|| format!("cannot make the cache dir `{}` absolute", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// The global options parsed from `args` alone: the variables of
    /// whoever runs the tests are not read.
    fn global(args: &[&str]) -> GlobalOpts {
        #[derive(Parser)]
        struct Top {
            #[command(flatten)]
            g: GlobalOpts,
        }
        let cmd = Top::command().mut_args(|a| a.env(None::<&str>));
        let matches =
            cmd.try_get_matches_from(std::iter::once("safecache").chain(args.iter().copied())).expect("parse");
        Top::from_arg_matches(&matches).expect("parse").g
    }

    fn settings(args: &[&str], terminal: bool) -> Settings {
        Settings::from_parts(&global(args), PathBuf::from("/c"), terminal)
    }

    /// The wait: forever on a terminal, 300 s elsewhere, or as given.
    #[test]
    fn the_wait_depends_on_the_terminal_unless_given() {
        let wait = |args: &[&str], terminal| settings(args, terminal).wait;
        assert_eq!(wait(&[], true), Wait::from_timeout(None));
        assert_eq!(wait(&[], false), Wait::from_timeout(Some(DEFAULT_TIMEOUT)));
        assert_eq!(wait(&["--lock-timeout", "2"], true), Wait::from_timeout(Some(Duration::from_secs(2))));
    }

    fn config(
        max_size: Option<Limit<u64>>,
        max_age: Option<Limit<Duration>>,
        auto_gc: Option<Limit<Duration>>,
    ) -> Config {
        let mut c = Config::default();
        (c.max_size, c.max_age, c.auto_gc) = (max_size, max_age, auto_gc);
        c
    }

    #[test]
    fn flags_override_the_config_which_overrides_the_defaults() {
        let none = Given::default();
        let empty = Config::default();
        assert_eq!(none.limits(&empty), Limits::default());
        assert_eq!(none.auto_gc(&empty), Some(AutoGc::default()));

        let stored = config(Some(Limit::Value(100)), Some(Limit::Value(2 * DAY)), Some(Limit::Value(DAY / 2)));
        assert_eq!(none.limits(&stored), Limits { max_size: Some(100), max_age: Some(2 * DAY) });
        let auto = none.auto_gc(&stored).expect("on");
        assert_eq!((auto.every, auto.limits), (DAY / 2, Limits { max_size: Some(100), max_age: Some(2 * DAY) }));

        let given = Given {
            auto_gc: Some(AutoGcEvery(Some(DAY))),
            max_size: Some(MaxSize(None)),
            max_age: Some(MaxAge(Some(DAY))),
        };
        assert_eq!(given.limits(&stored), Limits { max_size: None, max_age: Some(DAY) });
        assert_eq!(given.auto_gc(&stored).map(|a| a.every), Some(DAY));

        let off = config(Some(Limit::Off), Some(Limit::Off), Some(Limit::Off));
        assert_eq!(none.limits(&off), Limits::default());
        assert_eq!(none.auto_gc(&off), None, "auto-gc off in the config");
        let on = Given { auto_gc: Some(AutoGcEvery(Some(DAY))), ..Given::default() };
        assert_eq!(on.auto_gc(&off).map(|a| a.limits), Some(Limits::default()), "never: no age limit");
    }
}
