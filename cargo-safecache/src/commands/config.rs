//! `config [NAME [VALUE]]`, `config --unset NAME`: shows, stores or removes
//! the cache's settings, which everyone who uses the cache shares.
//!
//! The remote tier's settings (`remote-url`, ...) are stored as text in
//! `Config::remote`, under the names `remote::STORED` gives, and checked
//! here as `remote::Setup::resolve` will read them: a value this command
//! stores is one every later command accepts. `remote-option NAME=VALUE`
//! depends on the stored URL (NAME must be an option of its backend), and
//! `remote-url` on the stored options, so those two are checked against
//! the config read once the cache is open; a config changed meanwhile by
//! another `config` is not written over.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use safecache::display::{duration, escape, size};
use safecache::{Config, Durability, Limit};

use crate::cli::{self, AutoGcEvery, MaxAge, MaxSize};
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::remote;
use crate::report::{self, ConfigReport, ConfigShown};

/// Whether the option `name` holds a secret, never shown.
fn secret_option(name: &str) -> bool {
    ConfigReport::secret_option(name)
}

/// The prefix of an explicit object_store option's name in
/// `Config::remote`.
const OPTION: &str = "option.";

/// A change `config` makes.
enum Change {
    Durability(Durability),
    MaxSize(MaxSize),
    MaxAge(MaxAge),
    AutoGc(AutoGcEvery),
    /// A remote setting, `setting` as `config` names it, stored as `text`
    /// under `stored` in `Config::remote`.
    Remote {
        setting: &'static str,
        stored: &'static str,
        text: String,
    },
    /// `remote-option NAME=VALUE` (NAME lowercased); an empty VALUE
    /// (`None`) removes the option.
    RemoteOption {
        name: String,
        value: Option<String>,
    },
    Unset(String),
}

fn usage(message: String) -> anyhow::Error {
    Coded { code: exit::USAGE, message }.into()
}

/// The name `setting` (`remote-url`) is stored under in `Config::remote`
/// (`url`), if it is a remote setting.
fn stored_name(setting: &str) -> Option<&'static str> {
    remote::STORED.iter().find(|(_, name)| *name == setting).map(|(stored, _)| *stored)
}

/// The explicit object_store options `c` stores, by name.
fn options(c: &Config) -> Vec<(String, String)> {
    c.remote.iter().filter_map(|(k, v)| Some((k.strip_prefix(OPTION)?.to_owned(), v.clone()))).collect()
}

/// The URL `c` stores, unless none or `off`.
fn stored_url(c: &Config) -> Option<&str> {
    c.remote.get("url").map(String::as_str).filter(|u| !u.trim().is_empty() && !u.trim().eq_ignore_ascii_case("off"))
}

/// Why [`check_store`] refused a URL and its options.
enum Refused {
    /// The URL: not one, of no store, or of a backend this build lacks.
    Url(String),
    /// An option the URL's backend does not know.
    Option(String),
    /// The backend refused the options as a whole (S3: a secret access key
    /// without its key id): they may be stored one at a time, and the
    /// environment may complete them, so this is only a warning.
    Incomplete(String),
}

/// Opens (builds, without contacting it) the store `url` and `options`
/// name; `Err` says why not, escaped.
fn check_store(url: &str, options: &[(String, String)]) -> Result<(), Refused> {
    use safecache_remote::LocationError;
    let url_hint = "give a URL such as `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX` or \
                    `file:///DIR`, or `off`";
    match safecache_remote::open_store_from(url, options, std::iter::empty()) {
        Ok(_) => Ok(()),
        Err(e @ LocationError::NotBuilt { .. }) => Err(Refused::Url(remote::shown_error(&e))),
        Err(e @ (LocationError::InvalidUrl { .. } | LocationError::Unsupported(_))) => {
            Err(Refused::Url(format!("{}; {url_hint}", remote::shown_error(&e))))
        }
        Err(e) if options.is_empty() => Err(Refused::Url(format!("{}; {url_hint}", remote::shown_error(&e)))),
        Err(e @ LocationError::Store { .. }) => Err(Refused::Incomplete(remote::shown_error(&e))),
        // An unknown option, or one the backend refuses by itself.
        Err(e) => Err(Refused::Option(remote::shown_error(&e))),
    }
}

