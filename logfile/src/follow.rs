//! Following a log across rotations, as `tail -F` does, without missing or repeating a line.
//!
//! A [`Follower`] is polled by its caller (every 100 ms, say). It reads the live file through
//! the descriptor it opened, so nothing written to that file is missed, whatever happens to its
//! name. When the path names another file (device and inode), the log was rotated: the old file
//! is read to its end, then the rotated files newer than it (found by identity among
//! `<file>.1`, `<file>.2`, …, for several rotations between two polls), then the new file from
//! its first byte. An old file not among them was moved away (logrotate's `dateext`) or
//! deleted, or the log was rotated more often than its rotated files keep: then only the
//! rotated files written after it are read, and in the last case an [`Event::Gap`] marks where
//! the deleted files' lines are missing. A file shorter than what was read of it was truncated
//! (`copytruncate`): it is read again from its start. A log that does not exist yet is waited
//! for and read from its start. Lines are emitted whole, once each, in the order they were
//! written.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::log::{identity, open_if_exists, read_error, FileId, CHUNK};
use crate::tail::tail;
use crate::Log;

/// The longest unfinished line held back; longer, it is emitted as it is (imageserving's
/// component logs cut their lines at 64 KiB, so only a foreign file gets there).
const MAX_PARTIAL: usize = 1024 * 1024;

/// What a [`Follower`] emits, in the order the log was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A line, without its newline (and without the log's prefix, if it has one).
    Line(&'a [u8]),
    /// Lines are missing here: since the last poll the log was rotated more often than its
    /// rotated files keep, and the files deleted in between could not be read.
    Gap,
}

/// A file being read, and how far.
#[derive(Debug)]
struct Reading {
    file: File,
    /// Where it was read from, for messages.
    path: PathBuf,
    id: FileId,
    /// Bytes read from it.
    offset: u64,
}

impl Reading {
    /// `file`, opened at `path`, from its start.
    fn new(file: File, path: &Path) -> io::Result<Self> {
        let id = identity(&file.metadata().map_err(|e| read_error(path, e))?);
        Ok(Reading {
            file,
            path: path.to_path_buf(),
            id,
            offset: 0,
        })
    }

    /// Reads the file to its end, emitting every finished line; an unfinished one stays in
    /// `partial` for the next read.
    fn read_new(
        &mut self,
        partial: &mut Vec<u8>,
        log: &Log,
        emit: &mut dyn FnMut(Event<'_>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(&self.path, e)),
            };
            self.offset += n as u64;
            partial.extend_from_slice(&buf[..n]);
            if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
                for line in partial[..end].split(|&b| b == b'\n') {
                    if let Some(text) = log.keep(line) {
                        emit(Event::Line(text))?;
                    }
                }
                partial.drain(..=end);
            }
            if partial.len() > MAX_PARTIAL {
                flush_partial(partial, log, emit)?;
            }
        }
    }
}

/// Follows one log across rotations; see the module's documentation.
#[derive(Debug)]
pub struct Follower<'a> {
    log: &'a Log,
    /// `None` until the file exists.
    reading: Option<Reading>,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// While waiting: the rotated files that were there before, which hold nothing new.
    known: Vec<FileId>,
}

impl<'a> Follower<'a> {
    /// Starts following `log`: its last `n` whole lines (going back into its rotated files when
    /// the live one holds fewer; oldest first, without their newlines), and a follower whose
    /// polls emit every line written after them. An unfinished last line is not among them: the
    /// follower emits it once it is finished.
    ///
    /// When the live file does not exist yet, there are no lines (`None`) and the follower
    /// waits for the file, to read it from its start (and the files it was rotated into
    /// meanwhile, if it was rotated before a poll saw it).
    pub fn start(log: &'a Log, n: usize) -> io::Result<(Option<Vec<Vec<u8>>>, Self)> {
        match tail(log, n, false)? {
            Some(tail) => Ok((Some(tail.lines), Self::at(log, tail.file, tail.end)?)),
            None => Ok((None, Self::waiting(log))),
        }
    }

