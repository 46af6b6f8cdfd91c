//! This defines the reference at the end of the top-level `--help`: the
//! environment and the exit codes, each generated from one definition. The
//! variables safecache reads are those of the clap arguments (`env = ...`)
//! and [`READ`]; the ones `run` exports to CMD are [`EXPORTED`]; the exit
//! codes are [`exit::CODES`]. The same lists drive the empty-means-unset
//! rule ([`unset_empty`]) and a tidy test that compares them with
//! docs/CLI.md, so help, behaviour and docs cannot drift apart.
//!
//! The crate root re-exports it (hidden) for that tidy test.

use std::fmt::Write as _;

use crate::exit;

/// Variables safecache reads that no option stands for, with what they do.
const READ: [(&str, &str); 5] = [
    ("SAFECACHE_LOG", "a tracing filter for diagnostics on stderr, e.g. `debug` or `safecache=info`"),
    ("SAFECACHE_LEASE", "the nested-invocation marker exported by `run` and `use`"),
    ("SAFECACHE_LEASE_DIR", "the nested-invocation marker exported by `run` and `use`"),
    ("SAFECACHE_RUN_PIDS", "the pids of the `run`s and `use`s a command runs under, exported by them"),
    ("NO_COLOR", "disables color under --color auto"),
];

/// Variables that locate the default cache dir, read as the platform
/// defines them (an empty or relative `XDG_CACHE_HOME` is ignored).
const PLATFORM: [(&str, &str); 2] =
    [("XDG_CACHE_HOME", "locates the default cache dir"), ("HOME", "locates the default cache dir")];

/// What `run` exports to CMD, with each variable's value.
pub(crate) const EXPORTED: [(&str, &str); 7] = [
    ("SAFECACHE_DIR", "the cache directory (absolute)"),
    ("SAFECACHE_LEASE", "`shared` or `exclusive`: the lease held for CMD"),
    ("SAFECACHE_LEASE_DIR", "the canonical path of the cache that lease covers"),
    ("SAFECACHE_RUN_PIDS", "the pids of the `run`s and `use`s CMD runs under (outermost first, this one last)"),
    ("SAFECACHE_OUT", "to a fill: the private directory to fill"),
    ("SAFECACHE_ENTRY", "with a key: the entry's final path"),
    ("SAFECACHE_HIT", "`1` when the entry was already there, `0` when this run filled it"),
];

/// The exit codes and their meanings (see [`exit::CODES`]).
pub(crate) fn exit_codes() -> Vec<(&'static str, &'static str)> {
    exit::CODES.to_vec()
}

/// Every variable the command line `cmd` (not yet built) reads, with its
/// meaning, in the order `--help` lists them: the options' variables, then
/// the others.
pub(crate) fn read_by(cmd: &clap::Command) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let mut add = |arg: &clap::Arg, sub: Option<&str>| {
        let Some(name) = arg.get_env() else { return };
        let flag = match (sub, arg.get_long()) {
            (None, Some(long)) => format!("--{long}"),
            (Some(sub), Some(long)) => format!("`{sub} --{long}`"),
            (_, None) => arg.get_id().to_string(),
        };
        let meaning = if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            format!("like {flag}: any value but `0`, `false`, `no`, `off`, `n`, `f`")
        } else {
            format!("like {flag}")
        };
        let name = name.to_string_lossy().into_owned();
        // One variable for an option of several subcommands (`run
        // --min-free`, `use --min-free`): listed once, naming each.
        match vars.iter_mut().find(|(n, _): &&mut (String, String)| *n == name) {
            Some((_, existing)) => existing.push_str(&format!(" and {flag}")),
            None => vars.push((name, meaning)),
        }
    };
    for arg in cmd.get_arguments() {
        add(arg, None);
    }
    for sub in cmd.get_subcommands() {
        // The hidden copies of the global options are the top level's.
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            add(arg, Some(sub.get_name()));
        }
    }
    vars.extend(READ.iter().chain(&PLATFORM).map(|(n, m)| ((*n).to_owned(), (*m).to_owned())));
    vars
}

/// The reference for the top-level `--help` of `cmd`: environment and exit
/// codes.
pub(crate) fn long_help(cmd: &clap::Command) -> String {
    let owned = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
        rows.iter().map(|(n, m)| ((*n).to_owned(), (*m).to_owned())).collect()
    };
    let mut out = String::from("Environment (an empty variable counts as unset):\n");
    table(&mut out, &read_by(cmd));
    out.push_str("`run` and `use` export to CMD:\n");
    table(&mut out, &owned(&EXPORTED));
    out.push_str("\nExit codes:\n");
    table(&mut out, &owned(&exit::CODES));
    out
}

/// Two columns, the second wrapped at 100 columns under itself.
fn table(out: &mut String, rows: &[(String, String)]) {
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    for (name, meaning) in rows {
        let indent = 2 + width + 2;
        let mut line = format!("  {name:<width$}  ");
        for word in meaning.split(' ') {
            if line.len() > indent && line.len() + 1 + word.len() > 100 {
                let _ = writeln!(out, "{line}");
                line = " ".repeat(indent);
            } else if line.len() > indent {
                line.push(' ');
            }
            line.push_str(word);
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Removes every variable safecache reads that is set but empty, before the
/// command line is parsed: an empty variable means "unset", as shells and
/// most tools treat it (clap would reject it as an empty value). The
/// platform's variables are left to the platform's rules, and CMD sees
/// them as they were.
pub(crate) fn unset_empty(cmd: &clap::Command) {
    let ours = read_by(cmd).into_iter().map(|(name, _)| name).filter(|n| !PLATFORM.iter().any(|(p, _)| p == n));
    for var in ours.chain(EXPORTED.iter().map(|(n, _)| (*n).to_owned())) {
        if std::env::var_os(&var).is_some_and(|v| v.is_empty()) {
            // SAFETY: no other thread exists yet, so nothing reads the
            // environment concurrently.
            unsafe { std::env::remove_var(&var) };
        }
    }
}
