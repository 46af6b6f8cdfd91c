//! This defines `cargo xtask stress`: many real processes share one cache
//! directory through the `cargo-safecache` binary while a killer SIGKILLs
//! them at random, and every entry anybody sees must be complete.
//!
//! ```text
//! cargo xtask stress                                    16 workers for 60 s
//! cargo xtask stress --procs 8 --secs 20 --seed 42      what `cargo xtask ci` runs
//! cargo xtask stress --keep /tmp/sc                     keep the cache for inspection
//! cargo xtask stress --grandchildren                    fills also leave a writer behind
//! ```
//!
//! The coordinator builds the CLI, re-executes this binary as N workers
//! (the hidden task `__stress-worker`) and runs a killer thread; workers
//! loop over random operations on six keys and write their tallies to a
//! results dir. At the end the coordinator waits for every descendant (it
//! is a child subreaper, so orphans come back to it), runs `gc`, and checks
//! the cache: every entry verifies, no temp, trash or holder is left.
//! docs/STRESS.md describes the operations, the checks and replay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The hidden task a worker runs as.
pub(crate) const WORKER: &str = "__stress-worker";
/// The hidden task a pinned read runs as CMD, to verify its entry.
pub(crate) const VERIFY: &str = "__stress-verify";

/// The keys every worker picks from: few, so that operations collide; with
/// `/` so that the stored-name encoding is exercised.
const KEYS: [&str; 6] = ["alpha", "stress/beta", "stress/gamma", "a/b/delta", "epsilon", "zeta"];

/// The entry name of one of [`KEYS`] (lowercase, digits and `/`), as
/// format 3 writes it (docs/PROTOCOL.md, "Entry names").
fn stored_name(key: &str) -> String {
    key.replace('/', "+")
}
/// The `--lock-timeout` values an operation picks from.
const TIMEOUTS: [&str; 4] = ["0", "0.5", "2", "5"];
/// Every process of one stress run carries `SAFECACHE_STRESS_RUN=<tag>`,
/// so that the killer and the stray check find exactly this run's processes.
const MARKER_VAR: &str = "SAFECACHE_STRESS_RUN";
/// `__stress-verify`'s exit code for an incomplete entry under a pin.
const VERIFY_PARTIAL: i32 = 3;
/// The fill script's exit code when asked to fail midway.
const FILL_FAILS: i32 = 7;
/// The fill script's exit code when another fill of the same key runs.
const FILL_OVERLAP: i32 = 4;
/// The fill script's exit code when another fill of the same key held the
/// lock but was already dying (gone, a zombie, or SIGKILL pending): the CMD
/// of a killed `run`, still dying after its `run` released the entry lock
/// (docs/STRESS.md, "kill window").
const FILL_OVERLAP_DYING: i32 = 6;
/// The fill script's exit code when a write into `SAFECACHE_OUT` fails.
const FILL_WRITE_FAILED: i32 = 5;
/// No `clean` starts this close to the deadline (milliseconds).
const CLEAN_QUIET_MS: u64 = 6000;
/// How long descendants may outlive the workers before they count as strays:
/// a `sleep` orphaned by a kill ends within this.
const STRAY_GRACE: Duration = Duration::from_secs(3);
/// How long after the deadline the workers may take to finish their last
/// operation (at most a 5 s lock wait and a fill) before they count as hung.
const WORKER_GRACE: Duration = Duration::from_secs(120);

/// The fill: writes `n` files slowly, each in two writes, and the manifest
/// last, so a reader can tell a complete entry from a partial one. With
/// a lock file it first takes it with `flock -n`: if another fill of the
/// key runs at the same time (single flight broken, or a killed fill's CMD
/// still alive), it fails with [`FILL_OVERLAP`], or [`FILL_OVERLAP_DYING`]
/// if every other holder is already dying. Its `sleep`s and the
/// grandchild close that descriptor, so only the shell itself holds it.
/// With `grandchild=1` it leaves a background writer whose working
/// directory is the fill's output, which keeps writing for 5 s after the shell
/// exits: longer than [`STRAY_GRACE`], so one left at the end is a stray.
const FILL_SCRIPT: &str = r#"key=$1 nonce=$2 n=$3 failat=$4 grandchild=$5 lock=$6
if [ -n "$lock" ]; then
  exec 9>>"$lock"
  if ! flock -n 9; then
    # Every other process with the lock file open is a fill's CMD:
    # each must be gone, a zombie, or have SIGKILL pending (bit 0x100 of
    # SigPnd or ShdPnd) for this to be the kill window (exit 6).
    # One `ls` for the whole scan: a fork per process would take so long
    # that the holder is gone before it is looked at. Every descriptor is
    # looked at, since dash moves fd 9 aside while it runs `sleep 9>&-`;
    # the scanners themselves run without it.
    { ls -l /proc/[0-9]*/fd | awk -v lock="$lock" '/^\/proc\/[0-9]+\/fd:$/ { split($0, a, "/"); pid = a[3]; next }
        $NF == lock { print pid }'; } 9>&- >"$lock.scan.$$" 2>/dev/null
    others=$(sort -u "$lock.scan.$$" | grep -vx "$$"); rm -f "$lock.scan.$$"
    live=""
    for p in $others; do
      dying=$(awk '/^State:/ { if ($2 == "Z" || $2 == "X") d = 1 }
        /^(SigPnd|ShdPnd):/ { if (index("13579bdf", substr($2, length($2) - 2, 1))) d = 1 }
        END { print d + 0 }' "/proc/$p/status" 2>/dev/null)
      [ "$dying" = 0 ] && live="$live $p"
    done
    echo "stress-fill: another fill of $key holds $lock: processes [$(echo $others)], of which alive and not being killed [$live]" >&2
    if [ -z "$live" ]; then exit 6; fi
    exit 4
  fi
fi
if [ "$grandchild" = 1 ]; then
  # A writer left behind: it waits until CMD has written its manifest (and
  # so is about to exit), then keeps writing. Contained, it is killed when
  # CMD exits, before the publish; escaped, it writes into the published
  # entry, which the readers catch as files not in the manifest.
  ( cd "$SAFECACHE_OUT" || exit 0
    while [ ! -e MANIFEST ]; do sleep 0.02; done
    sleep 0.3
    i=0
    while [ "$i" -lt 50 ]; do echo late > "late$i"; sleep 0.1; i=$((i+1)); done
  ) 9>&- </dev/null >/dev/null 2>&1 &
fi
i=0
while [ "$i" -lt "$n" ]; do
  if [ "$i" -eq "$failat" ]; then exit 7; fi
  printf '%s %s %s\n' "$key" "$nonce" "$i" > "$SAFECACHE_OUT/f$i" || exit 5
  sleep 0.01 9>&-
  printf 'second half %s\n' "$i" >> "$SAFECACHE_OUT/f$i" || exit 5
  i=$((i+1))
done
printf 'stress-manifest %s %s %s\nend\n' "$key" "$nonce" "$n" > "$SAFECACHE_OUT/MANIFEST" || exit 5
"#;

// ---------------------------------------------------------------------------
// The coordinator.

struct Opts {
    procs: usize,
    secs: u64,
    seed: u64,
    keep: Option<PathBuf>,
    grandchildren: bool,
    tolerate_kill_window: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut opts =
        Opts { procs: 16, secs: 60, seed: fresh_seed(), keep: None, grandchildren: false, tolerate_kill_window: false };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("`{arg}` needs a value"));
        match arg.as_str() {
            "--procs" => opts.procs = value()?.parse().context("--procs takes a number of processes")?,
            "--secs" => opts.secs = value()?.parse().context("--secs takes a number of seconds")?,
            "--seed" => opts.seed = value()?.parse().context("--seed takes an unsigned integer")?,
            "--keep" => opts.keep = Some(PathBuf::from(value()?)),
            "--grandchildren" => opts.grandchildren = true,
            "--tolerate-kill-window" => opts.tolerate_kill_window = true,
            other => bail!(
                "unknown argument `{other}`; usage: cargo xtask stress [--procs N] [--secs S] [--seed N] \
                 [--keep DIR] [--grandchildren] [--tolerate-kill-window]"
            ),
        }
    }
    if opts.procs == 0 {
        bail!("--procs must be at least 1");
    }
    Ok(opts)
}

