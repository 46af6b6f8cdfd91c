//! This defines the command line: the global options, the subcommands, their
//! help, and the three ways to be invoked (`cargo safecache ARGS` through
//! cargo, which runs `cargo-safecache safecache ARGS`; `cargo-safecache ARGS`
//! and `safecache ARGS` directly). Completions and the man page are generated
//! from it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use safecache::{Durability, Key};

/// Which of the two binaries is running: they are the same program, and
/// differ only in the name they answer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `cargo-safecache`, usually run by cargo as `cargo safecache`.
    CargoSafecache,
    /// `safecache`, for people who do not go through cargo.
    Safecache,
}

/// The heading the global options are listed under.
const GLOBAL_HEADING: &str = "Global options";

/// The cargo form's name, as the user types it.
const CARGO_FORM: &str = "cargo safecache";

/// The name the user invoked the program by, for usage, help and hints:
/// `cargo safecache` when cargo ran `cargo-safecache safecache ARGS`, else
/// the binary's own name.
pub(crate) fn invoked_as(binary: Binary, args: &[OsString]) -> &'static str {
    match binary {
        Binary::Safecache => "safecache",
        Binary::CargoSafecache if args.get(1).is_some_and(|a| a == "safecache") => CARGO_FORM,
        Binary::CargoSafecache => "cargo-safecache",
    }
}

/// The examples at the end of the top-level `--help`, after the
/// environment and the exit codes (see `reference`): repeating those under
/// every subcommand buried each one's own help.
const TOP_EXAMPLES: &str = "\
Examples:
  {bin} run --key demo/hello -- sh -c 'echo hello > \"$SAFECACHE_OUT/greeting\"'
  {bin} use --key demo/hello -- sh -c 'cat \"$SAFECACHE_ENTRY/greeting\"'
  {bin} ls
  {bin} --lock-timeout 60 clean";

/// Examples at the end of each subcommand's `--help` (not `-h`); `{bin}`
/// stands for the name the user invoked.
const EXAMPLES: [(&str, &str); 16] = [
    (
        "use",
        "  # Fill git/serde if absent, then run CMD with it pinned:
  {bin} use --key git/serde \\
      --fill 'git clone -q https://github.com/serde-rs/serde \"$SAFECACHE_OUT\"' \\
      -- sh -c 'git -C \"$SAFECACHE_ENTRY\" log -1 --oneline'
  # Fail (exit 1) rather than fill:
  {bin} use --key git/serde -- sh -c 'ls \"$SAFECACHE_ENTRY\"'",
    ),
    (
        "run",
        "  # Fill git/serde once, however many run this at once; print its path:
  {bin} run --key git/serde -- \\
      sh -c 'git clone -q https://github.com/serde-rs/serde \"$SAFECACHE_OUT\"'
  # A build dir keyed on the files it depends on:
  {bin} run --key target --key-file Cargo.lock 'src/**/*.rs' -- \\
      sh -c 'make OUT=\"$SAFECACHE_OUT\"'
  # Hold a shared lease while a tool uses the cache, so `clean` waits:
  {bin} run -- make
  # A tool that rewrites the cache itself takes the lease exclusively:
  {bin} run --exclusive -- pip-compile --rebuild",
    ),
    ("path", "  {bin} path git/serde || echo 'not cached'"),
    (
        "ls",
        "  {bin} ls\n  {bin} ls git/\n  {bin} --message-format json ls\n  # The keys the remote tier holds:\n  SAFECACHE_REMOTE=s3://ci-cache/safecache {bin} ls --remote",
    ),
    ("dir", "  {bin} dir\n  du -sh \"$({bin} dir)\"\n  SAFECACHE_DIR=/tmp/ci-cache {bin} dir"),
    ("status", "  {bin} status\n  {bin} --message-format json status"),
    (
        "stats",
        "  {bin} stats\n  {bin} --message-format json stats\n  # Show the counts, then start counting again from zero:\n  {bin} stats --reset",
    ),
    (
        "rm",
        "  {bin} rm git/serde git/tokio\n  # Every entry whose key starts with `git/`:\n  {bin} rm --prefix git/\n  # Fail at once (exit 75) instead of waiting for a pin:\n  {bin} --lock-timeout 0 rm git/serde",
    ),
    (
        "clean",
        "  {bin} clean\n  # Wait at most a minute for the processes using the cache:\n  {bin} --lock-timeout 60 clean",
    ),
    (
        "gc",
        "  {bin} gc
  # Show what evicting down to 10 GB and everything unused for 30 days would remove:
  {bin} gc --max-size 10G --max-age 30d --dry-run
  {bin} gc --max-size 10G --max-age 30d",
    ),
    (
        "init",
        "  {bin} init ~/.cache/mytool\n  {bin} --cache-dir ~/.cache/mytool ls\n  {bin} init --durability none /tmp/ci-cache",
    ),
    (
        "config",
        "  {bin} config
  {bin} config durability none
  # Limits every user of the cache shares (flags and variables override them):
  {bin} config max-size 10G
  {bin} config max-age 30d
  {bin} config auto-gc 12h
  {bin} config --unset max-size
  # A remote tier every user of the cache shares:
  {bin} config remote-url s3://ci-cache/safecache
  {bin} config remote-option aws_region=eu-west-1
  {bin} --message-format json config",
    ),
    (
        "verify",
        "  {bin} verify\n  {bin} verify git/serde\n  # Remove corrupt entries, then fill one again:\n  {bin} verify --repair && {bin} run --key git/serde -- \\
      sh -c 'git clone -q https://github.com/serde-rs/serde \"$SAFECACHE_OUT\"'",
    ),
    (
        "remote",
        "  # Once, on a trusted machine: a key pair for the jobs that upload
  {bin} remote keygen ci-main
  # Check a store: readable, writable, and refusing a second create
  SAFECACHE_REMOTE=s3://ci-cache/safecache {bin} remote check
  # Pull requests: read what main uploaded, signed by its key, write nothing
  SAFECACHE_REMOTE=s3://ci-cache/safecache SAFECACHE_REMOTE_MODE=read-only \\
      SAFECACHE_REMOTE_TRUSTED_KEYS=ci-main.pub {bin} run --key dep -- ./build-dep.sh",
    ),
    (
        "completions",
        "  {bin} completions bash > ~/.local/share/bash-completion/completions/safecache
  {bin} completions zsh > ~/.zfunc/_safecache
  {bin} completions fish > ~/.config/fish/completions/safecache.fish",
    ),
    (
        "man",
        "  {bin} man > safecache.1 && man -l safecache.1\n  {bin} man --dir ~/.local/share/man/man1 && man safecache-run",
    ),
];

