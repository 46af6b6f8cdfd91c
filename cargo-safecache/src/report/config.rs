//! The report of `config`: the cache's settings, after a change or as
//! shown.
//!
//! The remote tier's settings are shown as stored (escaped for people), but
//! the value of an option whose name says it is a secret
//! ([`secret_option`]) is never shown, and the signing key only by its
//! path.

use std::collections::BTreeMap;
use std::time::Duration;

use safecache::display::{duration, escape, size};
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
    /// The remote tier's settings, as stored (boxed, as the config: a
    /// report is moved around as one of many).
    remote: Box<RemoteStored>,
    #[serde(skip)]
    config: Box<Config>,
    #[serde(skip)]
    shown: ConfigShown,
    #[serde(skip)]
    defaults: RemoteDefaults,
}

/// The remote tier's defaults, for people.
#[derive(Clone, Copy, Debug)]
struct RemoteDefaults {
    namespace: &'static str,
    timeout: Duration,
}

/// The remote settings a config stores: each as its text, null when not
/// stored; `options` by name, a secret's value as `"(hidden)"`.
#[derive(Debug, Serialize)]
struct RemoteStored {
    url: Option<String>,
    mode: Option<String>,
    namespace: Option<String>,
    trusted_keys: Option<String>,
    signing_key: Option<String>,
    timeout: Option<String>,
    options: BTreeMap<String, String>,
}

impl RemoteStored {
    fn of(c: &Config) -> RemoteStored {
        let get = |name: &str| c.remote.get(name).cloned();
        RemoteStored {
            url: get("url"),
            mode: get("mode"),
            namespace: get("namespace"),
            trusted_keys: get("trusted-keys"),
            signing_key: get("signing-key"),
            timeout: get("timeout"),
            options: options(c)
                .map(|(name, value)| (name.to_owned(), shown_option(name, value, str::to_owned)))
                .collect(),
        }
    }
}

/// Whether the object_store option `name` holds a secret (a secret access
/// key, a token, a password, an account key): its value is never shown.
fn secret_option(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["secret", "token", "password", "access_key", "account_key", "sas_key", "credential"]
        .iter()
        .any(|s| name.contains(s))
        && name != "aws_access_key_id"
}

impl ConfigReport {
    /// Whether the object_store option `name` holds a secret, whose value
    /// `config` never shows.
    pub(crate) fn secret_option(name: &str) -> bool {
        secret_option(name)
    }
}

/// The options `c` stores, by name.
fn options(c: &Config) -> impl Iterator<Item = (&str, &str)> {
    c.remote.iter().filter_map(|(k, v)| Some((k.strip_prefix("option.")?, v.as_str())))
}

/// An option's value as shown: `(hidden)` for a secret's.
fn shown_option(name: &str, value: &str, show: impl Fn(&str) -> String) -> String {
    if secret_option(name) { "(hidden)".to_owned() } else { show(value) }
}

