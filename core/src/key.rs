//! This defines [`Key`], the validated name of a cache entry.
//!
//! Invariant: a `Key` can never name anything outside the cache, the marker
//! directory, or a path with `.`/`..` components. Validation happens once, in
//! [`Key::new`]; everything downstream trusts the type.

use std::fmt;
use std::str::FromStr;

use crate::layout::MARKER_DIR;

/// The longest stored name a key may map to, in bytes. Most filesystems
/// limit one path component to 255 bytes.
pub const MAX_STORED_LEN: usize = 255;

/// A validated, relative, `/`-separated entry name.
///
/// Keys are stored flat at the cache root, under a name that only uses
/// lowercase ASCII letters, digits and `. - _ + @` (see `name.rs` and
/// docs/PROTOCOL.md): `git/serde` is stored as `git+serde`, `Lib` as `@lib`.
///
/// ```
/// use safecache::Key;
/// let key: Key = "git/serde-1.0".parse().unwrap();
/// assert_eq!(key.as_str(), "git/serde-1.0");
/// assert!("../etc".parse::<Key>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `key` and returns it as a [`Key`].
    ///
    /// # Errors
    /// [`InvalidKey`] naming the key and the rule it broke.
    pub fn new(key: &str) -> Result<Key, InvalidKey> {
        match check(key) {
            Ok(()) => Ok(Key(key.to_owned())),
            Err(rule) => Err(InvalidKey { key: key.escape_debug().to_string(), rule }),
        }
    }

    /// The key as the caller spelled it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the entry at the cache root.
    pub fn stored_name(&self) -> String {
        crate::name::encode(&self.0)
    }

    /// Recovers the key from a name stored at the cache root, if that name is
    /// exactly the one a key maps to.
    pub fn from_stored_name(name: &str) -> Option<Key> {
        crate::name::decode(name)
    }

    /// A short, fixed-length digest of the key, used to name its lock file and
    /// to tie its temps and trash to that lock.
    pub(crate) fn digest(&self) -> String {
        digest_of(&self.stored_name())
    }
}

/// The digest that names the lock of a stored name (whether or not it is a
/// valid key: `clean` also removes adopted files).
pub(crate) fn digest_of(stored_name: &str) -> String {
    let hash = blake3::hash(stored_name.as_bytes());
    hash.to_hex()[..32].to_owned()
}

/// A key that broke one of the naming rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid key `{key}`: {rule}")]
pub struct InvalidKey {
    /// The rejected key, escaped for display.
    pub key: String,
    /// The rule it broke.
    pub rule: KeyRule,
}

/// The naming rules a [`Key`](crate::Key) must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRule {
    /// The key is empty.
    Empty,
    /// The key starts with `/`.
    Absolute,
    /// The key contains a NUL byte.
    Nul,
    /// The key contains a backslash.
    Backslash,
    /// The key contains a control character.
    Control,
    /// The key has an empty component (`a//b`, a trailing `/`).
    EmptyComponent,
    /// A component is `.` or `..`.
    DotComponent,
    /// The first component starts with the marker directory's name.
    Reserved,
    /// The stored name would be longer than a path component may be.
    TooLong {
        /// The stored length in bytes.
        len: usize,
    },
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Empty => f.write_str("the key is empty; give a name such as `git/serde`"),
            KeyRule::Absolute => f.write_str("the key is absolute; keys are relative paths inside the cache"),
            KeyRule::Nul => f.write_str("the key contains a NUL byte"),
            KeyRule::Backslash => f.write_str("the key contains a backslash; separate components with `/`"),
            KeyRule::Control => f.write_str("the key contains a control character"),
            KeyRule::EmptyComponent => {
                f.write_str("the key has an empty component (`//` or a leading or trailing `/`)")
            }
            KeyRule::DotComponent => {
                f.write_str("a component is `.` or `..`; keys are relative paths inside the cache")
            }
            KeyRule::Reserved => f.write_str("names starting with `.safecache` are reserved for safecache's own files"),
            KeyRule::TooLong { len } => {
                write!(
                    f,
                    "the key's stored name is {len} bytes (an uppercase letter counts 2, a byte other than \
                     `a-z 0-9 . - _ /` counts 4); the limit is {MAX_STORED_LEN}"
                )
            }
        }
    }
}

