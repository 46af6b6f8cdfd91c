//! This defines the signing keys of remote manifests (docs/REMOTE.md,
//! "Trust"): ed25519 key pairs, their one-line text forms, and their files,
//! written and read through a directory handle. A secret key file is made
//! `0600` by an exclusive create and is refused when others may read it.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// The text before a public key's 64 hex digits.
pub const PUBLIC_PREFIX: &str = "ed25519:";

/// The text before a secret key's 64 hex digits (its seed).
pub const SECRET_PREFIX: &str = "ed25519-secret:";

/// The longest key file read, in bytes.
const MAX_KEY_FILE: u64 = 1024;

/// A secret ed25519 key, which signs manifests. Its `Debug` shows only its
/// public key; its bytes are zeroed when it is dropped.
pub struct SecretKey(SigningKey);

/// A public ed25519 key, which a reader trusts. Its text form is
/// `ed25519:` and 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

/// Why a key could not be made, parsed, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be written or read.
    #[error("cannot {op} key file `{path}`")]
    Io {
        /// `create`, `write`, `read`, ...
        op: &'static str,
        /// The file, escaped.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Text that is not a key of the expected form.
    #[error("invalid {what}: {reason}")]
    Malformed {
        /// `public key` or `secret key`.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A secret key file that someone other than its owner may read.
    #[error("secret key file `{path}` has mode {mode:04o}: others may read it (make it 0600)")]
    TooOpen {
        /// The file, escaped.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The operating system's random source failed.
    #[error("cannot get random bytes for a key")]
    Random(#[source] getrandom::Error),
}

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        let key = SecretKey(SigningKey::from_bytes(&seed));
        seed.fill(0);
        Ok(key)
    }

    /// The key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// Its public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Its text form, `ed25519-secret:` and the seed's 64 hex digits.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", hex(&self.0.to_bytes()))
    }

    /// Parses [`SecretKey::to_text`]'s form.
    pub fn from_text(text: &str) -> Result<SecretKey, KeyError> {
        let malformed = |reason| KeyError::Malformed { what: "secret key", reason };
        let digits = text.strip_prefix(SECRET_PREFIX).ok_or(malformed("it does not start with `ed25519-secret:`"))?;
        let seed = unhex::<32>(digits).ok_or(malformed("it is not 64 hex digits after its prefix"))?;
        Ok(SecretKey::from_seed(&seed))
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key())
    }
}

impl PublicKey {
    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `signature` is this key's over `message`, by ed25519-dalek's
    /// strict verification (no small-order keys, no malleable signatures).
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.0) else { return false };
        key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parses `ed25519:` and 64 lowercase hex digits, a point on the curve.
    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        let malformed = |reason| KeyError::Malformed { what: "public key", reason };
        let digits = text.strip_prefix(PUBLIC_PREFIX).ok_or(malformed("it does not start with `ed25519:`"))?;
        let bytes = unhex::<32>(digits).ok_or(malformed("it is not 64 lowercase hex digits after `ed25519:`"))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| malformed("it is not a point on the curve"))?;
        Ok(PublicKey(bytes))
    }
}

/// Writes `key` as the pair `<stem>.key` (its text form and a newline,
/// mode `0600`) and `<stem>.pub` (the public key's, `0644`) in `dir`, each
/// by an exclusive create, so an existing key is never replaced, and
/// synced.
pub fn write_key_pair(dir: &Dir, stem: &str, key: &SecretKey) -> Result<(), KeyError> {
    write_new(dir, &format!("{stem}.key"), 0o600, &key.to_text())?;
    write_new(dir, &format!("{stem}.pub"), 0o644, &key.public_key().to_string())
}

fn write_new(dir: &Dir, name: &str, mode: u32, text: &str) -> Result<(), KeyError> {
    let fail = |op, source| KeyError::Io { op, path: safecache::display::escape(name), source };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(mode);
    let mut file = dir.open_with(name, &options).map_err(|e| fail("create", e))?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(|e| fail("write", e))?;
    file.sync_all().map_err(|e| fail("sync", e))
}

/// Reads the secret key file `name` of `dir`, refusing one that others may
/// read (any group or other permission bit) or that is not a regular file.
pub fn read_secret_key(dir: &Dir, name: &str) -> Result<SecretKey, KeyError> {
    let (text, mode) = read_key_file(dir, name)?;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen { path: safecache::display::escape(name), mode });
    }
    SecretKey::from_text(&text)
}

/// Reads the public key file `name` of `dir`.
pub fn read_public_key(dir: &Dir, name: &str) -> Result<PublicKey, KeyError> {
    read_key_file(dir, name)?.0.parse()
}

/// A key file's one line (without its newline) and its permission bits.
fn read_key_file(dir: &Dir, name: &str) -> Result<(String, u32), KeyError> {
    let fail = |op, source| KeyError::Io { op, path: safecache::display::escape(name), source };
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc_flags());
    let file = dir.open_with(name, &options).map_err(|e| fail("open", e))?;
    let stat = rustix::fs::fstat(&file).map_err(|e| fail("stat", e.into()))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(KeyError::Malformed { what: "key file", reason: "it is not a regular file" });
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes).map_err(|e| fail("read", e))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Malformed { what: "key file", reason: "it is longer than 1 KiB" });
    }
    let text =
        String::from_utf8(bytes).map_err(|_| KeyError::Malformed { what: "key file", reason: "it is not UTF-8" })?;
    let line = text.strip_suffix('\n').unwrap_or(&text).to_owned();
    Ok((line, stat.st_mode & 0o7777))
}

/// Opening a key file follows no symlink at its name and never blocks on
/// a FIFO.
fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Exactly `2 * N` lowercase hex digits as bytes.
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_uppercase() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex::<3>("00abff"), Some([0, 0xab, 0xff]));
        assert_eq!(unhex::<3>("00ABff"), None);
        assert_eq!(unhex::<3>("00abf"), None);
        assert_eq!(unhex::<2>("00abff"), None);
    }

    #[test]
    fn key_texts_round_trip() {
        let key = SecretKey::from_seed(&[7; 32]);
        let again = SecretKey::from_text(&key.to_text()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(key.public_key().to_string().parse::<PublicKey>().unwrap(), key.public_key());
        assert!(format!("{key:?}").starts_with("SecretKey(public ed25519:"));
        assert!(!format!("{key:?}").contains(&hex(&[7; 32])));
    }
}
