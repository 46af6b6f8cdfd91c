//! `path KEY`: the entry's path, if it is in the cache.

use anyhow::{Context, Result};
use safecache::Key;
use serde_json::json;

use super::json_path;
use crate::ctx::Ctx;
use crate::exit::{self, Coded};

pub(crate) fn path(ctx: &Ctx, key: &Key) -> Result<u8> {
    let cache = ctx.open()?;
    match cache.get(key)? {
        Some(entry) => {
            crate::stats::hit(&cache);
            ctx.ui.out_path(entry.path(), false).context("cannot write the entry's path to stdout")?;
            ctx.ui.json(json!({ "reason": "entry", "key": key.as_str(), "path": json_path(entry.path()) }));
            Ok(exit::OK)
        }
        None => {
            crate::stats::miss(&cache);
            Err(Coded {
                code: exit::ABSENT,
                message: format!(
                    "`{key}` is not in the cache at `{}`; fill it with `cargo safecache run --key {key} -- CMD`",
                    cache.path().display()
                ),
            }
            .into())
        }
    }
}
