//! This defines `verify [KEY...] [--repair]`: checks entries against their
//! manifests through the core's `Cache::verify` and reports each corrupt or
//! unverified one, then a summary. Exit code 65 if any entry was corrupt,
//! else 101 if any could not be checked (unverified or unreadable).

use anyhow::{Context, Result};
use safecache::display::count;
use safecache::{Action, Key, VerifyState};
use serde_json::json;

use crate::ctx::Ctx;
use crate::exit::{self, Coded};

pub(crate) fn verify(ctx: &Ctx, keys: &[Key], repair: bool) -> Result<u8> {
    let cache = ctx.open()?;
    let asked = (!keys.is_empty()).then_some(keys);
    let report = ctx.blocking(|| cache.verify(asked, repair, ctx.wait)).context("cannot verify the cache")?;
    let ui = &ctx.ui;
    for entry in &report.entries {
        let key = &entry.key;
        let (state, detail) = match &entry.state {
            VerifyState::Good => ("good", json!({})),
            VerifyState::Unverified { reason } => {
                ui.status("Unverified", format!("`{key}`: {reason}"));
                ("unverified", json!({ "why": reason }))
            }
            VerifyState::Absent => {
                ui.status("Absent", format!("`{key}` is not in the cache"));
                ("absent", json!({}))
            }
            VerifyState::Failed { reason } => {
                ui.warn(format!("could not verify `{key}`: {reason}"));
                ("failed", json!({ "why": reason }))
            }
            VerifyState::Corrupt { differences, action } => {
                let (done, action_json) = match action {
                    Action::Quarantined { rel } => {
                        (format!("quarantined into `{rel}`"), json!({ "action": "quarantined", "quarantine": rel }))
                    }
                    Action::Removed => {
                        ("removed; the next fill fetches it again".to_owned(), json!({ "action": "removed" }))
                    }
                    Action::Kept { reason } => {
                        (format!("left in place: {reason}"), json!({ "action": "kept", "why": reason }))
                    }
                    _ => ("handled".to_owned(), json!({ "action": "other" })),
                };
                ui.warn(format!("`{key}` is corrupt, {done}:"));
                for d in differences {
                    ui.warn(format!("  {d}"));
                }
                let mut detail = action_json;
                detail["differences"] = json!(differences);
                ("corrupt", detail)
            }
            _ => ("other", json!({})),
        };
        let mut line = json!({ "reason": "verified", "key": key, "state": state });
        if let (Some(line), Some(detail)) = (line.as_object_mut(), detail.as_object()) {
            line.extend(detail.clone());
        }
        ui.json(line);
    }
    let (checked, good, corrupt, unverified, failed) =
        (report.checked(), report.good(), report.corrupt(), report.unverified(), report.failed());
    ui.status(
        "Verified",
        format!(
            "{}: {good} good, {corrupt} corrupt, {unverified} unverified{}",
            count(checked, "entry", "entries"),
            if failed > 0 { format!(", {failed} not checked") } else { String::new() }
        ),
    );
    ui.json(json!({
        "reason": "verify-summary",
        "checked": checked,
        "good": good,
        "corrupt": corrupt,
        "unverified": unverified,
        "failed": failed,
    }));
    if corrupt > 0 {
        let what = if repair { "removed" } else { "quarantined" };
        return Err(Coded {
            code: exit::CORRUPT,
            message: format!(
                "{} corrupt ({what} where possible; listed above)",
                count(corrupt, "entry is", "entries are")
            ),
        }
        .into());
    }
    if failed + unverified > 0 {
        return Err(Coded {
            code: exit::FAILURE,
            message: format!(
                "{} could not be checked (listed above); nothing was moved for that",
                count(failed + unverified, "entry", "entries")
            ),
        }
        .into());
    }
    Ok(exit::OK)
}
