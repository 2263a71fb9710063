//! The output pumps: two tasks per process (stdout and stderr) that drain its pipes into the
//! component's log.
//!
//! A pump never stops reading while the pipe is open, so a component never blocks on a full
//! pipe, even when its log cannot be written. It cuts the output into lines of at most the log's
//! `max_line` bytes (longer ones are cut into marked pieces), so memory stays bounded, and hands
//! them, each stream tagged, to the component's [`ComponentLog`], which stamps, rotates and
//! routes them (see [`crate::logs`]).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::logs::{ComponentLog, Stream};

/// How much is read from a pipe at once.
const READ_CHUNK: usize = 16 * 1024;

/// The two output pumps of one process.
#[derive(Debug)]
pub struct Drained(Vec<JoinHandle<()>>);

impl Drained {
    /// Waits until both pumps have written their last line, at most `limit` (a descendant that
    /// escaped the kill may hold a pipe open). Returns whether they finished.
    pub async fn wait(self, limit: Duration) -> bool {
        let all = async {
            for pump in self.0 {
                // A pump only fails if the runtime shuts down: it is done either way.
                let _ = pump.await;
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }
}

/// Starts the pumps of `component`'s new process on `runtime`, from the read ends of its
/// `stdout` and `stderr` pipes into `log`. Must run inside `runtime` (the pipes are registered
/// with its reactor). A pipe that cannot be registered is logged and left unread.
pub(super) fn start(
    runtime: &Handle,
    stdout: OwnedFd,
    stderr: OwnedFd,
    log: &Arc<ComponentLog>,
    component: &str,
) -> Drained {
    let mut pumps = Vec::with_capacity(2);
    for (reader, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
        match tokio::net::unix::pipe::Receiver::from_owned_fd(reader) {
            Ok(pipe) => pumps.push(runtime.spawn(pump(pipe, Arc::clone(log), stream))),
            Err(e) => warn!(component, stream = stream.as_str(), error = %e,
                "cannot read component output"),
        }
    }
    Drained(pumps)
}

/// Reads `pipe` until end of file, handing its lines (cut to the log's line bound) to `log`.
/// Reading never stops before the end, whatever happens to the log.
async fn pump<R: AsyncRead + Unpin>(mut pipe: R, log: Arc<ComponentLog>, stream: Stream) {
    let keep = log.keeps(stream);
    // Filled by `read_buf` without zeroing first: until output arrives, no page of it is
    // touched, so a quiet component costs no resident memory here (a thousand of them would
    // otherwise hold 32 MiB of zeroes).
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut lines = log.line_buffer();
    loop {
        buf.clear();
        let n = match pipe.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(component = log.component(), stream = stream.as_str(), error = %e,
                    "cannot read component output");
                break;
            }
        };
        if keep {
            let mut out = Vec::new();
            lines.push(&buf[..n], &mut out);
            write_lines(&log, stream, out).await;
        }
    }
    if keep {
        let mut out = Vec::new();
        lines.finish(&mut out);
        write_lines(&log, stream, out).await;
    }
}

