//! The reports of `verify`: each entry checked, then the totals.

use safecache::display::count;
use safecache::{Action, VerifyState};
use serde::Serialize;

use super::{Human, Line};

/// `verify`: one entry and what was found; for a corrupt one, what was
/// done about it.
#[derive(Debug, Serialize)]
pub(crate) struct Verified {
    key: String,
    /// `good`, `corrupt`, `unverified`, `absent` or `failed`.
    state: &'static str,
    /// `quarantined`, `removed` or `kept` (corrupt only).
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    /// The quarantine item, relative to the cache root.
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantine: Option<String>,
    /// Why it was kept, is unverified or could not be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    why: Option<String>,
    /// The first differences from the manifest (corrupt only).
    #[serde(skip_serializing_if = "Option::is_none")]
    differences: Option<Vec<String>>,
}

impl Verified {
    pub(crate) fn new(key: impl ToString, state: &VerifyState) -> Verified {
        let mut v = Verified {
            key: key.to_string(),
            state: "other",
            action: None,
            quarantine: None,
            why: None,
            differences: None,
        };
        match state {
            VerifyState::Good => v.state = "good",
            VerifyState::Unverified { reason } => (v.state, v.why) = ("unverified", Some(reason.clone())),
            VerifyState::Absent => v.state = "absent",
            VerifyState::Failed { reason } => (v.state, v.why) = ("failed", Some(reason.clone())),
            VerifyState::Corrupt { differences, action } => {
                v.state = "corrupt";
                v.differences = Some(differences.clone());
                v.action = Some(match action {
                    Action::Quarantined { rel } => {
                        v.quarantine = Some(rel.clone());
                        "quarantined"
                    }
                    Action::Removed => "removed",
                    Action::Kept { reason } => {
                        v.why = Some(reason.clone());
                        "kept"
                    }
                    _ => "other",
                });
            }
            _ => {}
        }
        v
    }
}

impl Human for Verified {
    fn human(&self) -> Vec<Line> {
        let (key, why) = (&self.key, self.why.as_deref().unwrap_or_default());
        match self.state {
            "unverified" => vec![Line::Status("Unverified", format!("`{key}`: {why}"))],
            "absent" => vec![Line::Status("Absent", format!("`{key}` is not in the cache"))],
            "failed" => vec![Line::Warn(format!("could not verify `{key}`: {why}"))],
            "corrupt" => {
                let done = match (self.action, &self.quarantine) {
                    (Some("quarantined"), Some(rel)) => format!("quarantined into `{rel}`"),
                    (Some("removed"), _) => "removed; the next fill fetches it again".to_owned(),
                    (Some("kept"), _) => format!("left in place: {why}"),
                    _ => "handled".to_owned(),
                };
                let differences = self.differences.iter().flatten().map(|d| Line::Warn(format!("  {d}")));
                std::iter::once(Line::Warn(format!("`{key}` is corrupt, {done}:"))).chain(differences).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// `verify`'s totals.
#[derive(Debug, Serialize)]
pub(crate) struct VerifySummary {
    pub(crate) checked: usize,
    pub(crate) good: usize,
    pub(crate) corrupt: usize,
    pub(crate) unverified: usize,
    /// Entries that could not be checked.
    pub(crate) failed: usize,
}

impl Human for VerifySummary {
    fn human(&self) -> Vec<Line> {
        vec![Line::Status(
            "Verified",
            format!(
                "{}: {} good, {} corrupt, {} unverified{}",
                count(self.checked, "entry", "entries"),
                self.good,
                self.corrupt,
                self.unverified,
                if self.failed > 0 { format!(", {} not checked", self.failed) } else { String::new() }
            ),
        )]
    }
}
