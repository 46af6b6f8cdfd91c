//! Nothing outside the cache, whatever is inside it (issue 15, item 7, and
//! the group half of item 3): deleting stops at mount points, entries a CMD
//! made read-only can be published and deleted by a user who is not root,
//! publish takes write access from others, and in a group-shared cache it
//! gives every member read access. Mounts are real (`mount --bind`, tmpfs;
//! skipped, saying why, where mounting is not allowed) and "another user"
//! is a real uid: the binary runs as uids 65534 and 65533.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{self, Out, Sandbox};

/// A mount made for one test, unmounted (lazily, if still busy) on drop.
struct Mounted(PathBuf);

impl Mounted {
    /// `mount ARGS... TARGET`, or `None`, saying why, where that is not
    /// allowed.
    fn new(args: &[&str], source: Option<&Path>, target: &Path) -> Option<Mounted> {
        let mut cmd = Command::new("mount");
        cmd.args(args);
        if let Some(source) = source {
            cmd.arg(source);
        }
        let out = cmd.arg(target).output();
        match out {
            Ok(o) if o.status.success() => Some(Mounted(target.to_owned())),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount here (needs root or CAP_SYS_ADMIN): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn bind(source: &Path, target: &Path) -> Option<Mounted> {
        Mounted::new(&["--bind"], Some(source), target)
    }

    fn tmpfs(target: &Path) -> Option<Mounted> {
        Mounted::new(&["-t", "tmpfs", "-o", "size=1m"], Some(Path::new("tmpfs")), target)
    }
}

/// The mount point an error names (`` `PATH` is a mount point``): where a
/// mount inside an entry is once the entry was renamed aside.
fn mount_point_named(out: &Out) -> PathBuf {
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("` is a mount point"))
        .unwrap_or_else(|| panic!("no mount point named\n{out}"));
    let end = line.find("` is a mount point").unwrap_or_default();
    let start = line[..end].rfind('`').map_or(0, |i| i + 1);
    PathBuf::from(&line[start..end])
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A directory outside the cache holding one file the test checks survives.
fn precious(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("outside");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("precious"), "keep me").expect("write");
    dir
}

fn entry_of(sb: &Sandbox, key: &str) -> PathBuf {
    let out = sb.run(["path", key]);
    out.assert_code(0);
    PathBuf::from(out.last_stdout_line())
}

/// Fills `key` with `sub/mnt/` (an empty directory to mount on) and a file.
fn fill_with_mount_point(sb: &Sandbox, key: &str) -> PathBuf {
    let out = sb.run([
        "run",
        "--key",
        key,
        "--",
        "sh",
        "-c",
        r#"mkdir -p "$SAFECACHE_OUT/sub/mnt" && echo x > "$SAFECACHE_OUT/sub/f""#,
    ]);
    out.assert_code(0);
    entry_of(sb, key)
}

/// `rm` of an entry with a directory bind-mounted inside it (the same
/// filesystem, so only the mount id tells): the files outside survive, the
/// entry leaves the cache, and `rm --wait` exits 101 naming the mount point; `gc`
/// says the same until it is unmounted, and then finishes the job.
#[test]
fn rm_and_gc_stop_at_a_bind_mount_inside_an_entry() {
    let sb = Sandbox::new();
    let outside = precious(&sb);
    let entry = fill_with_mount_point(&sb, "k");
    let target = entry.join("sub/mnt");
    let Some(mut mount) = Mounted::bind(&outside, &target) else { return };
    let out = sb.run(["rm", "--wait", "k"]);
    out.assert_error(101, "is a mount point");
    // It moved with the entry, into the trash.
    mount.0 = mount_point_named(&out);
    assert!(mount.0.ends_with("sub/mnt"), "the error names the mount point: {out}");
    assert_eq!(std::fs::read_to_string(mount.0.join("precious")).expect("seen through the mount"), "keep me");
    assert!(out.stderr.contains("unmount"), "the error says what to do: {out}");
    assert!(!out.stderr.contains("writable"), "and nothing misleading: {out}");
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("the outside file survives"), "keep me");
    sb.run(["path", "k"]).assert_code(1);

