//! `config [NAME [VALUE]]`, `config --unset NAME`: shows, stores or removes
//! the cache's settings, which everyone who uses the cache shares.

use anyhow::Result;
use safecache::display::{duration, size};
use safecache::{Config, Durability, Limit};

use crate::cli::{self, AutoGcEvery, MaxAge, MaxSize};
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::report::{self, ConfigReport, ConfigShown};

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
    let path = report::json_path(cache.path());
    let report = match &change {
        Some(change) => {
            let config = ctx.blocking(|| cache.update_config(ctx.wait, |c| change.apply(c)))?;
            let shown =
                ConfigShown::Changed { name: change.name().to_owned(), unset: matches!(change, Change::Unset(_)) };
            ConfigReport::new(path, config, shown)
        }
        None => {
            let settings = cli::SETTINGS
                .iter()
                .filter(|s| name.is_none_or(|n| n == **s))
                .map(|setting| (*setting, overridden_by(ctx, setting)))
                .collect();
            ConfigReport::new(path, cache.config()?, ConfigShown::Settings(settings))
        }
    };
    ctx.ui.report(report)?;
    Ok(exit::OK)
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
