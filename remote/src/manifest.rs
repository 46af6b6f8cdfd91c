//! This defines the remote manifest (docs/REMOTE.md, "The remote
//! manifest"): what a store holds for one key of one namespace, its one
//! canonical encoding, the exact bytes its ed25519 signatures cover (the
//! format, namespace, key, archive hash and size, and the counts, so a
//! signature cannot be replayed under another of any of them), and its
//! verification against the trusted keys. A manifest is untrusted input:
//! its length is capped, every field is checked, and a reader accepts it
//! only for the namespace and key it asked for.

use std::collections::BTreeSet;
use std::fmt;

use safecache::Key;
use serde::{Deserialize, Serialize};

use crate::archive::Counts;
use crate::keys::{self, PublicKey, SecretKey};

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;

/// The longest manifest object read, in bytes.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;

/// The most signatures one manifest may carry.
pub const MAX_SIGNATURES: usize = 8;

/// The first bytes of every signed message: no other message signed with
/// the same key (by this or another program) starts with them.
pub const DOMAIN: &[u8] = b"safecache-remote-manifest\n";

/// A namespace: 1 to 64 bytes of `a-z 0-9 . _ -`, starting with a letter or
/// digit. Stores keep each namespace's objects apart, and a signature
/// binds its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Namespace, ManifestError> {
        let ok = (1..=64).contains(&name.len())
            && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Namespace(name.to_owned()))
        } else {
            Err(ManifestError::InvalidNamespace(safecache::display::escape(name)))
        }
    }

    /// The namespace's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The archive a manifest names: its BLAKE3 hash and length, both of the
/// compressed bytes as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiveRef {
    /// BLAKE3 of the stored archive.
    pub blake3: blake3::Hash,
    /// Its length in bytes.
    pub size: u64,
}

/// What a store says about one key: where its archive is and what it
/// holds. Signed, it is the commit point of an upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteManifest {
    /// The namespace it was uploaded to.
    pub namespace: Namespace,
    /// The entry's key.
    pub key: Key,
    /// The entry's archive.
    pub archive: ArchiveRef,
    /// What the archive holds: extraction stops at these and requires them.
    pub counts: Counts,
}

/// A manifest with its signatures, as a store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: RemoteManifest,
    /// Its signatures, each over [`RemoteManifest::signed_bytes`].
    pub signatures: Vec<ManifestSignature>,
}

/// One signature of a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestSignature {
    /// The key that signed.
    pub public_key: PublicKey,
    /// The ed25519 signature.
    pub signature: [u8; 64],
}

/// Which manifests a reader accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// No keys are configured: any manifest for the namespace and key asked
    /// for, signed or not. This checks integrity (the archive must match
    /// its hash), not who wrote it: anyone who can write to the store can
    /// fill the cache.
    Any,
    /// Only a manifest that one of these keys signed.
    Keys(BTreeSet<PublicKey>),
}

/// Why a manifest was refused. Each is a miss for the reader, never an
/// error of its command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Longer than [`MAX_MANIFEST_LEN`].
    #[error("the manifest is longer than {MAX_MANIFEST_LEN} bytes")]
    TooLong,
    /// Not the JSON of a manifest.
    #[error("the manifest is malformed")]
    Malformed(#[source] serde_json::Error),
    /// Valid JSON of a manifest, but not in its one canonical encoding.
    #[error("the manifest is not in canonical form")]
    NotCanonical,
    /// A format this build does not read.
    #[error("the manifest has format {0}, which this build does not read")]
    UnknownFormat(u32),
    /// A field that does not hold what it must.
    #[error("the manifest's {field} is invalid")]
    InvalidField {
        /// The field.
        field: &'static str,
    },
    /// A namespace that breaks the rules of [`Namespace::new`].
    #[error("invalid namespace `{0}`: use 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit")]
    InvalidNamespace(String),
    /// A manifest of another namespace or key than the one asked for.
    #[error("the manifest is for `{found}`, not `{expected}`")]
    Mismatch {
        /// `namespace/key` asked for, escaped.
        expected: String,
        /// `namespace/key` found, escaped.
        found: String,
    },
    /// Keys are configured and none of them signed it.
    #[error("the manifest has no signature by a trusted key")]
    Untrusted,
    /// A trusted key's signature that does not verify: the manifest was
    /// changed after signing, or the signature was copied from another.
    #[error("the signature by {0} does not verify")]
    BadSignature(PublicKey),
}

impl RemoteManifest {
    /// The exact bytes its signatures cover: [`DOMAIN`], then the format as
    /// a big-endian u32, then the namespace and the key each as a
    /// big-endian u32 length and its bytes, the archive's 32 hash bytes,
    /// and its size, the member count and the file bytes as big-endian
    /// u64s. Each field has a fixed length or a length prefix, so no two
    /// manifests share these bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 4 + 8 + self.namespace.0.len() + self.key.as_str().len() + 56);
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&FORMAT.to_be_bytes());
        for field in [self.namespace.as_str(), self.key.as_str()] {
            // Both are at most a few hundred bytes (validated), so the
            // length always fits.
            let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(self.archive.blake3.as_bytes());
        out.extend_from_slice(&self.archive.size.to_be_bytes());
        out.extend_from_slice(&self.counts.names.to_be_bytes());
        out.extend_from_slice(&self.counts.bytes.to_be_bytes());
        out
    }

    /// The manifest signed by each of `keys` (none: unsigned).
    pub fn sign(self, keys: &[&SecretKey]) -> SignedManifest {
        let message = self.signed_bytes();
        let signatures = keys
            .iter()
            .map(|key| ManifestSignature { public_key: key.public_key(), signature: key.sign(&message) })
            .collect();
        SignedManifest { manifest: self, signatures }
    }
}

