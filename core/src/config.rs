//! This defines the per-cache settings kept in `.safecache/config.json`
//! ([`Config`]), and the first of them, the [`Durability`] level.
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

use std::path::Path;

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
        let config = Config { durability: Some(Durability::None) };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(json, r#"{"durability":"none"}"#);
        assert_eq!(Config::parse(json.as_bytes()), Ok(config));
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_values_refused() {
        assert_eq!(
            Config::parse(br#"{"durability":"full","auto_gc":{"max_size":1}}"#).unwrap().durability(),
            Durability::Full
        );
        assert_eq!(Config::parse(b"{}").unwrap().durability(), Durability::Full, "the default");
        assert!(Config::parse(br#"{"durability":"fast"}"#).is_err());
        assert!(Config::parse(b"").is_err(), "a torn (empty) file is refused, not read as the default");
        assert!(Config::parse(b"[1]").is_err());
    }
}
