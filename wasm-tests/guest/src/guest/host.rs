//! This defines the guest's side of the host interface: the `sim` imports
//! (reports, virtual sleeps, yields, the lease parent's wait) behind safe
//! functions, and the `safecache_host` imports (locks, pid, syncs), which
//! the core declares once and lends through `safecache::sim::host`. Every
//! `unsafe` call of the guest is here.

pub(crate) use safecache::sim::host::{pid, sync};

mod imports {
    #[link(wasm_import_module = "sim")]
    unsafe extern "C" {
        pub(super) fn report(ptr: *const u8, len: usize);
        pub(super) fn sleep_ms(ms: i64);
        pub(super) fn yield_now();
        pub(super) fn wait_children();
    }
}

/// Tells the host one observation (a line of the protocol in `guest.rs`).
pub(crate) fn report(msg: &str) {
    // SAFETY: pointer and length describe a live byte slice the host only reads.
    unsafe { imports::report(msg.as_ptr(), msg.len()) }
}

/// Sleeps `ms` of virtual time; the other processes run meanwhile.
pub(crate) fn sleep_ms(ms: i64) {
    // SAFETY: an integer argument; the host sleeps in virtual time.
    unsafe { imports::sleep_ms(ms) }
}

/// A scheduling point: the host may switch processes here.
pub(crate) fn yield_now() {
    // SAFETY: a host import without arguments.
    unsafe { imports::yield_now() }
}

/// Returns once the host has seen every child of the lease parent exit.
pub(crate) fn wait_children() {
    // SAFETY: a host import without arguments.
    unsafe { imports::wait_children() }
}

/// Takes the host lock on `rel` exclusively, waiting forever: a handle, or
/// why the host refused.
pub(crate) fn lock_exclusive(rel: &str) -> Result<i32, String> {
    match safecache::sim::host::lock(rel, true, -1) {
        handle if handle >= 0 => Ok(handle),
        code => Err(format!("host lock on `{rel}` failed: {code}")),
    }
}

/// Releases a lock [`lock_exclusive`] took.
pub(crate) fn unlock(handle: i32) {
    safecache::sim::host::unlock(handle);
}
