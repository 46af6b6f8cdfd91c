//! The report of `stats`: the cache's usage counters.

use std::time::{SystemTime, UNIX_EPOCH};

use safecache::display::size;
use serde::Serialize;

use super::{Human, Line, ago, ser_unix_secs};

/// `stats [--reset]`: the counters, as `ccache -s` shows its own.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    pub(crate) path: String,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) fills: u64,
    pub(crate) failed_fills: u64,
    pub(crate) waits: u64,
    pub(crate) bytes_filled: u64,
    /// When counting started (null if never).
    #[serde(serialize_with = "ser_unix_secs")]
    pub(crate) since: Option<SystemTime>,
    /// These are the counts `--reset` just zeroed.
    pub(crate) reset: bool,
}

impl Stats {
    pub(crate) fn new(path: String, s: &safecache::Stats, reset: bool) -> Stats {
        Stats {
            path,
            hits: s.hits,
            misses: s.misses,
            fills: s.fills,
            failed_fills: s.failed_fills,
            waits: s.waits,
            bytes_filled: s.bytes_filled,
            since: s.since,
            reset,
        }
    }
}

impl Human for Stats {
    fn human(&self) -> Vec<Line> {
        let lookups = self.hits + self.misses;
        let ratio =
            |n: u64| if lookups == 0 { String::new() } else { format!(" ({:.1}%)", n as f64 * 100.0 / lookups as f64) };
        let since = match self.since {
            Some(t) => format!("{} ({})", utc(t), ago(Some(t))),
            None => "-".to_owned(),
        };
        let mut lines: Vec<Line> = [
            format!("cache:         {}", self.path),
            format!("since:         {since}"),
            format!("hits:          {}{}", self.hits, ratio(self.hits)),
            format!("misses:        {}{}", self.misses, ratio(self.misses)),
            format!("fills:         {}", self.fills),
            format!("failed fills:  {}", self.failed_fills),
            format!("waits:         {}", self.waits),
            format!("bytes filled:  {}", size(self.bytes_filled)),
        ]
        .into_iter()
        .map(Line::Out)
        .collect();
        if self.reset {
            lines.push(Line::Status("Reset", format!("the stats of `{}`: counting starts again now", self.path)));
        }
        lines
    }
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
