//! `ls`: the entries, with size and last use, in the order the cache
//! directory lists them: each is printed as it is found and none is held,
//! so `ls` of a cache of any size takes the same memory (docs/CLI.md).

use anyhow::Result;
use safecache::Key;
use safecache::display::escape;

use crate::ctx::Ctx;
use crate::exit::{self};
use crate::report::{self, Listed};

pub(crate) fn ls(ctx: &Ctx, prefix: Option<&str>) -> Result<u8> {
    let cache = ctx.open()?;
    let wanted = |key: Option<&Key>| prefix.is_none_or(|p| key.is_some_and(|k| k.as_str().starts_with(p)));
    // For people, the name column is as wide as the widest name: one read
    // of the root's names, before the entries are looked at. JSON has no
    // columns.
    let mut width = 0;
    if !ctx.ui.json {
        cache.each_entry_name(|stored, key| {
            if wanted(key) {
                width = width.max(Listed::width_of(key.map(Key::as_str), stored));
            }
        })?;
    }
    let mut listed = 0usize;
    cache.each_entry(|e| -> Result<()> {
        if !wanted(e.key.as_ref()) {
            return Ok(());
        }
        listed += 1;
        let path = report::json_path(&cache.path().join(&e.stored_name));
        ctx.ui.report(Listed {
            key: e.key.as_ref().map(|k| Key::as_str(k).to_owned()),
            stored_name: e.stored_name,
            path,
            bytes: e.bytes,
            last_use: e.last_use,
            width,
        })
    })?;
    match prefix {
        _ if listed > 0 => {}
        Some(prefix) => ctx.ui.status(
            "Listed",
            format!("0 entries: no key in the cache at `{}` starts with `{}`", cache.path().display(), escape(prefix)),
        ),
        None => ctx.ui.status("Listed", format!("0 entries: the cache at `{}` is empty", cache.path().display())),
    }
    Ok(exit::OK)
}
