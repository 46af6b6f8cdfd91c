//! This defines the WASI p1 filesystem functions the guests call, shadowing
//! wasmtime-wasi's in the linker. In a run over the in-memory filesystem
//! (`memfs.rs`) they are implemented here, with no system call: descriptors
//! 3 and up are this module's (3 is the preopened `/cache`, and each open
//! takes the lowest free number, as POSIX does), and 0 to 2 stay
//! wasmtime-wasi's (the guests' stdio). In a run over a real directory they
//! call wasmtime-wasi's own functions, after folding the paths in a
//! case-folding run (`host.rs`). Every other p1 function (args, environ,
//! clocks, random, poll_oneoff, proc_exit) is wasmtime-wasi's in both.
//!
//! The guest is untrusted: every pointer and length is range-checked
//! (`EFAULT`), and nothing here panics on what it passes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wasmtime::{Caller, Linker, Result};
use wasmtime_wasi::p1::wasi_snapshot_preview1;

use crate::host::{Proc, fold_arg, guest_memory};
use crate::memfs::{Data, Errno, MemFs, OpenFlags, ROOT, errno};

/// Where the guests see the shared directory, and its descriptor.
const PREOPEN_NAME: &[u8] = crate::host::GUEST_ROOT.as_bytes();
const PREOPEN_FD: u32 = 3;

const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
/// Every right WASI p1 defines.
const ALL_RIGHTS: u64 = (1 << 29) - 1;
const FDFLAG_APPEND: u16 = 1;
/// Descriptors one process may hold (`ulimit -n`'s usual 1,024, less
/// stdio): past them, `EMFILE`.
const MAX_FDS: usize = 1_021;

/// One open descriptor.
#[derive(Debug)]
struct Open {
    node: usize,
    pos: u64,
    append: bool,
    read: bool,
    write: bool,
    base: u64,
    inheriting: u64,
    flags: u16,
    /// A directory's entries as of the `fd_readdir` with cookie 0: later
    /// calls continue through this listing, so every name present
    /// throughout is seen exactly once.
    listing: Option<Vec<(Vec<u8>, usize)>>,
}

/// One process's view of the in-memory filesystem.
#[derive(Debug)]
pub(crate) struct MemProc {
    fs: Arc<Mutex<MemFs>>,
    fds: BTreeMap<u32, Open>,
}

pub(crate) fn lock_fs(fs: &Mutex<MemFs>) -> MutexGuard<'_, MemFs> {
    fs.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemProc {
    pub(crate) fn new(fs: Arc<Mutex<MemFs>>) -> MemProc {
        let mut fds = BTreeMap::new();
        fds.insert(
            PREOPEN_FD,
            Open {
                node: ROOT,
                pos: 0,
                append: false,
                read: false,
                write: false,
                base: ALL_RIGHTS,
                inheriting: ALL_RIGHTS,
                flags: 0,
                listing: None,
            },
        );
        MemProc { fs, fds }
    }

    fn open(&mut self, fd: i32) -> Result<&mut Open, Errno> {
        self.fds.get_mut(&fd.cast_unsigned()).ok_or(errno::BADF)
    }

    /// The directory node of descriptor `fd`.
    fn dir(&self, fs: &MemFs, fd: i32) -> Result<usize, Errno> {
        let open = self.fds.get(&fd.cast_unsigned()).ok_or(errno::BADF)?;
        match fs.node(open.node).data {
            Data::Dir { .. } => Ok(open.node),
            _ => Err(errno::NOTDIR),
        }
    }

    fn lowest_free(&self) -> Result<u32, Errno> {
        if self.fds.len() >= MAX_FDS {
            return Err(errno::MFILE);
        }
        let mut fd = PREOPEN_FD;
        for &used in self.fds.keys() {
            if used > fd {
                break;
            }
            if used == fd {
                fd = fd.checked_add(1).ok_or(errno::OVERFLOW)?;
            }
        }
        Ok(fd)
    }
}

// ---- guest memory ----

fn range(mem: &[u8], ptr: i32, len: usize) -> Result<std::ops::Range<usize>, Errno> {
    let start = ptr.cast_unsigned() as usize;
    let end = start.checked_add(len).ok_or(errno::FAULT)?;
    if end > mem.len() {
        return Err(errno::FAULT);
    }
    Ok(start..end)
}

