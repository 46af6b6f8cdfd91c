//! This defines the command line: the global options, the subcommands, and
//! the two ways to be invoked (`cargo safecache ARGS` through cargo, which
//! runs `cargo-safecache safecache ARGS`, and `cargo-safecache ARGS`
//! directly).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use safecache::Key;

/// Exit codes and environment, shown at the end of every `--help`.
macro_rules! reference {
    () => {
        "\
Environment:
  SAFECACHE_DIR           cache directory (default: $XDG_CACHE_HOME/safecache)
  SAFECACHE_LOCK_TIMEOUT  seconds to wait for a lock; 0: don't wait; `never`
                          (default: forever on a terminal, 300 otherwise)
  CARGO_TERM_COLOR        auto, always or never, like --color
  SAFECACHE_ALLOW_UNTRUSTED_CACHE  1: like --allow-untrusted-cache
  SAFECACHE_LOG           tracing filter for diagnostics on stderr, e.g. `debug`
  `run` exports to CMD: SAFECACHE_DIR, SAFECACHE_LEASE (shared|exclusive),
  SAFECACHE_LEASE_DIR (the canonical cache path) and, with --key, SAFECACHE_OUT.

Exit codes:
  0    ok
  N    `run`: CMD's own exit status (128+SIGNAL if a signal killed it)
  1    `path`: the key is not in the cache
  2    usage error: bad option or argument, invalid key, a cache dir that is
       not a directory or not a cache
  75   a lock timed out, or was busy under --lock-timeout 0
  77   the cache belongs to another user or others can write to it
  101  any other failure

Full documentation: docs/CLI.md"
    };
}

/// The end of the top-level `--help`.
pub(crate) const AFTER_HELP: &str = reference!();

/// `cargo safecache ...`, as cargo invokes it: `cargo-safecache safecache ...`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap::builder::styling::Styles::styled())]
pub(crate) enum CargoCli {
    /// Run commands with cache leases, single-flight fills and pins.
    Safecache(App),
}

/// `cargo-safecache ...`, invoked directly.
#[derive(Debug, Parser)]
#[command(
    name = "cargo-safecache",
    version,
    about = "Run commands with cache leases, single-flight fills and pins on a shared cache directory.",
    after_help = AFTER_HELP,
    subcommand_required = true
)]
pub(crate) struct App {
    #[command(flatten)]
    pub(crate) global: GlobalOpts,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Args)]
pub(crate) struct GlobalOpts {
    /// The cache directory; created on first use if missing or empty.
    /// [default: $XDG_CACHE_HOME/safecache]
    #[arg(long, global = true, value_name = "DIR", env = "SAFECACHE_DIR", hide_env_values = true)]
    pub(crate) cache_dir: Option<PathBuf>,

    /// Seconds to wait for a lock before failing with exit code 75; 0 means
    /// don't wait, `never` waits without limit. [default: forever on a
    /// terminal, 300 otherwise]
    #[arg(long, global = true, value_name = "SECS", env = "SAFECACHE_LOCK_TIMEOUT", value_parser = parse_timeout)]
    pub(crate) lock_timeout: Option<Duration>,

    /// Open the cache even if another user owns it or others can write to
    /// it. Without this, such a cache is refused (exit 77): another user
    /// could redirect this process's writes (docs/SECURITY.md).
    #[arg(long, global = true, env = "SAFECACHE_ALLOW_UNTRUSTED_CACHE", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) allow_untrusted_cache: bool,

    /// When to color status messages.
    #[arg(long, global = true, value_name = "WHEN", env = "CARGO_TERM_COLOR", default_value = "auto")]
    pub(crate) color: ColorWhen,

    /// More diagnostics on stderr (-v: info, -vv: debug); SAFECACHE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// No status messages on stderr (errors, and the notice that a command is
    /// blocked on a lock, are still shown).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// `json`: one JSON object per line on stdout, each with a `reason`
    /// field; human text goes to stderr.
    #[arg(long, global = true, value_name = "FMT", default_value = "human")]
    pub(crate) message_format: MessageFormat,
}

