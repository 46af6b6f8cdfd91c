//! The report of `config`: the cache's settings, after a change or as
//! shown.

use safecache::display::{duration, size};
use safecache::{Config, Limit};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Human, Line};

/// `config`: every setting the cache stores. For people, the change made,
/// or the settings asked for.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigReport {
    path: String,
    /// The level stored, or the default.
    durability: &'static str,
    /// Whether the cache stores a level.
    durability_stored: bool,
    /// Bytes, `"none"`, or null when not stored.
    max_size: Value,
    /// Seconds, `"never"`, or null when not stored.
    max_age: Value,
    /// Seconds, `"off"`, or null when not stored.
    auto_gc: Value,
    #[serde(skip)]
    config: Config,
    #[serde(skip)]
    shown: ConfigShown,
}

/// What `config` shows people.
#[derive(Debug)]
pub(crate) enum ConfigShown {
    /// The setting it stored (`unset`: removed).
    Changed { name: String, unset: bool },
    /// These settings, each with what overrides it for this command, if
    /// anything does (`--max-size or SAFECACHE_MAX_SIZE (1.0 GiB)`).
    Settings(Vec<(&'static str, Option<String>)>),
}

impl ConfigReport {
    pub(crate) fn new(path: String, config: Config, shown: ConfigShown) -> ConfigReport {
        ConfigReport {
            path,
            durability: config.durability().name(),
            durability_stored: config.durability.is_some(),
            max_size: stored(config.max_size, "none", |n| n),
            max_age: stored(config.max_age, "never", |d| d.as_secs()),
            auto_gc: stored(config.auto_gc, "off", |d| d.as_secs()),
            config,
            shown,
        }
    }
}

impl Human for ConfigReport {
    fn human(&self) -> Vec<Line> {
        let (c, path) = (&self.config, &self.path);
        match &self.shown {
            ConfigShown::Changed { name, unset: true } => {
                vec![Line::Status("Unset", format!("{name} for `{path}`: {}", describe(c, name)))]
            }
            ConfigShown::Changed { name, unset: false } => {
                vec![Line::Status("Configured", format!("{name} {} for `{path}`", describe(c, name)))]
            }
            ConfigShown::Settings(settings) => settings
                .iter()
                .map(|(setting, by)| {
                    let overridden = by.as_ref().map(|by| format!("; {by} overrides it")).unwrap_or_default();
                    Line::Out(format!("{setting} = {}{overridden}", describe(c, setting)))
                })
                .collect(),
        }
    }
}

/// A setting's value for people, with `(default)` when the cache stores
/// none.
fn describe(c: &Config, setting: &str) -> String {
    fn or_default<T: Copy>(stored: Option<Limit<T>>, show: impl Fn(T) -> String, off: &str, default: &str) -> String {
        match stored {
            Some(Limit::Value(v)) => show(v),
            Some(Limit::Off) => off.to_owned(),
            None => default.to_owned(),
        }
    }
    match setting {
        "durability" => {
            format!("{}{}", c.durability(), if c.durability.is_none() { " (default)" } else { "" })
        }
        "max-size" => or_default(c.max_size, size, "none", "none (default)"),
        "max-age" => or_default(c.max_age, duration, "never", "none (default; 30d for the automatic gc)"),
        _ => or_default(c.auto_gc, duration, "off", "1d (default)"),
    }
}

/// A stored limit in JSON: its number, the word for none, or null if unset.
fn stored<T: Copy>(limit: Option<Limit<T>>, off: &str, to: impl Fn(T) -> u64) -> Value {
    match limit {
        Some(Limit::Value(v)) => json!(to(v)),
        Some(Limit::Off) => json!(off),
        None => Value::Null,
    }
}