fn bytes(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], Errno> {
    let r = range(mem, ptr, len.cast_unsigned() as usize)?;
    Ok(&mem[r])
}

fn put(mem: &mut [u8], ptr: i32, data: &[u8]) -> Result<(), Errno> {
    let r = range(mem, ptr, data.len())?;
    mem[r].copy_from_slice(data);
    Ok(())
}

fn put_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), Errno> {
    put(mem, ptr, &v.to_le_bytes())
}

fn put_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), Errno> {
    put(mem, ptr, &v.to_le_bytes())
}

/// The `(start, len)` of each iovec of the array at `iovs`.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<std::ops::Range<usize>>, Errno> {
    let count = count.cast_unsigned() as usize;
    let table = range(mem, iovs, count.checked_mul(8).ok_or(errno::FAULT)?)?;
    let mut out = Vec::with_capacity(count);
    for chunk in mem[table].chunks_exact(8) {
        let buf = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        out.push(range(mem, buf.cast_signed(), len as usize)?);
    }
    Ok(out)
}

/// A `filestat` (64 bytes) of `node`.
fn filestat(fs: &MemFs, node: usize) -> [u8; 64] {
    let n = fs.node(node);
    let mut out = [0u8; 64];
    out[0..8].copy_from_slice(&crate::memfs::DEV.to_le_bytes());
    out[8..16].copy_from_slice(&MemFs::ino(node).to_le_bytes());
    out[16] = n.filetype();
    out[24..32].copy_from_slice(&fs.nlink(node).to_le_bytes());
    out[32..40].copy_from_slice(&n.size().to_le_bytes());
    out[40..48].copy_from_slice(&n.atim.to_le_bytes());
    out[48..56].copy_from_slice(&n.mtim.to_le_bytes());
    out[56..64].copy_from_slice(&n.ctim.to_le_bytes());
    out
}

// ---- the functions, over the in-memory filesystem ----

type Mem<'a> = &'a mut [u8];

/// `fd_prestat_get`: only the preopened directory has a prestat.
fn prestat(mem: Mem<'_>, p: &mut MemProc, fd: i32, buf: i32) -> Result<(), Errno> {
    let _ = p.open(fd)?;
    if fd.cast_unsigned() != PREOPEN_FD {
        return Err(errno::BADF);
    }
    let mut out = [0u8; 8];
    out[4..8].copy_from_slice(&(PREOPEN_NAME.len() as u32).to_le_bytes());
    put(mem, buf, &out)
}

fn prestat_dir_name(mem: Mem<'_>, p: &mut MemProc, fd: i32, path: i32, len: i32) -> Result<(), Errno> {
    let _ = p.open(fd)?;
    if fd.cast_unsigned() != PREOPEN_FD {
        return Err(errno::BADF);
    }
    let len = len.cast_unsigned() as usize;
    if len < PREOPEN_NAME.len() {
        return Err(errno::NAMETOOLONG);
    }
    put(mem, path, PREOPEN_NAME)
}

fn fdstat_get(mem: Mem<'_>, p: &mut MemProc, fd: i32, buf: i32) -> Result<(), Errno> {
    let fs = Arc::clone(&p.fs);
    let open = p.open(fd)?;
    let mut out = [0u8; 24];
    out[0] = lock_fs(&fs).node(open.node).filetype();
    out[2..4].copy_from_slice(&open.flags.to_le_bytes());
    out[8..16].copy_from_slice(&open.base.to_le_bytes());
    out[16..24].copy_from_slice(&open.inheriting.to_le_bytes());
    put(mem, buf, &out)
}

fn fdstat_set_flags(_: Mem<'_>, p: &mut MemProc, fd: i32, flags: i32) -> Result<(), Errno> {
    let open = p.open(fd)?;
    let flags = u16::try_from(flags).map_err(|_| errno::INVAL)?;
    open.flags = flags;
    open.append = flags & FDFLAG_APPEND != 0;
    Ok(())
}

fn filestat_get(mem: Mem<'_>, p: &mut MemProc, fd: i32, buf: i32) -> Result<(), Errno> {
    let node = p.open(fd)?.node;
    let stat = filestat(&lock_fs(&p.fs), node);
    put(mem, buf, &stat)
}

