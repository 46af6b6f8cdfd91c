//! This defines how the gc settings are resolved: what the command line
//! and the environment gave (clap reads both), else what the cache's config
//! stores (`config max-size`, `config max-age`, `config auto-gc`), else the
//! defaults. `gc` applies only the limits given or stored; the automatic gc
//! adds its own defaults (once a day, entries unused for 30 days).

use std::time::Duration;

use safecache::{AutoGc, Config, Limit, Limits};

use crate::cli::{AutoGcEvery, MaxAge, MaxSize};

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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

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
