//! The remote crate's one integration-test binary: the archive (round
//! trips, determinism, every hostile archive refused), the signed manifest
//! (replay and tampering), key files, and the store layer with injected
//! faults.

mod archive;
mod fill;
mod hostile;
mod keys;
mod location;
mod manifest;
#[cfg(feature = "aws")]
mod s3;
mod store;
mod support;
mod transfer;
