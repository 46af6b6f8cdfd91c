//! This defines the supervisor on Linux: a fork of `run`, without a second
//! exec, that starts CMD and keeps its tree under control (see `tree` for
//! what it guarantees).
//!
//! `run` has other threads when it forks (the signal forwarder, the output
//! relay), and any of them may have held the allocator's lock or a std lock
//! at that moment. So the fork runs no code that allocates, locks or uses
//! std's I/O: everything it needs (CMD's argv and environment, the
//! descriptors to keep, the signal set) is prepared in a [`Plan`] before
//! the fork, and the fork makes only async-signal-safe system calls, with
//! paths and report lines built on the stack, until it `_exit`s.
//!
//! It reports to `run` on a pipe, one line each: `pid N` (written by CMD
//! itself, before its exec), then `status N` (CMD's wait status) or `fail ERRNO STAGE` when a step
//! failed (`Stage`), which `run` turns into its error.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

use core::ffi::c_char;
use core::fmt::Write as _;

use super::kill;
use super::procfs::{StackStr, errno, for_each_child};
use super::tree::{KILL_TREE, no_terminal, own_group_pre_exec};

/// The signal that tells the supervisor `run` has died.
const PARENT_DIED: i32 = libc::SIGUSR1;

/// What went wrong in the supervisor, as it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// It could not become a child subreaper.
    Subreaper,
    /// It could not fork CMD.
    Fork,
    /// CMD could not be executed (not found, not executable...).
    Exec,
    /// `run` died before CMD ended.
    Died,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Subreaper, Stage::Fork, Stage::Exec, Stage::Died];

    fn name(self) -> &'static str {
        match self {
            Stage::Subreaper => "subreaper",
            Stage::Fork => "fork",
            Stage::Exec => "exec",
            Stage::Died => "died",
        }
    }

    pub(super) fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

unsafe extern "C" {
    /// The process's environment, which execvp searches `PATH` in and
    /// passes on.
    static mut environ: *const *const c_char;
}

/// Everything the fork needs, made before it.
pub(super) struct Plan {
    run_pid: i32,
    run_pgrp: i32,
    tty: Option<RawFd>,
    /// The write end of the report pipe.
    report: RawFd,
    /// The descriptors that hold `run`'s locks.
    held: Vec<RawFd>,
    /// What CMD's stdout and stderr become, if not `run`'s.
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    /// Every descriptor the supervisor keeps, sorted: stdio, `held` and
    /// `report`.
    keep: Vec<RawFd>,
    /// CMD's arguments and environment; the pointer arrays are
    /// NULL-terminated and point into the strings.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    handled: libc::sigset_t,
}

fn c_string(s: &std::ffi::OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{:?} contains a NUL byte, which no command can take", s))
    })
}

fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
}