fn filestat_set_size(_: Mem<'_>, p: &mut MemProc, fd: i32, size: i64) -> Result<(), Errno> {
    let open = p.open(fd)?;
    if !open.write {
        return Err(errno::INVAL);
    }
    let node = open.node;
    let size = usize::try_from(size).ok().filter(|&s| s <= 1 << 30).ok_or(errno::INVAL)?;
    lock_fs(&p.fs).set_size(node, size);
    Ok(())
}

/// The file open as `fd`, if it is open for writing (`write`) or reading.
fn file(p: &mut MemProc, fd: i32, write: bool) -> Result<(Arc<Mutex<MemFs>>, &mut Open), Errno> {
    let fs = Arc::clone(&p.fs);
    let open = p.open(fd)?;
    if let Data::Dir { .. } = lock_fs(&fs).node(open.node).data {
        return Err(errno::ISDIR);
    }
    if !(if write { open.write } else { open.read }) {
        return Err(errno::BADF);
    }
    Ok((fs, open))
}

/// Reads into the iovecs at `iovs` from `at` (the descriptor's position if
/// `None`, which then advances).
fn read(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, iovs, count): (i32, i32, i32),
    at: Option<u64>,
    nread: i32,
) -> Result<(), Errno> {
    let (fs, open) = file(p, fd, false)?;
    let mut fs = lock_fs(&fs);
    range(mem, nread, 4)?;
    let mut pos = at.unwrap_or(open.pos);
    let mut total = 0u32;
    for iov in iovecs(mem, iovs, count)? {
        let n = fs.read_at(open.node, pos, &mut mem[iov.clone()]);
        pos += n as u64;
        total = total.saturating_add(n as u32);
        if n < iov.len() {
            break;
        }
    }
    if at.is_none() {
        open.pos = pos;
    }
    put_u32(mem, nread, total)
}

fn write(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, iovs, count): (i32, i32, i32),
    at: Option<u64>,
    nwritten: i32,
) -> Result<(), Errno> {
    let (fs, open) = file(p, fd, true)?;
    let mut fs = lock_fs(&fs);
    range(mem, nwritten, 4)?;
    let mut data = Vec::new();
    for iov in iovecs(mem, iovs, count)? {
        data.extend_from_slice(&mem[iov]);
    }
    let len = u32::try_from(data.len()).map_err(|_| errno::INVAL)?;
    let end = fs.write_at(open.node, at.unwrap_or(open.pos), &data, open.append && at.is_none())?;
    if at.is_none() {
        open.pos = end;
    }
    put_u32(mem, nwritten, len)
}

fn seek(mem: Mem<'_>, p: &mut MemProc, fd: i32, offset: i64, whence: i32, out: i32) -> Result<(), Errno> {
    let fs = Arc::clone(&p.fs);
    let open = p.open(fd)?;
    let base = match whence {
        0 => 0,
        1 => open.pos,
        2 => lock_fs(&fs).node(open.node).size(),
        _ => return Err(errno::INVAL),
    };
    let base = i64::try_from(base).map_err(|_| errno::OVERFLOW)?;
    let pos = base.checked_add(offset).ok_or(errno::OVERFLOW)?;
    let pos = u64::try_from(pos).map_err(|_| errno::INVAL)?;
    range(mem, out, 8)?;
    open.pos = pos;
    put_u64(mem, out, pos)
}

fn tell(mem: Mem<'_>, p: &mut MemProc, fd: i32, out: i32) -> Result<(), Errno> {
    let pos = p.open(fd)?.pos;
    put_u64(mem, out, pos)
}

fn sync(_: Mem<'_>, p: &mut MemProc, fd: i32) -> Result<(), Errno> {
    // Durability is the power model's, through `safecache_host.sync`.
    p.open(fd).map(|_| ())
}

fn close(_: Mem<'_>, p: &mut MemProc, fd: i32) -> Result<(), Errno> {
    p.fds.remove(&fd.cast_unsigned()).map(|_| ()).ok_or(errno::BADF)
}

