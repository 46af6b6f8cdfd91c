//! Test support: helper processes, cache fixtures and tree snapshots.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, ExitStatus, Stdio};

use safecache::{Cache, Key, Options, Wait};

use crate::child::{DIR_VAR, ROLE_VAR};

/// A helper process running one role against a cache.
pub(crate) struct Child {
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The world-readable copy of this test binary a child of another user
    /// runs (deleted with the child).
    _exe_copy: Option<tempfile::TempDir>,
}

impl Child {
    pub(crate) fn spawn(dir: &Path, role: &str) -> Child {
        Child::spawn_as(dir, role, None)
    }

    /// Spawns the helper as another user (`uid` doubles as the gid).
    pub(crate) fn spawn_as(dir: &Path, role: &str, uid: Option<u32>) -> Child {
        use std::os::unix::fs::PermissionsExt;
        let exe = std::env::current_exe().unwrap();
        // Another user may not reach this binary (a clone in root's 0700
        // home): it runs a world-readable copy instead.
        let exe_copy = uid.map(|_| {
            let copy = tempfile::tempdir().unwrap();
            std::fs::set_permissions(copy.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::copy(&exe, copy.path().join("it")).unwrap();
            copy
        });
        let program = exe_copy.as_ref().map_or(exe, |c| c.path().join("it"));
        let mut command = Command::new(program);
        command
            .args(["--exact", "child_process", "--nocapture", "--test-threads", "1", "-q"])
            .env(ROLE_VAR, role)
            .env(DIR_VAR, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Child { child, stdin, stdout, _exe_copy: exe_copy }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads until the next event line and returns it without its `@@ `.
    pub(crate) fn event(&mut self) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "helper {} exited before reporting an event", self.pid());
            if let Some(event) = line.trim_end().strip_prefix("@@ ") {
                return event.to_owned();
            }
        }
    }

    /// Reads the next event and checks it starts with `prefix`.
    pub(crate) fn expect(&mut self, prefix: &str) -> String {
        let event = self.event();
        assert!(event.starts_with(prefix), "expected `{prefix}...` from helper {}, got `{event}`", self.pid());
        event
    }

    /// Writes a line to the helper's stdin (a "go" signal).
    pub(crate) fn send(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the helper's stdin, releasing a role blocked on it.
    pub(crate) fn release(&mut self) {
        drop(self.stdin.take());
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub(crate) fn wait(mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.child.wait().unwrap()
    }
}

pub(crate) fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

pub(crate) fn new_cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open_ambient(dir.path().join("cache"), Options::default()).unwrap();
    (dir, cache)
}

/// Publishes `key` with one file `data` containing `content`.
pub(crate) fn publish(cache: &Cache, key_name: &str, content: &str) {
    cache.get_or_fill(&key(key_name), Wait::NoWait, |dir| std::fs::write(dir.path().join("data"), content)).unwrap();
}

/// Every path beneath `dir` (symlinks not followed) with its kind and, for
/// files, contents: a snapshot to compare before and after.
pub(crate) fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&path).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(rel, "dir".to_owned());
                walk(base, &path, out);
            } else {
                out.insert(rel, String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Names directly inside `dir`, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
