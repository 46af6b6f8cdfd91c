//! `config [NAME [VALUE]]`, `config --unset NAME`: shows, stores or removes
//! the cache's settings, which everyone who uses the cache shares.

use anyhow::Result;
use safecache::display::{duration, size};
use safecache::{Config, Durability, Limit};
use serde_json::{Value, json};

use super::json_path;
use crate::cli::{self, AutoGcEvery, MaxAge, MaxSize};
use crate::ctx::Ctx;
use crate::exit::{self, Coded};

/// A change `config` makes.
enum Change {
    Durability(Durability),
    MaxSize(MaxSize),
    MaxAge(MaxAge),
    AutoGc(AutoGcEvery),
    Unset(String),
}

impl Change {
    /// Parses `value` for `name`: a bad value is a usage error, found
    /// before the cache is opened, so nothing changes.
    fn parse(name: &str, value: &str) -> Result<Change> {
        let parsed = match name {
            "durability" => cli::parse_durability(value).map(Change::Durability),
            "max-size" => cli::parse_max_size(value).map(Change::MaxSize),
            "max-age" => cli::parse_max_age(value).map(Change::MaxAge),
            "auto-gc" => cli::parse_auto_gc(value).map(Change::AutoGc),
            _ => Err(format!("unknown setting; one of: {}", cli::SETTINGS.join(", "))),
        };
        parsed.map_err(|why| {
            Coded {
                code: exit::USAGE,
                message: format!(
                    "invalid value `{}` for `{name}`: {why}; nothing was changed",
                    safecache::display::escape(value)
                ),
            }
            .into()
        })
    }

    fn apply(&self, c: &mut Config) {
        match self {
            Change::Durability(level) => c.durability = Some(*level),
            Change::MaxSize(MaxSize(max)) => c.max_size = Some(max.map_or(Limit::Off, Limit::Value)),
            Change::MaxAge(MaxAge(age)) => c.max_age = Some(age.map_or(Limit::Off, Limit::Value)),
            Change::AutoGc(AutoGcEvery(every)) => c.auto_gc = Some(every.map_or(Limit::Off, Limit::Value)),
            Change::Unset(name) => match name.as_str() {
                "durability" => c.durability = None,
                "max-size" => c.max_size = None,
                "max-age" => c.max_age = None,
                _ => c.auto_gc = None,
            },
        }
    }

    fn name(&self) -> &str {
        match self {
            Change::Durability(_) => "durability",
            Change::MaxSize(_) => "max-size",
            Change::MaxAge(_) => "max-age",
            Change::AutoGc(_) => "auto-gc",
            Change::Unset(name) => name,
        }
    }
}

pub(crate) fn config(ctx: &Ctx, name: Option<&str>, value: Option<&str>, unset: Option<&str>) -> Result<u8> {
    let change = match (name, value, unset) {
        (Some(name), Some(value), _) => Some(Change::parse(name, value)?),
        (_, _, Some(name)) => Some(Change::Unset(name.to_owned())),
        _ => None,
    };
    // Opened at a given level, so that the config file is not read at open:
    // a garbage one must not stop the command that replaces it.
    let cache = ctx.open_adjusted(|o| o.durability = Some(o.durability.unwrap_or_default()))?;
    let shown = cache.path().display();
    let config = match &change {
        Some(change) => {
            let config = ctx.blocking(|| cache.update_config(ctx.wait, |c| change.apply(c)))?;
            let name = change.name();
            match change {
                Change::Unset(_) => {
                    ctx.ui.status("Unset", format!("{name} for `{shown}`: {}", describe(&config, name)))
                }
                _ => ctx.ui.status("Configured", format!("{name} {} for `{shown}`", describe(&config, name))),
            }
            config
        }
        None => {
            let config = cache.config()?;
            for setting in cli::SETTINGS.iter().filter(|s| name.is_none_or(|n| n == **s)) {
                let overridden =
                    overridden_by(ctx, setting).map(|by| format!("; {by} overrides it")).unwrap_or_default();
                ctx.ui.out(format!("{setting} = {}{overridden}", describe(&config, setting)));
            }
            config
        }
    };
    ctx.ui.json(json!({
        "reason": "config",
        "path": json_path(cache.path()),
        "durability": config.durability().name(),
        "durability_stored": config.durability.is_some(),
        "max_size": stored(config.max_size, "none", |n| n),
        "max_age": stored(config.max_age, "never", |d| d.as_secs()),
        "auto_gc": stored(config.auto_gc, "off", |d| d.as_secs()),
    }));
    Ok(exit::OK)
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

/// The option and variable that override `setting` for this command, if
/// one was given.
fn overridden_by(ctx: &Ctx, setting: &str) -> Option<String> {
    let given = &ctx.given;
    let value = match setting {
        "durability" => ctx.durability.map(|d| d.to_string()),
        "max-size" => given.max_size.map(|MaxSize(s)| s.map_or_else(|| "none".to_owned(), size)),
        "max-age" => given.max_age.map(|MaxAge(a)| a.map_or_else(|| "never".to_owned(), duration)),
        _ => given.auto_gc.map(|AutoGcEvery(e)| e.map_or_else(|| "off".to_owned(), duration)),
    }?;
    let var = format!("SAFECACHE_{}", setting.replace('-', "_").to_ascii_uppercase());
    Some(format!("--{setting} or {var} ({value})"))
}

/// A stored limit in JSON: its number, the word for none, or null if unset.
fn stored<T: Copy>(limit: Option<Limit<T>>, off: &str, to: impl Fn(T) -> u64) -> Value {
    match limit {
        Some(Limit::Value(v)) => json!(to(v)),
        Some(Limit::Off) => json!(off),
        None => Value::Null,
    }
}
