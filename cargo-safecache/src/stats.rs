//! This defines the calls that count a command's outcome into the cache's
//! usage counters (`safecache stats`; the core's `stats.rs` keeps them):
//! one call per outcome, each one atomic add in a shared mapping, with no
//! lock and no fsync. Counting never fails a command.
//!
//! What counts: `path K` and every filling command (`run --key K`) count a
//! hit when K was there, else a miss; a miss this command filled adds a
//! fill and the entry's bytes, one whose fill failed adds a failed fill.
//! Every command that waited for a lock counts one wait.

use safecache::{Cache, Counter};

use crate::ctx::Ctx;

/// `K` was in the cache.
pub(crate) fn hit(cache: &Cache) {
    cache.count(Counter::Hits, 1);
}

/// `K` was not in the cache, and this command did not fill it.
pub(crate) fn miss(cache: &Cache) {
    cache.count(Counter::Misses, 1);
}

/// The outcome of a filling command's `get_or_fill`: `ran` is whether this
/// command ran the fill and it failed, `cancelled` whether a signal ended
/// it (no failure: nothing is counted beyond the miss).
/// `outcome` is whether this command filled the entry, and its bytes.
pub(crate) fn fill_outcome(cache: &Cache, outcome: Result<(bool, Option<u64>), ()>, ran: bool, cancelled: bool) {
    match outcome {
        Ok((true, bytes)) => {
            miss(cache);
            cache.count(Counter::Fills, 1);
            cache.count(Counter::BytesFilled, bytes.unwrap_or(0));
        }
        Ok(_) => hit(cache),
        Err(_) => {
            miss(cache);
            if ran && !cancelled {
                cache.count(Counter::FailedFills, 1);
            }
        }
    }
}

/// One wait, if the command waited for any lock; called once, at its end.
pub(crate) fn command_done(ctx: &Ctx) {
    if ctx.ui.waited()
        && let Some(cache) = ctx.opened.get()
    {
        cache.count(Counter::Waits, 1);
    }
}