/// A seed for a run that was not given one: only its printing matters, so
/// the clock and the pid are enough.
fn fresh_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()))
}

/// What the coordinator found wrong.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, msg: String) {
        eprintln!("stress: FAIL: {msg}");
        self.0.push(msg);
    }
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = parse_opts(args)?;
    let ws = crate::workspace()?;
    crate::step(
        "build cargo-safecache",
        crate::cargo().current_dir(&ws.root).args(["build", "--quiet", "--package", "cargo-safecache"]),
    )?;
    let bin = ws.target_dir.join("debug").join("cargo-safecache");
    let me = std::env::current_exe().context("cannot find the xtask binary to start workers")?;
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let tag = format!("{}-{}", std::process::id(), opts.seed);
    let cache = match &opts.keep {
        Some(dir) => {
            if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
                bail!("--keep {}: the directory is not empty; give a new or empty one", dir.display());
            }
            std::path::absolute(dir).with_context(|| format!("cannot resolve `{}`", dir.display()))?
        }
        None => base.join(format!("safecache-stress-{tag}")),
    };
    let results = base.join(format!("safecache-stress-results-{tag}"));
    fs::create_dir_all(&results).with_context(|| format!("cannot create `{}`", results.display()))?;
    let use_flock = Command::new("flock").arg("--version").output().is_ok_and(|o| o.status.success());
    become_subreaper()?;

    let replay = format!(
        "cargo xtask stress --procs {} --secs {} --seed {}{}{}",
        opts.procs,
        opts.secs,
        opts.seed,
        if opts.grandchildren { " --grandchildren" } else { "" },
        if opts.tolerate_kill_window { " --tolerate-kill-window" } else { "" }
    );
    eprintln!("\nstress: {} workers for {}s on {}", opts.procs, opts.secs, cache.display());
    eprintln!("stress: replay the same choices with `{replay}`");
    if !use_flock {
        eprintln!("stress: `flock` is not installed: the check that fills of one key never overlap is off");
    }

    let marker = format!("{MARKER_VAR}={tag}");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.secs);
    let deadline_ms = unix_ms() + opts.secs * 1000;
    let mut pids = Vec::new();
    for index in 0..opts.procs {
        let child = Command::new(&me)
            .arg(WORKER)
            .arg("--bin")
            .arg(&bin)
            .arg("--cache")
            .arg(&cache)
            .arg("--results")
            .arg(&results)
            .args(["--index", &index.to_string()])
            .args(["--seed", &splitmix(opts.seed.wrapping_add(index as u64 + 1)).to_string()])
            .args(["--deadline-ms", &deadline_ms.to_string()])
            .args(["--grandchildren", if opts.grandchildren { "1" } else { "0" }])
            .args(["--flock", if use_flock { "1" } else { "0" }])
            .args(["--tolerate-kill-window", if opts.tolerate_kill_window { "1" } else { "0" }])
            .env(MARKER_VAR, &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start a worker")?;
        // The reaper waits for the workers (it reaps every child), so the
        // handle is dropped without waiting.
        pids.push(i32::try_from(child.id()).context("a pid out of range")?);
    }

    let reaped = Arc::new(Reaped::default());
    let reaper = {
        let (reaped, workers) = (Arc::clone(&reaped), pids.iter().copied().collect::<HashSet<_>>());
        std::thread::spawn(move || reap_workers(&workers, &reaped))
    };
    let killer = {
        let (bin, marker) = (bin.to_string_lossy().into_owned(), marker.clone());
        let seed = splitmix(opts.seed ^ 0x6b69_6c6c_6572);
        std::thread::spawn(move || killer(&bin, &marker, deadline, seed))
    };

    let mut failures = Failures::default();
    let statuses = wait_for_workers(&reaped, &pids, deadline + WORKER_GRACE, &mut failures);
    let kills = killer.join().unwrap_or_default();
    let _ = reaper.join();
    let run_secs = started.elapsed().as_secs_f64();

    let strays = reap_strays(&cache, &marker, &mut failures);
    let mut totals = Totals::default();
    for (index, pid) in pids.iter().enumerate() {
        match statuses.get(pid) {
            Some(Ok(0)) => {}
            Some(st) => failures.add(format!("worker {index} (pid {pid}) {}", describe_raw(st))),
            None => {}
        }
        let file = results.join(format!("worker-{index}.json"));
        match fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
            Some(v) => totals.add(&v, &mut failures),
            None => failures.add(format!("worker {index} left no results in `{}`", file.display())),
        }
    }

    let end = final_checks(&bin, &cache, &mut failures);
    print_summary(&opts, run_secs, &totals, &kills, reaped.orphans.load(Ordering::Relaxed), strays, &end);

    if failures.0.is_empty() {
        let _ = fs::remove_dir_all(&results);
    } else {
        eprintln!("\nstress: {} failure(s):", failures.0.len());
        for f in failures.0.iter().take(30) {
            eprintln!("  - {f}");
        }
        if failures.0.len() > 30 {
            eprintln!("  ... and {} more (printed above as they happened)", failures.0.len() - 30);
        }
        eprintln!("stress: the cache is kept at {} for inspection", cache.display());
        eprintln!("stress: each worker's operations are in {}/trace-N.log", results.display());
        eprintln!("stress: replay the same choices with `{replay}`");
        bail!("the stress run found {} failure(s)", failures.0.len());
    }
    if opts.keep.is_some() {
        eprintln!("stress: the cache is kept at {}", cache.display());
    } else {
        fs::remove_dir_all(&cache).with_context(|| format!("cannot delete `{}`", cache.display()))?;
    }
    eprintln!("stress: ok");
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Makes this process the reaper of every orphaned descendant, so that a
/// fill's grandchild whose parents died comes back to us: we can then see
/// it, wait for it and report it, instead of init adopting it unseen.
fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers and
    // touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        bail!("cannot become a child subreaper: {}", io::Error::last_os_error());
    }
    Ok(())
}

