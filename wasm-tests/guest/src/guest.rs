//! The roles. Each runs once and tells the host what it observed through the
//! `sim` imports, one line per observation:
//!
//! - `fill-start <key> <token>`: a fill of `<key>` began writing;
//! - `fill-done <key> filled=<bool>`;
//! - `read <key> <pinned|unpinned> <absent|vanished|files f0=..,f1=..>`;
//! - `removed <key> <bool>`, `gc ..`, `clean entries=<n>`;
//! - `busy file=<lock file|-> mode=<sh|ex> wait=<nowait|timeout=MS>
//!   elapsed_ns=<n> holders=<pid:mode,..|none>`: a role that was told not
//!   to wait forever met a busy lock (an expected outcome, followed by `done`);
//! - `done` on success, `error <busy|other> <message>` on failure.
//!
//! Roles that take a lock accept a wait mode as an extra argument: `nowait`,
//! `timeout=MS` (virtual milliseconds) or `forever` (the default). `fill` and
//! `pinread` also accept `hold=MS`: they keep the entry lock that long (a
//! virtual sleep) while filling or reading. `read` and `pinread` accept
//! `repeat=N`: they read the entry N times (a pinned reader under one pin,
//! holding it `hold=MS` after each read), reporting each read. Any role
//! accepts `inherit`: it opens the cache with an inherited exclusive lease,
//! as a child of `cargo safecache run --exclusive` does; the host starts
//! such roles only while a `lease-parent` role holds the lease. Any role
//! accepts `delay=MS`: it sleeps that long (virtual time) before its
//! operation, so a scenario can order its phases loosely.
//!
//! The real protocol roles (`fill`, `read`, `pinread`, `remove`, `gc`,
//! `clean`, `install`, `dedupe`, `lease-parent`) use the safecache core. The
//! buggy roles (`fill-shared-temp`, `fill-unlocked`, `fill-no-parent-sync`, `remove-inplace`,
//! `remove-inplace-locked`, `pinread-unlocked`, `install-delete-copy`,
//! `dedupe-none`, `clean-empties-locks`) re-create one bug each, written
//! here against the same directory and the same host locks.
//!
//! This file is the executable's entry: options, outcome lines, fault
//! injection and the role table. The roles are in `guest/roles.rs` (the
//! protocol's, through the core), `guest/buggy.rs` (one bug each) and
//! `guest/executor.rs` (a process whose tasks fill concurrently); the host
//! interface is `guest/host.rs`.

mod buggy;
mod executor;
mod host;
mod roles;

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use safecache::{Cache, Durability, Key, LockMode, LockName, Options, Wait, sim};

use crate::guest::host::report;

/// Where the host preopens the shared cache directory.
const ROOT: &str = "/cache";
/// Files per entry; each names its key, the fill that wrote it and its index.
const FILES: usize = 3;

/// Why a role failed.
struct Fail {
    busy: bool,
    msg: String,
    /// The `busy ...` report line, when this is a [`safecache::Error::Busy`].
    busy_line: Option<String>,
}

impl From<safecache::Error> for Fail {
    fn from(e: safecache::Error) -> Fail {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        let busy_line = busy_line(&e);
        Fail { busy: e.is_busy(), msg, busy_line }
    }
}

fn mode_letter(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => "sh",
        LockMode::Exclusive => "ex",
    }
}

/// `file=.. mode=.. holders=..` for a busy lock: the lock file is the one the
/// holders name, or else the one the lock's name implies.
fn busy_line(e: &safecache::Error) -> Option<String> {
    let safecache::Error::Busy { lock, mode, holders, .. } = e else { return None };
    let file = match (holders.first(), lock) {
        (Some(h), _) => h.lock_file.clone(),
        (None, LockName::Lease) => sim::LEASE_LOCK.to_owned(),
        (None, LockName::Gc) => sim::GC_LOCK.to_owned(),
        (None, LockName::Entry(key)) => match key.parse::<Key>() {
            Ok(key) => sim::entry_lock(&sim::digest(&key)),
            Err(_) => "-".to_owned(),
        },
        (None, _) => "-".to_owned(),
    };
    let named: Vec<String> = holders
        .iter()
        .map(|h| {
            let file = if h.lock_file == file { String::new() } else { format!("@{}", h.lock_file) };
            format!("{}:{}{file}", h.pid, mode_letter(h.mode))
        })
        .collect();
    let named = if named.is_empty() { "none".to_owned() } else { named.join(",") };
    Some(format!("file={file} mode={} holders={named}", mode_letter(*mode)))
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail { busy: false, msg: format!("io: {e}"), busy_line: None }
    }
}

fn other(msg: impl Into<String>) -> Fail {
    Fail { busy: false, msg: msg.into(), busy_line: None }
}

