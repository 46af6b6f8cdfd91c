//! This defines the in-memory filesystem the simulated processes share by
//! default (`--fs mem`): an inode tree with Linux's semantics for what the
//! guests do through WASI p1 (`wasi_p1.rs` maps the calls onto it).
//!
//! - Inodes are numbered from 1 (the root) in creation order and never
//!   reused or freed within a run: a file unlinked while open stays
//!   readable, a lock keyed by inode never names a new file, and the power
//!   model reads the current bytes of any inode.
//! - Directories list their names sorted by bytes (a `BTreeMap`), so
//!   `readdir` order is deterministic.
//! - Lookups resolve `.`, `..` (never above the directory they start from:
//!   `ENOTCAPABLE`, as WASI's sandbox) and symlinks (relative targets only,
//!   at most 40 of them per lookup: `ELOOP`).
//! - In a case-folding run, a name that is not in its directory as spelled
//!   but folds (`host::fold`) to one that is names the first such name in
//!   sorted order, as the real-directory mode's wrapper resolves it.
//! - Timestamps come from the virtual clock.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::tree::{Ino, Kind, Stat, Tree};
use crate::world::Clock;

/// WASI p1 error numbers (`witx/p1/typenames.witx`).
pub(crate) mod errno {
    pub(crate) const SUCCESS: u16 = 0;
    pub(crate) const BADF: u16 = 8;
    pub(crate) const BUSY: u16 = 10;
    pub(crate) const EXIST: u16 = 20;
    pub(crate) const FAULT: u16 = 21;
    pub(crate) const INVAL: u16 = 28;
    pub(crate) const ISDIR: u16 = 31;
    pub(crate) const LOOP: u16 = 32;
    pub(crate) const MFILE: u16 = 33;
    pub(crate) const NAMETOOLONG: u16 = 37;
    pub(crate) const NOENT: u16 = 44;
    pub(crate) const NOTDIR: u16 = 54;
    pub(crate) const NOTEMPTY: u16 = 55;
    pub(crate) const OVERFLOW: u16 = 61;
    pub(crate) const PERM: u16 = 63;
    pub(crate) const NOTCAPABLE: u16 = 76;
}

/// A WASI error number.
pub(crate) type Errno = u16;

/// The device number every in-memory inode reports.
pub(crate) const DEV: u64 = 0x5afe;
/// The root directory's node.
pub(crate) const ROOT: usize = 0;
/// Symlinks one lookup may follow.
const MAX_LINKS: u32 = 40;
/// The longest name a directory holds (NAME_MAX).
const NAME_MAX: usize = 255;

/// The simulated wall clock starts at 2026-01-01T00:00:00Z (as the guests'
/// clock, `host.rs`).
const EPOCH_NS: u64 = crate::host::EPOCH_SECS * 1_000_000_000;

#[derive(Debug)]
pub(crate) enum Data {
    /// Names, sorted, and the parent (for `..`).
    Dir {
        entries: BTreeMap<Vec<u8>, usize>,
        parent: usize,
    },
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) data: Data,
    /// Names that lead to it (for a directory, 0 once removed; the `.` and
    /// subdirectories' `..` are added when it is reported).
    links: u64,
    /// The uncommitted mark (a directory's sticky bit).
    pub(crate) marked: bool,
    pub(crate) atim: u64,
    pub(crate) mtim: u64,
    pub(crate) ctim: u64,
}

impl Node {
    pub(crate) fn kind(&self) -> Kind {
        match self.data {
            Data::Dir { .. } => Kind::Dir,
            Data::File(_) => Kind::File,
            Data::Symlink(_) => Kind::Other,
        }
    }

    /// The WASI filetype: 3 directory, 4 regular file, 7 symlink.
    pub(crate) fn filetype(&self) -> u8 {
        match self.data {
            Data::Dir { .. } => 3,
            Data::File(_) => 4,
            Data::Symlink(_) => 7,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        match &self.data {
            Data::Dir { entries, .. } => entries.len() as u64,
            Data::File(bytes) | Data::Symlink(bytes) => bytes.len() as u64,
        }
    }
}

/// What a path resolved to: the directory its last component is in, that
/// component as the directory spells it (`None` for `.` and `..`), and the
/// node it names if there is one.
#[derive(Debug)]
pub(crate) struct Walk {
    pub(crate) parent: usize,
    pub(crate) name: Option<Vec<u8>>,
    pub(crate) node: Option<usize>,
    /// The path ended in `/`.
    pub(crate) slash: bool,
}

/// How `open` was asked to open.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpenFlags {
    pub(crate) follow: bool,
    pub(crate) create: bool,
    pub(crate) excl: bool,
    pub(crate) directory: bool,
    pub(crate) trunc: bool,
    pub(crate) write: bool,
}

