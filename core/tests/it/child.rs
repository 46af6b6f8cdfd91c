//! The helper-process side: one role per process, chosen by the parent.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use safecache::{Cache, Key, LockMode, Options, Wait};

pub(crate) const ROLE_VAR: &str = "SAFECACHE_IT_ROLE";
pub(crate) const DIR_VAR: &str = "SAFECACHE_IT_DIR";

/// Prints one event line for the parent and flushes it.
fn emit(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {}", line.as_ref()).unwrap();
    out.flush().unwrap();
}

/// Blocks until the parent writes a line or closes our stdin.
fn wait_for_parent() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn parse_wait(s: &str) -> Wait {
    match s {
        "nowait" => Wait::NoWait,
        "forever" => Wait::Forever,
        ms => Wait::Timeout(Duration::from_millis(ms.parse().unwrap())),
    }
}

/// Runs `role` and returns the process's exit code.
pub(crate) fn run(role: &str) -> i32 {
    let dir = PathBuf::from(std::env::var(DIR_VAR).expect("SAFECACHE_IT_DIR"));
    let args: Vec<&str> = role.split(' ').collect();
    let options = Options {
        on_wait: Some(Arc::new(|event: &safecache::WaitEvent<'_>| {
            let pids: Vec<String> = event.holders.iter().map(|h| h.pid.to_string()).collect();
            emit(format!("waiting {} holders={}", event.lock, pids.join(",")));
        })),
        // `fill-named KEY CMD`: the fill's locks are named by CMD.
        fill_command: match args.as_slice() {
            ["fill-named", _, cmd] => Some(vec![(*cmd).to_owned(), "--from-fill".to_owned()]),
            _ => None,
        },
        ..Options::default()
    };
    let cache = Cache::open_ambient(&dir, options).unwrap();
    let result = match args.as_slice() {
        // Waits for "go", fills `key` (logging each fill that ran to `log`,
        // outside the cache), then prints what it read back.
        ["fill", key, content, log] => {
            wait_for_parent();
            let key = Key::new(key).unwrap();
            cache
                .get_or_fill(&key, Wait::Forever, |dir| {
                    let mut log = std::fs::OpenOptions::new().append(true).create(true).open(log)?;
                    writeln!(log, "{}", std::process::id())?;
                    // The fill's work: written in pieces, as a clone or an
                    // unzip would, so that a racing reader could see a torn
                    // entry if publish were not atomic.
                    let mut file = std::fs::File::create(dir.path().join("data"))?;
                    for chunk in content.as_bytes().chunks(4) {
                        file.write_all(chunk)?;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    std::io::Result::Ok(())
                })
                .map(|filled| {
                    let data = std::fs::read_to_string(filled.entry.path().join("data")).unwrap();
                    emit(format!("filled={} data={data}", filled.filled));
                })
        }
        // For each of `rounds` rounds: waits for "go", then fills
        // `race/<round>` (writing in pieces, as `fill` does) and reports.
        ["fill-rounds", rounds] => (0..rounds.parse::<u32>().unwrap()).try_for_each(|round| {
            wait_for_parent();
            let key = Key::new(&format!("race/{round}")).unwrap();
            cache
                .get_or_fill(&key, Wait::Forever, |dir| {
                    let mut file = std::fs::File::create(dir.path().join("data"))?;
                    for chunk in b"some content".chunks(4) {
                        file.write_all(chunk)?;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    std::io::Result::Ok(())
                })
                .map(|filled| emit(format!("filled={}", filled.filled)))
        }),
        // Fills `key`, writing 2,000 lines and a progress bar into the
        // fill's log; reports, waits for the parent, then succeeds or
        // fails as `outcome` says.
        ["fill-log", key, outcome] => {
            let key = Key::new(key).unwrap();
            cache
                .get_or_fill(&key, Wait::Forever, |dir| {
                    let mut log = dir.log();
                    for i in 0..2000 {
                        writeln!(log, "line {i} of the fill's output")?;
                    }
                    write!(log, "progress 10%\rprogress 50%\r")?;
                    emit("logged");
                    wait_for_parent();
                    if *outcome == "fail" { Err(std::io::Error::other("the fill failed")) } else { Ok(()) }
                })
                .map(|filled| emit(format!("filled={}", filled.filled)))
        }
        // Fills `key` with its locks named by CMD: reports, and waits for
        // the parent inside the fill.
        ["fill-named", key, _cmd] => {
            let key = Key::new(key).unwrap();
            cache
                .get_or_fill(&key, Wait::Forever, |dir| {
                    emit("filling");
                    wait_for_parent();
                    std::fs::write(dir.path().join("data"), "named")
                })
                .map(|filled| emit(format!("filled={}", filled.filled)))
        }
        // Starts a fill, writes half an entry, reports, and hangs until
        // killed.
        ["fill-hang", key] => {
            let key = Key::new(key).unwrap();
            cache
                .get_or_fill(&key, Wait::Forever, |dir| {
                    std::fs::write(dir.path().join("partial"), "half an entr")?;
                    emit(format!("filling {}", dir.path().display()));
                    wait_for_parent();
                    std::io::Result::Ok(())
                })
                .map(|_| ())
        }
        // Waits for "go"; pins `key`, or fills it first with a fill that reports, waits for
        // the parent, logs its pid to `log` and fails with status 7; then
        // reports how the call ended.
        ["pin-or-fill-fail", key, log] => {
            wait_for_parent();
            let key = Key::new(key).unwrap();
            let how = safecache::PinOrFill { wait: Wait::Forever, in_place: false };
            let leased = cache.lease(LockMode::Shared, Wait::Forever).unwrap();
            match leased.pin_or_fill(&key, how, |_dir| {
                // Only the first fill waits for the parent: one run again
                // by a waiter must not hang the test.
                let first = !std::path::Path::new(log).exists();
                emit(if first { "filling" } else { "filling again" });
                if first {
                    wait_for_parent();
                }
                let mut log = std::fs::OpenOptions::new().append(true).create(true).open(log).unwrap();
                writeln!(log, "{}", std::process::id()).unwrap();
                Err(safecache::CommandFailed { code: 7, description: "the command exited with status 7".into() })
            }) {
                Ok(pinned) => emit(format!("pinned filled={}", pinned.filled)),
                Err(safecache::Error::PeerFillFailed { failure, .. }) => {
                    emit(format!("peer-failed pid={} code={:?}", failure.pid, failure.exit_code));
                }
                Err(e) => emit(format!("failed {e}")),
            }
            Ok(())
        }
        // Waits for "go", takes `key` for a change, writes `changed-by`
        // into it, reports, and seals once the parent says so (or is
        // killed first).
        ["modify", key] => {
            wait_for_parent();
            let key = Key::new(key).unwrap();
            match cache.modify(&key, Wait::Forever) {
                Ok(Some(change)) => {
                    std::fs::write(change.entry().path().join("changed-by"), std::process::id().to_string()).unwrap();
                    emit(format!("modifying interrupted={}", change.interrupted().is_some()));
                    wait_for_parent();
                    change.seal().map(|()| emit("sealed"))
                }
                Ok(None) => {
                    emit("absent");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        // Fills `key` (or finds it filled), waiting at most `ms` for its
        // lock; reports how that ended, then stays alive until stdin
        // closes (a long-lived process whose wait may have given up).
        ["fill-wait", key, ms] => {
            let key = Key::new(key).unwrap();
            let result = cache.get_or_fill(&key, parse_wait(ms), |dir| std::fs::write(dir.path().join("data"), "w"));
            match result {
                Ok(filled) => emit(format!("filled={}", filled.filled)),
                Err(e) => emit(format!("error busy={} {e}", e.is_busy())),
            }
            wait_for_parent();
            Ok(())
        }
        // Pins `key`, waiting at most `ms`; reports, and holds the pin
        // until stdin closes.
        ["pin-wait", key, ms] => {
            let key = Key::new(key).unwrap();
            cache.pin(&key, parse_wait(ms)).map(|pin| {
                emit(format!("pinned={}", pin.is_some()));
                wait_for_parent();
            })
        }
        // Pins `key` until stdin closes.
        ["pin", key] => {
            let key = Key::new(key).unwrap();
            cache.pin(&key, Wait::Forever).map(|pin| {
                assert!(pin.is_some(), "pinned an absent entry");
                emit("pinned");
                wait_for_parent();
            })
        }
        // Holds the lease until stdin closes.
        ["lease", mode] => {
            let mode = if *mode == "exclusive" { LockMode::Exclusive } else { LockMode::Shared };
            cache.lease(mode, Wait::Forever).map(|_lease| {
                emit("leased");
                wait_for_parent();
            })
        }
        ["remove", key, wait] => {
            let key = Key::new(key).unwrap();
            cache.remove(&key, parse_wait(wait)).map(|removed| emit(format!("removed={removed}")))
        }
        ["clean", wait] => cache.clean(parse_wait(wait)).map(|r| emit(format!("cleaned={}", r.entries))),
        // Reclaims with at most `fds` descriptors open, as a process under a
        // low `ulimit -n` does.
        ["reclaim-fds", fds] => {
            let n: u64 = fds.parse().unwrap();
            let limit = rustix::process::Rlimit { current: Some(n), maximum: Some(n) };
            rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).unwrap();
            cache.reclaim(false).map(|r| emit(format!("reclaimed={} failures={}", r.items, r.failures.len())))
        }
        ["reclaim"] => {
            cache.reclaim(false).map(|r| emit(format!("reclaimed={} failures={}", r.items, r.failures.len())))
        }
        other => panic!("unknown role {other:?}"),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            emit(format!("error {e}"));
            if e.is_busy() { 75 } else { 1 }
        }
    }
}
