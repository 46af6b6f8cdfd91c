//! The project's automation: `cargo xtask <task>`.
//!
//! `cargo xtask ci` is the one gate: if it passes locally, CI is green.

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

mod bench;
mod ci;
mod sim;
#[cfg(target_os = "linux")]
mod stress;
#[cfg(test)]
mod tidy;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci      the gate: fmt, clippy, tests, docs, and the wasm32-wasip1 build
  sim     larger simulation sweeps: cargo xtask sim --seeds A..B
  bench   benchmarks against speed and memory targets
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

/// The workspace, as cargo sees it.
pub(crate) struct Workspace {
    pub(crate) root: std::path::PathBuf,
    pub(crate) target_dir: std::path::PathBuf,
}

pub(crate) fn workspace() -> Result<Workspace> {
    let meta = cargo_metadata::MetadataCommand::new().no_deps().exec().context("running cargo metadata")?;
    Ok(Workspace {
        root: meta.workspace_root.into_std_path_buf(),
        target_dir: meta.target_directory.into_std_path_buf(),
    })
}

/// `cargo`, as invoked by whoever ran xtask.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` as one named step, echoing it, and fails if it fails.
pub(crate) fn step(name: &str, cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("\n==> {name}: {shown}");
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("starting {name}"))?;
    eprintln!(
        "==> {name}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("step `{name}` failed ({status})");
    }
    Ok(())
}