/// The whole filesystem of one run.
#[derive(Debug)]
pub(crate) struct MemFs {
    nodes: Vec<Node>,
    /// Whether the guests' lookups fold case and normalization.
    pub(crate) fold: bool,
    clock: Clock,
}

impl MemFs {
    pub(crate) fn new(clock: Clock, fold: bool) -> MemFs {
        let mut fs = MemFs { nodes: Vec::new(), fold, clock };
        fs.alloc(Data::Dir { entries: BTreeMap::new(), parent: ROOT });
        fs.nodes[ROOT].links = 1;
        fs
    }

    pub(crate) fn now(&self) -> u64 {
        EPOCH_NS + self.clock.now()
    }

    fn alloc(&mut self, data: Data) -> usize {
        let now = self.now();
        self.nodes.push(Node { data, links: 0, marked: false, atim: now, mtim: now, ctim: now });
        self.nodes.len() - 1
    }

    pub(crate) fn node(&self, n: usize) -> &Node {
        &self.nodes[n]
    }

    pub(crate) fn node_mut(&mut self, n: usize) -> &mut Node {
        &mut self.nodes[n]
    }

    pub(crate) fn ino(n: usize) -> u64 {
        n as u64 + 1
    }

    /// The hard links a stat reports.
    pub(crate) fn nlink(&self, n: usize) -> u64 {
        let node = &self.nodes[n];
        match &node.data {
            Data::Dir { entries, .. } if node.links > 0 => {
                1 + node.links
                    + entries.values().filter(|&&c| matches!(self.nodes[c].data, Data::Dir { .. })).count() as u64
            }
            _ => node.links,
        }
    }