/// `cargo safecache ...`, as cargo invokes it: `cargo-safecache safecache ...`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo", styles = clap::builder::styling::Styles::styled())]
pub(crate) enum CargoCli {
    /// Run commands with cache leases, single-flight fills and pins.
    Safecache(App),
}

/// `cargo-safecache ...` or `safecache ...`, invoked directly.
#[derive(Debug, Parser)]
#[command(
    name = "cargo-safecache",
    version,
    about = "Run commands with cache leases, single-flight fills and pins on a shared cache directory.",
    subcommand_required = true
)]
pub(crate) struct App {
    #[command(flatten)]
    pub(crate) global: GlobalOpts,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options accepted before or after the subcommand. They are listed once,
/// under their own heading in the top-level help (see [`command`]).
#[derive(Debug, Args)]
#[command(next_help_heading = GLOBAL_HEADING)]
pub(crate) struct GlobalOpts {
    /// The cache directory; created on first use if missing or empty.
    /// [default: $XDG_CACHE_HOME/safecache]
    #[arg(long, global = true, value_name = "DIR", env = "SAFECACHE_DIR", hide_env_values = true)]
    pub(crate) cache_dir: Option<PathBuf>,

    /// Seconds to wait for a lock before failing with exit code 75; 0 means
    /// don't wait, `never` waits without limit. [default: forever on a
    /// terminal, 300 otherwise]
    // Values are hidden because clap shows an unset variable as `NAME=`.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        env = "SAFECACHE_LOCK_TIMEOUT",
        hide_env_values = true,
        value_parser = parse_timeout
    )]
    pub(crate) lock_timeout: Option<Duration>,

    /// Open the cache even if another user owns it or others can write to
    /// it. Without this, such a cache is refused (exit 77): another user
    /// could redirect this process's writes.
    #[arg(
        long,
        global = true,
        env = "SAFECACHE_ALLOW_UNTRUSTED_CACHE",
        hide_env_values = true,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub(crate) allow_untrusted_cache: bool,

    /// What to sync to disk: `full` (an entry that was filled survives a
    /// power cut complete) or `none` (faster; a power cut may lose recent
    /// entries or leave them empty or short). Overrides the cache's own
    /// setting (`config durability`) for this command; `init` stores it.
    /// [default: the cache's setting, else full]
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        env = "SAFECACHE_DURABILITY",
        hide_env_values = true,
        value_parser = parse_durability
    )]
    pub(crate) durability: Option<Durability>,

    /// When to color status messages.
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        env = "CARGO_TERM_COLOR",
        hide_env_values = true,
        default_value = "auto"
    )]
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

    /// How often the automatic gc may run on a cache, after `run`, `use`
    /// or `path`: an interval such as `1d` or `12h`, or `off`. It evicts what
    /// --max-size and --max-age allow (by default, entries unused for 30
    /// days), never waits, and skips a busy cache. [default: the cache's
    /// setting (`config auto-gc`), else 1d]
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        env = "SAFECACHE_AUTO_GC",
        hide_env_values = true,
        value_parser = parse_auto_gc
    )]
    pub(crate) auto_gc: Option<AutoGcEvery>,

    /// The cache's size limit for `gc` and the automatic gc: least
    /// recently used entries are evicted until the entries' bytes are at
    /// most SIZE, e.g. `500M`, `10G`, `1.5GiB`, or bytes, or `none`.
    /// [default: the cache's setting (`config max-size`), else none]
    #[arg(
        long,
        global = true,
        value_name = "SIZE",
        env = "SAFECACHE_MAX_SIZE",
        hide_env_values = true,
        value_parser = parse_max_size
    )]
    pub(crate) max_size: Option<MaxSize>,

    /// The cache's age limit for `gc` and the automatic gc: entries unused
    /// for longer than DUR are evicted, e.g. `30d`, `12h`, `90m`, or
    /// `never`. [default: the cache's setting (`config max-age`), else none
    /// for `gc` and 30d for the automatic gc]
    #[arg(
        long,
        global = true,
        value_name = "DUR",
        env = "SAFECACHE_MAX_AGE",
        hide_env_values = true,
        value_parser = parse_max_age
    )]
    pub(crate) max_age: Option<MaxAge>,

    /// Check an entry against its manifest before using it (`path`, `run
    /// --key`, `use`); a corrupt one is quarantined and treated as
    /// absent, so `run --key` fills it again; one that cannot be checked is
    /// not used (exit 101). Hashes the whole entry (but its holes) each
    /// time.
    #[arg(
        long,
        global = true,
        env = "SAFECACHE_VERIFY_ON_READ",
        hide_env_values = true,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub(crate) verify_on_read: bool,

    #[command(flatten)]
    pub(crate) remote: RemoteOpts,
}

