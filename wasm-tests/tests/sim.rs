//! The simulation suite: the safecache core, compiled to wasm32-wasip1, run
//! as several processes under the deterministic wasmtime host.
//!
//! The CI-sized sweep runs 3,270 schedules of the real protocol (about a
//! third of them with a crash injected; 300 of them with roles that time out
//! or do not wait; 200 under an inherited lease), a kill at every step of a
//! small scenario, a determinism check, a regression seed, and proof that
//! each re-created bug is caught, all over the in-memory filesystem; and a
//! few seeds of every scenario over a real directory. A failure prints the seed, kill plan, scenario, the command
//! that replays it, and the trace; see docs/SIMULATION.md.

use std::sync::OnceLock;

use wasm_tests::{FsMode, Host, KillPlan, Outcome, Scenario, Variant, kill_every_step, kill_for_seed, run, sweep};

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| Host::new().expect("loading the guest"))
}

/// Sweeps the real protocol over `seeds`, with the crashes `kill_for_seed`
/// derives from each seed; panics with the full report on a failure.
fn sweep_real(name: &str, seeds: std::ops::Range<u64>) -> u64 {
    let scenario = Scenario::new(name, Variant::Correct).unwrap();
    let (runs, failure) = sweep(host(), &scenario, seeds, |seed| kill_for_seed(&scenario, seed)).unwrap();
    if let Some(outcome) = failure {
        panic!("{}", outcome.report());
    }
    runs
}

#[test]
fn sweep_three_fillers_and_a_pinned_reader() {
    assert_eq!(sweep_real("fill3", 0..500), 500);
}

#[test]
fn sweep_fill_pin_remove_read_and_gc() {
    assert_eq!(sweep_real("churn", 0..300), 300);
}

#[test]
fn sweep_in_place_fills_beside_readers_removers_and_kills() {
    assert_eq!(sweep_real("in-place", 0..300), 300);
}

#[test]
fn sweep_clean_beside_fills_and_readers() {
    assert_eq!(sweep_real("clean", 0..200), 200);
}

#[test]
fn sweep_the_bug_scenarios_with_the_real_protocol() {
    let mut runs = 0;
    for name in ["shared-temp", "inplace-delete", "unlocked-fill", "delete-copy", "dedupe"] {
        runs += sweep_real(name, 0..220);
    }
    assert_eq!(runs, 1100);
}

/// Readers reading again and again beside removers: a remover that
/// deletes an entry where it stands (under its locks) is seen in about one
/// seed in five, a pin that does not keep removers out in every seed.
#[test]
fn sweep_readers_that_read_again_beside_removers() {
    assert_eq!(sweep_real("reread", 0..200), 200);
}

/// Twelve processes over three keys: fills, pinned and unpinned reads,
/// removes, clean, gc, with and without waiting, and restarts after kills.
#[test]
fn sweep_every_role_over_three_keys() {
    assert_eq!(sweep_real("mixed", 0..120), 120);
}

/// One seeded fault (ENOSPC, EIO, EACCES, EBUSY, EINTR, ENOLCK) in each of
/// several roles: every faulty role fails with it clearly or never meets
/// it, and the others and the final gc find the cache consistent.
#[test]
fn sweep_faults_at_the_directory_handle() {
    let scenario = Scenario::new("faults", Variant::Correct).unwrap();
    assert_eq!(sweep_real("faults", 0..200), 200);
    // The faults do fire: some runs report a role that failed with one.
    let faulted = (0..20)
        .filter(|&seed| {
            let outcome = run(host(), &scenario, seed, None).unwrap();
            outcome.report().contains("faulted ")
        })
        .count();
    assert!(faulted > 0, "no fault fired in 20 seeds");
}

/// Entries that jobs change in place one at a time (issue 16): changers
/// beside pinned and unpinned readers, a remove, a refill and gc, under
/// kills; a pin never sees a change under way, and an entry a killed
/// change left half done is marked, never taken for sealed.
#[test]
fn sweep_changes_in_place_beside_readers_and_removers() {
    assert_eq!(sweep_real("modify", 0..200), 200);
    assert_eq!(sweep_real("power-modify", 0..150), 150);
}

