//! `rm KEY…`: removes entries, waiting for their pins and fills.

use anyhow::{Context, Result};
use safecache::Key;
use serde_json::json;

use crate::ctx::Ctx;
use crate::exit::{self};

pub(crate) fn rm(ctx: &Ctx, keys: &[Key]) -> Result<u8> {
    let cache = ctx.open()?;
    for key in keys {
        let existed = ctx.blocking(|| cache.remove(key, ctx.wait)).with_context(|| format!("cannot remove `{key}`"))?;
        if existed {
            ctx.ui.status("Removed", format!("`{key}`"));
        } else {
            ctx.ui.status("Absent", format!("`{key}` was not in the cache"));
        }
        ctx.ui.json(json!({ "reason": "removed", "key": key.as_str(), "existed": existed }));
    }
    Ok(exit::OK)
}
