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
mod ui;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(dispatch::main_impl())
}
