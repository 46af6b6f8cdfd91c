//! This defines `run`: CMD under a lease, with optional pins and an optional
//! single-flight fill.
//!
//! Order of operations, which is the core's lock order: the lease (shared,
//! or exclusive with `--exclusive`), then each pin, then the fill's entry
//! lock. Every lock is taken before CMD starts and released only after CMD
//! has exited, so nothing `clean`, `rm` or `gc` does can reach what CMD uses.
//!
//! Invariants kept here:
//! - CMD never outlives the process that holds its locks: on Linux it gets
//!   `PR_SET_PDEATHSIG` = SIGKILL, so a killed `run` cannot leave CMD writing
//!   into a temp that gc may reclaim;
//! - SIGINT and SIGTERM are forwarded to CMD, and `run` exits with CMD's
//!   status (128+N for a death by signal N, as shells report it);
//! - nested invocations see `SAFECACHE_LEASE` and `SAFECACHE_LEASE_DIR` and
//!   do not take the lease again.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result};
use safecache::{Error, Key, LockMode};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::RunArgs;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::inherit;

pub(crate) fn run(ctx: &Ctx, args: RunArgs) -> Result<u8> {
    let wanted = if args.exclusive { LockMode::Exclusive } else { LockMode::Shared };
    let cache = ctx.open()?;
    // From here on every lock goes through this one lease: pins and the
    // fill never open the lease file again (under `--exclusive`, a second
    // open would be a second, conflicting flock).
    let leased = ctx.blocking(|| cache.lease(wanted, ctx.wait)).context("cannot take the cache lease")?;
    let canonical = std::fs::canonicalize(cache.path())
        .with_context(|| format!("cannot resolve cache dir `{}`", cache.path().display()))?;
    let mut env: Vec<(&str, OsString)> = vec![("SAFECACHE_DIR", cache.path().as_os_str().to_owned())];
    env.extend(inherit::exports(&leased, &canonical));

    let absent = |key: &Key| Coded {
        code: exit::FAILURE,
        message: format!(
            "cannot pin `{key}`: it is not in the cache, so the command was not run; \
             fill it first with `cargo safecache run --key {key} -- CMD`"
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
        let status = spawn_and_wait(ctx, &args.command, &env)?;
        let code = code_of(status);
        ctx.ui.json(json!({ "reason": "exited", "exit_code": code }));
        return Ok(code);
    };

    let mut status = None;
    let filled = ctx.blocking(|| {
        leased.get_or_fill(&key, ctx.wait, |dir| {
            ctx.ui.done_waiting();
            ctx.ui.status("Filling", format!("`{key}` by running `{}`", shown(&args.command)));
            env.push(("SAFECACHE_OUT", dir.path().as_os_str().to_owned()));
            let st = spawn_and_wait(ctx, &args.command, &env)?;
            status = Some(st);
            if st.success() { Ok(()) } else { Err(io::Error::other(format!("the command {}", describe(st)))) }
        })
    });
    let filled = match filled {
        Ok(filled) => filled,
        Err(Error::Fill { .. }) if status.is_some_and(|s| !s.success()) => {
            let st = status.unwrap_or_default();
            ctx.ui.warn(format!("the command {}; nothing was published as `{key}`", describe(st)));
            let code = code_of(st);
            ctx.ui.json(json!({ "reason": "exited", "exit_code": code, "key": key.as_str(), "published": false }));
            return Ok(code);
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot fill `{key}`"))),
    };
    let path = filled.entry.path();
    if filled.filled {
        ctx.ui.status("Filled", format!("`{key}` at {}", path.display()));
    } else {
        ctx.ui.status("Fresh", format!("`{key}` is already in the cache; the command was not run"));
    }
    // The entry's path is the last line on stdout.
    ctx.ui.out(path.display());
    ctx.ui.json(json!({ "reason": "entry", "key": key.as_str(), "path": path, "filled": filled.filled }));
    drop(pins);
    Ok(exit::OK)
}

fn shown(cmd: &[OsString]) -> String {
    cmd.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended with {st}"),
    }
}

/// CMD's status as `run`'s exit code: its own code, or 128+N for a death by
/// signal N.
fn code_of(st: ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => exit::FAILURE,
    }
}

/// Where signals go: CMD's pid once it runs, and a signal that arrived
/// before that. One lock covers both, so a signal that races with CMD's
/// start is delivered once, never lost.
struct Forward {
    child: Option<i32>,
    pending: Option<i32>,
}

static FORWARD: Mutex<Forward> = Mutex::new(Forward { child: None, pending: None });

fn forward_state() -> std::sync::MutexGuard<'static, Forward> {
    FORWARD.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Runs CMD with `env`, forwarding SIGINT and SIGTERM to it, and waits for it.
fn spawn_and_wait(ctx: &Ctx, cmd: &[OsString], env: &[(&str, OsString)]) -> io::Result<ExitStatus> {
    let (program, rest) = cmd.split_first().ok_or_else(|| io::Error::other("no command given"))?;
    let mut command = Command::new(program);
    command.args(rest);
    for (k, v) in env {
        command.env(k, v);
    }
    if ctx.ui.json {
        // stdout is for JSON lines: CMD's output goes to stderr.
        command.stdout(Stdio::from(io::stderr().as_fd_owned()?));
    }
    set_parent_death_signal(&mut command);
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for sig in signals.forever() {
            let mut state = forward_state();
            match state.child {
                Some(pid) => kill(pid, sig),
                None => state.pending = Some(sig),
            }
        }
    });
    let spawned = command
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", Path::new(program).display())));
    let result = spawned.and_then(|mut child| {
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        {
            let mut state = forward_state();
            state.child = Some(pid);
            if let Some(sig) = state.pending.take() {
                kill(pid, sig);
            }
        }
        let status = child.wait();
        forward_state().child = None;
        status
    });
    handle.close();
    let _ = forwarder.join();
    result
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd>;
}

impl AsFdOwned for io::Stderr {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}

/// Makes CMD die with this process: a `run` killed by SIGKILL must not leave
/// CMD writing into a temp or an entry it no longer protects.
#[cfg(target_os = "linux")]
fn set_parent_death_signal(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("the safecache process exited before the command started"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_command: &mut Command) {}
