//! This defines [`Durability`], the level that decides what the cache
//! syncs to disk. It sits below every other module, since the directory
//! handle (`sys`) checks it and the config (`config.rs`) stores it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a cache syncs to disk, and so what survives a power cut or a kernel
/// crash (docs/PROTOCOL.md, "Durability"). A process crash loses nothing at
/// either level: the page cache survives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// No syncs. After a power cut recent entries may be lost, and an entry
    /// may be present with files that are empty or short; `safecache
    /// verify` finds those.
    None,
    /// Every file and directory of an entry is synced before it is
    /// published, and the root after; the rename aside of a remove is
    /// synced before the trash is deleted. An entry that a fill returned
    /// survives a power cut complete.
    #[default]
    Full,
}

impl Durability {
    /// Every level, in the order the docs list them.
    pub const ALL: [Durability; 2] = [Durability::None, Durability::Full];

    /// The level's name in the config file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Full => "full",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A durability level name that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown durability `{0}`; one of: none, full")]
pub struct InvalidDurability(pub String);

impl FromStr for Durability {
    type Err = InvalidDurability;
    fn from_str(s: &str) -> Result<Durability, InvalidDurability> {
        Durability::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| InvalidDurability(s.to_owned()))
    }
}
