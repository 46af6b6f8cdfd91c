//! This defines [`Leased::verify`]: checking entries against their
//! manifests (manifest.rs), in parallel, and setting corrupt ones aside
//! (quarantine) or removing them (repair); and the check behind
//! [`Options::verify_on_read`](crate::Options::verify_on_read).
//!
//! Each entry is checked under its shared entry lock (a pin), so no fill or
//! remove of it runs meanwhile. A corrupt entry is confirmed again under
//! the exclusive entry lock (released shared, then taken exclusive: flock
//! cannot upgrade in place) before anything moves it, since the key may
//! have been removed or refilled in between.
//!
//! Invariants: a corrupt entry leaves its name by one rename, into
//! `quarantine/<d>.<r>/entry` (kept, with its manifest and what differed)
//! or into `trash/<d>.<r>` (repair, then deleted there by handle), so a
//! reader sees it whole or absent, never half deleted; only a difference
//! from a manifest tied to the entry (manifest.rs) makes it corrupt. An
//! entry without a manifest, or with one that cannot be tied to it, is
//! "unverified"; one with a name that cannot be read (permission denied,
//! vanished, an I/O error) is "failed" (not checked). Neither is ever
//! moved, and verify-on-read never returns either.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use crate::aside;
use crate::cache::{Cache, Leased};
use crate::display::escape;
use crate::error::Error;
use crate::key::Key;
use crate::layout::{self, QUARANTINE_DIR, QUARANTINED_ENTRY, QUARANTINED_MANIFEST, QUARANTINED_REPORT};
use crate::lock::Deadline;
use crate::manifest::{self, Stored};
use crate::mode::{LockMode, LockName, Wait};

/// The most threads one `verify` uses.
const MAX_THREADS: usize = 16;

/// What `verify` found for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The entry's key, or its stored name for an adopted file whose name
    /// is not a key (escaped for display).
    pub key: String,
    /// What it found.
    pub state: VerifyState,
}

/// The outcome of checking one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyState {
    /// The entry matches its manifest.
    Good,
    /// The entry has no manifest it can be checked against; nothing was
    /// done about it.
    Unverified {
        /// Why (no manifest: published by an older version or adopted; an
        /// unknown manifest format; a manifest that cannot be tied to the
        /// entry, and how the entry differs from it).
        reason: String,
    },
    /// The entry differs from its manifest, or its manifest fails its own
    /// hash.
    Corrupt {
        /// The first differences, escaped for display.
        differences: Vec<String>,
        /// What was done about it.
        action: Action,
    },
    /// The key was not in the cache (only for keys asked for by name).
    Absent,
    /// The entry could not be checked (a name in it that cannot be read, an
    /// io error, a busy lock); nothing was done about it.
    Failed {
        /// Why.
        reason: String,
    },
}

/// What `verify` did with a corrupt entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Renamed aside into this quarantine item (relative to the cache root),
    /// kept for inspection; the key reads as absent.
    Quarantined {
        /// `.safecache/quarantine/<d>.<r>`.
        rel: String,
    },
    /// Removed (`--repair`); the next fill fetches it again.
    Removed,
    /// Left in place, and why (it holds a cache of its own; its exclusive
    /// lock could not be had in time).
    Kept {
        /// Why.
        reason: String,
    },
}

/// What [`Leased::verify`] found, entry by entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// One line per entry checked (or asked for), in name order.
    pub entries: Vec<Verified>,
}

impl VerifyReport {
    fn count(&self, f: impl Fn(&VerifyState) -> bool) -> usize {
        self.entries.iter().filter(|e| f(&e.state)).count()
    }

    /// Entries looked at (absent keys are not counted).
    pub fn checked(&self) -> usize {
        self.count(|s| !matches!(s, VerifyState::Absent))
    }

    /// Entries that match their manifests.
    pub fn good(&self) -> usize {
        self.count(|s| matches!(s, VerifyState::Good))
    }

    /// Corrupt entries.
    pub fn corrupt(&self) -> usize {
        self.count(|s| matches!(s, VerifyState::Corrupt { .. }))
    }

    /// Entries without a manifest to check against.
    pub fn unverified(&self) -> usize {
        self.count(|s| matches!(s, VerifyState::Unverified { .. }))
    }

    /// Entries that could not be checked.
    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, VerifyState::Failed { .. }))
    }
}

