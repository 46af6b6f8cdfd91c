//! `cargo safecache`: run any command with cache leases, single-flight fills
//! and pins on a safecache cache directory.
//!
//! This file is a shim: everything happens in [`dispatch::main_impl`], which
//! returns the process's exit code (docs/CLI.md lists them).

mod cli;
mod commands;
mod ctx;
mod dispatch;
mod exit;
mod inherit;
mod run;
mod tree;
mod ui;

fn main() -> std::process::ExitCode {
    // `run`'s supervisor is this binary re-executed (see `tree`): it must
    // not parse the command line or read the environment as the CLI does.
    if let Some(code) = tree::supervisor_main() {
        return std::process::ExitCode::from(code);
    }
    std::process::ExitCode::from(dispatch::main_impl())
}
