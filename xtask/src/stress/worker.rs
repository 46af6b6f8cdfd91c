//! The workers: each loops over random operations through the CLI and tallies their outcomes.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) struct Worker {
    pub(super) bin: PathBuf,
    pub(super) me: PathBuf,
    pub(super) cache: PathBuf,
    pub(super) results: PathBuf,
    pub(super) index: usize,
    pub(super) grandchildren: bool,
    pub(super) flock: bool,
    pub(super) tolerate_kill_window: bool,
    pub(super) trace: fs::File,
    pub(super) rng: Rng,
    pub(super) seq: u64,
    pub(super) ops: BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) counters: BTreeMap<String, u64>,
    pub(super) failures: Vec<String>,
}

/// How one operation ended.
pub(super) enum Outcome {
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
    pub(super) fn name(&self) -> &'static str {
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
    pub(super) fn step(&mut self, deadline_ms: u64) -> Result<()> {
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

    pub(super) fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_owned()).or_default() += 1;
    }

    pub(super) fn cli(&self, timeout: &str, args: &[OsString]) -> Result<Output> {
        Command::new(&self.bin)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(["--lock-timeout", timeout])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run `{}`", self.bin.display()))
    }

    pub(super) fn entry_path(&self, key: &str) -> PathBuf {
        self.cache.join(stored_name(key))
    }

    /// The entry's path, which `run --key` and `path` print as their last
    /// line on stdout; a failure if they printed something else.
    pub(super) fn printed_path(&self, out: &Output, key: &str) -> std::result::Result<PathBuf, Outcome> {
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
    pub(super) fn fill(&mut self, key: &str, timeout: &str, fail: bool) -> Result<Outcome> {
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
    pub(super) fn judge_read(&mut self, path: &Path, key: &str) -> Outcome {
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
    pub(super) fn pinned_read(&mut self, key: &str, timeout: &str) -> Result<Outcome> {
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
    pub(super) fn read(&mut self, key: &str, timeout: &str) -> Result<Outcome> {
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
    pub(super) fn simple(&mut self, timeout: &str, args: &[&str]) -> Result<Outcome> {
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
pub(super) fn common(out: &Output) -> Option<Outcome> {
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

pub(super) fn describe(out: &Output) -> String {
    match (out.status.code(), out.status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => format!("ended with {}", out.status),
    }
}

/// The last lines of a stream, on one line, for a failure message.
pub(super) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(4);
    let joined = lines[start..].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" | ");
    if joined.is_empty() { "(no stderr)".to_owned() } else { joined }
}
