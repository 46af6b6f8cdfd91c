//! This defines the detached reclaimer: `rm` and `clean` return once their
//! renames aside are durable, and start this binary again, as
//! `cargo-safecache __safecache-reclaim DIR [--allow-untrusted]`, to delete
//! the trash (`Cache::reclaim`) after they have exited.
//!
//! Invariants:
//! - Detached: its own session (no terminal, no signal to the caller's
//!   process group reaches it), stdio on `/dev/null` (a caller reading
//!   `rm`'s output sees its end when `rm` exits), nothing inherited but the
//!   environment; it is not killed when the caller exits.
//! - It holds no lease and no entry lock, so it makes nobody wait; killed,
//!   it leaves trash that the next reclaimer or gc finishes.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// The hidden first argument that makes this binary a reclaimer.
const RECLAIM: &str = "__safecache-reclaim";

/// Starts a detached reclaimer of the cache at `cache_dir`, and does not
/// wait for it.
pub(crate) fn spawn_reclaimer(cache_dir: &Path, allow_untrusted: bool) -> io::Result<()> {
    let mut command = Command::new(own_exe()?);
    command.arg0("cargo-safecache").arg(RECLAIM).arg(cache_dir);
    if allow_untrusted {
        command.arg("--allow-untrusted");
    }
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (setsid, sigemptyset, pthread_sigmask).
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    // Not waited for: the caller exits soon, and the reclaimer is
    // reparented.
    drop(command.spawn()?);
    Ok(())
}

/// This very binary, to start as the reclaimer: /proc/self/exe, which is it
/// even if its path was replaced or deleted since it started; where /proc
/// is not mounted (a container, a chroot), the path it was started by,
/// searched in `PATH` when it has no `/`.
fn own_exe() -> io::Result<std::path::PathBuf> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe.to_owned());
    }
    let unknown = || io::Error::other("cannot find this program's own executable: /proc is not mounted");
    let argv0 = std::path::PathBuf::from(std::env::args_os().next().ok_or_else(unknown)?);
    if argv0.components().count() > 1 {
        return Ok(argv0);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(&argv0)).find(|p| p.is_file()).ok_or_else(unknown)
}

/// If this process was started as a reclaimer, reclaims the trash and
/// returns its exit code; otherwise returns `None` at once.
pub(crate) fn reclaimer_main() -> Option<u8> {
    let mut args = std::env::args_os();
    args.next();
    if args.next()? != RECLAIM {
        return None;
    }
    let Some(dir) = args.next() else { return Some(crate::exit::USAGE) };
    let allow_untrusted = args.next().is_some_and(|a| a == "--allow-untrusted");
    let options = safecache::Options { allow_untrusted, ..safecache::Options::default() };
    let Ok(cache) = safecache::Cache::open_ambient(&dir, options) else { return Some(crate::exit::FAILURE) };
    match cache.reclaim(false) {
        Ok(report) if report.failures.is_empty() => Some(crate::exit::OK),
        _ => Some(crate::exit::FAILURE),
    }
}
