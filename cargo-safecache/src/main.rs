//! `cargo safecache`: run any command with cache leases, single-flight fills
//! and pins on a safecache cache directory. Cargo runs `cargo safecache ARGS`
//! as `cargo-safecache safecache ARGS`; `cargo-safecache ARGS` works too.
//!
//! This file is a shim: the `safecache` binary is the same program.

fn main() -> std::process::ExitCode {
    cargo_safecache::main(cargo_safecache::Binary::CargoSafecache)
}
