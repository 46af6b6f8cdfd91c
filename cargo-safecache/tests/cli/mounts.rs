//! Filesystems the tests mount themselves: loop images (ext4, xfs, btrfs),
//! tmpfs, overlayfs, and a case-insensitive FUSE passthrough (`cifs.py`).
//!
//! Each constructor mounts and waits until `/proc/self/mountinfo` shows the
//! mount (woken by the kernel's notice that the mount table changed, not by
//! sleeping), and each [`Mount`] is unmounted when dropped: declare it after
//! the [`Sandbox`](crate::support::Sandbox) it lives in, so it goes first.
//! When the machine refuses a mount (not root, no loop devices, no
//! `/dev/fuse`, a missing tool or kernel module), the constructor returns
//! the reason, and the test prints it with [`skip`] and returns.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a mount may take to appear or go.
const MOUNT_PATIENCE: Duration = Duration::from_secs(30);

/// The case-insensitive passthrough, beside this file.
const CIFS_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/cifs.py");

/// Debian's Python, which has python3-fusepy (the one on PATH may not).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Why a mount could not be made: the test is skipped with this reason.
pub(crate) type Refused = String;

/// Prints why a test did not run. Call as `return skip(why)`.
pub(crate) fn skip(why: Refused) {
    eprintln!("skipped: {why}");
}

/// Filesystems made on a loop image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disk {
    Ext4,
    Xfs,
    Btrfs,
}

impl Disk {
    fn mkfs(self) -> (&'static str, &'static [&'static str], u64) {
        // The smallest sizes each mkfs accepts with its defaults, or near.
        match self {
            Disk::Ext4 => ("mkfs.ext4", &["-q", "-F"], 64 << 20),
            Disk::Xfs => ("mkfs.xfs", &["-q", "-f"], 300 << 20),
            Disk::Btrfs => ("mkfs.btrfs", &["-q", "-f"], 128 << 20),
        }
    }
}

/// A mounted filesystem, unmounted on drop.
pub(crate) struct Mount {
    dir: PathBuf,
    /// The FUSE daemon, for the case-insensitive passthrough.
    daemon: Option<Child>,
}

impl Mount {
    /// The mount point.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Formats a sparse image at `image` as `disk` and mounts it on `dir`
    /// (created if missing).
    pub(crate) fn disk(disk: Disk, image: &Path, dir: &Path) -> Result<Mount, Refused> {
        can_mount()?;
        if !Path::new("/dev/loop-control").exists() {
            return Err("no /dev/loop-control: this machine has no loop devices".into());
        }
        let (mkfs, args, size) = disk.mkfs();
        let file = File::create(image).map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        file.set_len(size).map_err(|e| format!("cannot size {}: {e}", image.display()))?;
        drop(file);
        run_tool(Command::new(mkfs).args(args).arg(image))?;
        mount(dir, Command::new("mount").arg("-o").arg("loop").arg(image).arg(dir))
    }

    /// A tmpfs of `size` (as for `mount -o size=`) on `dir`.
    pub(crate) fn tmpfs(dir: &Path, size: &str) -> Result<Mount, Refused> {
        can_mount()?;
        mount(dir, Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir))
    }

    /// An overlay of writable `upper` (with its `work` dir) over `lower` on
    /// `dir`: what a container sees of an image layer.
    pub(crate) fn overlay(lower: &Path, upper: &Path, work: &Path, dir: &Path) -> Result<Mount, Refused> {
        can_mount()?;
        for d in [upper, work] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let options = format!("lowerdir={},upperdir={},workdir={}", lower.display(), upper.display(), work.display());
        mount(dir, Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(dir))
    }

