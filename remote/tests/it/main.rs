//! The remote crate's one integration-test binary: the archive (round
//! trips, determinism, every hostile archive refused), the signed manifest
//! (replay and tampering) and key files.

mod archive;
mod hostile;
mod keys;
mod manifest;
mod support;
