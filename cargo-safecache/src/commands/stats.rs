//! `stats [--reset]`: the cache's usage counters, as `ccache -s` shows its
//! own; with --reset, shows them and starts counting again from zero.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::json;

use super::{ago, json_path, unix_secs};
use crate::ctx::Ctx;
use crate::exit;
use crate::ui::fmt_bytes;

pub(crate) fn stats(ctx: &Ctx, reset: bool) -> Result<u8> {
    let cache = ctx.open()?;
    let s = if reset { cache.reset_stats() } else { cache.stats() }.context("cannot read the cache's stats")?;
    let ui = &ctx.ui;
    let lookups = s.hits + s.misses;
    let ratio =
        |n: u64| if lookups == 0 { String::new() } else { format!(" ({:.1}%)", n as f64 * 100.0 / lookups as f64) };
    let since = match s.since {
        Some(t) => format!("{} ({})", utc(t), ago(Some(t))),
        None => "-".to_owned(),
    };
    ui.out(format!("cache:         {}", cache.path().display()));
    ui.out(format!("since:         {since}"));
    ui.out(format!("hits:          {}{}", s.hits, ratio(s.hits)));
    ui.out(format!("misses:        {}{}", s.misses, ratio(s.misses)));
    ui.out(format!("fills:         {}", s.fills));
    ui.out(format!("failed fills:  {}", s.failed_fills));
    ui.out(format!("waits:         {}", s.waits));
    ui.out(format!("bytes filled:  {}", fmt_bytes(s.bytes_filled)));
    if reset {
        ui.status("Reset", format!("the stats of `{}`: counting starts again now", cache.path().display()));
    }
    ui.json(json!({
        "reason": "stats",
        "path": json_path(cache.path()),
        "hits": s.hits,
        "misses": s.misses,
        "fills": s.fills,
        "failed_fills": s.failed_fills,
        "waits": s.waits,
        "bytes_filled": s.bytes_filled,
        "since": unix_secs(s.since),
        "reset": reset,
    }));
    Ok(exit::OK)
}

/// `t` as a UTC date and time, `2026-11-24 09:05:00 UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_795_000_000)), "2026-11-18 11:06:40 UTC");
    }
}
