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

/// `path` or `use` of an absent key: the two ways to fill it.
pub(crate) fn fill_absent(key: &str) -> String {
    format!(
        "fill it with the command that builds it, {}, or fill it if absent and then run CMD with it pinned: {}",
        command(&format!("run --key {key} -- BUILD")),
        command(&format!("use --key {key} --fill 'BUILD' -- CMD"))
    )
}

/// `path` of a key whose fill is running.
pub(crate) fn wait_for_fill(key: &str) -> String {
    format!("to wait for it and use it pinned: {}", command(&format!("use --key {key} -- CMD")))
}

/// `run --fill`, gone.
pub(crate) fn gone_fill(key: &str) -> String {
    format!(
        "`run --fill` is gone: `run` runs the command that fills; to fill `{key}` if absent and then run CMD \
         with it pinned, use {}",
        command(&format!("use --key {key} --fill 'FILL' -- CMD"))
    )
}

/// `run --pin`, gone.
pub(crate) fn gone_pin(key: &str) -> String {
    format!("`run --pin` is gone: to run CMD with `{key}` pinned, use {}", command(&format!("use --key {key} -- CMD")))
}

/// A fill option without a fill.
pub(crate) fn fill_option_without_fill(flag: &str, verb: &str) -> String {
    match verb {
        "use" => format!(
            "{flag} applies to a fill: pass --fill 'FILL' too ({})",
            command(&format!("use --key KEY --fill 'FILL' {flag} -- CMD"))
        ),
        _ => format!(
            "{flag} applies to a fill: pass --key KEY too ({})",
            command(&format!("run --key KEY {flag} -- CMD"))
        ),
    }
}

/// `use --fill ''`.
pub(crate) fn empty_fill() -> String {
    format!(
        "--fill is empty: give the shell command that fills \"$SAFECACHE_OUT\" ({})",
        command("use --key KEY --fill 'git clone URL \"$SAFECACHE_OUT\"' -- CMD")
    )
}

/// `use` without a key.
pub(crate) fn use_needs_key() -> String {
    format!("`use` needs --key KEY: the entry CMD uses ({})", command("use --key KEY -- CMD"))
}

/// An orphan that `status` lists.
pub(crate) fn orphan() -> String {
    format!("orphan; {} reclaims it", command("gc"))
}

/// After the automatic gc evicted entries.
pub(crate) fn auto_gc_limits() -> String {
    format!("see {} to change its limits or --auto-gc off", command("gc --help"))
}
