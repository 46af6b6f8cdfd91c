//! `stats [--reset]`: the cache's usage counters, as `ccache -s` shows its
//! own; with --reset, shows them and starts counting again from zero.

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::exit;
use crate::report::{self, Stats};

pub(crate) fn stats(ctx: &Ctx, reset: bool) -> Result<u8> {
    let cache = ctx.open()?;
    let s = if reset { cache.reset_stats() } else { cache.stats() }.context("cannot read the cache's stats")?;
    ctx.ui.report(Stats::new(report::json_path(cache.path()), &s, reset))?;
    Ok(exit::OK)
}