/// `--color`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorWhen {
    /// Color when stderr is a terminal and NO_COLOR is unset.
    Auto,
    /// Always color.
    Always,
    /// Never color.
    Never,
}

/// `--message-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MessageFormat {
    /// Text for people.
    Human,
    /// JSON lines on stdout.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run CMD under a lease on the cache; with --key, fill KEY by running
    /// CMD once (single-flight).
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Print the absolute path of KEY's entry; exit 1 if it is absent.
    #[command(after_help = AFTER_HELP)]
    Path {
        /// The entry's key, e.g. `git/serde`.
        #[arg(value_parser = parse_key)]
        key: Key,
    },
    /// List entries with size and last use.
    #[command(after_help = AFTER_HELP)]
    Ls,
    /// Show who holds every lease, pin and fill, plus orphans, trash and sizes.
    #[command(after_help = AFTER_HELP)]
    Status,
    /// Remove entries; waits for their pins and fills to finish.
    #[command(after_help = AFTER_HELP)]
    Rm {
        /// Keys of the entries to remove.
        #[arg(required = true, value_parser = parse_key)]
        keys: Vec<Key>,
    },
    /// Remove every entry; waits until nobody uses the cache.
    #[command(after_help = AFTER_HELP)]
    Clean,
    /// Reclaim what killed processes left behind (orphaned temps and trash).
    #[command(after_help = AFTER_HELP)]
    Gc,
    /// Adopt an existing non-empty directory as a cache (its files become entries).
    #[command(after_help = AFTER_HELP)]
    Init {
        /// The directory. [default: the cache dir]
        dir: Option<PathBuf>,
    },
}

const RUN_AFTER_HELP: &str = concat!(
    "\
Without --key, CMD runs while this process holds a shared lease on the cache
(exclusive with --exclusive), so `clean` waits for it. With --key KEY, CMD
runs only if KEY is absent, with SAFECACHE_OUT set to an empty private
directory that is published as KEY if CMD exits 0; concurrent runs of one KEY
run CMD once and all print the entry's path as the last line on stdout.

SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group; whatever
CMD leaves running is killed when it exits; `run` exits with CMD's status.\n\n",
    reference!()
);

/// `run`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Hold the lease exclusively, for commands that rewrite the cache
    /// themselves (such as `pip-compile --rebuild`).
    #[arg(long)]
    pub(crate) exclusive: bool,

    /// Fill KEY by running CMD with SAFECACHE_OUT set, unless KEY is already
    /// in the cache; on success print the entry's path last on stdout.
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub(crate) key: Option<Key>,

    /// Keep KEY's entry from being removed while CMD runs (repeatable). An
    /// absent KEY fails before CMD starts.
    #[arg(long = "pin", value_name = "KEY", value_parser = parse_key)]
    pub(crate) pins: Vec<Key>,

    /// The command to run, after `--`.
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    pub(crate) command: Vec<OsString>,
}

fn parse_key(s: &str) -> Result<Key, String> {
    Key::new(s).map_err(|e| e.to_string())
}

/// Seconds, or `never` for no limit (a timeout too long to represent, which
/// the core treats as forever).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    if s.trim().eq_ignore_ascii_case("never") {
        return Ok(Duration::MAX);
    }
    match s.trim().parse::<f64>() {
        Ok(secs) if (0.0..1e12).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err("expected a number of seconds such as `30` or `0.5` (0: don't wait), or `never`".to_owned()),
    }
}

/// Parses `args` (the full argv), in the cargo form when the first argument
/// is `safecache`, else directly.
pub(crate) fn parse(args: Vec<OsString>) -> Result<App, clap::Error> {
    if args.get(1).is_some_and(|a| a == "safecache") {
        let CargoCli::Safecache(app) = CargoCli::try_parse_from(args)?;
        Ok(app)
    } else {
        App::try_parse_from(args)
    }
}