fn readdir(mem: Mem<'_>, p: &mut MemProc, fd: i32, buf: i32, len: i32, cookie: i64, used: i32) -> Result<(), Errno> {
    let fs = Arc::clone(&p.fs);
    let open = p.open(fd)?;
    let fs = lock_fs(&fs);
    if !matches!(fs.node(open.node).data, Data::Dir { .. }) {
        return Err(errno::NOTDIR);
    }
    let target = range(mem, buf, len.cast_unsigned() as usize)?;
    range(mem, used, 4)?;
    if cookie == 0 || open.listing.is_none() {
        let mut listing = vec![(b".".to_vec(), open.node), (b"..".to_vec(), fs.parent_of(open.node))];
        listing.extend(fs.listing(open.node));
        open.listing = Some(listing);
    }
    let listing = open.listing.as_deref().unwrap_or_default();
    let skip = usize::try_from(cookie.cast_unsigned()).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for (i, (name, node)) in listing.iter().enumerate().skip(skip) {
        if out.len() >= target.len() {
            break;
        }
        out.extend_from_slice(&(i as u64 + 1).to_le_bytes());
        out.extend_from_slice(&MemFs::ino(*node).to_le_bytes());
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&[fs.node(*node).filetype(), 0, 0, 0]);
        out.extend_from_slice(name);
    }
    out.truncate(target.len());
    let n = out.len() as u32;
    put(mem, buf, &out)?;
    put_u32(mem, used, n)
}

/// Runs `f` with the filesystem and the directory node of `fd`.
fn at_dir<T>(
    p: &mut MemProc,
    fd: i32,
    f: impl FnOnce(&mut MemFs, usize, bool) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let fs = Arc::clone(&p.fs);
    let mut fs = lock_fs(&fs);
    let dir = p.dir(&fs, fd)?;
    let fold = fs.fold;
    f(&mut fs, dir, fold)
}

fn path_create_directory(mem: Mem<'_>, p: &mut MemProc, fd: i32, path: i32, len: i32) -> Result<(), Errno> {
    let path = bytes(mem, path, len)?;
    at_dir(p, fd, |fs, dir, fold| fs.mkdir(dir, path, fold))
}

fn path_remove_directory(mem: Mem<'_>, p: &mut MemProc, fd: i32, path: i32, len: i32) -> Result<(), Errno> {
    let path = bytes(mem, path, len)?;
    at_dir(p, fd, |fs, dir, fold| fs.rmdir(dir, path, fold))
}

fn path_unlink_file(mem: Mem<'_>, p: &mut MemProc, fd: i32, path: i32, len: i32) -> Result<(), Errno> {
    let path = bytes(mem, path, len)?;
    at_dir(p, fd, |fs, dir, fold| fs.unlink(dir, path, fold))
}

fn path_filestat_get(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, flags, path, len): (i32, i32, i32, i32),
    buf: i32,
) -> Result<(), Errno> {
    let stat = {
        let path = bytes(mem, path, len)?;
        at_dir(p, fd, |fs, dir, fold| Ok(filestat(fs, fs.lookup(dir, path, flags & 1 != 0, fold)?)))?
    };
    put(mem, buf, &stat)
}

fn path_filestat_set_times(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, flags, path, len): (i32, i32, i32, i32),
    (atim, mtim, fst): (i64, i64, i32),
) -> Result<(), Errno> {
    const ATIM: i32 = 1;
    const ATIM_NOW: i32 = 2;
    const MTIM: i32 = 4;
    const MTIM_NOW: i32 = 8;
    if fst & (ATIM | ATIM_NOW) == ATIM | ATIM_NOW || fst & (MTIM | MTIM_NOW) == MTIM | MTIM_NOW {
        return Err(errno::INVAL);
    }
    let path = bytes(mem, path, len)?;
    at_dir(p, fd, |fs, dir, fold| {
        let node = fs.lookup(dir, path, flags & 1 != 0, fold)?;
        let now = fs.now();
        let n = fs.node_mut(node);
        if fst & ATIM != 0 {
            n.atim = atim.cast_unsigned();
        } else if fst & ATIM_NOW != 0 {
            n.atim = now;
        }
        if fst & MTIM != 0 {
            n.mtim = mtim.cast_unsigned();
        } else if fst & MTIM_NOW != 0 {
            n.mtim = now;
        }
        n.ctim = now;
        Ok(())
    })
}

