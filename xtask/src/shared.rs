//! The helpers every task shares: where the workspace is, how to run
//! cargo, and how to run one named step of a task.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

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
