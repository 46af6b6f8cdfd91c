//! The code of `cargo-safecache` and `safecache`: both binaries' `main` is
//! [`main`], which returns the process's exit code (docs/CLI.md lists
//! them). It is a library only so that two binaries can share it; it is not
//! an API.

mod cli;
mod commands;
mod ctx;
mod dispatch;
mod exit;
mod hint;
mod inherit;
mod key_files;
mod process;
mod reference;
mod remote;
mod report;
mod settings;
mod stats;
mod ui;

pub use cli::Binary;

/// Runs the program as `binary` and returns the process's exit code.
pub fn main(binary: Binary) -> std::process::ExitCode {
    // The detached reclaimer `rm` and `clean` start is this binary
    // re-executed: it must not parse the command line or read the
    // environment as the CLI does.
    if let Some(code) = process::reclaimer_main() {
        return std::process::ExitCode::from(code);
    }
    std::process::ExitCode::from(dispatch::main_impl(binary))
}

/// What `--help` says about the environment and the exit codes, for the
/// tidy test that compares it with docs/CLI.md. Not an API.
#[doc(hidden)]
pub mod contract {
    /// The exit codes and their meanings, in `--help`'s order.
    pub fn exit_codes() -> Vec<(&'static str, &'static str)> {
        crate::reference::exit_codes()
    }

    /// Every variable safecache reads, with its meaning.
    pub fn environment() -> Vec<(String, String)> {
        crate::reference::read_by(&crate::cli::command("safecache"))
    }

    /// Every `reason` a typed report may carry (docs/CLI.md's "JSON
    /// messages"; messages still written with `json!` are found in the
    /// source by the tidy test).
    pub const REPORT_REASONS: &[&str] = crate::report::Report::REASONS;

    /// What `run` exports to CMD, with each variable's value.
    pub const EXPORTED: &[(&str, &str)] = &crate::reference::EXPORTED;
}