    /// Follows `file`, the live file of `log`, from `offset` on.
    fn at(log: &'a Log, file: File, offset: u64) -> io::Result<Self> {
        let mut reading = Reading::new(file, log.path())?;
        reading
            .file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| read_error(log.path(), e))?;
        reading.offset = offset;
        Ok(Follower {
            log,
            reading: Some(reading),
            partial: Vec::new(),
            known: Vec::new(),
        })
    }

    /// Waits for `log`'s file to appear, to read it from its start (and the files it was
    /// rotated into meanwhile, if it was rotated before a poll saw it).
    fn waiting(log: &'a Log) -> Self {
        let known = (1..=log.backups())
            .filter_map(|k| fs::metadata(log.backup_path(k)).ok())
            .map(|meta| identity(&meta))
            .collect();
        Follower {
            log,
            reading: None,
            partial: Vec::new(),
            known,
        }
    }

    /// Emits every line written since the last call, in order, and an [`Event::Gap`] where
    /// lines could not be read. An error of `emit` ends the poll and is returned as it is.
    pub fn poll(&mut self, emit: &mut dyn FnMut(Event<'_>) -> io::Result<()>) -> io::Result<()> {
        let log = self.log;
        let path = log.path();
        let partial = &mut self.partial;
        let Some(reading) = &mut self.reading else {
            if let Some(file) = open_if_exists(path)? {
                let mut reading = Reading::new(file, path)?;
                // The log appeared and may have been rotated before this poll: the rotated
                // files that were not there when we began waiting came first. Searched from
                // `.1` up, so that a rotation during the search shifts a file to one not seen
                // yet (found twice, taken once) rather than past us.
                let mut earlier: Vec<Reading> = Vec::new();
                for k in 1..=log.backups() {
                    let backup = log.backup_path(k);
                    let Some(file) = open_if_exists(&backup)? else {
                        continue;
                    };
                    let file = Reading::new(file, &backup)?;
                    if file.id != reading.id
                        && !self.known.contains(&file.id)
                        && !earlier.iter().any(|e| e.id == file.id)
                    {
                        earlier.push(file);
                    }
                }
                for mut file in earlier.into_iter().rev() {
                    file.read_new(partial, log, emit)?;
                    flush_partial(partial, log, emit)?;
                }
                reading.read_new(partial, log, emit)?;
                self.reading = Some(reading);
            }
            return Ok(());
        };
        let on_disk = match fs::metadata(path) {
            Ok(meta) => Some(identity(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(read_error(path, e)),
        };
        if on_disk.is_none() || on_disk == Some(reading.id) {
            // Still the same file (or moved away, the next one not there yet).
            let len = reading
                .file
                .metadata()
                .map_err(|e| read_error(path, e))?
                .len();
            if len < reading.offset {
                // Truncated in place: what it holds now was written since.
                flush_partial(partial, log, emit)?;
                reading
                    .file
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| read_error(path, e))?;
                reading.offset = 0;
            }
            return reading.read_new(partial, log, emit);
        }
        // Rotated. The new file is opened first: whatever is rotated after this is found from
        // it at the next call.
        let Some(newest) = open_if_exists(path)? else {
            return reading.read_new(partial, log, emit);
        };
        let newest = Reading::new(newest, path)?;
        // The old file was renamed (or deleted) after its last write: read to its end.
        reading.read_new(partial, log, emit)?;
        flush_partial(partial, log, emit)?;
        let old_written = reading
            .file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| read_error(path, e))?;
        let (between, gap) = rotated_between(log, reading.id, old_written, newest.id)?;
        if gap {
            emit(Event::Gap)?;
        }
        for mut file in between {
            file.read_new(partial, log, emit)?;
            flush_partial(partial, log, emit)?;
        }
        let reading = self.reading.insert(newest);
        reading.read_new(&mut self.partial, log, emit)
    }
}