/// The JSON form, field by field in this order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: u32,
    namespace: String,
    key: String,
    archive: WireArchive,
    counts: WireCounts,
    signatures: Vec<WireSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireArchive {
    blake3: String,
    size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCounts {
    names: u64,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSignature {
    public_key: String,
    signature: String,
}

impl SignedManifest {
    /// Its one encoding: compact JSON on one line, ending in `\n`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let m = &self.manifest;
        let wire = Wire {
            format: FORMAT,
            namespace: m.namespace.0.clone(),
            key: m.key.as_str().to_owned(),
            archive: WireArchive { blake3: m.archive.blake3.to_hex().to_string(), size: m.archive.size },
            counts: WireCounts { names: m.counts.names, bytes: m.counts.bytes },
            signatures: self
                .signatures
                .iter()
                .map(|s| WireSignature { public_key: s.public_key.to_string(), signature: keys::hex(&s.signature) })
                .collect(),
        };
        // Serializing plain strings and numbers into a Vec cannot fail.
        let mut out = serde_json::to_vec(&wire).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses a manifest object: at most [`MAX_MANIFEST_LEN`] bytes, in
    /// exactly the encoding [`SignedManifest::to_bytes`] writes, of a known
    /// format, every field valid. Says nothing of its signatures: see
    /// [`SignedManifest::verify`].
    pub fn parse(bytes: &[u8]) -> Result<SignedManifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLong);
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(ManifestError::Malformed)?;
        if wire.format != FORMAT {
            return Err(ManifestError::UnknownFormat(wire.format));
        }
        if wire.signatures.len() > MAX_SIGNATURES {
            return Err(ManifestError::InvalidField { field: "signatures" });
        }
        let invalid = |field| ManifestError::InvalidField { field };
        let blake3 = keys::unhex::<32>(&wire.archive.blake3).ok_or(invalid("archive.blake3"))?;
        let mut signatures = Vec::with_capacity(wire.signatures.len());
        for s in &wire.signatures {
            signatures.push(ManifestSignature {
                public_key: s.public_key.parse().map_err(|_| invalid("signatures.public_key"))?,
                signature: keys::unhex::<64>(&s.signature).ok_or(invalid("signatures.signature"))?,
            });
        }
        let manifest = SignedManifest {
            manifest: RemoteManifest {
                namespace: Namespace::new(&wire.namespace)?,
                key: Key::new(&wire.key).map_err(|_| invalid("key"))?,
                archive: ArchiveRef { blake3: blake3::Hash::from_bytes(blake3), size: wire.archive.size },
                counts: Counts { names: wire.counts.names, bytes: wire.counts.bytes },
            },
            signatures,
        };
        if manifest.to_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// The manifest, if it is for `namespace` and `key` and `trust`
    /// accepts it: under [`Trust::Keys`], one of the keys must have signed
    /// exactly these fields. Signatures by other keys are ignored.
    pub fn verify(&self, namespace: &Namespace, key: &Key, trust: &Trust) -> Result<&RemoteManifest, ManifestError> {
        let m = &self.manifest;
        if m.namespace != *namespace || m.key != *key {
            let show = |ns: &Namespace, key: &Key| safecache::display::escape(&format!("{ns}/{}", key.as_str()));
            return Err(ManifestError::Mismatch { expected: show(namespace, key), found: show(&m.namespace, &m.key) });
        }
        let Trust::Keys(trusted) = trust else { return Ok(m) };
        let message = m.signed_bytes();
        let mut bad = None;
        for s in self.signatures.iter().filter(|s| trusted.contains(&s.public_key)) {
            if s.public_key.verifies(&message, &s.signature) {
                return Ok(m);
            }
            bad = Some(s.public_key);
        }
        Err(bad.map_or(ManifestError::Untrusted, ManifestError::BadSignature))
    }
}

/// The store's object names, relative to the configured prefix: every
/// object of a namespace lies under `<namespace>/v1/`.
pub mod objects {
    use super::Namespace;
    use safecache::Key;

    /// `<namespace>/v1/manifests/<stored name>`: the key's manifest, named
    /// by the key's stored name (docs/PROTOCOL.md, "Entry names"), which
    /// fits one path component and needs no escaping in any store.
    pub fn manifest(namespace: &Namespace, key: &Key) -> String {
        format!("{namespace}/v1/manifests/{}", key.stored_name())
    }

    /// `<namespace>/v1/archives/<64 hex digits>.tar.zst`: an archive,
    /// named by its BLAKE3 hash.
    pub fn archive(namespace: &Namespace, blake3: &blake3::Hash) -> String {
        format!("{namespace}/v1/archives/{}.tar.zst", blake3.to_hex())
    }
}
