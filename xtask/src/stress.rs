//! This defines `cargo xtask stress`: many real processes share one cache
//! directory through the `cargo-safecache` binary while a killer SIGKILLs
//! them at random, and every entry anybody sees must be complete.
//!
//! ```text
//! cargo xtask stress                                    16 workers for 60 s
//! cargo xtask stress --procs 8 --secs 20 --seed 42      what `cargo xtask ci` runs
//! cargo xtask stress --keep /tmp/sc                     keep the cache for inspection
//! cargo xtask stress --grandchildren                    fills also leave a writer behind
//! ```
//!
//! The coordinator builds the CLI, re-executes this binary as N workers
//! (the hidden task `__stress-worker`) and runs a killer thread; workers
//! loop over random operations on six keys and write their tallies to a
//! results dir. At the end the coordinator waits for every descendant (it
//! is a child subreaper, so orphans come back to it), runs `gc`, and checks
//! the cache: every entry verifies, no temp, trash or holder is left.
//! docs/STRESS.md describes the operations, the checks and replay.
//!
//! This file holds what every part shares (the keys, the exit codes, the
//! fill script) and the tests; each part is a file under `stress/`: the
//! coordinator, the killer, `/proc` (procfs), the entry checks, the
//! workers and the seeded randomness (rng).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

mod coordinator;
mod entries;
mod killer;
mod procfs;
mod rng;
mod worker;

pub(crate) use coordinator::run;
pub(crate) use entries::verify;
pub(crate) use worker::worker;

// The sections share this module's constants and each other's items.
#[allow(clippy::wildcard_imports)]
use {coordinator::*, entries::*, killer::*, procfs::*, rng::*, worker::*};

/// The hidden task a worker runs as.
pub(crate) const WORKER: &str = "__stress-worker";
/// The hidden task a pinned read runs as CMD, to verify its entry.
pub(crate) const VERIFY: &str = "__stress-verify";

/// The keys every worker picks from: few, so that operations collide; with
/// `/` so that the stored-name encoding is exercised.
const KEYS: [&str; 6] = ["alpha", "stress/beta", "stress/gamma", "a/b/delta", "epsilon", "zeta"];

/// The entry name of one of [`KEYS`] (lowercase, digits and `/`), as
/// format 3 writes it (docs/PROTOCOL.md, "Entry names").
fn stored_name(key: &str) -> String {
    key.replace('/', "+")
}
/// The `--lock-timeout` values an operation picks from.
const TIMEOUTS: [&str; 4] = ["0", "0.5", "2", "5"];
/// Every process of one stress run carries `SAFECACHE_STRESS_RUN=<tag>`,
/// so that the killer and the stray check find exactly this run's processes.
const MARKER_VAR: &str = "SAFECACHE_STRESS_RUN";
/// `__stress-verify`'s exit code for an incomplete entry under a pin.
const VERIFY_PARTIAL: i32 = 3;
/// The fill script's exit code when asked to fail midway.
const FILL_FAILS: i32 = 7;
/// The fill script's exit code when another fill of the same key runs.
const FILL_OVERLAP: i32 = 4;
/// The fill script's exit code when another fill of the same key held the
/// lock but was already dying (gone, a zombie, or SIGKILL pending): the CMD
/// of a killed `run`, still dying after its `run` released the entry lock
/// (docs/STRESS.md, "kill window").
const FILL_OVERLAP_DYING: i32 = 6;
/// The fill script's exit code when a write into `SAFECACHE_OUT` fails.
const FILL_WRITE_FAILED: i32 = 5;
/// No `clean` starts this close to the deadline (milliseconds).
const CLEAN_QUIET_MS: u64 = 6000;
/// How long descendants may outlive the workers before they count as strays:
/// a `sleep` orphaned by a kill ends within this.
const STRAY_GRACE: Duration = Duration::from_secs(3);
/// How long after the deadline the workers may take to finish their last
/// operation (at most a 5 s lock wait and a fill) before they count as hung.
const WORKER_GRACE: Duration = Duration::from_secs(120);

