//! This defines one run: the processes of a scenario started, stepped one
//! at a time in the order the seeded scheduler picks, killed where the kill
//! plan says, the power cut where the seed says; and the sweeps over seeds.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::Outcome;
use crate::host::{FsMode, Host, Running, Shared, lock_world};
use crate::memfs::MemFs;
use crate::oracle;
use crate::plan::{KillPlan, PowerCut, power_for_seed};
use crate::scenario::Scenario;
use crate::world::World;

/// Virtual time that passes per scheduling step.
pub(crate) const STEP_NS: u64 = 10_000;
/// A run that takes more steps than this is reported as a livelock.
const MAX_STEPS: u64 = 200_000;

#[derive(Debug)]
pub(crate) enum End {
    Running,
    Exited(i32),
    Trapped(String),
    Killed,
}

pub(crate) struct Slot {
    pub(crate) pid: u32,
    /// Index among the scenario's concurrent roles (None: setup, restart, final gc).
    pub(crate) index: Option<usize>,
    pub(crate) args: Vec<String>,
    /// Whether it runs under the lease parent's lease.
    pub(crate) child: bool,
    pub(crate) running: Option<Running>,
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) steps: u64,
    pub(crate) end: End,
}

pub(crate) struct Run<'a> {
    pub(crate) host: &'a Host,
    /// The filesystem the processes share.
    pub(crate) shared: Shared,
    pub(crate) seed: u64,
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) rng: StdRng,
    pub(crate) slots: Vec<Slot>,
    pub(crate) schedule: Vec<u32>,
    pub(crate) violations: Vec<String>,
    pub(crate) kill: Option<KillPlan>,
    pub(crate) killed: bool,
    pub(crate) power: Option<PowerCut>,
    /// The schedule's length when the race began, once it has.
    pub(crate) race_start: Option<usize>,
    /// How many reports came before the power cut, once it has happened.
    pub(crate) cut_reports: Option<usize>,
    /// Whether the guests see a case-insensitive filesystem.
    pub(crate) case_fold: bool,
}

