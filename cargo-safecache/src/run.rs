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
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use safecache::{Cancelled, CommandFailed, Error, FillDir, Filled, Key, Leased, LockMode, Pin};
use serde_json::json;
use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::cli::RunArgs;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::inherit;
use crate::tree::Launch;

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
        let status = spawn_and_wait(ctx, &args.command, &env, &lock_fds(&leased, &pins, None), false)?;
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
    for _ in 0..3 {
        if let Some(pin) = ctx.blocking(|| leased.pin(&key, ctx.wait)).with_context(|| format!("cannot pin `{key}`"))? {
            pins.push(pin);
            let status = spawn_and_wait(ctx, &args.command, &env, &lock_fds(&leased, &pins, None), false)?;
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
            let st = spawn_and_wait(ctx, fill_cmd, &env, &lock_fds(leased, pins, Some(dir)), true)?;
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

/// Set by SIGINT, SIGTERM and SIGHUP from the first time `run` handles
/// them (once CMD starts) until it exits: the core's hashing stops at its
/// next check, so a signal that comes after CMD has exited, while the fill
/// is being hashed for its manifest, stops `run` promptly with nothing
/// published. [`CANCEL_SIGNAL`] says which signal it was.
static CANCEL: std::sync::LazyLock<safecache::Cancel> = std::sync::LazyLock::new(safecache::Cancel::new);
static CANCEL_SIGNAL: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicUsize>> =
    std::sync::LazyLock::new(Default::default);

/// Registers [`CANCEL`] for the signals `run` forwards, once: the handlers
/// stay for the life of the process, as signal-hook's do.
fn watch_cancel() -> io::Result<()> {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if ONCE.get().is_some() {
        return Ok(());
    }
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register_usize(sig, std::sync::Arc::clone(&CANCEL_SIGNAL), sig as usize)?;
        signal_hook::flag::register(sig, CANCEL.flag())?;
    }
    let _ = ONCE.set(());
    Ok(())
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

fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended with {st}"),
    }
}

/// The signals that cancel a fill rather than fail it.
const CANCELLING: [i32; 3] = [SIGINT, SIGTERM, SIGHUP];

/// The signal that cancelled a fill which ended with `st`: CMD died of
/// SIGINT, SIGTERM or SIGHUP, or `run` received one and passed it on before
/// CMD failed. `None` for a command that failed by itself.
fn cancelled_by(st: ExitStatus) -> Option<i32> {
    if st.success() {
        return None;
    }
    st.signal().filter(|sig| CANCELLING.contains(sig)).or(forward_state().received)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
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

/// Where signals go: the process `run` started, once it runs, and a signal
/// that arrived before that. One lock covers both, so a signal that races
/// with the start is delivered once, never lost.
struct Forward {
    target: Option<i32>,
    pending: Option<i32>,
    /// The last cancelling signal received while the current CMD ran.
    received: Option<i32>,
}

static FORWARD: Mutex<Forward> = Mutex::new(Forward { target: None, pending: None, received: None });

fn forward_state() -> std::sync::MutexGuard<'static, Forward> {
    FORWARD.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Runs CMD with `env` in its own process group, forwarding SIGINT, SIGTERM,
/// SIGHUP (and SIGCONT, for job control) to that group, and waits for CMD
/// and every process it started. The locks whose descriptors are `held`
/// stay held until the last of them is gone, even if this process is killed
/// first (on Linux; see `tree`).
fn spawn_and_wait(
    ctx: &Ctx,
    cmd: &[OsString],
    env: &[(&str, OsString)],
    held: &[BorrowedFd<'_>],
    fills: bool,
) -> io::Result<ExitStatus> {
    let program = cmd.first().ok_or_else(|| io::Error::other("no command given"))?;
    let mut launch = Launch::new(cmd, held)?;
    for (k, v) in env {
        launch.command.env(k, v);
    }
    let mut relay = None;
    if ctx.ui.json {
        // stdout is for JSON lines: CMD's output goes to stderr.
        launch.command.stdout(Stdio::from(io::stderr().as_fd().try_clone_to_owned()?));
    } else if fills && !io::stdout().is_terminal() {
        // A script reads the entry's path as the last line of stdout: pass
        // the fill's output on, noting whether it ended mid-line.
        let (reader, writer) = io::pipe()?;
        launch.command.stdout(writer);
        relay = Some(std::thread::spawn(move || relay_stdout(reader)));
    }
    forward_state().received = None;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCONT])?;
    watch_cancel()?;
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for sig in signals.forever() {
            let mut state = forward_state();
            if CANCELLING.contains(&sig) {
                state.received = Some(sig);
            }
            match state.target {
                Some(pid) => kill(pid, sig),
                None if sig != SIGCONT => state.pending = Some(sig),
                None => {}
            }
        }
    });
    let result = launch.spawn(program).and_then(|running| {
        let target = running.signal_target();
        {
            let mut state = forward_state();
            state.target = Some(target);
            if let Some(sig) = state.pending.take() {
                kill(target, sig);
            }
        }
        // The target is forgotten before its pid is reaped and may be reused.
        running.wait(|| forward_state().target = None)
    });
    handle.close();
    let _ = forwarder.join();
    // Every writer is gone once CMD's whole tree has: the relay ends.
    if let Some(relay) = relay {
        let _ = relay.join();
    }
    result
}

/// Whether the fill's output on stdout ended without a newline, so that the
/// entry's path must start a line of its own.
static MID_LINE: AtomicBool = AtomicBool::new(false);

/// Copies CMD's stdout to ours until every writer has closed it, and
/// records whether it ended mid-line.
fn relay_stdout(mut reader: io::PipeReader) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = io::stdout();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                MID_LINE.store(buf[n - 1] != b'\n', Ordering::Relaxed);
                // A closed stdout is CMD's to find out about; keep draining
                // so that CMD never blocks on a full pipe.
                let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
