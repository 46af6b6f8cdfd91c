//! `clean`: removes every entry under the exclusive lease.

use anyhow::{Context, Result};

use super::report_failures;
use crate::ctx::Ctx;
use crate::report::{self, Cleaned};

pub(crate) fn clean(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.open()?;
    let report = ctx.blocking(|| cache.clean(ctx.wait)).context("cannot clean the cache")?;
    ctx.ui.report(Cleaned {
        entries: report.entries,
        bytes: report.bytes,
        failures: report::failures(&report.failures),
    })?;
    report_failures(ctx, "clean", &report.failures)
}
