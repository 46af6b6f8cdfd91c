//! This defines [`Ui`]: everything the CLI tells its user. Status, waits and
//! errors go to stderr as text; with `--message-format json`, stdout carries
//! one JSON object per line, each with a `reason` field.
//!
//! Invariant: a wait is announced at once, naming the lock, its holders and
//! how to stop waiting; a spinner is only ever drawn on a terminal, and is
//! cleared before the process exits, by a signal too: while one is shown,
//! SIGINT, SIGTERM and SIGHUP clear it first (see [`watch_signals`]).

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use safecache::display::duration;
use safecache::{LockName, WaitEvent};

use crate::hint::in_invoked_form;
use crate::report::{self, Line, Report};

/// The CLI's output channels.
#[derive(Debug)]
pub(crate) struct Ui {
    pub(crate) json: bool,
    quiet: bool,
    color: bool,
    spinners: bool,
    /// Whether the command waited for a lock (counted once, in `stats`).
    waited: AtomicBool,
    /// The cache the command opened: a waiter for a fill shows the fill's
    /// latest output line from its log there.
    pub(crate) cache: std::sync::OnceLock<safecache::Cache>,
}

/// The spinner of the wait under way, if any: one per process, reachable
/// from the signal watcher.
static SPINNER: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Set while `run` handles SIGINT, SIGTERM and SIGHUP itself (it forwards
/// them to CMD, or cancels a fill with them): the signal watcher then only
/// clears the spinner and leaves the rest to `run`.
pub(crate) static SIGNALS_HANDLED: AtomicBool = AtomicBool::new(false);

fn spinner() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    SPINNER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts, once, a thread that clears the spinner when SIGINT, SIGTERM or
/// SIGHUP arrives, then lets the signal do what it would have done (end the
/// process, as the default action), unless `run` handles it
/// ([`SIGNALS_HANDLED`]). Without it, Ctrl-C during a wait left the
/// spinner's line on the terminal. Registered only once a spinner is drawn,
/// so commands that never wait on a terminal keep the default actions.
fn watch_signals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if let Some(bar) = spinner().take() {
                    // Stop the ticker first, so that no frame comes after
                    // the clear; then clear the line ourselves as well, in
                    // case indicatif's draw is rate-limited away.
                    bar.disable_steady_tick();
                    bar.finish_and_clear();
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(b"\r\x1b[2K");
                    let _ = err.flush();
                }
                if !SIGNALS_HANDLED.load(Ordering::SeqCst) {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
            }
        });
    });
}

impl Ui {
    pub(crate) fn new(json: bool, quiet: bool, color: bool) -> Ui {
        let spinners = !quiet && std::io::stderr().is_terminal();
        Ui { json, quiet, color, spinners, waited: AtomicBool::new(false), cache: std::sync::OnceLock::new() }
    }