fn path_open(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, dirflags, path, len): (i32, i32, i32, i32),
    (oflags, base, inheriting, fdflags): (i32, i64, i64, i32),
    out: i32,
) -> Result<(), Errno> {
    range(mem, out, 4)?;
    let (base, inheriting) = (base.cast_unsigned(), inheriting.cast_unsigned());
    let fdflags = u16::try_from(fdflags).map_err(|_| errno::INVAL)?;
    let how = OpenFlags {
        follow: dirflags & 1 != 0,
        create: oflags & 1 != 0,
        directory: oflags & 2 != 0,
        excl: oflags & 4 != 0,
        trunc: oflags & 8 != 0,
        write: base & RIGHT_FD_WRITE != 0,
    };
    let new = p.lowest_free()?;
    let node = {
        let path = bytes(mem, path, len)?;
        at_dir(p, fd, |fs, dir, fold| fs.open(dir, path, how, fold))?
    };
    let is_dir = matches!(lock_fs(&p.fs).node(node).data, Data::Dir { .. });
    p.fds.insert(
        new,
        Open {
            node,
            pos: 0,
            append: fdflags & FDFLAG_APPEND != 0,
            read: !is_dir && base & RIGHT_FD_READ != 0,
            write: !is_dir && how.write,
            base,
            inheriting,
            flags: fdflags,
            listing: None,
        },
    );
    put_u32(mem, out, new)
}

fn path_readlink(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, path, len): (i32, i32, i32),
    (buf, buf_len, used): (i32, i32, i32),
) -> Result<(), Errno> {
    let target = {
        let path = bytes(mem, path, len)?;
        at_dir(p, fd, |fs, dir, fold| fs.readlink(dir, path, fold).map(<[u8]>::to_vec))?
    };
    let n = target.len().min(buf_len.cast_unsigned() as usize);
    range(mem, used, 4)?;
    put(mem, buf, &target[..n])?;
    put_u32(mem, used, n as u32)
}

/// Runs `f` with the filesystem and two (directory, path) pairs: those
/// of a rename's or link's source and target.
fn two_paths(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, path, len): (i32, i32, i32),
    (fd2, path2, len2): (i32, i32, i32),
    f: impl FnOnce(&mut MemFs, (usize, &[u8]), (usize, &[u8]), bool) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let from = bytes(mem, path, len)?;
    let to = bytes(mem, path2, len2)?;
    let fs = Arc::clone(&p.fs);
    let mut fs = lock_fs(&fs);
    let (a, b) = (p.dir(&fs, fd)?, p.dir(&fs, fd2)?);
    let fold = fs.fold;
    f(&mut fs, (a, from), (b, to), fold)
}

fn path_rename(mem: Mem<'_>, p: &mut MemProc, from: (i32, i32, i32), to: (i32, i32, i32)) -> Result<(), Errno> {
    two_paths(mem, p, from, to, |fs, from, to, fold| fs.rename(from, to, fold))
}

fn path_link(
    mem: Mem<'_>,
    p: &mut MemProc,
    (fd, flags, path, len): (i32, i32, i32, i32),
    to: (i32, i32, i32),
) -> Result<(), Errno> {
    two_paths(mem, p, (fd, path, len), to, |fs, (a, from), to, fold| fs.link((a, from, flags & 1 != 0), to, fold))
}

fn path_symlink(
    mem: Mem<'_>,
    p: &mut MemProc,
    (target, target_len): (i32, i32),
    (fd, path, len): (i32, i32, i32),
) -> Result<(), Errno> {
    let target = bytes(mem, target, target_len)?;
    let path = bytes(mem, path, len)?;
    at_dir(p, fd, |fs, dir, fold| fs.symlink(target, dir, path, fold))
}

// ---- the linker ----

/// Whether descriptor `fd` is this module's: 0 to 2 are the guests' stdio,
/// wasmtime-wasi's.
fn mine(fd: i32) -> bool {
    fd > 2
}

