//! This defines how the process tree reads /proc without the heap: the
//! supervisor is a fork of `run`, which has other threads, so until it
//! exits it may only make async-signal-safe calls (another thread may have
//! held the allocator's or a std lock at the fork). Every path is built and
//! every file read in fixed buffers on the stack, through raw open, read,
//! getdents64 and close.
//!
//! Invariants:
//! - Nothing here allocates, takes a lock or touches std's I/O.
//! - Input is untrusted: a field longer than its buffer is skipped, never
//!   cut into a wrong number; a number that does not parse is no pid.

use core::ffi::c_char;
use core::fmt::{self, Write};
use core::ops::ControlFlow;

/// A path built on the stack, NUL-terminated for open(2).
pub(super) struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    pub(super) const fn new() -> Self {
        StackStr { buf: [0; N], len: 0 }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text as a C string, or `None` if it and its NUL do not fit.
    fn c_str(&mut self) -> Option<*const c_char> {
        if self.len >= N || self.buf[..self.len].contains(&0) {
            return None;
        }
        self.buf[self.len] = 0;
        Some(self.buf.as_ptr().cast())
    }
}

impl<const N: usize> Write for StackStr<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).filter(|&end| end <= N).ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A path such as `/proc/1234/status`, built on the stack.
fn path(args: fmt::Arguments<'_>) -> Option<StackStr<64>> {
    let mut p = StackStr::new();
    p.write_fmt(args).ok()?;
    Some(p)
}

/// An open descriptor, closed when dropped.
struct Fd(i32);

impl Fd {
    fn open(path: &mut StackStr<64>, flags: i32) -> Option<Fd> {
        let p = path.c_str()?;
        // SAFETY: `p` is a NUL-terminated string in `path`, alive for the call.
        let fd = unsafe { libc::open(p, flags | libc::O_RDONLY | libc::O_CLOEXEC) };
        (fd >= 0).then_some(Fd(fd))
    }

    /// read(2), retried when interrupted; `None` on an error.
    fn read(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if let Ok(n) = usize::try_from(n) {
                return Some(n);
            }
            if errno() != libc::EINTR {
                return None;
            }
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was opened by `Fd::open` and is closed once.
        unsafe { libc::close(self.0) };
    }
}

pub(super) fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Calls `each` with every field of the file at `path`, fields being
/// separated by the bytes `sep` accepts, until it breaks. A field longer
/// than the buffer is skipped. Returns whether the whole file could be read.
fn for_each_field(
    path: &mut StackStr<64>,
    sep: fn(u8) -> bool,
    mut each: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> bool {
    let Some(fd) = Fd::open(path, 0) else { return false };
    let mut buf = [0u8; 4096];
    let (mut have, mut skipping) = (0, false);
    loop {
        let Some(n) = fd.read(&mut buf[have..]) else { return false };
        if n == 0 {
            if have > 0 && !skipping {
                let _ = each(&buf[..have]);
            }
            return true;
        }
        have += n;
        let mut start = 0;
        while let Some(at) = buf[start..have].iter().position(|&b| sep(b)) {
            if skipping {
                skipping = false;
            } else if each(&buf[start..start + at]).is_break() {
                return true;
            }
            start += at + 1;
        }
        buf.copy_within(start..have, 0);
        have -= start;
        if have == buf.len() {
            // One field fills the whole buffer: it is dropped, up to its end.
            (have, skipping) = (0, true);
        }
    }
}

/// Calls `each` with the name of every entry of the directory at `path`;
/// returns whether it could be listed whole.
fn for_each_entry(path: &mut StackStr<64>, mut each: impl FnMut(&[u8])) -> bool {
    let Some(fd) = Fd::open(path, libc::O_DIRECTORY) else { return false };
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.0, buf.as_mut_ptr(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        };
        if n == 0 {
            return true;
        }
        // Each record: inode (8 bytes), offset (8), its length (2), type
        // (1), then the NUL-terminated name.
        let mut at = 0;
        while let Some(rec) = buf.get(at..n).filter(|r| r.len() >= 19) {
            let len = usize::from(u16::from_ne_bytes([rec[16], rec[17]]));
            let Some(name) = rec.get(19..len) else { return false };
            each(name.split(|&b| b == 0).next().unwrap_or_default());
            at += len.max(1);
        }
    }
}

