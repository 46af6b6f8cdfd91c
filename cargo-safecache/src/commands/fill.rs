//! This defines what the filling forms share (`run --key K -- CMD` and
//! `use --key K --fill FILL -- CMD`): the session every `run` and `use`
//! opens (the cache, its lease, the variables CMD gets) and the
//! single-flight fill itself.
//!
//! Order of operations, which is the core's lock order: the lease (shared,
//! or exclusive with `run --exclusive`), then the pin, then the fill's entry
//! lock. Every lock is taken before CMD starts and released only after CMD
//! has exited, so nothing `clean`, `rm` or `gc` does can reach what CMD uses.
//!
//! Invariants kept here:
//! - CMD and everything it starts never outlive the locks: a subreaper
//!   supervisor holds copies of the lock descriptors (see `process`);
//! - a fill publishes only what its command wrote: an empty output fails
//!   (unless --allow-empty), a fill past --fill-timeout is killed with its
//!   whole tree and fails, and either failure is shared with the runs
//!   waiting for it, exactly like a command that exits non-zero;
//! - a fill ended by SIGINT, SIGTERM or SIGHUP (forwarded by `run`, or
//!   CMD's own death by one) is cancelled, not failed: nothing is published,
//!   no failure is recorded, and a run waiting for it fills it instead;
//! - the fill's stdout goes to stderr: stdout carries the entry's path
//!   (`run --key`) or the consuming command's own output (`use`).

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use safecache::{
    Cache, Cancelled, CommandFailed, Error, FillDir, Filled, Key, Leased, LockMode, Pin, PinOrFill, PinnedFill, Wait,
};
use signal_hook::consts::SIGTERM;

use crate::cli::FillArgs;
use crate::ctx::Ctx;
use crate::exit;
use crate::inherit;
use crate::process::{self, CANCEL, CANCEL_SIGNAL, Spawn, Stdout, cancelled_by, code_of, describe, signal_name};
use crate::remote::{Fetched, Tier, Upload};
use crate::report::{Exited, Moved};

/// How long an upload waits to pin the entry it uploads.
const UPLOAD_PIN_WAIT: Duration = Duration::from_secs(5);

/// The exit code of a fill killed for running past --fill-timeout, as
/// timeout(1) exits.
pub(crate) const TIMED_OUT: u8 = 124;

/// How to fill an entry, when a fill wrote nothing.
const EMPTY_HINT: &str = "; write the output into \"$SAFECACHE_OUT\" (in single quotes, so that the shell that \
     starts safecache leaves it alone), or pass --allow-empty to publish an empty entry";

