//! `ls`: the entries, with size and last use.

use anyhow::Result;
use safecache::Key;
use safecache::display::escape;

use crate::ctx::Ctx;
use crate::exit::{self};
use crate::report::{self, Listed};

pub(crate) fn ls(ctx: &Ctx, prefix: Option<&str>) -> Result<u8> {
    let cache = ctx.open()?;
    let mut entries = cache.entries()?;
    if let Some(prefix) = prefix {
        entries.retain(|e| e.key.as_ref().is_some_and(|k| k.as_str().starts_with(prefix)));
    }
    let listed: Vec<Listed> = entries
        .iter()
        .map(|e| Listed {
            key: e.key.as_ref().map(|k| Key::as_str(k).to_owned()),
            stored_name: e.stored_name.clone(),
            path: report::json_path(&cache.path().join(&e.stored_name)),
            bytes: e.bytes,
            last_use: e.last_use,
            width: 0, // known once all are listed
        })
        .collect();
    let width = listed.iter().map(|l| l.name().chars().count()).max().unwrap_or(0);
    for l in listed {
        ctx.ui.report(Listed { width, ..l })?;
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