impl Plan {
    pub(super) fn new(
        cmd: &[OsString],
        env: &[(OsString, OsString)],
        held: Vec<RawFd>,
        report: RawFd,
        stdout: Option<RawFd>,
        stderr: Option<RawFd>,
        tty: Option<RawFd>,
    ) -> io::Result<Plan> {
        let argv = cmd.iter().map(|a| c_string(a)).collect::<io::Result<Vec<_>>>()?;
        if argv.is_empty() {
            return Err(io::Error::other("no command given"));
        }
        // The environment `run` has, with `env` set over it, as
        // Command::env does.
        let mut vars: Vec<(OsString, OsString)> =
            std::env::vars_os().filter(|(k, _)| !env.iter().any(|(set, _)| set == k)).collect();
        vars.extend(env.iter().cloned());
        let envp = vars
            .iter()
            .map(|(k, v)| {
                let mut kv = k.clone();
                kv.push("=");
                kv.push(v);
                c_string(&kv)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut keep: Vec<RawFd> = [0, 1, 2, report].into_iter().chain(held.iter().copied()).collect();
        keep.sort_unstable();
        keep.dedup();
        // SAFETY: getpid and getpgrp have no preconditions.
        let (run_pid, run_pgrp) = unsafe { (libc::getpid(), libc::getpgrp()) };
        Ok(Plan {
            run_pid,
            run_pgrp,
            tty,
            report,
            held,
            stdout,
            stderr,
            keep,
            argv_ptrs: pointers(&argv),
            _argv: argv,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            handled: handled(),
        })
    }

    /// Forks the supervisor and returns its pid. No signal is delivered to
    /// the fork before it has set its own mask: every signal is blocked in
    /// the calling thread around the fork.
    pub(super) fn start(&self) -> io::Result<i32> {
        // SAFETY: sigfillset and pthread_sigmask get valid pointers to
        // locals; the child of fork runs `supervise`, which only makes
        // async-signal-safe calls and never returns.
        unsafe {
            let mut all = std::mem::zeroed::<libc::sigset_t>();
            let mut old = std::mem::zeroed::<libc::sigset_t>();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::fork();
            if pid == 0 {
                supervise(self);
            }
            let forked = if pid < 0 { Err(io::Error::last_os_error()) } else { Ok(pid) };
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            forked
        }
    }
}

/// The signals the supervisor handles, all blocked and taken synchronously
/// with sigwaitinfo: it has a single thread, and the handlers it inherited
/// never run. SIGTTOU is only blocked, so that it may hand the terminal back
/// from its background group.
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

fn exit(code: u8) -> ! {
    // SAFETY: _exit ends the process at once, running nothing of `run`'s
    // (no atexit handler, no flush of buffers copied from `run`).
    unsafe { libc::_exit(i32::from(code)) }
}

/// Writes all of `line` to `fd`; a reader that is gone is no error.
fn write_all(fd: RawFd, mut line: &[u8]) {
    while !line.is_empty() {
        // SAFETY: writes from a valid slice.
        let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => line = &line[n..],
            _ if errno() == libc::EINTR => {}
            _ => return,
        }
    }
}

/// Closes every descriptor but the sorted `keep`: by close_range(2) between
/// them, or one by one up to the descriptor limit where the kernel lacks
/// it (before Linux 5.9).
fn close_all_but(keep: &[RawFd]) {
    let mut from: u32 = 0;
    for next in keep.iter().map(|&fd| fd as u32).chain([u32::MAX]) {
        if next > from {
            // SAFETY: closes descriptors of this process only.
            let r = unsafe { libc::syscall(libc::SYS_close_range, from, next - 1, 0) };
            if r != 0 {
                // SAFETY: getrlimit writes into a local; close takes any
                // number.
                unsafe {
                    let mut lim = std::mem::zeroed::<libc::rlimit>();
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                    let top = lim.rlim_cur.min(1 << 20).min(u64::from(next)) as u32;
                    for fd in from..top {
                        libc::close(fd as i32);
                    }
                }
            }
        }
        from = next.saturating_add(1);
    }
}

/// The supervisor: never returns.
fn supervise(plan: &Plan) -> ! {
    // SAFETY: plain system calls on descriptors and sets the plan made
    // before the fork; nothing here allocates or locks.
    unsafe {
        // A process group of its own, so that a signal to `run`'s whole
        // group (a CI runner's SIGKILL, a Ctrl-C) does not reach it: `run`
        // forwards what it receives, and if `run` is killed the supervisor
        // is left to clean up.
        if libc::setpgid(0, 0) != 0 {
            exit(crate::exit::FAILURE);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &plan.handled, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DIED as libc::c_ulong);
        // `run` may have died before the line above took effect: then
        // nothing has started and there is nothing to clean up.
        if getppid() != plan.run_pid {
            exit(crate::exit::FAILURE);
        }
        for (fd, target) in [(plan.stdout, 1), (plan.stderr, 2)] {
            if let Some(fd) = fd {
                libc::dup2(fd, target);
            }
        }
        // Nothing of `run`'s but stdio, the locks and the report pipe:
        // a copy of any other lock `run` holds would outlive its release.
        close_all_but(&plan.keep);
        for &fd in plan.held.iter().chain([&plan.report]) {
            // CMD must not inherit the locks: only this process holds them
            // for the tree.
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    let outcome = run_tree(plan);
    // Our copies of the locks go before stdout and stderr close on exit:
    // whoever waits for this process to be gone through its output then
    // finds the locks free.
    for &fd in &plan.held {
        // SAFETY: these descriptors are this process's copies, used by
        // nothing else.
        unsafe { libc::close(fd) };
    }
    let mut line = StackStr::<64>::new();
    let _ = match outcome {
        Ok(status) => write!(line, "status {status}"),
        Err((stage, e)) => write!(line, "fail {e} {}", stage.name()),
    };
    // If `run` is gone nobody reads this, which is fine.
    write_all(plan.report, line.as_bytes());
    exit(crate::exit::OK)
}

/// Starts CMD, relays signals until CMD exits or `run` dies, then ends and
/// reaps every remaining descendant. Returns CMD's wait status.
fn run_tree(plan: &Plan) -> Result<i32, (Stage, i32)> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) } != 0 {
        return Err((Stage::Subreaper, errno()));
    }
    // CMD's group is a session of its own when none of its stdin, stdout
    // and stderr (which are this process's by now) is a terminal.
    let new_session = plan.tty.is_none() && no_terminal();
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err((Stage::Fork, errno()));
    }
    // SAFETY: getpid and fork have no preconditions; the child only makes
    // async-signal-safe calls and never returns.
    let cmd_pid = unsafe {
        let me = libc::getpid();
        let pid = libc::fork();
        if pid == 0 {
            libc::close(pipe[0]);
            exec_cmd(plan, me, pipe[1], new_session);
        }
        libc::close(pipe[1]);
        pid
    };
    if cmd_pid < 0 {
        let e = errno();
        // SAFETY: closes our own read end.
        unsafe { libc::close(pipe[0]) };
        return Err((Stage::Fork, e));
    }
    // CMD has reported its pid to `run` itself, before anything else (see
    // `exec_cmd`). It writes its errno here if it cannot be executed; the
    // pipe closes on a successful exec.
    let mut failed = [0u8; 4];
    let mut got = 0;
    while got < failed.len() {
        // SAFETY: reads into the rest of a local buffer.
        let n = unsafe { libc::read(pipe[0], failed[got..].as_mut_ptr().cast(), failed.len() - got) };
        match usize::try_from(n) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) if errno() == libc::EINTR => {}
            Err(_) => break,
        }
    }
    // SAFETY: closes our own read end.
    unsafe { libc::close(pipe[0]) };
    if got == failed.len() {
        let mut status = 0;
        // SAFETY: reaps our own child, which has exited or is about to.
        unsafe { libc::waitpid(cmd_pid, &mut status, 0) };
        return Err((Stage::Exec, i32::from_ne_bytes(failed)));
    }
    let status = relay(plan, cmd_pid);
    if status.is_none() {
        // `run` died: CMD is unreaped, so its group id is still its own.
        kill(-cmd_pid, libc::SIGKILL);
    }
    end_descendants();
    if let Some(fd) = plan.tty {
        give_terminal(fd, cmd_pid, plan.run_pgrp);
    }
    status.ok_or((Stage::Died, 0))
}

