//! This defines the wasmtime side: one engine, linker and pre-instantiated
//! guest per test binary, and the creation of one simulated process (a
//! store with its WASI context, virtual clocks and seeded randomness).

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use wasmtime::Result;
use wasmtime::{
    CallHook, Caller, Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    Store, StoreContextMut,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};

use crate::memfs::MemFs;
use crate::tree::{HostTree, Kind, Tree};
use crate::wasi_p1::{MemProc, lock_fs};
use crate::world::{Clock, Mode, World};

/// Fuel between forced yields: a guest computing without host calls is
/// still preempted.
const FUEL_SLICE: u64 = 10_000;
/// The simulated wall clock starts at 2026-01-01T00:00:00Z.
pub(crate) const EPOCH_SECS: u64 = 1_767_225_600;
/// Where the guests see the shared directory.
pub(crate) const GUEST_ROOT: &str = "/cache";

/// Which filesystem the simulated processes share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsMode {
    /// The in-memory filesystem (`memfs.rs`, `wasi_p1.rs`): no system
    /// calls.
    #[default]
    Mem,
    /// A real directory (on tmpfs when there is one) through wasmtime-wasi:
    /// slower, and checks the simulation against the kernel.
    Host,
}

impl std::str::FromStr for FsMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<FsMode> {
        match s {
            "mem" => Ok(FsMode::Mem),
            "host" => Ok(FsMode::Host),
            other => anyhow::bail!("unknown filesystem `{other}`; one of: mem, host"),
        }
    }
}

impl std::fmt::Display for FsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsMode::Mem => "mem",
            FsMode::Host => "host",
        })
    }
}

/// The filesystem of one run, as every process of it shares it.
#[derive(Clone, Debug)]
pub(crate) enum Shared {
    /// The real directory.
    Host(Arc<PathBuf>),
    Mem(Arc<Mutex<MemFs>>),
}

impl Shared {
    /// Runs `f` over the tree as the host sees it.
    pub(crate) fn with_tree<T>(&self, f: impl FnOnce(&mut dyn Tree) -> T) -> T {
        match self {
            Shared::Host(dir) => f(&mut HostTree(dir.to_path_buf())),
            Shared::Mem(fs) => f(&mut *lock_fs(fs)),
        }
    }
}

/// The data of one simulated process's store.
pub(crate) struct Proc {
    pub(crate) wasi: WasiP1Ctx,
    pid: u32,
    /// The shared filesystem, to find the files locks name.
    shared: Shared,
    world: Arc<Mutex<World>>,
    /// Whether this process sees a filesystem that folds case and Unicode
    /// normalization (see [`fold`]).
    pub(crate) fold: bool,
    /// A page of guest memory the host grew for folded paths, once it has.
    scratch: Option<u64>,
    /// The guest's memory, once a host call has looked it up.
    memory: Option<wasmtime::Memory>,
    /// The process's descriptors over the in-memory filesystem (`None`
    /// over a real directory).
    pub(crate) mem: Option<MemProc>,
}

