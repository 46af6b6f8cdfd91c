//! This defines the process tree that `run` starts for CMD and keeps under
//! control: CMD in its own process group, signals forwarded to that group,
//! and, on Linux, a supervisor that ends every descendant of CMD before the
//! locks protecting them can be released.
//!
//! On Linux `run` does not start CMD itself. It re-executes this binary as a
//! supervisor (`cargo-safecache __safecache-supervise ...`, handled by
//! [`supervisor_main`] before anything else in `main`), which:
//! - inherits `run`'s lock descriptors (and only it: CMD never gets them). A
//!   flock belongs to the open file description, so the locks stay held until
//!   the supervisor exits, even if `run` was SIGKILLed;
//! - is a child subreaper, so every orphaned descendant of CMD (a double
//!   fork, a `setsid`) is reparented to it instead of to init;
//! - learns of `run`'s death through `PR_SET_PDEATHSIG`;
//! - forwards the signals `run` forwards to it to CMD's process group;
//! - when CMD exits or `run` dies, SIGKILLs CMD's process group (while CMD
//!   is unreaped, so its id is still CMD's) and then every remaining
//!   descendant, and reaps them all, then exits, reporting CMD's wait status
//!   to `run` on a pipe.
//!
//! Any single process of the tree may be SIGKILLed: `run` (the supervisor
//! ends the tree, holding the locks meanwhile), CMD (the supervisor ends the
//! rest), or the supervisor itself: CMD dies with it (its parent-death
//! signal), and since `run` is a subreaper too, CMD's other descendants are
//! reparented to `run`, which ends them before it releases the locks.
//!
//! Descendants are found in /proc, which may belong to another pid
//! namespace than ours (a container that did not remount it): its pids are
//! then translated through `NSpid`, never signalled as they are. Where /proc
//! cannot tell at all, the group kill still ends CMD's group and the rest
//! are waited for, with the locks held; without /proc the supervisor is
//! started by `argv[0]` rather than /proc/self/exe.
//!
//! When none of stdin, stdout and stderr is a terminal, CMD's group is a new
//! session, so no process outside CMD's tree can join the group that
//! forwarded signals go to.
//!
//! Pid reuse: the supervisor only ever signals its own unreaped children
//! and CMD's process group while CMD is unreaped; `run` only signals the
//! supervisor while it is unreaped, and its own unreaped children. A pid
//! that has not been reaped cannot be reused, so no signal can reach an
//! unrelated process.
//!
//! On other Unixes there is no subreaper or parent-death signal: `run` starts
//! CMD directly in its own process group, forwards signals to the group and
//! SIGKILLs what is left of the group when CMD exits; a SIGKILLed `run`
//! leaves CMD running (docs/CLI.md says so).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};

use super::kill;

/// The signal that tells the supervisor to kill CMD's whole tree (a fill
/// past `--fill-timeout`).
pub(crate) const KILL_TREE: i32 = libc::SIGUSR2;

/// The hidden first argument that makes this binary a supervisor.
const SUPERVISE: &str = "__safecache-supervise";

/// A command ready to start: on Linux the supervisor (which starts CMD), on
/// other Unixes CMD itself. The caller adds environment and stdio.
pub(crate) struct Launch {
    pub(crate) command: Command,
    /// The read end of the supervisor's report pipe.
    report: Option<OwnedFd>,
    /// The write end, closed here once the supervisor has started.
    report_w: Option<OwnedFd>,
    /// Whether CMD gets its own process group (always, except on other
    /// Unixes when `run` is in the terminal's foreground).
    own_group: bool,
}

/// A started [`Launch`].
pub(crate) struct Running {
    child: Child,
    report: Option<OwnedFd>,
    own_group: bool,
}

/// The terminal on which `run` is in the foreground, if any: CMD's process
/// group must then become the foreground group, or CMD would be stopped by
/// SIGTTIN as soon as it reads the terminal.
fn foreground_tty() -> Option<RawFd> {
    // SAFETY: isatty, tcgetpgrp and getpgrp have no memory-safety
    // preconditions.
    [0, 2, 1].into_iter().find(|&fd| unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == libc::getpgrp() })
}

