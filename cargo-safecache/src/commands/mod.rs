//! This defines the subcommands: one file each. Each is a thin front end
//! over one core operation; the core does the locking. What they report
//! is typed in `report`; how they report failures they go on past is here.

mod clean;
mod config;
mod fill;
mod gc;
mod init;
mod ls;
mod path;
pub(crate) mod remote;
mod rm;
pub(crate) mod run;
mod stats;
mod status;
pub(crate) mod r#use;
pub(crate) mod verify;

pub(crate) use clean::clean;
pub(crate) use config::config;
pub(crate) use gc::{auto_gc, gc};
pub(crate) use init::init;
pub(crate) use ls::ls;
pub(crate) use path::path;
pub(crate) use rm::rm;
pub(crate) use stats::stats;
pub(crate) use status::status;

use anyhow::Result;
use safecache::Failure;
use safecache::display::{count, escape};

use crate::ctx::Ctx;
use crate::exit::{self, Coded};

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