/// `remote-url`: a URL of a backend this build has, or `off`.
fn parse_url(value: &str) -> Result<String, String> {
    let url = value.trim();
    if url.is_empty() {
        return Err("give a URL such as `s3://BUCKET/PREFIX` or `file:///DIR`, or `off` (`config --unset \
                    remote-url` removes the setting)"
            .to_owned());
    }
    if url.eq_ignore_ascii_case("off") {
        return Ok("off".to_owned());
    }
    match check_store(url, &[]) {
        Ok(()) => Ok(url.to_owned()),
        Err(Refused::Url(why) | Refused::Option(why) | Refused::Incomplete(why)) => Err(why),
    }
}

/// `remote-trusted-keys`: as `--remote-trusted-keys` takes them, each key
/// file's path made absolute, so that every command reads the same files
/// wherever it runs.
fn parse_trusted_keys(value: &str) -> Result<String, String> {
    remote::parse_trusted_keys(value).map_err(|why| {
        format!("{why}; give `ed25519:` and 64 hex digits, or the path of a .pub file, comma separated")
    })?;
    let mut items = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item.starts_with(safecache_remote::keys::PUBLIC_PREFIX) {
            items.push(item.to_owned());
        } else {
            items.push(absolute(item)?);
        }
    }
    Ok(items.join(","))
}

/// `path`, made absolute (not resolved), as UTF-8.
fn absolute(path: &str) -> Result<String, String> {
    let abs = std::path::absolute(Path::new(path))
        .map_err(|e| format!("cannot make `{}` absolute: {}", escape(path), escape(&e.to_string())))?;
    abs.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("`{}` is not UTF-8; give a path that is", escape(&abs.to_string_lossy())))
}

/// `remote-signing-key`: a secret key file that reads as one now (its
/// contents are never shown), stored as an absolute path.
fn parse_signing_key(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Err("give the path of the .key file that `remote keygen` wrote".to_owned());
    }
    let path = absolute(value)?;
    let (dir, name) = remote::open_parent(Path::new(&path)).map_err(|e| escape(&format!("{e:#}")))?;
    safecache_remote::keys::read_secret_key(&dir, &name).map_err(|e| {
        format!(
            "cannot use it as a signing key: {}; give the .key file that `remote keygen` wrote (mode 0600)",
            remote::shown_error(&e)
        )
    })?;
    Ok(path)
}

