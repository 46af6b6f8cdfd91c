//! This defines `use`: CMD, a command that uses KEY, runs with KEY pinned
//! (`SAFECACHE_ENTRY`, `SAFECACHE_HIT`); with `--fill FILL`, an absent KEY
//! is filled first, single flight, with the failure shared as in `run
//! --key`. With `--exclusive`, CMD gets the entry to change it, under its
//! exclusive entry lock, and the entry is sealed again after CMD.
//!
//! Invariants:
//! - CMD never runs without the entry it was given: an absent KEY without
//!   --fill exits 1 before CMD starts, and a remove that slips in between
//!   a fill's publish and the pin makes the fill run again (a few times at
//!   most), never CMD run on nothing;
//! - a changing CMD (`--exclusive`) runs with the exclusive entry lock held
//!   by its supervisor for as long as any process it started lives: pins
//!   and other changes wait, and a killed `use` leaves the entry marked as
//!   changed (interrupted), never sealed half-written.

use std::ffi::OsString;

use anyhow::{Context, Result};
use safecache::{Key, LockMode};

use super::fill::{self, Session};
use crate::cli::UseArgs;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::key_files;
use crate::process::{self, Spawn, Stdout, code_of};
use crate::report::Exited;

pub(crate) fn run(ctx: &Ctx, args: UseArgs) -> Result<u8> {
    let Some(key) = args.key.key.clone() else {
        return Err(Coded { code: exit::USAGE, message: crate::hint::use_needs_key() }.into());
    };
    let key = key_files::derive(key, &args.key.key_files)?;
    if args.fill.is_none()
        && let Some(flag) = args.fill_args.first_given()
    {
        return Err(Coded { code: exit::USAGE, message: crate::hint::fill_option_without_fill(flag, "use") }.into());
    }
    if args.fill.as_ref().is_some_and(|f| f.to_string_lossy().trim().is_empty()) {
        return Err(Coded { code: exit::USAGE, message: crate::hint::empty_fill() }.into());
    }
    let fill_cmd = args.fill.as_ref().map(fill::shell);
    // The fill's locks are named by the fill, from its first lock on: that
    // is what waiters wait for; the lease and the pin by CMD.
    let session = Session::open(
        ctx,
        args.fill.as_ref().map(|_| &args.fill_args),
        LockMode::Shared,
        &args.command,
        fill_cmd.as_deref(),
        true,
    )?;
    // An absent key without --fill fails before anything is locked
    // (locking creates the entry's lock file), so the cache stays
    // unchanged; unless a fill of it runs (then the pin waits for it), or a
    // remote tier may have it (then it is restored, under the entry lock).
    if fill_cmd.is_none()
        && session.tier.is_none()
        && session.leased.get(&key)?.is_none()
        && !being_filled(&session, &key)
    {
        crate::stats::miss(session.leased.cache());
        return Err(absent(&key).into());
    }
    if args.exclusive {
        return changing(ctx, &session, &key, &args, fill_cmd.as_deref());
    }

    let Some(fill_cmd) = &fill_cmd else {
        let pinned =
            ctx.blocking(|| session.leased.pin(&key, ctx.wait)).with_context(|| format!("cannot pin `{key}`"))?;
        let Some(pin) = pinned else {
            // Not here: the remote tier's, if it has it.
            if let Some(restored) = fill::restore_only(ctx, &session, &key)? {
                if let Some(warning) = &restored.warning {
                    ctx.ui.warn(warning);
                }
                return run_cmd(ctx, &session, &key, &[restored.pin.lock_fd()], !restored.filled, &args.command);
            }
            crate::stats::miss(session.leased.cache());
            return Err(if session.tier.is_some() { absent_remotely(&key) } else { absent(&key) }.into());
        };
        crate::stats::hit(session.leased.cache());
        return run_cmd(ctx, &session, &key, &[pin.lock_fd()], true, &args.command);
    };
    let pinned = match fill::pin_or_fill(ctx, &session, &key, &args.fill_args, fill_cmd)? {
        Ok(pinned) => pinned,
        Err(code) => return Ok(code),
    };
    if let Some(warning) = &pinned.warning {
        ctx.ui.warn(warning);
    }
    if pinned.filled {
        ctx.ui.status("Filled", format!("`{key}` at {}", pinned.pin.entry().path().display()));
    }
    run_cmd(ctx, &session, &key, &[pinned.pin.lock_fd()], !pinned.filled, &args.command)
}

