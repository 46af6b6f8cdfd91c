//! This defines [`Ancestors`]: the processes whose locks this process must
//! never wait for, found only when a lock is busy.
//!
//! Finding them costs a walk of /proc (a file per ancestor) that only a
//! busy lock needs, so a front end gives a way to find them, run at most
//! once per handle, on the first wait.

use std::sync::{Arc, OnceLock};

type Find = dyn Fn() -> Vec<u32> + Send + Sync;

/// The process ids of this process's ancestors (see
/// [`crate::Options::ancestors`]): given, or found on first use.
#[derive(Clone, Default)]
pub struct Ancestors {
    found: Arc<OnceLock<Vec<u32>>>,
    find: Option<Arc<Find>>,
}

impl Ancestors {
    /// Ancestors found by `find`, called once, when a lock first turns out
    /// to be busy.
    pub fn lazy(find: impl Fn() -> Vec<u32> + Send + Sync + 'static) -> Ancestors {
        Ancestors { found: Arc::default(), find: Some(Arc::new(find)) }
    }

    /// The ancestors, found now if they were not yet.
    pub fn get(&self) -> &[u32] {
        self.found.get_or_init(|| self.find.as_ref().map(|find| find()).unwrap_or_default())
    }
}

impl From<Vec<u32>> for Ancestors {
    fn from(list: Vec<u32>) -> Ancestors {
        Ancestors { found: Arc::new(OnceLock::from(list)), find: None }
    }
}

impl std::fmt::Debug for Ancestors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.found.get() {
            Some(list) => list.fmt(f),
            None => f.write_str("(not looked up yet)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_lazy_list_is_found_once_on_first_use_and_shared_by_clones() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let lazy = Ancestors::lazy(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            vec![7, 9]
        });
        let copy = lazy.clone();
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not looked up before it is needed");
        assert_eq!(copy.get(), [7, 9]);
        assert_eq!(lazy.get(), [7, 9]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(Ancestors::from(vec![3]).get(), [3]);
        assert!(Ancestors::default().get().is_empty());
    }
}
