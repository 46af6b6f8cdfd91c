//! `rm KEY…`, `rm --prefix PREFIX`: removes entries, waiting for their
//! pins and fills.

use anyhow::{Context, Result};
use safecache::Key;

use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::report::{Removed, RemovedPrefix};

pub(crate) fn rm(ctx: &Ctx, keys: &[Key], prefix: Option<&str>) -> Result<u8> {
    if prefix == Some("") {
        return Err(Coded {
            code: exit::USAGE,
            message: format!(
                "an empty --prefix would remove every entry; to do that, run {}",
                crate::hint::command("clean")
            ),
        }
        .into());
    }
    let cache = ctx.open()?;
    for key in keys {
        remove(ctx, &cache, key)?;
    }
    let Some(prefix) = prefix else { return Ok(exit::OK) };
    // The entries as listed now: one published after this is left alone.
    let matching: Vec<Key> = cache
        .entries()?
        .into_iter()
        .filter_map(|e| e.key)
        .filter(|k| k.as_str().starts_with(prefix) && !keys.contains(k))
        .collect();
    let mut removed = 0;
    for key in &matching {
        if remove(ctx, &cache, key)? {
            removed += 1;
        }
    }
    ctx.ui.report(RemovedPrefix { prefix: prefix.to_owned(), removed })?;
    Ok(exit::OK)
}

/// Removes `key`, saying so; whether it was there.
fn remove(ctx: &Ctx, cache: &safecache::Cache, key: &Key) -> Result<bool> {
    let existed = ctx.blocking(|| cache.remove(key, ctx.wait)).with_context(|| format!("cannot remove `{key}`"))?;
    ctx.ui.report(Removed { key: key.as_str().to_owned(), existed })?;
    Ok(existed)
}