/// `use --exclusive`: CMD changes the entry under its exclusive lock, then
/// the entry is sealed (its manifest written again), whatever CMD's status:
/// the manifest must describe what is there.
fn changing(ctx: &Ctx, session: &Session, key: &Key, args: &UseArgs, fill_cmd: Option<&[OsString]>) -> Result<u8> {
    let mut filled_here = false;
    for attempt in 0..3 {
        let held = ctx
            .blocking(|| session.leased.modify(key, ctx.wait))
            .with_context(|| format!("cannot take `{key}` to change it"))?;
        if let Some(change) = held {
            if attempt == 0 {
                crate::stats::hit(session.leased.cache());
            }
            if let Some(before) = change.interrupted() {
                ctx.ui.warn(format!(
                    "`{key}` was left half changed by an earlier change that never finished ({before}); this run \
                     goes on from there and seals it"
                ));
            }
            let code = run_cmd(ctx, session, key, &[change.lock_fd()], !filled_here, &args.command)?;
            ctx.blocking(|| change.seal()).with_context(|| {
                format!("the command exited with {code}, but `{key}` could not be sealed; it stays marked as changed")
            })?;
            return Ok(code);
        }
        let Some(fill_cmd) = fill_cmd else {
            // Not here: the remote tier's, if it has it; then change it.
            if let Some(restored) = fill::restore_only(ctx, session, key)? {
                filled_here = restored.filled;
                drop(restored);
                continue;
            }
            crate::stats::miss(session.leased.cache());
            return Err(if session.tier.is_some() { absent_remotely(key) } else { absent(key) }.into());
        };
        match fill::fill(ctx, session, key, &args.fill_args, fill_cmd)? {
            Ok(filled) => {
                if let Some(warning) = &filled.warning {
                    ctx.ui.warn(warning);
                }
                filled_here = filled.filled;
                // The upload of what was filled holds a pin, which the change
                // would wait for: it ends first, with the entry as filled.
                session.finish_uploads();
            }
            Err(code) => return Ok(code),
        }
    }
    Err(Coded {
        code: exit::FAILURE,
        message: format!("`{key}` was removed each time right after it was filled; the command was not run"),
    }
    .into())
}

/// Runs CMD with the entry held by the locks whose descriptors are `held`.
fn run_cmd(
    ctx: &Ctx,
    session: &Session,
    key: &Key,
    held: &[std::os::fd::BorrowedFd<'_>],
    hit: bool,
    command: &[OsString],
) -> Result<u8> {
    let mut env = session.with_entry(key);
    env.push(("SAFECACHE_HIT", if hit { "1" } else { "0" }.into()));
    let mut fds = session.lock_fds(&[], None);
    fds.extend_from_slice(held);
    let ended = process::spawn_and_wait(Spawn {
        cmd: command,
        env: &env,
        held: &fds,
        stdout: if ctx.ui.json { Stdout::Stderr } else { Stdout::Inherit },
        timeout: None,
        copy: None,
    })?;
    let code = code_of(ended.status);
    // An upload of what this run filled went on beside CMD: it ends now,
    // with the entry still pinned.
    session.finish_uploads();
    ctx.ui.report(Exited {
        exit_code: code,
        key: Some(key.to_string()),
        hit: Some(hit),
        remote: session.remote_report(),
        ..Exited::default()
    })?;
    Ok(code)
}

/// Whether a live process holds `key`'s entry lock exclusively: a fill
/// (or a change, or a remove) under way.
fn being_filled(session: &Session, key: &Key) -> bool {
    session.cache.entry_holders(key).iter().any(|h| h.mode == LockMode::Exclusive)
}

/// `use --key K -- CMD` of an absent K, without --fill.
fn absent(key: &Key) -> Coded {
    absent_from(key, "")
}

/// The same, after the remote tier was asked too.
fn absent_remotely(key: &Key) -> Coded {
    absent_from(key, " nor in the remote tier")
}

fn absent_from(key: &Key, also: &str) -> Coded {
    Coded {
        code: exit::ABSENT,
        message: format!(
            "`{key}` is not in the cache{also}, so the command was not run; {}",
            crate::hint::fill_absent(key.as_str())
        ),
    }
}
