//! The process tree under `run`: signals reach every process of CMD's
//! group, a SIGKILLed `run` still ends every descendant of CMD (double
//! forks and `setsid` included), and the locks stay held until the last
//! descendant is gone.
//!
//! Processes report their pids through a fifo as they start, so a test knows
//! they all run; /proc is polled, with a deadline, only to observe that
//! processes are gone or that a stop signal took effect.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{PATIENCE, Sandbox, mkfifo, names};

/// A process, identified by its pid and its start time so that a reused
/// pid is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: i32,
    start: u64,
}

/// The fields of /proc/PID/stat after the command name, which is in
/// parentheses and may contain anything.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

impl Proc {
    fn of(pid: i32) -> Option<Proc> {
        // Field 22 of stat is the start time; the slice starts at field 3.
        let start = stat_fields(pid)?.get(19)?.parse().ok()?;
        Some(Proc { pid, start })
    }

    /// Whether it still runs (a zombie has ended).
    fn alive(&self) -> bool {
        stat_fields(self.pid).is_some_and(|f| f[0] != "Z" && f.get(19).and_then(|s| s.parse().ok()) == Some(self.start))
    }

    fn state(&self) -> Option<String> {
        stat_fields(self.pid).map(|f| f[0].clone())
    }
}

fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect()
}

/// Every descendant of `pid`, at one moment.
fn descendants(pid: i32) -> BTreeSet<Proc> {
    let mut out = BTreeSet::new();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        if let Some(proc) = Proc::of(p) {
            out.insert(proc);
            todo.extend(children(p));
        }
    }
    out
}

/// Waits, within [`PATIENCE`], until `pred` holds, checking /proc as it
/// goes; panics naming `what` otherwise.
#[track_caller]
fn observe(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[track_caller]
fn await_gone(procs: &BTreeSet<Proc>) {
    observe("every process is gone", || procs.iter().all(|p| !p.alive()));
}

/// Pids reported on a fifo, one per line, by processes as they start. The
/// fifo is opened read-write, so writers never block and EOF never comes.
struct Reports(Receiver<i32>);

impl Reports {
    fn open(fifo: &Path) -> Reports {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(fifo).expect("open the report fifo");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { return };
                if let Ok(pid) = line.trim().parse()
                    && tx.send(pid).is_err()
                {
                    return;
                }
            }
        });
        Reports(rx)
    }

    /// The next `n` pids reported.
    #[track_caller]
    fn pids(&self, n: usize) -> BTreeSet<i32> {
        (0..n)
            .map(|i| self.0.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("only {i} of {n} processes reported")))
            .collect()
    }

    /// The next `n` processes reported, which must still run.
    #[track_caller]
    fn take(&self, n: usize) -> BTreeSet<Proc> {
        self.pids(n)
            .into_iter()
            .map(|pid| Proc::of(pid).unwrap_or_else(|| panic!("pid {pid} ended before it was looked at")))
            .collect()
    }
}

/// A sandbox with the fifos the scripts use: `up` for pid reports and
/// `never`, which nobody writes, to block on.
fn sandbox() -> (Sandbox, Reports) {
    let sb = Sandbox::new();
    mkfifo(&sb.path("up"));
    mkfifo(&sb.path("never"));
    let reports = Reports::open(&sb.path("up"));
    (sb, reports)
}

