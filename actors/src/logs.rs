//! A component's log: [`ComponentLog`], where a component's output and the supervisor's markers
//! about it go, and [`LineBuffer`], the bound on a line's length. The files are rotated by size
//! and never split a line, by [`imageserving_logfile::RotatingFile`] (the scheme is described
//! there).
//!
//! * **Line bound.** A [`LineBuffer`] holds at most `max_line` bytes of an unfinished line. A
//!   longer line is cut into pieces of at most `max_line` bytes (at a UTF-8 character boundary
//!   when the text is UTF-8); every piece but the last ends with ` [cut]` and every piece but
//!   the first starts with `[cut] `. No byte of output is lost.
//! * **Lines.** Every line written is prefixed with the time it was read, RFC 3339 UTC with
//!   milliseconds: `2025-01-02T03:04:05.678Z text`. Lines the supervisor itself writes about
//!   the component read `2025-01-02T03:04:05.678Z [imageserving] text`.
//! * **Targets.** A component's two streams go to one file, or to two (`stderr` set), each
//!   rotated as [`LogSpec`] says, or, with `to_supervisor`, to the supervisor's standard error
//!   as `<component> | <time> <text>`, never rotated (a container runtime collects that
//!   stream), or nowhere.
//! * **A full disk.** A file that cannot be written is warned about once; its output is
//!   dropped and counted ([`ComponentLog::dropped_bytes`]) until it can be written again.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use imageserving_logfile::RotatingFile;
use tracing::warn;

use crate::spec::LogSpec;

/// The default bound of a line: 64 KiB (as in [`LogSpec::discard`]).
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// Marks where an over-long line was cut: it ends the piece before the cut and starts the one
/// after it.
pub const CUT_MARK: &str = "[cut]";
/// Tags the lines the supervisor writes into a component's log.
pub const MARKER_TAG: &str = "[imageserving]";

/// Which output stream of a component a line comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The current time as written at the start of every log line: RFC 3339, UTC, milliseconds.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

// ---------------------------------------------------------------------------------------------
// The line bound.

/// Cuts a byte stream into lines of at most `max_line` bytes, holding at most one unfinished
/// line (`max_line` bytes).
#[derive(Debug)]
pub struct LineBuffer {
    max_line: usize,
    /// The unfinished line (or the rest of one after a cut).
    partial: Vec<u8>,
    /// The next piece continues a line that was cut.
    continued: bool,
}

impl LineBuffer {
    /// A buffer cutting lines longer than `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            max_line: max_line.max(1),
            partial: Vec::new(),
            continued: false,
        }
    }

    /// Feeds `chunk`, appending to `out` every line (or piece of a cut line) it completes, each
    /// ending with a newline, the pieces marked with [`CUT_MARK`].
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while !chunk.is_empty() {
            let room = self.max_line - self.partial.len();
            // One byte past the room: a newline right there ends a line of exactly `max_line`.
            let window = &chunk[..chunk.len().min(room + 1)];
            if let Some(end) = window.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&window[..end]);
                self.emit(self.partial.len(), false, out);
                chunk = &chunk[end + 1..];
            } else if chunk.len() > room {
                // More than `max_line` bytes without a newline: cut.
                self.partial.extend_from_slice(&chunk[..room]);
                chunk = &chunk[room..];
                let at = char_boundary(&self.partial);
                self.emit(at, true, out);
            } else {
                self.partial.extend_from_slice(chunk);
                break;
            }
        }
    }

    /// Appends the final unfinished line, if any (the stream ended without a newline).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            self.emit(self.partial.len(), false, out);
        }
        self.continued = false;
    }

    /// Appends the first `len` bytes of the partial line as one line, and keeps the rest.
    fn emit(&mut self, len: usize, cut: bool, out: &mut Vec<u8>) {
        if self.continued {
            out.extend_from_slice(CUT_MARK.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&self.partial[..len]);
        if cut {
            out.push(b' ');
            out.extend_from_slice(CUT_MARK.as_bytes());
        }
        out.push(b'\n');
        self.partial.drain(..len);
        self.continued = cut;
    }
}