/// The first changer of `modify-kill`, killed at each of its steps, then
/// with its role restarted: the restart sees the change as interrupted and
/// seals it.
#[test]
fn kill_a_change_at_every_step() {
    let scenario = Scenario::new("modify-kill", Variant::Correct).unwrap();
    for restart in [false, true] {
        let (runs, failure) = kill_every_step(host(), &scenario, 7, 0, restart).unwrap();
        if let Some(outcome) = failure {
            panic!("{}", outcome.report());
        }
        assert!(runs > 50, "the changer took only {} steps", runs - 2);
    }
}

/// Children of a parent that holds the exclusive lease, opened with
/// `inherited_lease: Some(Exclusive)`: fills, pins, a remove, a clean and
/// a gc, which all run without taking the lease.
#[test]
fn sweep_children_under_an_inherited_exclusive_lease() {
    assert_eq!(sweep_real("inherited", 0..200), 200);
}

/// An old-format cache (2, then 1 with a sticky adopted directory) that
/// every role's open upgrades, with kills during the upgrade: every old key
/// stays under its key with its content, its manifest follows it, and the
/// final gc leaves format 3 and no journal.
#[test]
fn sweep_upgrades_from_formats_1_and_2_under_kills() {
    assert_eq!(sweep_real("upgrade", 0..100), 100);
    assert_eq!(sweep_real("upgrade-v1", 0..100), 100);
}

/// Keys that differ only in case or normalization on a host that folds
/// both: each key's entry holds its own content.
#[test]
fn sweep_keys_differing_in_case_on_a_case_insensitive_host() {
    assert_eq!(sweep_real("case-fold", 0..60), 60);
}

/// A power cut at a seeded step of fills, a pinned reader, a remove, a
/// refill and a gc, at durability `full`: every fill that returned
/// survives complete, every remove that returned stays done, and gc
/// reclaims what the cut left. `power-upgrade` cuts power during the
/// upgrade of a format-1 or format-2 cache: every old key survives under
/// its new name.
#[test]
fn sweep_power_cuts_at_durability_full() {
    assert_eq!(sweep_real("power", 0..150), 150);
    assert_eq!(sweep_real("power-in-place", 0..150), 150);
    assert_eq!(sweep_real("power-upgrade", 0..100), 100);
}

/// The same at durability `none` loses what `full` keeps: the model can
/// fail, and does, in the three ways docs/SIMULATION.md lists.
#[test]
fn power_cuts_at_durability_none_lose_entries_and_leave_corrupt_ones() {
    let scenario = Scenario::new("power-none", Variant::Correct).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let outcome = run(host(), &scenario, seed, None).unwrap();
        for v in &outcome.violations {
            if v.contains("is incomplete") {
                seen.insert("corrupt entry");
            } else if v.contains("returned before the cut, but the entry is gone") {
                seen.insert("lost entry");
            } else if v.contains("returned before the cut, but the entry is back") {
                seen.insert("resurrected entry");
            } else {
                panic!("unexpected violation at durability none: {v}\n{}", outcome.report());
            }
        }
    }
    assert_eq!(seen.len(), 3, "only {seen:?} in 40 seeds of `power-none`");
}

/// `pinread a nowait` was told that p6 held the entry lock when the host's
/// lock table had no such hold: p6 had been killed and left its holder
/// record, and p7 found that record's flock taken because another process
/// was probing it at the same moment. The core now probes holder records
/// with a shared try-lock, so two probers never take each other for a live
/// holder.
#[test]
fn regression_timeouts_seed_7161_probers_are_not_holders() {
    let scenario = Scenario::new("timeouts", Variant::Correct).unwrap();
    let kill = Some(KillPlan { proc: 5, step: 116, restart: true });
    let outcome = run(host(), &scenario, 7161, kill).unwrap();
    assert!(outcome.passed(), "{}", outcome.report());
}

