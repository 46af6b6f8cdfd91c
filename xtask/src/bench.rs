//! This defines `cargo xtask bench`: the core's operation benchmarks
//! (`cargo bench -p safecache --bench ops`) and the simulation's throughput
//! (schedules per second of the 3-process scenario `fill3`, release build).
//!
//! `cargo xtask bench removal` runs the big removal rows (`rm` of an entry
//! of 100,000 files, `clean` of 100,000 entries, each beside `rm -rf`,
//! measured once: `cargo bench -p safecache --bench removal`), which the
//! default run includes.
//!
//! `cargo xtask bench cli` runs the command line's rows (`use`, `run`,
//! `path` and startup, each beside `flock LOCKFILE true`: `cargo bench -p
//! cargo-safecache --bench cli`), which the default run includes. It runs
//! them under moto's S3 server (`s3.rs`), named in
//! `SAFECACHE_TEST_S3_ENDPOINT`, for the rows that restore from a store.
//!
//! `cargo xtask bench listing` runs `ls`, `status` and `init` over a cache
//! of 100,000 entries, each beside a `find` walk of it, with their peak
//! memory (`cargo bench -p cargo-safecache --bench listing`), which the
//! default run includes.
//!
//! `cargo xtask bench core` or `cargo xtask bench sim` runs one of them;
//! `cargo xtask bench sim --seconds 20` measures longer. The figures go in
//! docs/BENCHMARKS.md.

use anyhow::Result;

pub(crate) fn run(args: &[String]) -> Result<()> {
    let ws = crate::workspace()?;
    let (which, rest) = match args.first().map(String::as_str) {
        Some(w @ ("core" | "cli" | "listing" | "sim" | "removal")) => (Some(w), &args[1..]),
        _ => (None, args),
    };
    if which.is_none_or(|w| w == "core") {
        crate::step(
            "bench core",
            crate::cargo().current_dir(&ws.root).args(["bench", "--package", "safecache", "--bench", "ops"]),
        )?;
    }
    if which.is_none_or(|w| w == "cli") {
        // Its remote rows read from S3: moto serves it for this step alone
        // (killed when `s3` drops at the end of this block, on failure too).
        let s3 = crate::s3::Server::start_with_moto(&ws)?;
        crate::step(
            "bench cli",
            crate::cargo()
                .current_dir(&ws.root)
                .args(["bench", "--package", "cargo-safecache", "--bench", "cli"])
                .env(crate::s3::ENDPOINT_VAR, &s3.endpoint),
        )?;
    }
    if which.is_none_or(|w| w == "listing") {
        crate::step(
            "bench listing",
            crate::cargo().current_dir(&ws.root).args(["bench", "--package", "cargo-safecache", "--bench", "listing"]),
        )?;
    }
    if which.is_none_or(|w| w == "removal") {
        crate::step(
            "bench removal",
            crate::cargo().current_dir(&ws.root).args(["bench", "--package", "safecache", "--bench", "removal"]),
        )?;
    }
    if which.is_none_or(|w| w == "sim") {
        crate::step(
            "bench sim",
            crate::cargo()
                .current_dir(&ws.root)
                .args(["run", "--release", "--quiet", "--package", "wasm-tests", "--bin", "sim", "--", "bench"])
                .args(rest),
        )?;
    }
    Ok(())
}
