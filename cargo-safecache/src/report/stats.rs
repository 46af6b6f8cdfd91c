//! The report of `stats`: the cache's usage counters. The remote tier's
//! are always in JSON; people see them (one block of four lines) when a
//! remote is configured or any of them is not zero.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use safecache::display::{duration, size};
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
    /// Fills the remote tier served.
    pub(crate) remote_hits: u64,
    /// Remote lookups that found nothing.
    pub(crate) remote_misses: u64,
    /// Downloads and uploads that failed (each a warning).
    pub(crate) remote_errors: u64,
    /// Bytes of archives downloaded.
    pub(crate) bytes_downloaded: u64,
    /// Entries uploaded (this upload's manifest won).
    pub(crate) uploads: u64,
    /// Bytes of archives uploaded.
    pub(crate) bytes_uploaded: u64,
    /// Milliseconds spent on downloads and uploads.
    pub(crate) remote_millis: u64,
    /// When counting started (null if never).
    #[serde(serialize_with = "ser_unix_secs")]
    pub(crate) since: Option<SystemTime>,
    /// These are the counts `--reset` just zeroed.
    pub(crate) reset: bool,
    /// Whether this command has a remote configured: people then see the
    /// remote counters even at zero.
    #[serde(skip)]
    pub(crate) remote_configured: bool,
}

impl Stats {
    /// The report of `s`; `remote_configured`: show the remote counters
    /// to people even if they are all zero.
    pub(crate) fn new(path: String, s: &safecache::Stats, reset: bool, remote_configured: bool) -> Stats {
        Stats {
            path,
            hits: s.hits,
            misses: s.misses,
            fills: s.fills,
            failed_fills: s.failed_fills,
            waits: s.waits,
            bytes_filled: s.bytes_filled,
            remote_hits: s.remote_hits,
            remote_misses: s.remote_misses,
            remote_errors: s.remote_errors,
            bytes_downloaded: s.bytes_downloaded,
            uploads: s.uploads,
            bytes_uploaded: s.bytes_uploaded,
            remote_millis: s.remote_millis,
            since: s.since,
            reset,
            remote_configured,
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
        let remote = [
            self.remote_hits,
            self.remote_misses,
            self.remote_errors,
            self.bytes_downloaded,
            self.uploads,
            self.bytes_uploaded,
            self.remote_millis,
        ];
        if self.remote_configured || remote.iter().any(|n| *n != 0) {
            let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
            lines.extend(
                [
                    format!(
                        "remote:        {}, {}, {}",
                        plural(self.remote_hits, "hit", "hits"),
                        plural(self.remote_misses, "miss", "misses"),
                        plural(self.remote_errors, "error", "errors")
                    ),
                    format!("downloaded:    {}", size(self.bytes_downloaded)),
                    format!(
                        "uploaded:      {}, {}",
                        plural(self.uploads, "entry", "entries"),
                        size(self.bytes_uploaded)
                    ),
                    format!("remote time:   {}", duration(Duration::from_millis(self.remote_millis))),
                ]
                .into_iter()
                .map(Line::Out),
            );
        }
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

    fn shown(s: &Stats) -> Vec<String> {
        s.human().into_iter().filter_map(|l| if let Line::Out(s) = l { Some(s) } else { None }).collect()
    }

    #[test]
    fn remote_counters_show_when_configured_or_counted() {
        let mut counts = safecache::Stats::default();
        let quiet = Stats::new("/c".to_owned(), &counts, false, false);
        assert_eq!(shown(&quiet).len(), 8, "no remote block without a remote or a count");
        assert!(
            shown(&Stats::new("/c".to_owned(), &counts, false, true))
                .contains(&"remote:        0 hits, 0 misses, 0 errors".to_owned())
        );
        counts.remote_hits = 1;
        counts.remote_misses = 2;
        counts.bytes_downloaded = 2048;
        counts.uploads = 1;
        counts.bytes_uploaded = 1024;
        counts.remote_millis = 1500;
        let r = Stats::new("/c".to_owned(), &counts, false, false);
        assert_eq!(
            shown(&r)[8..],
            [
                "remote:        1 hit, 2 misses, 0 errors",
                "downloaded:    2.0 KiB",
                "uploaded:      1 entry, 1.0 KiB",
                "remote time:   1.5s",
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!((json["remote_hits"].as_u64(), json["remote_millis"].as_u64()), (Some(1), Some(1500)));
        assert!(json.get("remote_configured").is_none());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(1_795_000_000)), "2026-11-18 11:06:40 UTC");
    }
}