impl Change {
    /// Parses `value` for `name`: a bad value is a usage error, found
    /// before the cache is opened, so nothing changes. (What depends on
    /// the stored config is checked by [`Change::check_against`].)
    fn parse(name: &str, value: &str) -> Result<Change> {
        let remote = |setting: &'static str, text: String| Change::Remote {
            setting,
            stored: stored_name(setting).unwrap_or(setting),
            text,
        };
        let parsed = match name {
            "durability" => cli::parse_durability(value).map(Change::Durability),
            "max-size" => cli::parse_max_size(value).map(Change::MaxSize),
            "max-age" => cli::parse_max_age(value).map(Change::MaxAge),
            "auto-gc" => cli::parse_auto_gc(value).map(Change::AutoGc),
            "remote-url" => parse_url(value).map(|url| remote("remote-url", url)),
            "remote-mode" => remote::parse_mode(value)
                .map(|mode| remote("remote-mode", mode.name().to_owned()))
                .map_err(|why| why.replace(&format!("invalid remote mode `{}`: ", escape(value)), "")),
            "remote-namespace" => safecache_remote::Namespace::new(value)
                .map(|ns| remote("remote-namespace", ns.as_str().to_owned()))
                .map_err(|_| "use 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit, e.g. `main`".to_owned()),
            "remote-trusted-keys" => parse_trusted_keys(value).map(|keys| remote("remote-trusted-keys", keys)),
            "remote-signing-key" => parse_signing_key(value).map(|path| remote("remote-signing-key", path)),
            "remote-timeout" => {
                cli::parse_remote_timeout(value).map(|_| remote("remote-timeout", value.trim().to_owned()))
            }
            "remote-option" => return Change::parse_option(value),
            _ => Err(format!("unknown setting; one of: {}", cli::SETTINGS.join(", "))),
        };
        parsed
            .map_err(|why| usage(format!("invalid value `{}` for `{name}`: {why}; nothing was changed", escape(value))))
    }

    /// `remote-option NAME=VALUE`. Errors name the option, never its
    /// value (which may be a secret).
    fn parse_option(value: &str) -> Result<Change> {
        let Some((name, value)) = value.split_once('=') else {
            return Err(usage(
                "invalid value for `remote-option`: expected NAME=VALUE, e.g. `aws_endpoint_url=https://minio:9000` \
                 (`NAME=` removes the option); nothing was changed"
                    .to_owned(),
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
            return Err(usage(format!(
                "invalid remote option name `{}`: expected NAME=VALUE with one of the backend's option names, e.g. \
                 `aws_region=eu-west-1`; nothing was changed",
                escape(&name)
            )));
        }
        Ok(Change::RemoteOption { name, value: (!value.is_empty()).then(|| value.to_owned()) })
    }

    /// Checks what depends on the stored `config`: an option against the
    /// stored URL's backend, a URL against the stored options. `Ok` may
    /// carry a warning: the options, as stored so far, do not make a whole
    /// configuration of the store.
    fn check_against(&self, config: &Config) -> Result<Option<String>> {
        let incomplete = |why: String| {
            format!(
                "the store cannot be configured with the remote options stored so far ({why}); store the rest, or set \
                 them in the environment, and check with `remote check`"
            )
        };
        match self {
            Change::Remote { setting: "remote-url", text, .. } if text != "off" => {
                let stored = options(config);
                if stored.is_empty() {
                    return Ok(None);
                }
                match check_store(text, &stored) {
                    Ok(()) => Ok(None),
                    Err(Refused::Incomplete(why)) => Ok(Some(incomplete(why))),
                    Err(Refused::Url(why) | Refused::Option(why)) => Err(usage(format!(
                        "invalid value `{}` for `remote-url`: {why}, among the options the cache stores; remove them \
                         first with `config --unset remote-option`; nothing was changed",
                        escape(text)
                    ))),
                }
            }
            Change::RemoteOption { name, value: Some(value) } => {
                let Some(url) = stored_url(config) else {
                    return Err(usage(format!(
                        "cannot check the remote option `{}`: the cache stores no remote URL; set remote-url first \
                         (`config remote-url URL`); nothing was changed",
                        escape(name)
                    )));
                };
                let mut opts: Vec<(String, String)> = options(config).into_iter().filter(|(k, _)| k != name).collect();
                opts.push((name.clone(), value.clone()));
                match check_store(url, &opts) {
                    Ok(()) => Ok(None),
                    Err(Refused::Incomplete(why)) => Ok(Some(incomplete(why))),
                    Err(Refused::Option(why)) => Err(usage(format!(
                        "invalid remote option `{}` for `{}`: {why}; give one of the backend's options as \
                         object_store names them (e.g. `aws_endpoint_url`, `aws_region`, `aws_allow_http`); nothing \
                         was changed",
                        escape(name),
                        escape(url)
                    ))),
                    Err(Refused::Url(why)) => Err(usage(format!(
                        "cannot check the remote option `{}`: the stored remote-url is not usable: {why}; fix it with \
                         `config remote-url URL`; nothing was changed",
                        escape(name)
                    ))),
                }
            }
            _ => Ok(None),
        }
    }

    /// Whether [`Change::check_against`] depends on the stored config.
    fn depends_on_config(&self) -> bool {
        matches!(self, Change::Remote { setting: "remote-url", .. } | Change::RemoteOption { value: Some(_), .. })
    }

    fn apply(&self, c: &mut Config) {
        match self {
            Change::Durability(level) => c.durability = Some(*level),
            Change::MaxSize(MaxSize(max)) => c.max_size = Some(max.map_or(Limit::Off, Limit::Value)),
            Change::MaxAge(MaxAge(age)) => c.max_age = Some(age.map_or(Limit::Off, Limit::Value)),
            Change::AutoGc(AutoGcEvery(every)) => c.auto_gc = Some(every.map_or(Limit::Off, Limit::Value)),
            Change::Remote { stored, text, .. } => {
                c.remote.insert((*stored).to_owned(), text.clone());
            }
            Change::RemoteOption { name, value: Some(value) } => {
                c.remote.insert(format!("{OPTION}{name}"), value.clone());
            }
            Change::RemoteOption { name, value: None } => {
                c.remote.remove(&format!("{OPTION}{name}"));
            }
            Change::Unset(name) => match name.as_str() {
                "durability" => c.durability = None,
                "max-size" => c.max_size = None,
                "max-age" => c.max_age = None,
                "auto-gc" => c.auto_gc = None,
                "remote-option" => c.remote.retain(|k, _| !k.starts_with(OPTION)),
                other => {
                    if let Some(stored) = stored_name(other) {
                        c.remote.remove(stored);
                    }
                }
            },
        }
    }

    fn name(&self) -> &str {
        match self {
            Change::Durability(_) => "durability",
            Change::MaxSize(_) => "max-size",
            Change::MaxAge(_) => "max-age",
            Change::AutoGc(_) => "auto-gc",
            Change::Remote { setting, .. } => setting,
            Change::RemoteOption { .. } => "remote-option",
            Change::Unset(name) => name,
        }
    }

    /// What people are told was changed, where the setting's value alone
    /// would not say it: the one option stored or removed.
    fn detail(&self) -> Option<String> {
        match self {
            Change::RemoteOption { name, value: Some(value) } => Some(format!(
                "{}={}",
                escape(name),
                if secret_option(name) { "(hidden)".to_owned() } else { escape(value) }
            )),
            Change::RemoteOption { name, value: None } => Some(escape(name)),
            _ => None,
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
    let report = |config, shown| {
        ConfigReport::new(path.clone(), config, shown, remote::DEFAULT_NAMESPACE, remote::DEFAULT_TIMEOUT)
    };
    let shown = match &change {
        Some(change) => {
            // What the change was checked against, if it depends on it.
            let (checked, warning): (Option<BTreeMap<String, String>>, _) = if change.depends_on_config() {
                let stored = cache.config()?;
                let warning = change.check_against(&stored)?;
                (Some(stored.remote), warning)
            } else {
                (None, None)
            };
            let mut raced = false;
            let config = ctx.blocking(|| {
                cache.update_config(ctx.wait, |c| {
                    if checked.as_ref().is_some_and(|remote| *remote != c.remote) {
                        raced = true;
                    } else {
                        change.apply(c);
                    }
                })
            })?;
            if raced {
                return Err(usage(format!(
                    "the cache's remote settings changed while `config {}` ran; nothing was changed: run it again",
                    change.name()
                )));
            }
            if let Some(warning) = warning {
                ctx.ui.warn(warning);
            }
            if let Change::RemoteOption { name, value: Some(_) } = change
                && secret_option(name)
            {
                ctx.ui.warn(format!(
                    "the option `{}` is stored in the cache's `.safecache/config.json`, which everyone who uses the \
                     cache can read; a secret is better set in the environment of the commands that need it (`{}`)",
                    escape(name),
                    escape(&name.to_ascii_uppercase())
                ));
            }
            let shown = ConfigShown::Changed {
                name: change.name().to_owned(),
                unset: matches!(change, Change::Unset(_) | Change::RemoteOption { value: None, .. }),
                detail: change.detail(),
            };
            report(config, shown)
        }
        None => {
            let settings = cli::SETTINGS
                .iter()
                .filter(|s| name.is_none_or(|n| n == **s))
                .map(|setting| (*setting, overridden_by(ctx, setting)))
                .collect();
            report(cache.config()?, ConfigShown::Settings(settings))
        }
    };
    ctx.ui.report(shown)?;
    Ok(exit::OK)
}

/// The option and variable that override `setting` for this command, if
/// one was given.
fn overridden_by(ctx: &Ctx, setting: &str) -> Option<String> {
    let (given, remote) = (&ctx.given, &ctx.remote);
    let value = match setting {
        "durability" => ctx.durability.map(|d| d.to_string()),
        "max-size" => given.max_size.map(|MaxSize(s)| s.map_or_else(|| "none".to_owned(), size)),
        "max-age" => given.max_age.map(|MaxAge(a)| a.map_or_else(|| "never".to_owned(), duration)),
        "auto-gc" => given.auto_gc.map(|AutoGcEvery(e)| e.map_or_else(|| "off".to_owned(), duration)),
        "remote-url" => remote.remote_url.as_deref().map(escape),
        "remote-mode" => remote.remote_mode.map(|m| m.name().to_owned()),
        "remote-namespace" => remote.remote_namespace.as_deref().map(escape),
        "remote-trusted-keys" => remote.remote_trusted_keys.as_deref().map(escape),
        "remote-signing-key" => remote.remote_signing_key.as_ref().map(|p| escape(&p.display().to_string())),
        "remote-timeout" => remote.remote_timeout.map(duration),
        // Written-out options have no override; the backend's variables
        // (`AWS_*`) give it options of their own, which these replace.
        _ => None,
    }?;
    Some(format!("--{setting} or {} ({value})", variable(setting)))
}

/// The environment variable of `setting`'s option.
fn variable(setting: &str) -> String {
    match setting {
        "remote-url" => "SAFECACHE_REMOTE".to_owned(),
        _ => format!("SAFECACHE_{}", setting.replace('-', "_").to_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(name: &str, value: &str) -> String {
        match Change::parse(name, value) {
            Ok(_) => panic!("{name} {value} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_remote_setting_has_a_stored_name_and_a_variable() {
        for setting in cli::SETTINGS.iter().filter(|s| s.starts_with("remote-")) {
            assert!(stored_name(setting).is_some(), "{setting}");
        }
        assert_eq!(variable("remote-url"), "SAFECACHE_REMOTE");
        assert_eq!(variable("remote-trusted-keys"), "SAFECACHE_REMOTE_TRUSTED_KEYS");
        assert_eq!(variable("max-size"), "SAFECACHE_MAX_SIZE");
    }

    #[test]
    fn remote_values_are_checked_and_stored_canonically() {
        let stored = |name: &str, value: &str| match Change::parse(name, value).unwrap() {
            Change::Remote { text, stored, .. } => (stored, text),
            _ => panic!("{name}"),
        };
        assert_eq!(stored("remote-url", " file:///srv/cache "), ("url", "file:///srv/cache".to_owned()));
        assert_eq!(stored("remote-url", "OFF"), ("url", "off".to_owned()));
        assert_eq!(stored("remote-mode", "Read-Only"), ("mode", "read-only".to_owned()));
        assert_eq!(stored("remote-namespace", "main"), ("namespace", "main".to_owned()));
        assert_eq!(stored("remote-timeout", " 90s"), ("timeout", "90s".to_owned()));
        // RFC 8032, test 1.
        let key = "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".to_owned();
        assert_eq!(stored("remote-trusted-keys", &key), ("trusted-keys", key.clone()));
        for (name, value, fragment) in [
            ("remote-url", "nowhere", "invalid remote URL"),
            ("remote-url", "ftp://host/x", "unsupported remote URL"),
            ("remote-url", "", "give a URL"),
            ("remote-mode", "sometimes", "use read-write, read-only or off"),
            ("remote-namespace", "Main", "1 to 64"),
            ("remote-timeout", "0s", "positive duration"),
            ("remote-trusted-keys", "ed25519:00", "invalid trusted key"),
            ("remote-trusted-keys", " , ", "no trusted key given"),
            ("remote-signing-key", "/nonexistent/ci.key", "cannot"),
        ] {
            let message = parse_err(name, value);
            assert!(message.contains(fragment) && message.ends_with("nothing was changed"), "{name}: {message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[cfg(not(feature = "gcp"))]
    #[test]
    fn a_backend_this_build_lacks_is_refused_naming_its_feature() {
        assert!(parse_err("remote-url", "gs://bucket/prefix").contains("`gcp` feature"));
    }

    #[test]
    fn options_name_no_value_and_are_checked_against_the_stored_url() {
        assert!(matches!(
            Change::parse("remote-option", "AWS_Region=eu-west-1").unwrap(),
            Change::RemoteOption { name, value: Some(v) } if name == "aws_region" && v == "eu-west-1"
        ));
        assert!(matches!(
            Change::parse("remote-option", "aws_region=").unwrap(),
            Change::RemoteOption { value: None, .. }
        ));
        assert!(parse_err("remote-option", "aws_secret_access_key").contains("expected NAME=VALUE"));
        let secret = parse_err("remote-option", "bad name=hunter2");
        assert!(!secret.contains("hunter2"), "{secret}");

        let mut config = Config::default();
        let option = Change::parse("remote-option", "aws_region=eu-west-1").unwrap();
        let message = option.check_against(&config).unwrap_err().to_string();
        assert!(message.contains("set remote-url first"), "{message}");
        config.remote.insert("url".to_owned(), "file:///srv/cache".to_owned());
        let message = option.check_against(&config).unwrap_err().to_string();
        assert!(message.contains("unknown file option `aws_region`"), "{message}");
        let mut c = config.clone();
        option.apply(&mut c);
        assert_eq!(c.remote.get("option.aws_region").map(String::as_str), Some("eu-west-1"));
        Change::parse("remote-option", "aws_region=").unwrap().apply(&mut c);
        assert_eq!(c, config);
        c.remote.insert("option.aws_region".to_owned(), "x".to_owned());
        Change::Unset("remote-option".to_owned()).apply(&mut c);
        Change::Unset("remote-url".to_owned()).apply(&mut c);
        assert!(c.remote.is_empty(), "{c:?}");
    }

    #[cfg(feature = "aws")]
    #[test]
    fn a_known_option_is_accepted_and_a_url_must_suit_the_stored_options() {
        let mut config = Config::default();
        config.remote.insert("url".to_owned(), "s3://bucket/prefix".to_owned());
        assert_eq!(
            Change::parse("remote-option", "AWS_REGION=eu-west-1").unwrap().check_against(&config).unwrap(),
            None
        );
        // Half of a pair is stored with a warning: the other half may follow.
        let half = Change::parse("remote-option", "aws_secret_access_key=s").unwrap().check_against(&config).unwrap();
        assert!(half.is_some_and(|w| w.contains("remote check")));
        let unknown = Change::parse("remote-option", "aws_endpoit_url=http://x").unwrap();
        assert!(unknown.check_against(&config).unwrap_err().to_string().contains("unknown S3 option"));
        config.remote.insert("option.aws_region".to_owned(), "eu-west-1".to_owned());
        let file = Change::parse("remote-url", "file:///srv/cache").unwrap();
        let message = file.check_against(&config).unwrap_err().to_string();
        assert!(message.contains("config --unset remote-option"), "{message}");
        Change::parse("remote-url", "s3://other/p").unwrap().check_against(&config).unwrap();
    }
}