    /// The case-insensitive, case-preserving, normalization-insensitive
    /// passthrough of `backing` on `dir` (`cifs.py`): names behave as on
    /// APFS, an ext4 casefold directory or an SMB share.
    pub(crate) fn case_insensitive(backing: &Path, dir: &Path) -> Result<Mount, Refused> {
        can_mount()?;
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse: this machine cannot mount FUSE filesystems".into());
        }
        let probe = Command::new(SYSTEM_PYTHON).args(["-c", "import fusepy"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            return Err(format!(
                "{SYSTEM_PYTHON} cannot import fusepy: install the Debian packages python3-fusepy fuse"
            ));
        }
        if !Command::new("fusermount").arg("-V").output().is_ok_and(|o| o.status.success()) {
            return Err("no fusermount: install the Debian package fuse".into());
        }
        for d in [backing, dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let log = dir.with_extension("log");
        let stderr = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let mut daemon = Command::new(SYSTEM_PYTHON)
            .arg(CIFS_PY)
            .arg(backing)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {CIFS_PY}: {e}"))?;
        let dir = dir.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
        match wait_for_mount_table(|| is_mounted(&dir), Some(&mut daemon)) {
            Ok(()) => Ok(Mount { dir, daemon: Some(daemon) }),
            Err(why) => {
                let _ = daemon.kill();
                let _ = daemon.wait();
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                Err(format!("the FUSE mount did not appear: {why}; {CIFS_PY} said: {}", said.trim()))
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A process a failed test left behind may hold the mount busy: then
        // detach it lazily rather than leave it mounted under a temp dir.
        let unmounted = Command::new("umount").arg(&self.dir).stderr(Stdio::null()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let dir = self.dir.clone();
        let _ = wait_for_mount_table(|| !is_mounted(&dir), None);
        if let Some(mut daemon) = self.daemon.take() {
            // The daemon ends once unmounted; make sure of it.
            let pid = daemon.id();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(daemon.wait());
            });
            if rx.recv_timeout(MOUNT_PATIENCE).is_err() {
                // SAFETY: kill(2) has no memory-safety preconditions; the
                // pid is our own unreaped child.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                let _ = rx.recv_timeout(MOUNT_PATIENCE);
            }
        }
    }
}

/// Fails unless this process may mount (it is root).
fn can_mount() -> Result<(), Refused> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("mounting needs root".into());
    }
    Ok(())
}

/// Runs a setup tool, turning a failure into the reason to skip.
fn run_tool(cmd: &mut Command) -> Result<(), Refused> {
    let shown = format!("{cmd:?}");
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("cannot run {shown}: {e}")),
    }
}

/// Runs a `mount` command for `dir` and waits until the mount is there.
fn mount(dir: &Path, cmd: &mut Command) -> Result<Mount, Refused> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir.canonicalize().map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    run_tool(cmd)?;
    wait_for_mount_table(|| is_mounted(&dir), None)?;
    Ok(Mount { dir, daemon: None })
}

/// Whether `dir` is a mount point in this process's mount table.
pub(crate) fn is_mounted(dir: &Path) -> bool {
    let mut table = String::new();
    if File::open("/proc/self/mountinfo").and_then(|mut f| f.read_to_string(&mut table)).is_err() {
        return false;
    }
    let want = dir.as_os_str().to_string_lossy();
    // Field 5 is the mount point, with space, tab, newline and backslash
    // written as octal escapes.
    table.lines().filter_map(|l| l.split(' ').nth(4)).any(|point| unescape(point) == want)
}

fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Waits until `done()` holds, re-checking each time the kernel says the
/// mount table changed (poll(2) on `/proc/self/mountinfo` wakes with
/// POLLPRI), and every 100 ms to see whether `daemon` has exited.
fn wait_for_mount_table(mut done: impl FnMut() -> bool, mut daemon: Option<&mut Child>) -> Result<(), Refused> {
    let table = File::open("/proc/self/mountinfo").map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let deadline = Instant::now() + MOUNT_PATIENCE;
    loop {
        if done() {
            return Ok(());
        }
        if let Some(daemon) = daemon.as_deref_mut()
            && let Ok(Some(status)) = daemon.try_wait()
        {
            return Err(format!("the daemon exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("the mount table did not change as expected within {MOUNT_PATIENCE:?}"));
        }
        let mut pfd = libc::pollfd { fd: table.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 100) };
    }
}