/// Where to cut `piece` so as not to split a UTF-8 character at its end: before the start of
/// an incomplete final sequence, if there is one and something comes before it.
fn char_boundary(piece: &[u8]) -> usize {
    let n = piece.len();
    for back in 1..=n.min(3) {
        let b = piece[n - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needed = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if needed > back && n > back {
            n - back
        } else {
            n
        };
    }
    n
}

// ---------------------------------------------------------------------------------------------
// A component's log.

/// Writes bytes to the supervisor's standard error (or, in tests, elsewhere).
type SupervisorWriter = Arc<dyn Fn(&[u8]) -> io::Result<()> + Send + Sync>;

/// Where one component's output goes, shared by every attempt of the component (one per
/// component actor), so that rotation and the supervisor's markers apply to one set of files.
///
/// Writes are blocking (small appends to a local file, a rotation now and then).
pub struct ComponentLog {
    component: String,
    max_line: usize,
    target: Target,
}

enum Target {
    /// Nothing is kept.
    Discard,
    /// Log files; standard error shares standard output's file unless it has its own. A
    /// stream without a file is discarded.
    Files {
        stdout: Option<Arc<FileSink>>,
        stderr: Option<Arc<FileSink>>,
    },
    /// The supervisor's standard error, each line prefixed with `<component> | `.
    Supervisor(SupervisorWriter),
}

/// One log file of a component.
struct FileSink {
    file: Mutex<RotatingFile>,
    /// Set while writes fail, so that a full disk warns once, not once per line.
    failing: AtomicBool,
    /// Bytes of output dropped because the file could not be written, ever.
    dropped: AtomicU64,
    /// Bytes dropped in the current outage, reported once writes work again.
    dropped_now: AtomicU64,
}

impl FileSink {
    fn new(spec: &LogSpec, path: &Path) -> Arc<Self> {
        Arc::new(FileSink {
            file: Mutex::new(RotatingFile::new(path, spec.max_bytes, spec.backups)),
            failing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            dropped_now: AtomicU64::new(0),
        })
    }

    fn write(&self, component: &str, lines: &[u8]) {
        if !self.attempt(component, |file| file.write_lines(lines)) {
            // Counted whole: a failed write may have kept a part, never more.
            let n = lines.len() as u64;
            self.dropped.fetch_add(n, Ordering::Relaxed);
            self.dropped_now.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Runs `op` on the file, warning on the first failure and reporting, on recovery, how
    /// much was dropped meanwhile. Whether `op` succeeded.
    fn attempt(
        &self,
        component: &str,
        op: impl FnOnce(&mut RotatingFile) -> io::Result<()>,
    ) -> bool {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        match op(&mut file) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    let dropped = self.dropped_now.swap(0, Ordering::Relaxed);
                    warn!(
                        component,
                        path = %file.path().display(),
                        dropped_bytes = dropped,
                        "log file writable again; {dropped} bytes of output were dropped while it was not"
                    );
                }
                true
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(
                        component,
                        error = %e,
                        "cannot write the log; dropping output (and counting it) until it works again"
                    );
                }
                false
            }
        }
    }

    fn path(&self) -> PathBuf {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.path().to_owned()
    }
}

impl ComponentLog {
    /// The log of `component` as `spec` says: files (rotated), the supervisor's standard error
    /// (`to_supervisor`, which wins over files), or nothing. Files are opened (and created) at
    /// the first write; a file that cannot be written is warned about once, and the output
    /// dropped until it can.
    pub fn new(spec: &LogSpec, component: &str) -> Self {
        Self::with_supervisor_writer(spec, component, |bytes| {
            io::stderr().lock().write_all(bytes)
        })
    }

    /// Like [`ComponentLog::new`], with `to_supervisor` output going to `writer` instead of the
    /// process's standard error (for tests, or an embedding app with its own log).
    pub fn with_supervisor_writer(
        spec: &LogSpec,
        component: &str,
        writer: impl Fn(&[u8]) -> io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        let target = if spec.to_supervisor {
            Target::Supervisor(Arc::new(writer))
        } else {
            let stdout = spec.stdout.as_deref().map(|p| FileSink::new(spec, p));
            let stderr = match (&spec.stderr, &stdout) {
                (Some(path), Some(out)) if Some(path) == spec.stdout.as_ref() => {
                    Some(Arc::clone(out))
                }
                (Some(path), _) => Some(FileSink::new(spec, path)),
                (None, out) => out.clone(),
            };
            if stdout.is_none() && stderr.is_none() {
                Target::Discard
            } else {
                Target::Files { stdout, stderr }
            }
        };
        ComponentLog {
            component: component.to_owned(),
            max_line: spec.max_line.max(1),
            target,
        }
    }

