//! A process whose tasks fill concurrently (uv #544): a cooperative
//! executor that switches between its tasks at each host yield, with the
//! process's own locks (held per process, as fcntl locks are) and its
//! single-flight map.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use safecache::{Key, sim};

use super::host::{self, report};
use super::roles::{entry_path, exists, make_temp, token};
use super::{FILES, Fail, ROOT, other};

/// The state of one process whose tasks fill concurrently (uv #544).
#[derive(Default)]
pub(crate) struct Process {
    /// Keys with a fill in flight in this process: the single-flight map.
    inflight: RefCell<HashSet<String>>,
    /// Locks held by this process: path -> (host handle, holds). Like
    /// fcntl locks (and cargo's in-process locks), they belong to the
    /// process, so a second task of the same process takes them too.
    locks: RefCell<HashMap<String, (i32, u32)>>,
}

impl Process {
    pub(crate) fn lock(&self, rel: &str) -> Result<(), Fail> {
        if let Some((_, holds)) = self.locks.borrow_mut().get_mut(rel) {
            *holds += 1;
            return Ok(());
        }
        let path = Path::new(ROOT).join(rel);
        fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
        let handle = host::lock_exclusive(rel).map_err(other)?;
        self.locks.borrow_mut().insert(rel.to_owned(), (handle, 1));
        Ok(())
    }

    /// Runs `f` holding the lock on `rel`, then releases it, whatever `f`
    /// returned.
    pub(crate) fn with<T>(&self, rel: &str, f: impl FnOnce() -> Result<T, Fail>) -> Result<T, Fail> {
        self.lock(rel)?;
        let result = f();
        self.unlock(rel);
        result
    }

    pub(crate) fn unlock(&self, rel: &str) {
        let mut locks = self.locks.borrow_mut();
        if let Some((handle, holds)) = locks.get_mut(rel) {
            *holds -= 1;
            if *holds == 0 {
                host::unlock(*handle);
                locks.remove(rel);
            }
        }
    }
}

/// A point where this process's executor may switch tasks (and, through
/// the host call, where the host may switch processes).
pub(crate) fn pause() -> impl Future<Output = ()> {
    struct Pause(bool);
    impl Future for Pause {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            host::yield_now();
            Poll::Pending
        }
    }
    Pause(false)
}

/// One task of a process that unpacks `key` (uv #544: the same wheel
/// requested twice by one resolution). With `single_flight`, a second task
/// waits for the first and then uses its entry, as uv's OnceMap does.
pub(crate) async fn unpack(process: &Process, key: &Key, single_flight: bool) -> Result<(), Fail> {
    let target = entry_path(key);
    loop {
        if exists(&target)? {
            report(&format!("fill-done {key} filled=false"));
            return Ok(());
        }
        if single_flight && process.inflight.borrow().contains(key.as_str()) {
            host::sleep_ms(1);
            pause().await;
            continue;
        }
        break;
    }
    if single_flight {
        process.inflight.borrow_mut().insert(key.to_string());
    }
    let lock = sim::entry_lock(&sim::digest(key));
    process.lock(&lock)?;
    let result = unpack_locked(key, &target).await;
    process.unlock(&lock);
    process.inflight.borrow_mut().remove(key.as_str());
    let filled = result?;
    report(&format!("fill-done {key} filled={filled}"));
    Ok(())
}

pub(crate) async fn unpack_locked(key: &Key, target: &Path) -> Result<bool, Fail> {
    if exists(target)? {
        return Ok(false);
    }
    let (temp, out) = make_temp(key)?;
    let token = token();
    report(&format!("fill-start {key} {token}"));
    for i in 0..FILES {
        fs::write(out.join(format!("f{i}")), format!("{key}|{token}|{i}"))?;
        pause().await;
    }
    if exists(target)? {
        return Err(other(format!("unpacking `{key}`: destination path already exists")));
    }
    fs::rename(&out, target)?;
    fs::remove_dir_all(&temp)?;
    Ok(true)
}

/// A harness self-test, not a protocol role: takes two entry-style locks in
/// the given order, so two processes taking them in opposite orders can
/// deadlock (and the host must say so).
pub(crate) fn lock_pair(first: &str, second: &str) -> Result<(), Fail> {
    let process = Process::default();
    let (first, second) = (sim::entry_lock(first), sim::entry_lock(second));
    process.lock(&first)?;
    // Virtual time: the peer runs meanwhile and takes its first lock.
    host::sleep_ms(1);
    process.lock(&second)?;
    process.unlock(&second);
    process.unlock(&first);
    Ok(())
}

/// One cooperative task of a process.
pub(crate) type Task<'a> = Pin<Box<dyn Future<Output = Result<(), Fail>> + 'a>>;

pub(crate) fn dedupe(key: &Key, single_flight: bool) -> Result<(), Fail> {
    let process = Process::default();
    let mut tasks: Vec<Option<Task<'_>>> =
        (0..2).map(|_| Some(Box::pin(unpack(&process, key, single_flight)) as Task<'_>)).collect();
    let mut cx = Context::from_waker(Waker::noop());
    let mut first_error = None;
    loop {
        let live: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].is_some()).collect();
        if live.is_empty() {
            break;
        }
        let mut pick = [0u8; 1];
        getrandom::fill(&mut pick).map_err(|e| other(format!("random: {e}")))?;
        let i = live[usize::from(pick[0]) % live.len()];
        if let Some(task) = tasks[i].as_mut()
            && let Poll::Ready(result) = task.as_mut().poll(&mut cx)
        {
            tasks[i] = None;
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
