//! This defines the per-cache settings kept in `.safecache/config.json`
//! ([`Config`]): the [`Durability`] level, and the limits of gc and the
//! automatic gc ([`Limit`]), which front ends apply (flags override them).
//!
//! The file is optional: a cache without it uses every default. It is read
//! like every other metadata file (no symlink followed, no special file
//! blocked on, capped at [`MAX_CONFIG_LEN`]) and is untrusted input: a file
//! that is not a JSON object with known values refuses the cache with
//! [`Error::BadConfig`], which names the file and the fix, before anything
//! is changed. Unknown fields are ignored, so that a cache configured by a
//! later safecache (which may add settings) still opens here; a setting
//! whose misreading would break the protocol bumps the format version
//! instead (docs/PROTOCOL.md).
//!
//! It is written whole: a fresh file in `tmp/`, synced, renamed over the
//! old one, and the marker synced, at every durability level, under the
//! shared lease and `gc.lock` (so no gc reclaims the fresh file meanwhile).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::durability::Durability;
use crate::error::Error;
use crate::layout::{self, CONFIG_FILE};
use crate::sys::Root;

/// The largest config file read.
pub(crate) const MAX_CONFIG_LEN: u64 = 16 * 1024;

/// The settings of one cache, as stored in `.safecache/config.json`. Every
/// field is optional: an absent one takes its default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// The cache's durability level ([`Durability::Full`] when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
    /// The size limit of `gc` and the automatic gc, in bytes of the
    /// entries' regular files (`"none"` in the file: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "limit::none")]
    pub max_size: Option<Limit<u64>>,
    /// The age limit of `gc` and the automatic gc: entries unused for
    /// longer are evicted (seconds in the file; `"never"`: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "limit::never")]
    pub max_age: Option<Limit<Duration>>,
    /// How often the automatic gc may run (seconds in the file; `"off"`:
    /// never).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "limit::off")]
    pub auto_gc: Option<Limit<Duration>>,
    /// The remote tier's settings, by name (`url`, `mode`, `namespace`,
    /// ...): stored for front ends, which check and interpret them
    /// (docs/REMOTE.md, "Configuration"); the core reads none of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote: BTreeMap<String, String>,
}

/// A limit or interval a config stores: a value, or explicitly none (no
/// limit; for the automatic gc, off), which differs from unset (the
/// default applies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit<T> {
    /// This value.
    Value(T),
    /// No limit (the automatic gc: off).
    Off,
}

impl<T: Copy> Limit<T> {
    /// The value, or `None` for [`Limit::Off`].
    pub fn value(self) -> Option<T> {
        match self {
            Limit::Value(v) => Some(v),
            Limit::Off => None,
        }
    }
}

impl Config {
    /// The level in effect: this config's, or the default.
    pub fn durability(&self) -> Durability {
        self.durability.unwrap_or_default()
    }

    /// Parses a config file's bytes; `Err` says why it is not one.
    fn parse(bytes: &[u8]) -> Result<Config, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// How a [`Limit`] is written in the file: a number (bytes or seconds), or
/// the word for no limit. Any of the words reads as [`Limit::Off`].
mod limit {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Limit;

    const WORDS: [&str; 3] = ["none", "never", "off"];

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Word(String),
    }

    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<u64>>, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Some(Limit::Value(n))),
            Raw::Word(w) if WORDS.contains(&w.as_str()) => Ok(Some(Limit::Off)),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "`{}` is no limit: a whole number, or one of: none, never, off",
                crate::display::escape(&w)
            ))),
        }
    }

    fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<Duration>>, D::Error> {
        Ok(read(d)?.map(|l| match l {
            Limit::Value(secs) => Limit::Value(Duration::from_secs(secs)),
            Limit::Off => Limit::Off,
        }))
    }

    fn write<S: Serializer>(value: Option<u64>, word: &str, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => s.serialize_u64(n),
            None => s.serialize_str(word),
        }
    }

    macro_rules! words {
        ($name:ident, $word:literal, $t:ty, $de:ident, $to:expr) => {
            pub(super) mod $name {
                use super::*;

                #[allow(clippy::ref_option)] // serde's `with` passes `&Option<T>`
                pub(crate) fn serialize<S: Serializer>(v: &Option<Limit<$t>>, s: S) -> Result<S::Ok, S::Error> {
                    let to: fn($t) -> u64 = $to;
                    write(v.and_then(Limit::value).map(to), $word, s)
                }

                pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit<$t>>, D::Error> {
                    $de(d)
                }
            }
        };
    }

    words!(none, "none", u64, read, |n| n);
    words!(never, "never", Duration, secs, |d| d.as_secs());
    words!(off, "off", Duration, secs, |d| d.as_secs());
}

