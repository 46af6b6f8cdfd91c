//! `status`: who holds what, orphans, trash and sizes; takes no lock.

use anyhow::Result;
use safecache::ItemKind;
use serde_json::json;

use super::json_path;
use crate::ctx::Ctx;
use crate::exit::{self};
use crate::ui::fmt_bytes;

pub(crate) fn status(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.open()?;
    let status = cache.status()?;
    let described = cache.describe()?;
    let ui = &ctx.ui;
    ui.out(format!("cache: {} (format {})", cache.path().display(), described.format));
    let filesystem = match described.filesystem {
        Some(fs) => format!(
            "{}, {}",
            if fs.case_insensitive { "case-insensitive" } else { "case-sensitive" },
            if fs.normalizes_unicode { "normalizes Unicode names" } else { "keeps Unicode names as written" }
        ),
        None => "not probed".to_owned(),
    };
    ui.out(format!("filesystem: {filesystem}"));
    ui.out(format!("entries: {} ({})", status.entries, fmt_bytes(status.entry_bytes)));
    if status.holders.is_empty() {
        ui.out("holders: none");
    } else {
        ui.out("holders:");
    }
    for h in &status.holders {
        ui.out(format!("  {}: {h}", h.lock));
        ui.json(json!({
            "reason": "holder",
            "lock": h.lock,
            "lock_file": h.lock_file,
            "mode": h.mode,
            "pid": h.pid,
            "command": h.command,
            "argv": h.argv,
            "host": h.host,
            "since": h.since,
        }));
    }
    let (mut orphans, mut trash, mut item_bytes) = (0, 0, 0);
    for item in &status.items {
        let kind = match item.kind {
            ItemKind::Temp => "temp",
            ItemKind::Trash => "trash",
            ItemKind::Uncommitted => "uncommitted",
            _ => "other",
        };
        if !item.live {
            orphans += 1;
        }
        if item.kind == ItemKind::Trash {
            trash += 1;
        }
        item_bytes += item.bytes;
        let state = if item.live { "in use".to_owned() } else { crate::hint::orphan() };
        ui.out(format!("  {kind} {} ({}, {state})", item.rel, fmt_bytes(item.bytes)));
        ui.json(json!({ "reason": "item", "kind": kind, "rel": item.rel, "bytes": item.bytes, "live": item.live }));
    }
    let total = status.entry_bytes + item_bytes;
    ui.out(format!(
        "orphans: {orphans}, trash: {trash}, temps and trash: {}, total: {}",
        fmt_bytes(item_bytes),
        fmt_bytes(total)
    ));
    ui.json(json!({
        "reason": "summary",
        "path": json_path(cache.path()),
        "format": described.format,
        "case_insensitive": described.filesystem.map(|fs| fs.case_insensitive),
        "normalizes_unicode": described.filesystem.map(|fs| fs.normalizes_unicode),
        "entries": status.entries,
        "entry_bytes": status.entry_bytes,
        "holders": status.holders.len(),
        "orphans": orphans,
        "trash": trash,
        "total_bytes": total,
    }));
    Ok(exit::OK)
}
