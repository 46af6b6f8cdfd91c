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

mod tree;

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGCONT, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::exit;

use tree::Launch;
pub(crate) use tree::supervisor_main;

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

/// Runs CMD with `env` in its own process group, forwarding SIGINT, SIGTERM,
/// SIGHUP (and SIGCONT, for job control) to that group, and waits for CMD
/// and every process it started. The locks whose descriptors are `held`
/// stay held until the last of them is gone, even if this process is killed
/// first (on Linux; see `tree`).
pub(crate) fn spawn_and_wait(
    json: bool,
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
    if json {
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
pub(crate) static MID_LINE: AtomicBool = AtomicBool::new(false);

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