async fn write_lines(log: &Arc<ComponentLog>, stream: Stream, lines: Vec<u8>) {
    if lines.is_empty() {
        return;
    }
    let log = Arc::clone(log);
    // A write may block on a slow disk (or rotate): do it on the blocking pool. It only fails
    // if the runtime shuts down, and then nothing is left to log to.
    let _ = tokio::task::spawn_blocking(move || log.write_lines(stream, &lines)).await;
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, PoisonError};

    use super::*;
    use crate::logs::{DEFAULT_MAX_LINE, MARKER_TAG};
    use crate::process::testing::{
        log_lines, request, request_with, unique_tree, wait_exit, wait_for, Reaper, LIMIT,
    };
    use crate::process::{signal_group, spawn};
    use crate::spec::LogSpec;

    #[tokio::test]
    async fn output_of_both_streams_is_logged_with_timestamps() {
        let tree = unique_tree("log");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("sub/dir/web.log");
        let script = "echo hello; echo err >&2; sleep 30";
        let spawned = spawn(request(&tree, script, Some(log.clone())))
            .await
            .expect("spawn");

        let has = |text: &[u8]| log_lines(&log).iter().any(|(_, line)| line == text);
        assert!(
            wait_for(|| has(b"hello") && has(b"err")).await,
            "log: {:?}",
            fs::read_to_string(&log)
        );
        for (stamp, _) in log_lines(&log) {
            assert!(stamp.ends_with('Z') && stamp.contains('.'), "{stamp}");
            humantime::parse_rfc3339(&stamp).expect("an RFC 3339 timestamp");
        }
        signal_group(spawned.pid, libc::SIGKILL).expect("kill");
    }

    #[tokio::test]
    async fn a_long_line_is_cut_without_losing_bytes() {
        let tree = unique_tree("long");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("long.log");
        let script = "head -c 204800 /dev/zero | tr '\\0' a; echo";
        let mut spawned = spawn(request(&tree, script, Some(log.clone())))
            .await
            .expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);

        // Each piece, without its cut marks.
        let pieces: Vec<Vec<u8>> = log_lines(&log)
            .into_iter()
            .map(|(_, l)| {
                let l = l.strip_prefix(b"[cut] ").unwrap_or(&l);
                l.strip_suffix(b" [cut]").unwrap_or(l).to_vec()
            })
            .collect();
        assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), 204_800);
        assert_eq!(pieces.len(), 4);
        assert!(pieces
            .iter()
            .all(|l| l.len() <= DEFAULT_MAX_LINE && l.iter().all(|&b| b == b'a')));
    }

    #[tokio::test]
    async fn output_is_drained_without_a_log_or_with_an_unwritable_one() {
        let tree = unique_tree("drain");
        let _reaper = Reaper(tree.clone());
        // Far more than a pipe holds: the process only exits if its output is read.
        let script = "head -c 2000000 /dev/zero; head -c 2000000 /dev/zero >&2";
        for log in [None, Some(PathBuf::from("/dev/null/cannot/web.log"))] {
            let mut spawned = spawn(request(&tree, script, log)).await.expect("spawn");
            assert!(wait_exit(&mut spawned).await.success());
        }
    }

    #[tokio::test]
    async fn rotation_loses_no_line_of_a_process() {
        let tree = unique_tree("rotate");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            max_bytes: 10 * 1024,
            backups: 100,
            ..LogSpec::file(dir.path().join("web.log"))
        };
        let log = ComponentLog::new(&spec, "web");
        let mut spawned = spawn(request_with(&tree, "seq 1 20000", log))
            .await
            .expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);

        let mut files: Vec<PathBuf> = (1..=100)
            .rev()
            .map(|n| dir.path().join(format!("web.log.{n}")))
            .filter(|p| p.exists())
            .collect();
        files.push(dir.path().join("web.log"));
        assert!(files.len() > 10, "{files:?}");
        let mut numbers = Vec::new();
        for file in &files {
            assert!(fs::metadata(file).expect("a log file").len() <= 10 * 1024);
            for (_, text) in log_lines(file) {
                numbers.push(String::from_utf8(text).expect("UTF-8"));
            }
        }
        let expected: Vec<String> = (1..=20_000).map(|n| n.to_string()).collect();
        assert_eq!(numbers, expected);
    }

    #[tokio::test]
    async fn standard_error_goes_to_its_own_file_with_the_markers() {
        let tree = unique_tree("stderr");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("web.log"), dir.path().join("web.err.log"));
        let spec = LogSpec {
            stderr: Some(err.clone()),
            ..LogSpec::file(out.clone())
        };
        let log = Arc::new(ComponentLog::new(&spec, "web"));
        log.marker("starting");
        let mut req = request(&tree, "echo hello; echo oops >&2", None);
        req.log = Arc::clone(&log);
        let mut spawned = spawn(req).await.expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);
        log.marker("exited with status 0");

        let texts = |path: &Path| -> Vec<String> {
            log_lines(path)
                .into_iter()
                .map(|(_, t)| String::from_utf8(t).expect("UTF-8"))
                .collect()
        };
        let marker = |text: &str| format!("{MARKER_TAG} {text}");
        assert_eq!(
            texts(&out),
            [
                marker("starting"),
                "hello".into(),
                marker("exited with status 0")
            ]
        );
        assert_eq!(
            texts(&err),
            [
                marker("starting"),
                "oops".into(),
                marker("exited with status 0")
            ]
        );
    }

    #[tokio::test]
    async fn to_supervisor_writes_prefixed_lines_and_no_file() {
        let tree = unique_tree("container");
        let _reaper = Reaper(tree.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LogSpec {
            to_supervisor: true,
            ..LogSpec::file(dir.path().join("web.log"))
        };
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&written);
        let log = ComponentLog::with_supervisor_writer(&spec, "web", move |bytes| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(bytes);
            Ok(())
        });
        let mut spawned = spawn(request_with(&tree, "echo hello; echo oops >&2", log))
            .await
            .expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        assert!(spawned.drained.wait(LIMIT).await);

        let bytes = written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let text = String::from_utf8(bytes).expect("UTF-8");
        let mut lines: Vec<&str> = text
            .lines()
            .map(|l| {
                let rest = l.strip_prefix("web | ").expect("prefixed");
                rest.split_once(' ').expect("stamped").1
            })
            .collect();
        lines.sort_unstable();
        assert_eq!(lines, ["hello", "oops"]);
        assert!(!dir.path().join("web.log").exists());
    }
}