/// What `config` shows people.
#[derive(Debug)]
pub(crate) enum ConfigShown {
    /// The setting it stored (`unset`: removed); `detail` names what of
    /// it changed, where its whole value would not (one remote option).
    Changed { name: String, unset: bool, detail: Option<String> },
    /// These settings, each with what overrides it for this command, if
    /// anything does (`--max-size or SAFECACHE_MAX_SIZE (1.0 GiB)`).
    Settings(Vec<(&'static str, Option<String>)>),
}

impl ConfigReport {
    /// The report of `config`; the remote tier's defaults are shown as
    /// `namespace` and `timeout`.
    pub(crate) fn new(
        path: String,
        config: Config,
        shown: ConfigShown,
        namespace: &'static str,
        timeout: Duration,
    ) -> ConfigReport {
        ConfigReport {
            path,
            durability: config.durability().name(),
            durability_stored: config.durability.is_some(),
            max_size: stored(config.max_size, "none", |n| n),
            max_age: stored(config.max_age, "never", |d| d.as_secs()),
            auto_gc: stored(config.auto_gc, "off", |d| d.as_secs()),
            remote: Box::new(RemoteStored::of(&config)),
            config: Box::new(config),
            shown,
            defaults: RemoteDefaults { namespace, timeout },
        }
    }
}

impl Human for ConfigReport {
    fn human(&self) -> Vec<Line> {
        let (c, path, d) = (&self.config, &self.path, &self.defaults);
        match &self.shown {
            ConfigShown::Changed { name, unset: true, detail: Some(detail) } => {
                vec![Line::Status("Unset", format!("{name} {detail} for `{path}`"))]
            }
            ConfigShown::Changed { name, unset: true, detail: None } => {
                vec![Line::Status("Unset", format!("{name} for `{path}`: {}", describe(c, d, name)))]
            }
            ConfigShown::Changed { name, unset: false, detail } => {
                let value = detail.clone().unwrap_or_else(|| describe(c, d, name));
                vec![Line::Status("Configured", format!("{name} {value} for `{path}`"))]
            }
            ConfigShown::Settings(settings) => settings
                .iter()
                .flat_map(|(setting, by)| {
                    let overridden = by.as_ref().map(|by| format!("; {by} overrides it")).unwrap_or_default();
                    let values: Vec<String> = if *setting == "remote-option" && options(c).next().is_some() {
                        options(c)
                            .map(|(name, value)| format!("{}={}", escape(name), shown_option(name, value, escape)))
                            .collect()
                    } else {
                        vec![describe(c, d, setting)]
                    };
                    values.into_iter().map(move |value| Line::Out(format!("{setting} = {value}{overridden}")))
                })
                .collect(),
        }
    }
}

/// A setting's value for people, with `(default)` when the cache stores
/// none.
fn describe(c: &Config, defaults: &RemoteDefaults, setting: &str) -> String {
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
        "auto-gc" => or_default(c.auto_gc, duration, "off", "1d (default)"),
        remote => {
            let stored = |name: &str, default: String| c.remote.get(name).map_or(default, |v| escape(v));
            match remote {
                "remote-url" => stored("url", "off (default)".to_owned()),
                "remote-mode" => stored("mode", "read-write (default)".to_owned()),
                "remote-namespace" => stored("namespace", format!("{} (default)", defaults.namespace)),
                "remote-trusted-keys" => {
                    stored("trusted-keys", "none (default: any entry whose archive matches its manifest)".to_owned())
                }
                "remote-signing-key" => stored("signing-key", "none (default: uploads are unsigned)".to_owned()),
                "remote-timeout" => stored("timeout", format!("{} (default)", duration(defaults.timeout))),
                _ => {
                    let all: Vec<String> = options(c)
                        .map(|(name, value)| format!("{}={}", escape(name), shown_option(name, value, escape)))
                        .collect();
                    if all.is_empty() { "none (default)".to_owned() } else { all.join(", ") }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(config: Config, shown: ConfigShown) -> ConfigReport {
        ConfigReport::new("/c".to_owned(), config, shown, "default", Duration::from_secs(600))
    }

    fn lines(r: &ConfigReport) -> Vec<String> {
        r.human()
            .into_iter()
            .map(|l| match l {
                Line::Out(s) => s,
                Line::Status(verb, s) => format!("{verb} {s}"),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn remote_settings_show_their_defaults_and_overrides() {
        let remote = crate::cli::SETTINGS.iter().filter(|s| s.starts_with("remote-"));
        let settings =
            remote.map(|s| (*s, (*s == "remote-url").then(|| "--remote-url or SAFECACHE_REMOTE (x)".to_owned())));
        let r = report(Config::default(), ConfigShown::Settings(settings.collect()));
        assert_eq!(
            lines(&r),
            [
                "remote-url = off (default); --remote-url or SAFECACHE_REMOTE (x) overrides it",
                "remote-mode = read-write (default)",
                "remote-namespace = default (default)",
                "remote-trusted-keys = none (default: any entry whose archive matches its manifest)",
                "remote-signing-key = none (default: uploads are unsigned)",
                "remote-timeout = 10m (default)",
                "remote-option = none (default)",
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["remote"],
            json!({"url": null, "mode": null, "namespace": null, "trusted_keys": null, "signing_key": null,
                   "timeout": null, "options": {}})
        );
    }

    #[test]
    fn stored_remote_settings_are_escaped_and_secrets_hidden() {
        let mut c = Config::default();
        for (k, v) in [
            ("url", "s3://b/p\u{1b}"),
            ("signing-key", "/keys/ci.key"),
            ("option.aws_region", "eu-west-1"),
            ("option.aws_secret_access_key", "hunter2"),
        ] {
            c.remote.insert(k.to_owned(), v.to_owned());
        }
        let r = report(c.clone(), ConfigShown::Settings(vec![("remote-url", None), ("remote-option", None)]));
        assert_eq!(
            lines(&r),
            [
                "remote-url = s3://b/p\\u{1b}",
                "remote-option = aws_region=eu-west-1",
                "remote-option = aws_secret_access_key=(hidden)",
            ]
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["remote"]["signing_key"], "/keys/ci.key");
        assert_eq!(value["remote"]["options"]["aws_region"], "eu-west-1");
        let changed = ConfigShown::Changed {
            name: "remote-option".to_owned(),
            unset: true,
            detail: Some("aws_region".to_owned()),
        };
        assert_eq!(lines(&report(c, changed)), ["Unset remote-option aws_region for `/c`"]);
        assert!(secret_option("AWS_SESSION_TOKEN") && secret_option("azure_storage_account_key"));
        assert!(!secret_option("aws_access_key_id") && !secret_option("aws_endpoint_url"));
    }
}