/// The workers' exit statuses as the reaper collects them.
#[derive(Default)]
struct Reaped {
    statuses: Mutex<HashMap<i32, i32>>,
    /// Set when the reaper stops, even if some worker was never seen.
    done: AtomicBool,
    changed: Condvar,
    /// Orphaned descendants reaped on the way (a killed `run`'s shell and
    /// its `sleep`, which die of their parent-death signal).
    orphans: AtomicUsize,
}

/// Reaps every child until every worker has been reaped. Being a subreaper,
/// this process must reap orphans too, or they pile up as zombies; one
/// `waitpid(-1)` loop does both.
fn reap_workers(workers: &HashSet<i32>, reaped: &Reaped) {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes only through the valid pointer it is given.
        let pid = unsafe { libc::waitpid(-1, &mut raw, 0) };
        if pid < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        if workers.contains(&pid) {
            let mut statuses = reaped.statuses.lock().unwrap_or_else(|p| p.into_inner());
            statuses.insert(pid, raw);
            reaped.changed.notify_all();
            if statuses.len() == workers.len() {
                break;
            }
        } else {
            reaped.orphans.fetch_add(1, Ordering::Relaxed);
        }
    }
    reaped.done.store(true, Ordering::SeqCst);
    let _guard = reaped.statuses.lock().unwrap_or_else(|p| p.into_inner());
    reaped.changed.notify_all();
}

/// A worker's end: its exit code, or the signal that killed it.
type WorkerEnd = std::result::Result<i32, i32>;

fn decode(raw: i32) -> WorkerEnd {
    if libc::WIFEXITED(raw) { Ok(libc::WEXITSTATUS(raw)) } else { Err(libc::WTERMSIG(raw)) }
}

fn describe_raw(end: &WorkerEnd) -> String {
    match end {
        Ok(code) => format!("exited with status {code}"),
        Err(sig) => format!("was killed by signal {sig}"),
    }
}

/// Waits until every worker is reaped. A worker still running at `hard`
/// has hung: that is a failure, and it is killed with its whole tree.
fn wait_for_workers(reaped: &Reaped, pids: &[i32], hard: Instant, failures: &mut Failures) -> HashMap<i32, WorkerEnd> {
    let mut statuses = reaped.statuses.lock().unwrap_or_else(|p| p.into_inner());
    let mut killed = false;
    while statuses.len() < pids.len() && !reaped.done.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= hard && !killed {
            let procs = snapshot();
            for pid in pids.iter().filter(|p| !statuses.contains_key(p)) {
                failures.add(format!("worker pid {pid} still runs {WORKER_GRACE:?} after the deadline; killing it"));
                let tree = descendants(&procs, *pid);
                sigkill(*pid);
                tree.iter().for_each(|d| {
                    sigkill(*d);
                });
            }
            killed = true;
        }
        let wait = if killed { Duration::from_secs(1) } else { hard.saturating_duration_since(now) };
        statuses = reaped.changed.wait_timeout(statuses, wait).unwrap_or_else(|p| p.into_inner()).0;
    }
    statuses.iter().map(|(pid, raw)| (*pid, decode(*raw))).collect()
}

