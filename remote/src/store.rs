//! This defines the store layer (docs/REMOTE.md, "On the store"): an
//! upload puts the archive under its hash first and the signed manifest
//! last, create-only, so the manifest is the commit point and the first
//! writer of a key wins; a fetch reads the manifest (capped), verifies it,
//! and streams the archive into a local file within its declared size,
//! checking its hash. Everything read from the store is untrusted, and every
//! failure of a fetch is a miss to its caller.

use std::io::{self, Read, Write};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use safecache::Key;

use crate::keys::SecretKey;
use crate::manifest::{self, ArchiveRef, ManifestError, Namespace, RemoteManifest, SignedManifest, Trust, objects};
use crate::pack::Packed;

/// Archives up to this size go up in one put; larger ones in parts of
/// this size (S3 wants parts of at least 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// How many parts of one archive are in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Whether a remote may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Fetch only: an upload makes no call to the store.
    ReadOnly,
    /// Fetch and upload.
    ReadWrite,
}

/// One namespace of one object store, with the keys it trusts and signs
/// with.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    namespace: Namespace,
    access: Access,
    trust: Trust,
    signer: Option<SecretKey>,
}

/// What an upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// This upload's manifest is the key's.
    Published,
    /// The key already had a manifest (another writer's, or an earlier
    /// one): the first writer wins, and nothing of this upload is
    /// referenced.
    AlreadyThere,
}

/// What [`Remote::list`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The keys with a manifest, sorted.
    pub keys: Vec<Listed>,
    /// Other objects among the manifests (no key's stored name, or
    /// deeper), escaped, sorted.
    pub foreign: Vec<String>,
}

/// One key of a [`Listing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The key.
    pub key: Key,
    /// Its manifest object's size in bytes.
    pub manifest_size: u64,
    /// When the store says the manifest was written, in seconds since the
    /// Unix epoch.
    pub modified_unix: i64,
}

/// What [`Remote::check`] found, when the store works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Whether it wrote (a writable remote): the store refused a second
    /// create.
    pub wrote: bool,
    /// The probe object, if deleting it failed.
    pub probe_left: Option<String>,
}

