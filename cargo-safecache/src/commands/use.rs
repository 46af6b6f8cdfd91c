//! This defines `use`: CMD, a command that uses KEY, runs with KEY pinned
//! (`SAFECACHE_ENTRY`, `SAFECACHE_HIT`); with `--fill FILL`, an absent KEY
//! is filled first, single flight, with the failure shared as in `run
//! --key`.
//!
//! Invariant: CMD never runs without the entry it was given, pinned: an
//! absent KEY without --fill exits 1 before CMD starts, and a remove that
//! slips in between a fill's publish and the pin makes the fill run again
//! (a few times at most), never CMD run on nothing.

use std::ffi::OsString;

use anyhow::{Context, Result};
use safecache::{Key, LockMode};
use serde_json::json;

use super::fill::{self, Session};
use crate::cli::UseArgs;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::key_files;
use crate::process::{self, Spawn, Stdout, code_of};

pub(crate) fn run(ctx: &Ctx, args: UseArgs) -> Result<u8> {
    let Some(key) = args.key.key else {
        return Err(Coded { code: exit::USAGE, message: crate::hint::use_needs_key() }.into());
    };
    let key = key_files::derive(key, &args.key.key_files)?;
    if args.fill.is_none() {
        let f = &args.fill_args;
        let given = [
            (f.in_place, "--in-place"),
            (f.allow_empty, "--allow-empty"),
            (f.retry_failed, "--retry-failed"),
            (f.fill_timeout.is_some(), "--fill-timeout"),
        ];
        if let Some((_, flag)) = given.iter().find(|(on, _)| *on) {
            return Err(Coded { code: exit::USAGE, message: crate::hint::fill_option_without_fill(flag, "use") }.into());
        }
    }
    let fill_cmd = args.fill.as_ref().map(fill::shell);
    // Named by its fill from its first lock on: that is what waiters wait for.
    let shown = fill_cmd.as_deref().unwrap_or(&args.command);
    let session = Session::open(ctx, args.fill.as_ref().map(|_| &args.fill_args), LockMode::Shared, shown)?;
    let env = session.with_entry(&key);

    let mut filled_here = false;
    for attempt in 0..3 {
        let pinned =
            ctx.blocking(|| session.leased.pin(&key, ctx.wait)).with_context(|| format!("cannot pin `{key}`"))?;
        if let Some(pin) = pinned {
            if attempt == 0 {
                crate::stats::hit(session.leased.cache());
            }
            safecache::set_process_command(args.command.iter().map(|a| a.to_string_lossy().into_owned()).collect());
            return run_pinned(ctx, &session, &key, &[pin], env, !filled_here, &args.command);
        }
        let Some(fill_cmd) = &fill_cmd else {
            crate::stats::miss(session.leased.cache());
            return Err(absent(&key).into());
        };
        match fill::fill(ctx, &session, &key, &args.fill_args, fill_cmd)? {
            Ok(filled) => {
                if let Some(warning) = &filled.warning {
                    ctx.ui.warn(warning);
                }
                filled_here = filled.filled;
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

/// Runs CMD with the entry pinned.
fn run_pinned(
    ctx: &Ctx,
    session: &Session,
    key: &Key,
    pins: &[safecache::Pin],
    mut env: Vec<(&'static str, OsString)>,
    hit: bool,
    command: &[OsString],
) -> Result<u8> {
    env.push(("SAFECACHE_HIT", if hit { "1" } else { "0" }.into()));
    let ended = process::spawn_and_wait(&Spawn {
        cmd: command,
        env: &env,
        held: &session.lock_fds(pins, None),
        stdout: if ctx.ui.json { Stdout::Stderr } else { Stdout::Inherit },
        timeout: None,
    })?;
    let code = code_of(ended.status);
    ctx.ui.json(json!({ "reason": "exited", "exit_code": code, "key": key.as_str(), "hit": hit }));
    Ok(code)
}

/// `use --key K -- CMD` of an absent K, without --fill.
fn absent(key: &Key) -> Coded {
    Coded {
        code: exit::ABSENT,
        message: format!(
            "`{key}` is not in the cache, so the command was not run; {}",
            crate::hint::fill_absent(key.as_str())
        ),
    }
}
