//! This defines the one way the core spreads independent work over threads:
//! a fixed set of scoped threads taking tasks in order from a shared
//! counter, with the results returned in the tasks' order. Natively only;
//! under WASI (no threads) the tasks run one after another.

/// Runs `work` on every task, on up to `threads` threads (the calling one
/// included) where the platform has them, and returns the results in the
/// tasks' order. A thread that cannot be started leaves its share to the
/// others.
pub(crate) fn run<T: Sync, R: Send>(tasks: &[T], threads: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    run_with(tasks, threads, || (), |(), task| work(task))
}

/// [`run`], with state of each thread's own, made by `init` when the thread
/// takes its first task (a buffer, say).
#[cfg(not(target_family = "wasm"))]
pub(crate) fn run_with<T: Sync, R: Send, S>(
    tasks: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = threads.min(tasks.len());
    if threads <= 1 {
        let mut state = None;
        return tasks.iter().map(|task| work(state.get_or_insert_with(&init), task)).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..tasks.len()).map(|_| None).collect());
    let run = || {
        let mut state = None;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(task) = tasks.get(i) else { break };
            let r = work(state.get_or_insert_with(&init), task);
            results.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(r);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads {
            let _ = std::thread::Builder::new().name("safecache-work".into()).spawn_scoped(s, run);
        }
        run();
    });
    let results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Every task was taken by a thread that finished (the scope joined them
    // all); a missing result could only come from a panic, which the scope
    // re-raised.
    let mut state = None;
    results.into_iter().zip(tasks).map(|(r, t)| r.unwrap_or_else(|| work(state.get_or_insert_with(&init), t))).collect()
}

/// [`run`] with per-thread state, one task after another: WASI has no
/// threads.
#[cfg(target_family = "wasm")]
pub(crate) fn run_with<T, R, S>(
    tasks: &[T],
    threads: usize,
    init: impl Fn() -> S,
    work: impl Fn(&mut S, &T) -> R,
) -> Vec<R> {
    let _ = threads;
    let mut state = None;
    tasks.iter().map(|task| work(state.get_or_insert_with(&init), task)).collect()
}

/// The machine's cores, as the standard library sees them (1 if unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_tasks_order_on_any_number_of_threads() {
        let tasks: Vec<u64> = (0..1000).collect();
        for threads in [0, 1, 2, 7, 64] {
            let out = run(&tasks, threads, |t| t * 3);
            assert_eq!(out, tasks.iter().map(|t| t * 3).collect::<Vec<_>>(), "{threads} threads");
        }
        assert!(run(&[] as &[u64], 4, |t| *t).is_empty());
    }
}