/// The remote tier's options (docs/REMOTE.md, "Configuration"): each
/// overrides the cache's setting of the same name (`config remote-url`,
/// ...) for one command.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = REMOTE_HEADING)]
pub(crate) struct RemoteOpts {
    /// The remote tier: an object store that machines and CI runners
    /// share, `s3://BUCKET/PREFIX`, `gs://...`, `az://...` or
    /// `file:///DIR`, or `off`. On a local miss, a fill restores KEY from
    /// it before running its command; after a fill, the entry is uploaded.
    /// S3 options come from the standard `AWS_*` variables. [default: the
    /// cache's setting (`config remote-url`), else off]
    #[arg(long, global = true, value_name = "URL", env = "SAFECACHE_REMOTE", hide_env_values = true)]
    pub(crate) remote_url: Option<String>,

    /// `read-write` (fetch and upload), `read-only` (fetch only, never a
    /// write call: for untrusted jobs such as pull requests) or `off`.
    /// [default: the cache's setting, else read-write]
    #[arg(long, global = true, value_name = "MODE", env = "SAFECACHE_REMOTE_MODE", hide_env_values = true)]
    pub(crate) remote_mode: Option<RemoteMode>,

    /// The namespace in the store: 1 to 64 of `a-z 0-9 . _ -`, e.g. `main`
    /// or `pr`. Namespaces share nothing. [default: the cache's setting,
    /// else `default`]
    #[arg(long, global = true, value_name = "NAME", env = "SAFECACHE_REMOTE_NAMESPACE", hide_env_values = true)]
    pub(crate) remote_namespace: Option<String>,

    /// The public keys whose signatures make a remote entry trusted, comma
    /// separated, each `ed25519:` and 64 hex digits or the path of a
    /// `.pub` file; once given, an unsigned or wrongly signed entry is a
    /// miss. [default: the cache's setting, else any entry whose archive
    /// matches its manifest]
    #[arg(long, global = true, value_name = "KEYS", env = "SAFECACHE_REMOTE_TRUSTED_KEYS", hide_env_values = true)]
    pub(crate) remote_trusted_keys: Option<String>,

    /// The secret key file (`remote keygen`) that signs what this command
    /// uploads. [default: the cache's setting, else unsigned]
    #[arg(long, global = true, value_name = "PATH", env = "SAFECACHE_REMOTE_SIGNING_KEY", hide_env_values = true)]
    pub(crate) remote_signing_key: Option<PathBuf>,

    /// How long one download or upload may take before it is abandoned
    /// (a download is then a miss, an upload a warning), e.g. `60s`, `10m`.
    /// [default: the cache's setting, else 10m]
    #[arg(
        long,
        global = true,
        value_name = "DUR",
        env = "SAFECACHE_REMOTE_TIMEOUT",
        hide_env_values = true,
        value_parser = parse_remote_timeout
    )]
    pub(crate) remote_timeout: Option<Duration>,
}

/// The heading the remote tier's options are listed under.
const REMOTE_HEADING: &str = "Remote tier options";

/// `--remote-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum RemoteMode {
    /// Fetch on a miss, upload after a fill.
    ReadWrite,
    /// Fetch on a miss; never write to the store.
    ReadOnly,
    /// Do not use the remote tier.
    Off,
}

impl RemoteMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            RemoteMode::ReadWrite => "read-write",
            RemoteMode::ReadOnly => "read-only",
            RemoteMode::Off => "off",
        }
    }
}

pub(crate) fn parse_remote_timeout(s: &str) -> Result<Duration, String> {
    match safecache::display::parse_duration(s)? {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err("the remote timeout must be a positive duration such as `60s` or `10m`".to_owned()),
    }
}

/// `--auto-gc`: how often, or `None` for off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AutoGcEvery(pub(crate) Option<Duration>);

/// `--max-age`: a limit, or `None` for `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MaxAge(pub(crate) Option<Duration>);

/// `--max-size`: a limit in bytes, or `None` for `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MaxSize(pub(crate) Option<u64>);

