//! This defines every fix hint the CLI gives, the one place that says how
//! to get out of a problem, and how the program names itself in them: as
//! the user invoked it (`cargo safecache gc`, `safecache gc` or
//! `cargo-safecache gc`), so nobody is told to run a form they may not have.
//!
//! Invariant: no message elsewhere in the CLI spells a command of this
//! program; it calls [`command`] (a tidy test checks). The library's own
//! messages say `cargo safecache ...`; [`in_invoked_form`] rewrites them.

use std::borrow::Cow;
use std::sync::OnceLock;

/// How the user invoked this program, set once at start.
static INVOKED_AS: OnceLock<&'static str> = OnceLock::new();

/// The form the library's messages name the program by.
const LIBRARY_FORM: &str = "cargo safecache";

pub(crate) fn set_invoked_as(invoked: &'static str) {
    let _ = INVOKED_AS.set(invoked);
}

/// The name the user invoked the program by (`cargo safecache` before it
/// is known).
pub(crate) fn invoked() -> &'static str {
    INVOKED_AS.get().copied().unwrap_or(LIBRARY_FORM)
}

/// `ARGS` as a command of this program the user can type, in backticks:
/// ``command("gc")`` is `` `safecache gc` `` for someone who ran `safecache`.
pub(crate) fn command(args: &str) -> String {
    format!("`{} {args}`", invoked())
}

/// `text` with the commands the library's messages name (written as
/// `` `cargo safecache ...` ``) in the form the user invoked.
pub(crate) fn in_invoked_form(text: &str) -> Cow<'_, str> {
    let from = format!("`{LIBRARY_FORM} ");
    match invoked() {
        LIBRARY_FORM => text.into(),
        invoked if text.contains(&from) => text.replace(&from, &format!("`{invoked} ")).into(),
        _ => text.into(),
    }
}

/// How to change how long a command waits; every wait and timeout message
/// ends with it.
pub(crate) const TIMEOUT: &str =
    "set --lock-timeout SECS (or `never`) or SAFECACHE_LOCK_TIMEOUT to change how long to wait";

/// How to get out of a full disk; also the end of the warning `run` gives
/// when CMD fails on a nearly full one.
pub(crate) fn no_space() -> String {
    format!("free space with {} or {}, or delete files on that filesystem", command("gc"), command("rm KEY…"))
}

/// A fill not started for lack of free space.
pub(crate) fn below_reserve() -> String {
    format!("free space with {} or {}, or lower the reserve with --min-free", command("gc"), command("rm KEY…"))
}

/// A cache dir that cannot be written.
pub(crate) const UNWRITABLE: &str =
    "check that the cache dir is writable, or pick another with --cache-dir DIR or SAFECACHE_DIR";

/// A cache dir on a filesystem that cannot lock.
pub(crate) const NOT_LOCAL: &str = "pick a cache dir on a local filesystem with --cache-dir DIR or SAFECACHE_DIR";

/// A run that waited for a fill that failed.
pub(crate) const RETRY_FAILED: &str = "to run the fill yourself instead, pass --retry-failed";

/// `path` of an absent key.
pub(crate) fn fill_absent(key: &str) -> String {
    format!("fill it with {}", command(&format!("run --key {key} -- CMD")))
}

/// A pin of an absent key.
pub(crate) fn fill_then_use(key: &str) -> String {
    format!(
        "fill it first, or fill it if absent and then run CMD with it pinned: {}",
        command(&format!("run --key {key} --fill 'FILL' -- CMD"))
    )
}

/// An orphan that `status` lists.
pub(crate) fn orphan() -> String {
    format!("orphan; {} reclaims it", command("gc"))
}

/// After the automatic gc evicted entries.
pub(crate) fn auto_gc_limits() -> String {
    format!("see {} to change its limits or --auto-gc off", command("gc --help"))
}