fn parse_i32(field: &[u8]) -> Option<i32> {
    core::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// The deepest pid-namespace nesting Linux allows, plus one.
const MAX_DEPTH: usize = 33;

/// The `Pid:` and `NSpid:` lines of a /proc status file: the pid as the
/// mounted /proc's namespace numbers it, and as each namespace from that one
/// down to the process's own does.
fn status_pids(mut path: StackStr<64>) -> Option<(i32, [i32; MAX_DEPTH], usize)> {
    let (mut pid, mut ns, mut depth) = (None, [0; MAX_DEPTH], 0);
    let read = for_each_field(
        &mut path,
        |b| b == b'\n',
        |line| {
            if let Some(rest) = line.strip_prefix(b"Pid:") {
                pid = parse_i32(rest);
            } else if let Some(rest) = line.strip_prefix(b"NSpid:") {
                for p in rest.split(|b| b.is_ascii_whitespace()).filter_map(parse_i32) {
                    if depth == MAX_DEPTH {
                        break;
                    }
                    ns[depth] = p;
                    depth += 1;
                }
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    );
    read.then_some(())?;
    Some((pid?, ns, depth))
}

/// Calls `each` with every child of this process, by its pid in this
/// process's own pid namespace; returns `false` if /proc cannot tell (some
/// may have been passed to `each` by then).
///
/// The mounted /proc may belong to another pid namespace than this
/// process's (a container that did not remount it: `unshare --pid --fork`
/// without `--mount-proc`), and then numbers every process differently:
/// signalling the pids it lists would reach other processes. So the pids
/// it lists are translated through each child's `NSpid:` line, at this
/// process's depth; if /proc does not show this process at all, or cannot
/// be read, nothing is passed on.
pub(super) fn for_each_child(mut each: impl FnMut(i32)) -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let Some(own) = path(format_args!("/proc/self/status")) else { return false };
    let Some((shown, nspids, depth)) = status_pids(own) else { return false };
    // Where in each NSpid list this namespace's pid is.
    let at = match &nspids[..depth] {
        // /proc is this namespace's own.
        [] | [_] if shown == me => None,
        // /proc is an ancestor namespace's: the last pid is this one's.
        [.., last] if *last == me => Some(depth - 1),
        // /proc numbers this process otherwise, and says nothing to
        // translate with.
        _ => return false,
    };
    let mut emit = |listed: i32| match at {
        None => each(listed),
        Some(at) => {
            let status = path(format_args!("/proc/{listed}/status"));
            if let Some((_, ns, depth)) = status.and_then(status_pids)
                && at < depth
            {
                each(ns[at]);
            }
        }
    };
    listed_children(shown, &mut emit)
}

/// Passes the children of the process that /proc numbers `shown` (this
/// one), as /proc numbers them: from /proc/self/task/*/children, or from a
/// scan of /proc/*/stat where the kernel lacks that file.
fn listed_children(shown: i32, emit: &mut impl FnMut(i32)) -> bool {
    let Some(mut tasks) = path(format_args!("/proc/self/task")) else { return false };
    let mut whole = true;
    let listed = for_each_entry(&mut tasks, |tid| {
        let Some(tid) = parse_i32(tid) else { return };
        let Some(mut children) = path(format_args!("/proc/self/task/{tid}/children")) else {
            whole = false;
            return;
        };
        whole &= for_each_field(
            &mut children,
            |b| b.is_ascii_whitespace(),
            |pid| {
                if let Some(pid) = parse_i32(pid) {
                    emit(pid);
                }
                ControlFlow::Continue(())
            },
        );
    });
    if listed && whole {
        return true;
    }
    let Some(mut all) = path(format_args!("/proc")) else { return false };
    for_each_entry(&mut all, |name| {
        let Some(pid) = parse_i32(name) else { return };
        let Some(mut stat) = path(format_args!("/proc/{pid}/stat")) else { return };
        // The parent is the second field after the command name, which is
        // in parentheses and may itself contain any byte: the file is one
        // line, read whole.
        let mut line = [0u8; 4096];
        let Some(fd) = Fd::open(&mut stat, 0) else { return };
        let Some(n) = fd.read(&mut line) else { return };
        let Some(close) = line[..n].iter().rposition(|&b| b == b')') else { return };
        let parent = line[close + 1..n].split(|b| b.is_ascii_whitespace()).filter(|f| !f.is_empty()).nth(1);
        if parent.and_then(parse_i32) == Some(shown) {
            emit(pid);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_path_refuses_what_does_not_fit() {
        assert!(path(format_args!("/proc/{}/status", i32::MAX)).is_some());
        assert!(path(format_args!("/{}", "x".repeat(80))).is_none());
        let mut full = StackStr::<4>::new();
        full.write_str("abcd").unwrap_or_default();
        assert_eq!(full.as_bytes(), b"abcd");
        assert!(full.c_str().is_none(), "no room for the NUL");
    }

    #[test]
    fn this_process_reads_its_own_pids_and_children() {
        let own = path(format_args!("/proc/self/status")).map(status_pids);
        let (shown, depth) = own.flatten().map_or((0, 0), |(shown, _, depth)| (shown, depth));
        assert_eq!(shown, std::process::id() as i32);
        assert!(depth >= 1);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap_or_else(|e| panic!("{e}"));
        let mut seen = Vec::new();
        assert!(for_each_child(|p| seen.push(p)));
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen.contains(&(child.id() as i32)), "{seen:?}");
    }
}