    /// The component's name.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Bytes of output dropped so far because a log file could not be written (a full disk).
    pub fn dropped_bytes(&self) -> u64 {
        match &self.target {
            Target::Files { stdout, stderr } => {
                let out = stdout
                    .as_ref()
                    .map_or(0, |s| s.dropped.load(Ordering::Relaxed));
                let err = match (stdout, stderr) {
                    (Some(o), Some(e)) if Arc::ptr_eq(o, e) => 0,
                    (_, Some(e)) => e.dropped.load(Ordering::Relaxed),
                    _ => 0,
                };
                out + err
            }
            Target::Discard | Target::Supervisor(_) => 0,
        }
    }

    /// Whether output of `stream` is kept at all (if not, it is read and dropped).
    pub fn keeps(&self, stream: Stream) -> bool {
        match &self.target {
            Target::Discard => false,
            Target::Files { stdout, stderr } => match stream {
                Stream::Stdout => stdout.is_some(),
                Stream::Stderr => stderr.is_some(),
            },
            Target::Supervisor(_) => true,
        }
    }

    /// Opens (creates) the log files now, so that they exist from the start and an unusable
    /// path is warned about at once; writes open them anyway. Blocking.
    pub fn open_files(&self) {
        if let Target::Files { stdout, stderr } = &self.target {
            for sink in [stdout, stderr].into_iter().flatten() {
                let _ = sink.attempt(&self.component, RotatingFile::ensure_open);
            }
        }
    }

    /// A [`LineBuffer`] with this log's line bound, for one stream.
    pub fn line_buffer(&self) -> LineBuffer {
        LineBuffer::new(self.max_line)
    }

    /// Writes `lines` (complete lines from a [`LineBuffer`], each ending with a newline) from
    /// `stream`, each prefixed with the current time. Blocking.
    pub fn write_lines(&self, stream: Stream, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        let stamp = timestamp();
        match &self.target {
            Target::Discard => {}
            Target::Files { stdout, stderr } => {
                let sink = match stream {
                    Stream::Stdout => stdout,
                    Stream::Stderr => stderr,
                };
                if let Some(sink) = sink {
                    let mut out = Vec::with_capacity(lines.len() + 32);
                    stamp_lines(&mut out, None, &stamp, lines);
                    sink.write(&self.component, &out);
                }
            }
            Target::Supervisor(writer) => {
                let mut out = Vec::with_capacity(lines.len() + 48);
                stamp_lines(&mut out, Some(&self.component), &stamp, lines);
                // Standard error is the supervisor's last resort: if it fails, nothing is left
                // to report the failure to.
                let _ = writer(&out);
            }
        }
    }

    /// Writes `<time> [imageserving] <text>` into the component's log file (into both files
    /// when standard error has its own), so that starts, stops and restarts, and their reason,
    /// show among the component's own lines. Newlines in `text` become spaces.
    ///
    /// With `to_supervisor` nothing is written: the supervisor's own log, on the same standard
    /// error, already says it. Blocking, but only a small append.
    pub fn marker(&self, text: &str) {
        let Target::Files { stdout, stderr } = &self.target else {
            return;
        };
        let line = marker_line(&timestamp(), text);
        let component = &self.component;
        match (stdout, stderr) {
            (Some(out), Some(err)) if Arc::ptr_eq(out, err) => out.write(component, &line),
            (out, err) => {
                for sink in [out, err].into_iter().flatten() {
                    sink.write(component, &line);
                }
            }
        }
    }
}

impl fmt::Debug for ComponentLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ComponentLog");
        d.field("component", &self.component)
            .field("max_line", &self.max_line);
        match &self.target {
            Target::Discard => d.field("target", &"discard"),
            Target::Files { stdout, stderr } => d
                .field("stdout", &stdout.as_ref().map(|s| s.path()))
                .field("stderr", &stderr.as_ref().map(|s| s.path())),
            Target::Supervisor(_) => d.field("target", &"supervisor stderr"),
        };
        d.finish()
    }
}

