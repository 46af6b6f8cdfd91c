//! Helpers for driving the built `cargo-safecache` binary with real
//! processes: a sandbox with its own cache dir, background processes whose
//! output lines arrive on channels, tree snapshots and a git fixture.
//!
//! Synchronization is by pipes and by the locks themselves, never by
//! sleeping: a command under test prints `ready` and then blocks reading its
//! stdin, which the test controls; a waiter is known to be blocked once it
//! has announced the wait on stderr. Every wait on a channel has a generous
//! deadline, so a broken protection fails the test instead of hanging it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen promptly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// The binary under test: the one this build made, unless
/// `SAFECACHE_TEST_BIN` names another (an older build, to check that a test
/// fails without the protection it covers).
pub(crate) fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("SAFECACHE_TEST_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => env!("CARGO_BIN_EXE_cargo-safecache").to_owned(),
    })
}

/// A temp dir holding a cache dir and anything else a test needs.
pub(crate) struct Sandbox {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) cache: PathBuf,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        let tmp = tempfile::Builder::new().prefix("safecache-cli-").tempdir().expect("create temp dir");
        let cache = tmp.path().join("cache");
        Sandbox { tmp, cache }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `cargo-safecache ARGS` on this sandbox's cache, with a clean
    /// environment: no inherited lease, no timeout, no color.
    pub(crate) fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("SAFECACHE_DIR", &self.cache)
            .env("CARGO_TERM_COLOR", "never")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("T", self.tmp.path())
            .env_remove("SAFECACHE_LOCK_TIMEOUT")
            .env_remove("SAFECACHE_LEASE")
            .env_remove("SAFECACHE_LEASE_DIR")
            .env_remove("SAFECACHE_OUT")
            .env_remove("SAFECACHE_ENTRY")
            .env_remove("SAFECACHE_HIT")
            .env_remove("SAFECACHE_LOG")
            // A developer's settings must not change what the tests see.
            .env_remove("SAFECACHE_DURABILITY")
            .env_remove("SAFECACHE_AUTO_GC")
            .env_remove("SAFECACHE_MAX_SIZE")
            .env_remove("SAFECACHE_MAX_AGE")
            .env_remove("SAFECACHE_MIN_FREE")
            .env_remove("SAFECACHE_VERIFY_ON_READ")
            .env_remove("SAFECACHE_REMOTE")
            .env_remove("SAFECACHE_REMOTE_MODE")
            .env_remove("SAFECACHE_REMOTE_NAMESPACE")
            .env_remove("SAFECACHE_REMOTE_TRUSTED_KEYS")
            .env_remove("SAFECACHE_REMOTE_SIGNING_KEY")
            .env_remove("SAFECACHE_REMOTE_TIMEOUT")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs to completion and captures everything.
    pub(crate) fn run<I, S>(&self, args: I) -> Out
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Out::of(&mut self.cmd(args))
    }

    /// Starts in the background with piped stdin, stdout and stderr.
    pub(crate) fn spawn<I, S>(&self, args: I) -> Bg
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Bg::spawn(self.cmd(args))
    }

    /// Fills `key` with one file `f` containing `content`.
    pub(crate) fn fill(&self, key: &str, content: &str) -> PathBuf {
        let out = self.run(["run", "--key", key, "--", "sh", "-c", &format!("echo {content} > \"$SAFECACHE_OUT/f\"")]);
        out.assert_code(0);
        PathBuf::from(out.last_stdout_line())
    }
}