/// Finds descendants that outlived the workers: processes other than this
/// one that carry the run's marker or the cache dir in their environment,
/// or work inside the cache. Those still alive after [`STRAY_GRACE`] are
/// failures; they are killed and reaped so the final checks see a quiet
/// cache. Returns how many there were.
fn reap_strays(cache: &Path, marker: &str, failures: &mut Failures) -> usize {
    let dir_var = format!("SAFECACHE_DIR={}", cache.display());
    let until = Instant::now() + STRAY_GRACE;
    loop {
        reap_zombies();
        let me = std::process::id() as i32;
        let strays: Vec<Proc> = snapshot()
            .into_iter()
            .filter(|p| p.pid != me && p.state != 'Z')
            .filter(|p| {
                environ_has(p.pid, marker)
                    || environ_has(p.pid, &dir_var)
                    || fs::read_link(format!("/proc/{}/cwd", p.pid)).is_ok_and(|cwd| cwd.starts_with(cache))
            })
            .collect();
        if strays.is_empty() {
            return 0;
        }
        if Instant::now() >= until {
            for p in &strays {
                failures.add(format!(
                    "stray process pid {} (`{}`, parent {}) still runs {STRAY_GRACE:?} after every worker exited",
                    p.pid,
                    shown(&p.cmdline),
                    p.ppid
                ));
                sigkill(p.pid);
            }
            // The strays are ours (we are their subreaper) once their parents
            // are gone: reap them so none is left behind.
            let until = Instant::now() + Duration::from_secs(5);
            while strays.iter().any(|p| Path::new(&format!("/proc/{}", p.pid)).exists()) && Instant::now() < until {
                reap_zombies();
                std::thread::sleep(Duration::from_millis(20));
            }
            return strays.len();
        }
        // Polling: nothing notifies us when an unrelated process exits.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command line on one short line: the fill's script is long and spans
/// many lines, so each argument shows only its first line.
fn shown(cmdline: &[String]) -> String {
    let short: Vec<String> = cmdline
        .iter()
        .map(|a| match a.split_once('\n') {
            Some((first, _)) => format!("{first}..."),
            None => a.clone(),
        })
        .collect();
    short.join(" ")
}

fn reap_zombies() {
    loop {
        let mut raw = 0;
        // SAFETY: waitpid writes only through the valid pointer it is given.
        if unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// What the final checks found.
#[derive(Default)]
struct EndState {
    gc: Option<Value>,
    entries_verified: usize,
}

/// After everything stopped: gc, then the cache must hold only complete
/// entries, no temp, no trash, no holder record, and `status` must agree.
fn final_checks(bin: &Path, cache: &Path, failures: &mut Failures) -> EndState {
    let mut end = EndState::default();
    if !cache.join(".safecache").is_dir() {
        failures.add(format!("no cache was ever created at `{}`", cache.display()));
        return end;
    }
    let cli = |args: &[&str]| {
        Command::new(bin)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--lock-timeout", "30", "--message-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .output()
    };
    match cli(&["gc"]) {
        Ok(out) if out.status.success() => end.gc = json_lines(&out).into_iter().find(|v| v["reason"] == "gc"),
        Ok(out) => failures.add(format!("the final gc {}: {}", describe(&out), tail(&out.stderr))),
        Err(e) => failures.add(format!("cannot run the final gc: {e}")),
    }
    for sub in ["tmp", "trash", "holders"] {
        let dir = cache.join(".safecache").join(sub);
        let left: Vec<String> = match fs::read_dir(&dir) {
            Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                failures.add(format!("cannot list `{}`: {e}", dir.display()));
                Vec::new()
            }
        };
        if !left.is_empty() {
            failures.add(format!("after gc, `.safecache/{sub}` still holds {}: {}", left.len(), left.join(", ")));
        }
    }
    let names = match fs::read_dir(cache) {
        Ok(d) => d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => {
            failures.add(format!("cannot list the cache: {e}"));
            Vec::new()
        }
    };
    for name in names.iter().filter(|n| *n != ".safecache" && *n != "CACHEDIR.TAG") {
        let key = name.replace('+', "/");
        if !KEYS.contains(&key.as_str()) {
            failures.add(format!("unexpected item `{name}` at the cache root after gc"));
            continue;
        }
        // A killed in-place fill's entry keeps the sticky bit until gc
        // removes it: none may be left once every process has ended.
        let mode = fs::symlink_metadata(cache.join(name)).map(|m| m.mode());
        if mode.is_ok_and(|m| m & 0o1000 != 0) {
            failures.add(format!("after gc, `{key}` is still an uncommitted in-place entry"));
            continue;
        }
        match verify_entry(&cache.join(name), &key) {
            Ok(_) => end.entries_verified += 1,
            Err(reason) => failures.add(format!("the published entry `{key}` is incomplete at the end: {reason}")),
        }
    }
    match cli(&["status"]) {
        Ok(out) if out.status.success() => {
            let lines = json_lines(&out);
            for h in lines.iter().filter(|v| v["reason"] == "holder") {
                failures.add(format!("status still lists a holder after every process ended: {h}"));
            }
            match lines.iter().find(|v| v["reason"] == "summary") {
                Some(s) => {
                    for field in ["holders", "orphans", "trash"] {
                        if s[field] != 0 {
                            failures.add(format!("status reports {field} = {} at the end: {s}", s[field]));
                        }
                    }
                }
                None => failures.add("status printed no summary".to_owned()),
            }
        }
        Ok(out) => failures.add(format!("the final status {}: {}", describe(&out), tail(&out.stderr))),
        Err(e) => failures.add(format!("cannot run the final status: {e}")),
    }
    end
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The workers' tallies, summed.
#[derive(Default)]
struct Totals {
    ops: BTreeMap<String, BTreeMap<String, u64>>,
    counters: BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, worker: &Value, failures: &mut Failures) {
        if let Some(ops) = worker["ops"].as_object() {
            for (kind, outcomes) in ops {
                for (outcome, n) in outcomes.as_object().into_iter().flatten() {
                    *self.ops.entry(kind.clone()).or_default().entry(outcome.clone()).or_default() +=
                        n.as_u64().unwrap_or(0);
                }
            }
        }
        for (name, n) in worker["counters"].as_object().into_iter().flatten() {
            *self.counters.entry(name.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
        // Workers printed their failures as they happened; keep them for
        // the final list.
        for f in worker["failures"].as_array().into_iter().flatten() {
            failures.0.push(f.as_str().unwrap_or_default().to_owned());
        }
    }
}

const OUTCOMES: [&str; 7] = ["ok", "timeout", "killed", "absent", "cmd-failed", "kill-window", "fail"];

fn print_summary(
    opts: &Opts,
    secs: f64,
    totals: &Totals,
    kills: &KillStats,
    orphans: usize,
    strays: usize,
    end: &EndState,
) {
    let all: u64 = totals.ops.values().flat_map(|o| o.values()).sum();
    eprintln!(
        "\nstress: {} workers, {:.1}s, seed {}: {all} operations ({:.0}/s)",
        opts.procs,
        secs,
        opts.seed,
        all as f64 / secs.max(0.001)
    );
    eprint!("  {:<10}{:>8}", "op", "total");
    for o in OUTCOMES {
        eprint!("{o:>12}");
    }
    eprintln!();
    for (kind, outcomes) in &totals.ops {
        eprint!("  {kind:<10}{:>8}", outcomes.values().sum::<u64>());
        for o in OUTCOMES {
            eprint!("{:>12}", outcomes.get(o).copied().unwrap_or(0));
        }
        eprintln!();
    }
    let c = |name: &str| totals.counters.get(name).copied().unwrap_or(0);
    eprintln!(
        "  fills: {} ran CMD and published ({} of them in place), {} found the entry already there; \
         {} failed as asked; {} failed with the failed fill they waited for",
        c("filled") + c("filled-in-place"),
        c("filled-in-place"),
        c("fresh"),
        c("fill-failed-as-asked"),
        c("shared-failure")
    );
    let window: u64 = totals.ops.values().filter_map(|o| o.get("kill-window")).sum();
    if window > 0 {
        eprintln!(
            "  kill window: {window} fills started while the CMD of a killed fill of their key was still dying \
             (tolerated by --tolerate-kill-window; docs/STRESS.md)"
        );
    }
    eprintln!(
        "  unpinned reads: {} verified complete, {} saw the entry vanish; pinned reads: {} verified complete",
        c("read-verified"),
        c("read-vanished"),
        c("pinned-verified")
    );
    let by: Vec<String> = kills.by_target.iter().map(|(t, n)| format!("{t} {n}")).collect();
    eprintln!(
        "  kills: {} ({} with their process tree, {} alone; {} descendants killed); by target: {}",
        kills.tree + kills.alone,
        kills.tree,
        kills.alone,
        kills.descendants,
        if by.is_empty() { "none".to_owned() } else { by.join(", ") }
    );
    eprintln!("  orphans reaped during the run: {orphans}; stray processes at the end: {strays}");
    match &end.gc {
        Some(gc) => eprintln!(
            "  final gc: {} temps, {} trash items, {} bytes, {} dead holder records reclaimed",
            gc["temps"], gc["trash"], gc["bytes"], gc["records"]
        ),
        None => eprintln!("  final gc: did not report"),
    }
    eprintln!("  entries verified complete at the end: {}", end.entries_verified);
}

// ---------------------------------------------------------------------------
// The killer.

#[derive(Default)]
struct KillStats {
    tree: u64,
    alone: u64,
    descendants: u64,
    by_target: BTreeMap<String, u64>,
}

/// Until `deadline`, every 20 to 300 ms, SIGKILLs one random `run`, `rm`,
/// `gc` or `clean` of this stress run: half the time alone (its CMD must
/// then die of the parent-death signal), half the time with every
/// descendant it has, parents first.
fn killer(bin: &str, marker: &str, deadline: Instant, seed: u64) -> KillStats {
    let mut rng = Rng(seed);
    let mut stats = KillStats::default();
    while Instant::now() < deadline {
        // Pacing, not synchronization: kills land at random moments.
        std::thread::sleep(Duration::from_millis(20 + rng.below(280)));
        let procs = snapshot();
        let targets: Vec<(&Proc, &'static str)> = procs
            .iter()
            .filter(|p| p.state != 'Z' && p.cmdline.first().is_some_and(|a| a == bin))
            .filter_map(|p| target_label(&p.cmdline).map(|l| (p, l)))
            .filter(|(p, _)| environ_has(p.pid, marker))
            .collect();
        if targets.is_empty() {
            continue;
        }
        // Pick the kind first, by weight among the kinds running now: a
        // `clean` waiting for the exclusive lease lives longest and would
        // otherwise draw most kills, while fills are what kills must hit.
        let present: Vec<(&str, u64)> =
            KILL_WEIGHTS.iter().copied().filter(|(kind, _)| targets.iter().any(|(_, l)| l == kind)).collect();
        let mut roll = rng.below(present.iter().map(|(_, w)| w).sum());
        let mut kind = "";
        for (k, w) in &present {
            if roll < *w {
                kind = k;
                break;
            }
            roll -= w;
        }
        let of_kind: Vec<_> = targets.iter().filter(|(_, l)| *l == kind).collect();
        let Some(&&(target, label)) = of_kind.get(rng.below(of_kind.len() as u64) as usize) else { continue };
        let with_tree = rng.below(2) == 0;
        if with_tree {
            // The whole tree at once, as `kill -9 -PGID` or cgroup.kill
            // would: freeze it first, so no process it forks between the
            // listing and the kills escapes them.
            let tree = freeze_tree(target.pid);
            if !sigkill(target.pid) {
                continue;
            }
            stats.tree += 1;
            stats.descendants += tree.iter().filter(|d| sigkill(**d)).count() as u64;
        } else {
            if !sigkill(target.pid) {
                continue;
            }
            stats.alone += 1;
        }
        *stats.by_target.entry(label.to_owned()).or_default() += 1;
    }
    stats
}

/// How often the killer aims at each kind of process, when it runs.
const KILL_WEIGHTS: [(&str, u64); 5] = [("run --key", 60), ("use --key", 15), ("rm", 10), ("clean", 10), ("gc", 5)];

/// What a CLI process of a worker does, from its command line
/// `[bin, --cache-dir, C, --lock-timeout, T, sub, ...]`; `None` for the
/// commands not worth killing (`path`, `status`).
fn target_label(cmdline: &[String]) -> Option<&'static str> {
    match (cmdline.get(5).map(String::as_str), cmdline.get(6).map(String::as_str)) {
        (Some("run"), Some("--key")) => Some("run --key"),
        (Some("use"), Some("--key")) => Some("use --key"),
        (Some("rm"), _) => Some("rm"),
        (Some("gc"), _) => Some("gc"),
        (Some("clean"), _) => Some("clean"),
        _ => None,
    }
}

/// Stops `pid` and every descendant it has, looking again until no new one
/// appears (a stopped process forks nothing), and returns the descendants.
fn freeze_tree(pid: i32) -> Vec<i32> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let stop = |p: i32| unsafe { libc::kill(p, libc::SIGSTOP) };
    stop(pid);
    let mut frozen: Vec<i32> = Vec::new();
    loop {
        let fresh: Vec<i32> = descendants(&snapshot(), pid).into_iter().filter(|d| !frozen.contains(d)).collect();
        if fresh.is_empty() {
            return frozen;
        }
        for d in fresh {
            stop(d);
            frozen.push(d);
        }
    }
}

fn sigkill(pid: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

// ---------------------------------------------------------------------------
// /proc.

struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
    cmdline: Vec<String>,
}

/// Every process now running, as far as /proc shows them (a process that
/// exits while we read is skipped).
fn snapshot() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in dir.filter_map(|e| e.ok()) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name in parentheses may hold spaces: fields start
        // after the last `)`.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Proc { pid, ppid, state, cmdline });
    }
    out
}

/// `pid`'s descendants in `procs`, parents before children.
fn descendants(procs: &[Proc], pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for child in procs.iter().filter(|c| c.ppid == p) {
            out.push(child.pid);
            frontier.push(child.pid);
        }
    }
    out
}

fn environ_has(pid: i32, var: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|c| *c == 0).any(|e| e == var.as_bytes()))
}