/// Reads the config of the cache at `path` (for messages) through `root`;
/// the default if there is none.
pub(crate) fn read(root: &Root, path: &Path) -> Result<Config, Error> {
    let bad = |reason: String| Error::BadConfig { path: path.join(CONFIG_FILE), reason };
    let bytes = match root.read(CONFIG_FILE, MAX_CONFIG_LEN) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Err(bad(e.to_string())),
        Err(e) => return Err(Error::io("read", CONFIG_FILE, e)),
    };
    Config::parse(&bytes).map_err(|why| bad(crate::display::escape(&why)))
}

/// Replaces the config: a fresh file, synced, renamed over the old one, and
/// the marker synced, whatever the durability level (a torn config would
/// refuse the cache). The caller holds the shared lease and `gc.lock`.
pub(crate) fn write(root: &Root, config: &Config) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| Error::io("encode", CONFIG_FILE, e.into()))?;
    let staging = layout::config_staging(&layout::random_suffix()?);
    root.write_metadata(&staging, &bytes).map_err(|e| Error::io("write", &staging, e))?;
    if let Err(e) = root.rename(&staging, CONFIG_FILE) {
        let _ = root.remove_file(&staging);
        return Err(Error::io("replace", CONFIG_FILE, e));
    }
    root.sync_metadata_dir(layout::MARKER_DIR).map_err(|e| Error::io("sync", layout::MARKER_DIR, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_by_name_and_round_trip_through_json() {
        for d in Durability::ALL {
            assert_eq!(d.name().parse::<Durability>(), Ok(d));
        }
        assert_eq!(
            "fast".parse::<Durability>().unwrap_err().to_string(),
            "unknown durability `fast`; one of: none, full"
        );
        let config = Config { durability: Some(Durability::None), ..Config::default() };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(json, r#"{"durability":"none"}"#);
        assert_eq!(Config::parse(json.as_bytes()), Ok(config));
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_values_refused() {
        assert_eq!(
            Config::parse(br#"{"durability":"full","later_setting":{"max_size":1}}"#).unwrap().durability(),
            Durability::Full
        );
        assert_eq!(Config::parse(b"{}").unwrap().durability(), Durability::Full, "the default");
        assert!(Config::parse(br#"{"durability":"fast"}"#).is_err());
        assert!(Config::parse(b"").is_err(), "a torn (empty) file is refused, not read as the default");
        assert!(Config::parse(b"[1]").is_err());
    }

    #[test]
    fn limits_are_numbers_or_the_word_for_none() {
        let config = Config {
            max_size: Some(Limit::Value(10 << 30)),
            max_age: Some(Limit::Off),
            auto_gc: Some(Limit::Value(Duration::from_secs(86_400))),
            ..Config::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(json, r#"{"max_size":10737418240,"max_age":"never","auto_gc":86400}"#);
        assert_eq!(Config::parse(json.as_bytes()), Ok(config));
        let off = Config::parse(br#"{"max_size":"none","auto_gc":"off"}"#).unwrap();
        assert_eq!((off.max_size, off.auto_gc, off.max_age), (Some(Limit::Off), Some(Limit::Off), None));
        for bad in [r#"{"max_size":"10G"}"#, r#"{"max_age":-1}"#, r#"{"auto_gc":1.5}"#, r#"{"max_size":null}"#] {
            assert!(Config::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