impl Run<'_> {
    fn spawn(&mut self, args: &[String], index: Option<usize>, child: bool) -> Result<usize> {
        let pid = u32::try_from(self.slots.len()).unwrap_or(u32::MAX) + 1;
        let (running, stderr) = self.host.spawn(&self.world, &self.shared, pid, self.seed, args, self.case_fold)?;
        let mut world = lock_world(&self.world);
        world.event(pid, format!("spawn `{}`", args.join(" ")));
        if child {
            world.add_child(pid);
        }
        drop(world);
        self.slots.push(Slot {
            pid,
            index,
            args: args.to_vec(),
            child,
            running: Some(running),
            stderr,
            steps: 0,
            end: End::Running,
        });
        Ok(self.slots.len() - 1)
    }

    /// Runs the processes in `active` until all have ended, or until all
    /// that are left wait for children not started yet (a lease parent
    /// that holds its lease).
    fn drive(&mut self, mut active: Vec<usize>) -> Result<()> {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            active.retain(|&i| self.slots[i].running.is_some());
            if active.is_empty() {
                return Ok(());
            }
            if let (Some(cut), Some(start), None) = (self.power, self.race_start, self.cut_reports)
                && (self.schedule.len() - start) as u64 >= cut.step
            {
                return self.power_cut(&active);
            }
            if self.schedule.len() as u64 >= MAX_STEPS {
                self.violations.push(format!("livelock: no end after {MAX_STEPS} steps"));
                self.abandon(&active);
                return Ok(());
            }
            let (runnable, due): (Vec<usize>, Option<usize>) = {
                let world = lock_world(&self.world);
                let runnable: Vec<usize> =
                    active.iter().copied().filter(|&i| world.runnable(self.slots[i].pid)).collect();
                // A lock wait whose deadline has passed is a timer gone off:
                // its process runs at once (the earliest deadline first), so
                // a timed wait ends within one step of its deadline.
                let due = runnable
                    .iter()
                    .filter_map(|&i| world.expired(self.slots[i].pid).map(|d| (d, self.slots[i].pid, i)))
                    .min()
                    .map(|(_, _, i)| i);
                (runnable, due)
            };
            if runnable.is_empty() {
                let pids: Vec<u32> = active.iter().map(|&i| self.slots[i].pid).collect();
                let world = lock_world(&self.world);
                if pids.iter().all(|&p| world.parked(p)) {
                    return Ok(());
                }
                if let Some(t) = world.next_wakeup(&pids) {
                    world.clock.advance_to(t);
                    continue;
                }
                let waits: Vec<String> = pids.iter().map(|&p| format!("p{p} {}", world.describe_wait(p))).collect();
                drop(world);
                self.violations.push(format!("deadlock: every live process is blocked: {}", waits.join("; ")));
                self.abandon(&active);
                return Ok(());
            }
            let i = match due {
                Some(i) => i,
                None => runnable[self.rng.random_range(0..runnable.len())],
            };
            let pid = self.slots[i].pid;
            self.schedule.push(pid);
            if let Some(plan) = self.kill
                && !self.killed
                && self.slots[i].index == Some(plan.proc)
                && self.slots[i].steps == plan.step
            {
                self.killed = true;
                self.slots[i].running = None;
                self.slots[i].end = End::Killed;
                let mut world = lock_world(&self.world);
                world.event(pid, format!("KILLED at its step {}", plan.step));
                world.release_all(pid);
                drop(world);
                if plan.restart {
                    let args = self.slots[i].args.clone();
                    let new = self.spawn(&args, None, self.slots[i].child)?;
                    active.push(new);
                }
                continue;
            }
            let slot = &mut self.slots[i];
            let Some(running) = slot.running.as_mut() else { continue };
            let poll = running.as_mut().poll(&mut cx);
            slot.steps += 1;
            lock_world(&self.world).clock.advance_by(STEP_NS);
            if let Poll::Ready(result) = poll {
                slot.running = None;
                slot.end = match result {
                    Ok(()) => End::Exited(0),
                    Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                        Some(exit) => End::Exited(exit.0),
                        None => End::Trapped(format!("{e:#}")),
                    },
                };
                let mut world = lock_world(&self.world);
                world.event(pid, format!("exit {:?}", slot.end));
                let stderr = slot.stderr.contents();
                if !stderr.is_empty() {
                    let text = String::from_utf8_lossy(&stderr).into_owned();
                    world.event(pid, format!("stderr: {}", text.trim_end()));
                }
                world.release_all(pid);
            }
        }
    }

    /// Cuts the power: every process in `active` stops where it is, the
    /// kernel's locks go, and the directory is rebuilt from what was durable
    /// (power.rs).
    fn power_cut(&mut self, active: &[usize]) -> Result<()> {
        let Some(cut) = self.power else { return Ok(()) };
        let step = self.race_start.map_or(0, |start| self.schedule.len() - start);
        lock_world(&self.world).event(0, format!("POWER CUT at race step {step}"));
        for &i in active {
            self.slots[i].running = None;
            self.slots[i].end = End::Killed;
            lock_world(&self.world).release_all(self.slots[i].pid);
        }
        self.killed |= !active.is_empty();
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x0063_7574);
        let mut world = lock_world(&self.world);
        world.forget_files();
        self.cut_reports = Some(world.reports.len());
        let durable = &mut world.durable;
        let line = self
            .shared
            .with_tree(|tree| durable.cut(tree, cut.keep, &mut rng))
            .context("rebuilding after the power cut")?;
        world.event(0, format!("rebuilt: {line}"));
        Ok(())
    }

    /// Drops every process in `active` (after a deadlock or livelock).
    fn abandon(&mut self, active: &[usize]) {
        for &i in active {
            self.slots[i].running = None;
            self.slots[i].end = End::Killed;
            lock_world(&self.world).release_all(self.slots[i].pid);
        }
    }
}