/// The rotated files of `log` written after `old` and before `newest`, oldest first: those
/// found between the two among `<file>.1`, `<file>.2`, … (newest first on disk). A rotation
/// during the search shifts every file up by one, which keeps their order, so each is found
/// (a file seen twice is taken once).
///
/// `old` is not among them when it was moved away (by logrotate with `dateext`, by hand) or
/// deleted: then the rotated files are older than it, and none is returned. It is not there
/// either when the log was rotated more often than its backups since it was read: then they
/// were all written after `old` was last written (`old_written`), and those are returned, with
/// `true` (a gap: the files deleted in between are lost) beside them.
fn rotated_between(
    log: &Log,
    old: FileId,
    old_written: SystemTime,
    newest: FileId,
) -> io::Result<(Vec<Reading>, bool)> {
    let mut found: Vec<Reading> = Vec::new();
    for k in 1..=log.backups() {
        let path = log.backup_path(k);
        // A missing number is a rotation under way: the files above it are still there.
        let Some(file) = open_if_exists(&path)? else {
            continue;
        };
        let file = Reading::new(file, &path)?;
        if file.id == old {
            found.reverse();
            return Ok((found, false));
        }
        if file.id == newest {
            // Rotated after we opened it: what came before it is newer still.
            found.clear();
        } else if !found.iter().any(|seen| seen.id == file.id) {
            found.push(file);
        }
    }
    found.retain(|r| {
        r.file
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > old_written)
    });
    let gap = !found.is_empty();
    found.reverse();
    Ok((found, gap))
}