pub(crate) fn parse_max_size(s: &str) -> Result<MaxSize, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(MaxSize(None));
    }
    safecache::display::parse_size(s).map(|n| MaxSize(Some(n))).map_err(|e| format!("{e}; or `none` for no limit"))
}

pub(crate) fn parse_auto_gc(s: &str) -> Result<AutoGcEvery, String> {
    if ["off", "never"].iter().any(|off| s.trim().eq_ignore_ascii_case(off)) {
        return Ok(AutoGcEvery(None));
    }
    match safecache::display::parse_duration(s) {
        Ok(every) => Ok(AutoGcEvery(every)),
        Err(e) => Err(format!("{e}; or `off` to turn the automatic gc off")),
    }
}

pub(crate) fn parse_max_age(s: &str) -> Result<MaxAge, String> {
    safecache::display::parse_duration(s).map(MaxAge)
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
    /// Run CMD, the command that builds: under a lease on the cache, or
    /// with --key, to fill KEY once (single flight).
    ///
    /// Without --key, CMD runs while this process holds a shared lease on the
    /// cache (exclusive with --exclusive), so `clean` waits for it. With
    /// --key KEY, CMD runs only if KEY is absent, with SAFECACHE_OUT set to an
    /// empty private directory that is published as KEY if CMD exits 0 and
    /// wrote something into it; concurrent runs of one KEY run CMD once, and
    /// each prints the entry's path, alone, on stdout. Everything CMD prints
    /// goes to stderr. To run a command that uses KEY, see `use`.
    ///
    /// SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group;
    /// whatever CMD leaves running is killed when it exits; `run` exits with
    /// CMD's status.
    Run(RunArgs),
    /// Run CMD, a command that uses KEY, with KEY pinned; with --fill, fill
    /// KEY first if it is absent.
    ///
    /// CMD runs with SAFECACHE_ENTRY set to the entry's path and
    /// SAFECACHE_HIT to 1 if the entry was there, 0 if this run filled it;
    /// nothing can remove the entry until CMD and everything it started have
    /// exited. If KEY is absent, --fill FILL fills it first by running FILL
    /// with `sh -c` (single flight: one run fills, the others wait, and
    /// share its failure), with the fill's output on stderr; without
    /// --fill, it is restored from the remote tier if one is configured and
    /// has it, and otherwise `use` exits 1 without running CMD. With
    /// --exclusive, CMD gets
    /// the entry to change it, one run at a time.
    Use(UseArgs),
    /// Print the absolute path of KEY's entry; exit 1 if it is absent.
    ///
    /// Without a pin, the entry may be removed at any time after `path`
    /// returns: to use an entry safely, run the command that uses it with
    /// `use --key KEY -- CMD`.
    Path {
        /// The entry's key, e.g. `git/serde`.
        #[arg(value_parser = parse_key)]
        key: Key,
        /// With the digest of these files appended, as `run --key KEY
        /// --key-file PATH` names its entry.
        #[arg(long = "key-file", value_name = "PATH", num_args = 1.., action = clap::ArgAction::Append)]
        key_files: Vec<String>,
    },
    /// List entries with size and last use; with PREFIX, only those whose
    /// key starts with it.
    ///
    /// The size counts the bytes of regular files only (not symlinks). Files
    /// adopted by `init` whose names are not valid keys show by their stored
    /// names (and not under a PREFIX).
    Ls {
        /// List only entries whose key starts with PREFIX, e.g. `git/`.
        #[arg(value_name = "PREFIX")]
        prefix: Option<String>,
        /// List the keys the remote tier holds in its namespace instead (by
        /// their manifests' names: a listed key can still be a miss).
        #[arg(long)]
        remote: bool,
    },
    /// Print the cache directory in use, without creating it.
    ///
    /// The directory --cache-dir, SAFECACHE_DIR or the platform's cache dir
    /// names, made absolute: the one every other command would use.
    Dir,
    /// Show who holds every lease, pin and fill, plus orphans, trash and sizes.
    ///
    /// Takes no lock and never waits. Every orphan it lists is one the next
    /// `gc` reclaims.
    Status,
    /// Show the cache's hits, misses, fills, failed fills, waits and bytes
    /// filled, since when.
    ///
    /// Every process counts into the cache's `.safecache/stats` with an
    /// atomic add: no lock, no fsync. `path KEY` and `run --key KEY` count
    /// a hit when KEY was there, else a miss; a miss the command filled
    /// adds a fill and the entry's bytes, one whose fill failed a failed
    /// fill. A command that waited for a lock counts one wait.
    Stats {
        /// Print the counts, then zero them and start counting again now.
        #[arg(long)]
        reset: bool,
    },
    /// Remove entries; waits for their pins and fills to finish.
    ///
    /// Removing an absent key is not an error. With --lock-timeout 0, a pinned
    /// entry fails at once with exit 75, naming the process that pins it.
    Rm {
        /// Keys of the entries to remove.
        #[arg(required_unless_present = "prefix", value_parser = parse_key)]
        keys: Vec<Key>,
        /// Remove every entry whose key starts with PREFIX (`git/`), as
        /// listed when `rm` starts, and say how many; an empty PREFIX is
        /// refused (`clean` removes everything).
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        /// Delete the removed entries' files before returning (by default
        /// `rm` returns once the entries are gone from the cache, and their
        /// disk space is freed shortly after, in the background).
        #[arg(long)]
        wait: bool,
    },
    /// Remove every entry; waits until nobody uses the cache.
    ///
    /// It needs the exclusive lease, so it waits for every `run` using the
    /// cache, saying at once whom it waits for and how to stop waiting. It
    /// returns once the entries are gone from the cache; their disk space is
    /// freed shortly after, in the background (or before it returns, with
    /// --wait).
    Clean {
        /// Delete the removed entries' files before returning.
        #[arg(long)]
        wait: bool,
    },
    /// Reclaim what killed processes left behind; with --max-size or
    /// --max-age, evict least recently used entries.
    ///
    /// It runs beside fills, pins and removes without disturbing them.
    /// Without a limit it never touches a published entry; with one, it
    /// evicts every entry unused for longer than --max-age, then the least
    /// recently used until the entries' bytes are at most --max-size,
    /// skipping (and naming) entries that are pinned or being filled.
    Gc(GcArgs),
    /// Check entries against the manifests written when they were published.
    ///
    /// Every entry (or each KEY) is checked under a pin, several at once. A
    /// corrupt entry (a file changed, missing, added, or of another kind,
    /// mode or size; or a manifest that fails its own hash) is quarantined:
    /// renamed aside into `.safecache/quarantine/`, kept for inspection for 7
    /// days, and the key reads as absent. An entry that cannot be checked
    /// (no manifest tied to it, as for entries published by an older
    /// version; a file this user cannot read) is reported and never moved.
    /// Exit 65 if any entry was corrupt, else 101 if any could not be
    /// checked.
    Verify {
        /// Keys of the entries to check. [default: every entry]
        #[arg(value_parser = parse_key)]
        keys: Vec<Key>,
        /// Remove corrupt entries instead of quarantining them, so the next
        /// fill fetches them again.
        #[arg(long)]
        repair: bool,
    },
    /// Adopt an existing non-empty directory as a cache (its files become entries).
    ///
    /// Other commands refuse a non-empty directory without the `.safecache`
    /// marker, so a typo cannot turn `$HOME` into something `clean` empties.
    /// On a directory that is already a cache, it changes nothing and says so.
    Init {
        /// The directory. [default: the cache dir]
        dir: Option<PathBuf>,
    },
    /// Show or change the cache's settings (`.safecache/config.json`),
    /// shared by everyone who uses the cache.
    ///
    /// Without arguments, print every setting; with NAME, print one; with
    /// NAME VALUE, store it; with --unset NAME, remove it (its default
    /// applies again). The settings: `durability` (`none` or `full`;
    /// default `full`); `max-size` (the size limit of `gc` and the
    /// automatic gc, e.g. `10G`, or `none`; default none); `max-age` (their
    /// age limit, e.g. `30d`, or `never`; default none for `gc`, 30d for
    /// the automatic gc); `auto-gc` (how often the automatic gc runs, e.g.
    /// `1d`, or `off`; default `1d`); the remote tier's `remote-url` (a
    /// store this build has, e.g. `s3://BUCKET/PREFIX`, or `off`),
    /// `remote-mode` (`read-write`, `read-only`, `off`), `remote-namespace`,
    /// `remote-trusted-keys`, `remote-signing-key` (a key file's path,
    /// stored absolute; its contents are never shown), `remote-timeout`,
    /// and `remote-option NAME=VALUE` (one option of the store's client,
    /// which the stored URL's backend must know; `NAME=` removes it, and
    /// `--unset remote-option` removes them all). The options and variables
    /// of the same names override them for one command (`SAFECACHE_REMOTE`
    /// for `remote-url`). A bad value changes nothing (exit 2). A stored
    /// change applies to commands started after it.
    Config {
        /// The setting.
        #[arg(value_name = "NAME", value_parser = SETTINGS)]
        name: Option<String>,
        /// Its new value.
        #[arg(value_name = "VALUE", requires = "name", conflicts_with = "unset")]
        value: Option<String>,
        /// Remove the setting NAME from the cache's config: its default
        /// applies again.
        #[arg(long, value_name = "NAME", value_parser = SETTINGS, conflicts_with = "name")]
        unset: Option<String>,
    },
    /// Work with the remote tier: make a key pair, check a store.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Print a shell completion script for `safecache` to stdout.
    ///
    /// Save it where the shell loads completions from (see the examples). The
    /// script completes the `safecache` command, which is installed beside
    /// `cargo-safecache`.
    Completions {
        /// The shell to complete for. [default: list the shells, one per
        /// line]
        #[arg(value_enum)]
        shell: Option<clap_complete::Shell>,
    },
    /// Print the man page for `safecache` (roff) to stdout.
    ///
    /// The page lists the subcommands as pages of their own,
    /// `safecache-run(1)` and so on: --dir DIR writes all of them.
    Man {
        /// Write `safecache.1` and one page per subcommand into DIR instead,
        /// and print their paths.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// `remote`'s subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCommand {
    /// Write a new signing key pair: NAME.key (the secret, mode 0600, for
    /// the jobs that upload) and NAME.pub (the public key, for
    /// --remote-trusted-keys). An existing file is never replaced.
    Keygen {
        /// The pair's path without its extension, e.g. `ci/safecache`.
        #[arg(value_name = "NAME")]
        name: PathBuf,
    },
    /// Check the configured remote: that it can be read, and, unless it is
    /// read-only, that it can be written and refuses a second create of one
    /// object (some S3 imitations ignore `If-None-Match`, and would let two
    /// writers of a key both win). Exits 0 only if it works.
    Check,
}

/// The names `config` knows.
pub(crate) const SETTINGS: [&str; 11] = [
    "durability",
    "max-size",
    "max-age",
    "auto-gc",
    "remote-url",
    "remote-mode",
    "remote-namespace",
    "remote-trusted-keys",
    "remote-signing-key",
    "remote-timeout",
    "remote-option",
];

/// `gc`'s arguments (the limits are global options, shared with the
/// automatic gc).
#[derive(Debug, Args)]
pub(crate) struct GcArgs {
    /// Print what would be reclaimed and evicted, and change nothing (entries
    /// in use at the time are still skipped by a real run).
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// The key of `run --key` and `use`: KEY, with a digest of the files
/// given by --key-file appended.
#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// The entry's key, e.g. `git/serde` or `venv/py3.12`.
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    pub(crate) key: Option<Key>,

    /// Append a short digest of these files' names and contents to KEY, so
    /// that changed files make a new entry. Takes every PATH up to the next
    /// option or `--` (repeatable too); globs such as `src/**/*.rs` are
    /// allowed, quoted so that the shell leaves `**` alone.
    #[arg(long = "key-file", value_name = "PATH", requires = "key", num_args = 1.., action = clap::ArgAction::Append)]
    pub(crate) key_files: Vec<String>,
}

/// What the filling forms (`run --key`, `use --fill`) share.
#[derive(Debug, Args)]
pub(crate) struct FillArgs {
    /// When the fill this run waited for fails, run the fill itself instead
    /// of failing the same way.
    #[arg(long)]
    pub(crate) retry_failed: bool,

    /// Build the entry at its final path (SAFECACHE_OUT is SAFECACHE_ENTRY),
    /// for outputs that record their own path, such as a Python venv. Readers
    /// see it only once it is complete; the fill must not clear the
    /// directory's sticky bit.
    #[arg(long)]
    pub(crate) in_place: bool,

    /// Publish the entry even if the fill wrote nothing into
    /// SAFECACHE_OUT. Without it, an empty output is a failed fill: usually
    /// a forgotten `sh -c`, or `$SAFECACHE_OUT` expanded too early inside
    /// double quotes.
    #[arg(long)]
    pub(crate) allow_empty: bool,

    /// Kill the fill's whole process tree if it runs longer than DUR (e.g.
    /// `90s`, `10m`); it publishes nothing and counts as a failed fill
    /// (exit 124).
    #[arg(long, value_name = "DUR", value_parser = parse_fill_timeout)]
    pub(crate) fill_timeout: Option<Duration>,

    /// Don't start a fill when the cache's filesystem has less than SIZE
    /// free; exit 74 instead. SIZE is as for --max-size (`1M`, `64MiB`); 0
    /// turns the check off. [default: 1MiB]
    #[arg(
        long,
        value_name = "SIZE",
        env = "SAFECACHE_MIN_FREE",
        hide_env_values = true,
        default_value = "1MiB",
        hide_default_value = true,
        value_parser = safecache::display::parse_size
    )]
    pub(crate) min_free: u64,
}