/// Several roles describe the lease's holders at once beside the record a
/// dead process left. With the old exclusive probe of holder records
/// (seed 7161 above), about 3 seeds in 10 fail here.
#[test]
fn sweep_probers_of_a_dead_holders_record() {
    assert_eq!(sweep_real("probers", 0..100), 100);
}

#[test]
fn sweep_roles_that_time_out_or_do_not_wait() {
    let scenario = Scenario::new("timeouts", Variant::Correct).unwrap();
    let mut seen = std::collections::BTreeMap::<&str, u32>::new();
    for seed in 0..300 {
        let outcome = run(host(), &scenario, seed, kill_for_seed(&scenario, seed)).unwrap();
        if !outcome.passed() {
            panic!("{}", outcome.report());
        }
        for line in &outcome.trace {
            if line.contains("says: busy ") {
                for (what, yes) in [
                    ("nowait busy", line.contains("wait=nowait")),
                    ("timed-out busy", line.contains("wait=timeout=")),
                    ("busy naming holders", !line.contains("holders=none")),
                    ("busy naming no holder", line.contains("holders=none")),
                ] {
                    if yes {
                        *seen.entry(what).or_default() += 1;
                    }
                }
            }
            if line.contains("-> busy (timed out)") {
                *seen.entry("host timeouts").or_default() += 1;
            }
        }
    }
    // Every kind of outcome must actually happen, or the invariants on
    // them are checked on nothing.
    for what in ["nowait busy", "timed-out busy", "busy naming holders", "busy naming no holder", "host timeouts"] {
        assert!(seen.get(what).is_some_and(|&n| n >= 5), "too few `{what}` in 300 seeds: {seen:?}");
    }
}

#[test]
fn kill_at_every_step_of_a_small_scenario() {
    let scenario = Scenario::new("kill-small", Variant::Correct).unwrap();
    // The filler, killed at each of its steps, then with its role restarted;
    // and the pinned reader, killed at each of its steps.
    for (proc, restart) in [(0, false), (0, true), (1, false)] {
        let (runs, failure) = kill_every_step(host(), &scenario, 7, proc, restart).unwrap();
        if let Some(outcome) = failure {
            panic!("{}", outcome.report());
        }
        assert!(runs > 50, "process {proc} took only {} steps", runs - 2);
    }
}

/// Every scenario over a real directory through wasmtime-wasi (`--fs
/// host`), which checks the in-memory filesystem's model against the
/// kernel: a few seeds each, with their crashes.
#[test]
fn sweep_every_scenario_over_a_real_directory() {
    let host = host().with_fs(FsMode::Host);
    for name in Scenario::NAMES {
        let scenario = Scenario::new(name, Variant::Correct).unwrap();
        let (runs, failure) = sweep(&host, &scenario, 0..4, |seed| kill_for_seed(&scenario, seed)).unwrap();
        if let Some(outcome) = failure {
            panic!("{}", outcome.report());
        }
        assert_eq!(runs, 4);
    }
    // A buggy variant is caught there too.
    let scenario = Scenario::new("reread", Variant::PinUnlocked).unwrap();
    let (_, failure) = sweep(&host, &scenario, 0..CATCH_BOUND, |_| None).unwrap();
    assert!(failure.is_some(), "`pin-unlocked` survived `reread` over a real directory");
}

