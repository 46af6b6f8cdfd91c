//! This defines the power-loss model: what of the shared directory is
//! durable, and what a power cut leaves of it.
//!
//! A write, a new name, a rename or an unlink stays pending until an fsync
//! makes it durable. The guest's fsyncs reach the host through the
//! `safecache_host.sync` import ([`Durable::sync`]), which records the state
//! of the synced file (its bytes) or directory (its names, each with its
//! inode and kind) as durable, keyed by inode. The image starts as the whole
//! directory when the race begins.
//!
//! A power cut ([`Durable::cut`]) rebuilds the directory from the root's
//! inode down: each directory holds either its last-synced names or, if the
//! kernel happened to write it back, its current ones; each file its
//! last-synced bytes (empty if it was never synced but its name survived)
//! or its current bytes. [`Keep::Nothing`] keeps nothing pending: every
//! directory and file is exactly as last synced. [`Keep::Some`] keeps the
//! current state of each inode with probability 1/2, drawn from the seed.
//! Either is a state the kernel may leave: an fsync only sets a floor under
//! one inode's state. Intermediate states of one inode, and the atomicity of
//! a rename across two directories, are not modelled; a directory reached
//! by two names is kept at the first only.
//!
//! A directory's uncommitted mark (its sticky bit, docs/PROTOCOL.md) is part
//! of its state: durable as of the directory's last sync, and lost (as any
//! chmod may be) if the directory was never synced.
//!
//! The model reads and rebuilds the directory through [`Tree`], over either
//! filesystem. In memory, inodes are never reused within a run and an
//! unlinked file's bytes stay readable by inode. Over a real directory,
//! every inode the image names is held open, so the host filesystem never
//! reuses its number while the image refers to it, and the current bytes of
//! an unlinked file can still be read at the cut.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::rngs::StdRng;

use crate::tree::{Ino, Kind, Tree};

/// A directory's names, sorted.
type Listing = BTreeMap<String, (Ino, Kind)>;

/// Every directory's names and mark, by inode.
type Dirs = HashMap<Ino, (Listing, bool)>;

/// What a power cut keeps of the pending state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: every directory and file is as last synced.
    Nothing,
    /// The current state of a random half of the inodes, drawn from the seed.
    Some,
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Keep::Nothing => "keep nothing pending",
            Keep::Some => "keep a random part of what is pending",
        })
    }
}

/// The durable image of the shared directory.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// Whether syncs are recorded (only in scenarios with a power cut).
    enabled: bool,
    root: Option<Ino>,
    dirs: HashMap<Ino, Listing>,
    /// Whether each synced directory carried the uncommitted mark then.
    marks: HashMap<Ino, bool>,
    files: HashMap<Ino, Vec<u8>>,
    /// An open handle to every inode the image names.
    pins: HashMap<Ino, File>,
    /// How many syncs were recorded.
    pub(crate) syncs: u64,
}

fn list(tree: &dyn Tree, path: &Path) -> io::Result<Listing> {
    let mut out = Listing::new();
    for name in tree.list(path)? {
        let stat = tree.stat(&path.join(&name))?;
        out.insert(name, (stat.ino, stat.kind));
    }
    Ok(out)
}

impl Durable {
    /// Starts recording, with everything under `dir` durable.
    pub(crate) fn enable(&mut self, tree: &dyn Tree) -> io::Result<()> {
        self.enabled = true;
        self.root = Some(tree.stat(Path::new(""))?.ino);
        self.snapshot_tree(tree, Path::new(""))
    }

    fn snapshot_tree(&mut self, tree: &dyn Tree, path: &Path) -> io::Result<()> {
        let listing = self.snapshot(tree, path)?;
        for (name, (_, kind)) in listing {
            match kind {
                Kind::Dir => self.snapshot_tree(tree, &path.join(&name))?,
                Kind::File => {
                    self.snapshot(tree, &path.join(&name))?;
                }
                Kind::Other => {}
            }
        }
        Ok(())
    }

    /// Records the current state of the file or directory at `path` as
    /// durable; returns a directory's listing (empty for a file).
    fn snapshot(&mut self, tree: &dyn Tree, path: &Path) -> io::Result<Listing> {
        let stat = tree.stat(path)?;
        let id = stat.ino;
        match stat.kind {
            Kind::Dir => {
                let listing = list(tree, path)?;
                for (name, (child, kind)) in &listing {
                    if *kind != Kind::Other
                        && !self.pins.contains_key(child)
                        && let Some(pin) = tree.pin(&path.join(name))?
                    {
                        self.pins.insert(*child, pin);
                    }
                }
                self.pin(tree, id, path)?;
                self.dirs.insert(id, listing.clone());
                self.marks.insert(id, stat.marked);
                Ok(listing)
            }
            Kind::File => {
                let bytes = tree.read(path)?;
                self.pin(tree, id, path)?;
                self.files.insert(id, bytes);
                Ok(Listing::new())
            }
            Kind::Other => Ok(Listing::new()),
        }
    }

    fn pin(&mut self, tree: &dyn Tree, id: Ino, path: &Path) -> io::Result<()> {
        if !self.pins.contains_key(&id)
            && let Some(pin) = tree.pin(path)?
        {
            self.pins.insert(id, pin);
        }
        Ok(())
    }

