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

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use safecache::{Cache, Durability, Key, LockMode, LockName, Options, Wait};

/// Where the host preopens the shared cache directory.
const ROOT: &str = "/cache";
/// Files per entry; each names its key, the fill that wrote it and its index.
const FILES: usize = 3;

mod host {
    #[link(wasm_import_module = "sim")]
    unsafe extern "C" {
        pub(super) fn report(ptr: *const u8, len: usize);
        pub(super) fn sleep_ms(ms: i64);
        pub(super) fn yield_now();
        pub(super) fn wait_children();
    }

    #[link(wasm_import_module = "safecache_host")]
    unsafe extern "C" {
        pub(super) fn lock(path_ptr: *const u8, path_len: usize, mode: u32, timeout_ms: i64) -> i32;
        pub(super) fn unlock(handle: i32);
        pub(super) fn pid() -> u32;
        pub(super) fn sync(path_ptr: *const u8, path_len: usize) -> i32;
    }
}

fn report(msg: &str) {
    // SAFETY: pointer and length describe a live byte slice the host only reads.
    unsafe { host::report(msg.as_ptr(), msg.len()) }
}

fn pid() -> u32 {
    // SAFETY: a host import without arguments.
    unsafe { host::pid() }
}

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
        (None, LockName::Lease) => ".safecache/lease.lock".to_owned(),
        (None, LockName::Gc) => ".safecache/gc.lock".to_owned(),
        (None, LockName::Entry(key)) => match key.parse::<Key>() {
            Ok(key) => format!(".safecache/locks/{}.lock", digest(&key)),
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
            // SAFETY: a host import; the host sleeps in virtual time.
            unsafe { host::sleep_ms(self.hold_ms) };
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
        naive_upgrade()?;
    }
    let cache =
        Cache::open_ambient(ROOT, Options { inherited_lease, durability: opts.durability, ..Options::default() })?;
    if opts.delay_ms > 0 {
        // SAFETY: a host import; the host sleeps in virtual time.
        unsafe { host::sleep_ms(opts.delay_ms) };
    }
    // Only a role told not to wait forever reads the clock: the others'
    // schedules stay exactly as they were.
    if opts.wait != Wait::Forever {
        START.set(Some(Instant::now()));
    }
    match role {
        "fill" => fill(&cache, &key(1)?, opts),
        "read" => read(&cache, &key(1)?, false, opts),
        "pinread" => read(&cache, &key(1)?, true, opts),
        "modify" => modify(&cache, &key(1)?, opts),
        "modify-shared" => modify_shared(&cache, &key(1)?, opts),
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
        "lease-parent" => lease_parent(&cache, args.get(1).is_some_and(|a| a == "early")),
        "clean-empties-locks" => clean_empties_locks(&cache, opts),
        "pinread-unlocked" => pinread_unlocked(&cache, &key(1)?, opts),
        "remove-inplace-locked" => remove_inplace_locked(&cache, &key(1)?, opts),
        "install" => install(&cache, &key(1)?, &key(2)?, false, opts),
        "dedupe" => dedupe(&key(1)?, true),
        "fill-shared-temp" => fill_shared_temp(&key(1)?),
        "fill-unlocked" => fill_unlocked(&key(1)?),
        "fill-inplace-unmarked" => fill_inplace_unmarked(&key(1)?, opts),
        "fill-no-parent-sync" => fill_no_parent_sync(&cache, &key(1)?, opts),
        "fill-legacy-name" => fill_legacy_name(&cache, &key(1)?, opts),
        "read-legacy-name" => read_legacy_name(&cache, &key(1)?, false, opts),
        "pinread-legacy-name" => read_legacy_name(&cache, &key(1)?, true, opts),
        "remove-legacy-name" => remove_legacy_name(&cache, &key(1)?, opts),
        "remove-inplace" => remove_inplace(&key(1)?),
        "install-delete-copy" => install(&cache, &key(1)?, &key(2)?, true, opts),
        "dedupe-none" => dedupe(&key(1)?, false),
        "lock-pair" => lock_pair(arg(1)?, arg(2)?),
        other_role => Err(other(format!("unknown role `{other_role}`"))),
    }
}