// ---------------------------------------------------------------------------
// Entries.

/// Checks that `dir` is a complete entry of `key` as the fill script writes
/// it: a manifest, then exactly the files it names, each with both halves.
/// Returns the number of files.
fn verify_entry(dir: &Path, key: &str) -> std::result::Result<usize, String> {
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
enum Read {
    Verified,
    /// Removed (and maybe replaced) while being read: allowed without a pin.
    Vanished,
    Partial(String),
}

/// Verifies the entry at `path` without a pin. It may vanish at any moment,
/// so a failed verification counts only if the same directory is still at
/// `path` afterwards: an open handle keeps its inode from being reused, and
/// a directory renamed aside never comes back.
fn verify_unpinned(path: &Path, key: &str) -> Read {
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

// ---------------------------------------------------------------------------
// Workers.

struct Worker {
    bin: PathBuf,
    me: PathBuf,
    cache: PathBuf,
    results: PathBuf,
    index: usize,
    grandchildren: bool,
    flock: bool,
    tolerate_kill_window: bool,
    trace: fs::File,
    rng: Rng,
    seq: u64,
    ops: BTreeMap<String, BTreeMap<String, u64>>,
    counters: BTreeMap<String, u64>,
    failures: Vec<String>,
}

/// How one operation ended.
enum Outcome {
    Ok,
    Timeout,
    Killed,
    Absent,
    CmdFailed,
    /// A fill started while the CMD of a killed fill of its key still died.
    KillWindow,
    Fail(String),
}

impl Outcome {
    fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
            Outcome::Absent => "absent",
            Outcome::CmdFailed => "cmd-failed",
            Outcome::KillWindow => "kill-window",
            Outcome::Fail(_) => "fail",
        }
    }
}