    let out = sb.run(["gc"]);
    out.assert_code(101);
    assert!(out.stderr.contains("is a mount point"), "{out}");
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("gc left the outside file"), "keep me");

    drop(mount);
    sb.run(["gc"]).assert_code(0);
    assert!(support::names(&sb.cache.join(".safecache/trash")).is_empty(), "gc reclaims it once unmounted");
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("still there"), "keep me");
}

/// `clean` with a tmpfs mounted inside an entry: what the tmpfs holds
/// survives, every other entry goes, and `clean` exits 101 naming it.
#[test]
fn clean_stops_at_a_tmpfs_inside_an_entry() {
    let sb = Sandbox::new();
    let entry = fill_with_mount_point(&sb, "k");
    sb.fill("other", "v");
    let target = entry.join("sub/mnt");
    let Some(mut mount) = Mounted::tmpfs(&target) else { return };
    std::fs::write(target.join("on-tmpfs"), "keep me").expect("write on the tmpfs");
    let out = sb.run(["clean", "--wait"]);
    out.assert_code(101);
    mount.0 = mount_point_named(&out);
    assert!(mount.0.ends_with("sub/mnt"), "{out}");
    assert_eq!(std::fs::read_to_string(mount.0.join("on-tmpfs")).expect("the tmpfs's file survives"), "keep me");
    sb.run(["path", "k"]).assert_code(1);
    sb.run(["path", "other"]).assert_code(1);
}

/// A CMD that leaves a bind mount in its output: nothing is published, the
/// run says why, and neither the run's cleanup nor `gc` deletes through it.
#[test]
fn a_mount_left_by_cmd_is_never_published_or_deleted_through() {
    let sb = Sandbox::new();
    let outside = precious(&sb);
    let script =
        r#"mkdir "$SAFECACHE_OUT/mnt" && mount --bind "$T/outside" "$SAFECACHE_OUT/mnt" && echo "$SAFECACHE_OUT/mnt""#;
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", script]);
    let Some(mnt) = out.stdout.lines().find(|l| l.ends_with("/mnt")).map(PathBuf::from) else {
        eprintln!("skipped: CMD could not bind-mount: {out}");
        return;
    };
    let _mount = Mounted(mnt);
    out.assert_code(101);
    assert!(out.stderr.contains("/mnt` is a mount point"), "{out}");
    assert!(out.stderr.contains("nothing was published"), "{out}");
    assert!(!out.stderr.contains("writable"), "the error blames the mount point alone: {out}");
    sb.run(["path", "k"]).assert_code(1);
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("the outside file survives"), "keep me");
    let out = sb.run(["gc"]);
    out.assert_code(101);
    assert!(out.stderr.contains("/mnt` is a mount point"), "{out}");
    assert_eq!(std::fs::read_to_string(outside.join("precious")).expect("gc left it"), "keep me");
}

/// The binary, copied where any user can run it (the build's target dir
/// may be under /root), and a command running it as `uid`:`gid` with no
/// supplementary groups.
fn as_user(sb: &Sandbox, uid: u32, gid: u32) -> Command {
    let copy = sb.path("cargo-safecache");
    if !copy.exists() {
        std::fs::copy(support::bin(), &copy).expect("copy the binary");
        std::fs::set_permissions(sb.tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let cmd = sb.cmd(Vec::<&str>::new());
    let mut user = Command::new(&copy);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => user.env(k, v),
            None => user.env_remove(k),
        };
    }
    user.env("HOME", sb.tmp.path()).current_dir(sb.tmp.path()).uid(uid).gid(gid);
    user
}