/// The fill: writes `n` files slowly, each in two writes, and the manifest
/// last, so a reader can tell a complete entry from a partial one. With
/// a lock file it first takes it with `flock -n`: if another fill of the
/// key runs at the same time (single flight broken, or a killed fill's CMD
/// still alive), it fails with [`FILL_OVERLAP`], or [`FILL_OVERLAP_DYING`]
/// if every other holder is already dying. Its `sleep`s and the
/// grandchild close that descriptor, so only the shell itself holds it.
/// With `grandchild=1` it leaves a background writer whose working
/// directory is the fill's output, which keeps writing for 5 s after the shell
/// exits: longer than [`STRAY_GRACE`], so one left at the end is a stray.
const FILL_SCRIPT: &str = r#"key=$1 nonce=$2 n=$3 failat=$4 grandchild=$5 lock=$6
if [ -n "$lock" ]; then
  exec 9>>"$lock"
  if ! flock -n 9; then
    # Every other process with the lock file open is a fill's CMD:
    # each must be gone, a zombie, or have SIGKILL pending (bit 0x100 of
    # SigPnd or ShdPnd) for this to be the kill window (exit 6).
    # One `ls` for the whole scan: a fork per process would take so long
    # that the holder is gone before it is looked at. Every descriptor is
    # looked at, since dash moves fd 9 aside while it runs `sleep 9>&-`;
    # the scanners themselves run without it.
    { ls -l /proc/[0-9]*/fd | awk -v lock="$lock" '/^\/proc\/[0-9]+\/fd:$/ { split($0, a, "/"); pid = a[3]; next }
        $NF == lock { print pid }'; } 9>&- >"$lock.scan.$$" 2>/dev/null
    others=$(sort -u "$lock.scan.$$" | grep -vx "$$"); rm -f "$lock.scan.$$"
    live=""
    for p in $others; do
      dying=$(awk '/^State:/ { if ($2 == "Z" || $2 == "X") d = 1 }
        /^(SigPnd|ShdPnd):/ { if (index("13579bdf", substr($2, length($2) - 2, 1))) d = 1 }
        END { print d + 0 }' "/proc/$p/status" 2>/dev/null)
      [ "$dying" = 0 ] && live="$live $p"
    done
    echo "stress-fill: another fill of $key holds $lock: processes [$(echo $others)], of which alive and not being killed [$live]" >&2
    if [ -z "$live" ]; then exit 6; fi
    exit 4
  fi
fi
if [ "$grandchild" = 1 ]; then
  # A writer left behind: it waits until CMD has written its manifest (and
  # so is about to exit), then keeps writing. Contained, it is killed when
  # CMD exits, before the publish; escaped, it writes into the published
  # entry, which the readers catch as files not in the manifest.
  ( cd "$SAFECACHE_OUT" || exit 0
    while [ ! -e MANIFEST ]; do sleep 0.02; done
    sleep 0.3
    i=0
    while [ "$i" -lt 50 ]; do echo late > "late$i"; sleep 0.1; i=$((i+1)); done
  ) 9>&- </dev/null >/dev/null 2>&1 &
fi
i=0
while [ "$i" -lt "$n" ]; do
  if [ "$i" -eq "$failat" ]; then exit 7; fi
  printf '%s %s %s\n' "$key" "$nonce" "$i" > "$SAFECACHE_OUT/f$i" || exit 5
  sleep 0.01 9>&-
  printf 'second half %s\n' "$i" >> "$SAFECACHE_OUT/f$i" || exit 5
  i=$((i+1))
done
printf 'stress-manifest %s %s %s\nend\n' "$key" "$nonce" "$n" > "$SAFECACHE_OUT/MANIFEST" || exit 5
"#;

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use super::*;

    /// A scratch dir with an empty `entry` dir to fill and a `lock` path.
    fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (entry, lock) = (dir.path().join("entry"), dir.path().join("lock"));
        fs::create_dir(&entry).unwrap();
        (dir, entry, lock)
    }

    /// Runs the fill script as `run` would, writing 3 files into `out`.
    fn fill(out: &Path, key: &str, failat: i64, lock: &Path) -> Output {
        Command::new("sh")
            .args(["-c", FILL_SCRIPT, "stress-fill", key, "n1", "3", &failat.to_string(), "0"])
            .arg(lock)
            .env("SAFECACHE_OUT", out)
            .output()
            .unwrap()
    }

    #[test]
    fn a_complete_fill_verifies_and_any_damage_is_seen() {
        let (_dir, entry, lock) = scratch();
        assert!(fill(&entry, "a/b", -1, &lock).status.success());
        assert_eq!(verify_entry(&entry, "a/b"), Ok(3));
        assert!(verify_entry(&entry, "a/c").unwrap_err().contains("does not describe"));

        fs::write(entry.join("late0"), "late\n").unwrap();
        assert!(verify_entry(&entry, "a/b").unwrap_err().contains("late0"));
        fs::remove_file(entry.join("late0")).unwrap();

        let whole = fs::read_to_string(entry.join("f1")).unwrap();
        fs::write(entry.join("f1"), "a/b n1 1\n").unwrap();
        assert!(verify_entry(&entry, "a/b").unwrap_err().starts_with("f1 holds"));
        fs::write(entry.join("f1"), whole).unwrap();

        fs::remove_file(entry.join("MANIFEST")).unwrap();
        assert!(verify_entry(&entry, "a/b").unwrap_err().contains("MANIFEST"));
    }

    #[test]
    fn a_fill_told_to_fail_stops_before_the_manifest() {
        let (_dir, entry, lock) = scratch();
        assert_eq!(fill(&entry, "k", 1, &lock).status.code(), Some(FILL_FAILS));
        assert!(!entry.join("MANIFEST").exists());
        assert!(verify_entry(&entry, "k").is_err());
    }

    /// A live process holding the fill lock is a real overlap (exit 4), not
    /// the kill window: the check must not excuse a holder that is not dying.
    #[test]
    fn a_fill_that_finds_a_live_holder_of_its_lock_fails_as_an_overlap() {
        let (_dir, entry, lock) = scratch();
        // The holder says "locked" once it holds the lock, then waits for
        // its stdin to close: the pipe, not a sleep, orders the two.
        let mut holder = Command::new("sh")
            .args(["-c", r#"exec 9>>"$1"; flock -n 9 || exit 1; echo locked; exec cat"#, "holder"])
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "locked\n");

        let out = fill(&entry, "k", -1, &lock);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(FILL_OVERLAP), "{stderr}");
        assert!(stderr.contains(&format!("not being killed [ {}]", holder.id())), "{stderr}");

        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert!(fill(&entry, "k", -1, &lock).status.success());
    }

    #[test]
    fn an_unpinned_reader_tells_a_vanished_entry_from_a_partial_one() {
        let (dir, entry, lock) = scratch();
        assert!(fill(&entry, "k", -1, &lock).status.success());
        assert!(matches!(verify_unpinned(&entry, "k"), Read::Verified));
        fs::remove_file(entry.join("f2")).unwrap();
        assert!(matches!(verify_unpinned(&entry, "k"), Read::Partial(r) if r.contains("f2")));
        fs::rename(&entry, dir.path().join("aside")).unwrap();
        assert!(matches!(verify_unpinned(&entry, "k"), Read::Vanished));
    }

    #[test]
    fn the_killer_aims_only_at_commands_that_hold_locks_long() {
        let line = |sub: &[&str]| {
            let mut v: Vec<String> = ["bin", "--cache-dir", "C", "--lock-timeout", "0"].map(String::from).to_vec();
            v.extend(sub.iter().map(|s| s.to_string()));
            target_label(&v)
        };
        assert_eq!(line(&["run", "--key", "k", "--", "sh"]), Some("run --key"));
        assert_eq!(line(&["use", "--key", "k", "--", "x"]), Some("use --key"));
        assert_eq!(line(&["clean"]), Some("clean"));
        assert_eq!(line(&["path", "k"]), None);
        assert_eq!(line(&["status"]), None);
    }
}
