//! The access log of `ps`: one line per request in `<home>/logs/access.log`, rotated like the
//! other logs (a [`RotatingFile`] of 50 MiB with 10 backups, `access.log.1` … `access.log.10`).
//!
//! # The line
//!
//! ```text
//! 2025-01-02T03:04:05.678Z 127.0.0.1 GET /is/image/sample/photo?wid=300 200 10427 12.345 miss
//! ```
//!
//! Eight fields separated by single spaces, none of which can contain a space:
//!
//! | field | value |
//! |---|---|
//! | time | when the request arrived, RFC 3339 UTC with milliseconds |
//! | client | the peer's IP address (the TCP peer: a proxy in front of `ps` shows as itself) |
//! | method | `GET`, `HEAD`, … |
//! | target | the path and query as the client sent them; bytes outside `!`…`~` (space, controls, non-ASCII) are written `%XX` |
//! | status | the status sent, `304` included |
//! | bytes | the body bytes sent: `0` for `HEAD` and `304` |
//! | duration | milliseconds from the request head to the answer, three decimals |
//! | cache | [`CacheUse`]: `hit`, `revalidated`, `miss`, `bypass`, or `-` for requests the cache has no say in (errors in the URL, the server properties, `/healthz`, other paths) |
//!
//! Requests hyper refuses before `ps` sees them (a malformed head: 400, 414, 431) are not logged.
//!
//! # Off the hot path
//!
//! The request only formats its line and hands it to a channel; a dedicated thread writes what
//! has queued, in batches. If the disk cannot keep up and [`QUEUE`] lines are waiting, further
//! lines are dropped and counted, and the count is reported in `ps`'s log rather than slowing
//! every answer down. [`AccessLog::flush`] waits until every line given so far is written (at
//! shutdown and in tests).

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use imageserving_logfile::{RotatingFile, DEFAULT_BACKUPS, DEFAULT_MAX_BYTES};
use tracing::warn;

/// The lines that may wait for the writer before new ones are dropped.
pub const QUEUE: usize = 16 * 1024;
/// The file, below the home.
pub const FILE: &str = "logs/access.log";

/// How the response cache took part in an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Served from the cache without looking at the source (checked within the interval).
    Hit,
    /// Served from the cache after finding its source unchanged (the check interval had passed,
    /// or `cache=validate`).
    Revalidated,
    /// Asked from `is` (nothing cached, an expired or outdated entry, `cache=update`, or no
    /// cache configured); stored if it can be.
    Miss,
    /// `cache=off` (or `…,off`): the cache was neither read nor written.
    Bypass,
    /// The cache had no say: not an image request, or one refused before it.
    None,
}

impl CacheUse {
    /// The word in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Revalidated => "revalidated",
            CacheUse::Miss => "miss",
            CacheUse::Bypass => "bypass",
            CacheUse::None => "-",
        }
    }
}

/// One request, as logged.
#[derive(Debug)]
pub struct Entry<'a> {
    /// When it arrived.
    pub at: SystemTime,
    /// The client.
    pub client: IpAddr,
    /// The method.
    pub method: &'a str,
    /// The path and query, as sent.
    pub target: &'a str,
    /// The status sent.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// How long it took.
    pub duration: Duration,
    /// How the cache took part.
    pub cache: CacheUse,
}

impl Entry<'_> {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {}.{:03} {}\n",
            humantime::format_rfc3339_millis(self.at),
            self.client,
            escape(self.method),
            escape(self.target),
            self.status,
            self.bytes,
            self.duration.as_millis(),
            self.duration.subsec_micros() % 1000,
            self.cache.as_str(),
        )
    }
}

/// `text` with every byte outside `!`…`~` written `%XX`, so that a field never holds a space
/// or a line break.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_graphic() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What the writer thread receives.
enum Message {
    /// A line to append.
    Line(String),
    /// Acknowledge once everything before is written.
    Flush(mpsc::Sender<()>),
}

/// The access log: a channel to its writer thread.
#[derive(Debug)]
pub struct AccessLog {
    sender: SyncSender<Message>,
    /// Lines dropped because the queue was full, not yet reported.
    dropped: AtomicU64,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Line(line) => write!(f, "Line({line:?})"),
            Message::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AccessLog {
    /// The access log of `home` (`<home>/logs/access.log`); the file and its directory are
    /// created by the first write. Starts the writer thread, which ends when this is dropped.
    pub fn open(home: &Path) -> std::io::Result<AccessLog> {
        let file = RotatingFile::new(home.join(FILE), DEFAULT_MAX_BYTES, DEFAULT_BACKUPS);
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("ps-access-log".into())
            .spawn(move || write_lines(file, receiver))?;
        Ok(AccessLog {
            sender,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues `entry`'s line; never blocks.
    pub fn record(&self, entry: &Entry<'_>) {
        match self.sender.try_send(Message::Line(entry.line())) {
            Ok(()) => {
                let dropped = self.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    warn!(
                        component = "ps",
                        dropped, "access log: lines dropped, the disk did not keep up"
                    );
                }
            }
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits (blocking, at most `within`) until every line queued so far is written.
    pub fn flush(&self, within: Duration) -> bool {
        let (done, wait) = mpsc::channel();
        if self.sender.send(Message::Flush(done)).is_err() {
            return false;
        }
        wait.recv_timeout(within).is_ok()
    }
}

/// The writer thread: appends what has queued, in batches, until every sender is gone.
fn write_lines(mut file: RotatingFile, receiver: Receiver<Message>) {
    let mut failing = false;
    while let Ok(first) = receiver.recv() {
        let mut batch = String::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => batch.push_str(&line),
                Message::Flush(ack) => acks.push(ack),
            }
            next = if batch.len() < 256 * 1024 {
                receiver.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() {
            match file.write_lines(batch.as_bytes()) {
                Ok(()) => failing = false,
                Err(error) => {
                    // Said once per outage, not once per line.
                    if !failing {
                        warn!(component = "ps", path = %file.path().display(), %error, "access log: cannot write");
                    }
                    failing = true;
                }
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_eight_fields_and_no_stray_spaces() {
        let entry = Entry {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            client: "127.0.0.1".parse().unwrap(),
            method: "GET",
            target: "/is/image/a b?x=\n1&é",
            status: 200,
            bytes: 42,
            duration: Duration::from_micros(12_345),
            cache: CacheUse::Revalidated,
        };
        assert_eq!(
            entry.line(),
            "2023-11-14T22:13:20.123Z 127.0.0.1 GET /is/image/a%20b?x=%0A1&%C3%A9 200 42 12.345 revalidated\n"
        );
        assert_eq!(entry.line().split(' ').count(), 8);
    }

    #[test]
    fn lines_reach_the_file_in_order() {
        let home = tempfile::tempdir().unwrap();
        let log = AccessLog::open(home.path()).unwrap();
        for (n, cache) in [CacheUse::Miss, CacheUse::Hit, CacheUse::None]
            .into_iter()
            .enumerate()
        {
            log.record(&Entry {
                at: SystemTime::now(),
                client: "::1".parse().unwrap(),
                method: "HEAD",
                target: &format!("/is/image/{n}"),
                status: 200,
                bytes: 0,
                duration: Duration::ZERO,
                cache,
            });
        }
        assert!(log.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(home.path().join(FILE)).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" ::1 HEAD /is/image/0 200 0 0.000 miss"));
        assert!(lines[1].ends_with(" hit"));
        assert!(lines[2].ends_with(" -"));
    }
}
