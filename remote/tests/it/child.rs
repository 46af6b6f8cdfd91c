//! The helper-process side of the cross-process tests: the parent re-runs
//! this test binary with `SAFECACHE_REMOTE_IT_ROLE` set and the filter
//! `--exact child_process`. A child prints `@@ <event>` lines and waits for
//! the parent on its stdin, never on a clock.

use std::io::{BufRead, Write};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use safecache::{Cache, Key, Options, Wait};
use safecache_remote::{Namespace, Remote, SecretKey, Trust, restore, upload_entry};

pub(crate) const ROLE_VAR: &str = "SAFECACHE_REMOTE_IT_ROLE";
pub(crate) const STORE_VAR: &str = "SAFECACHE_REMOTE_IT_STORE";
pub(crate) const HOME_VAR: &str = "SAFECACHE_REMOTE_IT_HOME";

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {line}").unwrap();
    out.flush().unwrap();
}

/// The signing key every writer of these tests shares.
pub(crate) fn signer() -> SecretKey {
    SecretKey::from_seed(&[5; 32])
}

/// Runs `role` and returns the exit code.
pub(crate) fn run(role: &str) -> i32 {
    match role {
        // A machine of its own: its own local cache under HOME, the shared
        // store at STORE. Fills `k` on "go": from the store if it has it,
        // else by "building" it (a file naming this process), then uploads
        // what it built. Prints `restored`, or `built` and the upload's
        // outcome.
        "fill-and-upload" => {
            let home = std::path::PathBuf::from(std::env::var(HOME_VAR).unwrap());
            let store = Arc::new(LocalFileSystem::new_with_prefix(std::env::var(STORE_VAR).unwrap()).unwrap());
            let ns = Namespace::new("main").unwrap();
            let trust = Trust::Keys([signer().public_key()].into());
            let remote = Remote::new(store, "", ns, trust).unwrap().writable(Some(signer()));
            let cache = Cache::init_ambient(home.join("cache"), Options::default()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let key = Key::new("k").unwrap();
            emit("ready");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).unwrap();
            let mut built = false;
            let filled = cache
                .get_or_fill(&key, Wait::Forever, |fill| {
                    let out = fill.open_dir()?;
                    match rt.block_on(restore(&remote, &key, &out)) {
                        Ok(_) => Ok(()),
                        Err(e) if e.is_not_found() => {
                            built = true;
                            std::fs::write(fill.path().join("out"), format!("built by {}\n", std::process::id()))
                                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
                        }
                        Err(e) => Err(e.into()),
                    }
                })
                .unwrap();
            if !built {
                emit("restored");
                return 0;
            }
            let entry = cap_std::fs::Dir::open_ambient_dir(filled.entry.path(), cap_std::ambient_authority()).unwrap();
            let scratch = cap_std::fs::Dir::open_ambient_dir(&home, cap_std::ambient_authority()).unwrap();
            let uploaded = rt.block_on(upload_entry(&remote, &key, &entry, &scratch)).unwrap();
            emit(&format!("built {uploaded:?}"));
            0
        }
        other => {
            eprintln!("unknown role `{other}`");
            2
        }
    }
}