/// A shell line that starts a process which reports its pid and then runs
/// `rest`.
fn reporter(rest: &str) -> String {
    format!(r#"sh -c 'echo $$ > "$T/up"; {rest}'"#)
}

/// Like [`reporter`], but runs `setup` (a trap) before it reports.
fn trapped_reporter(setup: &str, rest: &str) -> String {
    format!(r#"sh -c '{setup}; echo $$ > "$T/up"; {rest}'"#)
}

fn gc_temps(sb: &Sandbox) -> i64 {
    let out = sb.run(["--message-format", "json", "gc"]);
    out.assert_code(0);
    let report: Value = serde_json::from_str(out.stdout.lines().last().unwrap_or_default()).expect("a JSON report");
    assert_eq!(report["reason"], "gc", "{out}");
    report["temps"].as_i64().expect("a count of temps")
}

/// Signals a process the test started if the test ends (a failed
/// assertion) before disarming it: a SIGKILL of `run` makes the supervisor
/// end the rest, so a failing test leaves nothing running. Disarmed before
/// the process is reaped, so its pid cannot have been reused.
struct OnDrop {
    pid: Option<i32>,
    sig: i32,
}

impl OnDrop {
    fn kill(pid: i32) -> OnDrop {
        OnDrop { pid: Some(pid), sig: libc::SIGKILL }
    }

    fn disarm(&mut self) {
        self.pid = None;
    }
}

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            kill(pid, self.sig);
        }
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// A SIGKILLed `run` still ends every descendant of CMD: background jobs,
/// a double fork, a `setsid` into another session and process group, and a
/// process that ignores every catchable signal while blocked on a fifo.
/// After that, gc reclaims the fill's temp.
#[test]
fn sigkill_of_run_ends_every_descendant_even_detached_ones() {
    let (sb, reports) = sandbox();
    let sleeper = reporter("exec sleep 1000");
    let script = format!(
        r#"{sleeper} &
        {sleeper} &
        ( {sleeper} & )
        setsid -f {sleeper}
        {stubborn} &
        echo $$ > "$T/up"
        wait"#,
        stubborn = reporter(r#"trap "" TERM HUP INT; read x < "$T/never""#),
    );
    let mut run = sb.spawn(["run", "--key", "k", "--", "sh", "-c", &script]);
    let run_pid = run.pid() as i32;
    let mut guard = OnDrop::kill(run_pid);
    let reported = reports.take(6);
    let tree = descendants(run_pid);
    assert!(reported.is_subset(&tree), "every reported process descends from run: {reported:?} {tree:?}");

    guard.disarm();
    run.child.kill().expect("SIGKILL run");
    let status = run.child.wait().expect("wait for run");
    assert_eq!(status.code(), None, "run itself was killed");
    await_gone(&tree);

    assert_eq!(gc_temps(&sb), 1, "gc reclaims the killed fill's temp once its processes are gone");
    sb.run(["path", "k"]).assert_code(1);
}

/// The locks outlive `run` for as long as any descendant of CMD lives: with
/// the supervisor stopped (the window between `run`'s death and the
/// supervisor's reaction, made as long as the test needs), gc does not
/// reclaim the temp, `rm` does not remove the pinned entry, `clean`
/// cannot take the lease and a new fill of the key cannot start. Once the supervisor goes on, every descendant
/// ends and the locks are free.
#[test]
fn locks_outlive_a_killed_run_until_the_last_descendant_is_gone() {
    let (sb, reports) = sandbox();
    sb.fill("p", "pinned");
    // CMD lists its descriptors: the locks must not be among them, or a
    // descendant could keep them held past the supervisor.
    let script =
        format!(r#"ls -l /proc/$$/fd/ > "$T/fds"; {} & echo $$ > "$T/up"; wait"#, reporter(r#"read x < "$T/never""#));
    let mut run = sb.spawn(["run", "--key", "k", "--", "sh", "-c", &script]);
    let run_pid = run.pid() as i32;
    let mut guard = OnDrop::kill(run_pid);
    let reported = reports.take(2);
    let fds = std::fs::read_to_string(sb.path("fds")).expect("CMD listed its descriptors");
    assert!(fds.contains(" 2 -> ") && !fds.contains(".safecache"), "CMD has no lock descriptor: {fds}");
    let supervisor = match children(run_pid).as_slice() {
        [one] => Proc::of(*one).expect("the supervisor runs"),
        other => panic!("run has one child, the supervisor: {other:?}"),
    };
    let tree = descendants(run_pid);
    // A stopped process in a process group that becomes orphaned (as the
    // supervisor's does when `run` dies) gets SIGHUP and SIGCONT from the
    // kernel. A member whose parent, this test, is in the same session
    // keeps the group from being orphaned, so the stop lasts.
    let mut anchor = Command::new("sleep")
        .arg("1000")
        .process_group(supervisor.pid)
        .spawn()
        .expect("start a process in the supervisor's group");
    let mut anchor_guard = OnDrop::kill(anchor.id() as i32);
    // If the test fails while the supervisor is stopped, it must go on to
    // end CMD's processes once `run` is killed.
    let mut resume = OnDrop { pid: None, sig: libc::SIGCONT };
    kill(supervisor.pid, libc::SIGSTOP);
    resume.pid = Some(supervisor.pid);
    observe("the supervisor is stopped", || supervisor.state().as_deref() == Some("T"));

    guard.disarm();
    run.child.kill().expect("SIGKILL run");
    run.child.wait().expect("wait for run");
    assert!(reported.iter().all(Proc::alive), "CMD's processes still run");
    assert_eq!(gc_temps(&sb), 0, "gc leaves the temp of a fill whose processes still run");
    assert_eq!(names(&sb.cache.join(".safecache/tmp")).len(), 1);
    sb.run(["clean", "--lock-timeout", "0"]).assert_code(75);
    let refill = sb.run(["run", "--lock-timeout", "0", "--key", "k", "--", "true"]);
    refill.assert_code(75);
    assert!(refill.stderr.contains("entry `k`"), "a new fill of the key waits for the old one's processes: {refill}");

    resume.disarm();
    kill(supervisor.pid, libc::SIGCONT);
    await_gone(&tree);
    assert_eq!(gc_temps(&sb), 1, "the temp is reclaimed once they are gone");
    sb.run(["clean", "--lock-timeout", "0"]).assert_code(0);
    anchor_guard.disarm();
    anchor.kill().expect("stop the anchor");
    anchor.wait().expect("reap the anchor");
}

/// SIGTERM and SIGHUP sent to `run` reach every process in CMD's process
/// group, not just CMD: a bash script's children get the signal while the
/// script still runs. Whatever is left once CMD exits (a process that
/// ignores the signal, one in another session) is ended too, `run` exits
/// with 128+N, and a fill publishes nothing.
#[test]
fn signals_reach_every_process_of_a_script_and_nothing_is_published() {
    for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGHUP, "HUP")] {
        let (sb, reports) = sandbox();
        mkfifo(&sb.path("go"));
        // Each child reports its pid again when the signal reaches it, then
        // exits. The script, on the signal, waits for the test to have seen
        // both reports, then dies of the same signal.
        // Each reports only once its trap is set: a signal sent as soon as
        // the test has seen every report must find it in place.
        let polite = trapped_reporter(&format!(r#"trap "echo \$\$ > \"\$T/up\"; exit 0" {name}"#), "sleep 1000 & wait");
        let script = format!(
            r#"echo partial > "$SAFECACHE_OUT/f"
            {polite} &
            {polite} &
            {stubborn} &
            setsid -f {sleeper}
            trap 'read go < "$T/go"; trap - {name}; kill -{name} $$' {name}
            echo $$ > "$T/up"
            wait"#,
            stubborn = trapped_reporter(&format!(r#"trap "" {name}"#), r#"read x < "$T/never""#),
            sleeper = reporter("exec sleep 1000"),
        );
        let run = sb.spawn(["run", "--key", "k", "--", "bash", "-c", &script]);
        let mut guard = OnDrop::kill(run.pid() as i32);
        let reported = reports.take(5);
        kill(run.pid() as i32, sig);
        let acks = reports.pids(2);
        let pids: BTreeSet<i32> = reported.iter().map(|p| p.pid).collect();
        assert!(acks.is_subset(&pids), "the acknowledgements come from the script's children: {acks:?} {pids:?}");
        std::fs::write(sb.path("go"), "go\n").expect("let the script go on");
        guard.disarm();
        let (status, lines) = run.finish_keeping_stdin();
        assert_eq!(status.code(), Some(128 + sig), "{lines:?}");
        await_gone(&reported);
        sb.run(["path", "k"]).assert_code(1);
        assert!(names(&sb.cache.join(".safecache/tmp")).is_empty(), "the failed fill's temp is removed");
    }
}

/// The entry lock of `k` is free: `rm` of the absent key takes it at once.
fn entry_lock_free(sb: &Sandbox) -> bool {
    let out = sb.run(["rm", "--lock-timeout", "0", "k"]);
    match out.code {
        Some(0) => true,
        Some(75) => false,
        _ => panic!("rm of the absent key: {out}"),
    }
}

/// Waits until the fill's locks are free and every process of `tree` is
/// gone, checking that none of them was still alive once the locks were
/// free, and that every one of `decoys` lives throughout.
#[track_caller]
fn await_released_after(sb: &Sandbox, tree: &BTreeSet<Proc>, decoys: &BTreeSet<Proc>, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let hit: Vec<&Proc> = decoys.iter().filter(|p| !p.alive()).collect();
        assert!(hit.is_empty(), "{what}: decoys outside the tree were killed: {hit:?}");
        let free = entry_lock_free(sb);
        // Looked at after the locks were seen free: anything alive now was
        // alive then.
        let alive: Vec<&Proc> = tree.iter().filter(|p| p.alive()).collect();
        if free {
            assert!(alive.is_empty(), "{what}: the locks were released while {alive:?} still ran");
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the locks are still held by {alive:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `unshare --pid --fork` works here; prints why the test skips
/// otherwise.
fn unshare_works() -> bool {
    match Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!("skip: `unshare --pid --fork --mount-proc` is refused: {}", String::from_utf8_lossy(&out.stderr));
            false
        }
        Err(e) => {
            eprintln!("skip: cannot run unshare: {e}");
            false
        }
    }
}

/// The only child of `pid`, once it has one.
#[track_caller]
fn only_child(pid: i32, what: &str) -> Proc {
    let found = std::cell::Cell::new(None);
    observe(what, || {
        found.set(match children(pid).as_slice() {
            [one] => Proc::of(*one),
            _ => None,
        });
        found.get().is_some()
    });
    found.get().unwrap_or_else(|| panic!("{what}"))
}

/// In a new pid namespace, with /proc remounted for it, still showing the
/// parent namespace's pids (`unshare --pid --fork` alone), or not mounted at
/// all, SIGKILL one process of `run`'s tree (the supervisor, `run`, CMD): no
/// descendant of CMD (background jobs; with a /proc, one in a session of its
/// own) is alive once the fill's locks are free, and decoys outside the
/// tree survive. The decoys are processes of the namespace whose pids there
/// equal the outer pids of CMD and its children, which a supervisor that
/// took /proc's pids for its own namespace's signalled (and then waited
/// forever for its real children); before `run` was a subreaper, a killed
/// supervisor left CMD's descendants running; without /proc, `run` could not
/// start at all.
#[test]
fn any_single_kill_in_a_pid_namespace_ends_the_tree_and_only_it() {
    if !unshare_works() {
        return;
    }
    for proc in ["own", "parent's", "none"] {
        for victim in ["supervisor", "run", "cmd"] {
            let what = format!("kill the {victim}, /proc: {proc}");
            let (sb, reports) = sandbox();
            mkfifo(&sb.path("decoys"));
            // Without /proc nothing can find a process that left CMD's
            // group: it is waited for (with the locks held), not killed.
            let detached = if proc == "none" { "sleep 1000 &" } else { "setsid sleep 1000 &" };
            // The namespace's init starts `run`, then on request makes a
            // decoy at each pid it is given (ns_last_pid names the pid the
            // next fork gets), and stays until the test ends.
            let init = format!(
                r#"{hide}"$SC" run --key k -- sh -c 'sleep 1000 & {detached} echo $$ > "$T/up"; wait' &
                read pids < "$T/decoys"
                for p in $pids; do
                    echo $((p - 1)) 2> /dev/null > /proc/sys/kernel/ns_last_pid
                    sleep 1000 &
                    echo $! > "$T/up"
                done
                read x < "$T/never""#,
                hide = if proc == "none" { "mount -t tmpfs none /proc && " } else { "" },
            );
            let mut unshare = Command::new("unshare");
            // With --kill-child, killing unshare kills the namespace's init,
            // and with it every process of the namespace.
            unshare.args(["--pid", "--fork", "--kill-child"]);
            match proc {
                "own" => unshare.arg("--mount-proc"),
                "none" => unshare.arg("--mount"),
                _ => &mut unshare,
            };
            unshare
                .args(["sh", "-c", &init])
                .env("SAFECACHE_DIR", &sb.cache)
                .env("T", sb.tmp.path())
                .env("SC", crate::support::bin())
                .env_remove("SAFECACHE_LOCK_TIMEOUT")
                .env_remove("SAFECACHE_LEASE")
                .env_remove("SAFECACHE_LEASE_DIR")
                .env_remove("SAFECACHE_RUN_PIDS")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null());
            let mut child = unshare.spawn().expect("start unshare");
            let mut guard = OnDrop::kill(child.id() as i32);
            reports.pids(1);
            let ns_init = only_child(child.id() as i32, "the namespace's init runs");
            let run = children(ns_init.pid).into_iter().find_map(Proc::of).expect("run runs");
            let supervisor = only_child(run.pid, "the supervisor runs");
            let cmd = only_child(supervisor.pid, "CMD runs");
            let below: BTreeSet<Proc> = descendants(cmd.pid);
            assert!(below.len() >= 2, "{what}: CMD's two sleeps run: {below:?}");
            let mut mirrored: Vec<i32> = below.iter().map(|p| p.pid).collect();
            mirrored.push(cmd.pid);
            std::fs::write(
                sb.path("decoys"),
                format!("{}\n", mirrored.iter().map(i32::to_string).collect::<Vec<_>>().join(" ")),
            )
            .expect("ask for decoys");
            let made = reports.pids(mirrored.len());
            let decoys: BTreeSet<Proc> =
                children(ns_init.pid).into_iter().filter(|&p| p != run.pid).filter_map(Proc::of).collect();
            assert_eq!(decoys.len(), mirrored.len(), "{what}: the decoys run: {decoys:?}");
            let at_mirrored = made.iter().filter(|p| mirrored.contains(p)).count();
            if at_mirrored < mirrored.len() {
                eprintln!("{what}: only {at_mirrored} decoys got the pid asked for (ns_last_pid refused?)");
            }
            let mut tree = below.clone();
            tree.insert(cmd);
            tree.insert(supervisor);
            let target = match victim {
                "supervisor" => supervisor,
                "run" => run,
                _ => cmd,
            };
            kill(target.pid, libc::SIGKILL);
            await_released_after(&sb, &tree, &decoys, &what);
            await_gone(&tree);
            let hit: Vec<&Proc> = decoys.iter().filter(|p| !p.alive()).collect();
            assert!(hit.is_empty(), "{what}: decoys outside the tree were killed: {hit:?}");
            guard.disarm();
            child.kill().expect("end the namespace");
            child.wait().expect("reap unshare");
        }
    }
}

/// A process outside CMD's tree that joins CMD's process group (it runs
/// in the same session as `run`) got the signals `run` forwards to that
/// group. Now CMD's group is a session of its own when there is no
/// terminal, so nothing outside the tree can join it.
#[test]
fn a_process_outside_the_tree_cannot_get_forwarded_signals() {
    let (sb, reports) = sandbox();
    let run = sb.spawn(["run", "--key", "k", "--", "sh", "-c", &format!("{} & wait", reporter("exec sleep 1000"))]);
    let mut guard = OnDrop::kill(run.pid() as i32);
    let cmd = only_child(only_child(run.pid() as i32, "the supervisor runs").pid, "CMD runs");
    reports.pids(1);
    let decoy = Command::new("sleep").arg("1000").process_group(cmd.pid).spawn();
    let mut decoy = match decoy {
        Ok(decoy) => decoy,
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "joining CMD's group is refused: {e}");
            guard.disarm();
            kill(run.pid() as i32, libc::SIGTERM);
            let (status, _) = run.finish_keeping_stdin();
            assert_eq!(status.code(), Some(128 + libc::SIGTERM));
            return;
        }
    };
    let mut decoy_guard = OnDrop::kill(decoy.id() as i32);
    let decoy_proc = Proc::of(decoy.id() as i32).expect("the decoy runs");
    guard.disarm();
    kill(run.pid() as i32, libc::SIGTERM);
    let (status, lines) = run.finish_keeping_stdin();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{lines:?}");
    let alive = decoy_proc.alive();
    decoy_guard.disarm();
    let _ = decoy.kill();
    let _ = decoy.wait();
    assert!(alive, "a process outside CMD's tree got the signal forwarded to CMD's group");
}

/// The supervisor is a fork of `run`, which has the cache directory, the
/// signal watcher's pipe and other descriptors open when it forks. It
/// keeps only stdio, the locks it holds for CMD's tree and its report pipe:
/// a copy of anything else (another lock `run` releases while CMD runs)
/// would outlive its release. CMD itself gets none of them.
#[test]
fn the_supervisor_keeps_only_stdio_the_locks_and_its_report_pipe() {
    let sb = Sandbox::new();
    let script = r#"for fd in /proc/$PPID/fd/*; do echo "supervisor $(readlink "$fd")"; done; for fd in /proc/$$/fd/*; do echo "cmd $fd"; done"#;
    let out = sb.run(["use", "--key", "k", "--fill", "echo x > $SAFECACHE_OUT/f", "--", "sh", "-c", script]);
    out.assert_code(0);
    let listed = |who: &str| -> Vec<String> {
        out.stdout.lines().filter_map(|l| l.strip_prefix(who)?.strip_prefix(' ')).map(str::to_owned).collect()
    };
    let supervisor = listed("supervisor");
    // A descriptor closed between the listing and its readlink reads as
    // empty: the read end of the pipe on which CMD's exec is confirmed,
    // which the supervisor closes once CMD runs.
    let (locks, rest): (Vec<_>, Vec<_>) =
        supervisor[3..].iter().filter(|t| !t.is_empty()).partition(|t| t.ends_with(".lock"));
    assert!(!locks.is_empty(), "the supervisor holds the lease and the pin: {supervisor:?}");
    assert!(
        (1..=2).contains(&rest.len()) && rest.iter().all(|t| t.starts_with("pipe:")),
        "besides stdio and the locks, only the report pipe (and, for a moment, the exec pipe): {supervisor:?}"
    );
    // The shell's own descriptors: stdio, and the directory its glob read.
    let cmd = listed("cmd");
    assert!((3..=4).contains(&cmd.len()), "CMD gets stdio alone: {cmd:?}");
}
