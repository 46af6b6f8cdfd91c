//! Deterministic simulation of the safecache core under wasmtime.
//!
//! The guest (`wasm-tests/guest`, built for wasm32-wasip1 by this crate's
//! build script) links the real core through its WASI directory handle and
//! runs one role per process. The host runs several such processes, each a
//! wasmtime store over one shared filesystem (in memory by default, or a
//! real directory with [`FsMode::Host`]), under a single-threaded
//! scheduler that picks the next process with a PRNG seeded by the run's
//! seed. Processes are preempted at every host call and by fuel; time,
//! randomness and locks are the host's, so one seed always replays the same
//! run. A kill plan drops a process mid-execution, as SIGKILL would.
//!
//! The crate's modules: `plan` (the crash each seed derives: kill plans
//! and power cuts), `scheduler` (one run: processes, steps, kills; and
//! sweeps), `oracle` (the invariants checked after every run), `host`
//! (wasmtime), `wasi_p1` (the WASI filesystem functions), `memfs` (the
//! in-memory filesystem), `tree` (the host's own reads and writes of the
//! shared directory, over either filesystem), `world` (virtual time, locks,
//! the trace), `power` (what a power cut leaves) and `scenario` (who runs
//! what).
//!
//! docs/SIMULATION.md explains how to read a trace and replay a seed.

mod host;
mod memfs;
mod oracle;
mod plan;
mod power;
mod scenario;
mod scheduler;
mod tree;
mod wasi_p1;
mod world;

pub use host::{FsMode, Host};
pub use oracle::OLD_ENTRIES;
pub use plan::{KillPlan, POWER_SPAN, PowerCut, kill_for_seed, power_for_seed};
pub use power::Keep;
pub use scenario::{OldFormat, Scenario, Variant};
pub use scheduler::{kill_every_step, run, sweep};

/// What one run did and what it violated.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed of the scheduler (and of every process's randomness).
    pub seed: u64,
    /// What ran.
    pub scenario: Scenario,
    /// The crash injected, if any.
    pub kill: Option<KillPlan>,
    /// The power cut, if the scenario has one.
    pub power: Option<PowerCut>,
    /// Lock events, reports, exits and kills, in order, with virtual time.
    pub trace: Vec<String>,
    /// The pid scheduled at each step.
    pub schedule: Vec<u32>,
    /// Steps taken by each concurrent process (by scenario index).
    pub steps: Vec<u64>,
    /// Broken invariants; empty when the run passed.
    pub violations: Vec<String>,
    /// The filesystem the processes shared.
    pub fs: FsMode,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Everything that must be equal when a seed is replayed.
    pub fn fingerprint(&self) -> String {
        format!("{}\n{:?}\n{:?}", self.trace.join("\n"), self.schedule, self.violations)
    }

    /// The environment variables that replay this run
    /// (`cargo test -p wasm-tests --test sim replay -- --nocapture`).
    pub fn replay_env(&self) -> String {
        let mut env = format!(
            "SAFECACHE_SEED={} SAFECACHE_SCENARIO={} SAFECACHE_VARIANT={}",
            self.seed, self.scenario.name, self.scenario.variant
        );
        if let Some(kill) = self.kill {
            env.push_str(&format!(" SAFECACHE_KILL={kill}"));
        }
        if self.fs != FsMode::default() {
            env.push_str(&format!(" SAFECACHE_FS={}", self.fs));
        }
        env
    }

    /// The full report: verdict, replay commands, schedule and trace.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed() { "passed" } else { "FAILED" };
        out.push_str(&format!(
            "simulation {verdict}: scenario `{}`, variant `{}`, seed {}, kill plan {}\n",
            self.scenario.name,
            self.scenario.variant,
            self.seed,
            self.kill.map_or("none".to_owned(), |k| k.to_string())
        ));
        if let Some(power) = self.power {
            out.push_str(&format!("power cut {power} (drawn from the seed)\n"));
        }
        for v in &self.violations {
            out.push_str(&format!("  violation: {v}\n"));
        }
        let mut kill = self.kill.map_or_else(|| " --no-kills".to_owned(), |k| format!(" --kill {k}"));
        if self.fs != FsMode::default() {
            kill.push_str(&format!(" --fs {}", self.fs));
        }
        out.push_str(&format!(
            "replay: {} cargo test -p wasm-tests --test sim replay -- --nocapture\n   or: cargo xtask sim --scenario {} --variant {} --seeds {}..{}{kill} --trace\n",
            self.replay_env(),
            self.scenario.name,
            self.scenario.variant,
            self.seed,
            self.seed + 1
        ));
        out.push_str(&format!("setup: {:?}\nprocesses: {:?}\n", self.scenario.setup, self.scenario.procs));
        out.push_str(&format!("schedule ({} steps): {}\n", self.schedule.len(), run_lengths(&self.schedule)));
        out.push_str("trace:\n");
        for line in &self.trace {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// `p1x5 p2x3 ...`: the schedule, compressed.
fn run_lengths(schedule: &[u32]) -> String {
    let mut out = Vec::new();
    let mut iter = schedule.iter().peekable();
    while let Some(&pid) = iter.next() {
        let mut n = 1;
        while iter.peek() == Some(&&pid) {
            iter.next();
            n += 1;
        }
        out.push(if n == 1 { format!("p{pid}") } else { format!("p{pid}x{n}") });
    }
    out.join(" ")
}
