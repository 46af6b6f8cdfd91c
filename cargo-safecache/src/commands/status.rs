//! `status`: the totals, then who holds what and the temps and trash;
//! takes no lock.

use anyhow::Result;
use safecache::ItemKind;

use crate::ctx::Ctx;
use crate::exit::{self};
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
