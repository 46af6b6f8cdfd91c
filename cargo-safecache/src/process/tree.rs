//! This defines the process tree that `run` starts for CMD and keeps under
//! control: CMD in its own process group, signals forwarded to that group,
//! and, on Linux, a supervisor that ends every descendant of CMD before the
//! locks protecting them can be released.
//!
//! On Linux `run` does not start CMD itself. It forks a supervisor, without
//! a second exec (`supervisor`: the fork makes only async-signal-safe calls,
//! prepared before it), which:
//! - keeps `run`'s lock descriptors, stdio and its report pipe, and closes
//!   every other descriptor (CMD never gets the locks). A flock belongs to
//!   the open file description, so the locks stay held until the supervisor
//!   exits, even if `run` was SIGKILLed;
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
//! are waited for, with the locks held. /proc is read without the heap
//! (`procfs`).
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
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use super::kill;

/// The signal that tells the supervisor to kill CMD's whole tree (a fill
/// past `--fill-timeout`).
pub(crate) const KILL_TREE: i32 = libc::SIGUSR2;

/// A command ready to start: on Linux under the supervisor, on other Unixes
/// by itself. The caller adds environment and stdio.
pub(crate) struct Launch<'a> {
    cmd: &'a [OsString],
    held: &'a [BorrowedFd<'a>],
    env: Vec<(OsString, OsString)>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// A started [`Launch`].
pub(crate) struct Running {
    /// The supervisor on Linux, CMD elsewhere: our child, unreaped.
    pid: i32,
    /// The read end of the supervisor's report pipe.
    report: Option<OwnedFd>,
    /// Whether CMD has its own process group (always, except on other
    /// Unixes when `run` is in the terminal's foreground).
    own_group: bool,
    program: OsString,
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
pub(super) fn own_group_pre_exec(tty: Option<RawFd>, new_session: bool) -> io::Result<()> {
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
pub(super) fn no_terminal() -> bool {
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

/// Waits for our child `pid` to exit and reaps it.
fn reap(pid: i32) -> io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes into a local.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl<'a> Launch<'a> {
    /// Prepares to run `cmd` while the locks whose descriptors are `held`
    /// stay held by the process tree as long as any descendant lives (on
    /// Linux; elsewhere `held` is not used).
    pub(crate) fn new(cmd: &'a [OsString], held: &'a [BorrowedFd<'a>]) -> Launch<'a> {
        Launch { cmd, held, env: Vec::new(), stdout: None, stderr: None }
    }

    pub(crate) fn env(&mut self, key: &str, value: &OsString) {
        self.env.push((key.into(), value.clone()));
    }

    pub(crate) fn stdout(&mut self, fd: OwnedFd) {
        self.stdout = Some(fd);
    }

    pub(crate) fn stderr(&mut self, fd: OwnedFd) {
        self.stderr = Some(fd);
    }

    /// Starts it: forks the supervisor, which starts CMD.
    #[cfg(target_os = "linux")]
    pub(crate) fn spawn(self) -> io::Result<Running> {
        use std::os::fd::FromRawFd;

        let program = self.cmd.first().cloned().ok_or_else(|| io::Error::other("no command given"))?;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just returned these descriptors, owned by nobody else.
        let (report, report_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // `run` is a subreaper too: if the supervisor is killed, CMD's
        // orphaned descendants come to `run`, which ends them before it
        // releases its own copies of the locks (see `Running::wait`).
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
            return Err(io::Error::other(format!("cannot make `run` a subreaper: {}", io::Error::last_os_error())));
        }
        let plan = super::supervisor::Plan::new(
            self.cmd,
            &self.env,
            self.held.iter().map(AsRawFd::as_raw_fd).collect(),
            report_w.as_raw_fd(),
            self.stdout.as_ref().map(AsRawFd::as_raw_fd),
            self.stderr.as_ref().map(AsRawFd::as_raw_fd),
            foreground_tty(),
        )?;
        let pid = plan.start().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start the safecache supervisor for `{}`: {e}", Path::new(&program).display()),
            )
        })?;
        // Our copies of the write ends must go, or reading the report (and
        // CMD's output) would never see its end.
        drop((report_w, self.stdout, self.stderr));
        Ok(Running { pid, report: Some(report), own_group: true, program })
    }

    /// Starts CMD. Without a subreaper there is no way to keep locks held
    /// past `run`'s death.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn spawn(self) -> io::Result<Running> {
        use std::os::unix::process::CommandExt;

        let (program, rest) = self.cmd.split_first().ok_or_else(|| io::Error::other("no command given"))?;
        let mut command = std::process::Command::new(program);
        command.args(rest).envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(fd) = self.stdout {
            command.stdout(fd);
        }
        if let Some(fd) = self.stderr {
            command.stderr(fd);
        }
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
        let child = command
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start `{}`: {e}", Path::new(program).display())))?;
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        Ok(Running { pid, report: None, own_group, program: program.clone() })
    }
}

impl Running {
    /// Where `run` forwards signals: the supervisor, which passes them on to
    /// CMD's group; or, on other Unixes, CMD's group itself.
    pub(crate) fn signal_target(&self) -> i32 {
        if self.report.is_none() && self.own_group { -self.pid } else { self.pid }
    }

