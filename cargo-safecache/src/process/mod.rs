//! This defines how a command runs under safecache's locks: the
//! supervisor and process tree (`tree`), spawning, signal forwarding and
//! output relaying, and the one `kill`.
//!
//! Invariants kept here:
//! - SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group (and
//!   SIGCONT, for job control); a signal that races with the start is
//!   delivered once, never lost;
//! - the locks whose descriptors a launch holds stay held until the last
//!   process CMD started is gone (see `tree`).

#[cfg(target_os = "linux")]
mod procfs;
mod reclaim;
#[cfg(target_os = "linux")]
mod supervisor;
mod tree;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::exit;

pub(crate) use reclaim::{reclaimer_main, spawn_reclaimer};
use tree::Launch;

/// Sends `sig` to `pid` (a process group when negative); a process that is
/// already gone is no error.
pub(crate) fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Set by SIGINT, SIGTERM and SIGHUP from the first time `run` handles
/// them (once CMD starts) until it exits: the core's hashing stops at its
/// next check, so a signal that comes after CMD has exited, while the fill
/// is being hashed for its manifest, stops `run` promptly with nothing
/// published. [`CANCEL_SIGNAL`] says which signal it was.
pub(crate) static CANCEL: std::sync::LazyLock<safecache::Cancel> = std::sync::LazyLock::new(safecache::Cancel::new);
pub(crate) static CANCEL_SIGNAL: std::sync::LazyLock<std::sync::Arc<std::sync::atomic::AtomicUsize>> =
    std::sync::LazyLock::new(Default::default);

/// Registers [`CANCEL`] for the signals `run` forwards, once: the handlers
/// stay for the life of the process, as signal-hook's do.
pub(crate) fn watch_cancel() -> io::Result<()> {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if ONCE.get().is_some() {
        return Ok(());
    }
    // From here on these signals cancel rather than end the process.
    crate::ui::SIGNALS_HANDLED.store(true, std::sync::atomic::Ordering::SeqCst);
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register_usize(sig, std::sync::Arc::clone(&CANCEL_SIGNAL), sig as usize)?;
        signal_hook::flag::register(sig, CANCEL.flag())?;
    }
    let _ = ONCE.set(());
    Ok(())
}

pub(crate) fn describe(st: ExitStatus) -> String {
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
pub(crate) fn cancelled_by(st: ExitStatus) -> Option<i32> {
    if st.success() {
        return None;
    }
    st.signal().filter(|sig| CANCELLING.contains(sig)).or(forward_state().received)
}

pub(crate) fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// CMD's status as `run`'s exit code: its own code, or 128+N for a death by
/// signal N.
pub(crate) fn code_of(st: ExitStatus) -> u8 {
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

/// Where CMD's stdout goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stdout {
    /// Ours: CMD's output is the command's output (`run -- CMD`, `use`).
    Inherit,
    /// Our stderr: stdout carries something else (the entry's path after a
    /// fill, or JSON lines).
    Stderr,
}

/// How CMD is to run.
pub(crate) struct Spawn<'a> {
    pub(crate) cmd: &'a [OsString],
    pub(crate) env: &'a [(&'a str, OsString)],
    /// The lock descriptors the supervisor holds for CMD's tree.
    pub(crate) held: &'a [BorrowedFd<'a>],
    pub(crate) stdout: Stdout,
    /// Kill CMD's whole tree once it has run this long (`--fill-timeout`).
    pub(crate) timeout: Option<Duration>,
    /// Where CMD's output is copied to as well (a fill's log): its stdout,
    /// and its stderr when ours is not a terminal (on a terminal CMD keeps
    /// it, for its progress bars), then go through a pipe that this process
    /// copies to its stderr and to `copy`. Implies [`Stdout::Stderr`].
    pub(crate) copy: Option<&'a mut (dyn Write + Send)>,
}

/// How CMD ended.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    /// Whether it was killed for running past its timeout.
    pub(crate) timed_out: bool,
}

/// Runs CMD with `env` in its own process group, forwarding SIGINT, SIGTERM,
/// SIGHUP (and SIGCONT, for job control) to that group, and waits for CMD
/// and every process it started. The locks whose descriptors are `held`
/// stay held until the last of them is gone, even if this process is killed
/// first (on Linux; see `tree`).
pub(crate) fn spawn_and_wait(mut spawn: Spawn<'_>) -> io::Result<Ended> {
    let copy = spawn.copy.take();
    let Some(copy) = copy else { return run_and_wait(&spawn, None) };
    let (reader, writer) = io::pipe()?;
    std::thread::scope(|scope| {
        // Ends when every process holding the pipe's write end has: CMD's
        // whole tree, and the launch's own copies once it has spawned.
        let relay = scope.spawn(move || relay(reader, copy));
        let ended = run_and_wait(&spawn, Some(writer));
        let _ = relay.join();
        ended
    })
}

/// Copies CMD's output to our stderr and to `copy` until every writer has
/// closed the pipe. A failing `copy` is dropped, never CMD's output.
fn relay(mut reader: io::PipeReader, copy: &mut (dyn Write + Send)) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut copying = true;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut err = io::stderr().lock();
                let _ = err.write_all(&buf[..n]).and_then(|()| err.flush());
                if copying && copy.write_all(&buf[..n]).and_then(|()| copy.flush()).is_err() {
                    copying = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// [`spawn_and_wait`], with CMD's output into `pipe` when given.
fn run_and_wait(spawn: &Spawn<'_>, pipe: Option<io::PipeWriter>) -> io::Result<Ended> {
    let mut launch = Launch::new(spawn.cmd, spawn.held);
    for (k, v) in spawn.env {
        launch.env(k, v);
    }
    match pipe {
        Some(pipe) => {
            if !io::stderr().is_terminal() {
                launch.stderr(pipe.try_clone()?.into());
            }
            launch.stdout(pipe.into());
        }
        None if spawn.stdout == Stdout::Stderr => {
            launch.stdout(io::stderr().as_fd().try_clone_to_owned()?);
        }
        None => {}
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
    let timed_out = Arc::new(AtomicBool::new(false));
    let (ended, ended_rx) = mpsc::channel::<()>();
    let result = launch.spawn().and_then(|running| {
        let target = running.signal_target();
        {
            let mut state = forward_state();
            state.target = Some(target);
            if let Some(sig) = state.pending.take() {
                kill(target, sig);
            }
        }
        let timer = spawn.timeout.map(|limit| {
            let timed_out = Arc::clone(&timed_out);
            std::thread::spawn(move || {
                if ended_rx.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
                    // Under the same lock as the forwarder: the target is
                    // still CMD's (or its supervisor's) until it is reaped.
                    let state = forward_state();
                    if let Some(pid) = state.target {
                        timed_out.store(true, Ordering::SeqCst);
                        // A group (no supervisor) is killed outright; a
                        // supervisor kills CMD's group, then the rest of
                        // its tree.
                        if pid < 0 { kill(pid, libc::SIGKILL) } else { kill(pid, tree::KILL_TREE) }
                    }
                }
            })
        });
        // The target is forgotten before its pid is reaped and may be reused.
        let status = running.wait(|| forward_state().target = None);
        drop(ended);
        if let Some(timer) = timer {
            let _ = timer.join();
        }
        status
    });
    handle.close();
    let _ = forwarder.join();
    result.map(|status| Ended { status, timed_out: timed_out.load(Ordering::SeqCst) })
}
