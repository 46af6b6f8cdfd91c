//! This defines the environment contract of nested leases, both halves of
//! it: what `run` exports to CMD, and how a nested `cargo safecache` reads
//! it back.
//!
//! `SAFECACHE_LEASE` is the mode the parent holds (`shared` or
//! `exclusive`) and `SAFECACHE_LEASE_DIR` the canonical path of the cache
//! it holds it on; the marker applies only to that same cache.

use std::ffi::OsString;
use std::path::Path;

use safecache::{Leased, LockMode};

/// The variables `run` exports so that nested invocations know the lease is
/// already held: the mode, and the canonical path of the cache it covers.
pub(crate) const ENV_LEASE: &str = "SAFECACHE_LEASE";
pub(crate) const ENV_LEASE_DIR: &str = "SAFECACHE_LEASE_DIR";

/// The variables that tell CMD it runs under `leased`, on the cache whose
/// canonical path is `canonical`.
pub(crate) fn exports(leased: &Leased, canonical: &Path) -> [(&'static str, OsString); 2] {
    [(ENV_LEASE, leased.mode().to_string().into()), (ENV_LEASE_DIR, canonical.as_os_str().to_owned())]
}

/// The lease a parent `run` holds on the cache at `dir`, per the exported
/// marker; it applies only to the same cache, compared by canonical path.
pub(crate) fn inherited_lease(dir: &Path) -> Option<LockMode> {
    let mode = match std::env::var(ENV_LEASE).ok()?.as_str() {
        "shared" => LockMode::Shared,
        "exclusive" => LockMode::Exclusive,
        _ => return None,
    };
    let leased = std::env::var_os(ENV_LEASE_DIR)?;
    let canonical = std::fs::canonicalize(dir).ok()?;
    (canonical == Path::new(&leased)).then_some(mode)
}