/// CMD, between the fork and its exec: never returns.
fn exec_cmd(plan: &Plan, supervisor: i32, failed: RawFd, new_session: bool) -> ! {
    // SAFETY: async-signal-safe calls on locals and on the plan's arrays,
    // which are NULL-terminated and point into strings alive in this copy
    // of the process.
    unsafe {
        let fail = |e: i32| -> ! {
            write_all(failed, &e.to_ne_bytes());
            exit(127)
        };
        // First of all, CMD tells `run` its pid, so that `run` can end
        // CMD's group if the supervisor is killed (CMD is then reparented
        // to `run`, which finds it unreaped): written here, before CMD can
        // start anything, rather than by the supervisor, which may not be
        // scheduled again before it is killed. A pipe write this small is
        // atomic and never blocks; the supervisor writes nothing until CMD
        // has ended.
        let mut line = StackStr::<32>::new();
        let _ = writeln!(line, "pid {}", libc::getpid());
        write_all(plan.report, line.as_bytes());
        // If the supervisor is SIGKILLed, CMD at least goes with it.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            fail(errno());
        }
        if getppid() != supervisor {
            fail(libc::ESRCH);
        }
        // Handlers `run` installed would run here once signals are
        // unblocked: they go back to the default, as exec would make them.
        // Ignored signals stay ignored, except SIGPIPE, which Rust ignores
        // for itself and CMD gets as the default.
        for sig in 1..libc::SIGRTMAX() {
            let mut old = std::mem::zeroed::<libc::sigaction>();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (sig == libc::SIGPIPE || (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN))
            {
                let mut dfl = std::mem::zeroed::<libc::sigaction>();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        if let Err(e) = own_group_pre_exec(plan.tty, new_session) {
            fail(e.raw_os_error().unwrap_or(libc::EINVAL));
        }
        environ = plan.envp_ptrs.as_ptr();
        libc::execvp(plan.argv_ptrs[0], plan.argv_ptrs.as_ptr());
        fail(errno())
    }
}

/// Hands the terminal from group `from` to group `to`, if `from` still has
/// it (so it is never taken from a shell that took it back).
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
/// group's id, cannot be reused, so `kill(-cmd_pid)` reaches only its group.
fn relay(plan: &Plan, cmd_pid: i32) -> Option<i32> {
    loop {
        if getppid() != plan.run_pid {
            return None;
        }
        // SAFETY: sigwaitinfo gets a valid set and a null info pointer.
        let sig = unsafe { libc::sigwaitinfo(&plan.handled, std::ptr::null_mut()) };
        match sig {
            libc::SIGCHLD => {
                if exited_unreaped(cmd_pid) {
                    // What is left of CMD's group goes with it, even where
                    // /proc cannot list it; its id is still CMD's.
                    kill(-cmd_pid, libc::SIGKILL);
                }
                if let Some(status) = reap(plan, cmd_pid) {
                    return Some(status);
                }
            }
            libc::SIGCONT => {
                // `fg` after a relayed stop: CMD gets the terminal back if
                // the shell gave it to `run`, and goes on.
                if let Some(fd) = plan.tty {
                    give_terminal(fd, plan.run_pgrp, cmd_pid);
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

/// After the supervisor was killed: SIGKILLs CMD's process group, if CMD is
/// this process's unreaped child (reparented here from the dead supervisor),
/// so that its id is still CMD's. This ends the group even where /proc
/// cannot list the processes in it.
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
    // SAFETY: waitid writes into a zeroed siginfo_t we own; si_pid is valid
    // for a child that changed state, and 0 when none did.
    unsafe {
        let mut info = std::mem::zeroed::<libc::siginfo_t>();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) == 0 && info.si_pid() == pid
    }
}

/// Reaps every exited child; returns CMD's wait status once it exited. When
/// CMD is stopped by job control on the terminal, stops `run`'s group too
/// and gives it the terminal, so the shell sees its job stopped and takes
/// the terminal back.
fn reap(plan: &Plan, cmd_pid: i32) -> Option<i32> {
    let flags = libc::WNOHANG | if plan.tty.is_some() { libc::WUNTRACED } else { 0 };
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
            if let Some(fd) = plan.tty {
                give_terminal(fd, cmd_pid, plan.run_pgrp);
            }
            // `run` is alive (it is still our parent), so its group exists
            // and its id was not reused.
            if getppid() == plan.run_pid {
                kill(-plan.run_pgrp, libc::SIGTSTP);
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
/// namespace's), it waits for each of them to exit instead: the locks stay
/// held until the last one has. Makes only async-signal-safe calls.
pub(super) fn end_descendants() {
    loop {
        let mut listed = 0usize;
        let known = for_each_child(|pid| {
            kill(pid, libc::SIGKILL);
            listed += 1;
        });
        let mut status = 0;
        let flags = if known && listed == 0 { libc::WNOHANG } else { 0 };
        // SAFETY: waitpid writes into a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        match pid {
            -1 => match errno() {
                libc::EINTR => {}
                _ => return, // ECHILD: nothing is left.
            },
            // A child exists that /proc did not list yet (the list is read
            // while processes fork and exit): look again.
            // SAFETY: sched_yield has no preconditions.
            0 => unsafe {
                libc::sched_yield();
            },
            _ => {}
        }
    }
}