    /// Whether progress may be drawn: stderr is a terminal and --quiet
    /// was not given.
    pub(crate) fn interactive(&self) -> bool {
        self.spinners
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    /// A cargo-style status line on stderr: a right-aligned verb, then text.
    pub(crate) fn status(&self, verb: &str, msg: impl Display) {
        if self.quiet {
            return;
        }
        self.stderr_line(&format!("{} {msg}", self.paint("1;32", &format!("{verb:>12}"))));
    }

    /// A warning on stderr, shown even with `-q`.
    pub(crate) fn warn(&self, msg: impl Display) {
        self.stderr_line(&format!("{}: {msg}", self.paint("1;33", "warning")));
    }

    /// The one-line error report: text on stderr, and a JSON object on
    /// stdout in JSON mode.
    pub(crate) fn error(&self, msg: &str, code: u8) {
        let _ = self.report(report::Error { message: in_invoked_form(msg).into_owned(), exit_code: code });
    }

    fn stderr_line(&self, line: &str) {
        let spinner = spinner();
        match spinner.as_ref() {
            Some(bar) => bar.suspend(|| write_stderr(line)),
            None => write_stderr(line),
        }
    }

    /// A line of human output on stdout (nothing in JSON mode).
    pub(crate) fn out(&self, line: impl Display) {
        if !self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// A path on stdout as one line of its raw bytes (nothing in JSON mode):
    /// a path that is not UTF-8 must still reach `$(cargo safecache path K)`
    /// intact, not with replacement characters. Unlike status lines, the
    /// path is the command's result, so failing to write it is an error.
    pub(crate) fn out_path(&self, path: &Path, newline_first: bool) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if newline_first {
            out.write_all(b"\n")?;
        }
        out.write_all(path.as_os_str().as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Reports `report`: its JSON object on stdout in JSON mode, else its
    /// lines for people on stdout; its status lines and warnings go to
    /// stderr either way. Fails only if a path it prints as the command's
    /// result cannot be written.
    pub(crate) fn report(&self, report: impl Into<Report>) -> anyhow::Result<()> {
        let report = report.into();
        if self.json {
            let mut out = std::io::stdout().lock();
            if let Ok(line) = serde_json::to_string(&report) {
                let _ = writeln!(out, "{line}");
            }
            let _ = out.flush();
        }
        for line in report.human() {
            match line {
                Line::Out(text) => self.out(text),
                Line::Path(path, what) => self
                    .out_path(&path, false)
                    .map_err(|e| anyhow::Error::new(e).context(format!("cannot write {what} to stdout")))?,
                Line::Status(verb, text) => self.status(verb, text),
                Line::Warn(text) => self.warn(text),
                Line::Blocking(text) => {
                    self.stderr_line(&format!("{} {text}", self.paint("1;36", &format!("{:>12}", "Blocking"))))
                }
                Line::Error(text) => self.stderr_line(&format!("{}: {text}", self.paint("1;31", "error"))),
            }
        }
        Ok(())
    }

    /// Announces a blocked wait, and starts a spinner on a terminal.
    pub(crate) fn waiting(&self, ev: &WaitEvent<'_>) {
        self.waited.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.report(report::Waiting::from(ev));
        if self.spinners {
            // The watcher is in place before the first frame is drawn: a
            // signal that comes right after it still clears the line.
            watch_signals();
            // Hidden until the watcher can reach it: setting the message
            // already draws a frame.
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            // Waiting for a fill: beside the time waited, the fill's latest
            // output line, read from its log at each frame.
            let filling = match ev.lock {
                LockName::Entry(k) => Some(k),
                LockName::Queue(inner) => match inner.as_ref() {
                    LockName::Entry(k) => Some(k),
                    _ => None,
                },
                _ => None,
            };
            let tail = filling.and_then(|k| Some((self.cache.get()?.clone(), safecache::Key::new(k).ok()?)));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({waited}){tail}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner())
                    .with_key("waited", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&waited(state.elapsed()));
                    })
                    .with_key("tail", move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        if let Some(line) = tail.as_ref().and_then(|(cache, key)| cache.fill_log_tail(key)) {
                            let _ = write!(w, " | {line}");
                        }
                    }),
            );
            bar.set_message(format!("waiting for the {} lock on {}", ev.mode, ev.lock));
            // A clone shares the bar's state.
            if let Some(old) = spinner().replace(bar.clone()) {
                old.finish_and_clear();
            }
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    /// Whether the command has waited for a lock.
    pub(crate) fn waited(&self) -> bool {
        self.waited.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Removes the spinner, if any: the wait is over.
    pub(crate) fn done_waiting(&self) {
        if let Some(bar) = spinner().take() {
            bar.finish_and_clear();
        }
    }
}

/// Writes one line to stderr, ignoring failure: `eprintln!` panics when
/// stderr is full (`2>/dev/full`) or a closed pipe, and a message nobody can
/// read must not turn a working command into a crash.
pub(crate) fn write_stderr(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", in_invoked_form(line));
    let _ = err.flush();
}

/// How long a wait has lasted, in whole seconds, in the one duration
/// format (indicatif's own `{elapsed}` reads `5m` for `4m 59s`).
fn waited(elapsed: Duration) -> String {
    duration(Duration::from_secs(elapsed.as_secs()))
}

/// Adds "`before` `dir` `after`" as context to a core error, unless the
/// error already names `dir`: "cannot use `/c`: `/c` is not a directory"
/// says the same thing twice.
pub(crate) fn naming_dir<T>(
    result: Result<T, safecache::Error>,
    before: &str,
    dir: &Path,
    after: &str,
) -> anyhow::Result<T> {
    result.map_err(|e| {
        let shown = dir.display().to_string();
        if e.to_string().contains(&shown) {
            anyhow::Error::new(e)
        } else {
            let after = if after.is_empty() { String::new() } else { format!(" {after}") };
            anyhow::Error::new(e).context(format!("{before} `{shown}`{after}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// The spinner shows its wait as every message shows a duration.
    #[test]
    fn the_spinner_uses_the_one_duration_format() {
        assert_eq!(super::waited(Duration::from_millis(299_900)), "4m 59s");
        assert_eq!(super::waited(Duration::from_millis(1_999)), "1s");
        assert_eq!(super::waited(Duration::from_secs(90)), safecache::display::duration(Duration::from_secs(90)));
    }
}
