//! This defines `run`: CMD under a lease, with optional pins and an optional
//! single-flight fill.
//!
//! Order of operations, which is the core's lock order: the lease (shared,
//! or exclusive with `--exclusive`), then each pin, then the fill's entry
//! lock. Every lock is taken before CMD starts and released only after CMD
//! has exited, so nothing `clean`, `rm` or `gc` does can reach what CMD uses.
//!
//! Invariants kept here:
//! - CMD and everything it starts never outlive the locks: on Linux a
//!   subreaper supervisor holds copies of the lock descriptors (the lease,
//!   the pins, the fill's entry and owner locks) and kills every descendant
//!   when CMD exits or `run` dies (see `tree`), so a killed `run` cannot
//!   leave anything writing into a temp that gc may reclaim, nor let the
//!   next fill of the key overlap it;
//! - SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group, and
//!   `run` exits with CMD's status (128+N for a death by signal N, as shells
//!   report it); one that comes after CMD has exited, while its output is
//!   hashed for the manifest, cancels the fill (nothing is published) and
//!   `run` exits with 128+N;
//! - a fill ended by one of those signals (forwarded by `run`, or CMD's own
//!   death by it) is cancelled, not failed: nothing is published, no failure
//!   is recorded, and a run waiting for the fill runs it itself;
//! - nested invocations see `SAFECACHE_LEASE` and `SAFECACHE_LEASE_DIR` and
//!   do not take the lease again.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use safecache::{Cancelled, CommandFailed, Error, FillDir, Filled, Key, Leased, LockMode, Pin};
use serde_json::json;
use signal_hook::consts::SIGTERM;

use crate::cli::RunArgs;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::inherit;
use crate::process::{self, CANCEL, CANCEL_SIGNAL, MID_LINE, cancelled_by, code_of, describe, signal_name};