pub(crate) fn lock_world(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running process: the future of its `_start`. Dropping it kills it.
pub(crate) type Running = Pin<Box<dyn Future<Output = Result<()>>>>;

/// What every simulated process is made from.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    pre: InstancePre<Proc>,
    fs: FsMode,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Loads the guest built by this crate's build script.
    pub fn new() -> anyhow::Result<Host> {
        Host::from_file(Path::new(env!("SIM_GUEST_WASM")))
    }

    /// Loads a guest module from `wasm`, reusing a compiled copy cached
    /// beside it when one matches.
    pub fn from_file(wasm: &Path) -> anyhow::Result<Host> {
        Host::load(wasm).map_err(|e| anyhow::anyhow!("loading the guest {}: {e:?}", wasm.display()))
    }

    fn load(wasm: &Path) -> Result<Host> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
        let engine = Engine::new(&config)?;
        let bytes =
            std::fs::read(wasm).map_err(|e| wasmtime::format_err!("reading the guest {}: {e}", wasm.display()))?;
        let module = load_module(&engine, wasm, &bytes)?;
        let mut linker: Linker<Proc> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |p: &mut Proc| &mut p.wasi)?;
        linker.allow_shadowing(true);
        crate::wasi_p1::define(&mut linker)?;
        linker.allow_shadowing(false);
        define_imports(&mut linker)?;
        let pre = linker.instantiate_pre(&module)?;
        Ok(Host { engine, pre, fs: FsMode::default() })
    }

    /// This host with its runs over `fs`.
    #[must_use]
    pub fn with_fs(&self, fs: FsMode) -> Host {
        Host { fs, ..self.clone() }
    }

    /// The filesystem its runs use.
    pub fn fs(&self) -> FsMode {
        self.fs
    }

    /// Starts process `pid` running `args` against `dir`.
    pub(crate) fn spawn(
        &self,
        world: &Arc<Mutex<World>>,
        shared: &Shared,
        pid: u32,
        seed: u64,
        args: &[String],
        fold: bool,
    ) -> anyhow::Result<(Running, MemoryOutputPipe)> {
        self.spawn_inner(world, shared, pid, seed, args, fold)
            .map_err(|e| anyhow::anyhow!("starting process {pid}: {e:?}"))
    }

    fn spawn_inner(
        &self,
        world: &Arc<Mutex<World>>,
        shared: &Shared,
        pid: u32,
        seed: u64,
        args: &[String],
        fold: bool,
    ) -> Result<(Running, MemoryOutputPipe)> {
        let clock = lock_world(world).clock.clone();
        let stderr = MemoryOutputPipe::new(64 * 1024);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ u64::from(pid).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut secure = vec![0u8; 8192];
        rng.fill_bytes(&mut secure);
        let mut insecure = vec![0u8; 1024];
        rng.fill_bytes(&mut insecure);
        let mut builder = WasiCtxBuilder::new();
        // Filesystem calls run on this thread, in scheduler order: this must
        // come before `preopened_dir`, which captures it.
        builder.allow_blocking_current_thread(true);
        let mem = match shared {
            Shared::Host(dir) => {
                builder.preopened_dir(dir.as_path(), GUEST_ROOT, FsPerms::ReadWrite)?;
                None
            }
            Shared::Mem(fs) => Some(MemProc::new(Arc::clone(fs))),
        };
        builder
            .arg("sim-guest")
            .args(args)
            .stderr(stderr.clone())
            .secure_random(wasmtime_wasi::Deterministic::new(secure))
            .insecure_random(wasmtime_wasi::Deterministic::new(insecure))
            .insecure_random_seed(u128::from(rng.next_u64()))
            .wall_clock(WallClock(clock.clone()))
            .monotonic_clock(MonotonicClock(clock));
        let proc = Proc {
            wasi: builder.build_p1(),
            pid,
            shared: shared.clone(),
            world: Arc::clone(world),
            fold,
            scratch: None,
            memory: None,
            mem,
        };
        let mut store = Store::new(&self.engine, proc);
        store.set_fuel(u64::MAX)?;
        store.fuel_async_yield_interval(Some(FUEL_SLICE))?;
        store.call_hook_async(YieldAtHostCalls);
        let pre = self.pre.clone();
        let running: Running = Box::pin(async move {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        });
        Ok((running, stderr))
    }
}

/// Instances, linear memories, tables and fiber stacks come from pools
/// that every store of the engine shares: a process's start and end reuse
/// a slot instead of mapping and unmapping its memory, stack and tables.
/// Each memory may grow to 4 GiB, wasmtime's default, as without the
/// pool, so a guest grows exactly as before. The pools hold
/// [`pool_slots`] live processes.
fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    let slots = pool_slots();
    pool.total_core_instances(slots).total_memories(slots).total_tables(slots).total_stacks(slots);
    // A freed slot is reset by writing its first pages back rather than
    // by unmapping them, so the next process does not fault them in again.
    // (Fiber stacks are not zeroed, so they need no such setting.)
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 16)
        // Where the kernel can say which pages were touched (6.7 and
        // later), only those are reset.
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

/// Live processes the pools hold: wasmtime's default of 1,000, or 32 per
/// core where there are more than 31 cores. A run has at most about 15
/// processes alive at once, and a sweep runs one run per core.
fn pool_slots() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    u32::try_from(cores.saturating_mul(32)).unwrap_or(u32::MAX).max(1_000)
}

/// How much of a freed linear memory stays mapped (a sixteenth of it for a
/// table).
const KEEP_RESIDENT: usize = 1 << 20;

fn load_module(engine: &Engine, wasm: &Path, bytes: &[u8]) -> Result<Module> {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    let cached: PathBuf = wasm.with_extension(format!("{:016x}.cwasm", hasher.finish()));
    if cached.is_file() {
        // SAFETY: the file was written by `Module::serialize` below for this
        // very guest (its name carries the hash of the wasm bytes), and
        // wasmtime checks that it matches this engine's configuration.
        if let Ok(module) = unsafe { Module::deserialize_file(engine, &cached) } {
            return Ok(module);
        }
    }
    let module = Module::new(engine, bytes)?;
    if let Ok(serialized) = module.serialize() {
        // Best effort, and atomic: concurrent test binaries may race here.
        let temp = cached.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&temp, serialized).is_ok() && std::fs::rename(&temp, &cached).is_ok() {
            remove_stale_modules(wasm, &cached);
        }
    }
    Ok(module)
}

