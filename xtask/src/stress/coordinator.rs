//! The coordinator: parses the options, starts the workers and the killer, waits for every
//! descendant and checks the cache at the end.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct Opts {
    pub(super) procs: usize,
    pub(super) secs: u64,
    pub(super) seed: u64,
    pub(super) keep: Option<PathBuf>,
    pub(super) grandchildren: bool,
    pub(super) tolerate_kill_window: bool,
}

pub(super) fn parse_opts(args: &[String]) -> Result<Opts> {
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
pub(super) fn fresh_seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()))
}

/// What the coordinator found wrong.
#[derive(Default)]
pub(super) struct Failures(pub(super) Vec<String>);

impl Failures {
    pub(super) fn add(&mut self, msg: String) {
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

pub(super) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Makes this process the reaper of every orphaned descendant, so that a
/// fill's grandchild whose parents died comes back to us: we can then see
/// it, wait for it and report it, instead of init adopting it unseen.
pub(super) fn become_subreaper() -> Result<()> {
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
pub(super) struct Reaped {
    pub(super) statuses: Mutex<HashMap<i32, i32>>,
    /// Set when the reaper stops, even if some worker was never seen.
    pub(super) done: AtomicBool,
    pub(super) changed: Condvar,
    /// Orphaned descendants reaped on the way (a killed `run`'s shell and
    /// its `sleep`, which die of their parent-death signal).
    pub(super) orphans: AtomicUsize,
}

/// Reaps every child until every worker has been reaped. Being a subreaper,
/// this process must reap orphans too, or they pile up as zombies; one
/// `waitpid(-1)` loop does both.
pub(super) fn reap_workers(workers: &HashSet<i32>, reaped: &Reaped) {
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
pub(super) type WorkerEnd = std::result::Result<i32, i32>;

pub(super) fn decode(raw: i32) -> WorkerEnd {
    if libc::WIFEXITED(raw) { Ok(libc::WEXITSTATUS(raw)) } else { Err(libc::WTERMSIG(raw)) }
}

pub(super) fn describe_raw(end: &WorkerEnd) -> String {
    match end {
        Ok(code) => format!("exited with status {code}"),
        Err(sig) => format!("was killed by signal {sig}"),
    }
}

/// Waits until every worker is reaped. A worker still running at `hard`
/// has hung: that is a failure, and it is killed with its whole tree.
pub(super) fn wait_for_workers(
    reaped: &Reaped,
    pids: &[i32],
    hard: Instant,
    failures: &mut Failures,
) -> HashMap<i32, WorkerEnd> {
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
pub(super) fn reap_strays(cache: &Path, marker: &str, failures: &mut Failures) -> usize {
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
pub(super) fn shown(cmdline: &[String]) -> String {
    let short: Vec<String> = cmdline
        .iter()
        .map(|a| match a.split_once('\n') {
            Some((first, _)) => format!("{first}..."),
            None => a.clone(),
        })
        .collect();
    short.join(" ")
}

pub(super) fn reap_zombies() {
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
pub(super) struct EndState {
    pub(super) gc: Option<Value>,
    pub(super) entries_verified: usize,
}

/// After everything stopped: gc, then the cache must hold only complete
/// entries, no temp, no trash, no holder record, and `status` must agree.
pub(super) fn final_checks(bin: &Path, cache: &Path, failures: &mut Failures) -> EndState {
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

pub(super) fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The workers' tallies, summed.
#[derive(Default)]
pub(super) struct Totals {
    pub(super) ops: BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) counters: BTreeMap<String, u64>,
}

impl Totals {
    pub(super) fn add(&mut self, worker: &Value, failures: &mut Failures) {
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

pub(super) const OUTCOMES: [&str; 7] = ["ok", "timeout", "killed", "absent", "cmd-failed", "kill-window", "fail"];

pub(super) fn print_summary(
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
