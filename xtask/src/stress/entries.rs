//! Checks of the entries the fill script writes, complete or read unpinned.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Checks that `dir` is a complete entry of `key` as the fill script writes
/// it: a manifest, then exactly the files it names, each with both halves.
/// Returns the number of files.
pub(super) fn verify_entry(dir: &Path, key: &str) -> std::result::Result<usize, String> {
    let manifest =
        fs::read_to_string(dir.join("MANIFEST")).map_err(|e| format!("cannot read MANIFEST (written last): {e}"))?;
    let lines: Vec<&str> = manifest.lines().collect();
    let (nonce, n) = match lines.as_slice() {
        [header, "end"] => match header.split(' ').collect::<Vec<_>>().as_slice() {
            ["stress-manifest", k, nonce, n] if *k == key => {
                ((*nonce).to_owned(), n.parse::<usize>().map_err(|_| format!("bad count in MANIFEST: {header}"))?)
            }
            _ => return Err(format!("MANIFEST does not describe `{key}`: {header:?}")),
        },
        _ => return Err(format!("MANIFEST is truncated or malformed: {manifest:?}")),
    };
    for i in 0..n {
        let name = format!("f{i}");
        let text = fs::read_to_string(dir.join(&name)).map_err(|e| format!("cannot read {name}: {e}"))?;
        let want = format!("{key} {nonce} {i}\nsecond half {i}\n");
        if text != want {
            return Err(format!("{name} holds {text:?}, not {want:?}"));
        }
    }
    let mut extra = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| format!("cannot list the entry: {e}"))?;
    for entry in listing {
        let name = entry.map_err(|e| format!("cannot list the entry: {e}"))?.file_name().to_string_lossy().into_owned();
        let expected = name == "MANIFEST"
            || name
                .strip_prefix('f')
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < n && name == format!("f{i}"));
        if !expected {
            extra.push(name);
        }
    }
    if !extra.is_empty() {
        extra.sort();
        return Err(format!("files not in the manifest (written after publish?): {}", extra.join(", ")));
    }
    Ok(n)
}

/// What an unpinned reader saw.
pub(super) enum Read {
    Verified,
    /// Removed (and maybe replaced) while being read: allowed without a pin.
    Vanished,
    Partial(String),
}

/// Verifies the entry at `path` without a pin. It may vanish at any moment,
/// so a failed verification counts only if the same directory is still at
/// `path` afterwards: an open handle keeps its inode from being reused, and
/// a directory renamed aside never comes back.
pub(super) fn verify_unpinned(path: &Path, key: &str) -> Read {
    let handle = match fs::File::open(path) {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Read::Vanished,
        Err(e) => return Read::Partial(format!("cannot open `{}`: {e}", path.display())),
    };
    let Ok(meta) = handle.metadata() else { return Read::Partial(format!("cannot stat `{}`", path.display())) };
    // The entry this reader was given is gone, and an in-place fill of the
    // key is building the next one at the same path: its directory carries
    // the uncommitted mark, so it is no entry yet. An unpinned reader can
    // meet it (docs/CLI.md, `--in-place`); a pinned one cannot.
    if meta.mode() & 0o1000 != 0 {
        return Read::Vanished;
    }
    match verify_entry(path, key) {
        Ok(_) => Read::Verified,
        Err(reason) => match fs::symlink_metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (meta.dev(), meta.ino()) => Read::Partial(reason),
            _ => Read::Vanished,
        },
    }
}

/// `__stress-verify KEY`: run as CMD under `use --key KEY`, verifies the
/// pinned entry found through `SAFECACHE_DIR`. Exits [`VERIFY_PARTIAL`]
/// if it is absent or incomplete: a pin guarantees it is neither.
pub(crate) fn verify(args: &[String]) -> Result<()> {
    let [key] = args else { bail!("usage: xtask {VERIFY} KEY") };
    let dir = std::env::var_os("SAFECACHE_DIR").context("SAFECACHE_DIR is not set: run this under `use --key`")?;
    let path = Path::new(&dir).join(stored_name(key));
    if let Err(reason) = verify_entry(&path, key) {
        eprintln!("stress-verify: the pinned entry `{key}` at {} is incomplete: {reason}", path.display());
        std::process::exit(VERIFY_PARTIAL);
    }
    Ok(())
}
