//! This defines the subcommands other than `run`: `path`, `ls`, `status`,
//! `rm`, `clean`, `gc`, `init` and `config`. Each is a thin front end over one core
//! operation; the core does the locking.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use safecache::display::{count, duration, escape, size};
use safecache::{
    AutoGc, Cache, Durability, EvictReason, Failure, GcOptions, ItemKind, Key, Limits, SkipReason, Victim,
};
use serde_json::json;

use crate::cli::{AutoGcEvery, GcArgs, MaxAge};
use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::ui::{fmt_bytes, naming_dir};

pub(crate) fn path(ctx: &Ctx, key: &Key) -> Result<u8> {
    let cache = ctx.open()?;
    match cache.get(key)? {
        Some(entry) => {
            ctx.ui.out_path(entry.path(), false).context("cannot write the entry's path to stdout")?;
            ctx.ui.json(json!({ "reason": "entry", "key": key.as_str(), "path": json_path(entry.path()) }));
            Ok(exit::OK)
        }
        None => Err(Coded {
            code: exit::ABSENT,
            message: format!(
                "`{key}` is not in the cache at `{}`; fill it with `cargo safecache run --key {key} -- CMD`",
                cache.path().display()
            ),
        }
        .into()),
    }
}

/// A path for a JSON message. `json!` panics on a path that is not UTF-8
/// (a cache dir may be any bytes), so such a path is shown lossily.
fn json_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn unix_secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs())
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!("{} ago", safecache::display::duration(Duration::from_secs(d.as_secs()))),
        None => "-".to_owned(),
    }
}

pub(crate) fn ls(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.open()?;
    let entries = cache.entries()?;
    // Names of adopted files come from disk and may hold control
    // characters: escaped, they cannot drive the terminal or forge lines.
    let names: Vec<String> =
        entries.iter().map(|e| e.key.as_ref().map_or_else(|| escape(&e.stored_name), |k| escape(k.as_str()))).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    for (e, name) in entries.iter().zip(&names) {
        ctx.ui.out(format!("{name:<width$}  {:>10}  {}", fmt_bytes(e.bytes), ago(e.last_use)));
        ctx.ui.json(json!({
            "reason": "entry",
            "key": e.key.as_ref().map(Key::as_str),
            "stored_name": e.stored_name,
            "path": json_path(&cache.path().join(&e.stored_name)),
            "bytes": e.bytes,
            "last_use": unix_secs(e.last_use),
        }));
    }
    if entries.is_empty() {
        ctx.ui.status("Listed", format!("0 entries: the cache at `{}` is empty", cache.path().display()));
    }
    Ok(exit::OK)
}

pub(crate) fn status(ctx: &Ctx) -> Result<u8> {
    let cache = ctx.open()?;
    let status = cache.status()?;
    let described = cache.describe()?;
    let ui = &ctx.ui;
    ui.out(format!("cache: {} (format {})", cache.path().display(), described.format));
    let filesystem = match described.filesystem {
        Some(fs) => format!(
            "{}, {}",
            if fs.case_insensitive { "case-insensitive" } else { "case-sensitive" },
            if fs.normalizes_unicode { "normalizes Unicode names" } else { "keeps Unicode names as written" }
        ),
        None => "not probed".to_owned(),
    };
    ui.out(format!("filesystem: {filesystem}"));
    ui.out(format!("entries: {} ({})", status.entries, fmt_bytes(status.entry_bytes)));
    if status.holders.is_empty() {
        ui.out("holders: none");
    } else {
        ui.out("holders:");
    }
    for h in &status.holders {
        ui.out(format!("  {}: {h}", h.lock));
        ui.json(json!({
            "reason": "holder",
            "lock": h.lock,
            "lock_file": h.lock_file,
            "mode": h.mode,
            "pid": h.pid,
            "command": h.command,
            "argv": h.argv,
            "host": h.host,
            "since": h.since,
        }));
    }
    let (mut orphans, mut trash, mut item_bytes) = (0, 0, 0);
    for item in &status.items {
        let kind = match item.kind {
            ItemKind::Temp => "temp",
            ItemKind::Trash => "trash",
            ItemKind::Uncommitted => "uncommitted",
            _ => "other",
        };
        if !item.live {
            orphans += 1;
        }
        if item.kind == ItemKind::Trash {
            trash += 1;
        }
        item_bytes += item.bytes;
        let state = if item.live { "in use" } else { "orphan; `cargo safecache gc` reclaims it" };
        ui.out(format!("  {kind} {} ({}, {state})", item.rel, fmt_bytes(item.bytes)));
        ui.json(json!({ "reason": "item", "kind": kind, "rel": item.rel, "bytes": item.bytes, "live": item.live }));
    }
    let total = status.entry_bytes + item_bytes;
    ui.out(format!(
        "orphans: {orphans}, trash: {trash}, temps and trash: {}, total: {}",
        fmt_bytes(item_bytes),
        fmt_bytes(total)
    ));
    ui.json(json!({
        "reason": "summary",
        "path": json_path(cache.path()),
        "format": described.format,
        "case_insensitive": described.filesystem.map(|fs| fs.case_insensitive),
        "normalizes_unicode": described.filesystem.map(|fs| fs.normalizes_unicode),
        "entries": status.entries,
        "entry_bytes": status.entry_bytes,
        "holders": status.holders.len(),
        "orphans": orphans,
        "trash": trash,
        "total_bytes": total,
    }));
    Ok(exit::OK)
}

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

