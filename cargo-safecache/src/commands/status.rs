//! `status`: the totals (and the remote tier configured, which it does not
//! contact), then who holds what and the temps and trash; takes no lock.

use anyhow::Result;
use safecache::ItemKind;

use crate::ctx::Ctx;
use crate::exit::{self};
use crate::remote::Setup;
use crate::report::{self, HolderReport, ItemReport, Summary};

pub(crate) fn status(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.open()?;
    let status = cache.status()?;
    let described = cache.describe()?;
    let (mut orphans, mut trash, mut item_bytes) = (0, 0, 0);
    for item in &status.items {
        orphans += usize::from(!item.live);
        trash += usize::from(item.kind == ItemKind::Trash);
        item_bytes += item.bytes;
    }
    // Settings that do not parse are a warning here, not a failure: status
    // is what one runs to see what is wrong.
    let remote = match cache.config().map_err(anyhow::Error::from).and_then(|c| Setup::resolve(&ctx.remote, &c)) {
        Ok(setup) => setup,
        Err(e) => {
            ctx.ui.warn(format!("the remote tier is not usable: {e:#}"));
            None
        }
    };
    ctx.ui.report(Summary {
        path: report::json_path(cache.path()),
        format: described.format,
        case_insensitive: described.filesystem.map(|fs| fs.case_insensitive),
        normalizes_unicode: described.filesystem.map(|fs| fs.normalizes_unicode),
        entries: status.entries,
        entry_bytes: status.entry_bytes,
        holders: status.holders.len(),
        orphans,
        trash,
        total_bytes: status.entry_bytes + item_bytes,
        remote: remote.and_then(|s| Summary::remote(s.shown(), s.namespace.to_string(), s.mode.name())),
        item_bytes,
    })?;
    for h in &status.holders {
        ctx.ui.report(HolderReport::from(h))?;
    }
    for item in &status.items {
        ctx.ui.report(ItemReport::from(item))?;
    }
    Ok(exit::OK)
}