/// Deletes compiled copies of earlier guest builds beside `wasm`.
fn remove_stale_modules(wasm: &Path, keep: &Path) {
    let (Some(dir), Some(stem)) = (wasm.parent(), wasm.file_stem().and_then(|s| s.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path != keep && name.starts_with(&format!("{stem}.")) && name.ends_with(".cwasm") {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn guest_str(caller: &mut Caller<'_, Proc>, ptr: u32, len: u32) -> Result<String> {
    let memory = guest_memory(caller)?;
    let data = memory.data(&caller);
    let bytes = data
        .get(ptr as usize..(ptr as usize).saturating_add(len as usize))
        .ok_or_else(|| wasmtime::format_err!("guest string out of bounds"))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// `rel` (relative to the cache root), if it stays beneath it, as the
/// process's filesystem resolves it (folded, in a case-folding run): the
/// path the host's own reads (`tree.rs`) name it by.
fn resolve_rel(proc: &Proc, rel: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return None;
    }
    if !proc.fold {
        return Some(path.to_owned());
    }
    let folded = match &proc.shared {
        Shared::Host(dir) => fold_rel(dir, rel.as_bytes()),
        Shared::Mem(fs) => lock_fs(fs).spelled(rel.as_bytes()),
    };
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&folded)))
}

/// The descriptor of the cache directory the host preopens (the first
/// after stdin, stdout and stderr). std's WASI resolves every absolute
/// path beneath `/cache` against it, and the core's root uses such paths.
const PREOPEN_FD: i32 = 3;

/// The guest's exported memory (looked up by name once per process).
pub(crate) fn guest_memory(caller: &mut Caller<'_, Proc>) -> Result<wasmtime::Memory> {
    if let Some(memory) = caller.data().memory {
        return Ok(memory);
    }
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::format_err!("the guest exports no memory"))?;
    caller.data_mut().memory = Some(memory);
    Ok(memory)
}

/// Folds the path at `(ptr, len)` if it is relative to the preopened
/// directory: writes the folded spelling to half `slot` of the scratch page
/// and points `ptr` and `len` at it.
pub(crate) fn fold_arg(caller: &mut Caller<'_, Proc>, slot: u64, fd: i32, ptr: &mut i32, len: &mut i32) -> Result<()> {
    const HALF: u64 = 32_768;
    if fd != PREOPEN_FD {
        // Beneath a directory the process opened: names it read there.
        return Ok(());
    }
    let memory = guest_memory(caller)?;
    let (p, l) = (ptr.cast_unsigned() as usize, len.cast_unsigned() as usize);
    let Some(raw) = memory.data(&*caller).get(p..p.saturating_add(l)).map(<[u8]>::to_vec) else { return Ok(()) };
    let Shared::Host(dir) = &caller.data().shared else { return Ok(()) };
    let folded = fold_rel(dir, &raw);
    if folded == raw {
        return Ok(());
    }
    if folded.len() as u64 > HALF {
        return Err(wasmtime::format_err!("a folded path longer than {HALF} bytes"));
    }
    let base = match caller.data().scratch {
        Some(base) => base,
        None => {
            let base = memory.grow(&mut *caller, 1)? * 65_536;
            caller.data_mut().scratch = Some(base);
            base
        }
    };
    let at = base + slot * HALF;
    memory.write(&mut *caller, at as usize, &folded)?;
    *ptr = (at as u32).cast_signed();
    *len = (folded.len() as u32).cast_signed();
    Ok(())
}

/// Resolves `rel` beneath `dir` as a case-insensitive, case-preserving
/// filesystem does: each component that is not there as spelled, but
/// folds (see [`fold`]) to a name that is, becomes that name. A path with
/// `..` is left alone.
fn fold_rel(dir: &Path, rel: &[u8]) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    if parts.iter().any(|p| *p == b"..") {
        return rel.to_vec();
    }
    let mut host = dir.to_path_buf();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for part in parts {
        if part.is_empty() || part == b"." {
            out.push(part.to_vec());
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(part);
        let mut chosen = part.to_vec();
        if std::fs::symlink_metadata(host.join(name)).is_err()
            && let Ok(entries) = std::fs::read_dir(&host)
        {
            let want = fold(&String::from_utf8_lossy(part));
            let mut found: Vec<Vec<u8>> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().as_bytes().to_vec())
                .filter(|n| fold(&String::from_utf8_lossy(n)) == want)
                .collect();
            found.sort();
            if let Some(first) = found.into_iter().next() {
                chosen = first;
            }
        }
        host.push(std::ffi::OsStr::from_bytes(&chosen));
        out.push(chosen);
    }
    out.join(&b'/')
}