/// A finished command.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    pub(crate) fn of(cmd: &mut Command) -> Out {
        let out = cmd.output().expect("run cargo-safecache");
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub(crate) fn assert_code(&self, code: i32) -> &Out {
        assert_eq!(self.code, Some(code), "unexpected exit status\n{self}");
        self
    }

    pub(crate) fn last_stdout_line(&self) -> String {
        self.stdout.lines().last().unwrap_or_else(|| panic!("no stdout\n{self}")).to_owned()
    }

    /// Asserts a failure whose last stderr line is `error: ...` containing
    /// `fragment` (status lines, such as a wait notice, may come before).
    #[track_caller]
    pub(crate) fn assert_error(&self, code: i32, fragment: &str) {
        self.assert_code(code);
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "expected one error line\n{self}");
        let last = self.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(fragment),
            "expected an error mentioning {fragment:?}\n{self}"
        );
    }

    /// Asserts the documented error shape: exactly one line on stderr,
    /// `error: ...`, containing `fragment`.
    #[track_caller]
    pub(crate) fn assert_one_line_error(&self, code: i32, fragment: &str) {
        self.assert_code(code);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected a one-line error\n{self}");
        assert!(lines[0].starts_with("error: "), "expected `error: ...`\n{self}");
        assert!(lines[0].contains(fragment), "expected the error to mention {fragment:?}\n{self}");
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit: {:?}\n--- stdout\n{}--- stderr\n{}---", self.code, self.stdout, self.stderr)
    }
}

/// A line of output from a background process.
#[derive(Debug)]
pub(crate) enum Line {
    Stdout(String),
    Stderr(String),
}

/// A background `cargo-safecache`, its output arriving line by line.
pub(crate) struct Bg {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    pub(crate) seen: Vec<Line>,
}

impl Bg {
    pub(crate) fn spawn(mut cmd: Command) -> Bg {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn cargo-safecache");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || pump(stdout, |l| tx.send(Line::Stdout(l)).is_ok()));
        std::thread::spawn(move || pump(stderr, |l| tx2.send(Line::Stderr(l)).is_ok()));
        let stdin = child.stdin.take();
        Bg { child, stdin, lines, seen: Vec::new() }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line matching `pred` and returns it.
    #[track_caller]
    pub(crate) fn expect(&mut self, what: &str, pred: impl Fn(&Line) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    let text = match &line {
                        Line::Stdout(s) | Line::Stderr(s) => s.clone(),
                    };
                    self.seen.push(line);
                    if hit {
                        return text;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("timed out waiting for {what}; saw {:?}", self.seen),
                Err(RecvTimeoutError::Disconnected) => panic!("process ended before {what}; saw {:?}", self.seen),
            }
        }
    }

    #[track_caller]
    pub(crate) fn expect_stdout(&mut self, text: &str) -> String {
        self.expect(&format!("stdout {text:?}"), |l| matches!(l, Line::Stdout(s) if s.contains(text)))
    }

    #[track_caller]
    pub(crate) fn expect_stderr(&mut self, text: &str) -> String {
        self.expect(&format!("stderr {text:?}"), |l| matches!(l, Line::Stderr(s) if s.contains(text)))
    }

    /// Waits for a line on stderr that is exactly `text`: what a fill
    /// prints goes there, beside status lines that quote the fill's script.
    #[track_caller]
    pub(crate) fn expect_stderr_line(&mut self, text: &str) -> String {
        self.expect(&format!("the stderr line {text:?}"), |l| matches!(l, Line::Stderr(s) if s == text))
    }

    /// Writes a line to the process's stdin (which CMD inherits).
    pub(crate) fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Waits for the process to end, within [`PATIENCE`], and returns its
    /// status and every line it printed.
    #[track_caller]
    pub(crate) fn finish(mut self) -> (ExitStatus, Vec<Line>) {
        drop(self.stdin.take());
        self.finish_keeping_stdin()
    }

    /// Like [`Bg::finish`], but keeps stdin open until the process has
    /// exited, so that EOF cannot be what ends it.
    #[track_caller]
    pub(crate) fn finish_keeping_stdin(mut self) -> (ExitStatus, Vec<Line>) {
        let _stdin = self.stdin.take();
        let pid = self.child.id();
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(PATIENCE) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("pid {pid} did not finish in time; saw {:?}", self.seen);
            }
        };
        // The pipes close when the process (and CMD) exit; drain them.
        let mut seen = self.seen;
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            seen.push(line);
        }
        (status, seen)
    }
}

fn pump(stream: impl Read, mut send: impl FnMut(String) -> bool) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if !send(line) {
            return;
        }
    }
}