    /// An fsync of `path` (relative to the root): 0, or -1 if it does not
    /// exist, -2 on error.
    pub(crate) fn sync(&mut self, tree: &dyn Tree, path: &Path) -> i32 {
        if !self.enabled {
            return if tree.exists(path) { 0 } else { -1 };
        }
        self.syncs += 1;
        match self.snapshot(tree, path) {
            Ok(_) => 0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => -1,
            Err(_) => -2,
        }
    }

    /// Cuts the power: rebuilds `dir` from the durable image, keeping what
    /// `keep` says of the pending state (drawing from `rng`), and stops
    /// recording. Returns a line for the trace.
    pub(crate) fn cut(&mut self, tree: &mut dyn Tree, keep: Keep, rng: &mut StdRng) -> io::Result<String> {
        let Some(root) = self.root else { return Ok("power cut: nothing recorded".to_owned()) };
        // The current state, read before anything is changed.
        let mut current_dirs: Dirs = HashMap::new();
        let mut current_files: HashMap<Ino, Vec<u8>> = HashMap::new();
        read_current(tree, Path::new(""), &mut current_dirs, &mut current_files)?;
        let mut kept = 0u32;
        let mut lost = 0u32;
        let mut visited = HashSet::new();
        let mut plan = Vec::new();
        self.plan(
            root,
            Path::new(""),
            keep,
            rng,
            (&current_dirs, &mut current_files),
            &mut visited,
            &mut plan,
            (&mut kept, &mut lost),
            &*tree,
        )?;
        tree.clear()?;
        for (rel, node) in plan {
            match node {
                Node::File(bytes) => tree.write(&rel, &bytes)?,
                Node::Dir { marked } => {
                    tree.create_dir(&rel)?;
                    if marked {
                        tree.set_marked(&rel, true)?;
                    }
                }
            }
        }
        *self = Durable::default();
        Ok(format!("{keep}: {kept} pending inode(s) kept, {lost} lost"))
    }

    /// Appends to `plan` what to create for the inode `id` at `rel` (and
    /// beneath it).
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        id: Ino,
        rel: &Path,
        keep: Keep,
        rng: &mut StdRng,
        (current_dirs, current_files): (&Dirs, &mut HashMap<Ino, Vec<u8>>),
        visited: &mut HashSet<Ino>,
        plan: &mut Vec<(PathBuf, Node)>,
        (kept, lost): (&mut u32, &mut u32),
        tree: &dyn Tree,
    ) -> io::Result<()> {
        if !visited.insert(id) {
            return Ok(());
        }
        let durable = (self.dirs.get(&id).cloned().unwrap_or_default(), self.marks.get(&id).copied().unwrap_or(false));
        let current = current_dirs.get(&id).cloned().unwrap_or_default();
        let (listing, marked) = if durable == current {
            durable
        } else if keep == Keep::Some && rng.random_bool(0.5) {
            *kept += 1;
            current
        } else {
            *lost += 1;
            durable
        };
        if !rel.as_os_str().is_empty() {
            plan.push((rel.to_owned(), Node::Dir { marked }));
        }
        for (name, (child, kind)) in listing {
            let child_rel = rel.join(&name);
            match kind {
                Kind::Dir => self.plan(
                    child,
                    &child_rel,
                    keep,
                    rng,
                    (current_dirs, current_files),
                    visited,
                    plan,
                    (&mut *kept, &mut *lost),
                    tree,
                )?,
                Kind::File => {
                    let durable = self.files.get(&child).cloned().unwrap_or_default();
                    let current = match current_files.get(&child) {
                        Some(bytes) => bytes.clone(),
                        None => self.unlinked_bytes(tree, child)?,
                    };
                    let bytes = if durable == current {
                        durable
                    } else if keep == Keep::Some && rng.random_bool(0.5) {
                        *kept += 1;
                        current
                    } else {
                        *lost += 1;
                        durable
                    };
                    plan.push((child_rel, Node::File(bytes)));
                }
                Kind::Other => {}
            }
        }
        Ok(())
    }

    /// The current bytes of a file no name leads to any more: the tree's
    /// own (in memory), or read through the handle that pins it (empty if
    /// it was never pinned).
    fn unlinked_bytes(&self, tree: &dyn Tree, id: Ino) -> io::Result<Vec<u8>> {
        if let Some(bytes) = tree.read_ino(id) {
            return Ok(bytes);
        }
        let Some(mut file) = self.pins.get(&id) else { return Ok(Vec::new()) };
        let mut bytes = Vec::new();
        file.rewind()?;
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

/// What a power cut recreates at one path.
enum Node {
    Dir { marked: bool },
    File(Vec<u8>),
}

/// Reads every directory listing (with its mark) and file under `path`, by
/// inode.
fn read_current(tree: &dyn Tree, path: &Path, dirs: &mut Dirs, files: &mut HashMap<Ino, Vec<u8>>) -> io::Result<()> {
    let listing = list(tree, path)?;
    for (name, (child, kind)) in &listing {
        match kind {
            Kind::Dir => read_current(tree, &path.join(name), dirs, files)?,
            Kind::File => {
                files.insert(*child, tree.read(&path.join(name))?);
            }
            Kind::Other => {}
        }
    }
    let stat = tree.stat(path)?;
    dirs.insert(stat.ino, (listing, stat.marked));
    Ok(())
}
