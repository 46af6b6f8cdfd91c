//! The reports any command may print: a wait for a lock, and the error
//! that ends it.

use safecache::display::duration;
use safecache::{LockMode, LockName, WaitEvent, describe_holders};
use serde::Serialize;

use super::{HolderReport, Human, Line};

/// A wait for a lock, announced as it starts (the UI draws the spinner).
#[derive(Debug, Serialize)]
pub(crate) struct Waiting {
    lock: LockName,
    mode: LockMode,
    holders: Vec<HolderReport>,
    /// Null: forever.
    timeout_secs: Option<f64>,
    /// The wait for people: what, who holds it, how long, how to stop.
    #[serde(skip)]
    message: String,
}

impl From<&WaitEvent<'_>> for Waiting {
    fn from(ev: &WaitEvent<'_>) -> Waiting {
        let limit = match ev.timeout {
            None => "waiting with no time limit".to_owned(),
            // The budget left, rounded up to whole seconds: 300 s reads 5m.
            Some(d) => {
                format!("waiting up to {}", duration(std::time::Duration::from_secs(d.as_secs_f64().ceil() as u64)))
            }
        };
        let holders = describe_holders(ev.holders);
        let timeout = crate::hint::TIMEOUT;
        let message = match (ev.lock, ev.mode) {
            (LockName::Lease, LockMode::Exclusive) => format!(
                "the cache is in use; waiting for other processes to finish (the cache lease is held by {holders}); \
                 {limit}; {timeout}"
            ),
            _ => format!("waiting for the {} lock on {}, held by {holders}; {limit}; {timeout}", ev.mode, ev.lock),
        };
        Waiting {
            lock: ev.lock.clone(),
            mode: ev.mode,
            holders: ev.holders.iter().map(HolderReport::from).collect(),
            timeout_secs: ev.timeout.map(|t| t.as_secs_f64()),
            message,
        }
    }
}

impl Human for Waiting {
    fn human(&self) -> Vec<Line> {
        vec![Line::Blocking(self.message.clone())]
    }
}

/// The error that ends a command, after its command line was parsed.
#[derive(Debug, Serialize)]
pub(crate) struct Error {
    /// One line, naming the fix; commands in it as the user invoked them.
    pub(crate) message: String,
    pub(crate) exit_code: u8,
}

impl Human for Error {
    fn human(&self) -> Vec<Line> {
        vec![Line::Error(self.message.clone())]
    }
}
