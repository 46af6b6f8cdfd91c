//! `ls`: the entries, with size and last use.

use anyhow::Result;
use safecache::Key;
use safecache::display::escape;
use serde_json::json;

use super::{ago, json_path, unix_secs};
use crate::ctx::Ctx;
use crate::exit::{self};
use crate::ui::fmt_bytes;

pub(crate) fn ls(ctx: &Ctx, prefix: Option<&str>) -> Result<u8> {
    let cache = ctx.open()?;
    let mut entries = cache.entries()?;
    if let Some(prefix) = prefix {
        entries.retain(|e| e.key.as_ref().is_some_and(|k| k.as_str().starts_with(prefix)));
    }
    // Names of adopted files come from disk and may hold control
    // characters: escaped, they cannot drive the terminal or forge lines.
    let names: Vec<String> =
        entries.iter().map(|e| e.key.as_ref().map_or_else(|| escape(&e.stored_name), |k| escape(k.as_str()))).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (e, name) in entries.iter().zip(&names) {
        ctx.ui.out(format!("{name:<width$}  {:>10}  {}", fmt_bytes(e.bytes), ago(e.last_use)));
        ctx.ui.json(json!({
            "reason": "entry",
            "key": e.key.as_ref().map(Key::as_str),
            "stored_name": e.stored_name,
            "path": json_path(&cache.path().join(&e.stored_name)),
            "bytes": e.bytes,
            "last_use": unix_secs(e.last_use),
        }));
    }
    match prefix {
        _ if !entries.is_empty() => {}
        Some(prefix) => ctx.ui.status(
            "Listed",
            format!("0 entries: no key in the cache at `{}` starts with `{}`", cache.path().display(), escape(prefix)),
        ),
        None => ctx.ui.status("Listed", format!("0 entries: the cache at `{}` is empty", cache.path().display())),
    }
    Ok(exit::OK)
}