/// Why an upload or a fetch failed. To a fetch's caller each is a miss;
/// [`StoreError::NotFound`] is the ordinary one, the others are worth a
/// warning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key has no manifest in the store.
    #[error("`{path}` is not in the store")]
    NotFound {
        /// The manifest's object name.
        path: String,
    },
    /// A call to the store failed.
    #[error("the store failed to {op} `{path}`")]
    Store {
        /// `get`, `put`, `head`, ...
        op: &'static str,
        /// The object's name.
        path: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// The manifest was refused.
    #[error("refused the manifest `{path}`")]
    Manifest {
        /// The manifest's object name.
        path: String,
        /// Why.
        #[source]
        source: ManifestError,
    },
    /// The archive object is not as long as its manifest says.
    #[error("the archive `{path}` is not {expected} bytes long, as its manifest says")]
    ArchiveSize {
        /// The archive's object name.
        path: String,
        /// Its size by the manifest.
        expected: u64,
    },
    /// The archive's bytes do not hash to its manifest's hash.
    #[error("the archive `{path}` does not match its manifest's hash")]
    ArchiveHash {
        /// The archive's object name.
        path: String,
    },
    /// The local archive file could not be read or written.
    #[error("cannot {op} the local archive file")]
    Local {
        /// `read`, `write`.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The local archive is not what was packed (changed since).
    #[error("the local archive changed since it was packed")]
    LocalChanged,
    /// An upload to a read-only remote.
    #[error("the remote is read-only")]
    ReadOnly,
    /// The store accepted a second create-only put of one object: it
    /// ignores the condition, so two writers of a key would both win.
    #[error("the store does not refuse a second create of `{path}`: it cannot hold a remote cache safely")]
    CreateNotExclusive {
        /// The probe object.
        path: String,
    },
    /// The random probe object of a check already exists.
    #[error("the probe object `{path}` exists already")]
    ProbeExists {
        /// The probe object.
        path: String,
    },
    /// The prefix is not a valid object name.
    #[error("invalid store prefix `{0}`")]
    InvalidPrefix(String),
}

impl StoreError {
    /// Whether this is the ordinary miss: no manifest for the key.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
}

impl Remote {
    /// `namespace` of `store` under `prefix` (empty for the store's root),
    /// read-only, trusting `trust`, signing nothing.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        namespace: Namespace,
        trust: Trust,
    ) -> Result<Remote, StoreError> {
        let prefix = Path::parse(prefix).map_err(|_| StoreError::InvalidPrefix(safecache::display::escape(prefix)))?;
        Ok(Remote { store, prefix, namespace, access: Access::ReadOnly, trust, signer: None })
    }

    /// The same remote, writable, signing its manifests with `signer` (none:
    /// unsigned, which readers that configured keys will refuse).
    pub fn writable(mut self, signer: Option<SecretKey>) -> Remote {
        self.access = Access::ReadWrite;
        self.signer = signer;
        self
    }

    /// Whether it may be written.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    fn path(&self, name: &str) -> Path {
        // Object names are made of a valid namespace, a stored name and hex
        // digits, which are all valid path parts.
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.join(part);
        }
        path
    }

    /// The manifest object of `key`.
    pub fn manifest_path(&self, key: &Key) -> Path {
        self.path(&objects::manifest(&self.namespace, key))
    }

    /// The archive object of hash `blake3`.
    pub fn archive_path(&self, blake3: &blake3::Hash) -> Path {
        self.path(&objects::archive(&self.namespace, blake3))
    }

    /// Uploads the entry of `key` that [`crate::pack`] wrote to `archive`
    /// as `packed`: unless the key already has a manifest, puts the archive
    /// under its hash (hashing it again as it is read, so a changed file is
    /// never published), then the signed manifest, create-only. A key that
    /// gained a manifest meanwhile is [`Uploaded::AlreadyThere`]. An error
    /// may leave an archive without a manifest, which no reader sees.
    pub async fn upload(&self, key: &Key, archive: &mut impl Read, packed: &Packed) -> Result<Uploaded, StoreError> {
        if self.access == Access::ReadOnly {
            return Err(StoreError::ReadOnly);
        }
        let manifest_path = self.manifest_path(key);
        match self.store.head(&manifest_path).await {
            Ok(_) => return Ok(Uploaded::AlreadyThere),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(store_error("head", &manifest_path, source)),
        }
        let archive_path = self.archive_path(&packed.blake3);
        self.put_archive(&archive_path, archive, packed).await?;
        let manifest = RemoteManifest {
            namespace: self.namespace.clone(),
            key: key.clone(),
            archive: ArchiveRef { blake3: packed.blake3, size: packed.size },
            counts: packed.counts,
        };
        let signers: Vec<&SecretKey> = self.signer.iter().collect();
        let bytes = manifest.sign(&signers).to_bytes();
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&manifest_path, PutPayload::from(bytes), create).await {
            Ok(_) => Ok(Uploaded::Published),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Uploaded::AlreadyThere),
            Err(source) => Err(store_error("put", &manifest_path, source)),
        }
    }

    async fn put_archive(&self, path: &Path, archive: &mut impl Read, packed: &Packed) -> Result<(), StoreError> {
        let mut source = Source { archive, hasher: blake3::Hasher::new(), left: packed.size };
        let mut buf = Vec::with_capacity(PART_SIZE.min(usize::try_from(packed.size).unwrap_or(PART_SIZE)));
        if packed.size <= PART_SIZE as u64 {
            source.next(&mut buf)?;
            source.check(packed)?;
            self.store.put(path, PutPayload::from(buf)).await.map_err(|e| store_error("put", path, e))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(path).await.map_err(|e| store_error("start uploading", path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let result = async {
            while source.left > 0 {
                source.next(&mut buf)?;
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| store_error("upload", path, e))?;
                writer.write(&buf);
            }
            source.check(packed)
        }
        .await;
        match result {
            Ok(()) => writer.finish().await.map(drop).map_err(|e| store_error("finish uploading", path, e)),
            Err(err) => {
                // The parts uploaded so far are the store's to drop; the
                // error that matters is the first.
                let _ = writer.abort().await;
                Err(err)
            }
        }
    }

    /// The keys the namespace has manifests for, sorted, read from the
    /// manifests' names alone (none is fetched or verified: a listed key
    /// may still be a miss). Names under `manifests/` that no key is
    /// stored as are listed apart, escaped.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let dir = self.path(&format!("{}/v1/manifests", self.namespace));
        let mut listing = Listing::default();
        let mut stream = self.store.list(Some(&dir));
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|source| store_error("list", &dir, source))?;
            let name = meta.location.filename().unwrap_or_default();
            let direct = meta.location.prefix_match(&dir).is_some_and(|mut rest| rest.nth(1).is_none());
            match Key::from_stored_name(name).filter(|_| direct) {
                Some(key) => listing.keys.push(Listed {
                    key,
                    manifest_size: meta.size,
                    modified_unix: meta.last_modified.timestamp(),
                }),
                None => listing.foreign.push(safecache::display::escape(meta.location.as_ref())),
            }
        }
        listing.keys.sort_by(|a, b| a.key.cmp(&b.key));
        listing.foreign.sort();
        Ok(listing)
    }

    /// Checks that the store can be reached with the configured access:
    /// a read of the probe object `<namespace>/v1/probe/<random>` (absent)
    /// and, for a writable remote, two create-only puts of it, of which the
    /// store must refuse the second (else the first writer of a key would
    /// not win), a read back of the first, and a delete. A probe the delete
    /// could not remove is reported, not an error.
    pub async fn check(&self) -> Result<Checked, StoreError> {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| StoreError::Local { op: "make a name for", source: e.into() })?;
        let probe = self.path(&format!("{}/v1/probe/{}", self.namespace, crate::keys::hex(&random)));
        match self.store.head(&probe).await {
            Err(object_store::Error::NotFound { .. }) => {}
            Ok(_) => return Err(StoreError::ProbeExists { path: show(&probe) }),
            Err(source) => return Err(store_error("head", &probe, source)),
        }
        if self.access == Access::ReadOnly {
            return Ok(Checked { wrote: false, probe_left: None });
        }
        let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
        let first = PutPayload::from_static(b"safecache probe: first\n");
        self.store.put_opts(&probe, first, create()).await.map_err(|source| store_error("put", &probe, source))?;
        let second = PutPayload::from_static(b"safecache probe: second\n");
        let refused = match self.store.put_opts(&probe, second, create()).await {
            Err(object_store::Error::AlreadyExists { .. }) => true,
            Ok(_) => false,
            Err(source) => return Err(store_error("put", &probe, source)),
        };
        let kept = async { self.store.get(&probe).await?.bytes().await }
            .await
            .map_err(|source| store_error("get", &probe, source))?;
        let probe_left = self.store.delete(&probe).await.err().map(|_| show(&probe));
        if !refused || &kept[..] != b"safecache probe: first\n" {
            return Err(StoreError::CreateNotExclusive { path: show(&probe) });
        }
        Ok(Checked { wrote: true, probe_left })
    }

    /// Fetches the entry of `key`: reads and verifies its manifest, then
    /// streams its archive into `into`, stopping past the manifest's size,
    /// and checks the archive's size and hash. Returns the manifest, whose
    /// counts bound the extraction. On an error, what `into` received is
    /// to be discarded.
    pub async fn fetch(&self, key: &Key, into: &mut impl Write) -> Result<RemoteManifest, StoreError> {
        let manifest_path = self.manifest_path(key);
        let refused = |source| StoreError::Manifest { path: show(&manifest_path), source };
        let result = match self.store.get(&manifest_path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StoreError::NotFound { path: show(&manifest_path) });
            }
            Err(source) => return Err(store_error("get", &manifest_path, source)),
        };
        if result.meta.size > manifest::MAX_MANIFEST_LEN as u64 {
            return Err(refused(ManifestError::TooLong));
        }
        let mut bytes = Vec::new();
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| store_error("get", &manifest_path, source))?;
            if bytes.len() + chunk.len() > manifest::MAX_MANIFEST_LEN {
                return Err(refused(ManifestError::TooLong));
            }
            bytes.extend_from_slice(&chunk);
        }
        let signed = SignedManifest::parse(&bytes).map_err(refused)?;
        let manifest = signed.verify(&self.namespace, key, &self.trust).map_err(refused)?.clone();

        let archive_path = self.archive_path(&manifest.archive.blake3);
        let wrong_size = || StoreError::ArchiveSize { path: show(&archive_path), expected: manifest.archive.size };
        let result = self.store.get(&archive_path).await.map_err(|source| store_error("get", &archive_path, source))?;
        if result.meta.size != manifest.archive.size {
            return Err(wrong_size());
        }
        let mut hasher = blake3::Hasher::new();
        let mut got = 0u64;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| store_error("get", &archive_path, source))?;
            got = got.saturating_add(chunk.len() as u64);
            if got > manifest.archive.size {
                return Err(wrong_size());
            }
            hasher.update(&chunk);
            into.write_all(&chunk).map_err(|source| StoreError::Local { op: "write", source })?;
        }
        if got != manifest.archive.size {
            return Err(wrong_size());
        }
        if hasher.finalize() != manifest.archive.blake3 {
            return Err(StoreError::ArchiveHash { path: show(&archive_path) });
        }
        into.flush().map_err(|source| StoreError::Local { op: "write", source })?;
        Ok(manifest)
    }
}