/// The limits `gc` applies: only those given (`--max-size`, `--max-age`
/// or their variables); `never` is no limit.
pub(crate) fn limits(max_size: Option<u64>, max_age: Option<MaxAge>) -> Limits {
    Limits { max_size, max_age: max_age.and_then(|a| a.0) }
}

/// The automatic gc: on unless `--auto-gc off`, once a day unless told
/// otherwise, with the limits given and, unless one was given, the default
/// age limit (entries unused for 30 days).
pub(crate) fn auto_gc_options(
    every: Option<AutoGcEvery>,
    max_size: Option<u64>,
    max_age: Option<MaxAge>,
) -> Option<AutoGc> {
    let every = match every {
        Some(AutoGcEvery(None)) => return None,
        Some(AutoGcEvery(Some(every))) => every,
        None => safecache::DEFAULT_AUTO_GC_EVERY,
    };
    let max_age = match max_age {
        Some(MaxAge(age)) => age,
        None => Some(safecache::DEFAULT_MAX_AGE),
    };
    Some(AutoGc { every, limits: Limits { max_size, max_age } })
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
                        "{} ({}) by the automatic gc; see `cargo safecache gc --help` to change its limits or --auto-gc off",
                        count(e.evicted.len(), "unused entry", "unused entries"),
                        size(e.freed),
                    ),
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "the automatic gc failed"),
    }
}

fn failures_json(failures: &[Failure]) -> serde_json::Value {
    failures.iter().map(|f| json!({ "path": f.rel, "reason": f.reason })).collect()
}

/// Names every item `what` could not reclaim, one line each, and fails the
/// command if there was any: a failure is never hidden behind exit 0.
fn report_failures(ctx: &Ctx, what: &str, failures: &[Failure]) -> Result<u8> {
    for f in failures {
        ctx.ui.warn(format!("{what} could not reclaim `{}`: {}", f.rel, escape(&f.reason)));
    }
    if failures.is_empty() {
        return Ok(exit::OK);
    }
    Err(Coded {
        code: exit::FAILURE,
        message: format!(
            "{what} could not reclaim {} (listed above); fix their permissions or remove them by hand, then run {what} again",
            count(failures.len(), "item", "items")
        ),
    }
    .into())
}

pub(crate) fn init(ctx: &Ctx, dir: Option<PathBuf>) -> Result<u8> {
    let dir = match dir {
        Some(dir) => std::path::absolute(&dir).with_context(|| format!("cannot resolve `{}`", dir.display()))?,
        None => ctx.cache_dir.clone(),
    };
    // Whether it was a cache before is only for the message: a race with
    // another `init` changes the wording, never what happens.
    let was_cache = std::fs::symlink_metadata(dir.join(safecache::MARKER_DIR)).is_ok();
    let cache = naming_dir(Cache::init_ambient(&dir, ctx.options(None)), "cannot adopt", &dir, "as a cache")?;
    if let Some(level) = ctx.durability {
        ctx.blocking(|| cache.update_config(ctx.wait, |c| c.durability = Some(level)))?;
    }
    let n = cache.entries()?.len();
    let entries = count(n, "entry", "entries");
    let shown = cache.path().display();
    if was_cache {
        ctx.ui.status("Unchanged", format!("`{shown}` is already a cache ({entries})"));
    } else {
        ctx.ui.status("Initialized", format!("a cache at `{shown}` ({entries})"));
    }
    ctx.ui.json(json!({
        "reason": "initialized",
        "path": json_path(cache.path()),
        "entries": n,
        "already": was_cache,
    }));
    Ok(exit::OK)
}

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
