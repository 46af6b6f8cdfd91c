//! This defines the scenarios: which roles run, first one by one (setup),
//! then all at once; and the protocol variants, one per seed bug.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

/// Which protocol the concurrent roles use: the real one, or a re-creation
/// of one seed bug (written in the guest, not in the core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The safecache protocol, through the core.
    Correct,
    /// Crafter.Build #2: every filler uses the same temp name, no lock.
    SharedTemp,
    /// pip-tools #2384: `rmtree` of the entry in place, no lock.
    InplaceDelete,
    /// The core's fill without its entry lock.
    UnlockedFill,
    /// uv #516: delete the shared target, then copy into it.
    DeleteCopy,
    /// uv #544: two tasks of one process fill one key, no single-flight map.
    NoDedupe,
}

impl Variant {
    /// Every variant, the real protocol first.
    pub const ALL: [Variant; 6] = [
        Variant::Correct,
        Variant::SharedTemp,
        Variant::InplaceDelete,
        Variant::UnlockedFill,
        Variant::DeleteCopy,
        Variant::NoDedupe,
    ];

    /// The buggy variants.
    pub const BUGGY: [Variant; 5] =
        [Variant::SharedTemp, Variant::InplaceDelete, Variant::UnlockedFill, Variant::DeleteCopy, Variant::NoDedupe];

    /// The variant's name on the command line and in `SAFECACHE_VARIANT`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::SharedTemp => "shared-temp",
            Variant::InplaceDelete => "inplace-delete",
            Variant::UnlockedFill => "unlocked-fill",
            Variant::DeleteCopy => "delete-copy",
            Variant::NoDedupe => "no-dedupe",
        }
    }

    /// The scenario that exposes this variant's bug.
    pub fn home_scenario(self) -> &'static str {
        match self {
            Variant::Correct => "fill3",
            Variant::SharedTemp => "shared-temp",
            Variant::InplaceDelete => "inplace-delete",
            Variant::UnlockedFill => "unlocked-fill",
            Variant::DeleteCopy => "delete-copy",
            Variant::NoDedupe => "dedupe",
        }
    }

    /// The guest role that replaces `role` under this variant.
    fn substitute(self, role: &str) -> &str {
        match (self, role) {
            (Variant::SharedTemp, "fill") => "fill-shared-temp",
            (Variant::UnlockedFill, "fill") => "fill-unlocked",
            (Variant::InplaceDelete, "remove") => "remove-inplace",
            (Variant::DeleteCopy, "install") => "install-delete-copy",
            (Variant::NoDedupe, "dedupe") => "dedupe-none",
            (_, role) => role,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Variant> {
        match Variant::ALL.into_iter().find(|v| v.name() == s) {
            Some(v) => Ok(v),
            None => bail!("unknown variant `{s}`; one of: {}", Variant::ALL.map(Variant::name).join(", ")),
        }
    }
}

/// Processes to run against one fresh cache directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// The scenario's name (see [`Scenario::NAMES`]).
    pub name: String,
    /// The variant its concurrent roles use.
    pub variant: Variant,
    /// Roles run one after another, each alone, before the race.
    pub setup: Vec<Vec<String>>,
    /// Roles run concurrently under the scheduler.
    pub procs: Vec<Vec<String>>,
}

impl Scenario {
    /// Every scenario name.
    pub const NAMES: [&'static str; 10] = [
        "fill3",
        "churn",
        "clean",
        "kill-small",
        "shared-temp",
        "inplace-delete",
        "unlocked-fill",
        "delete-copy",
        "dedupe",
        "timeouts",
    ];

    /// The scenario `name`, with its concurrent roles in `variant`.
    pub fn new(name: &str, variant: Variant) -> Result<Scenario> {
        let (setup, procs): (&[&str], &[&str]) = match name {
            // Three processes: the throughput benchmark's scenario.
            "fill3" => (&[], &["fill a", "fill a", "pinread a"]),
            "churn" => (&[], &["fill a", "pinread a", "remove a", "read a", "gc", "fill a"]),
            "clean" => (&[], &["fill a", "fill b", "pinread a", "clean", "read b"]),
            // Small enough to kill at every step.
            "kill-small" => (&[], &["fill a", "pinread a"]),
            "shared-temp" => (&[], &["fill a", "fill a", "read a"]),
            "inplace-delete" => (&["fill a"], &["remove a", "remove a", "read a"]),
            "unlocked-fill" => (&[], &["fill a", "fill a", "gc"]),
            "delete-copy" => (&["fill a"], &["install a b", "install a b", "read b"]),
            "dedupe" => (&[], &["dedupe a", "read a"]),
            // Roles that may not wait forever beside a filler and a pinner
            // that keep the entry lock a while. At most two roles wait with a
            // timeout at once, so their deadlines end within one step.
            "timeouts" => (
                &[],
                &[
                    "fill a hold=4",
                    "pinread a hold=2",
                    "remove a timeout=2",
                    "fill a timeout=3",
                    "clean nowait",
                    "pinread a nowait",
                ],
            ),
            // A self-test of the harness, not in `NAMES`: two processes take
            // two locks in opposite orders, which must be reported as a
            // deadlock for some seeds.
            "lock-order" => (&[], &["lock-pair x y", "lock-pair y x"]),
            other => bail!("unknown scenario `{other}`; one of: {}", Scenario::NAMES.join(", ")),
        };
        let split = |role: &&str| role.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let procs = procs
            .iter()
            .map(|role| {
                let mut args = split(role);
                args[0] = variant.substitute(&args[0]).to_owned();
                args
            })
            .collect();
        Ok(Scenario { name: name.to_owned(), variant, setup: setup.iter().map(split).collect(), procs })
    }
}
