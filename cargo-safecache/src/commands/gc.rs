//! `gc`: reclaims orphans and evicts by the limits; also the automatic gc
//! that follows `run` and `path`.

use anyhow::{Context, Result};
use safecache::display::{count, duration, escape, size};
use safecache::{EvictReason, Failure, GcOptions, Key, Limits, SkipReason, Victim};
use serde_json::json;

use super::{ago, failures_json, report_failures, unix_secs};
use crate::cli::GcArgs;
use crate::ctx::Ctx;

pub(crate) fn gc(ctx: &Ctx, args: &GcArgs) -> Result<u8> {
    let cache = ctx.open()?;
    let options = GcOptions { limits: ctx.limits, dry_run: args.dry_run };
    let r = ctx.blocking(|| cache.gc_with(&options, ctx.wait)).context("cannot collect garbage")?;
    let verb = if args.dry_run { "Would collect" } else { "Collected" };
    ctx.ui.status(
        verb,
        format!(
            "{}, {} and {} ({}); {} left alone because their owner is alive",
            count(r.temps, "orphaned temp", "orphaned temps"),
            count(r.uncommitted, "uncommitted in-place entry", "uncommitted in-place entries"),
            count(r.trash, "trash item", "trash items"),
            size(r.bytes),
            count(r.busy, "item", "items"),
        ),
    );
    let e = &r.evict;
    let mut failures = r.failures.clone();
    for v in &e.evicted {
        ctx.ui.status(if args.dry_run { "Would evict" } else { "Evicted" }, victim_line(v, &ctx.limits));
        ctx.ui.json(victim_json("evicted", v, None, args.dry_run));
    }
    for s in &e.skipped {
        ctx.ui.status("Skipped", format!("{}: {}", victim_line(&s.victim, &ctx.limits), s.why));
        ctx.ui.json(victim_json("skipped", &s.victim, Some(&s.why), args.dry_run));
        if let SkipReason::Failed(why) = &s.why {
            failures.push(Failure { rel: escape(&s.victim.stored_name), reason: why.clone() });
        }
    }
    if ctx.limits != Limits::default() {
        let (then, now) = if args.dry_run { ("would then hold", "Would free") } else { ("now hold", "Freed") };
        let mut summary = format!(
            "{} by evicting {}; the entries {then} {}",
            size(e.freed),
            count(e.evicted.len(), "entry", "entries"),
            size(e.entry_bytes_after()),
        );
        if let Some(max) = ctx.limits.max_size.filter(|max| e.entry_bytes_after() > *max) {
            summary.push_str(&format!(
                ", still over --max-size {} because {} could not be evicted",
                size(max),
                count(e.skipped.len(), "entry", "entries")
            ));
        }
        ctx.ui.status(now, summary);
    }
    if args.dry_run {
        ctx.ui.status("Dry run", "nothing was changed; entries in use when gc runs for real are skipped");
    }
    ctx.ui.json(json!({
        "reason": "gc",
        "dry_run": args.dry_run,
        "temps": r.temps,
        "trash": r.trash,
        "bytes": r.bytes,
        "busy": r.busy,
        "records": r.records,
        "uncommitted": r.uncommitted,
        "evicted": e.evicted.len(),
        "freed": e.freed,
        "skipped": e.skipped.len(),
        "entries_before": e.entries,
        "entry_bytes_before": e.entry_bytes,
        "entry_bytes_after": e.entry_bytes_after(),
        "quarantined": r.quarantined,
        "failures": failures_json(&failures),
    }));
    report_failures(ctx, "gc", &failures)
}

/// One evicted or skipped entry, for people: its key (escaped), size, last
/// use and why it was chosen.
fn victim_line(v: &Victim, limits: &Limits) -> String {
    let name = v.key.as_ref().map_or_else(|| escape(&v.stored_name), |k| escape(k.as_str()));
    let why = match (v.reason, limits.max_age, limits.max_size) {
        (EvictReason::Age, Some(age), _) => format!("unused for longer than {}", duration(age)),
        (EvictReason::Size, _, Some(max)) => format!("least recently used while over {}", size(max)),
        _ => "over the limits".to_owned(),
    };
    format!("`{name}` ({}, last used {}; {why})", size(v.bytes), ago(Some(v.last_use)))
}

fn victim_json(reason: &str, v: &Victim, why: Option<&SkipReason>, dry_run: bool) -> serde_json::Value {
    json!({
        "reason": reason,
        "key": v.key.as_ref().map(Key::as_str),
        "stored_name": v.stored_name,
        "bytes": v.bytes,
        "last_use": unix_secs(Some(v.last_use)),
        "chosen_for": match v.reason { EvictReason::Age => "age", _ => "size" },
        "why": why.map(ToString::to_string),
        "dry_run": dry_run,
    })
}

/// The automatic gc after a command's real work, on the cache the command
/// opened. It never waits and never changes the command's outcome: what it
/// evicts is said in one status line, anything else only in diagnostics.
pub(crate) fn auto_gc(ctx: &Ctx) {
    let Some(cache) = ctx.opened.get() else { return };
    match cache.auto_gc() {
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
                ctx.ui.status(
                    "Evicted",
                    format!(
                        "{} ({}) by the automatic gc; {}",
                        count(e.evicted.len(), "unused entry", "unused entries"),
                        size(e.freed),
                        crate::hint::auto_gc_limits(),
                    ),
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "the automatic gc failed"),
    }
}
