//! Processes with separate local caches sharing one store, as machines
//! share a bucket.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use safecache::Key;
use safecache_remote::{Namespace, Remote, Trust, restore};

use crate::child::{HOME_VAR, ROLE_VAR, STORE_VAR, signer};
use crate::support::temp_dir;

/// Reads `child`'s `@@` lines until one, and returns it.
fn next_event(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    for line in lines {
        // libtest may start a line before the child's event.
        if let Some((_, event)) = line.unwrap().split_once("@@ ") {
            return event.to_owned();
        }
    }
    panic!("the child exited without an event");
}

#[test]
fn processes_with_their_own_caches_filling_one_key_publish_it_once() {
    let store_dir = tempfile::tempdir().unwrap();
    let homes: Vec<tempfile::TempDir> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = homes
        .iter()
        .map(|home| {
            let mut child = Command::new(&exe)
                .args(["--exact", "child_process", "--nocapture", "--test-threads", "1", "-q"])
                .env(ROLE_VAR, "fill-and-upload")
                .env(STORE_VAR, store_dir.path())
                .env(HOME_VAR, home.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(next_event(&mut lines), "ready");
            (child, lines)
        })
        .collect();
    // Every child is ready and waiting: let them all go at once.
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut events = Vec::new();
    for (mut child, mut lines) in children {
        events.push(next_event(&mut lines));
        assert!(child.wait().unwrap().success());
    }
    let published = events.iter().filter(|e| *e == "built Published").count();
    assert_eq!(published, 1, "{events:?}");
    assert!(events.iter().all(|e| ["built Published", "built AlreadyThere", "restored"].contains(&e.as_str())));

    // What the store holds is one build, whole, signed by the writers' key.
    let store = Arc::new(LocalFileSystem::new_with_prefix(store_dir.path()).unwrap());
    let trust = Trust::Keys([signer().public_key()].into());
    let remote = Remote::new(store, "", Namespace::new("main").unwrap(), trust).unwrap();
    let out = temp_dir();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(restore(&remote, &Key::new("k").unwrap(), &out.dir)).unwrap();
    let content = std::fs::read_to_string(out.temp.path().join("out")).unwrap();
    assert!(content.starts_with("built by "), "{content}");
}