/// `__stress-worker`: loops over random operations until the deadline,
/// then writes its tallies to `<results>/worker-<index>.json`.
pub(crate) fn worker(args: &[String]) -> Result<()> {
    let mut given: HashMap<&str, &str> = HashMap::new();
    for pair in args.chunks(2) {
        match pair {
            [flag, value] => given.insert(flag.as_str(), value.as_str()),
            _ => bail!("{WORKER}: odd arguments {args:?}"),
        };
    }
    let get = |flag: &str| given.get(flag).copied().with_context(|| format!("{WORKER}: missing {flag}"));
    let deadline_ms: u64 = get("--deadline-ms")?.parse()?;
    let mut w = Worker {
        bin: get("--bin")?.into(),
        me: std::env::current_exe()?,
        cache: get("--cache")?.into(),
        results: get("--results")?.into(),
        index: get("--index")?.parse()?,
        grandchildren: get("--grandchildren")? == "1",
        flock: get("--flock")? == "1",
        tolerate_kill_window: get("--tolerate-kill-window")? == "1",
        trace: fs::File::create(Path::new(get("--results")?).join(format!("trace-{}.log", get("--index")?)))
            .context("cannot create the worker's trace")?,
        rng: Rng(get("--seed")?.parse()?),
        seq: 0,
        ops: BTreeMap::new(),
        counters: BTreeMap::new(),
        failures: Vec::new(),
    };
    while unix_ms() < deadline_ms {
        w.step(deadline_ms)?;
    }
    let report = json!({ "ops": w.ops, "counters": w.counters, "failures": w.failures });
    let file = w.results.join(format!("worker-{}.json", w.index));
    fs::write(&file, report.to_string()).with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(())
}

impl Worker {
    fn step(&mut self, deadline_ms: u64) -> Result<()> {
        self.seq += 1;
        let key = KEYS[self.rng.below(KEYS.len() as u64) as usize];
        let timeout = TIMEOUTS[self.rng.below(TIMEOUTS.len() as u64) as usize];
        let mut roll = self.rng.below(100);
        // A `clean` waiting when the others stop would get the cache to
        // itself and empty it, leaving the final checks nothing to verify:
        // none starts in the last seconds (more than the longest timeout).
        if roll >= 96 && unix_ms() + CLEAN_QUIET_MS > deadline_ms {
            roll = 0;
        }
        let start = unix_ms();
        let (kind, outcome) = match roll {
            0..30 => ("fill", self.fill(key, timeout, false)?),
            30..35 => ("fill-fail", self.fill(key, timeout, true)?),
            35..55 => ("pin-read", self.pinned_read(key, timeout)?),
            55..75 => ("read", self.read(key, timeout)?),
            75..85 => ("rm", self.simple(timeout, &["rm", key])?),
            85..91 => ("gc", self.simple(timeout, &["gc"])?),
            91..96 => ("status", self.simple(timeout, &["status"])?),
            _ => ("clean", self.simple(timeout, &["clean"])?),
        };
        // One line per operation, so that a failure can be read against
        // what every worker did around it (`grep` the nonce or the time).
        let _ = writeln!(
            self.trace,
            "{start} {} w{}s{} {kind} {key} timeout={timeout} {}",
            unix_ms(),
            self.index,
            self.seq,
            outcome.name()
        );
        if let Outcome::Fail(msg) = &outcome {
            let msg = format!("worker {} op {} `{kind}` of `{key}`: {msg}", self.index, self.seq);
            eprintln!("stress: FAIL: {msg}");
            self.failures.push(msg);
        }
        *self.ops.entry(kind.to_owned()).or_default().entry(outcome.name().to_owned()).or_default() += 1;
        Ok(())
    }

    fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_owned()).or_default() += 1;
    }

    fn cli(&self, timeout: &str, args: &[OsString]) -> Result<Output> {
        Command::new(&self.bin)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(["--lock-timeout", timeout])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{}`", self.bin.display()))
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.cache.join(stored_name(key))
    }

    /// The entry's path, which `run --key` and `path` print as their last
    /// line on stdout; a failure if they printed something else.
    fn printed_path(&self, out: &Output, key: &str) -> std::result::Result<PathBuf, Outcome> {
        let expected = self.entry_path(key);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        if Path::new(last) == expected {
            Ok(expected)
        } else {
            Err(Outcome::Fail(format!("the last stdout line is {last:?}, not the entry's path {}", expected.display())))
        }
    }

    /// `run --key`; with `fail`, the fill exits [`FILL_FAILS`] midway.
    fn fill(&mut self, key: &str, timeout: &str, fail: bool) -> Result<Outcome> {
        let n = 5 + self.rng.below(21);
        let failat = if fail { self.rng.below(n) as i64 } else { -1 };
        let nonce = format!("w{}s{}r{:06x}", self.index, self.seq, self.rng.below(1 << 24));
        let key_index = KEYS.iter().position(|k| *k == key).unwrap_or(0);
        let lock = if self.flock {
            self.results.join(format!("inflight-{key_index}.lock")).into_os_string()
        } else {
            OsString::new()
        };
        // Half the fills build in place: a killed one leaves an uncommitted
        // entry at the final path, which no reader may ever be given.
        let in_place = self.rng.below(2) == 0;
        let mut args: Vec<OsString> = ["run", "--key", key].iter().map(OsString::from).collect();
        if in_place {
            args.push("--in-place".into());
        }
        args.extend(["--", "sh", "-c", FILL_SCRIPT, "stress-fill", key, &nonce].iter().map(OsString::from));
        args.push(n.to_string().into());
        args.push(failat.to_string().into());
        args.push(if self.grandchildren && self.rng.below(4) == 0 { "1" } else { "0" }.into());
        args.push(lock);
        let out = self.cli(timeout, &args)?;
        if let Some(o) = common(&out) {
            return Ok(o);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ran = stderr.lines().any(|l| l.trim_start().starts_with("Filled "));
        match out.status.code() {
            Some(0) => {
                let expected = match self.printed_path(&out, key) {
                    Ok(path) => path,
                    Err(failed) => return Ok(failed),
                };
                if fail && ran {
                    return Ok(Outcome::Fail("a fill whose CMD exited 7 was published".to_owned()));
                }
                self.count(match (ran, in_place) {
                    (true, true) => "filled-in-place",
                    (true, false) => "filled",
                    (false, _) => "fresh",
                });
                Ok(self.judge_read(&expected, key))
            }
            // A fill this run waited for failed (a `fill-fail` of another
            // worker): the waiter fails the same way instead of running the
            // fill again (the fill that failed was checked by its own worker).
            Some(FILL_FAILS) if !fail && stderr.contains("that this run waited for failed") => {
                self.count("shared-failure");
                Ok(Outcome::CmdFailed)
            }
            Some(FILL_FAILS) if fail => {
                self.count("fill-failed-as-asked");
                // Nothing of this fill may have been published: an entry
                // now present must be somebody else's.
                let manifest = fs::read_to_string(self.entry_path(key).join("MANIFEST")).unwrap_or_default();
                if manifest.split_whitespace().any(|w| w == nonce) {
                    return Ok(Outcome::Fail(format!("the failed fill {nonce} was published anyway")));
                }
                Ok(Outcome::CmdFailed)
            }
            Some(FILL_OVERLAP_DYING) if self.tolerate_kill_window => Ok(Outcome::KillWindow),
            Some(FILL_OVERLAP_DYING) => Ok(Outcome::Fail(format!(
                "the CMD of a killed fill of `{key}` still ran when this fill started (the kill window; \
                 --tolerate-kill-window counts it instead): {}",
                tail(&out.stderr)
            ))),
            Some(FILL_OVERLAP) => {
                Ok(Outcome::Fail(format!("two fills of `{key}` ran at the same time: {}", tail(&out.stderr))))
            }
            Some(FILL_WRITE_FAILED) => Ok(Outcome::Fail(format!(
                "the fill could not write into SAFECACHE_OUT (was it deleted under it?): {}",
                tail(&out.stderr)
            ))),
            _ => Ok(Outcome::Fail(format!("`run --key` {}: {}", describe(&out), tail(&out.stderr)))),
        }
    }

    /// Verifies an entry without a pin, counting what was seen.
    fn judge_read(&mut self, path: &Path, key: &str) -> Outcome {
        match verify_unpinned(path, key) {
            Read::Verified => {
                self.count("read-verified");
                Outcome::Ok
            }
            Read::Vanished => {
                self.count("read-vanished");
                Outcome::Ok
            }
            Read::Partial(reason) => {
                Outcome::Fail(format!("a reader saw a partial entry at {}: {reason}", path.display()))
            }
        }
    }

    /// `use --key KEY -- xtask __stress-verify KEY`.
    fn pinned_read(&mut self, key: &str, timeout: &str) -> Result<Outcome> {
        let args =
            ["use".into(), "--key".into(), key.into(), "--".into(), self.me.clone().into(), VERIFY.into(), key.into()];
        let out = self.cli(timeout, &args)?;
        if let Some(o) = common(&out) {
            return Ok(o);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Ok(match out.status.code() {
            Some(0) => {
                self.count("pinned-verified");
                Outcome::Ok
            }
            Some(VERIFY_PARTIAL) => Outcome::Fail(tail(&out.stderr)),
            Some(1) if stderr.contains("is not in the cache") => Outcome::Absent,
            _ => Outcome::Fail(format!("`use --key` {}: {}", describe(&out), tail(&out.stderr))),
        })
    }

    /// `path KEY`, then an unpinned verification of what it printed.
    fn read(&mut self, key: &str, timeout: &str) -> Result<Outcome> {
        let out = self.cli(timeout, &["path".into(), key.into()])?;
        if let Some(o) = common(&out) {
            return Ok(o);
        }
        match out.status.code() {
            Some(0) => Ok(match self.printed_path(&out, key) {
                Ok(path) => self.judge_read(&path, key),
                Err(failed) => failed,
            }),
            Some(1) => Ok(Outcome::Absent),
            _ => Ok(Outcome::Fail(format!("`path` {}: {}", describe(&out), tail(&out.stderr)))),
        }
    }

    /// `rm`, `gc`, `status`, `clean`: 0 is the only good answer besides a
    /// timeout or a kill.
    fn simple(&mut self, timeout: &str, args: &[&str]) -> Result<Outcome> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let out = self.cli(timeout, &args)?;
        if let Some(o) = common(&out) {
            return Ok(o);
        }
        Ok(match out.status.code() {
            Some(0) => Outcome::Ok,
            _ => Outcome::Fail(format!("{}: {}", describe(&out), tail(&out.stderr))),
        })
    }
}

/// The endings every operation shares: a panic fails; a SIGKILL (of the
/// CLI, or of CMD, which `run` reports as 137) is the killer's doing; 75 is
/// a lock timeout.
fn common(out: &Output) -> Option<Outcome> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("panicked at") {
        return Some(Outcome::Fail(format!("panic: {}", tail(&out.stderr))));
    }
    if out.status.signal() == Some(libc::SIGKILL) || out.status.code() == Some(128 + libc::SIGKILL) {
        return Some(Outcome::Killed);
    }
    if out.status.code() == Some(75) {
        return Some(Outcome::Timeout);
    }
    None
}

fn describe(out: &Output) -> String {
    match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended with {}", out.status),
    }
}

/// The last lines of a stream, on one line, for a failure message.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(4);
    let joined = lines[start..].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" | ");
    if joined.is_empty() { "(no stderr)".to_owned() } else { joined }
}

// ---------------------------------------------------------------------------
// Randomness: SplitMix64, so that a seed fixes every worker's choices
// without a dependency.

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use super::*;

    /// A scratch dir with an empty `entry` dir to fill and a `lock` path.
    fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (entry, lock) = (dir.path().join("entry"), dir.path().join("lock"));
        fs::create_dir(&entry).unwrap();
        (dir, entry, lock)
    }

    /// Runs the fill script as `run` would, writing 3 files into `out`.
    fn fill(out: &Path, key: &str, failat: i64, lock: &Path) -> Output {
        Command::new("sh")
            .args(["-c", FILL_SCRIPT, "stress-fill", key, "n1", "3", &failat.to_string(), "0"])
            .arg(lock)
            .env("SAFECACHE_OUT", out)
            .output()
            .unwrap()
    }

    #[test]
    fn a_complete_fill_verifies_and_any_damage_is_seen() {
        let (_dir, entry, lock) = scratch();
        assert!(fill(&entry, "a/b", -1, &lock).status.success());
        assert_eq!(verify_entry(&entry, "a/b"), Ok(3));
        assert!(verify_entry(&entry, "a/c").unwrap_err().contains("does not describe"));

        fs::write(entry.join("late0"), "late\n").unwrap();
        assert!(verify_entry(&entry, "a/b").unwrap_err().contains("late0"));
        fs::remove_file(entry.join("late0")).unwrap();

        let whole = fs::read_to_string(entry.join("f1")).unwrap();
        fs::write(entry.join("f1"), "a/b n1 1\n").unwrap();
        assert!(verify_entry(&entry, "a/b").unwrap_err().starts_with("f1 holds"));
        fs::write(entry.join("f1"), whole).unwrap();

        fs::remove_file(entry.join("MANIFEST")).unwrap();
        assert!(verify_entry(&entry, "a/b").unwrap_err().contains("MANIFEST"));
    }

    #[test]
    fn a_fill_told_to_fail_stops_before_the_manifest() {
        let (_dir, entry, lock) = scratch();
        assert_eq!(fill(&entry, "k", 1, &lock).status.code(), Some(FILL_FAILS));
        assert!(!entry.join("MANIFEST").exists());
        assert!(verify_entry(&entry, "k").is_err());
    }

    /// A live process holding the fill lock is a real overlap (exit 4), not
    /// the kill window: the check must not excuse a holder that is not dying.
    #[test]
    fn a_fill_that_finds_a_live_holder_of_its_lock_fails_as_an_overlap() {
        let (_dir, entry, lock) = scratch();
        // The holder says "locked" once it holds the lock, then waits for
        // its stdin to close: the pipe, not a sleep, orders the two.
        let mut holder = Command::new("sh")
            .args(["-c", r#"exec 9>>"$1"; flock -n 9 || exit 1; echo locked; exec cat"#, "holder"])
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "locked\n");

        let out = fill(&entry, "k", -1, &lock);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(FILL_OVERLAP), "{stderr}");
        assert!(stderr.contains(&format!("not being killed [ {}]", holder.id())), "{stderr}");

        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert!(fill(&entry, "k", -1, &lock).status.success());
    }

    #[test]
    fn an_unpinned_reader_tells_a_vanished_entry_from_a_partial_one() {
        let (dir, entry, lock) = scratch();
        assert!(fill(&entry, "k", -1, &lock).status.success());
        assert!(matches!(verify_unpinned(&entry, "k"), Read::Verified));
        fs::remove_file(entry.join("f2")).unwrap();
        assert!(matches!(verify_unpinned(&entry, "k"), Read::Partial(r) if r.contains("f2")));
        fs::rename(&entry, dir.path().join("aside")).unwrap();
        assert!(matches!(verify_unpinned(&entry, "k"), Read::Vanished));
    }

    #[test]
    fn the_killer_aims_only_at_commands_that_hold_locks_long() {
        let line = |sub: &[&str]| {
            let mut v: Vec<String> = ["bin", "--cache-dir", "C", "--lock-timeout", "0"].map(String::from).to_vec();
            v.extend(sub.iter().map(|s| s.to_string()));
            target_label(&v)
        };
        assert_eq!(line(&["run", "--key", "k", "--", "sh"]), Some("run --key"));
        assert_eq!(line(&["use", "--key", "k", "--", "x"]), Some("use --key"));
        assert_eq!(line(&["clean"]), Some("clean"));
        assert_eq!(line(&["path", "k"]), None);
        assert_eq!(line(&["status"]), None);
    }
}
