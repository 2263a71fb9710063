//! The Server Supervisor's own log when it runs detached (started by `start`).
//!
//! * `logs/supervisor.log`: what the daemon logs through `tracing`, one event per write,
//!   rotated by size like a component's log ([`MAX_BYTES`], [`BACKUPS`]; an event is never
//!   split between two files). [`SupervisorLog`] is the subscriber's writer.
//! * `logs/supervisor.stderr`: the daemon's standard error, set up by `start` and not rotated.
//!   Only what bypasses `tracing` ends there: a panic's message (after the panic hook has
//!   logged it), the error printed at exit, and the events that could not be written to
//!   `supervisor.log`.
//!
//! In the foreground (`imageserving supervisor`), the daemon logs to standard error instead,
//! for systemd or the container runtime to keep; nothing is rotated.

use std::cell::Cell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use imageserving_logfile::{RotatingFile, DEFAULT_BACKUPS, DEFAULT_MAX_BYTES};
use tracing_subscriber::fmt::MakeWriter;

use crate::home::Home;

/// `supervisor.log` is rotated when it would grow past this size (as a component's log by
/// default; the supervisor has no configuration key for it).
pub const MAX_BYTES: u64 = DEFAULT_MAX_BYTES;
/// Rotated `supervisor.log` files kept (`supervisor.log.1` newest).
pub const BACKUPS: u32 = DEFAULT_BACKUPS;

thread_local! {
    /// Set while this thread writes an event: a panic there must not log through the writer
    /// again (its lock is held).
    static WRITING: Cell<bool> = const { Cell::new(false) };
}

/// `logs/supervisor.log`, as the writer of the tracing subscriber: each event is buffered and
/// written whole when it ends.
#[derive(Debug)]
pub struct SupervisorLog {
    file: Mutex<RotatingFile>,
    /// Set while writes fail, so that the failure is reported once, not once per event.
    failing: AtomicBool,
}

impl SupervisorLog {
    /// Opens (creating) the supervisor log of `home`.
    pub fn open(home: &Home) -> io::Result<Self> {
        RotatingFile::open(home.supervisor_log(), MAX_BYTES, BACKUPS).map(Self::new)
    }

    fn new(file: RotatingFile) -> Self {
        SupervisorLog {
            file: Mutex::new(file),
            failing: AtomicBool::new(false),
        }
    }

    /// Appends one event; if the file cannot be written, the event goes to standard error.
    fn append(&self, event: &[u8]) {
        let written = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_record(event);
        match written {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                let mut stderr = io::stderr().lock();
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let _ = writeln!(
                        stderr,
                        "imageserving: {e}; logging to standard error until it works again"
                    );
                }
                let _ = stderr.write_all(event);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for SupervisorLog {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            log: self,
            event: Vec::new(),
        }
    }
}

/// Collects one event, written to the log when dropped.
#[derive(Debug)]
pub struct EventWriter<'a> {
    log: &'a SupervisorLog,
    event: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.event.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.event.is_empty() {
            WRITING.set(true);
            self.log.append(&self.event);
            WRITING.set(false);
        }
    }
}

/// Makes a panic show in `supervisor.log`, not only in `supervisor.stderr`: logs it through
/// `tracing`, then lets the default hook print it to standard error as usual.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !WRITING.get() {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let location = info.location().map(ToString::to_string).unwrap_or_default();
            let thread = std::thread::current();
            tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                %location,
                "panic: {message}"
            );
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn events_are_whole_lines_in_a_rotated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/supervisor.log");
        let log = SupervisorLog::new(RotatingFile::open(&path, 300, 2).expect("open"));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log)
            .with_ansi(false)
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20 {
                tracing::info!(component = "is", i, "event number {i}");
            }
        });

        let mut lines = Vec::new();
        for file in ["supervisor.log.2", "supervisor.log.1", "supervisor.log"] {
            let text = fs::read_to_string(dir.path().join("logs").join(file)).expect("a log");
            assert!(text.len() <= 300, "{file} too big");
            lines.extend(text.lines().map(String::from));
        }
        assert!(!dir.path().join("logs/supervisor.log.3").exists());
        assert!(lines.len() >= 4, "{lines:?}");
        assert!(
            lines.last().is_some_and(|l| l.contains("event number 19 ")),
            "{lines:?}"
        );
        for line in &lines {
            assert!(
                line.contains(" INFO ") && line.contains("component=\"is\""),
                "{line}"
            );
        }
    }
}
