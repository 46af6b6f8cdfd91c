//! The remote tier of safecache (docs/REMOTE.md): what an entry becomes in
//! an object store shared by machines and CI runners, and how it comes
//! back without trusting the store.
//!
//! - [`pack`] and [`extract`]: the deterministic archive of an entry
//!   directory (sorted tar, fixed times, owners and modes, zstd, hashed
//!   with BLAKE3 as it streams), and its extraction into a private
//!   directory that refuses anything outside the entry or over what the
//!   manifest declares.
//! - [`RemoteManifest`] and [`SignedManifest`]: the commit point of an
//!   upload, signed with ed25519 over the namespace, the key, the archive's
//!   hash and size and the counts; [`Trust`] says which signers a reader
//!   accepts.
//! - [`keys`]: key pairs and their files.
//! - [`Remote`]: one namespace of an object store: upload (archive, then
//!   the manifest create-only) and fetch (manifest verified, archive
//!   streamed within its size and checked against its hash).
//! - [`open_store`]: a remote's URL and options as an object store, every
//!   option checked.
//! - [`restore`] and [`upload_entry`]: the two transfers of a fill, through
//!   directory handles, the archive in an unnamed file.
//!
//! This crate is native only: it works through `cap_std` directory
//! handles, and (for the store) `object_store` and `tokio`, none of which
//! may enter the core's wasm32-wasip1 build. The core (`safecache`) stays
//! free of them; the CLI joins the two.

#![deny(missing_docs)]

pub mod archive;
mod extract;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod keys;
mod local;
mod location;
mod manifest;
mod pack;
mod store;
mod transfer;

pub use archive::{ArchiveError, Counts};
pub use extract::extract;
pub use keys::{KeyError, PublicKey, SecretKey};
pub use location::{LocationError, RETRY_TIMEOUT, StoreSpec, open_store, open_store_from, store_spec};
pub use manifest::{
    ArchiveRef, DOMAIN, FORMAT, MAX_MANIFEST_LEN, MAX_SIGNATURES, ManifestError, ManifestSignature, Namespace,
    RemoteManifest, SignedManifest, Trust, objects,
};
pub use pack::{Packed, pack};
pub use store::{Access, Checked, Listed, Listing, PART_SIZE, Remote, StoreError, Uploaded};
pub use transfer::{TransferError, empty_dir, restore, restore_with, scratch_file, upload_entry, upload_entry_with};
