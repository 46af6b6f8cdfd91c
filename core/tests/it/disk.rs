//! Real filesystems at their limits: a full disk and a read-only one, on a
//! small tmpfs mounted for the test (skipped, saying so, where mounting is
//! not allowed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use safecache::{Cache, Error, Options, Wait};

use crate::support::{key, names, publish, tree};

/// A tmpfs mounted for one test, unmounted on drop.
pub(crate) struct Mount {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Mount {
    pub(crate) fn tmpfs(size: &str) -> Option<Mount> {
        Mount::tmpfs_with(&format!("size={size}"))
    }

    /// A tmpfs with the given mount options (`size=2m,nr_inodes=64`).
    pub(crate) fn tmpfs_with(options: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            // Private to its owner, as a cache dir must be (a tmpfs root is
            // world-writable by default, which safecache refuses).
            .args(["-t", "tmpfs", "-o", &format!("{options},mode=0700"), "tmpfs"])
            .arg(&path)
            .output();
        let refused = match &out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().replace('\n', " ")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refused {
            eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {why}");
            return None;
        }
        Some(Mount { _dir: dir, path })
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.path).status().unwrap();
        assert!(status.success());
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_fails_the_fill_publishes_nothing_and_keeps_other_entries() {
    let Some(mount) = Mount::tmpfs("512k") else { return };
    let cache = Cache::open_ambient(mount.path().join("cache"), Options::default()).unwrap();
    publish(&cache, "small", "fits");
    let err = cache
        .get_or_fill(&key("huge"), Wait::NoWait, |dir| {
            let mut file = std::fs::File::create(dir.path().join("blob"))?;
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..64 {
                file.write_all(&chunk)?; // 4 MiB into 512 KiB: ENOSPC
            }
            file.sync_all()
        })
        .unwrap_err();
    let Error::Fill { source, .. } = &err else { panic!("{err:?}") };
    assert!(source.to_string().contains("No space left on device"), "{source}");
    assert!(cache.get(&key("huge")).unwrap().is_none(), "nothing published");
    assert!(names(&mount.path().join("cache/.safecache/tmp")).is_empty(), "the temp is removed, freeing the space");
    assert_eq!(std::fs::read_to_string(cache.path().join("small/data")).unwrap(), "fits");
    // The space came back: a fill that fits succeeds.
    publish(&cache, "after", "ok");
}

#[test]
fn a_read_only_dir_is_refused_without_change() {
    let Some(mount) = Mount::tmpfs("64k") else { return };
    mount.remount_read_only();
    let before = tree(mount.path());
    let err = Cache::open_ambient(mount.path(), Options::default()).unwrap_err();
    assert!(err.to_string().starts_with("failed to create the cache marker in"), "{err}");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("Read-only file system"), "{source}");
    assert_eq!(tree(mount.path()), before);
}