/// How many differences a report keeps per entry.
const MAX_DIFFERENCES: usize = 8;

/// One entry to check.
struct Target {
    /// Its name at the root.
    stored: OsString,
    /// Its key, or its stored name (for lock names and messages).
    name: String,
    digest: String,
    /// Asked for by name: absence is reported.
    named: bool,
}

/// The result of one check, before anything is done about it.
enum Check {
    Good,
    /// No manifest can be tied to it: nothing can be said either way.
    Unverified(String),
    /// Something in it could not be read: nothing can be said either way.
    Unchecked(Vec<String>),
    Corrupt(Vec<String>),
    Absent,
}

impl Check {
    /// Why an entry that is neither good nor corrupt could not be checked.
    fn reason(&self) -> Option<String> {
        match self {
            Check::Unverified(reason) => Some(reason.clone()),
            Check::Unchecked(what) => Some(unchecked_reason(what)),
            Check::Good | Check::Corrupt(_) | Check::Absent => None,
        }
    }
}

/// One line for what could not be read.
fn unchecked_reason(what: &[String]) -> String {
    format!("could not be checked: {}", cut(what.to_vec()).join("; "))
}

impl Cache {
    /// Runs [`Leased::verify`] under a shared lease of its own.
    pub fn verify(&self, keys: Option<&[Key]>, repair: bool, wait: Wait) -> Result<VerifyReport, Error> {
        let deadline = Deadline::start(wait);
        self.lease_by(LockMode::Shared, deadline)?.verify_by(keys, repair, deadline)
    }
}

impl Leased {
    /// Checks entries (all of them, or `keys`) against their manifests, in
    /// parallel, each under its shared entry lock. A corrupt entry is
    /// renamed aside into `.safecache/quarantine/` (kept for inspection; gc
    /// deletes it after [`QUARANTINE_KEEP`]), or with `repair` removed, so
    /// the next fill fetches it again; both take its exclusive entry lock
    /// first and check it once more. Entries without a manifest tied to
    /// them are reported as unverified, and entries with something that
    /// cannot be read as failed; neither is moved, even with `repair`.
    ///
    /// # Errors
    /// Only for the cache as a whole (listing it); what goes wrong with one
    /// entry is reported in its [`VerifyState::Failed`].
    pub fn verify(&self, keys: Option<&[Key]>, repair: bool, wait: Wait) -> Result<VerifyReport, Error> {
        self.verify_by(keys, repair, Deadline::start(wait))
    }

    fn verify_by(&self, keys: Option<&[Key]>, repair: bool, deadline: Deadline) -> Result<VerifyReport, Error> {
        let _span = tracing::info_span!("verify").entered();
        let cache = &self.cache;
        let targets = match keys {
            Some(keys) => keys
                .iter()
                .map(|k| Target {
                    stored: k.stored_name().into(),
                    name: k.to_string(),
                    digest: k.digest(),
                    named: true,
                })
                .collect(),
            None => {
                // Entries being built in place are not published: nothing to
                // check yet.
                crate::listing::list(cache.root())?
                    .into_iter()
                    .filter(|i| i.class == crate::listing::Class::Committed)
                    .map(|i| {
                        let name = i.key.map_or_else(|| i.lossy.clone(), |k| k.to_string());
                        Target { digest: i.digest, stored: i.name, name, named: false }
                    })
                    .collect::<Vec<_>>()
            }
        };
        let states = run_all(&targets, |t| cache.verify_one(t, repair, deadline));
        let entries = targets
            .iter()
            .zip(states)
            .filter(|(t, s)| t.named || *s != VerifyState::Absent)
            .map(|(t, state)| Verified { key: escape(&t.name), state })
            .collect();
        Ok(VerifyReport { entries })
    }
}

/// Runs `f` on every target, on up to `available_parallelism` threads
/// (natively; one after another under WASI, which has no threads).
fn run_all(targets: &[Target], f: impl Fn(&Target) -> VerifyState + Sync) -> Vec<VerifyState> {
    crate::parallel::run(targets, crate::parallel::cores().clamp(1, MAX_THREADS), f)
}