impl FillArgs {
    /// The first fill option given, as its help spells it: a usage error
    /// where there is no fill for it to apply to.
    pub(crate) fn first_given(&self) -> Option<&'static str> {
        let given = [
            (self.in_place, "--in-place"),
            (self.allow_empty, "--allow-empty"),
            (self.retry_failed, "--retry-failed"),
            (self.fill_timeout.is_some(), "--fill-timeout DUR"),
        ];
        given.into_iter().find_map(|(on, flag)| on.then_some(flag))
    }
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Hold the cache's lease exclusively, for commands that rewrite the
    /// cache themselves (such as `pip-compile --rebuild`).
    #[arg(long)]
    pub(crate) exclusive: bool,

    #[command(flatten)]
    pub(crate) key: KeyArgs,

    #[command(flatten)]
    pub(crate) fill: FillArgs,

    /// Gone: `use --key KEY --fill FILL -- CMD` runs CMD with KEY pinned.
    #[arg(long = "fill", value_name = "FILL", hide = true)]
    pub(crate) old_fill: Option<OsString>,

    /// Gone: `use --key KEY -- CMD` runs CMD with KEY pinned.
    #[arg(long = "pin", value_name = "KEY", hide = true)]
    pub(crate) old_pins: Vec<String>,

    /// The command to run, after `--`.
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    pub(crate) command: Vec<OsString>,
}

