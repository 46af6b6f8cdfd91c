//! `init [DIR]`: adopts a directory as a cache.

use std::path::PathBuf;

use anyhow::{Context, Result};
use safecache::Cache;

use crate::ctx::Ctx;
use crate::exit::{self};
use crate::report::{self, Initialized};
use crate::ui::naming_dir;

pub(crate) fn init(ctx: &Ctx, dir: Option<PathBuf>) -> Result<u8> {
    let dir = match dir {
        Some(dir) => std::path::absolute(&dir).with_context(|| format!("cannot resolve `{}`", dir.display()))?,
        None => ctx.cache_dir.clone(),
    };
    // Whether it was a cache before is only for the message: a race with
    // another `init` changes the wording, never what happens.
    let was_cache = std::fs::symlink_metadata(dir.join(safecache::MARKER_DIR)).is_ok();
    let cache = naming_dir(Cache::init_ambient(&dir, ctx.options(None)), "cannot adopt", &dir, "as a cache")?;
    if let Some(level) = ctx.durability {
        ctx.blocking(|| cache.update_config(ctx.wait, |c| c.durability = Some(level)))?;
    }
    // Counted as they are listed, never held.
    let mut entries = 0;
    cache.each_entry(|_| {
        entries += 1;
        Ok::<(), safecache::Error>(())
    })?;
    ctx.ui.report(Initialized { path: report::json_path(cache.path()), entries, already: was_cache })?;
    Ok(exit::OK)
}