impl Cache {
    /// Checks one entry under its pin, then settles a corrupt one under its
    /// exclusive lock.
    fn verify_one(&self, target: &Target, repair: bool, deadline: Deadline) -> VerifyState {
        let lock_rel = layout::entry_lock(&target.digest);
        let lock_name = LockName::Entry(target.name.clone());
        let failed = |e: Error| VerifyState::Failed { reason: error_chain(&e) };
        let first = {
            let _pin = match self.lock(&lock_rel, lock_name.clone(), LockMode::Shared, deadline) {
                Ok(pin) => pin,
                Err(e) => return failed(e),
            };
            match self.check(&target.stored, &target.digest, &target.name) {
                Ok(check) => check,
                Err(e) => return failed(e),
            }
        };
        let Check::Corrupt(differences) = first else { return settled_state(first) };
        // Confirm under the exclusive lock: the shared one is gone, so the
        // key may have been removed or refilled meanwhile.
        let _lock = match self.lock(&lock_rel, lock_name, LockMode::Exclusive, deadline) {
            Ok(lock) => lock,
            Err(e) => {
                let action = Action::Kept { reason: format!("could not lock it to set it aside: {}", error_chain(&e)) };
                return VerifyState::Corrupt { differences: cut(differences), action };
            }
        };
        match self.check(&target.stored, &target.digest, &target.name) {
            Ok(Check::Corrupt(differences)) => {
                let action = match self.set_aside(&target.stored, &target.digest, &differences, repair) {
                    Ok(action) => action,
                    Err(e) => Action::Kept { reason: error_chain(&e) },
                };
                VerifyState::Corrupt { differences: cut(differences), action }
            }
            Ok(other) => settled_state(other),
            Err(e) => failed(e),
        }
    }

    /// Checks the entry stored as `stored` against its manifest. The caller
    /// holds its entry lock, or (verify-on-read) confirms a bad result
    /// under it. Only what the manifest proves is corrupt: a manifest that
    /// cannot be tied to the entry, or a file that cannot be read, is no
    /// verdict.
    fn check(&self, stored: &OsStr, digest: &str, name: &str) -> Result<Check, Error> {
        let root = self.root();
        let shown = stored.to_string_lossy();
        let Some(meta) = root.stat(stored).map_err(|e| Error::io("look up", shown.as_ref(), e))? else {
            return Ok(Check::Absent);
        };
        // Under the entry lock no change is under way: a marker is a change
        // that was interrupted, and the manifest may not describe the entry.
        if let Some(changing) = crate::modify::read(root, digest) {
            return Ok(Check::Unverified(format!(
                "it was changed in place and the change was never sealed (begun {changing}), so its manifest \
                 may not describe it; a change that completes seals it again"
            )));
        }
        let manifest = match manifest::read(root, digest).map_err(|e| Error::io("read the manifest of", name, e))? {
            Stored::Absent => {
                return Ok(Check::Unverified(
                    "it has no manifest (published by a version that wrote none, adopted by `init`, or restored \
                     without its `.safecache/manifests`)"
                        .to_owned(),
                ));
            }
            Stored::Unsupported(format) => {
                return Ok(Check::Unverified(format!(
                    "its manifest has format {format}, which this build cannot read"
                )));
            }
            Stored::Broken(why) => return Ok(Check::Corrupt(vec![why])),
            Stored::Sealed(manifest) => manifest,
        };
        if manifest.key != name {
            return Ok(Check::Unverified("its manifest is another key's".to_owned()));
        }
        let cancel = &self.inner.options.cancel;
        let hashing = manifest::Hashing { format: manifest.format, cancel };
        let actual = manifest::scan(root, Path::new(stored), hashing).map_err(|e| {
            if cancel.is_cancelled() {
                Error::Cancelled { doing: format!("verifying `{}`", escape(name)) }
            } else {
                Error::io("read", shown.as_ref(), e)
            }
        })?;
        let findings = manifest.findings(&actual);
        if findings.differences.is_empty() {
            return Ok(if findings.unchecked.is_empty() { Check::Good } else { Check::Unchecked(findings.unchecked) });
        }
        if let Some(why) = manifest.untied(&meta) {
            let differences = cut(findings.differences).join("; ");
            return Ok(Check::Unverified(format!(
                "its manifest cannot be tied to it ({why}); it differs from that manifest ({differences}), so it \
                 may be damaged, but it was left in place"
            )));
        }
        Ok(Check::Corrupt(findings.differences))
    }