/// `use`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct UseArgs {
    #[command(flatten)]
    pub(crate) key: KeyArgs,

    /// If KEY is absent, fill it first by running FILL with `sh -c`, with
    /// SAFECACHE_OUT set (single flight, as `run --key`).
    #[arg(long, value_name = "FILL")]
    pub(crate) fill: Option<OsString>,

    /// Give CMD the entry under its exclusive lock, to change it in place
    /// (a cargo target dir, a venv that pip updates): such runs queue one
    /// behind another, pins wait for them, and the entry's manifest is
    /// sealed again after CMD.
    #[arg(long)]
    pub(crate) exclusive: bool,

    #[command(flatten)]
    pub(crate) fill_args: FillArgs,

    /// The command to run, after `--`.
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    pub(crate) command: Vec<OsString>,
}

fn parse_fill_timeout(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "expected a time limit such as `90s`, `10m` or a number of seconds".to_owned());
    }
    match safecache::display::parse_duration(s) {
        Ok(Some(d)) if !d.is_zero() => Ok(d),
        Ok(_) => Err("expected a time limit such as `90s` or `10m`".to_owned()),
        Err(e) => Err(e),
    }
}

pub(crate) fn parse_durability(s: &str) -> Result<Durability, String> {
    s.trim().parse::<Durability>().map_err(|e| e.to_string())
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

/// The command line of the program invoked as `invoked` (see
/// [`invoked_as`]), with each subcommand's examples in its long help.
///
/// The global options are listed once, in the top-level help: each
/// subcommand gets a hidden copy of each (clap then does not add a visible
/// one) and a line that says where they are.
pub(crate) fn command(invoked: &'static str) -> clap::Command {
    let with_examples = |mut cmd: clap::Command| {
        let globals: Vec<clap::Arg> = cmd.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
        let note = format!("{GLOBAL_HEADING} (--cache-dir, --lock-timeout, -q, ...): see `{invoked} --help`");
        cmd = cmd.mut_subcommands(|sub| globals.iter().fold(sub, |sub, a| sub.arg(a.clone().hide(true))));
        for sub in cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect::<Vec<_>>() {
            let examples = EXAMPLES.iter().find(|(name, _)| *name == sub).map(|(_, e)| e.replace("{bin}", invoked));
            let long = match examples {
                Some(examples) => format!("Examples:\n{examples}\n\n{note}"),
                None => note.clone(),
            };
            cmd = cmd.mut_subcommand(&sub, |c| c.after_help(note.clone()).after_long_help(long));
        }
        let reference = crate::reference::long_help(&cmd);
        cmd.after_long_help(format!("{reference}\n{}", TOP_EXAMPLES.replace("{bin}", invoked)))
    };
    if invoked == CARGO_FORM {
        CargoCli::command().mut_subcommand("safecache", with_examples)
    } else {
        with_examples(App::command().name(invoked).bin_name(invoked))
    }
}

/// The command as [`command`] builds it, without what only its help shows
/// (examples, reference tables, the hidden copies of the global options):
/// it parses every command line the same way.
fn bare_command(invoked: &'static str) -> clap::Command {
    if invoked == CARGO_FORM { CargoCli::command() } else { App::command().name(invoked).bin_name(invoked) }
}

/// Parses `args` (the full argv) as the program invoked as `invoked`.
///
/// Building the help's text is most of a start-up's own work, so a command
/// line is parsed by the bare command first; only one that asks for help or
/// the version, or that is wrong, is parsed again by the full command, which
/// then renders what clap prints.
pub(crate) fn parse(invoked: &'static str, args: Vec<OsString>) -> Result<App, clap::Error> {
    parse_by(bare_command(invoked), invoked, args.clone()).or_else(|_| parse_by(command(invoked), invoked, args))
}

fn parse_by(mut cmd: clap::Command, invoked: &'static str, args: Vec<OsString>) -> Result<App, clap::Error> {
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    if invoked == CARGO_FORM {
        let CargoCli::Safecache(app) = CargoCli::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))?;
        Ok(app)
    } else {
        App::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))
    }
}

