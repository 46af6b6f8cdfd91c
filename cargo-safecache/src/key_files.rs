//! This defines `--key-file`: a key derived from files, as actions/cache's
//! `hashFiles()`. KEY gets `-` and a short BLAKE3 digest of the matching
//! files' names and contents appended, so the same files give the same
//! entry and a changed, added or removed file gives a new one.
//!
//! What is hashed, per file in byte order of its path as matched (relative
//! paths stay relative, so two checkouts of one tree get one key): the
//! path's length and bytes, then the BLAKE3 hash of its contents. A pattern
//! that matches no file is an error, never an empty digest: a typo must not
//! make every job share one key.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use safecache::Key;

use crate::exit::{self, Coded};

/// Hex digits of the digest appended to the key: 64 bits.
const DIGEST_HEX: usize = 16;

/// `key` with the digest of the files `patterns` match appended, or `key`
/// itself when there are no patterns.
pub(crate) fn derive(key: Key, patterns: &[String]) -> Result<Key> {
    if patterns.is_empty() {
        return Ok(key);
    }
    let files = matching(patterns)?;
    let mut hasher = blake3::Hasher::new();
    for path in &files {
        let name = path.as_os_str().as_bytes();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name);
        hash_file(&mut hasher, path).with_context(|| format!("cannot read --key-file `{}`", path.display()))?;
    }
    let digest = hasher.finalize().to_hex();
    let joined = format!("{key}-{}", &digest.as_str()[..DIGEST_HEX]);
    Key::new(&joined).map_err(|e| {
        Coded { code: exit::USAGE, message: format!("--key with --key-file makes an invalid key: {e}") }.into()
    })
}

/// Every regular file the patterns match, sorted and without duplicates.
fn matching(patterns: &[String]) -> Result<BTreeSet<PathBuf>> {
    let usage = |message: String| anyhow::Error::new(Coded { code: exit::USAGE, message });
    let mut files = BTreeSet::new();
    for pattern in patterns {
        let paths = glob::glob(pattern).map_err(|e| {
            usage(format!(
                "--key-file `{pattern}` is not a valid pattern: {e}; quote `*`, `?` and `[` literally as `[*]`"
            ))
        })?;
        let mut matched = false;
        let mut directories = 0;
        for path in paths {
            let path = path.with_context(|| format!("cannot read what --key-file `{pattern}` matches"))?;
            let meta =
                std::fs::metadata(&path).with_context(|| format!("cannot read --key-file `{}`", path.display()))?;
            // Directories matched by a glob such as `src/*` are walked by a
            // pattern of their own (`src/**/*`), as `hashFiles()` does.
            if meta.is_dir() {
                directories += 1;
                continue;
            }
            if !meta.is_file() {
                return Err(usage(format!(
                    "--key-file `{}` is not a regular file; name files, or directories' files with a glob such as `dir/**/*`",
                    path.display()
                )));
            }
            matched = true;
            files.insert(path);
        }
        if !matched && directories > 0 {
            return Err(usage(format!(
                "--key-file `{pattern}` matches only directories; name their files with a glob such as `{}/**`",
                pattern.trim_end_matches('/')
            )));
        }
        if !matched {
            return Err(usage(format!(
                "--key-file `{pattern}` matches no file; check the path (relative paths start from the current directory)"
            )));
        }
    }
    Ok(files)
}

/// The file's length and contents into `hasher`. Opened without blocking,
/// so a FIFO that slipped in between the check and the open cannot hang.
fn hash_file(hasher: &mut blake3::Hasher, path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut contents = blake3::Hasher::new();
    contents.update_reader(&mut file)?;
    hasher.update(contents.finalize().as_bytes());
    Ok(())
}
