//! The remote crate's one integration-test binary: the archive (round
//! trips, determinism, every hostile archive refused), the signed manifest
//! (replay and tampering), key files, and the store layer with injected
//! faults. Cross-process tests re-run this binary as helper processes
//! (`child.rs`), synchronized by pipes.

mod archive;
mod child;
mod fill;
mod hostile;
mod keys;
mod location;
mod manifest;
mod processes;
#[cfg(feature = "aws")]
mod s3;
mod store;
mod support;
mod transfer;

/// The entry point of helper processes; a no-op in a normal test run.
#[test]
fn child_process() {
    if let Ok(role) = std::env::var(child::ROLE_VAR) {
        std::process::exit(child::run(&role));
    }
}