/// The command completions and the man page describe: `safecache`, the name
/// people type outside cargo (cargo's own completion covers `cargo <TAB>`),
/// unless the user ran `cargo-safecache` by that name.
fn documented(invoked: &'static str) -> (clap::Command, &'static str) {
    let name = if invoked == "cargo-safecache" { "cargo-safecache" } else { "safecache" };
    (command(name), name)
}

/// A completion script for `shell`.
pub(crate) fn completions(invoked: &'static str, shell: clap_complete::Shell) -> Vec<u8> {
    let (mut cmd, name) = documented(invoked);
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// The shells `completions` knows, one per line, as it takes them.
pub(crate) fn shells() -> String {
    clap_complete::Shell::value_variants()
        .iter()
        .filter_map(|s| s.to_possible_value())
        .map(|v| format!("{}\n", v.get_name()))
        .collect()
}

/// The command the man pages describe, built, without a `help` subcommand
/// (a page for it would only repeat `--help`).
fn documented_built(invoked: &'static str) -> (clap::Command, &'static str) {
    let (cmd, name) = documented(invoked);
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    (cmd, name)
}

/// The man page, in roff.
pub(crate) fn man_page(invoked: &'static str) -> std::io::Result<Vec<u8>> {
    render_man(documented_built(invoked).0)
}

/// Writes the man page and one per subcommand into `dir`, and returns
/// their paths.
pub(crate) fn man_pages(invoked: &'static str, dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let (cmd, name) = documented_built(invoked);
    let mut pages = vec![(format!("{name}.1"), cmd.clone())];
    pages.extend(
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| (format!("{name}-{}.1", s.get_name()), s.clone())),
    );
    let mut paths = Vec::new();
    for (file, cmd) in pages {
        let path = dir.join(file);
        std::fs::write(&path, render_man(cmd)?)?;
        paths.push(path);
    }
    Ok(paths)
}

