//! `path KEY`: the entry's path, if it is in the cache.

use anyhow::Result;
use safecache::{Key, LockMode, describe_holders};

use crate::ctx::Ctx;
use crate::exit::{self, Coded};
use crate::report;

pub(crate) fn path(ctx: &Ctx, key: &Key) -> Result<u8> {
    let cache = ctx.open()?;
    match cache.get(key)? {
        Some(entry) => {
            crate::stats::hit(&cache);
            ctx.ui.report(report::Entry::new(key, entry.path()))?;
            Ok(exit::OK)
        }
        None => {
            crate::stats::miss(&cache);
            // A fill in progress: say who runs it, not just "absent".
            let filling: Vec<_> =
                cache.entry_holders(key).into_iter().filter(|h| h.mode == LockMode::Exclusive).collect();
            let message = if filling.is_empty() {
                format!(
                    "`{key}` is not in the cache at `{}`; {}",
                    cache.path().display(),
                    crate::hint::fill_absent(key.as_str())
                )
            } else {
                format!(
                    "`{key}` is not in the cache yet: it is being filled by {}; {}",
                    describe_holders(&filling),
                    crate::hint::wait_for_fill(key.as_str())
                )
            };
            Err(Coded { code: exit::ABSENT, message }.into())
        }
    }
}