/// A name for this process's next fill: `p<pid>.<n>`.
fn token() -> String {
    thread_local!(static NEXT: Cell<u32> = const { Cell::new(0) });
    let n = NEXT.with(|c| {
        let n = c.get();
        c.set(n + 1);
        n
    });
    format!("p{}.{n}", pid())
}

fn entry_path(key: &Key) -> PathBuf {
    Path::new(ROOT).join(key.stored_name())
}

/// The digest safecache names a key's lock, temps and trash with.
fn digest(key: &Key) -> String {
    blake3::hash(key.stored_name().as_bytes()).to_hex()[..32].to_owned()
}

fn random_suffix() -> Result<String, Fail> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| other(format!("random: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the entry's files one by one (each write is a scheduling point).
fn write_entry(dir: &Path, content_key: &str, token: &str) -> io::Result<()> {
    for i in 0..FILES {
        fs::write(dir.join(format!("f{i}")), format!("{content_key}|{token}|{i}"))?;
    }
    Ok(())
}

/// Copies the files of `from` into `to`, one by one.
fn copy_entry(from: &Path, to: &Path) -> io::Result<()> {
    let mut names = fs::read_dir(from)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
    names.sort();
    for name in names {
        fs::write(to.join(&name), fs::read(from.join(&name))?)?;
    }
    Ok(())
}

/// What a reader sees at `path`: `vanished`, or every file with its content.
fn observe(path: &Path) -> io::Result<String> {
    let vanished = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let listing = match fs::read_dir(path) {
        Ok(rd) => rd.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<io::Result<Vec<_>>>(),
        Err(e) => Err(e),
    };
    let mut names = match listing {
        Ok(names) => names,
        Err(e) if vanished(&e) => return Ok("vanished".to_owned()),
        Err(e) => return Err(e),
    };
    names.sort();
    let mut parts = Vec::new();
    for name in names {
        match fs::read_to_string(Path::new(path).join(&name)) {
            Ok(content) => parts.push(format!("{name}={content}")),
            Err(e) if vanished(&e) => return Ok("vanished".to_owned()),
            Err(e) => return Err(e),
        }
    }
    Ok(format!("files {}", parts.join(",")))
}

fn fill(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let token = token();
    let fill = |dir: &safecache::FillDir<'_>| {
        report(&format!("fill-start {key} {token}"));
        write_entry(dir.path(), key.as_str(), &token)?;
        opts.hold();
        Ok::<(), io::Error>(())
    };
    let filled = if opts.inplace {
        cache.get_or_fill_in_place(key, opts.wait, fill)?
    } else {
        cache.get_or_fill(key, opts.wait, fill)?
    };
    report(&format!("fill-done {key} filled={}", filled.filled));
    Ok(())
}

/// Changes the entry of `key` in place under `modify`: rewrites every file
/// with a new token, one by one (each write a scheduling point), holds the
/// lock `hold=MS` more, and seals.
fn modify(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let token = token();
    let Some(change) = cache.modify(key, opts.wait)? else {
        report(&format!("modify-absent {key}"));
        return Ok(());
    };
    report(&format!("modify-start {key} {token} interrupted={}", change.interrupted().is_some()));
    write_entry(change.entry().path(), key.as_str(), &token)?;
    opts.hold();
    change.seal()?;
    report(&format!("modify-done {key} {token}"));
    Ok(())
}

/// The mutant of `modify`: the same change under a pin (the *shared*
/// entry lock), so pinned readers and other changes overlap it.
fn modify_shared(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let token = token();
    let Some(pin) = cache.pin(key, opts.wait)? else {
        report(&format!("modify-absent {key}"));
        return Ok(());
    };
    report(&format!("modify-start {key} {token} interrupted=false"));
    write_entry(pin.entry().path(), key.as_str(), &token)?;
    opts.hold();
    drop(pin);
    report(&format!("modify-done {key} {token}"));
    Ok(())
}

fn read(cache: &Cache, key: &Key, pinned: bool, opts: Opts) -> Result<(), Fail> {
    let how = if pinned { "pinned" } else { "unpinned" };
    if pinned {
        // One pin for every read: a remover or a cleaner must wait for all.
        // The last read is reported after the pin is released, as the
        // single read always was, so the schedules of older seeds stay.
        let pin = cache.pin(key, opts.wait)?;
        let mut last = String::new();
        for i in 0..opts.repeat {
            let seen = match &pin {
                Some(pin) => {
                    let seen = observe(pin.entry().path())?;
                    opts.hold();
                    seen
                }
                None => "absent".to_owned(),
            };
            if i + 1 < opts.repeat {
                report(&format!("read {key} {how} {seen}"));
            } else {
                last = seen;
            }
        }
        drop(pin);
        report(&format!("read {key} {how} {last}"));
    } else {
        for _ in 0..opts.repeat {
            let seen = match cache.get(key)? {
                Some(entry) => observe(entry.path())?,
                None => "absent".to_owned(),
            };
            report(&format!("read {key} {how} {seen}"));
        }
    }
    Ok(())
}

/// The parent of `cargo safecache run --exclusive`: takes the exclusive
/// lease, tells the host (which then starts the children, the roles with
/// `inherit`), and keeps the lease until every child has exited. With
/// `early` (a harness self-test) it lets the lease go before the children
/// start, which the host must report.
fn lease_parent(cache: &Cache, early: bool) -> Result<(), Fail> {
    let lease = cache.lease(LockMode::Exclusive, Wait::Forever)?;
    report("lease-held");
    let lease = if early {
        drop(lease);
        None
    } else {
        Some(lease)
    };
    // SAFETY: a host import without arguments; it returns once the host has
    // seen every child exit.
    unsafe { host::wait_children() };
    drop(lease);
    Ok(())
}

/// A pinned read whose pin takes the shared lease but not the shared entry
/// lock, so a remover does not wait for it: the core's `pin` with its entry
/// lock left out.
fn pinread_unlocked(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let entry = cache.get(key)?;
    for _ in 0..opts.repeat {
        let seen = match &entry {
            Some(entry) => {
                let seen = observe(entry.path())?;
                opts.hold();
                seen
            }
            None => "absent".to_owned(),
        };
        report(&format!("read {key} pinned {seen}"));
    }
    Ok(())
}

/// The core's `remove` with the rename aside left out: under the shared
/// lease and the exclusive entry lock, it deletes the entry where it stands,
/// so an unpinned reader can list a half-deleted entry.
fn remove_inplace_locked(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let lock = format!(".safecache/locks/{}.lock", digest(key));
    process.lock(&lock)?;
    let target = entry_path(key);
    let removed = exists(&target)?;
    let result = if removed { fs::remove_dir_all(&target) } else { Ok(()) };
    process.unlock(&lock);
    result?;
    report(&format!("removed {key} {removed}"));
    Ok(())
}

/// The core's `clean`, followed by what it must not do under an inherited
/// lease: deleting the lock files (and use stamps), which the parent's
/// other children may hold. A child that then locks a key creates a new
/// lock file, which excludes nobody holding the old one.
fn clean_empties_locks(cache: &Cache, opts: Opts) -> Result<(), Fail> {
    let r = cache.clean(opts.wait)?;
    for dir in [".safecache/used", ".safecache/locks"] {
        for entry in fs::read_dir(Path::new(ROOT).join(dir))? {
            let entry = entry?;
            match fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    report(&format!("clean entries={}", r.entries));
    Ok(())
}

/// Installs `src` as `dst`: a copy of the source entry into a target that
/// other processes install into too (uv #516).
///
/// The real protocol makes the target an entry of its own, filled by the
/// core. The buggy one deletes whatever is at the target and copies in place.
fn install(cache: &Cache, src: &Key, dst: &Key, delete_then_copy: bool, opts: Opts) -> Result<(), Fail> {
    fill(cache, src, opts)?;
    let pin = cache.pin(src, opts.wait)?.ok_or_else(|| other(format!("source `{src}` vanished")))?;
    let from = pin.entry().path().to_owned();
    if delete_then_copy {
        let target = entry_path(dst);
        report(&format!("copy-start {dst}"));
        if exists(&target)? {
            fs::remove_dir_all(&target)?;
        }
        fs::create_dir(&target)?;
        copy_entry(&from, &target)?;
    } else {
        let token = token();
        let filled = cache.get_or_fill(dst, opts.wait, |dir| {
            report(&format!("fill-start {dst} {token}"));
            copy_entry(&from, dir.path())
        })?;
        report(&format!("fill-done {dst} filled={}", filled.filled));
    }
    drop(pin);
    Ok(())
}

/// Crafter.Build #2: every filler clones into the same `<digest>.tmp`, with
/// no lock, then renames it into place.
fn fill_shared_temp(key: &Key) -> Result<(), Fail> {
    let target = entry_path(key);
    if exists(&target)? {
        report(&format!("fill-done {key} filled=false"));
        return Ok(());
    }
    let temp = Path::new(ROOT).join(format!(".safecache/tmp/{}.tmp", digest(key)));
    fs::create_dir_all(&temp)?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    write_entry(&temp, key.as_str(), &token)?;
    fs::rename(&temp, &target)?;
    report(&format!("fill-done {key} filled=true"));
    Ok(())
}

/// An in-place fill under the entry lock that writes at the final path
/// without the uncommitted mark: readers see it half-built, and a killed
/// one leaves a half entry that looks published.
fn fill_inplace_unmarked(key: &Key, opts: Opts) -> Result<(), Fail> {
    let process = Process::default();
    let lock = format!(".safecache/locks/{}.lock", digest(key));
    process.lock(&lock)?;
    let target = entry_path(key);
    let filled = if exists(&target)? {
        false
    } else {
        fs::create_dir(&target)?;
        let token = token();
        report(&format!("fill-start {key} {token}"));
        // A tool that takes a while between its first file and the rest.
        fs::write(target.join("f0"), format!("{key}|{token}|0"))?;
        opts.hold();
        write_entry(&target, key.as_str(), &token)?;
        true
    };
    process.unlock(&lock);
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

/// The core's fill without its entry lock (and so without its owner lock):
/// private temp, check, rename; the loser of a visible race discards.
fn fill_unlocked(key: &Key) -> Result<(), Fail> {
    let target = entry_path(key);
    if exists(&target)? {
        report(&format!("fill-done {key} filled=false"));
        return Ok(());
    }
    let temp = Path::new(ROOT).join(format!(".safecache/tmp/{}.{}", digest(key), random_suffix()?));
    let out = temp.join("out");
    fs::create_dir(&temp)?;
    fs::create_dir(&out)?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    write_entry(&out, key.as_str(), &token)?;
    let filled = if exists(&target)? {
        false
    } else {
        fs::rename(&out, &target)?;
        true
    };
    fs::remove_dir_all(&temp)?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

/// An fsync through the host, which records what it makes durable.
fn sync(rel: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe a live byte slice the host only reads.
    match unsafe { host::sync(rel.as_ptr(), rel.len()) } {
        0 => Ok(()),
        code => Err(io::Error::other(format!("host sync of `{rel}` failed: {code}"))),
    }
}

/// The core's fill, with every file and the tree synced before the
/// publishing rename, but without the sync of the root after it: the
/// published name can be lost in a power cut after the fill has returned.
/// Under the shared lease and the exclusive entry lock, as the core's.
fn fill_no_parent_sync(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let lock = format!(".safecache/locks/{}.lock", digest(key));
    process.lock(&lock)?;
    let result = fill_no_parent_sync_locked(key);
    process.unlock(&lock);
    let filled = result?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

fn fill_no_parent_sync_locked(key: &Key) -> Result<bool, Fail> {
    if exists(&entry_path(key))? {
        return Ok(false);
    }
    let temp = format!(".safecache/tmp/{}.{}", digest(key), random_suffix()?);
    let out = format!("{temp}/out");
    fs::create_dir(Path::new(ROOT).join(&temp))?;
    fs::create_dir(Path::new(ROOT).join(&out))?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    write_entry(&Path::new(ROOT).join(&out), key.as_str(), &token)?;
    for i in 0..FILES {
        sync(&format!("{out}/f{i}"))?;
    }
    sync(&out)?;
    fs::rename(Path::new(ROOT).join(&out), entry_path(key))?;
    // The mutant: no `sync("")` here.
    fs::remove_dir_all(Path::new(ROOT).join(&temp))?;
    Ok(true)
}

/// pip-tools #2384: `rmtree` of the entry where it stands, with no lock.
fn remove_inplace(key: &Key) -> Result<(), Fail> {
    let target = entry_path(key);
    let removed = exists(&target)?;
    if removed {
        fs::remove_dir_all(&target)?;
    }
    report(&format!("removed {key} {removed}"));
    Ok(())
}

/// The state of one process whose tasks fill concurrently (uv #544).
#[derive(Default)]
struct Process {
    /// Keys with a fill in flight in this process: the single-flight map.
    inflight: RefCell<HashSet<String>>,
    /// Locks held by this process: path -> (host handle, holds). Like
    /// fcntl locks (and cargo's in-process locks), they belong to the
    /// process, so a second task of the same process takes them too.
    locks: RefCell<HashMap<String, (i32, u32)>>,
}

impl Process {
    fn lock(&self, rel: &str) -> Result<(), Fail> {
        if let Some((_, holds)) = self.locks.borrow_mut().get_mut(rel) {
            *holds += 1;
            return Ok(());
        }
        let path = Path::new(ROOT).join(rel);
        fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
        // SAFETY: pointer and length describe a live byte slice the host only reads.
        let handle = unsafe { host::lock(rel.as_ptr(), rel.len(), 1, -1) };
        if handle < 0 {
            return Err(other(format!("host lock on `{rel}` failed: {handle}")));
        }
        self.locks.borrow_mut().insert(rel.to_owned(), (handle, 1));
        Ok(())
    }

    fn unlock(&self, rel: &str) {
        let mut locks = self.locks.borrow_mut();
        if let Some((handle, holds)) = locks.get_mut(rel) {
            *holds -= 1;
            if *holds == 0 {
                // SAFETY: releasing a handle the host gave us, once.
                unsafe { host::unlock(*handle) };
                locks.remove(rel);
            }
        }
    }
}

/// A point where this process's executor may switch tasks (and, through
/// the host call, where the host may switch processes).
fn pause() -> impl Future<Output = ()> {
    struct Pause(bool);
    impl Future for Pause {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            // SAFETY: a host import without arguments.
            unsafe { host::yield_now() };
            Poll::Pending
        }
    }
    Pause(false)
}

/// One task of a process that unpacks `key` (uv #544: the same wheel
/// requested twice by one resolution). With `single_flight`, a second task
/// waits for the first and then uses its entry, as uv's OnceMap does.
async fn unpack(process: &Process, key: &Key, single_flight: bool) -> Result<(), Fail> {
    let target = entry_path(key);
    loop {
        if exists(&target)? {
            report(&format!("fill-done {key} filled=false"));
            return Ok(());
        }
        if single_flight && process.inflight.borrow().contains(key.as_str()) {
            // SAFETY: a host import; the host sleeps in virtual time.
            unsafe { host::sleep_ms(1) };
            pause().await;
            continue;
        }
        break;
    }
    if single_flight {
        process.inflight.borrow_mut().insert(key.to_string());
    }
    let lock = format!(".safecache/locks/{}.lock", digest(key));
    process.lock(&lock)?;
    let result = unpack_locked(key, &target).await;
    process.unlock(&lock);
    process.inflight.borrow_mut().remove(key.as_str());
    let filled = result?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

async fn unpack_locked(key: &Key, target: &Path) -> Result<bool, Fail> {
    if exists(target)? {
        return Ok(false);
    }
    let temp = Path::new(ROOT).join(format!(".safecache/tmp/{}.{}", digest(key), random_suffix()?));
    let out = temp.join("out");
    fs::create_dir(&temp)?;
    fs::create_dir(&out)?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    for i in 0..FILES {
        fs::write(out.join(format!("f{i}")), format!("{key}|{token}|{i}"))?;
        pause().await;
    }
    if exists(target)? {
        return Err(other(format!("unpacking `{key}`: destination path already exists")));
    }
    fs::rename(&out, target)?;
    fs::remove_dir_all(&temp)?;
    Ok(true)
}

/// A harness self-test, not a protocol role: takes two entry-style locks in
/// the given order, so two processes taking them in opposite orders can
/// deadlock (and the host must say so).
fn lock_pair(first: &str, second: &str) -> Result<(), Fail> {
    let process = Process::default();
    let (first, second) = (format!(".safecache/locks/{first}.lock"), format!(".safecache/locks/{second}.lock"));
    process.lock(&first)?;
    // SAFETY: a host import; the host sleeps in virtual time, so the peer
    // runs meanwhile.
    unsafe { host::sleep_ms(1) };
    process.lock(&second)?;
    process.unlock(&second);
    process.unlock(&first);
    Ok(())
}

/// One cooperative task of a process.
type Task<'a> = Pin<Box<dyn Future<Output = Result<(), Fail>> + 'a>>;

fn dedupe(key: &Key, single_flight: bool) -> Result<(), Fail> {
    let process = Process::default();
    let mut tasks: Vec<Option<Task<'_>>> =
        (0..2).map(|_| Some(Box::pin(unpack(&process, key, single_flight)) as Task<'_>)).collect();
    let mut cx = Context::from_waker(Waker::noop());
    let mut first_error = None;
    loop {
        let live: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].is_some()).collect();
        if live.is_empty() {
            break;
        }
        let mut pick = [0u8; 1];
        getrandom::fill(&mut pick).map_err(|e| other(format!("random: {e}")))?;
        let i = live[usize::from(pick[0]) % live.len()];
        if let Some(task) = tasks[i].as_mut()
            && let Poll::Ready(result) = task.as_mut().poll(&mut cx)
        {
            tasks[i] = None;
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The upgrade without its journal: under the exclusive lease, each entry
/// of a format-1 or format-2 cache is renamed from its old name to its new
/// one where it stands, in listing order, and then the format file says 3.
/// The entry's manifest and stamp move with it. An old name can be another
/// key's new name: in sorted order `x%2Fy` comes before `x+y`, so it is
/// renamed onto the entry of `x+y` (which fails, or on a filesystem that
/// replaces an empty directory, loses it), and a kill between two renames
/// leaves names the next upgrade reads by the old format's rules (`x@@2by`
/// read as a key of its own).
fn naive_upgrade() -> Result<(), Fail> {
    let format = Path::new(ROOT).join(".safecache/format");
    let old = match fs::read_to_string(&format) {
        Ok(text) => text != "safecache-format 3\n",
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    if !old {
        return Ok(());
    }
    let process = Process::default();
    let lease = ".safecache/lease.lock";
    process.lock(lease)?;
    let result = naive_upgrade_locked(&format);
    process.unlock(lease);
    result
}

fn naive_upgrade_locked(format: &Path) -> Result<(), Fail> {
    if fs::read_to_string(format)? == "safecache-format 3\n" {
        return Ok(());
    }
    let mut names = Vec::new();
    for entry in fs::read_dir(ROOT)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        if name.starts_with('.') || name == "lost+found" || name == "CACHEDIR.TAG" {
            continue;
        }
        let Ok(key) = name.replace("%2F", "/").parse::<Key>() else { continue };
        let new = key.stored_name();
        if new == name {
            continue;
        }
        let at = |rel: String| Path::new(ROOT).join(rel);
        fs::rename(at(name.clone()), at(new.clone()))?;
        // The entry's manifest and last-use stamp, named by the digest of
        // its name, follow it.
        let (od, nd) = (blake3::hash(name.as_bytes()).to_hex(), blake3::hash(new.as_bytes()).to_hex());
        let (od, nd) = (&od[..32], &nd[..32]);
        for (from, to) in [
            (format!(".safecache/manifests/{od}.json"), format!(".safecache/manifests/{nd}.json")),
            (format!(".safecache/used/{od}"), format!(".safecache/used/{nd}")),
        ] {
            match fs::rename(at(from), at(to)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
    }
    fs::write(Path::new(ROOT).join(".safecache/tmp/format.new"), "safecache-format 3\n")?;
    fs::rename(Path::new(ROOT).join(".safecache/tmp/format.new"), format)?;
    Ok(())
}

/// An entry's path under format 2's names: the key as it is, `/` as `%2F`.
fn legacy_path(key: &Key) -> PathBuf {
    Path::new(ROOT).join(key.as_str().replace('/', "%2F"))
}

/// The lock of a key under format 2's names.
fn legacy_lock(key: &Key) -> String {
    let name = key.as_str().replace('/', "%2F");
    format!(".safecache/locks/{}.lock", &blake3::hash(name.as_bytes()).to_hex()[..32])
}

/// The core's fill (shared lease, entry lock, private temp, rename), with
/// the entry named as format 2 named it. On a case-insensitive filesystem
/// `lib` then finds the entry of `Lib`, and takes it for its own.
fn fill_legacy_name(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let lock = legacy_lock(key);
    process.lock(&lock)?;
    let result = (|| -> Result<bool, Fail> {
        let target = legacy_path(key);
        if exists(&target)? {
            return Ok(false);
        }
        let temp = Path::new(ROOT).join(format!(".safecache/tmp/{}.{}", digest(key), random_suffix()?));
        let out = temp.join("out");
        fs::create_dir(&temp)?;
        fs::create_dir(&out)?;
        let token = token();
        report(&format!("fill-start {key} {token}"));
        write_entry(&out, key.as_str(), &token)?;
        opts.hold();
        fs::rename(&out, &target)?;
        fs::remove_dir_all(&temp)?;
        Ok(true)
    })();
    process.unlock(&lock);
    let filled = result?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

/// A read (pinned: under the entry lock) of the entry at its format-2 name.
fn read_legacy_name(cache: &Cache, key: &Key, pinned: bool, opts: Opts) -> Result<(), Fail> {
    let how = if pinned { "pinned" } else { "unpinned" };
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let lock = legacy_lock(key);
    if pinned {
        process.lock(&lock)?;
    }
    let mut result = Ok(());
    for _ in 0..opts.repeat {
        let target = legacy_path(key);
        let seen = match exists(&target) {
            Ok(true) => observe(&target),
            Ok(false) => Ok("absent".to_owned()),
            Err(e) => Err(e),
        };
        match seen {
            Ok(seen) => report(&format!("read {key} {how} {seen}")),
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
        opts.hold();
    }
    if pinned {
        process.unlock(&lock);
    }
    result
}

/// The core's remove (entry lock, rename aside, delete), at the format-2
/// name: on a case-insensitive filesystem `remove lib` takes `Lib`, whose
/// pin is on another lock.
fn remove_legacy_name(cache: &Cache, key: &Key, opts: Opts) -> Result<(), Fail> {
    let _lease = cache.lease(LockMode::Shared, opts.wait)?;
    let process = Process::default();
    let lock = legacy_lock(key);
    process.lock(&lock)?;
    let result = (|| -> Result<bool, Fail> {
        let target = legacy_path(key);
        if !exists(&target)? {
            return Ok(false);
        }
        let trash = Path::new(ROOT).join(format!(".safecache/trash/{}.{}", digest(key), random_suffix()?));
        fs::rename(&target, &trash)?;
        fs::remove_dir_all(&trash)?;
        Ok(true)
    })();
    process.unlock(&lock);
    let removed = result?;
    report(&format!("removed {key} {removed}"));
    Ok(())
}