/// Runs `f` over the guest's memory and the process's in-memory
/// filesystem; the errno it returns is the call's result.
fn mem_call(
    caller: &mut Caller<'_, Proc>,
    f: impl FnOnce(&mut [u8], &mut MemProc) -> Result<(), Errno>,
) -> Result<i32> {
    let memory = guest_memory(caller)?;
    let (mem, proc) = memory.data_and_store_mut(caller);
    let Some(p) = proc.mem.as_mut() else { return Ok(i32::from(errno::BADF)) };
    Ok(i32::from(f(mem, p).err().unwrap_or(errno::SUCCESS)))
}

/// Shadows one p1 function: over the in-memory filesystem when the
/// process has one and `$mine` holds, else wasmtime-wasi's (with its path
/// arguments folded in a case-folding run over a real directory).
macro_rules! shadow {
    (sync $linker:ident, $($rest:tt)*) => { shadow!(@ [] $linker, $($rest)*) };
    ($linker:ident, $($rest:tt)*) => { shadow!(@ [.await] $linker, $($rest)*) };
    (@ [$($aw:tt)*] $linker:ident, $func:ident, ($($arg:ident: $ty:ty),*), $mine:expr, $imp:expr, [$(($slot:literal, $fd:ident, $ptr:ident, $len:ident)),*]) => {
        $linker.func_wrap_async(
            "wasi_snapshot_preview1",
            stringify!($func),
            #[allow(unused_mut, clippy::redundant_closure_call)]
            |mut caller: Caller<'_, Proc>, ($(mut $arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    if caller.data().mem.is_some() && $mine {
                        return mem_call(&mut caller, |mem, p| ($imp)(mem, p));
                    }
                    if caller.data().fold {
                        $(fold_arg(&mut caller, $slot, $fd, &mut $ptr, &mut $len)?;)*
                    }
                    let memory = guest_memory(&mut caller)?;
                    let (mem, proc) = memory.data_and_store_mut(&mut caller);
                    let mut mem = wiggle::GuestMemory::Unshared(mem);
                    wasi_snapshot_preview1::$func(&mut proc.wasi, &mut mem, $($arg),*) $($aw)*
                })
            },
        )?;
    };
}

