//! This defines the remote tier as the command line uses it
//! (docs/REMOTE.md): which remote a command uses ([`Setup`], from the
//! options, their variables and the cache's config), and the two transfers
//! of a fill ([`Tier::restore`] on a local miss, under the entry lock, into
//! the fill's private output; [`Tier::upload`] after a fill, on a thread of
//! its own, so the command that uses the entry never waits for it).
//!
//! The configuration is the user's: a bad URL, an unknown option, an
//! unreadable key is an error (exit 2) before anything runs. The store is
//! not: every failure of a download is a miss, and of an upload a warning,
//! and neither ever fails the user's command.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use safecache::display::{escape, size};
use safecache::{Cache, Config, Counter, FillDir, Key};
use safecache_remote::{
    ArchiveError, Namespace, PublicKey, Remote, SecretKey, StoreSpec, TransferError, Trust, Uploaded,
};

use crate::cli::{RemoteMode, RemoteOpts};
use crate::exit::{self, Coded};
use crate::report::Moved;
use crate::ui::Ui;

/// The time one transfer may take, unless configured.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The namespace, unless configured.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// The names of the remote settings in the cache's config
/// (`Config::remote`), each with its `config` name.
pub(crate) const STORED: [(&str, &str); 7] = [
    ("url", "remote-url"),
    ("mode", "remote-mode"),
    ("namespace", "remote-namespace"),
    ("trusted-keys", "remote-trusted-keys"),
    ("signing-key", "remote-signing-key"),
    ("timeout", "remote-timeout"),
    ("option.", "remote-option"),
];

/// The remote a command uses, resolved: each setting from its option (or
/// variable), else the cache's config, else its default.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    /// The URL as given (escaped when shown).
    pub(crate) url: String,
    pub(crate) mode: RemoteMode,
    pub(crate) namespace: Namespace,
    pub(crate) trust: Trust,
    pub(crate) signing_key: Option<PathBuf>,
    pub(crate) timeout: Duration,
    /// Options the user wrote out (`config remote-option K=V`): each must
    /// be one the backend knows.
    pub(crate) options: Vec<(String, String)>,
}

fn usage(message: String) -> anyhow::Error {
    Coded { code: exit::USAGE, message }.into()
}

impl Setup {
    /// The remote `opts` and `config` name, or `None` when none is
    /// configured or its mode is `off`. A setting that does not parse is a
    /// usage error naming it and where it came from.
    pub(crate) fn resolve(opts: &RemoteOpts, config: &Config) -> Result<Option<Setup>> {
        let stored = |name: &str| config.remote.get(name).map(String::as_str);
        let from = |given: bool, flag: &str, var: &str, setting: &str| {
            if given { format!("--{flag} or {var}") } else { format!("the cache's `{setting}` setting") }
        };
        let url = match opts.remote_url.as_deref().or(stored("url")) {
            None => return Ok(None),
            Some(url) if url.trim().is_empty() || url.trim().eq_ignore_ascii_case("off") => return Ok(None),
            Some(url) => url.to_owned(),
        };
        let mode = match (opts.remote_mode, stored("mode")) {
            (Some(mode), _) => mode,
            (None, Some(text)) => parse_mode(text).map_err(|why| {
                usage(format!("{why} in the cache's `remote-mode` setting; fix it with `config remote-mode MODE`"))
            })?,
            (None, None) => RemoteMode::ReadWrite,
        };
        if mode == RemoteMode::Off {
            return Ok(None);
        }
        let namespace_text = opts.remote_namespace.as_deref().or(stored("namespace")).unwrap_or(DEFAULT_NAMESPACE);
        let namespace = Namespace::new(namespace_text).map_err(|e| {
            let source = from(
                opts.remote_namespace.is_some(),
                "remote-namespace",
                "SAFECACHE_REMOTE_NAMESPACE",
                "remote-namespace",
            );
            usage(format!("{e} ({source}), e.g. `main`"))
        })?;
        let trust = match opts.remote_trusted_keys.as_deref().or(stored("trusted-keys")) {
            None => Trust::Any,
            Some(text) if text.trim().is_empty() => Trust::Any,
            Some(text) => {
                let source = from(
                    opts.remote_trusted_keys.is_some(),
                    "remote-trusted-keys",
                    "SAFECACHE_REMOTE_TRUSTED_KEYS",
                    "remote-trusted-keys",
                );
                Trust::Keys(parse_trusted_keys(text).map_err(|why| usage(format!("{why} ({source})")))?)
            }
        };
        let signing_key = opts.remote_signing_key.clone().or_else(|| stored("signing-key").map(PathBuf::from));
        let timeout = match (opts.remote_timeout, stored("timeout")) {
            (Some(t), _) => t,
            (None, Some(text)) => crate::cli::parse_remote_timeout(text).map_err(|why| {
                usage(format!("invalid value `{}` in the cache's `remote-timeout` setting: {why}", escape(text)))
            })?,
            (None, None) => DEFAULT_TIMEOUT,
        };
        let options = config
            .remote
            .iter()
            .filter_map(|(name, value)| Some((name.strip_prefix("option.")?.to_owned(), value.clone())))
            .collect();
        Ok(Some(Setup { url, mode, namespace, trust, signing_key, timeout, options }))
    }

