//! This defines the environment contract of nested leases, both halves of
//! it: what `run` exports to CMD, and how a nested `cargo safecache` reads
//! it back.
//!
//! `SAFECACHE_LEASE` is the mode the parent holds (`shared` or
//! `exclusive`) and `SAFECACHE_LEASE_DIR` the canonical path of the cache
//! it holds it on; the marker applies only to that same cache.
//! `SAFECACHE_RUN_PIDS` lists the pids of the `run`s a process runs under,
//! outermost first, as each saw its own pid (so as its holder records name
//! it, whatever pid namespace the nested process is in): with the parent
//! chain from /proc, they are the ancestors whose locks a nested command
//! must never wait for.

use std::ffi::OsString;
use std::path::Path;

use safecache::{Leased, LockMode};

/// The variables `run` exports so that nested invocations know the lease is
/// already held: the mode, and the canonical path of the cache it covers.
pub(crate) const ENV_LEASE: &str = "SAFECACHE_LEASE";
pub(crate) const ENV_LEASE_DIR: &str = "SAFECACHE_LEASE_DIR";
pub(crate) const ENV_RUN_PIDS: &str = "SAFECACHE_RUN_PIDS";

/// The variables that tell CMD it runs under `leased`, on the cache whose
/// canonical path is `canonical`.
pub(crate) fn exports(leased: &Leased, canonical: &Path) -> [(&'static str, OsString); 3] {
    let mut pids: Vec<String> = run_pids().iter().map(u32::to_string).collect();
    pids.push(std::process::id().to_string());
    [
        (ENV_LEASE, leased.mode().to_string().into()),
        (ENV_LEASE_DIR, canonical.as_os_str().to_owned()),
        (ENV_RUN_PIDS, pids.join(" ").into()),
    ]
}

/// The pids of the `run`s this process runs under, per the exported list.
fn run_pids() -> Vec<u32> {
    let list = std::env::var(ENV_RUN_PIDS).unwrap_or_default();
    list.split_whitespace().filter_map(|p| p.parse().ok()).filter(|&p| p > 1).collect()
}

/// This process's ancestors, as far as it can tell: its parent chain from
/// /proc, when /proc shows this process's own pid namespace, and the `run`s
/// it runs under.
pub(crate) fn ancestors() -> Vec<u32> {
    let mut out = run_pids();
    let me = std::process::id();
    let own_proc = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        .is_some_and(|pid| pid == me);
    let mut pid = std::os::unix::process::parent_id();
    // A chain longer than this is a loop in what /proc said.
    for _ in 0..4096 {
        if pid <= 1 {
            break;
        }
        out.push(pid);
        if !own_proc {
            break;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { break };
        // The parent is the second field after the command name, which is in
        // parentheses and may itself contain any byte.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        match after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            Some(parent) => pid = parent,
            None => break,
        }
    }
    out.sort_unstable();
    out.dedup();
    out
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