    fn entries(&self, dir: usize) -> Option<&BTreeMap<Vec<u8>, usize>> {
        match &self.nodes[dir].data {
            Data::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: usize) -> Option<&mut BTreeMap<Vec<u8>, usize>> {
        match &mut self.nodes[dir].data {
            Data::Dir { entries, .. } => Some(entries),
            _ => None,
        }
    }

    /// The names of directory `dir` with their nodes, sorted.
    pub(crate) fn listing(&self, dir: usize) -> Vec<(Vec<u8>, usize)> {
        self.entries(dir).map(|e| e.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    pub(crate) fn parent_of(&self, dir: usize) -> usize {
        match self.nodes[dir].data {
            Data::Dir { parent, .. } => parent,
            _ => ROOT,
        }
    }

    /// The entry of `dir` that `name` names: as spelled, or (folding) the
    /// first name that folds to the same.
    fn child(&self, dir: usize, name: &[u8], fold: bool) -> Option<(Vec<u8>, usize)> {
        let entries = self.entries(dir)?;
        if let Some(&n) = entries.get(name) {
            return Some((name.to_vec(), n));
        }
        if !fold {
            return None;
        }
        let want = crate::host::fold(&String::from_utf8_lossy(name));
        entries
            .iter()
            .find(|(k, _)| crate::host::fold(&String::from_utf8_lossy(k)) == want)
            .map(|(k, &n)| (k.clone(), n))
    }

    /// Resolves `path` from the directory `start`; the last component is
    /// followed if it is a symlink and `follow` (or the path ends in `/`).
    pub(crate) fn walk(&self, start: usize, path: &[u8], follow: bool, fold: bool) -> Result<Walk, Errno> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path[0] == b'/' {
            return Err(errno::NOTCAPABLE);
        }
        if !matches!(self.nodes[start].data, Data::Dir { .. }) {
            return Err(errno::NOTDIR);
        }
        let slash = path.ends_with(b"/");
        // The components still to resolve, the next one last.
        let mut comps: Vec<&[u8]> = split(path).rev().collect();
        let mut stack = vec![start];
        let mut links = 0u32;
        loop {
            let cur = *stack.last().unwrap_or(&start);
            let Some(comp) = comps.pop() else {
                // A path of `/`s and `.`s, or a symlink to one.
                return Ok(Walk { parent: cur, name: None, node: Some(cur), slash });
            };
            let last = comps.is_empty();
            match comp {
                b"." => {
                    if last {
                        return Ok(Walk { parent: cur, name: None, node: Some(cur), slash });
                    }
                }
                b".." => {
                    if stack.len() == 1 {
                        return Err(errno::NOTCAPABLE);
                    }
                    stack.pop();
                    if last {
                        let dir = *stack.last().unwrap_or(&start);
                        return Ok(Walk { parent: dir, name: None, node: Some(dir), slash });
                    }
                }
                name => {
                    if name.len() > NAME_MAX {
                        return Err(errno::NAMETOOLONG);
                    }
                    let found = self.child(cur, name, fold);
                    let Some((spelled, node)) = found else {
                        if last {
                            return Ok(Walk { parent: cur, name: Some(name.to_vec()), node: None, slash });
                        }
                        return Err(errno::NOENT);
                    };
                    match &self.nodes[node].data {
                        Data::Symlink(target) if !last || follow || slash => {
                            links += 1;
                            if links > MAX_LINKS {
                                return Err(errno::LOOP);
                            }
                            if target.first() == Some(&b'/') {
                                return Err(errno::NOTCAPABLE);
                            }
                            if target.is_empty() {
                                return Err(errno::NOENT);
                            }
                            if last && slash {
                                comps.push(b".");
                            }
                            comps.extend(split(target).rev());
                        }
                        _ if last => {
                            return Ok(Walk { parent: cur, name: Some(spelled), node: Some(node), slash });
                        }
                        Data::Dir { .. } => stack.push(node),
                        _ => return Err(errno::NOTDIR),
                    }
                }
            }
        }
    }

    /// The node `path` names from `start`.
    pub(crate) fn lookup(&self, start: usize, path: &[u8], follow: bool, fold: bool) -> Result<usize, Errno> {
        let walk = self.walk(start, path, follow, fold)?;
        let node = walk.node.ok_or(errno::NOENT)?;
        if walk.slash && !matches!(self.nodes[node].data, Data::Dir { .. }) {
            return Err(errno::NOTDIR);
        }
        Ok(node)
    }

    fn touch_dir(&mut self, dir: usize) {
        let now = self.now();
        let node = &mut self.nodes[dir];
        node.mtim = now;
        node.ctim = now;
    }

    /// Links `node` into `dir` as `name`; the directory must not be removed.
    fn link_into(&mut self, dir: usize, name: Vec<u8>, node: usize) -> Result<(), Errno> {
        if self.nodes[dir].links == 0 {
            return Err(errno::NOENT);
        }
        self.entries_mut(dir).ok_or(errno::NOTDIR)?.insert(name, node);
        self.nodes[node].links += 1;
        if let Data::Dir { parent, .. } = &mut self.nodes[node].data {
            *parent = dir;
        }
        self.touch_dir(dir);
        Ok(())
    }

    fn unlink_from(&mut self, dir: usize, name: &[u8]) {
        if let Some(node) = self.entries_mut(dir).and_then(|e| e.remove(name)) {
            let now = self.now();
            let node = &mut self.nodes[node];
            node.links = node.links.saturating_sub(1);
            node.ctim = now;
        }
        self.touch_dir(dir);
    }

    /// The resolved parent and name for making something new at `path`.
    fn new_name(&self, start: usize, path: &[u8], fold: bool) -> Result<(Walk, Vec<u8>), Errno> {
        let mut walk = self.walk(start, path, false, fold)?;
        if walk.node.is_some() {
            return Err(errno::EXIST);
        }
        let name = walk.name.take().ok_or(errno::EXIST)?;
        Ok((walk, name))
    }

    /// `openat`: the node opened (created if asked).
    pub(crate) fn open(&mut self, start: usize, path: &[u8], how: OpenFlags, fold: bool) -> Result<usize, Errno> {
        let follow = how.follow && !(how.create && how.excl);
        let walk = self.walk(start, path, follow, fold)?;
        let Some(node) = walk.node else {
            if !how.create {
                return Err(errno::NOENT);
            }
            if walk.slash {
                return Err(errno::ISDIR);
            }
            if how.directory {
                return Err(errno::INVAL);
            }
            let name = walk.name.ok_or(errno::ISDIR)?;
            let node = self.alloc(Data::File(Vec::new()));
            self.link_into(walk.parent, name, node)?;
            return Ok(node);
        };
        if how.create && how.excl {
            return Err(errno::EXIST);
        }
        match self.nodes[node].data {
            Data::Symlink(_) => Err(if how.directory { errno::NOTDIR } else { errno::LOOP }),
            Data::Dir { .. } => {
                if how.create || how.write || how.trunc {
                    return Err(errno::ISDIR);
                }
                Ok(node)
            }
            Data::File(_) => {
                if how.directory || walk.slash {
                    return Err(errno::NOTDIR);
                }
                if how.trunc {
                    self.set_size(node, 0);
                }
                Ok(node)
            }
        }
    }

    pub(crate) fn mkdir(&mut self, start: usize, path: &[u8], fold: bool) -> Result<(), Errno> {
        let (walk, name) = self.new_name(start, path, fold)?;
        let node = self.alloc(Data::Dir { entries: BTreeMap::new(), parent: walk.parent });
        self.link_into(walk.parent, name, node)
    }

    pub(crate) fn rmdir(&mut self, start: usize, path: &[u8], fold: bool) -> Result<(), Errno> {
        let walk = self.walk(start, path, false, fold)?;
        let Some(name) = walk.name else {
            return Err(if path.ends_with(b"..") || path.ends_with(b"../") { errno::NOTEMPTY } else { errno::INVAL });
        };
        let node = walk.node.ok_or(errno::NOENT)?;
        match self.entries(node) {
            None => Err(errno::NOTDIR),
            Some(entries) if !entries.is_empty() => Err(errno::NOTEMPTY),
            Some(_) => {
                self.unlink_from(walk.parent, &name);
                Ok(())
            }
        }
    }

    pub(crate) fn unlink(&mut self, start: usize, path: &[u8], fold: bool) -> Result<(), Errno> {
        let walk = self.walk(start, path, false, fold)?;
        let Some(name) = walk.name else { return Err(errno::ISDIR) };
        let node = walk.node.ok_or(errno::NOENT)?;
        match self.nodes[node].data {
            Data::Dir { .. } => Err(errno::ISDIR),
            _ if walk.slash => Err(errno::NOTDIR),
            _ => {
                self.unlink_from(walk.parent, &name);
                Ok(())
            }
        }
    }

    /// `renameat`, with Linux's checks.
    pub(crate) fn rename(
        &mut self,
        (from_start, from): (usize, &[u8]),
        (to_start, to): (usize, &[u8]),
        fold: bool,
    ) -> Result<(), Errno> {
        let src = self.walk(from_start, from, false, fold)?;
        let dst = self.walk(to_start, to, false, fold)?;
        let (Some(src_name), Some(dst_name)) = (src.name, dst.name) else { return Err(errno::BUSY) };
        let node = src.node.ok_or(errno::NOENT)?;
        let is_dir = matches!(self.nodes[node].data, Data::Dir { .. });
        if !is_dir && (src.slash || dst.slash) {
            return Err(errno::NOTDIR);
        }
        if self.nodes[dst.parent].links == 0 {
            return Err(errno::NOENT);
        }
        if let Some(old) = dst.node {
            if old == node {
                return Ok(());
            }
            match (is_dir, self.entries(old)) {
                (true, None) => return Err(errno::NOTDIR),
                (true, Some(entries)) if !entries.is_empty() => return Err(errno::NOTEMPTY),
                (false, Some(_)) => return Err(errno::ISDIR),
                _ => {}
            }
        }
        if is_dir {
            // Not into itself or beneath itself.
            let mut at = dst.parent;
            loop {
                if at == node {
                    return Err(errno::INVAL);
                }
                if at == ROOT {
                    break;
                }
                let up = self.parent_of(at);
                if up == at {
                    break;
                }
                at = up;
            }
        }
        if dst.node.is_some() {
            self.unlink_from(dst.parent, &dst_name);
        }
        self.unlink_from(src.parent, &src_name);
        self.link_into(dst.parent, dst_name, node)?;
        let now = self.now();
        self.nodes[node].ctim = now;
        Ok(())
    }

    pub(crate) fn link(
        &mut self,
        (from_start, from, follow): (usize, &[u8], bool),
        (to_start, to): (usize, &[u8]),
        fold: bool,
    ) -> Result<(), Errno> {
        let node = self.lookup(from_start, from, follow, fold)?;
        if matches!(self.nodes[node].data, Data::Dir { .. }) {
            return Err(errno::PERM);
        }
        let (walk, name) = self.new_name(to_start, to, fold)?;
        if walk.slash {
            return Err(errno::NOENT);
        }
        self.link_into(walk.parent, name, node)?;
        let now = self.now();
        self.nodes[node].ctim = now;
        Ok(())
    }

    pub(crate) fn symlink(&mut self, target: &[u8], start: usize, path: &[u8], fold: bool) -> Result<(), Errno> {
        let (walk, name) = self.new_name(start, path, fold)?;
        if walk.slash {
            return Err(errno::NOENT);
        }
        let node = self.alloc(Data::Symlink(target.to_vec()));
        self.link_into(walk.parent, name, node)
    }

    pub(crate) fn readlink(&self, start: usize, path: &[u8], fold: bool) -> Result<&[u8], Errno> {
        let node = self.walk(start, path, false, fold)?.node.ok_or(errno::NOENT)?;
        match &self.nodes[node].data {
            Data::Symlink(target) => Ok(target),
            _ => Err(errno::INVAL),
        }
    }

    /// Truncates or extends (with zeros) the file `node`.
    pub(crate) fn set_size(&mut self, node: usize, size: usize) {
        let now = self.now();
        let node = &mut self.nodes[node];
        if let Data::File(bytes) = &mut node.data {
            bytes.resize(size, 0);
            node.mtim = now;
            node.ctim = now;
        }
    }

    /// Reads from `node` at `pos` into `out`; the bytes read.
    pub(crate) fn read_at(&mut self, node: usize, pos: u64, out: &mut [u8]) -> usize {
        let Data::File(bytes) = &self.nodes[node].data else { return 0 };
        let Ok(pos) = usize::try_from(pos) else { return 0 };
        let n = bytes.len().saturating_sub(pos).min(out.len());
        if n > 0 {
            out[..n].copy_from_slice(&bytes[pos..pos + n]);
        }
        n
    }

    /// Writes `data` to `node` at `pos` (or at the end, with `append`);
    /// the end of what was written.
    pub(crate) fn write_at(&mut self, node: usize, pos: u64, data: &[u8], append: bool) -> Result<u64, Errno> {
        let now = self.now();
        let node = &mut self.nodes[node];
        let Data::File(bytes) = &mut node.data else { return Err(errno::BADF) };
        let pos = if append { bytes.len() } else { usize::try_from(pos).map_err(|_| errno::OVERFLOW)? };
        // A file of more than 1 GiB is beyond anything the guests write.
        let end = pos.checked_add(data.len()).filter(|&e| e <= 1 << 30).ok_or(errno::OVERFLOW)?;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[pos..end].copy_from_slice(data);
        if !data.is_empty() {
            node.mtim = now;
            node.ctim = now;
        }
        Ok(end as u64)
    }

    /// `rel` (from the root) spelled as the names it resolves to, folding:
    /// each component that is there is spelled as its directory spells it
    /// (the rest as given).
    pub(crate) fn spelled(&self, rel: &[u8]) -> Vec<u8> {
        let mut at = Some(ROOT);
        let mut out: Vec<Vec<u8>> = Vec::new();
        for part in rel.split(|&b| b == b'/') {
            let found = at.and_then(|dir| self.child(dir, part, true));
            at = found.as_ref().map(|(_, n)| *n);
            out.push(found.map_or_else(|| part.to_vec(), |(name, _)| name));
        }
        out.join(&b'/')
    }

    /// Resolves a path relative to the root for the host's own reads (never
    /// folding, never following a last symlink).
    fn host_lookup(&self, rel: &Path) -> io::Result<usize> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = rel.as_os_str().as_bytes();
        if bytes.is_empty() {
            return Ok(ROOT);
        }
        self.lookup(ROOT, bytes, false, false).map_err(to_io)
    }

    fn host_new(&self, rel: &Path) -> io::Result<(usize, Vec<u8>)> {
        use std::os::unix::ffi::OsStrExt;
        let (walk, name) = self.new_name(ROOT, rel.as_os_str().as_bytes(), false).map_err(to_io)?;
        Ok((walk.parent, name))
    }
}

/// The components of `path`, without empty ones.
fn split(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// An error number as the host's `io::Error`.
pub(crate) fn to_io(e: Errno) -> io::Error {
    let kind = match e {
        errno::NOENT => io::ErrorKind::NotFound,
        errno::EXIST => io::ErrorKind::AlreadyExists,
        errno::NOTDIR => io::ErrorKind::NotADirectory,
        errno::ISDIR => io::ErrorKind::IsADirectory,
        errno::NOTEMPTY => io::ErrorKind::DirectoryNotEmpty,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("wasi errno {e}"))
}

impl Tree for MemFs {
    fn stat(&self, rel: &Path) -> io::Result<Stat> {
        let n = self.host_lookup(rel)?;
        let node = &self.nodes[n];
        Ok(Stat { ino: (DEV, MemFs::ino(n)), kind: node.kind(), marked: node.marked })
    }

    fn list(&self, rel: &Path) -> io::Result<Vec<String>> {
        let n = self.host_lookup(rel)?;
        let entries = self.entries(n).ok_or_else(|| to_io(errno::NOTDIR))?;
        Ok(entries.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect())
    }

    fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let n = self.host_lookup(rel)?;
        match &self.nodes[n].data {
            Data::File(bytes) => Ok(bytes.clone()),
            Data::Dir { .. } => Err(to_io(errno::ISDIR)),
            Data::Symlink(_) => Err(to_io(errno::LOOP)),
        }
    }

    fn create_dir(&mut self, rel: &Path) -> io::Result<()> {
        let (parent, name) = self.host_new(rel)?;
        let node = self.alloc(Data::Dir { entries: BTreeMap::new(), parent });
        self.link_into(parent, name, node).map_err(to_io)
    }

    fn write(&mut self, rel: &Path, bytes: &[u8]) -> io::Result<()> {
        let node = match self.host_lookup(rel) {
            Ok(node) => node,
            Err(_) => {
                let (parent, name) = self.host_new(rel)?;
                let node = self.alloc(Data::File(Vec::new()));
                self.link_into(parent, name, node).map_err(to_io)?;
                node
            }
        };
        self.set_size(node, 0);
        self.write_at(node, 0, bytes, false).map_err(to_io)?;
        Ok(())
    }

    fn set_marked(&mut self, rel: &Path, on: bool) -> io::Result<()> {
        let n = self.host_lookup(rel)?;
        self.nodes[n].marked = on;
        Ok(())
    }

    fn clear(&mut self) -> io::Result<()> {
        let names: Vec<Vec<u8>> = self.entries(ROOT).map(|e| e.keys().cloned().collect()).unwrap_or_default();
        for name in names {
            self.unlink_from(ROOT, &name);
        }
        Ok(())
    }

    fn pin(&self, _: &Path) -> io::Result<Option<std::fs::File>> {
        Ok(None)
    }

    fn read_ino(&self, ino: Ino) -> Option<Vec<u8>> {
        let n = usize::try_from(ino.1.checked_sub(1)?).ok()?;
        match &self.nodes.get(n)?.data {
            Data::File(bytes) if ino.0 == DEV => Some(bytes.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The same small checks against the in-memory filesystem and against
    //! the kernel (a real temporary directory): each step's result (its
    //! output or its error number) must agree.

    use std::fs;
    use std::io::{Read, Write};
    use std::path::Path;

    use super::*;

    /// One step, with paths relative to the root.
    #[derive(Clone, Copy, Debug)]
    enum Op {
        Mkdir(&'static str),
        Rmdir(&'static str),
        Unlink(&'static str),
        Rename(&'static str, &'static str),
        /// `O_CREAT | O_EXCL`.
        CreateNew(&'static str),
        /// `O_CREAT | O_TRUNC`, then a write.
        Write(&'static str, &'static str),
        Read(&'static str),
        List(&'static str),
        Link(&'static str, &'static str),
        Symlink(&'static str, &'static str),
        Readlink(&'static str),
        /// `O_DIRECTORY` without `O_CREAT`.
        OpenDir(&'static str),
    }

    type Outcome = Result<String, Errno>;

    fn mem(fs: &mut MemFs, op: Op) -> Outcome {
        let b = str::as_bytes;
        let done = |r: Result<(), Errno>| r.map(|()| String::new());
        match op {
            Op::Mkdir(p) => done(fs.mkdir(ROOT, b(p), false)),
            Op::Rmdir(p) => done(fs.rmdir(ROOT, b(p), false)),
            Op::Unlink(p) => done(fs.unlink(ROOT, b(p), false)),
            Op::Rename(a, z) => done(fs.rename((ROOT, b(a)), (ROOT, b(z)), false)),
            Op::CreateNew(p) => {
                let how = OpenFlags { create: true, excl: true, write: true, ..OpenFlags::default() };
                fs.open(ROOT, b(p), how, false).map(|_| String::new())
            }
            Op::Write(p, data) => {
                let how = OpenFlags { follow: true, create: true, trunc: true, write: true, ..OpenFlags::default() };
                let node = fs.open(ROOT, b(p), how, false)?;
                fs.write_at(node, 0, b(data), false).map(|_| String::new())
            }
            Op::Read(p) => {
                let how = OpenFlags { follow: true, ..OpenFlags::default() };
                let node = fs.open(ROOT, b(p), how, false)?;
                if matches!(fs.node(node).data, Data::Dir { .. }) {
                    return Err(errno::ISDIR);
                }
                let mut buf = [0u8; 64];
                let n = fs.read_at(node, 0, &mut buf);
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            Op::List(p) => {
                let node = fs.lookup(ROOT, b(p), true, false)?;
                if !matches!(fs.node(node).data, Data::Dir { .. }) {
                    return Err(errno::NOTDIR);
                }
                let names: Vec<String> =
                    fs.listing(node).into_iter().map(|(n, _)| String::from_utf8_lossy(&n).into_owned()).collect();
                Ok(names.join(","))
            }
            Op::Link(a, z) => done(fs.link((ROOT, b(a), false), (ROOT, b(z)), false)),
            Op::Symlink(target, p) => done(fs.symlink(b(target), ROOT, b(p), false)),
            Op::Readlink(p) => fs.readlink(ROOT, b(p), false).map(|t| String::from_utf8_lossy(t).into_owned()),
            Op::OpenDir(p) => {
                let how = OpenFlags { follow: true, directory: true, ..OpenFlags::default() };
                fs.open(ROOT, b(p), how, false).map(|_| String::new())
            }
        }
    }

    /// Linux's error numbers as WASI's.
    fn wasi_errno(e: &std::io::Error) -> Errno {
        match e.raw_os_error() {
            Some(1) => errno::PERM,
            Some(2) => errno::NOENT,
            Some(16) => errno::BUSY,
            Some(17) => errno::EXIST,
            Some(20) => errno::NOTDIR,
            Some(21) => errno::ISDIR,
            Some(22) => errno::INVAL,
            Some(39) => errno::NOTEMPTY,
            Some(40) => errno::LOOP,
            other => panic!("unmapped error {other:?}: {e}"),
        }
    }

    fn real(root: &Path, op: Op) -> Outcome {
        use std::os::unix::fs::OpenOptionsExt;
        let at = |p: &str| root.join(p);
        let done = |r: std::io::Result<()>| r.map(|()| String::new()).map_err(|e| wasi_errno(&e));
        match op {
            Op::Mkdir(p) => done(fs::create_dir(at(p))),
            Op::Rmdir(p) => done(fs::remove_dir(at(p))),
            Op::Unlink(p) => done(fs::remove_file(at(p))),
            Op::Rename(a, z) => done(fs::rename(at(a), at(z))),
            Op::CreateNew(p) => done(fs::File::create_new(at(p)).map(drop)),
            Op::Write(p, data) => done(fs::write(at(p), data)),
            Op::Read(p) => fs::read_to_string(at(p)).map_err(|e| wasi_errno(&e)),
            Op::List(p) => {
                let mut names: Vec<String> = fs::read_dir(at(p))
                    .map_err(|e| wasi_errno(&e))?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| wasi_errno(&e))?;
                names.sort();
                Ok(names.join(","))
            }
            Op::Link(a, z) => done(fs::hard_link(at(a), at(z))),
            Op::Symlink(target, p) => done(std::os::unix::fs::symlink(target, at(p))),
            Op::Readlink(p) => {
                fs::read_link(at(p)).map(|t| t.to_string_lossy().into_owned()).map_err(|e| wasi_errno(&e))
            }
            Op::OpenDir(p) => {
                let mut options = fs::OpenOptions::new();
                options.read(true).custom_flags(0o200_000); // O_DIRECTORY
                done(options.open(at(p)).map(drop))
            }
        }
    }

    /// Runs `ops` against both and compares every step.
    fn agree(ops: &[Op]) {
        let tmp = tempfile::tempdir().unwrap();
        let mut fs = MemFs::new(Clock::default(), false);
        for (i, &op) in ops.iter().enumerate() {
            let (m, r) = (mem(&mut fs, op), real(tmp.path(), op));
            assert_eq!(m, r, "step {i}, {op:?}: memory {m:?}, kernel {r:?}");
        }
    }

    #[test]
    fn exclusive_creation_and_the_errors_of_a_missing_or_wrong_parent() {
        use Op::*;
        agree(&[
            CreateNew("a"),
            CreateNew("a"),
            Mkdir("d"),
            CreateNew("d"),
            CreateNew("nope/x"),
            CreateNew("a/x"),
            Mkdir("d"),
            Mkdir("a"),
            Mkdir("nope/d"),
            Mkdir("d/e/"),
            Write("d/e/f", "hi"),
            Read("d/e/f"),
            Read("d/e"),
            Read("d/e/f/"),
            OpenDir("a"),
            OpenDir("d/e"),
            OpenDir("nope"),
            Write("d", "x"),
            List("."),
            List("d/e"),
            List("a"),
        ]);
    }

    #[test]
    fn rename_over_files_and_empty_directories_but_not_full_ones() {
        use Op::*;
        agree(&[
            Write("a", "A"),
            Write("b", "B"),
            Rename("a", "b"),
            Read("b"),
            Read("a"),
            Rename("a", "c"),
            Mkdir("e"),
            Mkdir("f"),
            Write("f/x", "X"),
            Rename("e", "f"),
            Rename("f", "e"),
            List("e"),
            List("f"),
            Rename("b", "e"),
            Mkdir("g"),
            Rename("g", "b"),
            Rename("e", "e/sub"),
            Mkdir("e/sub"),
            Rename("e", "e/sub/deeper"),
            Rename("e/sub", "e/sub2"),
            Rename("b", "b"),
            Link("b", "b2"),
            Rename("b", "b2"),
            List("."),
            Read("b2"),
            Rename("b2/", "b3"),
            Rename("nope/a", "z"),
            Rename("b2", "nope/z"),
        ]);
    }

    #[test]
    fn removal_errors_match_linux() {
        use Op::*;
        agree(&[
            Mkdir("d"),
            Write("d/f", "x"),
            Rmdir("d"),
            Unlink("d"),
            Rmdir("d/f"),
            Unlink("d/f/"),
            Unlink("d/f"),
            Unlink("d/f"),
            Rmdir("d/"),
            Rmdir("d"),
            Mkdir("d/x"),
            Link("nope", "n"),
            Mkdir("l"),
            Link("l", "l2"),
        ]);
    }

    #[test]
    fn symlinks_resolve_beneath_the_root() {
        use Op::*;
        agree(&[
            Mkdir("d"),
            Write("d/f", "in d"),
            Symlink("d", "ld"),
            Symlink("f", "d/lf"),
            Read("ld/f"),
            Read("ld/lf"),
            Readlink("ld"),
            Readlink("d/f"),
            Symlink("x", "ld"),
            Symlink("loop", "loop"),
            Read("loop"),
            Symlink("nope", "dangling"),
            Read("dangling"),
            CreateNew("dangling"),
            Unlink("ld"),
            List("d"),
        ]);
    }

    #[test]
    fn an_unlinked_file_stays_readable_and_writable_through_its_descriptor() {
        let mut fs = MemFs::new(Clock::default(), false);
        let how = OpenFlags { create: true, write: true, ..OpenFlags::default() };
        let node = fs.open(ROOT, b"f", how, false).unwrap();
        fs.write_at(node, 0, b"kept", false).unwrap();
        fs.unlink(ROOT, b"f", false).unwrap();
        assert_eq!(fs.lookup(ROOT, b"f", true, false), Err(errno::NOENT));
        fs.write_at(node, 4, b"!", false).unwrap();
        let mut buf = [0u8; 8];
        let n = fs.read_at(node, 0, &mut buf);
        assert_eq!(&buf[..n], b"kept!");
        assert_eq!(fs.nlink(node), 0);
        let again = fs.open(ROOT, b"f", how, false).unwrap();
        assert_ne!(again, node, "a new file at the name is a new inode");

        // The kernel agrees.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let mut file = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).unwrap();
        file.write_all(b"kept").unwrap();
        fs::remove_file(&path).unwrap();
        file.write_all(b"!").unwrap();
        let mut text = String::new();
        std::io::Seek::rewind(&mut file).unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "kept!");
    }

    #[test]
    fn folding_finds_the_first_name_that_folds_alike() {
        let mut fs = MemFs::new(Clock::default(), true);
        fs.mkdir(ROOT, b"Lib", true).unwrap();
        assert_eq!(fs.mkdir(ROOT, b"LIB", true), Err(errno::EXIST));
        assert_eq!(fs.lookup(ROOT, b"lib", true, true), fs.lookup(ROOT, b"Lib", true, false));
        fs.mkdir(ROOT, "\u{e9}".as_bytes(), true).unwrap();
        assert_eq!(fs.mkdir(ROOT, "e\u{301}".as_bytes(), true), Err(errno::EXIST));
        assert_eq!(fs.spelled("LIB".as_bytes()), b"Lib");
        assert_eq!(fs.lookup(ROOT, b"lib", true, false), Err(errno::NOENT), "the host's own reads never fold");
    }
}
