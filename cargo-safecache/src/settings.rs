//! This defines [`Settings`] and [`Output`]: what the command line, the
//! environment and the cache's config resolve to, once, before any command
//! runs (as ripgrep's `HiArgs` is to its parsed `LowArgs`). Commands read
//! these values, never the flags: every default, every precedence rule and
//! every derived value (the wait, the limits, the automatic gc) is decided
//! here.
//!
//! Precedence, for each setting: the flag, else its environment variable
//! (clap reads both into [`GlobalOpts`]), else what the cache's config
//! stores ([`Stored`]), else the default. Durability is the exception so
//! far: the core reads the cache's stored level itself, so the flag or
//! variable is passed on as an override.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use etcetera::BaseStrategy;
use safecache::{AutoGc, Durability, Limits, Wait};

use crate::cli::{AutoGcEvery, ColorWhen, GlobalOpts, MaxAge, MessageFormat};

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

/// What a cache's config may store that a flag or variable overrides. The
/// seam for config-stored limits: [`Settings::resolve`] asks for them once
/// the cache dir is known, and uses each only where no flag or variable
/// gave one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) max_size: Option<u64>,
    pub(crate) max_age: Option<MaxAge>,
    pub(crate) auto_gc: Option<AutoGcEvery>,
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
    /// `--max-size` and `--max-age` (or the stored ones), as given: `gc`
    /// applies them.
    pub(crate) limits: Limits,
    /// The automatic gc (`--auto-gc` and the limits, with its defaults);
    /// `None` when off.
    pub(crate) auto_gc: Option<AutoGc>,
    /// `--durability` or `SAFECACHE_DURABILITY`: overrides the cache's own.
    pub(crate) durability: Option<Durability>,
    /// `--verify-on-read`.
    pub(crate) verify_on_read: bool,
}

impl Settings {
    /// Resolves `g` for a command that uses a cache. `stored` reads what
    /// the cache at the given dir stores (see [`Stored`]).
    pub(crate) fn resolve(g: &GlobalOpts, stored: impl FnOnce(&Path) -> Result<Stored>) -> Result<Settings> {
        let cache_dir = resolve_cache_dir(g.cache_dir.as_deref())?;
        let stored = stored(&cache_dir)?;
        Ok(Settings::from_parts(g, cache_dir, stored, std::io::stderr().is_terminal()))
    }

    /// [`Settings::resolve`] once the cache dir, what it stores and
    /// whether stderr is a terminal are known.
    fn from_parts(g: &GlobalOpts, cache_dir: PathBuf, stored: Stored, terminal: bool) -> Settings {
        let timeout = match g.lock_timeout {
            Some(t) => Some(t),
            None if terminal => None,
            None => Some(DEFAULT_TIMEOUT),
        };
        let max_size = g.max_size.or(stored.max_size);
        let max_age = g.max_age.or(stored.max_age);
        let every = g.auto_gc.or(stored.auto_gc);
        Settings {
            cache_dir,
            wait: Wait::from_timeout(timeout),
            allow_untrusted: g.allow_untrusted_cache,
            limits: Limits { max_size, max_age: max_age.and_then(|a| a.0) },
            auto_gc: auto_gc(every, max_size, max_age),
            durability: g.durability,
            verify_on_read: g.verify_on_read,
        }
    }
}

/// The automatic gc: on unless `--auto-gc off`, once a day unless told
/// otherwise, with the limits given and, unless one was given, the default
/// age limit (entries unused for 30 days).
fn auto_gc(every: Option<AutoGcEvery>, max_size: Option<u64>, max_age: Option<MaxAge>) -> Option<AutoGc> {
    let every = match every {
        Some(AutoGcEvery(None)) => return None,
        Some(AutoGcEvery(Some(every))) => every,
        None => safecache::DEFAULT_AUTO_GC_EVERY,
    };
    let max_age = match max_age {
        Some(MaxAge(age)) => age,
        None => Some(safecache::DEFAULT_MAX_AGE),
    };
    Some(AutoGc { every, limits: Limits { max_size, max_age } })
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

    fn settings(args: &[&str], stored: Stored, terminal: bool) -> Settings {
        Settings::from_parts(&global(args), PathBuf::from("/c"), stored, terminal)
    }

    const DAY: Duration = Duration::from_secs(86_400);

    /// The wait: forever on a terminal, 300 s elsewhere, or as given.
    #[test]
    fn the_wait_depends_on_the_terminal_unless_given() {
        let wait = |args: &[&str], terminal| settings(args, Stored::default(), terminal).wait;
        assert_eq!(wait(&[], true), Wait::from_timeout(None));
        assert_eq!(wait(&[], false), Wait::from_timeout(Some(DEFAULT_TIMEOUT)));
        assert_eq!(wait(&["--lock-timeout", "2"], true), Wait::from_timeout(Some(Duration::from_secs(2))));
    }

    /// A flag beats what the cache stores; what it stores beats the default.
    #[test]
    fn flags_override_stored_values_which_override_defaults() {
        let stored = Stored {
            max_size: Some(1000),
            max_age: Some(MaxAge(Some(DAY))),
            auto_gc: Some(AutoGcEvery(Some(2 * DAY))),
        };
        let s = settings(&[], stored, false);
        assert_eq!(s.limits, Limits { max_size: Some(1000), max_age: Some(DAY) });
        let auto = s.auto_gc.expect("on");
        assert_eq!((auto.every, auto.limits), (2 * DAY, Limits { max_size: Some(1000), max_age: Some(DAY) }));

        let s = settings(&["--max-size", "5", "--max-age", "never", "--auto-gc", "off"], stored, false);
        assert_eq!(s.limits, Limits { max_size: Some(5), max_age: None });
        assert!(s.auto_gc.is_none());

        let s = settings(&[], Stored::default(), false);
        assert_eq!(s.limits, Limits::default(), "gc has no limit by default");
        let auto = s.auto_gc.expect("on by default");
        assert_eq!(
            (auto.every, auto.limits.max_age, auto.limits.max_size),
            (safecache::DEFAULT_AUTO_GC_EVERY, Some(safecache::DEFAULT_MAX_AGE), None)
        );
    }
}