fn run_as(sb: &Sandbox, uid: u32, gid: u32, args: &[&str]) -> Out {
    // A copy made a moment ago may still be open for writing in a child
    // another test forked meanwhile (until that child execs): ETXTBSY.
    let mut tries = 0;
    let out = loop {
        match as_user(sb, uid, gid).args(args).output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 10_000 => {
                tries += 1;
                std::thread::yield_now();
            }
            out => break out.expect("run cargo-safecache"),
        }
    };
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Whether this process may run commands as other users (it is root).
fn can_switch_users() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: running as another user needs root");
    }
    root
}

/// Read-only outputs, as a user who is not root (root ignores modes): a CMD
/// that runs `chmod -R a-w` on its output, or untars a tree whose `./` is
/// 0555, is published; and such entries are removed by `rm` and `clean`.
#[test]
fn read_only_outputs_publish_and_delete_for_a_user_who_is_not_root() {
    if !can_switch_users() {
        return;
    }
    let sb = Sandbox::new();
    std::fs::create_dir(&sb.cache).expect("mkdir");
    std::os::unix::fs::chown(&sb.cache, Some(65534), Some(65534)).expect("chown");
    let tree = sb.path("tree");
    std::fs::create_dir_all(tree.join("d")).expect("mkdir");
    std::fs::write(tree.join("d/f"), "x\n").expect("write");
    for dir in [tree.join("d"), tree.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    let tar = sb.path("tree.tar");
    let made = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&tree).arg(".").status().expect("run tar");
    assert!(made.success());
    let nobody = |args: &[&str]| run_as(&sb, 65534, 65534, args);

    let chmod = r#"mkdir -p "$SAFECACHE_OUT/d" && echo x > "$SAFECACHE_OUT/d/f" && chmod -R a-w "$SAFECACHE_OUT""#;
    // A failed fill's read-only output is deleted too.
    let failed = format!("{chmod} && exit 3");
    nobody(&["run", "--key", "failed", "--", "sh", "-c", &failed]).assert_code(3);
    assert!(support::names(&sb.cache.join(".safecache/tmp")).is_empty(), "the failed fill's temp is deleted");
    nobody(&["run", "--key", "chmod", "--", "sh", "-c", chmod]).assert_code(0);
    let untar = r#"tar -xpf "$T/tree.tar" -C "$SAFECACHE_OUT""#;
    nobody(&["run", "--key", "untar", "--", "sh", "-c", untar]).assert_code(0);
    for key in ["chmod", "untar"] {
        let out = nobody(&["path", key]);
        out.assert_code(0);
        let entry = PathBuf::from(out.last_stdout_line());
        assert_eq!(std::fs::read_to_string(entry.join("d/f")).expect("published"), "x\n");
        let d = std::fs::metadata(entry.join("d")).expect("stat");
        assert_eq!(d.mode() & 0o777, 0o555, "{key}: the directories inside keep their modes");
    }
    nobody(&["verify"]).assert_code(0);

    // Entries published read-only to the top (by an older version, or made
    // so since) are removed as well.
    for key in ["chmod", "untar"] {
        let entry = PathBuf::from(nobody(&["path", key]).last_stdout_line());
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    }
    nobody(&["rm", "--wait", "chmod"]).assert_code(0);
    nobody(&["path", "chmod"]).assert_code(1);
    nobody(&["clean", "--wait"]).assert_code(0);
    nobody(&["path", "untar"]).assert_code(1);
    assert!(support::names(&sb.cache.join(".safecache/trash")).is_empty(), "nothing is left in the trash");
}

/// Under umask 000, what CMD writes is not left writable by others.
#[test]
fn publish_takes_write_access_from_others() {
    let sb = Sandbox::new();
    let script = r#"umask 000 && mkdir "$SAFECACHE_OUT/d" && echo x > "$SAFECACHE_OUT/d/f" && ln -s /etc/passwd "$SAFECACHE_OUT/l""#;
    let out = sb.run(["run", "--key", "k", "--", "sh", "-c", script]);
    out.assert_code(0);
    let entry = PathBuf::from(out.last_stdout_line());
    for rel in ["", "d", "d/f"] {
        let mode = std::fs::symlink_metadata(entry.join(rel)).expect("stat").mode();
        assert_eq!(mode & 0o002, 0, "`{rel}` is writable by others: {mode:o}");
    }
    assert_eq!(std::fs::metadata(entry.join("d/f")).expect("stat").mode() & 0o777, 0o664, "the group's access is kept");
    assert_eq!(std::fs::metadata("/etc/passwd").expect("stat").mode() & 0o777, 0o644, "a symlink is not followed");
    sb.run(["verify"]).assert_code(0);
}