    /// The store, opened: options from the environment that the backend
    /// knows (`AWS_*`), then the written ones, which must all be known; the
    /// signing key read if the remote is writable.
    pub(crate) fn open(&self) -> Result<Remote> {
        let (spec, signer) = self.check()?;
        self.open_checked(&spec, signer).map_err(usage)
    }

    /// Everything of the configuration that can be checked without opening
    /// the store: the URL and its options, and the signing key (read) if
    /// the remote is writable.
    pub(crate) fn check(&self) -> Result<(StoreSpec, Option<SecretKey>)> {
        let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let spec = safecache_remote::store_spec(&self.url, &self.options, env)
            .map_err(|e| usage(format!("{e}; check --remote-url (SAFECACHE_REMOTE) and `config remote-option`")))?;
        let signer = match self.mode {
            RemoteMode::ReadWrite => self.signing_key.as_deref().map(read_secret_key).transpose()?,
            _ => None,
        };
        Ok((spec, signer))
    }

    /// The store `spec` names, opened (its HTTP client built), as this
    /// setup's remote.
    fn open_checked(&self, spec: &StoreSpec, signer: Option<SecretKey>) -> Result<Remote, String> {
        let (store, prefix) = spec.open().map_err(|e| shown_error(&e))?;
        let remote =
            Remote::new(store, &prefix, self.namespace.clone(), self.trust.clone()).map_err(|e| shown_error(&e))?;
        Ok(match self.mode {
            RemoteMode::ReadWrite => remote.writable(signer),
            _ => remote,
        })
    }

    /// The URL, for people.
    pub(crate) fn shown(&self) -> String {
        escape(&self.url)
    }
}

/// `read-write`, `read-only` or `off`.
pub(crate) fn parse_mode(text: &str) -> Result<RemoteMode, String> {
    <RemoteMode as clap::ValueEnum>::from_str(text.trim(), true)
        .map_err(|_| format!("invalid remote mode `{}`: use read-write, read-only or off", escape(text)))
}