pub(crate) fn run(ctx: &Ctx, args: RunArgs) -> Result<u8> {
    // Waiters and `status` name this run by its CMD, not by the safecache
    // command line that starts it.
    safecache::set_process_command(args.command.iter().map(|a| a.to_string_lossy().into_owned()).collect());
    let wanted = if args.exclusive { LockMode::Exclusive } else { LockMode::Shared };
    let cache = ctx.open_adjusted(|o| {
        o.retry_failed = args.retry_failed;
        o.min_free = args.min_free;
        o.cancel = CANCEL.clone();
    })?;
    // From here on every lock goes through this one lease: pins and the
    // fill never open the lease file again (under `--exclusive`, a second
    // open would be a second, conflicting flock).
    let leased = ctx.blocking(|| cache.lease(wanted, ctx.wait)).context("cannot take the cache lease")?;
    let canonical = std::fs::canonicalize(cache.path())
        .with_context(|| format!("cannot resolve cache dir `{}`", cache.path().display()))?;
    let mut env: Vec<(&str, OsString)> = vec![("SAFECACHE_DIR", cache.path().as_os_str().to_owned())];
    env.extend(inherit::exports(&leased, &canonical));

    let absent = |key: &Key| Coded {
        code: exit::ABSENT,
        message: format!(
            "cannot pin `{key}`: it is not in the cache, so the command was not run; \
             fill it first, or fill it if absent and then run CMD with it pinned: \
             `cargo safecache run --key {key} --fill 'FILL' -- CMD`"
        ),
    };
    // Check every pin first, so an absent key fails before anything is
    // locked (locking creates the entry's lock file).
    for key in &args.pins {
        if leased.get(key)?.is_none() {
            return Err(absent(key).into());
        }
    }
    let mut pins = Vec::new();
    for key in &args.pins {
        let pin = ctx.blocking(|| leased.pin(key, ctx.wait)).with_context(|| format!("cannot pin `{key}`"))?;
        pins.push(pin.ok_or_else(|| absent(key))?);
    }

    let Some(key) = args.key else {
        let status = process::spawn_and_wait(ctx.ui.json, &args.command, &env, &lock_fds(&leased, &pins, None), false)?;
        let code = code_of(status);
        ctx.ui.json(json!({ "reason": "exited", "exit_code": code }));
        return Ok(code);
    };
    env.push(("SAFECACHE_ENTRY", cache.entry_path(&key).into_os_string()));

    let Some(fill_script) = args.fill else {
        // `run --key K -- CMD`: CMD is the fill.
        let filled = match fill(ctx, &leased, &pins, &key, args.in_place, &args.command, &env)? {
            Ok(filled) => filled,
            Err(code) => return Ok(code),
        };
        let path = filled.entry.path();
        if let Some(warning) = &filled.warning {
            ctx.ui.warn(warning);
        }
        if filled.filled {
            ctx.ui.status("Filled", format!("`{key}` at {}", path.display()));
        } else {
            ctx.ui.status("Fresh", format!("`{key}` is already in the cache; the command was not run"));
        }
        // The entry's path is the last line on stdout, and a line of its own.
        ctx.ui.out_path(path, MID_LINE.load(Ordering::Relaxed)).context("cannot write the entry's path to stdout")?;
        ctx.ui.json(json!({
            "reason": "entry",
            "key": key.as_str(),
            "path": path.to_string_lossy(),
            "filled": filled.filled,
        }));
        drop(pins);
        return Ok(exit::OK);
    };

    // `run --key K --fill FILL -- CMD`: fill K with FILL if it is absent,
    // then run CMD with K pinned. A remove can slip in between the publish
    // and the pin; then the fill runs again, a few times at most.
    let fill_cmd: Vec<OsString> = vec!["sh".into(), "-c".into(), fill_script];
    for attempt in 0..3 {
        if let Some(pin) = ctx.blocking(|| leased.pin(&key, ctx.wait)).with_context(|| format!("cannot pin `{key}`"))? {
            if attempt == 0 {
                crate::stats::hit(leased.cache());
            }
            pins.push(pin);
            let status =
                process::spawn_and_wait(ctx.ui.json, &args.command, &env, &lock_fds(&leased, &pins, None), false)?;
            let code = code_of(status);
            ctx.ui.json(json!({ "reason": "exited", "exit_code": code, "key": key.as_str() }));
            return Ok(code);
        }
        match fill(ctx, &leased, &pins, &key, args.in_place, &fill_cmd, &env)? {
            Ok(Filled { warning: Some(warning), .. }) => ctx.ui.warn(warning),
            Ok(_) => {}
            Err(code) => return Ok(code),
        }
    }
    Err(Coded {
        code: exit::FAILURE,
        message: format!("`{key}` was removed each time right after it was filled; the command was not run"),
    }
    .into())
}