/// How a role waits for locks, and how long it keeps its entry lock.
#[derive(Clone, Copy)]
struct Opts {
    wait: Wait,
    /// Virtual milliseconds to sleep while holding the entry lock.
    hold_ms: i64,
    /// How many times a reader reads the entry.
    repeat: u32,
    /// Whether the cache is opened under an inherited exclusive lease.
    inherit: bool,
    /// Virtual milliseconds to sleep before the operation.
    delay_ms: i64,
    /// Whether one fault, chosen from the seeded random stream, is injected
    /// at the directory-handle boundary (`safecache::faults`).
    fault: bool,
    /// Whether a fill builds its entry in place (at its final path).
    inplace: bool,
    /// The durability level the cache is opened with (`durability=none`).
    durability: Option<Durability>,
    /// Whether the role first upgrades an older cache by hand, renaming
    /// each entry in place (the `upgrade-no-journal` variant).
    naive_upgrade: bool,
}

impl Opts {
    fn wait_name(&self) -> String {
        match self.wait {
            Wait::NoWait => "nowait".to_owned(),
            Wait::Timeout(d) => format!("timeout={}", d.as_millis()),
            Wait::Forever => "forever".to_owned(),
        }
    }

    /// Sleeps `hold_ms` of virtual time, if any.
    fn hold(&self) {
        if self.hold_ms > 0 {
            host::sleep_ms(self.hold_ms);
        }
    }
}

/// Splits the options (`nowait`, `timeout=MS`, `forever`, `hold=MS`) from
/// the role's positional arguments.
fn parse_opts(args: &[String]) -> Result<(Vec<String>, Opts), Fail> {
    let mut opts = Opts {
        wait: Wait::Forever,
        hold_ms: 0,
        repeat: 1,
        inherit: false,
        delay_ms: 0,
        fault: false,
        durability: None,
        inplace: false,
        naive_upgrade: false,
    };
    let mut positional = Vec::new();
    for arg in args {
        let ms = |v: &str| v.parse::<u64>().map_err(|e| other(format!("bad number in `{arg}`: {e}")));
        if arg == "nowait" {
            opts.wait = Wait::NoWait;
        } else if arg == "forever" {
            opts.wait = Wait::Forever;
        } else if let Some(v) = arg.strip_prefix("timeout=") {
            opts.wait = Wait::from_timeout(Some(Duration::from_millis(ms(v)?)));
        } else if let Some(v) = arg.strip_prefix("hold=") {
            opts.hold_ms = i64::try_from(ms(v)?).unwrap_or(i64::MAX);
        } else if let Some(v) = arg.strip_prefix("repeat=") {
            opts.repeat = u32::try_from(ms(v)?).unwrap_or(u32::MAX).max(1);
        } else if let Some(v) = arg.strip_prefix("delay=") {
            opts.delay_ms = i64::try_from(ms(v)?).unwrap_or(i64::MAX);
        } else if arg == "inherit" {
            opts.inherit = true;
        } else if arg == "fault" {
            opts.fault = true;
        } else if arg == "inplace" {
            opts.inplace = true;
        } else if arg == "naive-upgrade" {
            opts.naive_upgrade = true;
        } else if let Some(v) = arg.strip_prefix("durability=") {
            opts.durability = Some(v.parse().map_err(|e: safecache::InvalidDurability| other(e.to_string()))?);
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((positional, opts))
}

pub(crate) fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, opts) = match parse_opts(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            report(&format!("error other {}", e.msg));
            std::process::exit(1);
        }
    };
    if opts.fault {
        inject_fault();
    }
    match run(&args, opts) {
        Ok(()) => report("done"),
        // The injected fault fired: failing with it, clearly, is this role's
        // expected outcome. The run's invariants then check that the cache
        // stayed consistent.
        Err(e) if e.msg.contains("injected:") => {
            report(&format!("faulted {}", e.msg));
            report("done");
        }
        Err(Fail { busy_line: Some(line), .. }) if opts.wait != Wait::Forever => {
            // Expected when the role may not wait forever: say what was busy
            // and who held it, for the host to check against its lock table.
            let elapsed = START.get().map_or(0, |start| start.elapsed().as_nanos());
            report(&format!("busy {line} wait={} elapsed_ns={elapsed}", opts.wait_name()));
            report("done");
        }
        Err(e) => {
            report(&format!("error {} {}", if e.busy { "busy" } else { "other" }, e.msg));
            std::process::exit(1);
        }
    }
}