/// Trusted keys: comma separated, each `ed25519:HEX` or the path of a
/// `.pub` file.
pub(crate) fn parse_trusted_keys(text: &str) -> Result<std::collections::BTreeSet<PublicKey>, String> {
    let mut keys = std::collections::BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let key = if item.starts_with(safecache_remote::keys::PUBLIC_PREFIX) {
            item.parse::<PublicKey>().map_err(|e| format!("invalid trusted key `{}`: {e}", escape(item)))?
        } else {
            let (dir, name) = open_parent(Path::new(item)).map_err(|e| format!("{e:#}"))?;
            safecache_remote::keys::read_public_key(&dir, &name).map_err(|e| {
                format!(
                    "cannot read the trusted key file `{}`: {}; give `ed25519:` and 64 hex digits, or a .pub file \
                     that `remote keygen` wrote",
                    escape(item),
                    escape(&format!("{:#}", anyhow::Error::new(e)))
                )
            })?
        };
        keys.insert(key);
    }
    if keys.is_empty() {
        return Err("no trusted key given".to_owned());
    }
    Ok(keys)
}

/// The directory that holds `path`, opened, and `path`'s file name.
pub(crate) fn open_parent(path: &Path) -> Result<(Dir, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("`{}` names no file", path.display()))?
        .to_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = Dir::open_ambient_dir(parent, ambient_authority())
        .with_context(|| format!("cannot open the directory `{}`", parent.display()))?;
    Ok((dir, name))
}

fn read_secret_key(path: &Path) -> Result<SecretKey> {
    let (dir, name) = open_parent(path).map_err(|e| usage(format!("{e:#}; check --remote-signing-key")))?;
    safecache_remote::keys::read_secret_key(&dir, &name).map_err(|e| {
        usage(format!(
            "cannot use the signing key `{}`: {}; give the .key file that `remote keygen` wrote \
             (--remote-signing-key, SAFECACHE_REMOTE_SIGNING_KEY)",
            escape(&path.display().to_string()),
            escape(&format!("{:#}", anyhow::Error::new(e)))
        ))
    })
}

/// A remote, opened for a command's fills.
pub(crate) struct Tier {
    pub(crate) setup: Setup,
    /// The store, checked; opened on first use, so that a hit never pays
    /// for building its client.
    spec: StoreSpec,
    signer: Mutex<Option<SecretKey>>,
    remote: std::sync::OnceLock<Result<Arc<Remote>, String>>,
    /// A download of this command ran into the timeout: its uploads are
    /// skipped rather than made to wait as long again.
    stalled: std::sync::atomic::AtomicBool,
    ui: Arc<Ui>,
    /// What this command moved, for its report.
    pub(crate) moved: Mutex<Moved>,
}

/// What a restore found.
pub(crate) enum Fetched {
    /// The entry is in the fill's output: publish it.
    Hit,
    /// Not there, or not usable: the output is empty, run the command.
    Miss,
}

impl Tier {
    /// The remote that the options and `cache`'s config name, opened, or
    /// `None` if there is none (or it is off).
    pub(crate) fn open(opts: &RemoteOpts, cache: &Cache, ui: &Arc<Ui>) -> Result<Option<Arc<Tier>>> {
        let Some(setup) = Setup::resolve(opts, &cache.config()?)? else { return Ok(None) };
        let (spec, signer) = setup.check()?;
        Ok(Some(Arc::new(Tier {
            setup,
            spec,
            signer: Mutex::new(signer),
            remote: std::sync::OnceLock::new(),
            stalled: std::sync::atomic::AtomicBool::new(false),
            ui: Arc::clone(ui),
            moved: Mutex::new(Moved::default()),
        })))
    }

    /// The store, opened on first use; why not, if it cannot be (the
    /// configuration was checked: what is left is the backend's own
    /// refusal, said as a warning).
    fn remote(&self) -> Result<Arc<Remote>, String> {
        self.remote
            .get_or_init(|| {
                let signer = self.signer.lock().ok().and_then(|mut s| s.take());
                self.setup.open_checked(&self.spec, signer).map(Arc::new)
            })
            .clone()
    }

    fn record(&self, f: impl FnOnce(&mut Moved)) {
        if let Ok(mut moved) = self.moved.lock() {
            f(&mut moved);
        }
    }