/// Fills `key` by running `fill_cmd` (single-flight), or finds it filled.
/// `Err(code)` when the fill, or the fill this run waited for, failed: the
/// run then exits with `code`, having said why.
fn fill(
    ctx: &Ctx,
    leased: &Leased,
    pins: &[Pin],
    key: &Key,
    in_place: bool,
    fill_cmd: &[OsString],
    env: &[(&str, OsString)],
) -> Result<Result<Filled, u8>> {
    let mut status = None;
    let mut cancelled = None;
    let filled = ctx.blocking(|| {
        let fill = |dir: &FillDir<'_>| {
            ctx.ui.done_waiting();
            ctx.ui.status("Filling", format!("`{key}` by running `{}`", shown(fill_cmd)));
            let mut env = env.to_vec();
            env.push(("SAFECACHE_OUT", dir.path().as_os_str().to_owned()));
            let st = process::spawn_and_wait(ctx.ui.json, fill_cmd, &env, &lock_fds(leased, pins, Some(dir)), true)?;
            status = Some(st);
            if st.success() {
                // Usually a forgotten `sh -c` or a wrong path: say so, and
                // publish what CMD made, empty as it is.
                if std::fs::read_dir(dir.path()).is_ok_and(|mut d| d.next().is_none()) {
                    ctx.ui.warn(format!(
                        "the command wrote nothing into SAFECACHE_OUT; `{key}` is published empty \
                         (to fill it, write into \"$SAFECACHE_OUT\", e.g. with `sh -c '... > \"$SAFECACHE_OUT/f\"'`)"
                    ));
                }
                Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
            } else if let Some(sig) = cancelled_by(st) {
                cancelled = Some(sig);
                let description = format!("the command {} (cancelled by {})", describe(st), signal_name(sig));
                Err(Cancelled { code: i32::from(code_of(st)), description }.into())
            } else {
                let description = format!("the command {}", describe(st));
                Err(CommandFailed { code: i32::from(code_of(st)), description }.into())
            }
        };
        if in_place {
            leased.get_or_fill_in_place(key, ctx.wait, fill)
        } else {
            leased.get_or_fill(key, ctx.wait, fill)
        }
    });
    crate::stats::fill_outcome(leased.cache(), &filled, status, cancelled.is_some());
    match filled {
        Ok(filled) => Ok(Ok(filled)),
        Err(Error::Fill { .. }) if cancelled.is_some() => {
            let (st, sig) = (status.unwrap_or_default(), cancelled.unwrap_or(SIGTERM));
            ctx.ui.warn(format!(
                "the fill was cancelled by {}: the command {}; nothing was published as `{key}` and no \
                 failure was recorded, so a run waiting for it fills it instead",
                signal_name(sig),
                describe(st)
            ));
            let code = code_of(st);
            ctx.ui.json(json!({
                "reason": "exited",
                "exit_code": code,
                "key": key.as_str(),
                "published": false,
                "cancelled": true,
            }));
            Ok(Err(code))
        }
        Err(ref e @ Error::Fill { .. }) if status.is_some_and(|s| !s.success()) => {
            let st = status.unwrap_or_default();
            // A command that failed on a full disk: say so, and how to
            // make room.
            let space = e.low_space().map(|l| format!("; {}: {}", l.note(), exit::NO_SPACE_HINT)).unwrap_or_default();
            ctx.ui.warn(format!("the command {}; nothing was published as `{key}`{space}", describe(st)));
            let code = code_of(st);
            ctx.ui.json(json!({
                "reason": "exited",
                "exit_code": code,
                "key": key.as_str(),
                "published": false,
                "fs_available": e.low_space().map(|l| l.available),
            }));
            Ok(Err(code))
        }
        Err(Error::PeerFillFailed { failure, .. }) => {
            // Fail the way the fill this run waited for failed.
            let code =
                failure.exit_code.and_then(|c| u8::try_from(c).ok()).filter(|&c| c != 0).unwrap_or(exit::FAILURE);
            ctx.ui.error(
                &format!(
                    "the fill of `{key}` that this run waited for failed: {failure}; nothing was published; \
                     to run it yourself instead, pass --retry-failed"
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
            ctx.ui.error(&format!("cancelled by signal {sig}; nothing was published as `{key}`"), code);
            Ok(Err(code))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot fill `{key}`"))),
    }
}

/// The descriptors whose flocks protect CMD: they must stay held for as
/// long as any process CMD started lives.
/// CMD itself never gets them: only the supervisor does (see `tree`).
fn lock_fds<'a>(leased: &'a Leased, pins: &'a [Pin], dir: Option<&'a FillDir<'_>>) -> Vec<BorrowedFd<'a>> {
    let fill = dir.into_iter().flat_map(|d| [d.lock_fd(), d.entry_lock_fd()]);
    leased.lock_fd().into_iter().chain(pins.iter().map(Pin::lock_fd)).chain(fill).collect()
}

fn shown(cmd: &[OsString]) -> String {
    cmd.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}