/// Makes the calling process the leader of a new process group and, given a
/// terminal, that terminal's foreground group; then unblocks every signal,
/// since the supervisor blocks the ones it waits for and a blocked mask
/// survives exec. Only async-signal-safe calls: this runs between fork and
/// exec.
///
/// With `new_session` (see [`no_terminal`]) the group is in a new session
/// of its own, so that no process outside CMD's tree can join it (`setpgid`
/// only joins a group of the caller's own session) and a signal to the
/// group reaches CMD's processes alone. On a terminal it stays in the
/// terminal's session, which job control needs (a background job that reads
/// the terminal must still be stopped); only the user's own processes in
/// that session could join it, and only on purpose.
fn own_group_pre_exec(tty: Option<RawFd>, new_session: bool) -> io::Result<()> {
    // SAFETY: setsid, setpgid, sigemptyset, sigaddset, pthread_sigmask,
    // tcsetpgrp and getpid are async-signal-safe and get valid pointers to
    // locals.
    unsafe {
        let grouped = if new_session { libc::setsid() } else { libc::setpgid(0, 0) };
        if grouped < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        if let Some(fd) = tty {
            // A background group that calls tcsetpgrp gets SIGTTOU unless it
            // blocks it.
            let mut ttou = set;
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, std::ptr::null_mut());
            libc::tcsetpgrp(fd, libc::getpid());
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// Whether none of stdin, stdout and stderr is a terminal: CMD's group can
/// then be a session of its own without changing anything CMD can see.
fn no_terminal() -> bool {
    // SAFETY: isatty has no memory-safety preconditions.
    (0..3).all(|fd| unsafe { libc::isatty(fd) } == 0)
}

/// Waits until `pid` (our child) has exited, without reaping it, so that its
/// pid cannot be reused while someone may still signal it.
fn wait_exited_unreaped(pid: i32) -> io::Result<()> {
    loop {
        // SAFETY: waitid writes into a zeroed siginfo_t we own.
        let r = unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// This very binary, to start as the supervisor: /proc/self/exe, which is
/// it even if its path was replaced or deleted since `run` started; where
/// /proc is not mounted (a container, a chroot), the path `run` was started
/// by, searched in `PATH` when it has no `/`.
#[cfg(target_os = "linux")]
pub(super) fn own_exe() -> io::Result<std::path::PathBuf> {
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

impl Launch {
    /// Prepares to run `cmd` while the locks whose descriptors are `held`
    /// stay held by the process tree as long as any descendant lives.
    #[cfg(target_os = "linux")]
    pub(crate) fn new(cmd: &[OsString], held: &[BorrowedFd<'_>]) -> io::Result<Launch> {
        use std::os::fd::{AsRawFd, FromRawFd};

        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these descriptors, owned by nobody else.
        let (report, report_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let tty = foreground_tty();
        // SAFETY: getpid and getpgrp have no preconditions.
        let (me, pgrp) = unsafe { (libc::getpid(), libc::getpgrp()) };
        // `run` is a subreaper too: if the supervisor is killed, CMD's
        // orphaned descendants come to `run`, which ends them before it
        // releases its own copies of the locks (see `Running::wait`).
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
            return Err(io::Error::other(format!("cannot make `run` a subreaper: {}", io::Error::last_os_error())));
        }
        let inherit: Vec<RawFd> = held.iter().map(AsRawFd::as_raw_fd).chain([report_w.as_raw_fd()]).collect();
        let list = held.iter().map(|fd| fd.as_raw_fd().to_string()).collect::<Vec<_>>().join(",");
        let mut command = Command::new(own_exe()?);
        command.arg0("cargo-safecache").arg(SUPERVISE).args([
            me.to_string(),
            pgrp.to_string(),
            tty.unwrap_or(-1).to_string(),
            report_w.as_raw_fd().to_string(),
            list,
            "--".to_owned(),
        ]);
        command.args(cmd);
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (fcntl, setpgid, getppid); `inherit` was
        // allocated before the fork and is only read.
        unsafe {
            command.pre_exec(move || {
                // Only the supervisor inherits the locks and the report pipe:
                // clearing FD_CLOEXEC here affects the forked child's
                // descriptor table alone.
                for &fd in &inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // The supervisor gets a process group of its own, so that a
                // signal to `run`'s whole group (a SIGKILL from a CI runner,
                // a Ctrl-C) does not reach it directly: `run` forwards what
                // it receives, and if `run` is killed the supervisor is left
                // to clean up.
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != me {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        Ok(Launch { command, report: Some(report), report_w: Some(report_w), own_group: true })
    }

    /// Prepares to run `cmd`. Without a subreaper there is no way to keep
    /// locks held past `run`'s death, so `held` is not used.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn new(cmd: &[OsString], _held: &[BorrowedFd<'_>]) -> io::Result<Launch> {
        let (program, rest) = cmd.split_first().ok_or_else(|| io::Error::other("no command given"))?;
        let mut command = Command::new(program);
        command.args(rest);
        // In the terminal's foreground CMD stays in `run`'s group, so that the
        // terminal's signals and job control reach it as they reach `run`:
        // without a supervisor nothing could relay a Ctrl-Z.
        let own_group = foreground_tty().is_none();
        if own_group {
            // SAFETY: the closure only makes async-signal-safe calls.
            unsafe {
                let new_session = no_terminal();
                command.pre_exec(move || own_group_pre_exec(None, new_session));
            }
        }
        Ok(Launch { command, report: None, report_w: None, own_group })
    }

    /// Starts it. `program` names CMD in errors.
    pub(crate) fn spawn(mut self, program: &OsString) -> io::Result<Running> {
        let child = self.command.spawn().map_err(|e| {
            let what = if self.report.is_some() { "the safecache supervisor for " } else { "" };
            io::Error::new(e.kind(), format!("cannot start {what}`{}`: {e}", Path::new(program).display()))
        })?;
        // Our copy of the write end must go, or reading the report would
        // never see its end.
        drop(self.report_w.take());
        Ok(Running { child, report: self.report, own_group: self.own_group })
    }
}

impl Running {
    /// Where `run` forwards signals: the supervisor, which passes them on to
    /// CMD's group; or, on other Unixes, CMD's group itself.
    pub(crate) fn signal_target(&self) -> i32 {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        if self.report.is_none() && self.own_group { -pid } else { pid }
    }

    /// Waits for CMD's tree to end and returns CMD's status. `exited` runs
    /// once the direct child has exited but before it is reaped, while its
    /// pid is still reserved: after it, nobody may signal that pid.
    pub(crate) fn wait(mut self, exited: impl FnOnce()) -> io::Result<ExitStatus> {
        let pid = i32::try_from(self.child.id()).unwrap_or(i32::MAX);
        let waited = wait_exited_unreaped(pid);
        exited();
        waited?;
        if self.report.is_none() && self.own_group {
            // Without a supervisor, what is left of CMD's group goes with it.
            // The group id cannot have been reused: its leader is unreaped.
            kill(-pid, libc::SIGKILL);
        }
        let status = self.child.wait()?;
        let Some(report) = self.report.take() else { return Ok(status) };
        let mut text = String::new();
        let read = File::from(report).read_to_string(&mut text);
        // The supervisor says CMD's pid first, then how CMD ended.
        let (cmd_pid, text) = match text.split_once('\n') {
            Some((first, rest)) if first.starts_with("pid ") => {
                (first.strip_prefix("pid ").and_then(|p| p.parse::<i32>().ok()), rest.to_owned())
            }
            _ => (None, text),
        };
        // A supervisor that was killed left CMD's descendants to this
        // subreaper: they end before the locks this process holds are
        // released. After a supervisor that finished, there are none.
        #[cfg(target_os = "linux")]
        {
            let finished = text.starts_with("status ") || text.starts_with("error ");
            if let Some(cmd_pid) = cmd_pid.filter(|_| !finished) {
                linux::end_orphaned_group(cmd_pid);
            }
            linux::end_descendants();
        }
        read?;
        match text.split_once(' ') {
            Some(("status", raw)) => {
                let raw =
                    raw.trim().parse().map_err(|_| io::Error::other(format!("bad supervisor report {text:?}")))?;
                Ok(ExitStatus::from_raw(raw))
            }
            Some(("error", message)) => Err(io::Error::other(message.trim_end().to_owned())),
            // The supervisor ended before it started CMD (a signal forwarded
            // at that moment killed it): its own status is the answer.
            _ => Ok(status),
        }
    }
}

/// If this process was started as a supervisor, runs it and returns its exit
/// code; otherwise returns `None` at once.
pub(crate) fn supervisor_main() -> Option<u8> {
    let mut args = std::env::args_os();
    args.next();
    if args.next()? != SUPERVISE {
        return None;
    }
    #[cfg(target_os = "linux")]
    {
        Some(linux::supervise(args.collect()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        eprintln!("error: {SUPERVISE} is only used on Linux");
        Some(crate::exit::FAILURE)
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;
    use std::fs::File;
    use std::io::{self, Write};
    use std::os::fd::{FromRawFd, RawFd};
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::Command;

    use super::{kill, no_terminal, own_group_pre_exec};

    /// What `run` passes on the supervisor's command line.
    struct Args {
        run_pid: i32,
        run_pgrp: i32,
        tty: Option<RawFd>,
        report: RawFd,
        held: Vec<RawFd>,
        cmd: Vec<OsString>,
    }

    fn parse(args: Vec<OsString>) -> Option<Args> {
        let mut it = args.into_iter();
        let mut num = || it.next()?.to_str()?.parse::<i32>().ok();
        let (run_pid, run_pgrp, tty, report) = (num()?, num()?, num()?, num()?);
        let held = it
            .next()?
            .to_str()?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<RawFd>().ok())
            .collect::<Option<Vec<_>>>();
        if it.next()? != "--" {
            return None;
        }
        let cmd: Vec<OsString> = it.collect();
        Some(Args { run_pid, run_pgrp, tty: (tty >= 0).then_some(tty), report, held: held?, cmd })
    }

    /// The signal that tells the supervisor `run` has died.
    const PARENT_DIED: i32 = libc::SIGUSR1;
    use crate::process::tree::KILL_TREE;

    /// The signals the supervisor handles, all blocked and taken
    /// synchronously with sigwaitinfo: it has a single thread and no signal
    /// handlers. SIGTTOU is only blocked, so that it may hand the terminal
    /// back from its background group.
    fn handled() -> libc::sigset_t {
        // SAFETY: the set is a local initialized by sigemptyset.
        unsafe {
            let mut set = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut set);
            for sig in [
                libc::SIGCHLD,
                libc::SIGINT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGCONT,
                PARENT_DIED,
                KILL_TREE,
                libc::SIGTTOU,
            ] {
                libc::sigaddset(&mut set, sig);
            }
            set
        }
    }

    fn getppid() -> i32 {
        // SAFETY: getppid has no preconditions.
        unsafe { libc::getppid() }
    }

    pub(super) fn supervise(args: Vec<OsString>) -> u8 {
        let Some(a) = parse(args) else {
            eprintln!("error: bad arguments for the safecache supervisor (it is started by `run`, not by hand)");
            return crate::exit::FAILURE;
        };
        let set = handled();
        // SAFETY: plain syscalls on a valid sigset; the descriptor checks
        // below make sure the report fd is open before it is owned.
        unsafe {
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED as libc::c_ulong);
            // `run` may have died before the line above took effect: then
            // nothing has started and there is nothing to clean up.
            if getppid() != a.run_pid || libc::fcntl(a.report, libc::F_GETFD) < 0 {
                return crate::exit::FAILURE;
            }
            for &fd in a.held.iter().chain([&a.report]) {
                // CMD must not inherit the locks: only this process holds
                // them for the tree.
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        // SAFETY: checked open above; `run` gave it to this process alone.
        let mut report = unsafe { File::from_raw_fd(a.report) };
        let outcome = run_tree(&a, &set, &mut report);
        // Our copies of the locks go before stdout and stderr close on exit:
        // whoever waits for this process to be gone through its output then
        // finds the locks free.
        for fd in &a.held {
            // SAFETY: these descriptors were handed to this process by `run`
            // and nothing else here uses them.
            unsafe { libc::close(*fd) };
        }
        let line = match outcome {
            Ok(status) => format!("status {status}"),
            Err(e) => format!("error {e}"),
        };
        // If `run` is gone nobody reads this, which is fine.
        let _ = report.write_all(line.as_bytes());
        crate::exit::OK
    }

    /// Starts CMD, relays signals until CMD exits or `run` dies, then ends
    /// and reaps every remaining descendant. Returns CMD's wait status.
    fn run_tree(a: &Args, set: &libc::sigset_t, report: &mut File) -> io::Result<i32> {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
            return Err(io::Error::other(format!(
                "cannot make the safecache supervisor a subreaper: {}",
                io::Error::last_os_error()
            )));
        }
        let (program, rest) = a.cmd.split_first().ok_or_else(|| io::Error::other("no command given"))?;
        let mut command = Command::new(program);
        command.args(rest);
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let tty = a.tty;
        let new_session = tty.is_none() && no_terminal();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls.
        unsafe {
            command.pre_exec(move || {
                // If this supervisor is SIGKILLed, CMD at least goes with it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != me {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                own_group_pre_exec(tty, new_session)
            });
        }
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", Path::new(program).display())));
        let cmd_pid = i32::try_from(child?.id()).unwrap_or(i32::MAX);
        // So that `run` can end CMD's group if this process is killed (CMD
        // is then reparented to `run`, which finds it unreaped). A pipe
        // write this small never blocks.
        let _ = report.write_all(format!("pid {cmd_pid}\n").as_bytes());
        let status = relay(a, set, cmd_pid);
        if status.is_none() {
            // `run` died: CMD is unreaped, so its group id is still its own.
            kill(-cmd_pid, libc::SIGKILL);
        }
        end_descendants();
        if let Some(fd) = a.tty {
            give_terminal(fd, cmd_pid, a.run_pgrp);
        }
        status.ok_or_else(|| io::Error::other("`run` died before the command ended"))
    }

    /// Hands the terminal from group `from` to group `to`, if `from` still
    /// has it (so it is never taken from a shell that took it back).
    fn give_terminal(fd: RawFd, from: i32, to: i32) {
        // SAFETY: tcgetpgrp/tcsetpgrp on a descriptor number; SIGTTOU is
        // blocked in this process.
        unsafe {
            if libc::tcgetpgrp(fd) == from {
                libc::tcsetpgrp(fd, to);
            }
        }
    }

    /// Passes signals on to CMD's group until CMD exits (its wait status) or
    /// `run` dies (`None`). While CMD is unreaped, its pid, which is its
    /// group's id, cannot be reused, so `kill(-cmd_pid)` reaches only its
    /// group.
    fn relay(a: &Args, set: &libc::sigset_t, cmd_pid: i32) -> Option<i32> {
        loop {
            if getppid() != a.run_pid {
                return None;
            }
            // SAFETY: sigwaitinfo gets a valid set and a null info pointer.
            let sig = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
            match sig {
                libc::SIGCHLD => {
                    if exited_unreaped(cmd_pid) {
                        // What is left of CMD's group goes with it, even where
                        // /proc cannot list it; its id is still CMD's.
                        kill(-cmd_pid, libc::SIGKILL);
                    }
                    if let Some(status) = reap(a, cmd_pid) {
                        return Some(status);
                    }
                }
                libc::SIGCONT => {
                    // `fg` after a relayed stop: CMD gets the terminal back if
                    // the shell gave it to `run`, and goes on.
                    if let Some(fd) = a.tty {
                        give_terminal(fd, a.run_pgrp, cmd_pid);
                    }
                    kill(-cmd_pid, libc::SIGCONT);
                }
                libc::SIGINT | libc::SIGTERM | libc::SIGHUP => kill(-cmd_pid, sig),
                // A fill past --fill-timeout: CMD's group dies now, and the
                // rest of its tree once CMD is reaped.
                KILL_TREE => kill(-cmd_pid, libc::SIGKILL),
                // PARENT_DIED, or an interrupted wait: the loop checks the
                // parent again.
                _ => {}
            }
        }
    }

    /// After the supervisor was killed: SIGKILLs CMD's process group, if CMD
    /// is this process's unreaped child (reparented here from the dead
    /// supervisor), so that its id is still CMD's. This ends the group even
    /// where /proc cannot list the processes in it.
    pub(super) fn end_orphaned_group(cmd_pid: i32) {
        // SAFETY: waitid writes into a zeroed siginfo_t we own; it fails with
        // ECHILD unless `cmd_pid` is our child, exited or not.
        let ours = unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, cmd_pid as libc::id_t, &mut info, flags) == 0
        };
        if ours {
            kill(-cmd_pid, libc::SIGKILL);
        }
    }

    /// Whether our child `pid` has exited and is not reaped yet.
    fn exited_unreaped(pid: i32) -> bool {
        // SAFETY: waitid writes into a zeroed siginfo_t we own; si_pid is
        // valid for a child that changed state, and 0 when none did.
        unsafe {
            let mut info = std::mem::zeroed::<libc::siginfo_t>();
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() == pid
        }
    }

    /// Reaps every exited child; returns CMD's wait status once it exited.
    /// When CMD is stopped by job control on the terminal, stops `run`'s
    /// group too and gives it the terminal, so the shell sees its job
    /// stopped and takes the terminal back.
    fn reap(a: &Args, cmd_pid: i32) -> Option<i32> {
        let flags = libc::WNOHANG | if a.tty.is_some() { libc::WUNTRACED } else { 0 };
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes into a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
            if pid <= 0 {
                return None;
            }
            if pid != cmd_pid {
                continue;
            }
            if libc::WIFSTOPPED(status) {
                if let Some(fd) = a.tty {
                    give_terminal(fd, cmd_pid, a.run_pgrp);
                }
                // `run` is alive (it is still our parent), so its group
                // exists and its id was not reused.
                if getppid() == a.run_pid {
                    kill(-a.run_pgrp, libc::SIGTSTP);
                }
                continue;
            }
            return Some(status);
        }
    }

    /// SIGKILLs and reaps every descendant. Each round kills this process's
    /// current children; their own children are then orphans, reparented to
    /// this subreaper, and become children for the next round. Only unreaped
    /// children are signalled, so no pid can have been reused. Where /proc
    /// cannot tell this process's children (no /proc, or another pid
    /// namespace's), it waits for each of them to exit instead: the locks
    /// stay held until the last one has.
    pub(super) fn end_descendants() {
        loop {
            let kids = children();
            for &pid in kids.iter().flatten() {
                kill(pid, libc::SIGKILL);
            }
            let mut status = 0;
            let flags = if kids.as_ref().is_some_and(Vec::is_empty) { libc::WNOHANG } else { 0 };
            // SAFETY: waitpid writes into a local.
            let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
            match pid {
                -1 => match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    _ => return, // ECHILD: nothing is left.
                },
                // A child exists that /proc did not list yet (the list is
                // read while processes fork and exit): look again.
                0 => std::thread::yield_now(),
                _ => {}
            }
        }
    }

    /// The `Pid:` and `NSpid:` lines of a /proc status file: the pid as the
    /// mounted /proc's namespace numbers it, and as each namespace from
    /// that one down to the process's own does.
    fn status_pids(path: &str) -> Option<(i32, Vec<i32>)> {
        let text = std::fs::read_to_string(path).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| rest.split_whitespace().filter_map(|p| p.parse::<i32>().ok()).collect::<Vec<_>>())
        };
        let pid = *field("Pid:")?.first()?;
        Some((pid, field("NSpid:").unwrap_or_default()))
    }

    /// This process's children, by their pids in this process's own pid
    /// namespace, or `None` if /proc cannot tell.
    ///
    /// The mounted /proc may belong to another pid namespace than this
    /// process's (a container that did not remount it: `unshare --pid
    /// --fork` without `--mount-proc`), and then numbers every process
    /// differently: signalling the pids it lists would reach other
    /// processes. So the pids it lists are translated through each child's
    /// `NSpid:` line, at this process's depth; if /proc does not show this
    /// process at all, or cannot be read, nothing is listed.
    pub(super) fn children() -> Option<Vec<i32>> {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let (shown, nspids) = status_pids("/proc/self/status")?;
        // Where in each NSpid list this namespace's pid is.
        let depth = match nspids.as_slice() {
            // /proc is this namespace's own.
            [] | [_] if shown == me => None,
            // /proc is an ancestor namespace's: the last pid is this one's.
            [.., last] if *last == me => Some(nspids.len() - 1),
            // /proc numbers this process otherwise, and says nothing to
            // translate with.
            _ => return None,
        };
        let listed = listed_children(shown)?;
        let Some(depth) = depth else { return Some(listed) };
        Some(
            listed
                .into_iter()
                .filter_map(|p| status_pids(&format!("/proc/{p}/status"))?.1.get(depth).copied())
                .collect(),
        )
    }

    /// The children of the process that /proc numbers `shown` (this one), as
    /// /proc numbers them: from /proc/self/task/*/children, or from a scan of
    /// /proc/*/stat where the kernel lacks that file.
    fn listed_children(shown: i32) -> Option<Vec<i32>> {
        let mut out = Vec::new();
        let listed = std::fs::read_dir("/proc/self/task").and_then(|tasks| {
            for task in tasks {
                let text = std::fs::read_to_string(task?.path().join("children"))?;
                out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
            Ok(())
        });
        if listed.is_ok() {
            return Some(out);
        }
        let procs = std::fs::read_dir("/proc").ok()?;
        Some(
            procs
                .filter_map(|p| p.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    // The parent is the second field after the command name,
                    // which is in parentheses and may itself contain any byte.
                    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
                    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
                    after.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok()) == Some(shown)
                })
                .collect(),
        )
    }
}
