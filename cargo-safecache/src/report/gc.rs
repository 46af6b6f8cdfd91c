//! The reports of `gc`: each entry evicted or skipped, then the totals; and
//! the automatic gc's one line.

use std::fmt;
use std::time::SystemTime;

use safecache::display::{count, duration, escape, size};
use safecache::{EvictReason, GcReport, Key, Limits, Victim};
use serde::Serialize;

use super::{FailureReport, Human, Line, ago, ser_unix_secs};

/// `gc`: what it reclaimed and evicted (or would, with `--dry-run`).
#[derive(Debug, Serialize)]
pub(crate) struct Gc {
    dry_run: bool,
    temps: usize,
    trash: usize,
    bytes: u64,
    busy: usize,
    records: usize,
    /// Dead in-place entries removed.
    uncommitted: usize,
    evicted: usize,
    freed: u64,
    skipped: usize,
    entries_before: usize,
    entry_bytes_before: u64,
    entry_bytes_after: u64,
    /// Quarantined entries old enough to delete.
    quarantined: usize,
    failures: Vec<FailureReport>,
    #[serde(skip)]
    limits: Limits,
}

impl Gc {
    /// The report of `r`, run with `limits`; `failures` adds the entries it
    /// could not evict to `r`'s own failures.
    pub(crate) fn new(r: &GcReport, limits: Limits, dry_run: bool, failures: &[safecache::Failure]) -> Gc {
        let e = &r.evict;
        Gc {
            dry_run,
            temps: r.temps,
            trash: r.trash,
            bytes: r.bytes,
            busy: r.busy,
            records: r.records,
            uncommitted: r.uncommitted,
            evicted: e.evicted.len(),
            freed: e.freed,
            skipped: e.skipped.len(),
            entries_before: e.entries,
            entry_bytes_before: e.entry_bytes,
            entry_bytes_after: e.entry_bytes_after(),
            quarantined: r.quarantined,
            failures: super::failures(failures),
            limits,
        }
    }
}

impl Human for Gc {
    fn human(&self) -> Vec<Line> {
        let dry = self.dry_run;
        let mut lines = vec![Line::Status(
            if dry { "Would collect" } else { "Collected" },
            format!(
                "{}, {} and {} ({}); {} left alone because their owner is alive",
                count(self.temps, "orphaned temp", "orphaned temps"),
                count(self.uncommitted, "uncommitted in-place entry", "uncommitted in-place entries"),
                count(self.trash, "trash item", "trash items"),
                size(self.bytes),
                count(self.busy, "item", "items"),
            ),
        )];
        if self.limits != Limits::default() {
            let (then, now) = if dry { ("would then hold", "Would free") } else { ("now hold", "Freed") };
            let mut summary = format!(
                "{} by evicting {}; the entries {then} {}",
                size(self.freed),
                count(self.evicted, "entry", "entries"),
                size(self.entry_bytes_after),
            );
            if let Some(max) = self.limits.max_size.filter(|max| self.entry_bytes_after > *max) {
                summary.push_str(&format!(
                    ", still over --max-size {} because {} could not be evicted",
                    size(max),
                    count(self.skipped, "entry", "entries")
                ));
            }
            lines.push(Line::Status(now, summary));
        }
        if dry {
            lines.push(Line::Status(
                "Dry run",
                "nothing was changed; entries in use when gc runs for real are skipped".to_owned(),
            ));
        }
        lines
    }
}

/// An entry gc chose to evict, in JSON the fields of `evicted` and
/// `skipped`.
#[derive(Debug, Serialize)]
pub(crate) struct VictimReport {
    /// Null for an adopted file whose name is not a key.
    key: Option<String>,
    stored_name: String,
    bytes: u64,
    #[serde(serialize_with = "ser_unix_secs")]
    last_use: Option<SystemTime>,
    /// `age` or `size`.
    chosen_for: &'static str,
    /// Why it was left alone (null if it was evicted).
    why: Option<String>,
    dry_run: bool,
    #[serde(skip)]
    reason: EvictReason,
    #[serde(skip)]
    limits: Limits,
}

impl VictimReport {
    pub(crate) fn new(v: &Victim, why: Option<String>, limits: Limits, dry_run: bool) -> VictimReport {
        VictimReport {
            key: v.key.as_ref().map(|k| Key::as_str(k).to_owned()),
            stored_name: v.stored_name.clone(),
            bytes: v.bytes,
            last_use: Some(v.last_use),
            chosen_for: match v.reason {
                EvictReason::Age => "age",
                _ => "size",
            },
            why,
            dry_run,
            reason: v.reason,
            limits,
        }
    }
}

/// The victim for people: its key (escaped), size, last use and why it
/// was chosen.
impl fmt::Display for VictimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = escape(self.key.as_deref().unwrap_or(&self.stored_name));
        let why = match (self.reason, self.limits.max_age, self.limits.max_size) {
            (EvictReason::Age, Some(age), _) => format!("unused for longer than {}", duration(age)),
            (EvictReason::Size, _, Some(max)) => format!("least recently used while over {}", size(max)),
            _ => "over the limits".to_owned(),
        };
        write!(f, "`{name}` ({}, last used {}; {why})", size(self.bytes), ago(self.last_use))
    }
}

/// `gc` with a limit: an entry it evicted (or would).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub(crate) struct Evicted(pub(crate) VictimReport);

impl Human for Evicted {
    fn human(&self) -> Vec<Line> {
        vec![Line::Status(if self.0.dry_run { "Would evict" } else { "Evicted" }, self.0.to_string())]
    }
}

/// `gc` with a limit: an entry it left alone, and why.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub(crate) struct Skipped(pub(crate) VictimReport);

impl Human for Skipped {
    fn human(&self) -> Vec<Line> {
        vec![Line::Status("Skipped", format!("{}: {}", self.0, self.0.why.as_deref().unwrap_or("skipped")))]
    }
}

/// The automatic gc's one status line when it evicted entries. It has no
/// JSON message: the automatic gc never changes a command's stdout.
#[derive(Debug)]
pub(crate) struct AutoGc {
    pub(crate) evicted: usize,
    pub(crate) freed: u64,
}

impl fmt::Display for AutoGc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) by the automatic gc; {}",
            count(self.evicted, "unused entry", "unused entries"),
            size(self.freed),
            crate::hint::auto_gc_limits(),
        )
    }
}
