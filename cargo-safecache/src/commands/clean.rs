//! `clean`: removes every entry under the exclusive lease.

use anyhow::{Context, Result};
use safecache::display::count;
use serde_json::json;

use super::{failures_json, report_failures};
use crate::ctx::Ctx;
use crate::ui::fmt_bytes;

pub(crate) fn clean(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.open()?;
    let report = ctx.blocking(|| cache.clean(ctx.wait)).context("cannot clean the cache")?;
    ctx.ui.status("Cleaned", format!("{}, {}", count(report.entries, "entry", "entries"), fmt_bytes(report.bytes)));
    ctx.ui.json(json!({
        "reason": "cleaned",
        "entries": report.entries,
        "bytes": report.bytes,
        "failures": failures_json(&report.failures),
    }));
    report_failures(ctx, "clean", &report.failures)
}
