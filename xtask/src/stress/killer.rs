//! The killer: SIGKILLs random commands of this stress run, alone or with their descendants.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Default)]
pub(super) struct KillStats {
    pub(super) tree: u64,
    pub(super) alone: u64,
    pub(super) descendants: u64,
    pub(super) by_target: BTreeMap<String, u64>,
}

/// Until `deadline`, every 20 to 300 ms, SIGKILLs one random `run`, `rm`,
/// `gc` or `clean` of this stress run: half the time alone (its CMD must
/// then die of the parent-death signal), half the time with every
/// descendant it has, parents first.
pub(super) fn killer(bin: &str, marker: &str, deadline: Instant, seed: u64) -> KillStats {
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
pub(super) const KILL_WEIGHTS: [(&str, u64); 5] =
    [("run --key", 60), ("use --key", 15), ("rm", 10), ("clean", 10), ("gc", 5)];

/// What a CLI process of a worker does, from its command line
/// `[bin, --cache-dir, C, --lock-timeout, T, sub, ...]`; `None` for the
/// commands not worth killing (`path`, `status`).
pub(super) fn target_label(cmdline: &[String]) -> Option<&'static str> {
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
pub(super) fn freeze_tree(pid: i32) -> Vec<i32> {
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

pub(super) fn sigkill(pid: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}
