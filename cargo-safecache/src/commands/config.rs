//! `config`: shows or stores the cache's settings.

use anyhow::Result;
use safecache::Durability;
use serde_json::json;

use super::json_path;
use crate::ctx::Ctx;
use crate::exit::{self};

/// `config [durability [none|full]]`: prints the cache's settings, or
/// stores a new durability level.
pub(crate) fn config(ctx: &Ctx, value: Option<Durability>) -> Result<u8> {
    // Opened at a given level, so that the config file is not read at open:
    // a garbage one must not stop the command that replaces it.
    let cache = ctx.open_adjusted(|o| o.durability = Some(o.durability.unwrap_or_default()))?;
    let config = match value {
        Some(level) => {
            let config = ctx.blocking(|| cache.update_config(ctx.wait, |c| c.durability = Some(level)))?;
            ctx.ui.status("Configured", format!("durability {level} for `{}`", cache.path().display()));
            config
        }
        None => {
            let config = cache.config()?;
            let level = config.durability();
            let note = if config.durability.is_none() { " (default)" } else { "" };
            ctx.ui.out(format!("durability = {level}{note}"));
            config
        }
    };
    ctx.ui.json(json!({
        "reason": "config",
        "path": json_path(cache.path()),
        "durability": config.durability().name(),
        "durability_stored": config.durability.is_some(),
    }));
    Ok(exit::OK)
}