/// What a `run` or `use` holds while its commands run: the cache, its
/// lease, and the variables every command it starts gets.
pub(crate) struct Session {
    pub(crate) cache: Cache,
    pub(crate) leased: Leased,
    pub(crate) env: Vec<(&'static str, OsString)>,
    /// The remote tier, for a filling form with one configured.
    pub(crate) tier: Option<Arc<Tier>>,
    /// Uploads under way, each with the pin that keeps its entry.
    uploads: Mutex<Vec<(Pin, Upload)>>,
}

impl Session {
    /// Opens the cache with the fill options and takes its lease in `mode`;
    /// with `remote`, resolves the remote tier too (the forms that may fill
    /// or restore an entry).
    /// Waiters and `status` name this process by `command` (CMD), and the
    /// locks of a fill by `fill` when it is another command (`use --fill`),
    /// from the first lock on.
    pub(crate) fn open(
        ctx: &Ctx,
        fill: Option<&FillArgs>,
        mode: LockMode,
        command: &[OsString],
        fill_cmd: Option<&[OsString]>,
        remote: bool,
    ) -> Result<Session> {
        let argv = |cmd: &[OsString]| cmd.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>();
        safecache::set_process_command(argv(command));
        let cache = ctx.open_adjusted(|o| {
            if let Some(fill) = fill {
                o.retry_failed = fill.retry_failed;
                o.min_free = fill.min_free;
            }
            o.fill_command = fill_cmd.map(argv);
            o.cancel = CANCEL.clone();
        })?;
        // From here on every lock goes through this one lease: pins and the
        // fill never open the lease file again (under `--exclusive`, a second
        // open would be a second, conflicting flock).
        // The remote of a form that may restore (`remote`): a bad
        // configuration fails here, before any lock is taken or anything
        // runs.
        let tier = if remote { Tier::open(&ctx.remote, &cache, &ctx.ui)? } else { None };
        let leased = ctx.blocking(|| cache.lease(mode, ctx.wait)).context("cannot take the cache lease")?;
        let canonical = std::fs::canonicalize(cache.path())
            .with_context(|| format!("cannot resolve cache dir `{}`", cache.path().display()))?;
        let mut env: Vec<(&'static str, OsString)> = vec![("SAFECACHE_DIR", cache.path().as_os_str().to_owned())];
        env.extend(inherit::exports(&leased, &canonical));
        Ok(Session { cache, leased, env, tier, uploads: Mutex::new(Vec::new()) })
    }

    /// Starts uploading `key`'s entry, which this command just filled, if
    /// the remote is writable: under a pin, so that nothing removes it
    /// meanwhile, on a thread of its own ([`Session::finish_uploads`] waits
    /// for it).
    fn start_upload(&self, key: &Key) {
        let Some(tier) = self.tier.as_ref().filter(|t| t.writes()) else { return };
        // A short wait: the fill just released the entry lock; only a
        // change (`use --exclusive`) or a remove can hold it now.
        match self.leased.pin(key, Wait::from_timeout(Some(UPLOAD_PIN_WAIT))) {
            Ok(Some(pin)) => {
                let upload = tier.upload(self.leased.cache(), key, pin.entry().path().to_owned());
                if let Ok(mut uploads) = self.uploads.lock() {
                    uploads.push((pin, upload));
                }
            }
            Ok(None) => tier.skipped(key, "it was removed right after the fill"),
            Err(e) => tier.skipped(key, &format!("cannot pin it: {e}")),
        }
    }

    /// Waits for the uploads this command started, then lets their
    /// entries go. Each upload's own timeout bounds the wait.
    pub(crate) fn finish_uploads(&self) {
        let uploads = self.uploads.lock().map(|mut u| std::mem::take(&mut *u)).unwrap_or_default();
        for (pin, upload) in uploads {
            upload.finish();
            drop(pin);
        }
    }

    /// What the remote tier did for this command, for its report.
    pub(crate) fn remote_report(&self) -> Option<Moved> {
        self.tier.as_ref().map(|t| t.moved())
    }

    /// The variables of a command that runs with `key`'s entry.
    pub(crate) fn with_entry(&self, key: &Key) -> Vec<(&'static str, OsString)> {
        let mut env = self.env.clone();
        env.push(("SAFECACHE_ENTRY", self.cache.entry_path(key).into_os_string()));
        env
    }

    /// The descriptors whose flocks protect CMD: they must stay held for as
    /// long as any process CMD started lives. CMD itself never gets them:
    /// only the supervisor does (see `process`).
    pub(crate) fn lock_fds<'a>(&'a self, pins: &'a [Pin], dir: Option<&'a FillDir<'_>>) -> Vec<BorrowedFd<'a>> {
        let fill = dir.into_iter().flat_map(|d| [d.lock_fd(), d.entry_lock_fd()]);
        self.leased.lock_fd().into_iter().chain(pins.iter().map(Pin::lock_fd)).chain(fill).collect()
    }
}

impl Drop for Session {
    /// An upload still under way (a command that ended early, by an error)
    /// is waited for while its pin is held: its entry must not be removed
    /// while it is being packed.
    fn drop(&mut self) {
        self.finish_uploads();
    }
}

/// How a fill's command ended, when it did not succeed.
enum Outcome {
    /// It failed: exited non-zero, wrote nothing, or ran past its limit.
    Failed { code: u8, message: String, hint: &'static str },
    /// A signal cancelled it.
    Cancelled { code: u8, signal: i32, description: String },
}

/// What a fill published, for the counters: whether this call ran it, and
/// the entry's bytes.
pub(crate) trait Published {
    fn filled(&self) -> bool;
    fn bytes(&self) -> Option<u64>;
}

impl Published for Filled {
    fn filled(&self) -> bool {
        self.filled
    }
    fn bytes(&self) -> Option<u64> {
        self.bytes
    }
}

impl Published for PinnedFill {
    fn filled(&self) -> bool {
        self.filled
    }
    fn bytes(&self) -> Option<u64> {
        self.bytes
    }
}

/// A fill function, as the core calls it.
pub(crate) type FillFn<'f> = dyn FnMut(&FillDir<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + 'f;

/// Fills `key` by running `fill_cmd` (single flight), or finds it filled.
pub(crate) fn fill(
    ctx: &Ctx,
    session: &Session,
    key: &Key,
    args: &FillArgs,
    fill_cmd: &[OsString],
) -> Result<Result<Filled, u8>> {
    filling(ctx, session, key, args, fill_cmd, |f| {
        if args.in_place {
            session.leased.get_or_fill_in_place(key, ctx.wait, f)
        } else {
            session.leased.get_or_fill(key, ctx.wait, f)
        }
    })
}

/// Pins `key`, filling it first by running `fill_cmd` if it is absent
/// (single flight, the failure shared with every run that waited on the
/// key, the pin's wait included).
pub(crate) fn pin_or_fill(
    ctx: &Ctx,
    session: &Session,
    key: &Key,
    args: &FillArgs,
    fill_cmd: &[OsString],
) -> Result<Result<PinnedFill, u8>> {
    filling(ctx, session, key, args, fill_cmd, |f| {
        session.leased.pin_or_fill(key, PinOrFill { wait: ctx.wait, in_place: args.in_place }, f)
    })
}

/// Pins `key` after restoring it from the remote tier, for `use` without
/// `--fill` on a local miss: a fill that runs no command, single flight
/// under the entry lock like any other. `None` if the session has no
/// remote, or the remote does not have `key` (nothing is published, and no
/// failure is recorded: a run waiting for it tries for itself).
pub(crate) fn restore_only(ctx: &Ctx, session: &Session, key: &Key) -> Result<Option<PinnedFill>> {
    let Some(tier) = &session.tier else { return Ok(None) };
    let mut missed = false;
    let pinned = ctx.blocking(|| {
        session.leased.pin_or_fill(key, PinOrFill { wait: ctx.wait, in_place: false }, |dir: &FillDir<'_>| {
            missed = false;
            ctx.ui.done_waiting();
            match tier.restore(session.leased.cache(), key, dir) {
                Ok(Fetched::Hit) => Ok(()),
                Ok(Fetched::Miss) => {
                    missed = true;
                    // No failure to share: there was no command to fail.
                    let description = "the remote tier does not have it".to_owned();
                    Err(Box::new(Cancelled { code: i32::from(exit::ABSENT), description })
                        as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(e) => Err(e.into()),
            }
        })
    });
    match pinned {
        Ok(pinned) => {
            crate::stats::fill_outcome(session.leased.cache(), Ok((pinned.filled, pinned.bytes)), false, false);
            Ok(Some(pinned))
        }
        Err(Error::Fill { .. }) if missed => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot restore `{key}` from the remote tier"))),
    }
}

/// Runs the core operation `op` with a fill function that runs `fill_cmd`.
/// `Err(code)` when the fill, or the fill this run waited for, failed: the
/// run then exits with `code`, having said why.
fn filling<T: Published>(
    ctx: &Ctx,
    session: &Session,
    key: &Key,
    args: &FillArgs,
    fill_cmd: &[OsString],
    op: impl FnOnce(&mut FillFn<'_>) -> Result<T, Error>,
) -> Result<Result<T, u8>> {
    let mut outcome = None;
    let mut restored = false;
    let env = session.with_entry(key);
    let filled = ctx.blocking(|| {
        let mut fill = |dir: &FillDir<'_>| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            outcome = None;
            restored = false;
            ctx.ui.done_waiting();
            // A local miss, under the entry lock: the remote tier first, into
            // the same private output, published by the same rename.
            if let Some(tier) = &session.tier {
                match tier.restore(session.leased.cache(), key, dir) {
                    Ok(Fetched::Hit) => {
                        restored = true;
                        return Ok(());
                    }
                    Ok(Fetched::Miss) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            ctx.ui.status("Filling", format!("`{key}` by running `{}`", shown(fill_cmd)));
            let mut env = env.clone();
            env.push(("SAFECACHE_OUT", dir.path().as_os_str().to_owned()));
            env.push(("SAFECACHE_HIT", "0".into()));
            // Kept in the cache's metadata while the fill runs, so that a
            // waiter on a terminal can show its latest line.
            let mut log = dir.log();
            let ended = process::spawn_and_wait(Spawn {
                cmd: fill_cmd,
                env: &env,
                held: &session.lock_fds(&[], Some(dir)),
                stdout: Stdout::Stderr,
                timeout: args.fill_timeout,
                copy: Some(&mut log),
            })?;
            drop(log);
            let st = ended.status;
            let failed = |code: u8, message: String| {
                let error = CommandFailed { code: i32::from(code), description: message.clone() };
                (Outcome::Failed { code, message, hint: "" }, error)
            };
            let (o, error): (Outcome, Box<dyn std::error::Error + Send + Sync>) = if ended.timed_out {
                let (o, e) = failed(
                    TIMED_OUT,
                    format!(
                        "the fill ran longer than --fill-timeout {} and was killed with every process it started",
                        safecache::display::duration(args.fill_timeout.unwrap_or_default())
                    ),
                );
                (o, e.into())
            } else if st.success() {
                if args.allow_empty || !is_empty(dir) {
                    return Ok(());
                }
                let (_, e) =
                    failed(exit::FAILURE, "the command exited 0 but wrote nothing into $SAFECACHE_OUT".to_owned());
                let o = Outcome::Failed { code: exit::FAILURE, message: e.description.clone(), hint: EMPTY_HINT };
                (o, e.into())
            } else if let Some(signal) = cancelled_by(st) {
                let description = format!("the command {} (cancelled by {})", describe(st), signal_name(signal));
                let o = Outcome::Cancelled { code: code_of(st), signal, description: describe(st) };
                (o, Cancelled { code: i32::from(code_of(st)), description }.into())
            } else {
                let (o, e) = failed(code_of(st), format!("the command {}", describe(st)));
                (o, e.into())
            };
            outcome = Some(o);
            Err(error)
        };
        op(&mut fill)
    });
    let ran = matches!(outcome, Some(Outcome::Failed { .. }));
    let cancelled = matches!(outcome, Some(Outcome::Cancelled { .. }));
    crate::stats::fill_outcome(
        session.leased.cache(),
        filled.as_ref().map(|f| (f.filled(), f.bytes())).map_err(|_| ()),
        ran,
        cancelled,
    );
    match filled {
        Ok(filled) => {
            if filled.filled() && !restored {
                session.start_upload(key);
            }
            Ok(Ok(filled))
        }
        Err(ref e @ Error::Fill { .. }) if outcome.is_some() => match outcome {
            Some(Outcome::Cancelled { code, signal, description }) => {
                ctx.ui.warn(format!(
                    "the fill was cancelled by {}: the command {description}; nothing was published as `{key}` and \
                     no failure was recorded, so a run waiting for it fills it instead",
                    signal_name(signal),
                ));
                ctx.ui.report(Exited {
                    exit_code: code,
                    key: Some(key.to_string()),
                    published: Some(false),
                    cancelled: Some(true),
                    ..Exited::default()
                })?;
                Ok(Err(code))
            }
            Some(Outcome::Failed { code, message, hint }) => {
                // A command that failed on a full disk: say so, and how to
                // make room.
                let space =
                    e.low_space().map(|l| format!("; {}: {}", l.note(), crate::hint::no_space())).unwrap_or_default();
                ctx.ui.error(&format!("{message}; nothing was published as `{key}`{space}{hint}"), code);
                ctx.ui.report(Exited {
                    exit_code: code,
                    key: Some(key.to_string()),
                    published: Some(false),
                    timed_out: Some(code == TIMED_OUT),
                    fs_available: Some(e.low_space().map(|l| l.available)),
                    ..Exited::default()
                })?;
                Ok(Err(code))
            }
            None => Ok(Err(exit::FAILURE)),
        },
        Err(Error::PeerFillFailed { failure, .. }) => {
            // Fail the way the fill this run waited for failed.
            let code =
                failure.exit_code.and_then(|c| u8::try_from(c).ok()).filter(|&c| c != 0).unwrap_or(exit::FAILURE);
            ctx.ui.error(
                &format!(
                    "the fill of `{key}` that this run waited for failed: {failure}; nothing was published; {}",
                    crate::hint::RETRY_FAILED
                ),
                code,
            );
            Ok(Err(code))
        }
        Err(Error::Cancelled { .. }) => {
            // A signal stopped the publish (while hashing): nothing was
            // published; exit as the signal would have.
            let sig = CANCEL_SIGNAL.load(Ordering::SeqCst);
            let code = if sig == 0 { exit::FAILURE } else { u8::try_from(128 + sig).unwrap_or(exit::FAILURE) };
            let name = signal_name(i32::try_from(sig).unwrap_or(SIGTERM));
            ctx.ui.error(&format!("cancelled by {name}; nothing was published as `{key}`"), code);
            Ok(Err(code))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot fill `{key}`"))),
    }
}

/// Whether the fill's output directory is empty (a directory that cannot
/// be read is not: the publish will say what is wrong with it).
fn is_empty(dir: &FillDir<'_>) -> bool {
    std::fs::read_dir(dir.path()).is_ok_and(|mut d| d.next().is_none())
}

/// A command as status lines quote it: as a shell would, escaped.
pub(crate) fn shown(cmd: &[OsString]) -> String {
    let argv: Vec<String> = cmd.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    safecache::display::escape(&safecache::display::shell_words(&argv))
}

/// The fill command of `use --fill FILL`.
pub(crate) fn shell(script: &OsString) -> Vec<OsString> {
    vec!["sh".into(), "-c".into(), script.clone()]
}