fn check(key: &str) -> Result<(), KeyRule> {
    if key.is_empty() {
        return Err(KeyRule::Empty);
    }
    if key.starts_with('/') {
        return Err(KeyRule::Absolute);
    }
    for c in key.chars() {
        match c {
            '\0' => return Err(KeyRule::Nul),
            '\\' => return Err(KeyRule::Backslash),
            c if c.is_control() => return Err(KeyRule::Control),
            _ => {}
        }
    }
    for (i, component) in key.split('/').enumerate() {
        match component {
            "" => return Err(KeyRule::EmptyComponent),
            "." | ".." => return Err(KeyRule::DotComponent),
            // Case-insensitively: on a case-insensitive filesystem
            // `.SAFECACHE` would name the marker.
            c if i == 0 && c.to_ascii_lowercase().starts_with(MARKER_DIR) => return Err(KeyRule::Reserved),
            _ => {}
        }
    }
    let stored = crate::name::encode(key).len();
    if stored > MAX_STORED_LEN {
        return Err(KeyRule::TooLong { len: stored });
    }
    Ok(())
}

impl FromStr for Key {
    type Err = InvalidKey;
    fn from_str(s: &str) -> Result<Key, InvalidKey> {
        Key::new(s)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: &str) -> KeyRule {
        match Key::new(key) {
            Err(InvalidKey { rule, .. }) => rule,
            other => panic!("expected {key:?} to be rejected, got {other:?}"),
        }
    }

    #[test]
    fn accepts_ordinary_keys() {
        for key in ["a", "git/serde", "wheels-v6/numpy-2.1.0.whl", ".git", "a b", "é/ü", "50%"] {
            assert_eq!(Key::new(key).unwrap().as_str(), key);
        }
    }

    #[test]
    fn rejects_each_rule() {
        assert_eq!(rule(""), KeyRule::Empty);
        assert_eq!(rule("/etc/passwd"), KeyRule::Absolute);
        assert_eq!(rule("a\0b"), KeyRule::Nul);
        assert_eq!(rule("a\\b"), KeyRule::Backslash);
        assert_eq!(rule("a\nb"), KeyRule::Control);
        assert_eq!(rule("a//b"), KeyRule::EmptyComponent);
        assert_eq!(rule("a/"), KeyRule::EmptyComponent);
        assert_eq!(rule("../x"), KeyRule::DotComponent);
        assert_eq!(rule("a/./b"), KeyRule::DotComponent);
        assert_eq!(rule(".."), KeyRule::DotComponent);
        assert_eq!(rule(".safecache"), KeyRule::Reserved);
        assert_eq!(rule(".safecache/x"), KeyRule::Reserved);
        assert_eq!(rule(".safecache.init-x"), KeyRule::Reserved, "staging dirs share the prefix");
        assert_eq!(rule(".SafeCache"), KeyRule::Reserved, "case-insensitive filesystems");
        assert!(matches!(rule(&"x".repeat(256)), KeyRule::TooLong { len: 256 }));
    }

    #[test]
    fn length_counts_the_stored_form() {
        assert!(Key::new(&"a/".repeat(127)[..253]).is_ok(), "a slash counts 1");
        let key = "A".repeat(128); // 128 bytes: 256 stored
        assert_eq!(rule(&key), KeyRule::TooLong { len: 256 });
        let key = " ".repeat(64); // 64 bytes: 256 stored
        assert_eq!(rule(&key), KeyRule::TooLong { len: 256 });
    }

    #[test]
    fn stored_name_round_trips() {
        let key = Key::new("git/deps/serde").unwrap();
        assert_eq!(key.stored_name(), "git+deps+serde");
        assert_eq!(Key::from_stored_name(&key.stored_name()), Some(key));
        assert_eq!(Key::from_stored_name(".safecache"), None);
    }

    proptest::proptest! {
        /// Whatever a caller passes, an accepted key maps to exactly one
        /// safe name directly at the cache root, and back.
        #[test]
        fn accepted_keys_stay_inside_the_cache(raw in "[a-zA-Z./%\\\\\\x00\\n -]{0,12}|\\PC{0,40}") {
            if let Ok(key) = Key::new(&raw) {
                let stored = key.stored_name();
                proptest::prop_assert!(!stored.contains('/') && !stored.contains('\\') && !stored.contains('\0'));
                proptest::prop_assert!(stored != "." && stored != ".." && stored != MARKER_DIR);
                proptest::prop_assert!(!stored.starts_with(".safecache"));
                proptest::prop_assert!(stored.len() <= MAX_STORED_LEN);
                proptest::prop_assert_eq!(Key::from_stored_name(&stored), Some(key.clone()));
                proptest::prop_assert_eq!(digest_of(&stored), key.digest());
            } else {
                proptest::prop_assert!(Key::new(&raw).unwrap_err().to_string().starts_with("invalid key `"));
            }
        }
    }

    #[test]
    fn error_names_key_and_rule() {
        let err = Key::new("../x").unwrap_err().to_string();
        assert_eq!(err, "invalid key `../x`: a component is `.` or `..`; keys are relative paths inside the cache");
    }
}