/// What a case-insensitive, normalizing filesystem compares: the name in
/// lowercase, with the Latin-1 letters decomposed into a base letter and a
/// combining accent (`é` as U+00E9 and as `e` + U+0301 are one name, as on
/// APFS). Other compositions are not modelled: the names safecache writes
/// are ASCII, and the scenario's keys use these.
pub(crate) fn fold(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let (base, accent) = match c {
            'à' => ('a', '\u{300}'),
            'á' => ('a', '\u{301}'),
            'â' => ('a', '\u{302}'),
            'ã' => ('a', '\u{303}'),
            'ä' => ('a', '\u{308}'),
            'å' => ('a', '\u{30a}'),
            'ç' => ('c', '\u{327}'),
            'è' => ('e', '\u{300}'),
            'é' => ('e', '\u{301}'),
            'ê' => ('e', '\u{302}'),
            'ë' => ('e', '\u{308}'),
            'ì' => ('i', '\u{300}'),
            'í' => ('i', '\u{301}'),
            'î' => ('i', '\u{302}'),
            'ï' => ('i', '\u{308}'),
            'ñ' => ('n', '\u{303}'),
            'ò' => ('o', '\u{300}'),
            'ó' => ('o', '\u{301}'),
            'ô' => ('o', '\u{302}'),
            'õ' => ('o', '\u{303}'),
            'ö' => ('o', '\u{308}'),
            'ù' => ('u', '\u{300}'),
            'ú' => ('u', '\u{301}'),
            'û' => ('u', '\u{302}'),
            'ü' => ('u', '\u{308}'),
            'ý' => ('y', '\u{301}'),
            'ÿ' => ('y', '\u{308}'),
            other => {
                out.push(other);
                continue;
            }
        };
        out.push(base);
        out.push(accent);
    }
    out
}