/// `cmd`'s man page (`cmd` built), with a synopsis that shows each
/// option's value (`[--cache-dir DIR]`), which clap_mangen's leaves out.
fn render_man(cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    let synopsis = man_synopsis(&cmd);
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut page)?;
    let page = String::from_utf8(page).map_err(std::io::Error::other)?;
    let Some((head, rest)) = page.split_once(".SH SYNOPSIS\n") else { return Ok(page.into_bytes()) };
    let tail = rest.find("\n.SH ").map_or("", |at| &rest[at..]);
    Ok(format!("{head}.SH SYNOPSIS\n{synopsis}{tail}").into_bytes())
}

/// The synopsis line of a man page, in roff: the name in bold, then each
/// option with its value in italics, the arguments and the subcommand.
fn man_synopsis(cmd: &clap::Command) -> String {
    fn esc(s: &str) -> String {
        s.replace('\\', "\\\\").replace('-', "\\-")
    }
    fn value(arg: &clap::Arg) -> String {
        arg.get_value_names().map_or_else(|| arg.get_id().as_str().to_uppercase(), |names| names.join(" "))
    }
    let markers = |required: bool| if required { ("<", ">") } else { ("[", "]") };
    let mut line = format!("\\fB{}\\fR", esc(cmd.get_bin_name().unwrap_or_else(|| cmd.get_name())));
    // Options first, then the arguments.
    let (positionals, options): (Vec<_>, Vec<_>) =
        cmd.get_arguments().filter(|a| !a.is_hide_set()).partition(|a| a.is_positional());
    for arg in options.into_iter().chain(positionals) {
        let (l, r) = markers(arg.is_required_set());
        let repeats = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), clap::ArgAction::Count | clap::ArgAction::Append);
        let dots = if repeats { "..." } else { "" };
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), Some(long)) => format!("\\fB\\-{short}\\fR|\\fB\\-\\-{}\\fR", esc(long)),
            (Some(short), None) => format!("\\fB\\-{short}\\fR"),
            (None, Some(long)) => format!("\\fB\\-\\-{}\\fR", esc(long)),
            (None, None) => {
                let dashes = if arg.is_trailing_var_arg_set() { " [\\-\\-]" } else { "" };
                line.push_str(&format!("{dashes} {l}\\fI{}\\fR{r}{dots}", esc(&value(arg))));
                continue;
            }
        };
        let takes = arg.get_num_args().is_some_and(|n| n.takes_values());
        let value = if takes { format!(" \\fI{}\\fR", esc(&value(arg))) } else { String::new() };
        line.push_str(&format!(" {l}{flag}{value}{r}{dots}"));
    }
    if cmd.has_subcommands() {
        let (l, r) = markers(cmd.is_subcommand_required_set());
        line.push_str(&format!(" {l}\\fICOMMAND\\fR{r}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bare command parses every accepted command line as the full one
    /// does, global options anywhere included, in both forms; what it
    /// refuses (help, version, errors) the full one renders.
    #[test]
    fn the_bare_command_parses_as_the_full_one() {
        let lines: &[&[&str]] = &[
            &["run", "--key", "k", "--", "true"],
            &["--cache-dir", "/c", "use", "--key", "k", "--fill", "f", "--exclusive", "--", "sh", "-c", "x"],
            &["use", "--cache-dir", "/c", "-q", "--json", "--key", "k", "--key-file", "a", "b", "--", "true"],
            &["path", "k", "--lock-timeout", "5s"],
            &["rm", "--prefix", "p", "--wait"],
            &["gc", "--max-size", "1G", "--dry-run"],
            &["config", "max-age", "30d"],
            &["stats", "--reset"],
            &["dir"],
        ];
        for (invoked, prefix) in [("safecache", vec!["safecache"]), (CARGO_FORM, vec!["cargo-safecache", "safecache"])]
        {
            for line in lines {
                let args: Vec<OsString> = prefix.iter().chain(line.iter()).map(OsString::from).collect();
                let bare = parse_by(bare_command(invoked), invoked, args.clone()).map(|a| format!("{a:?}"));
                let full = parse_by(command(invoked), invoked, args).map(|a| format!("{a:?}"));
                assert_eq!(bare.map_err(|e| e.kind()), full.map_err(|e| e.kind()), "{invoked} {line:?}");
            }
            for line in [&["--help"][..], &["run", "--help"], &["--version"], &["run", "--pin", "k"]] {
                let args: Vec<OsString> = prefix.iter().chain(line.iter()).map(OsString::from).collect();
                assert!(parse_by(bare_command(invoked), invoked, args).is_err(), "{line:?}");
            }
        }
    }
}