    /// Moves a corrupt entry out of its name by one rename: into quarantine
    /// (with its manifest and what differed), or with `repair` into trash,
    /// then deletes it there. The caller holds the exclusive entry lock.
    fn set_aside(&self, stored: &OsStr, digest: &str, differences: &[String], repair: bool) -> Result<Action, Error> {
        let root = self.root();
        let shown = stored.to_string_lossy().into_owned();
        if self.is_nested_cache(Path::new(stored)) {
            return Ok(Action::Kept { reason: "it holds a safecache cache of its own".to_owned() });
        }
        let manifest_rel = layout::manifest(digest);
        // Repair removes the entry the way `remove` does, stamp and all.
        let remove = |shown: &str| -> Result<Action, Error> {
            let aside = aside::set_aside(root, shown, digest).map_err(|e| Error::io("rename aside", shown, e))?;
            // Without this fsync a power loss could bring the entry back
            // after some of its files were unlinked from the trash.
            root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
            aside::forget(root, digest);
            if let Err(e) = aside::delete(root, &aside) {
                tracing::warn!(item = %aside.rel, error = %e, "could not delete trash; gc will retry");
            }
            tracing::warn!(entry = %shown, "removed a corrupt entry");
            Ok(Action::Removed)
        };
        let Some(utf8) = stored.to_str() else {
            return Ok(Action::Kept { reason: "its name is not UTF-8; remove it by hand".to_owned() });
        };
        if repair {
            return remove(utf8);
        }
        manifest::ensure_dir(root, QUARANTINE_DIR)?;
        let item = layout::quarantine_item(digest, &layout::random_suffix()?);
        root.create_dir(&item).map_err(|e| Error::io("create", &item, e))?;
        let entry_rel = format!("{item}/{QUARANTINED_ENTRY}");
        if let Err(e) = root.rename(stored, &entry_rel) {
            let _ = root.remove_tree(&item);
            if e.kind() == std::io::ErrorKind::CrossesDevices {
                // It cannot be moved (a directory of an overlayfs lower
                // layer): it is not kept for inspection, but it is never
                // served again.
                tracing::warn!(entry = %shown, "cannot move a corrupt entry into quarantine on this filesystem");
                return remove(utf8);
            }
            return Err(Error::io("quarantine", shown, e));
        }
        // The entry is out of its name; what follows is for inspection only.
        let _ = root.rename(&manifest_rel, format!("{item}/{QUARANTINED_MANIFEST}"));
        let report = differences.join("\n") + "\n";
        let _ = root.write_new(&format!("{item}/{QUARANTINED_REPORT}"), report.as_bytes());
        root.sync_dir("").map_err(|e| Error::io("sync", ".", e))?;
        let _ = root.sync_dir(&item);
        tracing::warn!(entry = %shown, quarantine = %item, "quarantined a corrupt entry");
        Ok(Action::Quarantined { rel: item })
    }

    /// Verify-on-read: whether `key`'s present entry may be returned. A
    /// good entry may; a corrupt one is quarantined (if its exclusive lock
    /// is free at once) and reads as absent.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the entry is corrupt but someone holds its
    /// lock (a pin, this very call's caller), so it cannot be set aside now;
    /// [`Error::Unverifiable`] if it could not be checked (it is never
    /// returned unchecked, and nothing is moved).
    pub(crate) fn verify_on_read(&self, key: &Key) -> Result<bool, Error> {
        let stored = OsString::from(key.stored_name());
        let digest = key.digest();
        let name = key.to_string();
        let differences = match self.check(&stored, &digest, &name)? {
            Check::Corrupt(differences) => differences,
            Check::Good | Check::Absent => return Ok(true),
            other => return Err(unverifiable(&name, &other)),
        };
        let lock_rel = layout::entry_lock(&digest);
        let entry = LockName::Entry(name.clone());
        let _lock = match self.lock(&lock_rel, entry, LockMode::Exclusive, Deadline::start(Wait::NoWait)) {
            Ok(lock) => lock,
            Err(Error::Busy { .. }) => return Err(Error::Corrupt { key: name, differences: cut(differences) }),
            Err(e) => return Err(e),
        };
        self.settle_locked(&stored, &digest, &name)
    }

