//! This defines `verify [KEY...] [--repair]`: checks entries against their
//! manifests through the core's `Cache::verify` and reports each corrupt or
//! unverified one, then a summary. Exit code 65 if any entry was corrupt,
//! else 101 if any could not be checked (unverified or unreadable).

use anyhow::{Context, Result};
use safecache::Key;
use safecache::display::count;

use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::report::{Verified, VerifySummary};

pub(crate) fn verify(ctx: &Ctx, keys: &[Key], repair: bool) -> Result<u8> {
    let cache = ctx.open()?;
    let asked = (!keys.is_empty()).then_some(keys);
    let report = ctx.blocking(|| cache.verify(asked, repair, ctx.wait)).context("cannot verify the cache")?;
    for entry in &report.entries {
        ctx.ui.report(Verified::new(&entry.key, &entry.state))?;
    }
    let (checked, good, corrupt, unverified, failed) =
        (report.checked(), report.good(), report.corrupt(), report.unverified(), report.failed());
    ctx.ui.report(VerifySummary { checked, good, corrupt, unverified, failed })?;
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
