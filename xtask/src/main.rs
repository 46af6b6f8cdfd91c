//! The project's automation: `cargo xtask <task>`.
//!
//! `cargo xtask ci` is the one gate: if it passes locally, CI is green.

use std::process::ExitCode;

use anyhow::{Result, bail};

mod bench;
mod ci;
mod s3;
mod shared;
mod sim;
#[cfg(target_os = "linux")]
mod stress;
#[cfg(test)]
mod tidy;

// The tasks call the shared helpers as `crate::step` and so on.
pub(crate) use shared::{cargo, step, workspace};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci      the gate: fmt, clippy, tests, docs, and the wasm32-wasip1 build
  sim     larger simulation sweeps: cargo xtask sim --seeds A..B
  bench   benchmarks against speed and memory targets
  s3      cargo test under a real S3 server (moto, in a venv under the target dir), named in
          SAFECACHE_TEST_S3_ENDPOINT: cargo xtask s3 [-- CARGO TEST ARGS]
          (default: -p safecache-remote --features aws --locked)
  stress  real processes share one cache through the CLI while a killer SIGKILLs them:
          cargo xtask stress [--procs 16] [--secs 60] [--seed N] [--keep DIR] [--grandchildren]
          [--tolerate-kill-window]   (docs/STRESS.md)";

fn main() -> ExitCode {
    match main_impl() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main_impl() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("sim") => sim::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("s3") => s3::run(&args[1..]),
        #[cfg(target_os = "linux")]
        Some("stress") => stress::run(&args[1..]),
        #[cfg(target_os = "linux")]
        Some(stress::WORKER) => stress::worker(&args[1..]),
        #[cfg(target_os = "linux")]
        Some(stress::VERIFY) => stress::verify(&args[1..]),
        #[cfg(not(target_os = "linux"))]
        Some("stress") => bail!("`cargo xtask stress` needs Linux: it reads /proc and becomes a child subreaper"),
        Some("help" | "--help" | "-h") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`; run `cargo xtask help` for the list"),
    }
}