/// Appends each line of `lines` to `out` as `[<component> | ]<stamp> <line>\n`.
fn stamp_lines(out: &mut Vec<u8>, component: Option<&str>, stamp: &str, lines: &[u8]) {
    for line in lines.split_inclusive(|&b| b == b'\n') {
        if let Some(component) = component {
            out.extend_from_slice(component.as_bytes());
            out.extend_from_slice(b" | ");
        }
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
}

/// `<stamp> [imageserving] <text>\n`, on one line.
fn marker_line(stamp: &str, text: &str) -> Vec<u8> {
    let text = text.replace(['\r', '\n'], " ");
    format!("{stamp} {MARKER_TAG} {text}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    use imageserving_logfile::{DEFAULT_BACKUPS, DEFAULT_MAX_BYTES};

    #[test]
    fn the_defaults_are_the_spec_defaults() {
        let spec = LogSpec::discard();
        assert_eq!(spec.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(spec.backups, DEFAULT_BACKUPS);
        assert_eq!(spec.max_line, DEFAULT_MAX_LINE);
    }

    fn cut(max_line: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = LineBuffer::new(max_line);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, &mut out);
        }
        lines.finish(&mut out);
        String::from_utf8(out)
            .expect("UTF-8")
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn line_buffer_splits_lines_across_chunks() {
        assert_eq!(cut(100, &[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        assert!(cut(100, &[b""]).is_empty());
    }

    #[test]
    fn line_buffer_cuts_long_lines_with_a_mark_and_keeps_every_byte() {
        // Exactly the bound: not cut, even when the newline comes in the next chunk.
        assert_eq!(cut(4, &[b"abcd", b"\nef\n"]), ["abcd", "ef"]);
        assert_eq!(
            cut(4, &[b"abcdefghij\nk"]),
            ["abcd [cut]", "[cut] efgh [cut]", "[cut] ij", "k"]
        );
        // The same, fed a byte at a time.
        let bytes = b"abcdefghij\nk";
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(
            cut(4, &chunks),
            ["abcd [cut]", "[cut] efgh [cut]", "[cut] ij", "k"]
        );
        // A cut right before the end of the stream.
        assert_eq!(cut(4, &[b"abcde"]), ["abcd [cut]", "[cut] e"]);

        let long = "x".repeat(DEFAULT_MAX_LINE * 3 + 10) + "\n";
        let lines = cut(DEFAULT_MAX_LINE, &[long.as_bytes()]);
        assert_eq!(lines.len(), 4);
        let kept: String = lines
            .iter()
            .map(|l| l.trim_start_matches("[cut] ").trim_end_matches(" [cut]"))
            .collect();
        assert_eq!(kept.len(), DEFAULT_MAX_LINE * 3 + 10);
    }

    #[test]
    fn line_buffer_does_not_cut_a_character() {
        // "é" is two bytes: a cut after 4 bytes would split the second one.
        assert_eq!(cut(4, &["abcéé\n".as_bytes()]), ["abc [cut]", "[cut] éé"]);
        assert_eq!(cut(4, &["€€\n".as_bytes()]), ["€ [cut]", "[cut] €"]);
        assert_eq!(char_boundary(&[0xF0, 0x9F, 0x98]), 3, "nothing before it");
    }

    fn spec_in(dir: &Path) -> LogSpec {
        LogSpec::file(dir.join("web.log"))
    }

    fn read_lines(path: &Path) -> Vec<(String, String)> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let (stamp, text) = line.split_once(' ').expect("a stamped line");
                humantime::parse_rfc3339(stamp).expect("an RFC 3339 timestamp");
                assert!(stamp.ends_with('Z') && stamp.contains('.'), "{stamp}");
                (stamp.to_owned(), text.to_owned())
            })
            .collect()
    }

    fn texts(path: &Path) -> Vec<String> {
        read_lines(path).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn both_streams_share_one_file_by_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = ComponentLog::new(&spec_in(dir.path()), "web");
        assert!(log.keeps(Stream::Stdout) && log.keeps(Stream::Stderr));
        log.write_lines(Stream::Stdout, b"out\n");
        log.write_lines(Stream::Stderr, b"err\nerr 2\n");
        log.marker("started (pid 42)");
        assert_eq!(
            texts(&dir.path().join("web.log")),
            ["out", "err", "err 2", "[imageserving] started (pid 42)"]
        );
    }

    #[test]
    fn standard_error_can_have_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            stderr: Some(dir.path().join("web.err.log")),
            ..spec_in(dir.path())
        };
        let log = ComponentLog::new(&spec, "web");
        log.write_lines(Stream::Stdout, b"out\n");
        log.write_lines(Stream::Stderr, b"err\n");
        log.marker("stopping: operator\nrequest");
        let marker = "[imageserving] stopping: operator request";
        assert_eq!(texts(&dir.path().join("web.log")), ["out", marker]);
        assert_eq!(texts(&dir.path().join("web.err.log")), ["err", marker]);

        // Only standard error kept.
        let spec = LogSpec {
            stdout: None,
            stderr: Some(dir.path().join("only.err.log")),
            ..LogSpec::discard()
        };
        let log = ComponentLog::new(&spec, "web");
        assert!(!log.keeps(Stream::Stdout) && log.keeps(Stream::Stderr));
        log.write_lines(Stream::Stdout, b"out\n");
        log.write_lines(Stream::Stderr, b"err\n");
        log.marker("started");
        assert_eq!(
            texts(&dir.path().join("only.err.log")),
            ["err", "[imageserving] started"]
        );
    }

    #[test]
    fn open_files_creates_them_before_any_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            stderr: Some(dir.path().join("err/web.log")),
            ..LogSpec::file(dir.path().join("out/web.log"))
        };
        ComponentLog::new(&spec, "web").open_files();
        assert!(dir.path().join("out/web.log").exists());
        assert!(dir.path().join("err/web.log").exists());
    }

    #[test]
    fn the_same_file_for_both_streams_is_shared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            stderr: Some(dir.path().join("web.log")),
            ..spec_in(dir.path())
        };
        let log = ComponentLog::new(&spec, "web");
        log.marker("once");
        assert_eq!(texts(&dir.path().join("web.log")), ["[imageserving] once"]);
    }

    #[test]
    fn component_files_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            max_bytes: 100,
            backups: 2,
            ..spec_in(dir.path())
        };
        let log = ComponentLog::new(&spec, "web");
        for i in 0..20 {
            log.write_lines(Stream::Stdout, format!("line {i}\n").as_bytes());
        }
        let path = dir.path().join("web.log");
        let mut all = texts(&dir.path().join("web.log.2"));
        all.extend(texts(&dir.path().join("web.log.1")));
        all.extend(texts(&path));
        let expected: Vec<String> = (20 - all.len()..20).map(|i| format!("line {i}")).collect();
        assert_eq!(all, expected);
        assert!(!dir.path().join("web.log.3").exists());
    }

    #[test]
    fn to_supervisor_prefixes_the_component_and_writes_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            to_supervisor: true,
            ..spec_in(dir.path())
        };
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&written);
        let log = ComponentLog::with_supervisor_writer(&spec, "web", move |bytes| {
            sink.lock().expect("lock").extend_from_slice(bytes);
            Ok(())
        });
        assert!(log.keeps(Stream::Stdout) && log.keeps(Stream::Stderr));
        log.write_lines(Stream::Stdout, b"out\n");
        log.write_lines(Stream::Stderr, b"err\n");
        log.marker("started");
        let text = String::from_utf8(written.lock().expect("lock").clone()).expect("UTF-8");
        let lines: Vec<(&str, &str)> = text
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("web | ").expect("prefixed");
                rest.split_once(' ').expect("stamped")
            })
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!((lines[0].1, lines[1].1), ("out", "err"));
        humantime::parse_rfc3339(lines[0].0).expect("an RFC 3339 timestamp");
        assert!(!dir.path().join("web.log").exists());
    }

    #[test]
    fn discard_keeps_nothing() {
        let log = ComponentLog::new(&LogSpec::discard(), "web");
        assert!(!log.keeps(Stream::Stdout) && !log.keeps(Stream::Stderr));
        log.write_lines(Stream::Stdout, b"out\n");
        log.marker("started");
        assert!(format!("{log:?}").contains("discard"));
    }

    #[test]
    fn lines_are_stamped_and_markers_are_one_line() {
        let mut out = Vec::new();
        stamp_lines(&mut out, Some("is"), "T", b"a\nb");
        assert_eq!(out, b"is | T a\nis | T b\n");
        assert_eq!(marker_line("T", "a\r\nb"), b"T [imageserving] a  b\n");
    }
}