/// Emits an unfinished line as it is: its file will not grow any more.
fn flush_partial(
    partial: &mut Vec<u8>,
    log: &Log,
    emit: &mut dyn FnMut(Event<'_>) -> io::Result<()>,
) -> io::Result<()> {
    if !partial.is_empty() {
        if let Some(text) = log.keep(partial) {
            emit(Event::Line(text))?;
        }
        partial.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::testing::{bytes, lines};
    use crate::RotatingFile;

    fn log(path: &Path, backups: u32) -> Log {
        Log::new(path, backups)
    }

    /// What one poll of `follower` emitted: its lines, and `[gap]` for a gap.
    fn poll(follower: &mut Follower) -> Vec<String> {
        let mut got = Vec::new();
        follower
            .poll(&mut |event| {
                got.push(match event {
                    Event::Line(line) => String::from_utf8_lossy(line).into_owned(),
                    Event::Gap => "[gap]".to_owned(),
                });
                Ok(())
            })
            .expect("poll");
        got
    }

    fn append(path: &Path, text: &[u8]) {
        fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(text))
            .expect("append");
    }

    #[test]
    fn an_unfinished_last_line_is_emitted_once_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let long = "y".repeat(3 * CHUNK + 17);
        fs::write(&path, format!("first\n\n{long}\nlast")).expect("write");
        let src = log(&path, 0);
        let (tail, mut follower) = Follower::start(&src, 10).expect("follow");
        assert_eq!(
            tail,
            Some(vec![b"first".to_vec(), Vec::new(), long.into_bytes()])
        );
        assert!(poll(&mut follower).is_empty());
        append(&path, b" line\nnext\n");
        assert_eq!(poll(&mut follower), ["last line", "next"]);
    }

    #[test]
    fn a_prefix_keeps_one_writers_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("supervisor.stderr");
        fs::write(&path, "is | a\nps | b\nthread panicked\nis | c\nps | d\n").expect("write");
        let src = Log::new(&path, 0).with_prefix("is | ");
        let (tail, mut follower) = Follower::start(&src, 5).expect("follow");
        assert_eq!(tail, Some(vec![b"a".to_vec(), b"c".to_vec()]));
        append(&path, b"ps | e\nis | f\n");
        assert_eq!(poll(&mut follower), ["f"]);
    }

    #[test]
    fn following_survives_many_rotations_between_two_polls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..400);
        let mut file = RotatingFile::new(&path, 100, 20);
        let src = log(&path, 20);
        // Not there yet: waited for.
        let (tail, mut follower) = Follower::start(&src, 10).expect("follow");
        assert!(tail.is_none());
        assert!(poll(&mut follower).is_empty());
        let mut got = Vec::new();
        let mut written = 0;
        // Batches of 1 to 60 lines: none, one or up to seven rotations between two polls.
        for batch in [1, 5, 60, 2, 33, 17, 8, 60, 1, 1, 45, 9, 50, 40, 68] {
            for line in &all[written..written + batch] {
                file.write_lines(&bytes(std::slice::from_ref(line)))
                    .expect("write");
            }
            written += batch;
            got.extend(poll(&mut follower));
            assert_eq!(got, all[..written], "after {written} lines");
        }
        assert_eq!(written, all.len());
    }

    #[test]
    fn a_log_rotated_before_its_first_poll_is_read_from_its_first_rotated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        // A rotated file of an earlier run: nothing in it is new.
        fs::write(dir.path().join("c.log.1"), "stale\n").expect("write");
        let src = log(&path, 20);
        let (tail, mut follower) = Follower::start(&src, 10).expect("follow");
        assert!(tail.is_none());
        fs::rename(dir.path().join("c.log.1"), dir.path().join("c.log.2")).expect("shift");
        fs::rename(dir.path().join("c.log.2"), dir.path().join("c.log.3")).expect("shift");
        // Then, before the first poll: written, rotated twice, written again.
        let all = lines(0..40);
        let mut file = RotatingFile::new(&path, 100, 20);
        for line in &all {
            file.write_lines(&bytes(std::slice::from_ref(line)))
                .expect("write");
        }
        assert!(dir.path().join("c.log.2").exists(), "not rotated twice");
        assert_eq!(poll(&mut follower), all);
    }

    #[test]
    fn following_after_more_rotations_than_kept_loses_only_the_deleted_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..60);
        // Ten lines a file, two rotated files kept.
        let mut file = RotatingFile::new(&path, 100, 2);
        let src = log(&path, 2);
        let write = |file: &mut RotatingFile, from: usize, to: usize| {
            for line in &all[from..to] {
                file.write_lines(&bytes(std::slice::from_ref(line)))
                    .expect("write");
                // Modification times are coarse (a clock tick): keep the files' apart.
                std::thread::sleep(Duration::from_millis(3));
            }
        };
        write(&mut file, 0, 5);
        let mut follower = Follower::waiting(&src);
        assert_eq!(poll(&mut follower), all[..5]);
        // Five rotations: the file read and the next two are deleted, the last two kept.
        write(&mut file, 5, 55);
        let got = poll(&mut follower);
        // The rest of the file read, the gap, then the two kept files and the live one.
        assert_eq!(got[..5], all[5..10], "{got:?}");
        assert_eq!(got[5], "[gap]", "{got:?}");
        assert_eq!(got[6..], all[30..55], "{got:?}");
        // And on as usual.
        write(&mut file, 55, 60);
        assert_eq!(poll(&mut follower), all[55..60]);
    }

    #[test]
    fn following_a_log_moved_away_by_logrotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..30);
        let mut file = RotatingFile::new(&path, 100, 2);
        // One built-in rotation: c.log.1 holds the first ten lines.
        file.write_lines(&bytes(&all[..15])).expect("write");
        let src = log(&path, 2);
        let (_, mut follower) = Follower::start(&src, 2).expect("follow");
        file.write_lines(&bytes(&all[15..20])).expect("write");
        // logrotate with `dateext`: renamed away; the writer starts a new file at its next line.
        fs::rename(&path, dir.path().join("c.log-20260102")).expect("rename");
        file.write_lines(&bytes(&all[20..30])).expect("write");
        // The old file to its end, then the new one; nothing of c.log.1 again, and no gap.
        assert_eq!(poll(&mut follower), all[15..30]);
    }

    #[test]
    fn following_a_log_replaced_without_backups_or_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let src = log(&path, 0);
        let mut file = RotatingFile::new(&path, 40, 0);
        file.write_lines(b"one\n").expect("write");
        let (tail, mut follower) = Follower::start(&src, 10).expect("follow");
        assert_eq!(tail, Some(vec![b"one".to_vec()]));
        // From the second, each write of 30 bytes replaces the file: one replacement between
        // two polls loses nothing.
        let mut got = Vec::new();
        for i in 0..5 {
            let line = format!("{i:029}");
            file.write_lines(format!("{line}\n").as_bytes())
                .expect("write");
            got.extend(poll(&mut follower));
            assert_eq!(got.last(), Some(&line));
        }
        assert_eq!(got.len(), 5);
        // Truncated in place (logrotate's copytruncate), then written again.
        fs::write(&path, "").expect("truncate");
        assert!(poll(&mut follower).is_empty());
        append(&path, b"after\n");
        assert_eq!(poll(&mut follower), ["after"]);
    }
}
