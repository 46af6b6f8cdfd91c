//! `rm KEY…`, `rm --prefix PREFIX`: removes entries, waiting for their
//! pins and fills. It returns once the entries are renamed aside, durably;
//! their files are deleted by a detached reclaimer, or before it returns
//! with `--wait` ([`reclaim`]).

use anyhow::{Context, Result};
use safecache::Key;
use safecache::display::escape;

use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::report::{Removed, RemovedPrefix};

pub(crate) fn rm(ctx: &Ctx, keys: &[Key], prefix: Option<&str>, wait: bool) -> Result<u8> {
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
    let mut removed_any = false;
    for key in keys {
        removed_any |= remove(ctx, &cache, key)?;
    }
    let Some(prefix) = prefix else {
        return if removed_any { finish(ctx, &cache, wait) } else { Ok(exit::OK) };
    };
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
    if removed_any || removed > 0 { finish(ctx, &cache, wait) } else { Ok(exit::OK) }
}

/// Deletes the removed entries' files (see [`reclaim`]); with `wait`, what
/// could not be deleted (a mount point inside, say) fails `rm` with one
/// error naming each.
fn finish(ctx: &Ctx, cache: &safecache::Cache, wait: bool) -> Result<u8> {
    let (_, failures) = reclaim(ctx, cache, wait)?;
    if failures.is_empty() {
        return Ok(exit::OK);
    }
    let each: Vec<String> = failures.iter().map(|f| format!("`{}`: {}", f.rel, escape(&f.reason))).collect();
    Err(Coded {
        code: exit::FAILURE,
        message: format!("the removed entries are gone from the cache, but not all their files: {}", each.join("; ")),
    }
    .into())
}

/// Deletes the trash `rm` or `clean` left: here with `wait`, returning
/// the bytes freed and what could not be deleted, or else in a detached
/// reclaimer (nothing to return). A reclaimer that cannot be started
/// leaves the trash to the next gc.
pub(crate) fn reclaim(ctx: &Ctx, cache: &safecache::Cache, wait: bool) -> Result<(u64, Vec<safecache::Failure>)> {
    if wait {
        let report = cache.reclaim(true).context("cannot delete the removed entries")?;
        return Ok((report.bytes, report.failures));
    }
    if let Err(e) = crate::process::spawn_reclaimer(cache.path(), ctx.allow_untrusted) {
        ctx.ui.warn(format!(
            "cannot start deleting the removed entries in the background ({e}); run {} to free their space",
            crate::hint::command("gc")
        ));
    }
    Ok((0, Vec::new()))
}

/// Removes `key`, saying so; whether it was there.
fn remove(ctx: &Ctx, cache: &safecache::Cache, key: &Key) -> Result<bool> {
    let existed = ctx.blocking(|| cache.remove(key, ctx.wait)).with_context(|| format!("cannot remove `{key}`"))?;
    ctx.ui.report(Removed { key: key.as_str().to_owned(), existed })?;
    Ok(existed)
}