#[test]
fn a_seed_replays_exactly() {
    let mut distinct = std::collections::HashSet::new();
    for (name, variant) in [
        ("fill3", Variant::Correct),
        ("churn", Variant::Correct),
        ("dedupe", Variant::Correct),
        ("inplace-delete", Variant::InplaceDelete),
        ("timeouts", Variant::Correct),
        ("mixed", Variant::Correct),
        ("inherited", Variant::Correct),
        ("power", Variant::Correct),
    ] {
        let scenario = Scenario::new(name, variant).unwrap();
        for seed in 0..8 {
            let kill =
                if seed % 2 == 0 { None } else { Some(KillPlan { proc: 0, step: 20 + seed, restart: seed % 4 == 1 }) };
            let first = run(host(), &scenario, seed, kill).unwrap();
            let again = run(host(), &scenario, seed, kill).unwrap();
            assert_eq!(
                first.fingerprint(),
                again.fingerprint(),
                "{name} seed {seed} did not replay:\n{}",
                first.report()
            );
            distinct.insert(first.schedule.clone());
        }
    }
    assert_eq!(distinct.len(), 64, "different seeds should give different schedules");
}

/// How many seeds each buggy variant may take to be caught. The slowest
/// today: `inplace-delete-locked`, at seed 23 of `reread` (the changes and
/// fill logs of issue 16 moved its catching schedule from within 20).
const CATCH_BOUND: u64 = 40;

#[test]
fn every_seed_bug_is_caught() {
    let mut caught = Vec::new();
    for variant in Variant::BUGGY {
        let scenario = Scenario::new(variant.home_scenario(), variant).unwrap();
        let (runs, failure) = sweep(host(), &scenario, 0..CATCH_BOUND, |_| None).unwrap();
        let outcome: Outcome = failure
            .unwrap_or_else(|| panic!("variant `{variant}` survived {CATCH_BOUND} seeds of `{}`", scenario.name));
        let report = outcome.report();
        assert!(report.contains(&format!("SAFECACHE_SEED={}", outcome.seed)), "{report}");
        assert!(report.contains("trace:"), "{report}");
        caught.push(format!("{variant}: seed {} (after {runs} seeds): {}", outcome.seed, outcome.violations[0]));
    }
    println!("{}", caught.join("\n"));
}

#[test]
fn a_deadlock_is_reported_with_who_waits_for_whom() {
    let scenario = Scenario::new("lock-order", Variant::Correct).unwrap();
    let (_, failure) = sweep(host(), &scenario, 0..CATCH_BOUND, |_| None).unwrap();
    let outcome = failure.expect("two processes locking in opposite orders never deadlocked");
    let deadlock = outcome.violations.iter().find(|v| v.starts_with("deadlock")).expect("a deadlock violation");
    assert!(deadlock.contains("waits for ex .safecache/locks/"), "{deadlock}");
}

#[test]
fn children_without_their_parents_lease_are_reported() {
    let scenario = Scenario::new("orphan-children", Variant::Correct).unwrap();
    let outcome = run(host(), &scenario, 0, None).unwrap();
    assert!(
        outcome.violations.iter().any(|v| v.contains("did not hold .safecache/lease.lock exclusively")),
        "{}",
        outcome.report()
    );
}

/// Replays the run that `SAFECACHE_SEED`, `SAFECACHE_SCENARIO`,
/// `SAFECACHE_VARIANT`, `SAFECACHE_KILL` and `SAFECACHE_FS` describe, printing its trace
/// (`-- --nocapture`); without them, seed 0 of `fill3`.
#[test]
fn replay() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let seed = var("SAFECACHE_SEED").map_or(0, |s| s.parse().expect("SAFECACHE_SEED is a number"));
    let name = var("SAFECACHE_SCENARIO").unwrap_or_else(|| "fill3".to_owned());
    let variant = var("SAFECACHE_VARIANT").map_or(Variant::Correct, |v| v.parse().unwrap());
    let kill = var("SAFECACHE_KILL").map(|k| k.parse::<KillPlan>().unwrap());
    let fs = var("SAFECACHE_FS").map_or(FsMode::default(), |f| f.parse().unwrap());
    let scenario = Scenario::new(&name, variant).unwrap();
    let outcome = run(&host().with_fs(fs), &scenario, seed, kill).unwrap();
    println!("{}", outcome.report());
    assert!(outcome.passed(), "the replayed run failed; its report is above");
}