    /// Waits for CMD's tree to end and returns CMD's status. `exited` runs
    /// once the direct child has exited but before it is reaped, while its
    /// pid is still reserved: after it, nobody may signal that pid.
    pub(crate) fn wait(mut self, exited: impl FnOnce()) -> io::Result<ExitStatus> {
        let pid = self.pid;
        let waited = wait_exited_unreaped(pid);
        exited();
        waited?;
        if self.report.is_none() && self.own_group {
            // Without a supervisor, what is left of CMD's group goes with it.
            // The group id cannot have been reused: its leader is unreaped.
            kill(-pid, libc::SIGKILL);
        }
        let status = reap(pid)?;
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
            let finished = text.starts_with("status ") || text.starts_with("fail ");
            if let Some(cmd_pid) = cmd_pid.filter(|_| !finished) {
                super::supervisor::end_orphaned_group(cmd_pid);
            }
            super::supervisor::end_descendants();
        }
        read?;
        #[cfg(target_os = "linux")]
        return self.outcome(&text).unwrap_or(Ok(status));
        #[cfg(not(target_os = "linux"))]
        Ok(status)
    }

    #[cfg(target_os = "linux")]
    /// What the supervisor's last report line says: CMD's status, or why
    /// it could not run CMD; `None` when it ended before it said (a signal
    /// forwarded at its start killed it: its own status is the answer).
    fn outcome(&self, text: &str) -> Option<io::Result<ExitStatus>> {
        let bad = || io::Error::other(format!("bad supervisor report {text:?}"));
        let mut words = text.split_whitespace();
        match words.next()? {
            "status" => Some(words.next().and_then(|raw| raw.parse().ok()).map(ExitStatus::from_raw).ok_or_else(bad)),
            "fail" => {
                let errno = words.next().and_then(|e| e.parse::<i32>().ok());
                let stage = words.next().and_then(super::supervisor::Stage::parse);
                let (Some(errno), Some(stage)) = (errno, stage) else { return Some(Err(bad())) };
                Some(Err(failure(stage, errno, &self.program)))
            }
            _ => Some(Err(bad())),
        }
    }
}

/// The error `run` reports for a supervisor that failed at `stage`.
#[cfg(target_os = "linux")]
fn failure(stage: super::supervisor::Stage, errno: i32, program: &OsString) -> io::Error {
    use super::supervisor::Stage;
    let e = io::Error::from_raw_os_error(errno);
    let program = Path::new(program).display();
    let message = match stage {
        Stage::Subreaper => format!("cannot make the safecache supervisor a subreaper: {e}"),
        Stage::Fork | Stage::Exec => format!("cannot start `{program}`: {e}"),
        Stage::Died => "`run` died before the command ended".to_owned(),
    };
    io::Error::new(e.kind(), message)
}
