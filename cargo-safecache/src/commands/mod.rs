//! This defines the subcommands: one file each. Each is a thin front end
//! over one core operation; the core does the locking. What they share
//! (JSON paths, times, failure reports) is here.

mod clean;
mod config;
mod gc;
mod init;
mod ls;
mod path;
mod rm;
pub(crate) mod run;
mod status;
pub(crate) mod verify;

pub(crate) use clean::clean;
pub(crate) use config::config;
pub(crate) use gc::{auto_gc, gc};
pub(crate) use init::init;
pub(crate) use ls::ls;
pub(crate) use path::path;
pub(crate) use rm::rm;
pub(crate) use status::status;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use safecache::Failure;
use safecache::display::{count, escape};
use serde_json::json;

use crate::ctx::Ctx;
use crate::exit::{self, Coded};

/// A path for a JSON message. `json!` panics on a path that is not UTF-8
/// (a cache dir may be any bytes), so such a path is shown lossily.
pub(crate) fn json_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

pub(crate) fn unix_secs(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs())
}

pub(crate) fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!("{} ago", safecache::display::duration(Duration::from_secs(d.as_secs()))),
        None => "-".to_owned(),
    }
}

pub(crate) fn failures_json(failures: &[Failure]) -> serde_json::Value {
    failures.iter().map(|f| json!({ "path": f.rel, "reason": f.reason })).collect()
}

/// Names every item `what` could not reclaim, one line each, and fails the
/// command if there was any: a failure is never hidden behind exit 0.
pub(crate) fn report_failures(ctx: &Ctx, what: &str, failures: &[Failure]) -> Result<u8> {
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
