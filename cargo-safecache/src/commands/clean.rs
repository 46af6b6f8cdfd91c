//! `clean`: removes every entry under the exclusive lease; returns once the
//! entries are renamed aside, durably (see `rm.rs` for what deletes them).

use anyhow::{Context, Result};

use super::report_failures;
use crate::ctx::Ctx;
use crate::report::{self, Cleaned};

pub(crate) fn clean(ctx: &Ctx, wait: bool) -> Result<u8> {
    let cache = ctx.open()?;
    let mut report = ctx.blocking(|| cache.clean(ctx.wait)).context("cannot clean the cache")?;
    let (reclaimed, mut failures) = super::rm::reclaim(ctx, &cache, wait)?;
    report.failures.append(&mut failures);
    ctx.ui.report(Cleaned {
        entries: report.entries,
        bytes: report.bytes + reclaimed,
        background: !wait,
        failures: report::failures(&report.failures),
    })?;
    report_failures(ctx, "clean", &report.failures)
}
