//! Integration tests of the safecache core, with real concurrent processes.
//!
//! Cross-process tests re-execute this very test binary as a helper process
//! (see `child.rs`): the parent runs it with `SAFECACHE_IT_ROLE` set and the
//! libtest filter `--exact child_process`, so the helper is a real, separate
//! process that links the same library. Parent and children synchronize
//! through pipes (a child prints `@@ <event>` lines and blocks reading its
//! stdin), never through sleeps.
// Tests build fixtures and inspect results with ambient std::fs; only the
// library itself is held to the directory-handle rule.
#![allow(clippy::disallowed_methods)]

mod child;
mod support;

mod bad_input;
mod config;
mod disk;
mod evict;
mod fill;
mod fill_log;
mod full_disk;
mod hostile;
mod kill;
mod model;
mod modify;
mod mutants;
mod pin;
mod remove;
mod shape;
mod stats;
mod verify;
mod wait;

/// The entry point of helper processes; a no-op in a normal test run.
#[test]
fn child_process() {
    if let Ok(role) = std::env::var(child::ROLE_VAR) {
        let code = child::run(&role);
        std::process::exit(code);
    }
}
