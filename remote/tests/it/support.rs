//! What the tests share: temp directories as handles, and trees read back
//! for comparison.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// A temp directory and a handle to it.
pub(crate) struct TempDir {
    pub(crate) temp: tempfile::TempDir,
    pub(crate) dir: Dir,
}

pub(crate) fn temp_dir() -> TempDir {
    let temp = tempfile::tempdir().unwrap();
    let dir = Dir::open_ambient_dir(temp.path(), ambient_authority()).unwrap();
    TempDir { temp, dir }
}

/// What a tree holds, name by name: a file's content and whether it is
/// executable, a directory, a symlink's target; with each mode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    File(Vec<u8>, u32),
    Dir(u32),
    Link(Vec<u8>),
}

pub(crate) fn read_tree(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    fn walk(dir: &Path, prefix: &[u8], out: &mut BTreeMap<Vec<u8>, Seen>) {
        for item in std::fs::read_dir(dir).unwrap() {
            let item = item.unwrap();
            let mut name = prefix.to_vec();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(item.file_name().as_bytes());
            let meta = std::fs::symlink_metadata(item.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_symlink() {
                let target = std::fs::read_link(item.path()).unwrap();
                out.insert(name, Seen::Link(target.as_os_str().as_bytes().to_vec()));
            } else if meta.is_dir() {
                out.insert(name.clone(), Seen::Dir(mode));
                walk(&item.path(), &name, out);
            } else {
                out.insert(name, Seen::File(std::fs::read(item.path()).unwrap(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, b"", &mut out);
    out
}