/// Runs `scenario` once with `seed` and the crash `kill`, then checks every
/// invariant. An `Err` means the harness itself failed, not the protocol.
pub fn run(host: &Host, scenario: &Scenario, seed: u64, kill: Option<KillPlan>) -> Result<Outcome> {
    let world = World::default();
    // A real directory lives as long as the run.
    let (shared, _tmp) = match host.fs() {
        FsMode::Mem => (Shared::Mem(Arc::new(Mutex::new(MemFs::new(world.clock.clone(), scenario.case_fold)))), None),
        FsMode::Host => {
            let tmp = scratch_dir()?;
            (Shared::Host(Arc::new(tmp.path().to_owned())), Some(tmp))
        }
    };
    let mut run = Run {
        host,
        shared,
        seed,
        world: Arc::new(Mutex::new(world)),
        rng: StdRng::seed_from_u64(seed),
        slots: Vec::new(),
        schedule: Vec::new(),
        violations: Vec::new(),
        kill,
        killed: false,
        power: power_for_seed(scenario, seed),
        race_start: None,
        cut_reports: None,
        case_fold: scenario.case_fold,
    };
    let old_format = scenario.old_format(seed);
    if let Some(version) = old_format {
        run.shared.with_tree(|tree| oracle::write_old_cache(tree, version)).context("writing the old-format cache")?;
        lock_world(&run.world).event(0, format!("wrote a format-{version} cache by hand"));
    }
    for role in &scenario.setup {
        let i = run.spawn(role, None, false)?;
        run.drive(vec![i])?;
    }
    if run.power.is_some() {
        // Everything before the race is durable, as after a `sync`.
        let mut world = lock_world(&run.world);
        run.shared.with_tree(|tree| world.durable.enable(tree)).context("recording the durable image")?;
        drop(world);
        run.race_start = Some(run.schedule.len());
    }
    let mut active = Vec::new();
    if let Some(role) = &scenario.parent {
        // The parent runs alone until it holds the lease and waits for its
        // children; they start only then.
        let parent = run.spawn(role, None, false)?;
        run.drive(vec![parent])?;
        active.push(parent);
    }
    let parent_holds = active.iter().all(|&i| run.slots[i].running.is_some());
    if parent_holds {
        for (index, role) in scenario.procs.iter().enumerate() {
            active.push(run.spawn(role, Some(index), scenario.parent.is_some())?);
        }
    }
    lock_world(&run.world).start_children();
    run.drive(active)?;
    if run.power.is_some() && run.cut_reports.is_none() {
        run.power_cut(&[])?;
    }
    let gc = run.spawn(&["gc".to_owned()], None, false)?;
    run.drive(vec![gc])?;
    oracle::check(&mut run, scenario, old_format.is_some())?;
    let mut steps = vec![0; scenario.procs.len()];
    for slot in &run.slots {
        if let Some(index) = slot.index {
            steps[index] = slot.steps;
        }
    }
    let world = std::mem::take(&mut *lock_world(&run.world));
    Ok(Outcome {
        seed,
        scenario: scenario.clone(),
        kill,
        power: run.power,
        trace: world.trace,
        schedule: run.schedule,
        steps,
        violations: run.violations,
        fs: host.fs(),
    })
}

/// A fresh directory for one run, on tmpfs when there is one.
fn scratch_dir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("safecache-sim-");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder().tempdir_in(shm)
    {
        return Ok(dir);
    }
    builder().tempdir().context("creating a scratch directory")
}

/// Runs `scenario` for every seed in `seeds` (with the kill plan `kill`
/// gives for each) and returns how many ran and the first failure.
pub fn sweep(
    host: &Host,
    scenario: &Scenario,
    seeds: std::ops::Range<u64>,
    kill: impl Fn(u64) -> Option<KillPlan>,
) -> Result<(u64, Option<Outcome>)> {
    let mut runs = 0;
    for seed in seeds {
        let outcome = run(host, scenario, seed, kill(seed))?;
        runs += 1;
        if !outcome.passed() {
            return Ok((runs, Some(outcome)));
        }
    }
    Ok((runs, None))
}

/// Runs `scenario` with `seed` once, then once more for every step of
/// concurrent process `proc`, killed just before that step. Returns the
/// runs made and the first failure.
pub fn kill_every_step(
    host: &Host,
    scenario: &Scenario,
    seed: u64,
    proc: usize,
    restart: bool,
) -> Result<(u64, Option<Outcome>)> {
    let base = run(host, scenario, seed, None)?;
    if !base.passed() {
        return Ok((1, Some(base)));
    }
    let Some(&steps) = base.steps.get(proc) else { bail!("scenario `{}` has no process {proc}", scenario.name) };
    let mut runs = 1;
    for step in 0..=steps {
        let outcome = run(host, scenario, seed, Some(KillPlan { proc, step, restart }))?;
        runs += 1;
        if !outcome.passed() {
            return Ok((runs, Some(outcome)));
        }
    }
    Ok((runs, None))
}