/// Defines every shadowed function in `linker` (which already has
/// wasmtime-wasi's, and allows shadowing).
pub(crate) fn define(linker: &mut Linker<Proc>) -> Result<()> {
    shadow!(sync linker, fd_prestat_get, (fd: i32, buf: i32), true, |m: Mem<'_>, p: &mut MemProc| prestat(m, p, fd, buf), []);
    shadow!(sync linker, fd_prestat_dir_name, (fd: i32, path: i32, len: i32), true, |m: Mem<'_>, p: &mut MemProc| prestat_dir_name(m, p, fd, path, len), []);
    shadow!(linker, fd_fdstat_get, (fd: i32, buf: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| fdstat_get(m, p, fd, buf), []);
    shadow!(sync linker, fd_fdstat_set_flags, (fd: i32, flags: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| fdstat_set_flags(m, p, fd, flags), []);
    shadow!(linker, fd_filestat_get, (fd: i32, buf: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| filestat_get(m, p, fd, buf), []);
    shadow!(linker, fd_filestat_set_size, (fd: i32, size: i64), mine(fd), |m: Mem<'_>, p: &mut MemProc| filestat_set_size(m, p, fd, size), []);
    shadow!(linker, fd_read, (fd: i32, iovs: i32, n: i32, out: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| read(m, p, (fd, iovs, n), None, out), []);
    shadow!(linker, fd_pread, (fd: i32, iovs: i32, n: i32, at: i64, out: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| read(m, p, (fd, iovs, n), Some(at.cast_unsigned()), out), []);
    shadow!(linker, fd_write, (fd: i32, iovs: i32, n: i32, out: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| write(m, p, (fd, iovs, n), None, out), []);
    shadow!(linker, fd_pwrite, (fd: i32, iovs: i32, n: i32, at: i64, out: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| write(m, p, (fd, iovs, n), Some(at.cast_unsigned()), out), []);
    shadow!(linker, fd_seek, (fd: i32, offset: i64, whence: i32, out: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| seek(m, p, fd, offset, whence, out), []);
    shadow!(sync linker, fd_tell, (fd: i32, out: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| tell(m, p, fd, out), []);
    shadow!(linker, fd_sync, (fd: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| sync(m, p, fd), []);
    shadow!(linker, fd_datasync, (fd: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| sync(m, p, fd), []);
    shadow!(linker, fd_close, (fd: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| close(m, p, fd), []);
    shadow!(linker, fd_readdir, (fd: i32, buf: i32, len: i32, cookie: i64, used: i32), mine(fd), |m: Mem<'_>, p: &mut MemProc| readdir(m, p, fd, buf, len, cookie, used), []);
    shadow!(linker, path_create_directory, (fd: i32, p: i32, l: i32), true, |m: Mem<'_>, mp: &mut MemProc| path_create_directory(m, mp, fd, p, l), [(0, fd, p, l)]);
    shadow!(linker, path_filestat_get, (fd: i32, flags: i32, p: i32, l: i32, buf: i32), true, |m: Mem<'_>, mp: &mut MemProc| path_filestat_get(m, mp, (fd, flags, p, l), buf), [(0, fd, p, l)]);
    shadow!(
        linker,
        path_filestat_set_times,
        (fd: i32, flags: i32, p: i32, l: i32, atim: i64, mtim: i64, fst: i32),
        true,
        |m: Mem<'_>, mp: &mut MemProc| path_filestat_set_times(m, mp, (fd, flags, p, l), (atim, mtim, fst)),
        [(0, fd, p, l)]
    );
    shadow!(
        linker,
        path_link,
        (fd: i32, flags: i32, p: i32, l: i32, fd2: i32, p2: i32, l2: i32),
        true,
        |m: Mem<'_>, mp: &mut MemProc| path_link(m, mp, (fd, flags, p, l), (fd2, p2, l2)),
        [(0, fd, p, l), (1, fd2, p2, l2)]
    );
    shadow!(
        linker,
        path_open,
        (fd: i32, dirflags: i32, p: i32, l: i32, oflags: i32, base: i64, inheriting: i64, fdflags: i32, out: i32),
        true,
        |m: Mem<'_>, mp: &mut MemProc| path_open(m, mp, (fd, dirflags, p, l), (oflags, base, inheriting, fdflags), out),
        [(0, fd, p, l)]
    );
    shadow!(
        linker,
        path_readlink,
        (fd: i32, p: i32, l: i32, buf: i32, buf_len: i32, used: i32),
        true,
        |m: Mem<'_>, mp: &mut MemProc| path_readlink(m, mp, (fd, p, l), (buf, buf_len, used)),
        [(0, fd, p, l)]
    );
    shadow!(linker, path_remove_directory, (fd: i32, p: i32, l: i32), true, |m: Mem<'_>, mp: &mut MemProc| path_remove_directory(m, mp, fd, p, l), [(0, fd, p, l)]);
    shadow!(
        linker,
        path_rename,
        (fd: i32, p: i32, l: i32, fd2: i32, p2: i32, l2: i32),
        true,
        |m: Mem<'_>, mp: &mut MemProc| path_rename(m, mp, (fd, p, l), (fd2, p2, l2)),
        [(0, fd, p, l), (1, fd2, p2, l2)]
    );
    shadow!(
        linker,
        path_symlink,
        (target: i32, target_len: i32, fd: i32, p: i32, l: i32),
        true,
        |m: Mem<'_>, mp: &mut MemProc| path_symlink(m, mp, (target, target_len), (fd, p, l)),
        [(0, fd, p, l)]
    );
    shadow!(linker, path_unlink_file, (fd: i32, p: i32, l: i32), true, |m: Mem<'_>, mp: &mut MemProc| path_unlink_file(m, mp, fd, p, l), [(0, fd, p, l)]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Tree;
    use crate::world::Clock;

    fn setup(names: &[&str]) -> (Vec<u8>, MemProc) {
        let mut fs = MemFs::new(Clock::default(), false);
        for name in names {
            fs.write(std::path::Path::new(name), name.as_bytes()).unwrap();
        }
        (vec![0u8; 4096], MemProc::new(Arc::new(Mutex::new(fs))))
    }

    /// Opens `path` under the preopen; the new descriptor.
    fn open(mem: &mut [u8], p: &mut MemProc, path: &str, oflags: i32) -> Result<i32, Errno> {
        put(mem, 0, path.as_bytes()).unwrap();
        // As std asks: a directory is opened for reading only.
        let write = if oflags & 2 == 0 { RIGHT_FD_WRITE } else { 0 };
        let rights = (RIGHT_FD_READ | write).cast_signed();
        path_open(mem, p, (3, 1, 0, path.len() as i32), (oflags, rights, 0, 0), 100)?;
        Ok(i32::from_le_bytes([mem[100], mem[101], mem[102], mem[103]]))
    }

    /// One `fd_readdir` into a buffer of `len` bytes from `cookie`: the
    /// complete entries' names and cookies, and whether the buffer was full.
    fn readdir_once(mem: &mut [u8], p: &mut MemProc, fd: i32, len: i32, cookie: u64) -> (Vec<(String, u64)>, bool) {
        readdir(mem, p, fd, 1024, len, cookie.cast_signed(), 200).unwrap();
        let used = u32::from_le_bytes([mem[200], mem[201], mem[202], mem[203]]) as usize;
        let buf = &mem[1024..1024 + used];
        let mut out = Vec::new();
        let mut at = 0;
        while at + 24 <= buf.len() {
            let next = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
            let namlen = u32::from_le_bytes(buf[at + 16..at + 20].try_into().unwrap()) as usize;
            if at + 24 + namlen > buf.len() {
                break;
            }
            out.push((String::from_utf8_lossy(&buf[at + 24..at + 24 + namlen]).into_owned(), next));
            at += 24 + namlen;
        }
        (out, used == len as usize)
    }

    #[test]
    fn readdir_lists_sorted_and_continues_from_its_cookie_over_one_snapshot() {
        let (mut mem, mut p) = setup(&["b", "c", "a"]);
        let fd = open(&mut mem, &mut p, ".", 2).unwrap();
        let (mut seen, mut cookie) = (Vec::new(), 0);
        loop {
            // Room for about two entries per call.
            let (entries, full) = readdir_once(&mut mem, &mut p, fd, 60, cookie);
            if cookie == 0 {
                // Changes after the listing began are not seen by it.
                let mut fs = lock_fs(&p.fs);
                fs.unlink(ROOT, b"c", false).unwrap();
                fs.write(std::path::Path::new("aa"), b"new").unwrap();
            }
            for (name, next) in entries {
                seen.push(name);
                cookie = next;
            }
            if !full {
                break;
            }
        }
        assert_eq!(seen, [".", "..", "a", "b", "c"]);
        // A new listing from cookie 0 sees the changes.
        let (entries, _) = readdir_once(&mut mem, &mut p, fd, 1000, 0);
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [".", "..", "a", "aa", "b"]);
    }

    #[test]
    fn descriptors_take_the_lowest_free_number() {
        let (mut mem, mut p) = setup(&["a", "b"]);
        assert_eq!(open(&mut mem, &mut p, "a", 0), Ok(4));
        assert_eq!(open(&mut mem, &mut p, "b", 0), Ok(5));
        close(&mut mem, &mut p, 4).unwrap();
        assert_eq!(close(&mut mem, &mut p, 4), Err(errno::BADF));
        assert_eq!(open(&mut mem, &mut p, "new", 1 | 4), Ok(4));
        assert_eq!(open(&mut mem, &mut p, "new", 1 | 4), Err(errno::EXIST));
        while p.fds.len() < MAX_FDS {
            open(&mut mem, &mut p, "a", 0).unwrap();
        }
        assert_eq!(open(&mut mem, &mut p, "a", 0), Err(errno::MFILE));
    }

    #[test]
    fn guest_pointers_out_of_bounds_are_efault() {
        let (mut mem, mut p) = setup(&["a"]);
        let len = mem.len() as i32;
        assert_eq!(path_unlink_file(&mut mem, &mut p, 3, len - 1, 2), Err(errno::FAULT));
        assert_eq!(path_unlink_file(&mut mem, &mut p, 3, -1, 2), Err(errno::FAULT));
        let fd = open(&mut mem, &mut p, "a", 0).unwrap();
        assert_eq!(read(&mut mem, &mut p, (fd, 0, i32::MAX), None, 8), Err(errno::FAULT));
        assert_eq!(filestat_get(&mut mem, &mut p, fd, len - 8), Err(errno::FAULT));
    }
}
