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
    /// A pin that takes the shared lease but not the shared entry lock.
    PinUnlocked,
    /// `remove` under its locks, but deleting the entry where it stands
    /// instead of renaming it aside first.
    InplaceDeleteLocked,
    /// `clean` that deletes the lock files even under an inherited
    /// exclusive lease, while the parent's other children hold them.
    InheritedCleanLocks,
    /// An in-place fill that writes at the final path without marking the
    /// directory uncommitted.
    InPlaceUnmarked,
    /// The core's fill, synced, but without the sync of the root after the
    /// publishing rename: an entry a fill returned can vanish in a power cut.
    NoParentSync,
    /// The upgrade from an older format done by renaming each entry in
    /// place, without the journal and its two phases: a kill between two
    /// renames (or the order of the listing) loses an entry or gives one
    /// key's content to another.
    UpgradeNoJournal,
    /// Entries stored under their keys as they are (format 2's names, with
    /// `/` as `%2F`), on a case-insensitive host: `lib` finds the entry of
    /// `Lib`.
    CaseLegacyNames,
    /// A change in place (`modify`) under the shared entry lock, as a pin
    /// takes it, instead of the exclusive one.
    ModifyShared,
}

impl Variant {
    /// Every variant, the real protocol first.
    pub const ALL: [Variant; 14] = [
        Variant::Correct,
        Variant::SharedTemp,
        Variant::InplaceDelete,
        Variant::UnlockedFill,
        Variant::DeleteCopy,
        Variant::NoDedupe,
        Variant::PinUnlocked,
        Variant::InplaceDeleteLocked,
        Variant::InheritedCleanLocks,
        Variant::InPlaceUnmarked,
        Variant::NoParentSync,
        Variant::UpgradeNoJournal,
        Variant::CaseLegacyNames,
        Variant::ModifyShared,
    ];

    /// The buggy variants.
    pub const BUGGY: [Variant; 13] = [
        Variant::SharedTemp,
        Variant::InplaceDelete,
        Variant::UnlockedFill,
        Variant::DeleteCopy,
        Variant::NoDedupe,
        Variant::PinUnlocked,
        Variant::InplaceDeleteLocked,
        Variant::InheritedCleanLocks,
        Variant::InPlaceUnmarked,
        Variant::NoParentSync,
        Variant::UpgradeNoJournal,
        Variant::CaseLegacyNames,
        Variant::ModifyShared,
    ];

    /// The variant's name on the command line and in `SAFECACHE_VARIANT`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Correct => "correct",
            Variant::SharedTemp => "shared-temp",
            Variant::InplaceDelete => "inplace-delete",
            Variant::UnlockedFill => "unlocked-fill",
            Variant::DeleteCopy => "delete-copy",
            Variant::NoDedupe => "no-dedupe",
            Variant::PinUnlocked => "pin-unlocked",
            Variant::InplaceDeleteLocked => "inplace-delete-locked",
            Variant::InheritedCleanLocks => "inherited-clean-locks",
            Variant::InPlaceUnmarked => "in-place-unmarked",
            Variant::NoParentSync => "no-parent-sync",
            Variant::UpgradeNoJournal => "upgrade-no-journal",
            Variant::CaseLegacyNames => "case-legacy-names",
            Variant::ModifyShared => "modify-shared",
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
            Variant::PinUnlocked => "reread",
            Variant::InplaceDeleteLocked => "reread",
            Variant::InheritedCleanLocks => "inherited",
            Variant::InPlaceUnmarked => "in-place",
            Variant::NoParentSync => "power",
            Variant::UpgradeNoJournal => "upgrade",
            Variant::CaseLegacyNames => "case-fold",
            Variant::ModifyShared => "modify",
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
            (Variant::PinUnlocked, "pinread") => "pinread-unlocked",
            (Variant::InplaceDeleteLocked, "remove") => "remove-inplace-locked",
            (Variant::InheritedCleanLocks, "clean") => "clean-empties-locks",
            (Variant::InPlaceUnmarked, "fill") => "fill-inplace-unmarked",
            (Variant::NoParentSync, "fill") => "fill-no-parent-sync",
            (Variant::CaseLegacyNames, "fill") => "fill-legacy-name",
            (Variant::CaseLegacyNames, "read") => "read-legacy-name",
            (Variant::CaseLegacyNames, "pinread") => "pinread-legacy-name",
            (Variant::CaseLegacyNames, "remove") => "remove-legacy-name",
            (Variant::ModifyShared, "modify") => "modify-shared",
            (_, role) => role,
        }
    }
}