pub(crate) fn stdout_of(lines: &[Line]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| match l {
            Line::Stdout(s) => Some(s.as_str()),
            Line::Stderr(_) => None,
        })
        .collect()
}

/// Every path under `root` (without following symlinks) with its kind,
/// mode, mtime and, for files, contents: two equal snapshots mean nothing
/// was created, deleted, written or touched.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries {
            let entry = entry.expect("read dir entry");
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(root).expect("beneath root").display().to_string();
            let stamp = format!("mode {:o} mtime {}.{}", meta.mode(), meta.mtime(), meta.mtime_nsec());
            if rel == ".safecache/stats" {
                // The usage counters change with every use, a refused one
                // included (a wait that timed out counts): they are advice
                // about the cache, not its contents.
                continue;
            }
            if meta.is_dir() && rel == ".safecache/holders" {
                // Holder records are transient by design: an operation that
                // takes a lock writes one and removes it before releasing the
                // lock, which touches this directory's mtime and nothing else.
                out.insert(rel, format!("dir mode {:o}", meta.mode()));
                walk(root, &path, out);
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {stamp}"));
                walk(root, &path, out);
            } else if meta.is_symlink() {
                out.insert(rel, format!("symlink -> {}", std::fs::read_link(&path).expect("readlink").display()));
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                out.insert(rel, format!("file {stamp} {:?}", String::from_utf8_lossy(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(meta) = std::fs::symlink_metadata(root) {
        out.insert(
            ".".to_owned(),
            format!("{:?} mode {:o} mtime {}.{}", meta.file_type(), meta.mode(), meta.mtime(), meta.mtime_nsec()),
        );
    }
    walk(root, root, &mut out);
    out
}

/// Names in a directory, or an empty set if it does not exist.
pub(crate) fn names(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Runs git with a clean configuration and returns its trimmed stdout.
#[track_caller]
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A local repository with one commit; returns its HEAD.
pub(crate) fn make_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).expect("create repo dir");
    git(dir, &["init", "-q"]);
    std::fs::write(dir.join("README"), "safecache test repository\n").expect("write README");
    git(dir, &["add", "README"]);
    git(dir, &["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "one"]);
    git(dir, &["rev-parse", "HEAD"])
}

/// Creates a fifo with the real `mkfifo` tool.
pub(crate) fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo failed");
}

/// What an entry holds, for comparing two entries' contents: each path
/// below `root` (symlinks not followed) with its kind, for a file whether
/// any execute bit is set and a digest of its bytes, for a symlink its
/// target. Times, owners and other mode bits are left out: a restored entry
/// keeps what an archive carries (docs/REMOTE.md, "The archive").
pub(crate) fn tree_of(root: &Path) -> BTreeMap<String, String> {
    use std::hash::{Hash, Hasher};
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("read dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let rel = path.strip_prefix(root).expect("beneath root").display().to_string();
            if meta.is_dir() {
                out.insert(rel, "dir".to_owned());
                walk(root, &path, out);
            } else if meta.is_symlink() {
                out.insert(rel, format!("symlink -> {}", std::fs::read_link(&path).expect("readlink").display()));
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).expect("read file");
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut hasher);
                let exec = if meta.mode() & 0o111 != 0 { "exec " } else { "" };
                out.insert(rel, format!("file {exec}{} bytes {:016x}", bytes.len(), hasher.finish()));
            } else {
                out.insert(rel, format!("other {:?}", meta.file_type()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The JSON objects a command printed on stdout (`--message-format json`)
/// whose `reason` is `reason`.
pub(crate) fn json_reports<'a>(stdout: impl IntoIterator<Item = &'a str>, reason: &str) -> Vec<serde_json::Value> {
    stdout
        .into_iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == reason)
        .collect()
}

/// Every regular file under `root` whose bytes contain `needle`.
pub(crate) fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &[u8], out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                walk(&path, needle, out);
            } else if meta.is_file() && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, needle, &mut out);
    out
}