fn define_imports(linker: &mut Linker<Proc>) -> Result<()> {
    linker.func_wrap("sim", "report", |mut caller: Caller<'_, Proc>, ptr: u32, len: u32| -> Result<()> {
        let line = guest_str(&mut caller, ptr, len)?;
        let pid = caller.data().pid;
        lock_world(&caller.data().world).report(pid, line);
        Ok(())
    })?;
    // A scheduling point and nothing else: the call hook yields.
    linker.func_wrap("sim", "yield_now", |_: Caller<'_, Proc>| {})?;
    linker.func_wrap_async("sim", "sleep_ms", |caller: Caller<'_, Proc>, (ms,): (i64,)| {
        let pid = caller.data().pid;
        let world = Arc::clone(&caller.data().world);
        Box::new(async move {
            let until = lock_world(&world).clock.now().saturating_add(ms.max(0).unsigned_abs() * 1_000_000);
            WaitFor(move || lock_world(&world).poll_sleep(pid, until).then_some(())).await;
            Ok(())
        })
    })?;
    // The lease parent waits here, holding its lease, for its children.
    linker.func_wrap_async("sim", "wait_children", |caller: Caller<'_, Proc>, (): ()| {
        let pid = caller.data().pid;
        let world = Arc::clone(&caller.data().world);
        Box::new(async move {
            WaitFor(move || lock_world(&world).poll_children(pid).then_some(())).await;
            Ok(())
        })
    })?;
    linker.func_wrap_async(
        "safecache_host",
        "lock",
        |mut caller: Caller<'_, Proc>, (ptr, len, mode, timeout_ms): (u32, u32, u32, i64)| {
            let path = guest_str(&mut caller, ptr, len);
            let pid = caller.data().pid;
            let rel = path.as_ref().ok().and_then(|p| resolve_rel(caller.data(), p));
            let shared = caller.data().shared.clone();
            let world = Arc::clone(&caller.data().world);
            Box::new(async move {
                let path = path?;
                let Some(mode) = Mode::from_wasm(mode) else { return Ok(-2) };
                let Some(rel) = rel else { return Ok(-2) };
                // Like flock, the lock belongs to the file the path names now
                // (or named, if it has been unlinked since the guest opened it).
                let found = shared.with_tree(|tree| tree.stat(&rel).ok().map(|stat| stat.ino));
                let Some((file, unlinked)) = lock_world(&world).resolve(&path, found) else {
                    lock_world(&world).event(pid, format!("lock {path} -> error: no such file"));
                    return Ok(-2);
                };
                if unlinked {
                    lock_world(&world).event(pid, format!("lock {path}: the path is gone; locking the file it named"));
                }
                let deadline = match timeout_ms {
                    t if t < 0 => None,
                    t => Some(lock_world(&world).clock.now().saturating_add(t.unsigned_abs() * 1_000_000)),
                };
                let timed = lock_world(&world).begin_lock_call(pid, &path, timeout_ms);
                let poll_world = Arc::clone(&world);
                let poll_path = path.clone();
                let result = WaitFor(move || {
                    let open = || shared.with_tree(|tree| tree.pin(&rel).ok());
                    lock_world(&poll_world).poll_lock(pid, (file, &poll_path), mode, deadline, open)
                })
                .await;
                lock_world(&world).end_lock_call(pid, &path, timeout_ms, timed, result);
                Ok(result)
            })
        },
    )?;
    linker.func_wrap("safecache_host", "unlock", |caller: Caller<'_, Proc>, handle: i32| {
        let pid = caller.data().pid;
        lock_world(&caller.data().world).unlock(pid, handle);
    })?;
    linker.func_wrap("safecache_host", "pid", |caller: Caller<'_, Proc>| -> u32 { caller.data().pid })?;
    // The uncommitted mark of a directory built in place: its sticky bit,
    // which WASI p1 cannot read or set.
    linker.func_wrap(
        "safecache_host",
        "marked",
        |mut caller: Caller<'_, Proc>, ptr: u32, len: u32| -> Result<i32> {
            let path = guest_str(&mut caller, ptr, len)?;
            let Some(rel) = resolve_rel(caller.data(), &path) else { return Ok(-2) };
            Ok(caller.data().shared.with_tree(|tree| set_mark(tree, &rel, None)))
        },
    )?;
    linker.func_wrap(
        "safecache_host",
        "set_mark",
        |mut caller: Caller<'_, Proc>, ptr: u32, len: u32, on: u32| -> Result<i32> {
            let path = guest_str(&mut caller, ptr, len)?;
            let Some(rel) = resolve_rel(caller.data(), &path) else { return Ok(-2) };
            Ok(caller.data().shared.with_tree(|tree| set_mark(tree, &rel, Some(on != 0))))
        },
    )?;
    // An fsync: the host records the synced state as durable (power.rs).
    linker.func_wrap("safecache_host", "sync", |mut caller: Caller<'_, Proc>, ptr: u32, len: u32| -> Result<i32> {
        let path = guest_str(&mut caller, ptr, len)?;
        let Some(rel) = resolve_rel(caller.data(), &path) else { return Ok(-2) };
        let world = &caller.data().world;
        Ok(caller.data().shared.with_tree(|tree| lock_world(world).durable.sync(tree, &rel)))
    })?;
    Ok(())
}

/// Reads the uncommitted mark (the sticky bit) of the directory at `rel`
/// (never following a symlink) and, with `to`, sets or clears it: 1 or 0
/// for whether it was set, -1 if absent, -2 if it is not a directory or
/// cannot be changed.
pub(crate) fn set_mark(tree: &mut dyn Tree, rel: &Path, to: Option<bool>) -> i32 {
    let stat = match tree.stat(rel) {
        Ok(stat) if stat.kind == Kind::Dir => stat,
        Ok(_) => return -2,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return -1,
        Err(_) => return -2,
    };
    if let Some(on) = to
        && on != stat.marked
        && tree.set_marked(rel, on).is_err()
    {
        return -2;
    }
    i32::from(stat.marked)
}

/// A future that polls `f` until it returns `Some`. The scheduler only
/// polls a waiting process once the world says it can proceed, so no waker
/// is needed.
struct WaitFor<F>(F);

impl<F: FnMut() -> Option<T> + Unpin, T> Future for WaitFor<F> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<T> {
        match (self.0)() {
            Some(v) => Poll::Ready(v),
            None => Poll::Pending,
        }
    }
}

/// Makes every host call (WASI or ours) a scheduling point.
struct YieldAtHostCalls;

#[wasmtime_wasi::async_trait]
impl wasmtime::CallHookHandler<Proc> for YieldAtHostCalls {
    async fn handle_call_event(&self, _: StoreContextMut<'_, Proc>, ch: CallHook) -> Result<()> {
        if matches!(ch, CallHook::CallingHost) {
            YieldOnce(false).await;
        }
        Ok(())
    }
}

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[derive(Debug)]
struct WallClock(Clock);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(EPOCH_SECS) + Duration::from_nanos(self.0.now())
    }
}

#[derive(Debug)]
struct MonotonicClock(Clock);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.now()
    }
}