impl Scenario {
    /// The format of the cache this scenario starts from with `seed`.
    pub fn old_format(&self, seed: u64) -> Option<u32> {
        self.old_format.map(|f| match f {
            OldFormat::Version(v) => v,
            OldFormat::BySeed => 2 - u32::from(seed % 2 == 1),
        })
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

/// The roles of `power`: two fills of a new key and a pinned reader of it,
/// a remove and a refill of the key filled before the race, a reader and a
/// gc.
const POWER: &[&str] = &["fill b", "fill b", "pinread b", "remove a", "fill a", "read a", "gc"];
/// `power` with in-place fills: a power cut must never turn an entry built
/// in place, half-written, into one that looks committed.
const POWER_IN_PLACE: &[&str] =
    &["fill b inplace hold=1", "fill b inplace", "pinread b", "remove a", "fill a inplace", "read a", "gc"];
/// `power` at durability `none`.
const POWER_NONE: &[&str] = &[
    "fill b durability=none",
    "fill b durability=none",
    "pinread b durability=none",
    "remove a durability=none",
    "fill a durability=none",
    "read a durability=none",
    "gc durability=none",
];

/// The roles of `upgrade`: readers, pinned readers and a fill of keys the
/// old cache holds (`x/y` was `x%2Fy` and is now `x+y`, which was the name
/// of `x+y`), a remove and a refill of one, and a gc.
const UPGRADE: &[&str] = &[
    "read x/y repeat=2",
    "pinread x+y hold=1",
    "fill Up",
    "remove git/serde",
    "pinread plain",
    "read git/serde",
    "fill git/serde",
    "gc",
];
/// `upgrade` with a power cut instead of kills.
const POWER_UPGRADE: &[&str] =
    &["read x/y", "pinread x+y", "fill Up", "remove git/serde", "pinread plain", "fill git/serde", "gc"];
/// The roles of `case-fold`.
const CASE_FOLD: &[&str] = &[
    "fill Lib hold=1",
    "fill lib",
    "pinread Lib hold=1 repeat=2",
    "fill LIB",
    "remove lib",
    "read LIB repeat=2",
    "fill \u{e9}",
    "fill e\u{301}",
    "pinread \u{e9} hold=1",
    "remove e\u{301}",
    "read lib",
    "gc",
];

/// The roles of `modify`.
const MODIFY: &[&str] = &[
    "modify a hold=1",
    "modify a",
    "pinread a hold=1 repeat=2",
    "read a repeat=3",
    "remove a delay=2",
    "fill a delay=3",
    "modify a delay=3",
    "pinread a delay=4",
    "gc",
];
/// Small enough to kill the first changer at every step (restarted or not).
const MODIFY_KILL: &[&str] = &["modify a", "pinread a", "modify a delay=2"];
/// Changes cut by a power loss: every change that returned survives sealed,
/// and one cut half-way is never unmarked.
const POWER_MODIFY: &[&str] = &["modify a hold=1", "pinread a", "modify a", "read a", "gc"];

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
    /// The role of a parent process (`lease-parent`) that takes the
    /// exclusive lease first, so that the concurrent roles (given `inherit`)
    /// run as its children, only while it holds the lease. It is never
    /// killed: `cargo safecache run --exclusive` hands its lease's
    /// descriptor to the command, so the lease outlives it.
    pub parent: Option<Vec<String>>,
    /// Whether the race ends in a power cut (docs/SIMULATION.md, "Power
    /// loss"), drawn from the seed by [`crate::power_for_seed`], instead of
    /// the kills `kill_for_seed` draws.
    pub power: bool,
    /// The format of the cache the host writes by hand before the setup
    /// roles run (`None`: the directory starts empty). See
    /// [`Scenario::old_format`] for the one a seed gets.
    pub old_format: Option<OldFormat>,
    /// Whether the host's filesystem folds case and Unicode normalization
    /// for the guests (docs/SIMULATION.md, "Case-insensitive host").
    pub case_fold: bool,
}

/// Which older format a scenario's cache starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldFormat {
    /// Always this version (1 or 2).
    Version(u32),
    /// Version 1 for odd seeds, 2 for even ones.
    BySeed,
}

