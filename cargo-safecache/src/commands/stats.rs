//! `stats [--reset]`: the cache's usage counters, as `ccache -s` shows its
//! own; with --reset, shows them and starts counting again from zero.

use anyhow::{Context, Result};

use crate::ctx::Ctx;
use crate::exit;
use crate::remote::Setup;
use crate::report::{self, Stats};

pub(crate) fn stats(ctx: &Ctx, reset: bool) -> Result<u8> {
    let cache = ctx.open()?;
    let s = if reset { cache.reset_stats() } else { cache.stats() }.context("cannot read the cache's stats")?;
    // A remote whose settings do not parse is configured too: only none,
    // or `off`, hides the remote counters when they are all zero.
    let remote = cache.config().map_or(true, |config| !matches!(Setup::resolve(&ctx.remote, &config), Ok(None)));
    ctx.ui.report(Stats::new(report::json_path(cache.path()), &s, reset, remote))?;
    Ok(exit::OK)
}
