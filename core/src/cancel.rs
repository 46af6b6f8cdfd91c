//! This defines [`Cancel`]: a handle a front end sets (from a signal
//! handler, another thread) to stop the library's long loops, hashing
//! above all, at their next check.
//!
//! Invariant: the core never reads ambient state to learn it was
//! cancelled; it only looks at the handle in its [`Options`](crate::Options),
//! and a cancelled operation publishes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cancellation flag shared between a caller and the library. Cloning
/// shares the flag. The default handle is never cancelled unless someone
/// sets it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A fresh handle, not cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels: every operation holding this handle stops at its next
    /// check and fails with [`Error::Cancelled`](crate::Error::Cancelled).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Cancel::cancel`] was called (or the flag set).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The flag itself, for a signal handler to set (e.g.
    /// `signal_hook::flag::register`): storing `true` cancels.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// `Err` (kind [`std::io::ErrorKind::Interrupted`]) once cancelled, for
    /// loops that speak io errors.
    pub(crate) fn check(&self) -> std::io::Result<()> {
        if self.is_cancelled() {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"));
        }
        Ok(())
    }
}