impl Scenario {
    /// Every scenario name.
    pub const NAMES: [&'static str; 25] = [
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
        "reread",
        "mixed",
        "inherited",
        "probers",
        "faults",
        "in-place",
        "power",
        "power-in-place",
        "upgrade",
        "upgrade-v1",
        "power-upgrade",
        "case-fold",
        "modify",
        "modify-kill",
        "power-modify",
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
            // Readers that read again and again (pinned ones with a pause
            // under one pin) beside removers and a refill: a pin that does
            // not keep removers out, or a remover that deletes an entry
            // where it stands, is seen within a few seeds.
            "reread" => (
                &["fill a"],
                &[
                    "pinread a hold=1 repeat=3",
                    "remove a",
                    "read a repeat=8",
                    "fill a",
                    "remove a",
                    "read a repeat=8",
                    "read a repeat=8",
                ],
            ),
            // Every kind of role over three keys. Only two roles wait with a
            // timeout (see `timeouts`).
            // One fault per faulty role, at a seeded operation and call: an
            // ENOSPC, EIO, EACCES, EBUSY, EINTR or ENOLCK where the OS could
            // give it. Each faulty role fails with it or never meets it; the
            // others, and the final gc, must find the cache consistent.
            "faults" => (
                &[],
                &[
                    "fill a fault",
                    "fill a",
                    "fill b fault",
                    "pinread a fault",
                    "read b",
                    "remove a fault",
                    "gc fault",
                    "clean nowait fault",
                    "fill b",
                ],
            ),
            // In-place fills (a venv, a cargo target dir) beside a fill in
            // a temp, readers that read again and again, a remover and gc:
            // an entry being built, or left half-built by a killed filler,
            // must never be read, and the final gc must remove a dead one.
            "in-place" => (
                &[],
                &[
                    "fill a inplace hold=1",
                    "read a repeat=6",
                    "fill a inplace",
                    "pinread a repeat=2",
                    "remove a",
                    "fill a",
                    "read a repeat=4",
                    "gc",
                ],
            ),
            "mixed" => (
                &[],
                &[
                    "fill a hold=1",
                    "fill b",
                    "fill c timeout=3",
                    "pinread a hold=1 repeat=2",
                    "read b repeat=3",
                    "pinread c nowait",
                    "remove a timeout=2",
                    "remove b",
                    "read a repeat=2",
                    "gc",
                    "clean nowait",
                    "fill a",
                ],
            ),
            // The children of `cargo safecache run --exclusive`: every role
            // runs under the lease a parent process holds for them.
            "inherited" => (
                &[],
                &[
                    "fill a inherit",
                    "pinread a hold=1 repeat=3 inherit",
                    "fill b hold=6 inherit",
                    "clean inherit",
                    "fill b delay=4 inherit",
                    "remove a inherit",
                    "read a repeat=3 inherit",
                    "gc inherit",
                ],
            ),
            // Roles that describe the lease's holders at the same moment,
            // beside the holder record a dead process left: a prober must
            // never take another prober for a live holder.
            "probers" => (
                &["lease-exit"],
                &["fill a hold=3", "clean nowait", "clean nowait", "pinread a nowait", "clean nowait"],
            ),
            // A power cut at a seeded step (or at the end): every fill that
            // returned must survive it complete, every remove that returned
            // must stay removed, and gc must reclaim what the cut left.
            "power" => (&["fill a"], POWER),
            "power-in-place" => (&["fill a inplace"], POWER_IN_PLACE),
            // A cache of format 2 (`upgrade`, `power-upgrade` at even seeds)
            // or 1 (`upgrade-v1`, odd seeds of `power-upgrade`), written by
            // the host with entries under their old names (see
            // `OLD_ENTRIES` in lib.rs): every role's open upgrades it, under
            // kills or a power cut, while the others wait for the lease and
            // then read, pin, fill and remove the old keys.
            "upgrade" | "upgrade-v1" => (&[], UPGRADE),
            "power-upgrade" => (&[], POWER_UPGRADE),
            // Keys that differ only in case or in Unicode normalization, on
            // a host that folds both: each key's entry holds its own
            // content, and a remove of one never takes another's pinned
            // entry.
            "case-fold" => (&[], CASE_FOLD),
            // Entries that jobs change in place one at a time (issue 16):
            // changers beside pinned and unpinned readers, a remove, a
            // refill and gc, under kills. A pin never sees a change under
            // way; a change killed half-way leaves its entry marked.
            "modify" => (&["fill a"], MODIFY),
            "modify-kill" => (&["fill a"], MODIFY_KILL),
            "power-modify" => (&["fill a"], POWER_MODIFY),
            // The same at durability `none`, not in `NAMES`: expected to
            // leave corrupt entries (docs/SIMULATION.md).
            "power-none" => (&["fill a"], POWER_NONE),
            // A self-test of the harness, not in `NAMES`: a lease parent that
            // lets its lease go before its children run, which invariant 9
            // must report.
            "orphan-children" => (&[], &["fill a inherit", "pinread a inherit"]),
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
                if variant == Variant::UpgradeNoJournal {
                    // Every role upgrades the cache by hand before the
                    // core opens it.
                    args.push("naive-upgrade".to_owned());
                }
                args
            })
            .collect();
        Ok(Scenario {
            name: name.to_owned(),
            variant,
            setup: setup.iter().map(split).collect(),
            procs,
            power: name.starts_with("power"),
            old_format: match name {
                "upgrade" => Some(OldFormat::Version(2)),
                "upgrade-v1" => Some(OldFormat::Version(1)),
                "power-upgrade" => Some(OldFormat::BySeed),
                _ => None,
            },
            case_fold: name == "case-fold",
            parent: match name {
                "inherited" => Some(vec!["lease-parent".to_owned()]),
                "orphan-children" => Some(vec!["lease-parent".to_owned(), "early".to_owned()]),
                _ => None,
            },
        })
    }
}