    /// [`Cache::verify_on_read`] for a caller that held the shared entry
    /// lock and has released it: waits for the exclusive lock within
    /// `deadline`, checks again and quarantines. Returns whether the entry
    /// may be used.
    pub(crate) fn verify_on_read_by(&self, key: &Key, deadline: Deadline) -> Result<bool, Error> {
        let digest = key.digest();
        let name = key.to_string();
        let _lock =
            self.lock(&layout::entry_lock(&digest), LockName::Entry(name.clone()), LockMode::Exclusive, deadline)?;
        self.settle_locked(&OsString::from(key.stored_name()), &digest, &name)
    }

    /// Under the exclusive entry lock: checks again and quarantines a
    /// corrupt entry. Returns whether the entry is present and usable.
    fn settle_locked(&self, stored: &OsStr, digest: &str, name: &str) -> Result<bool, Error> {
        match self.check(stored, digest, name)? {
            Check::Corrupt(differences) => {
                self.set_aside(stored, digest, &differences, false)?;
                Ok(false)
            }
            Check::Absent => Ok(false),
            Check::Good => Ok(true),
            other => Err(unverifiable(name, &other)),
        }
    }
}

/// The error verify-on-read gives for an entry it could not check.
fn unverifiable(name: &str, check: &Check) -> Error {
    Error::Unverifiable { key: escape(name), reason: check.reason().unwrap_or_default() }
}

fn settled_state(check: Check) -> VerifyState {
    match check {
        Check::Good => VerifyState::Good,
        Check::Unverified(reason) => VerifyState::Unverified { reason },
        Check::Unchecked(what) => VerifyState::Failed { reason: unchecked_reason(&what) },
        Check::Absent => VerifyState::Absent,
        Check::Corrupt(differences) => {
            VerifyState::Corrupt { differences: cut(differences), action: Action::Kept { reason: String::new() } }
        }
    }
}

/// The first differences, and how many more there were.
fn cut(mut differences: Vec<String>) -> Vec<String> {
    if differences.len() > MAX_DIFFERENCES {
        let more = differences.len() - MAX_DIFFERENCES + 1;
        differences.truncate(MAX_DIFFERENCES - 1);
        differences.push(format!("and {more} more"));
    }
    differences
}

fn error_chain(e: &Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

/// How long gc keeps a quarantined entry for inspection, by the quarantine
/// item's modification time (when it was quarantined).
pub const QUARANTINE_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[cfg(test)]
// The test builds and damages caches from outside, as a user would.
#[allow(clippy::disallowed_methods)]
mod tests {
    use crate::sys::faults::{Failure, Fault, Op, clear, inject};
    use crate::{Cache, ErrorKind, Key, Options, Wait};

    /// I/O errors or permission errors from some open on, while an intact
    /// entry is checked (verify-on-read, in this thread), mean "could not
    /// be checked": the entry is never called corrupt, never set aside, and
    /// only served after a check that could read it all.
    #[test]
    fn a_fault_while_checking_is_never_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options { verify_on_read: true, ..Options::default() };
        let cache = Cache::open_ambient(dir.path().join("cache"), options).unwrap();
        let key = Key::new("k").unwrap();
        cache
            .get_or_fill(&key, Wait::NoWait, |d| {
                std::fs::create_dir(d.path().join("d"))?;
                std::fs::write(d.path().join("d/f"), "x")?;
                std::fs::write(d.path().join("g"), "y")
            })
            .unwrap();
        let mut refused = 0;
        for failure in [Failure::Io, Failure::Access] {
            // Past the last open of a check, nothing fires and it is good.
            for nth in 0..24 {
                // Every open from the nth on fails, so the second check
                // under the exclusive lock fails too.
                let plan: Vec<Fault> = (nth..nth + 64).map(|nth| Fault { op: Op::Open, nth, failure }).collect();
                inject(&plan);
                let got = cache.get(&key);
                clear();
                match got {
                    Ok(Some(_)) => {}
                    Err(e) => {
                        assert!(
                            matches!(e.kind(), ErrorKind::Unverifiable | ErrorKind::Io),
                            "{failure:?} from open {nth}: {e}"
                        );
                        refused += usize::from(e.kind() == ErrorKind::Unverifiable);
                    }
                    Ok(None) => panic!("{failure:?} from open {nth}: the intact entry was set aside"),
                }
                assert!(cache.entry_path(&key).join("d/f").exists(), "{failure:?} from open {nth}: moved");
            }
        }
        assert!(refused >= 4, "only {refused} checks could not read the entry");
    }
}
