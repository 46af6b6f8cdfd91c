//! The per-cache config file: the durability level stored, read at open and
//! overridden per handle; a garbage, oversized, symlinked or FIFO config
//! refuses the cache with a message naming the file and the fix, and
//! changes nothing.

use std::path::Path;

use safecache::{Cache, Durability, Error, Key, Options, Wait};

fn open(dir: &Path, durability: Option<Durability>) -> Result<Cache, Error> {
    Cache::open_ambient(dir, Options { durability, ..Options::default() })
}

fn config_file(dir: &Path) -> std::path::PathBuf {
    dir.join(".safecache/config.json")
}

#[test]
fn the_stored_level_is_read_at_open_and_an_option_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), None).unwrap();
    assert_eq!(cache.durability(), Durability::Full, "the default");
    assert_eq!(cache.config().unwrap().durability, None);
    let stored = cache.update_config(Wait::NoWait, |c| c.durability = Some(Durability::None)).unwrap();
    assert_eq!(stored.durability, Some(Durability::None));
    assert_eq!(std::fs::read_to_string(config_file(dir.path())).unwrap().trim(), "{\n  \"durability\": \"none\"\n}");
    assert_eq!(open(dir.path(), None).unwrap().durability(), Durability::None);
    assert_eq!(open(dir.path(), Some(Durability::Full)).unwrap().durability(), Durability::Full);
    // The fresh file was renamed into place: nothing is left in tmp/.
    assert_eq!(std::fs::read_dir(dir.path().join(".safecache/tmp")).unwrap().count(), 0);
    // Fills work at either level.
    let key = Key::new("k").unwrap();
    let none = open(dir.path(), None).unwrap();
    none.get_or_fill(&key, Wait::NoWait, |d| std::fs::write(d.path().join("f"), "x")).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("k/f")).unwrap(), "x");
}

#[test]
fn unknown_fields_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), None).unwrap();
    std::fs::write(config_file(dir.path()), r#"{"durability":"none","later_setting":{"max_age":"30d"}}"#).unwrap();
    assert_eq!(open(dir.path(), None).unwrap().durability(), Durability::None);
}

/// Every path beneath `dir` with its size, read without opening anything
/// (the FIFO case must not block).
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path.display().to_string(), if meta.is_file() { meta.len() } else { 0 }));
        }
    }
    out.sort();
    out
}

fn assert_refused(dir: &Path, what: &str) {
    let before = listing(dir);
    let err = open(dir, None).expect_err(what);
    let msg = err.to_string();
    assert!(matches!(err, Error::BadConfig { .. }), "{what}: {err:?}");
    assert!(msg.contains(".safecache/config.json") && msg.contains("config durability full"), "{what}: {msg}");
    assert!(!msg.contains('\n'), "{what}: one line: {msg}");
    assert_eq!(listing(dir), before, "{what}: nothing changed");
}

#[test]
fn a_garbage_config_refuses_the_cache_naming_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path(), None).unwrap();
    let file = config_file(dir.path());
    for (what, bytes) in [
        ("not JSON", b"durability = none".to_vec()),
        ("an empty file", Vec::new()),
        ("an unknown level", br#"{"durability":"fast"}"#.to_vec()),
        ("not an object", b"[1, 2]".to_vec()),
        ("too long", vec![b' '; 64 * 1024]),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        assert_refused(dir.path(), what);
    }
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &file).unwrap();
    assert_refused(dir.path(), "a symlink");
    std::fs::remove_file(&file).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, &file, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
    assert_refused(dir.path(), "a FIFO (never blocked on)");
    // The fix the message names: a handle opened at a given level does not
    // read the config, and storing a level replaces the garbage.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, b"garbage").unwrap();
    let repair = open(dir.path(), Some(Durability::Full)).unwrap();
    repair.update_config(Wait::NoWait, |c| c.durability = Some(Durability::Full)).unwrap();
    assert_eq!(open(dir.path(), None).unwrap().durability(), Durability::Full);
}
