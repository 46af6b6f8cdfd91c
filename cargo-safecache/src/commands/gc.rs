//! `gc`: reclaims orphans and evicts by the limits; also the automatic gc
//! that follows `run` and `path`.

use anyhow::{Context, Result};
use safecache::display::escape;
use safecache::{Failure, GcOptions, SkipReason};

use super::report_failures;
use crate::cli::GcArgs;
use crate::ctx::Ctx;
use crate::report::{AutoGc, Evicted, Gc, Skipped, VictimReport};

pub(crate) fn gc(ctx: &Ctx, args: &GcArgs) -> Result<u8> {
    let cache = ctx.open()?;
    let limits = ctx.given.limits(&cache.config()?);
    let options = GcOptions { limits, dry_run: args.dry_run };
    let r = ctx.blocking(|| cache.gc_with(&options, ctx.wait)).context("cannot collect garbage")?;
    let mut failures = r.failures.clone();
    for v in &r.evict.evicted {
        ctx.ui.report(Evicted(VictimReport::new(v, None, limits, args.dry_run)))?;
    }
    for s in &r.evict.skipped {
        ctx.ui.report(Skipped(VictimReport::new(&s.victim, Some(s.why.to_string()), limits, args.dry_run)))?;
        if let SkipReason::Failed(why) = &s.why {
            failures.push(Failure { rel: escape(&s.victim.stored_name), reason: why.clone() });
        }
    }
    ctx.ui.report(Gc::new(&r, limits, args.dry_run, &failures))?;
    report_failures(ctx, "gc", &failures)
}

/// The automatic gc after a command's real work, on the cache the command
/// opened. It never waits and never changes the command's outcome: what it
/// evicts is said in one status line, anything else only in diagnostics.
pub(crate) fn auto_gc(ctx: &Ctx) {
    let Some(cache) = ctx.opened.get() else { return };
    // A config that cannot be read now (it was not read at open under
    // --durability) is said by every command that needs it; here the
    // defaults apply.
    let config = cache.config().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the automatic gc ignores the cache's config");
        safecache::Config::default()
    });
    match cache.auto_gc_with(ctx.given.auto_gc(&config)) {
        Ok(None) => {}
        Ok(Some(r)) => {
            let e = &r.evict;
            tracing::info!(
                temps = r.temps,
                trash = r.trash,
                evicted = e.evicted.len(),
                freed = e.freed,
                skipped = e.skipped.len(),
                failures = r.failures.len(),
                "automatic gc"
            );
            if !e.evicted.is_empty() {
                ctx.ui.status("Evicted", AutoGc { evicted: e.evicted.len(), freed: e.freed });
            }
        }
        Err(e) => tracing::warn!(error = %e, "the automatic gc failed"),
    }
}
