//! This defines `cargo xtask ci`, the gate every change passes.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, step, workspace};

pub(crate) const WASM_TARGET: &str = "wasm32-wasip1";

pub(crate) fn run(args: &[String]) -> Result<()> {
    if let Some(arg) = args.first() {
        bail!("`cargo xtask ci` takes no arguments, got `{arg}`");
    }
    let ws = workspace()?;
    std::env::set_current_dir(&ws.root)?;
    ensure_rustup_parts()?;
    step("fmt", cargo().args(["fmt", "--all", "--check"]))?;
    step("clippy", cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    step(
        "clippy (wasm32-wasip1 core)",
        cargo().args(["clippy", "-p", "safecache", "--target", WASM_TARGET, "--locked", "--", "-D", "warnings"]),
    )?;
    step(
        "check (wasm32-wasip1 core)",
        cargo().args(["check", "-p", "safecache", "--target", WASM_TARGET, "--locked"]),
    )?;
    step("test", cargo().args(["test", "--workspace", "--locked"]))?;
    // A short stress run: real processes, real kills, through the CLI, with
    // fills that leave writers behind. Its 20 seconds are most of what it
    // adds to the gate; docs/STRESS.md.
    if cfg!(target_os = "linux") {
        let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
        step("stress", Command::new(xtask).args(["stress", "--procs", "8", "--secs", "20", "--grandchildren"]))?;
    }
    step("doc", cargo().args(["doc", "--workspace", "--no-deps", "--locked"]).env("RUSTDOCFLAGS", "-D warnings"))?;
    eprintln!("\nxtask ci: all steps passed (target dir {})", ws.target_dir.display());
    Ok(())
}

/// Installs the rustup components and the wasm target the gate needs, if
/// they are missing.
pub(crate) fn ensure_rustup_parts() -> Result<()> {
    let installed = |what: &str| -> Result<String> {
        let out = Command::new("rustup")
            .args([what, "list", "--installed"])
            .output()
            .with_context(|| format!("running `rustup {what} list`; is rustup installed?"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let components = installed("component")?;
    for component in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            step(&format!("install {component}"), Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    if !installed("target")?.lines().any(|l| l.trim() == WASM_TARGET) {
        step("install wasm32-wasip1", Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}
