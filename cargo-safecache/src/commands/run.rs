//! This defines `run`: CMD, the command that builds, under a lease on the
//! cache; with `--key K`, CMD fills K if it is absent (single flight) and
//! stdout is the entry's path alone.
//!
//! The forms that ran a consumer (`run --key K --fill F -- CMD`, `run --pin
//! K -- CMD`) are gone: in them CMD meant the opposite of what it means in
//! `run --key K -- CMD`, and a wrong guess published an empty entry. They
//! fail with a one-line error that names the `use` form.

use anyhow::Result;
use safecache::LockMode;

use super::fill::{self, Session};
use crate::cli::RunArgs;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::key_files;
use crate::process::{self, Spawn, Stdout, code_of};
use crate::report::{self, Exited};

pub(crate) fn run(ctx: &Ctx, args: RunArgs) -> Result<u8> {
    refuse_gone_forms(&args)?;
    let key = match args.key.key {
        Some(key) => Some(key_files::derive(key, &args.key.key_files)?),
        None => None,
    };
    if key.is_none()
        && let Some(flag) = args.fill.first_given()
    {
        return Err(usage(crate::hint::fill_option_without_fill(flag, "run")));
    }
    let mode = if args.exclusive { LockMode::Exclusive } else { LockMode::Shared };
    let session = Session::open(ctx, key.as_ref().map(|_| &args.fill), mode, &args.command, None, key.is_some())?;

    let Some(key) = key else {
        // `run -- CMD`: CMD under the lease only.
        let ended = process::spawn_and_wait(Spawn {
            cmd: &args.command,
            env: &session.env,
            held: &session.lock_fds(&[], None),
            stdout: if ctx.ui.json { Stdout::Stderr } else { Stdout::Inherit },
            timeout: None,
            copy: None,
        })?;
        let code = code_of(ended.status);
        ctx.ui.report(Exited { exit_code: code, ..Exited::default() })?;
        return Ok(code);
    };

    // `run --key K -- CMD`: CMD is the fill.
    let filled = match fill::fill(ctx, &session, &key, &args.fill, &args.command)? {
        Ok(filled) => filled,
        Err(code) => return Ok(code),
    };
    if let Some(warning) = &filled.warning {
        ctx.ui.warn(warning);
    }
    // The upload of what CMD filled, if any, ends before the report, which
    // says how it went.
    session.finish_uploads();
    // The entry's path is stdout's one line: CMD printed to stderr.
    ctx.ui.report(report::Filled::new(&key, filled.entry.path(), filled.filled, session.remote_report()))?;
    Ok(exit::OK)
}

fn usage(message: String) -> anyhow::Error {
    Coded { code: exit::USAGE, message }.into()
}

/// `run --fill` and `run --pin`: a one-line error naming the `use` form.
fn refuse_gone_forms(args: &RunArgs) -> Result<()> {
    let key = args.key.key.as_ref().map_or("KEY", |k| k.as_str());
    if args.old_fill.is_some() {
        return Err(usage(crate::hint::gone_fill(key)));
    }
    if let Some(pin) = args.old_pins.first() {
        return Err(usage(crate::hint::gone_pin(&safecache::display::escape(pin))));
    }
    Ok(())
}