/// In a group-shared cache, member A publishes what CMD wrote under umask
/// 077 (a 0600 file in a 0700 directory); member B, another uid in the
/// same group, can read it, and remove it.
#[test]
fn every_member_of_a_group_shared_cache_can_read_every_entry() {
    if !can_switch_users() {
        return;
    }
    const GROUP: u32 = 4242;
    let sb = Sandbox::new();
    std::fs::create_dir(&sb.cache).expect("mkdir");
    std::os::unix::fs::chown(&sb.cache, Some(65534), Some(GROUP)).expect("chown");
    std::fs::set_permissions(&sb.cache, std::fs::Permissions::from_mode(0o2770)).expect("chmod");
    let script = r#"umask 077 && mkdir "$SAFECACHE_OUT/d" && echo secret > "$SAFECACHE_OUT/d/f" && cp /bin/true "$SAFECACHE_OUT/d/tool""#;
    run_as(&sb, 65534, GROUP, &["run", "--key", "k", "--", "sh", "-c", script]).assert_code(0);

    let out = run_as(&sb, 65533, GROUP, &["path", "k"]);
    out.assert_code(0);
    let entry = out.last_stdout_line();
    let read = r#"cat "$1/d/f" && "$1/d/tool""#;
    let out = run_as(&sb, 65533, GROUP, &["use", "--key", "k", "--", "sh", "-c", read, "sh", &entry]);
    out.assert_code(0);
    assert!(out.stdout.contains("secret"), "member B reads member A's entry: {out}");
    run_as(&sb, 65533, GROUP, &["verify"]).assert_code(0);
    // And remove it: nothing is left behind in the trash.
    run_as(&sb, 65533, GROUP, &["rm", "--wait", "k"]).assert_code(0);
    assert!(support::names(&sb.cache.join(".safecache/trash")).is_empty(), "member B deleted all of it");
}

/// `cargo-safecache ARGS` as [`Sandbox::cmd`] runs it, with at most 64 open
/// files.
fn with_few_files(sb: &Sandbox, args: &[&str]) -> Out {
    let env = sb.cmd(Vec::<&str>::new());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"ulimit -n 64 && exec "$0" "$@""#, support::bin()]).args(args);
    for (k, v) in env.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Out::of(&mut cmd)
}

/// A CMD can build a tree hundreds or thousands of directories deep (by relative
/// `mkdir` and `chdir`). With only 64 files open at once, such a tree is
/// still published, removed, and deleted when its fill fails: the walks
/// keep a bounded number of directories open.
#[test]
fn a_tree_deeper_than_the_open_file_limit_is_published_and_deleted() {
    let sb = Sandbox::new();
    let deep = |code: u8| {
        format!(
            r#"import os
os.chdir(os.environ["SAFECACHE_OUT"])
for _ in range(300):
    os.mkdir("d"); os.chdir("d")
open("f", "w").write("x")
raise SystemExit({code})"#
        )
    };
    let out = with_few_files(&sb, &["run", "--key", "failed", "--", "python3", "-c", &deep(3)]);
    out.assert_code(3);
    assert!(support::names(&sb.cache.join(".safecache/tmp")).is_empty(), "the failed fill's temp is deleted: {out}");
    with_few_files(&sb, &["run", "--key", "k", "--", "python3", "-c", &deep(0)]).assert_code(0);
    with_few_files(&sb, &["rm", "--wait", "k"]).assert_code(0);
    assert!(support::names(&sb.cache.join(".safecache/trash")).is_empty(), "all of it is deleted");
}