/// Plans one fault from the seeded random stream: which operation, which
/// call of it, and how it fails, as the OS would.
fn inject_fault() {
    use safecache::faults::{Failure, Fault, Op, inject};
    let mut bytes = [0u8; 3];
    if getrandom::fill(&mut bytes).is_err() {
        return;
    }
    let (op, failures): (Op, &[Failure]) = match bytes[0] % 7 {
        0 => (Op::CreateDir, &[Failure::NoSpace]),
        1 => (Op::Write, &[Failure::NoSpace, Failure::Io]),
        2 => (Op::Open, &[Failure::Interrupted, Failure::Access]),
        3 => (Op::Lock, &[Failure::Interrupted, Failure::NoLocks]),
        4 => (Op::Sync, &[Failure::Io]),
        5 => (Op::Rename, &[Failure::Access, Failure::Busy]),
        _ => (Op::Remove, &[Failure::Access, Failure::Busy]),
    };
    let failure = failures[usize::from(bytes[2]) % failures.len()];
    let nth = usize::from(bytes[1] % 12);
    report(&format!("fault {op:?}#{nth} {failure:?}"));
    inject(&[Fault { op, nth, failure }]);
}

thread_local! {
    /// When the role's operation began (virtual time), for roles that may
    /// not wait forever.
    static START: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn run(args: &[String], opts: Opts) -> Result<(), Fail> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(|| other(format!("missing argument {i}")));
    let key = |i: usize| -> Result<Key, Fail> { Ok(arg(i)?.parse::<Key>().map_err(safecache::Error::from)?) };
    let role = arg(0)?;
    let inherited_lease = opts.inherit.then_some(LockMode::Exclusive);
    if opts.naive_upgrade {
        buggy::naive_upgrade()?;
    }
    let cache =
        Cache::open_ambient(ROOT, Options { inherited_lease, durability: opts.durability, ..Options::default() })?;
    if opts.delay_ms > 0 {
        host::sleep_ms(opts.delay_ms);
    }
    // Only a role told not to wait forever reads the clock: the others'
    // schedules stay exactly as they were.
    if opts.wait != Wait::Forever {
        START.set(Some(Instant::now()));
    }
    match role {
        "fill" => roles::fill(&cache, &key(1)?, opts),
        "read" => roles::read(&cache, &key(1)?, false, opts),
        "pinread" => roles::read(&cache, &key(1)?, true, opts),
        "modify" => roles::modify(&cache, &key(1)?, opts),
        "modify-shared" => buggy::modify_shared(&cache, &key(1)?, opts),
        "remove" => {
            let key = key(1)?;
            let removed = cache.remove(&key, opts.wait)?;
            report(&format!("removed {key} {removed}"));
            Ok(())
        }
        "gc" => {
            let r = cache.gc(opts.wait)?;
            report(&format!("gc temps={} trash={} busy={} records={}", r.temps, r.trash, r.busy, r.records));
            Ok(())
        }
        "clean" => {
            let r = cache.clean(opts.wait)?;
            report(&format!("clean entries={}", r.entries));
            Ok(())
        }
        "lease-exit" => {
            // Dies holding the shared lease, as after SIGKILL: its holder
            // record stays behind (the host releases its locks).
            let lease = cache.lease(LockMode::Shared, Wait::Forever)?;
            report("done");
            std::mem::forget(lease);
            std::process::exit(0)
        }
        "lease-parent" => roles::lease_parent(&cache, args.get(1).is_some_and(|a| a == "early")),
        "clean-empties-locks" => buggy::clean_empties_locks(&cache, opts),
        "pinread-unlocked" => buggy::pinread_unlocked(&cache, &key(1)?, opts),
        "remove-inplace-locked" => buggy::remove_inplace_locked(&cache, &key(1)?, opts),
        "install" => roles::install(&cache, &key(1)?, &key(2)?, false, opts),
        "dedupe" => executor::dedupe(&key(1)?, true),
        "fill-shared-temp" => buggy::fill_shared_temp(&key(1)?),
        "fill-unlocked" => buggy::fill_unlocked(&key(1)?),
        "fill-inplace-unmarked" => buggy::fill_inplace_unmarked(&key(1)?, opts),
        "fill-no-parent-sync" => buggy::fill_no_parent_sync(&cache, &key(1)?, opts),
        "fill-legacy-name" => buggy::fill_legacy_name(&cache, &key(1)?, opts),
        "read-legacy-name" => buggy::read_legacy_name(&cache, &key(1)?, false, opts),
        "pinread-legacy-name" => buggy::read_legacy_name(&cache, &key(1)?, true, opts),
        "remove-legacy-name" => buggy::remove_legacy_name(&cache, &key(1)?, opts),
        "remove-inplace" => buggy::remove_inplace(&key(1)?),
        "install-delete-copy" => roles::install(&cache, &key(1)?, &key(2)?, true, opts),
        "dedupe-none" => executor::dedupe(&key(1)?, false),
        "lock-pair" => executor::lock_pair(arg(1)?, arg(2)?),
        other_role => Err(other(format!("unknown role `{other_role}`"))),
    }
}
