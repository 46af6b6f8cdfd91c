//! This defines the crash a run injects: a kill plan (one process killed
//! at one of its steps, maybe restarted) or a power cut, and the ones the
//! sweeps derive from each seed.

use std::fmt;
use std::str::FromStr;

use anyhow::{Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::power::Keep;
use crate::scenario::Scenario;

/// Kill concurrent process `proc` (its index in the scenario) just before
/// its `step`-th scheduling step, and maybe start its role again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KillPlan {
    /// Index of the process among the scenario's concurrent roles.
    pub proc: usize,
    /// How many steps it runs before it is killed.
    pub step: u64,
    /// Whether a fresh process then runs the same role.
    pub restart: bool,
}

impl fmt::Display for KillPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}{}", self.proc, self.step, if self.restart { "+restart" } else { "" })
    }
}

impl FromStr for KillPlan {
    type Err = anyhow::Error;
    /// `PROC@STEP` or `PROC@STEP+restart`.
    fn from_str(s: &str) -> Result<KillPlan> {
        let (plan, restart) = match s.strip_suffix("+restart") {
            Some(plan) => (plan, true),
            None => (s, false),
        };
        let (proc, step) = plan.split_once('@').context("a kill plan is PROC@STEP or PROC@STEP+restart")?;
        Ok(KillPlan {
            proc: proc.parse().context("kill plan process")?,
            step: step.parse().context("kill plan step")?,
            restart,
        })
    }
}

/// Steps of the race within which [`power_for_seed`] draws the cut: about
/// one cut in five falls after the race has ended (then the power goes
/// just before the final gc, which checks that everything that returned is
/// durable).
pub const POWER_SPAN: u64 = 1_500;

/// Cut the power just before the race's `step`-th scheduling step (or when
/// it ends, if it ends sooner), keeping what `keep` says of the state that
/// no fsync made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerCut {
    /// Steps of the race (all processes) before the cut.
    pub step: u64,
    /// What of the pending state survives.
    pub keep: Keep,
}

impl fmt::Display for PowerCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at race step {} ({})", self.step, self.keep)
    }
}

/// The power cut of a seed, for scenarios that have one: a step drawn
/// uniformly below [`POWER_SPAN`], and half the time nothing pending kept.
pub fn power_for_seed(scenario: &Scenario, seed: u64) -> Option<PowerCut> {
    if !scenario.power {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0070_6f77_6572);
    let step = rng.random_range(0..POWER_SPAN);
    let keep = if rng.random_bool(0.5) { Keep::Nothing } else { Keep::Some };
    Some(PowerCut { step, keep })
}

/// The kill plan the CI sweep derives from a seed: none for most seeds,
/// otherwise a random process killed at a random early step, sometimes
/// restarted.
pub fn kill_for_seed(scenario: &Scenario, seed: u64) -> Option<KillPlan> {
    // A scenario with a power cut has that crash instead.
    if scenario.power {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    if !rng.random_bool(0.3) {
        return None;
    }
    Some(KillPlan {
        proc: rng.random_range(0..scenario.procs.len()),
        step: rng.random_range(0..120),
        restart: rng.random_bool(0.5),
    })
}