    /// What this command moved so far.
    pub(crate) fn moved(&self) -> Moved {
        self.moved.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Restores `key` into the fill's output `dir`, within the timeout.
    /// Anything but a whole, verified entry is a miss (with a warning unless
    /// the key is simply not there), and leaves the output empty; an output
    /// that could not be emptied again is an error, which fails the fill.
    pub(crate) fn restore(&self, cache: &Cache, key: &Key, dir: &FillDir<'_>) -> Result<Fetched> {
        let started = Instant::now();
        let remote = match self.remote() {
            Ok(remote) => remote,
            Err(why) => {
                cache.count(Counter::RemoteErrors, 1);
                self.record(|m| m.fetch = Some("error"));
                self.ui.warn(format!("cannot open the remote {}: {why}; running the fill instead", self.setup.shown()));
                return Ok(Fetched::Miss);
            }
        };
        let out = dir.open_dir().context("cannot open the fill's output")?;
        let bar = self.progress("Downloading", key);
        let mut got = 0u64;
        let result = {
            let bar = bar.clone();
            let mut progress = |n: u64| {
                got += n;
                bar.add(n);
            };
            block_on(self.setup.timeout, safecache_remote::restore_with(&remote, key, &out, &mut progress))
        };
        bar.finish();
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        cache.count(Counter::RemoteMillis, millis);
        cache.count(Counter::BytesDownloaded, got);
        self.record(|m| {
            m.bytes_downloaded += got;
            m.millis += millis;
        });
        match result {
            Ended::Done(Ok(manifest)) => {
                cache.count(Counter::RemoteHits, 1);
                self.record(|m| m.fetch = Some("hit"));
                self.ui.status(
                    "Restored",
                    format!(
                        "`{key}` from {} ({} archive, {} in {} files, {})",
                        self.setup.shown(),
                        size(manifest.archive.size),
                        size(manifest.counts.bytes),
                        manifest.counts.names,
                        safecache::display::duration(started.elapsed()),
                    ),
                );
                Ok(Fetched::Hit)
            }
            Ended::Done(Err(e)) if e.is_not_found() => {
                cache.count(Counter::RemoteMisses, 1);
                self.record(|m| m.fetch = Some("miss"));
                Ok(Fetched::Miss)
            }
            Ended::Done(Err(TransferError::Empty { after, source })) => {
                cache.count(Counter::RemoteErrors, 1);
                self.record(|m| m.fetch = Some("error"));
                Err(anyhow::Error::new(source).context(format!(
                    "cannot empty the fill's output after a failed restore of `{key}` ({})",
                    shown_error(&*after)
                )))
            }
            Ended::Done(Err(e)) => {
                cache.count(Counter::RemoteErrors, 1);
                self.record(|m| m.fetch = Some("error"));
                self.ui.warn(format!(
                    "the remote tier could not restore `{key}` from {}: {}; running the fill instead",
                    self.setup.shown(),
                    shown_error(&e)
                ));
                Ok(Fetched::Miss)
            }
            stopped => {
                cache.count(Counter::RemoteErrors, 1);
                self.record(|m| m.fetch = Some("error"));
                if matches!(stopped, Ended::TimedOut) {
                    self.stalled.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                self.ui.warn(format!(
                    "the remote tier {} while restoring `{key}` from {}; running the fill instead",
                    stopped.why(self.setup.timeout),
                    self.setup.shown()
                ));
                // The download was abandoned mid-way: what it extracted, if
                // anything, goes.
                safecache_remote::empty_dir(&out)
                    .context("cannot empty the fill's output after a restore timed out")?;
                Ok(Fetched::Miss)
            }
        }
    }

    /// Whether this command uploads what it fills.
    pub(crate) fn writes(&self) -> bool {
        self.setup.mode == RemoteMode::ReadWrite
    }

    /// Starts uploading the entry at `entry` as `key`'s on a thread of its
    /// own; the caller joins it with [`Upload::finish`] once its command
    /// is done. The caller holds the entry (a pin or the lease) until then.
    pub(crate) fn upload(self: &Arc<Self>, cache: &Cache, key: &Key, entry: PathBuf) -> Upload {
        // A store that let this command's download run into the timeout
        // would most likely make the upload wait as long again.
        if self.stalled.load(std::sync::atomic::Ordering::Relaxed) {
            self.skipped(key, "the store did not answer the download within the remote timeout");
            return Upload { handle: None };
        }
        let tier = Arc::clone(self);
        let cache = cache.clone();
        let key = key.clone();
        let handle = std::thread::Builder::new()
            .name("safecache-upload".to_owned())
            .spawn(move || tier.upload_now(&cache, &key, &entry))
            .ok();
        Upload { handle }
    }

    fn upload_now(&self, cache: &Cache, key: &Key, entry: &Path) {
        let started = Instant::now();
        let warn = |why: String| {
            cache.count(Counter::RemoteErrors, 1);
            self.record(|m| m.upload = Some("error"));
            self.ui.warn(format!(
                "the remote tier could not upload `{key}` to {}: {why}; the entry is kept here, and the command's \
                 outcome is unchanged",
                self.setup.shown()
            ));
        };
        let dirs = Dir::open_ambient_dir(entry, ambient_authority())
            .and_then(|e| Ok((e, Dir::open_ambient_dir(std::env::temp_dir(), ambient_authority())?)));
        let (entry_dir, scratch) = match dirs {
            Ok(dirs) => dirs,
            Err(e) => return warn(escape(&e.to_string())),
        };
        let remote = match self.remote() {
            Ok(remote) => remote,
            Err(why) => return warn(why),
        };
        let bar = self.progress("Uploading", key);
        let mut sent = 0u64;
        let result = {
            let bar = bar.clone();
            let mut progress = |n: u64| {
                sent += n;
                bar.add(n);
            };
            block_on(
                self.setup.timeout,
                safecache_remote::upload_entry_with(&remote, key, &entry_dir, &scratch, &mut progress),
            )
        };
        bar.finish();
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        cache.count(Counter::RemoteMillis, millis);
        self.record(|m| m.millis += millis);
        match result {
            Ended::Done(Ok((Uploaded::Published, bytes))) => {
                cache.count(Counter::Uploads, 1);
                cache.count(Counter::BytesUploaded, bytes);
                self.record(|m| {
                    m.upload = Some("published");
                    m.bytes_uploaded += bytes;
                });
                self.ui.status(
                    "Uploaded",
                    format!(
                        "`{key}` to {} ({} archive, {})",
                        self.setup.shown(),
                        size(bytes),
                        safecache::display::duration(started.elapsed())
                    ),
                );
            }
            Ended::Done(Ok((Uploaded::AlreadyThere, _))) => {
                self.record(|m| m.upload = Some("already-there"));
                self.ui.status("Kept", format!("the remote's own `{key}`: another writer uploaded it first"));
            }
            Ended::Done(Err(TransferError::Archive(
                e @ (ArchiveError::Unsupported { .. }
                | ArchiveError::EscapingLink { .. }
                | ArchiveError::InvalidName { .. }),
            ))) => {
                self.record(|m| m.upload = Some("skipped"));
                self.ui.warn(format!(
                    "`{key}` stays local: {}; the remote tier shares only files, directories and symlinks that stay \
                     inside the entry",
                    shown_error(&e)
                ));
            }
            Ended::Done(Err(e)) => warn(shown_error(&e)),
            stopped => warn(format!("the remote tier {}", stopped.why(self.setup.timeout))),
        }
    }

    /// Says that `key`, which this command filled, is not uploaded, and why.
    pub(crate) fn skipped(&self, key: &Key, why: &str) {
        self.record(|m| m.upload = Some("skipped"));
        self.ui.warn(format!("`{key}` was not uploaded to {}: {why}", self.setup.shown()));
    }

    /// A byte counter on stderr while a transfer runs, on a terminal only
    /// (and not with --quiet): drawn once the transfer has taken half a
    /// second, so a quick one shows nothing.
    fn progress(&self, verb: &str, key: &Key) -> Progress {
        Progress {
            bar: self.ui.interactive().then(|| {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>12.cyan.bold} {msg} {bytes} ({bytes_per_sec})")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(verb.to_owned());
                bar.set_message(format!("`{key}`"));
                bar
            }),
            started: Instant::now(),
            shown: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

/// A transfer's byte counter (see [`Tier::progress`]).
#[derive(Clone)]
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    shown: Arc<std::sync::atomic::AtomicBool>,
}

impl Progress {
    /// How long before the counter is drawn.
    const DELAY: Duration = Duration::from_millis(500);

    fn add(&self, n: u64) {
        let Some(bar) = &self.bar else { return };
        bar.inc(n);
        if self.started.elapsed() >= Self::DELAY && !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Self::DELAY);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// An upload running on its own thread.
pub(crate) struct Upload {
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Upload {
    /// Waits for the upload to end (its own timeout bounds it).
    pub(crate) fn finish(self) {
        if let Some(handle) = self.handle {
            let _ = handle.join();
        }
    }
}

/// Runs `future` to its end on a runtime of its own, or gives up after
/// `timeout`.
pub(crate) fn block_on<F: Future>(timeout: Duration, future: F) -> Ended<F::Output> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return Ended::Failed(format!("could not start its runtime ({})", escape(&e.to_string()))),
    };
    // A store client that panics (object_store has `expect`s on requests
    // it built) must not take the user's command down with it.
    // A signal that cancels the command (SIGINT, SIGTERM, SIGHUP, once `run`
    // handles them) abandons the transfer too: nobody waits 10 minutes for
    // an upload after Ctrl-C.
    let cancelled = async {
        while !crate::process::CANCEL.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let run = std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async {
            let transfer = std::pin::pin!(tokio::time::timeout(timeout, future));
            match futures::future::select(transfer, std::pin::pin!(cancelled)).await {
                futures::future::Either::Left((Ok(output), _)) => Ended::Done(output),
                futures::future::Either::Left((Err(_), _)) => Ended::TimedOut,
                futures::future::Either::Right(((), _)) => Ended::Failed("was cancelled by a signal".to_owned()),
            }
        })
    });
    let ended = std::panic::catch_unwind(run)
        .unwrap_or_else(|_| Ended::Failed("failed inside its store client (a panic)".to_owned()));
    // A transfer abandoned at its timeout may have left a thread blocked in
    // a system call (an `open` of a FIFO swapped into a `file://` store):
    // the runtime goes without waiting for it.
    runtime.shutdown_background();
    ended
}

/// How a transfer on its runtime ended.
pub(crate) enum Ended<T> {
    /// It ran to its end.
    Done(T),
    /// Past the timeout: abandoned.
    TimedOut,
    /// It could not run, or panicked: why.
    Failed(String),
}

impl<T> Ended<T> {
    /// Why it did not end, for a warning.
    pub(crate) fn why(&self, timeout: Duration) -> String {
        match self {
            Ended::TimedOut => {
                format!("took longer than {} (--remote-timeout sets the limit)", safecache::display::duration(timeout))
            }
            Ended::Failed(why) => why.clone(),
            Ended::Done(_) => "ended".to_owned(),
        }
    }
}

/// An error and its sources, escaped and on one line: the store's
/// messages (an S3 error body, a parser quoting an archive) are text from
/// outside. A source whose text its error already quotes is not repeated
/// (object_store's errors quote their sources), and the whole is cut at
/// [`MAX_ERROR_CHARS`].
pub(crate) fn shown_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let said = s.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = s.source();
    }
    let text = escape(&text);
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{} [...]", &text[..at]),
        None => text,
    }
}

/// The longest error text a warning quotes.
const MAX_ERROR_CHARS: usize = 600;