/// The local archive being uploaded: read in parts, hashed again as it
/// goes, and required to be exactly what was packed.
struct Source<'a, R> {
    archive: &'a mut R,
    hasher: blake3::Hasher,
    left: u64,
}

impl<R: Read> Source<'_, R> {
    /// The next part, at most [`PART_SIZE`] bytes, into `buf`.
    fn next(&mut self, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        buf.clear();
        let want = self.left.min(PART_SIZE as u64);
        (&mut *self.archive).take(want).read_to_end(buf).map_err(|source| StoreError::Local { op: "read", source })?;
        if (buf.len() as u64) < want {
            return Err(StoreError::LocalChanged);
        }
        self.left -= want;
        self.hasher.update(buf);
        Ok(())
    }

    /// Whether what was read is what was packed, and nothing follows it.
    fn check(&mut self, packed: &Packed) -> Result<(), StoreError> {
        let mut probe = [0u8; 1];
        let more = self.archive.read(&mut probe).map_err(|source| StoreError::Local { op: "read", source })?;
        if more != 0 || self.hasher.finalize() != packed.blake3 {
            return Err(StoreError::LocalChanged);
        }
        Ok(())
    }
}

/// An object's name, ready to print: it holds the configured prefix.
fn show(path: &Path) -> String {
    safecache::display::escape(path.as_ref())
}

#[cold]
fn store_error(op: &'static str, path: &Path, source: object_store::Error) -> StoreError {
    StoreError::Store { op, path: show(path), source }
}
