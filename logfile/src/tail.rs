//! The last lines of a log: read backwards from the end of its live file, a chunk at a time,
//! and when it holds fewer than asked for (it was just rotated), from its rotated files, newest
//! first.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::log::{identity, open_if_exists, read_error, CHUNK};
use crate::Log;

/// The last `n` lines of `log` (going back into its rotated files when the live one holds
/// fewer), oldest first and without their newlines, or `None` when the live file does not
/// exist. An unfinished last line (no newline yet) counts as a line.
///
/// Only those lines are held in memory, whatever the size of the files.
pub fn last_lines(log: &Log, n: usize) -> io::Result<Option<Vec<Vec<u8>>>> {
    Ok(tail(log, n, true)?.map(|tail| tail.lines))
}

/// The last lines of a log, and the live file they end in.
pub(crate) struct Tail {
    /// Oldest first, without their newlines.
    pub(crate) lines: Vec<Vec<u8>>,
    /// The live file.
    pub(crate) file: File,
    /// Where the lines read end in it: after its last newline, unless `unfinished` was set.
    pub(crate) end: u64,
}

/// The last `n` lines of `log`, as [`last_lines`], and the live file. With `unfinished`, an
/// unfinished last line counts as a line; without, it is left for a
/// [`Follower`](crate::follow::Follower) to read once it is finished.
pub(crate) fn tail(log: &Log, n: usize, unfinished: bool) -> io::Result<Option<Tail>> {
    let path = log.path();
    let Some(file) = open_if_exists(path)? else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    let live = identity(&meta);
    let len = meta.len();
    let end = if unfinished {
        len
    } else {
        line_boundary(&file, len).map_err(|e| read_error(path, e))?
    };
    let mut lines = lines_before(&file, end, n, log).map_err(|e| read_error(path, e))?;
    // Fewer than asked for: the rest is in the rotated files, newest first.
    let mut seen = vec![live];
    for k in 1..=log.backups() {
        if lines.len() >= n {
            break;
        }
        let path = log.backup_path(k);
        let Some(older) = open_if_exists(&path)? else {
            break;
        };
        let meta = older.metadata().map_err(|e| read_error(&path, e))?;
        // Rotated since we opened the live file: the same lines again.
        if seen.contains(&identity(&meta)) {
            continue;
        }
        seen.push(identity(&meta));
        let mut before = lines_before(&older, meta.len(), n - lines.len(), log)
            .map_err(|e| read_error(&path, e))?;
        before.append(&mut lines);
        lines = before;
    }
    Ok(Some(Tail { lines, file, end }))
}

/// The offset just after the last newline before `len` (0 if there is none).
fn line_boundary(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut buf = vec![0; CHUNK];
    while end > 0 {
        let take = chunk_before(end);
        let start = end - take as u64;
        file.read_exact_at(&mut buf[..take], start)?;
        if let Some(i) = buf[..take].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// How much to read before offset `end`: a chunk, or what is left.
fn chunk_before(end: u64) -> usize {
    usize::try_from(end).map_or(CHUNK, |end| end.min(CHUNK))
}

/// The last `n` lines of `file` that `log` keeps, among its first `end` bytes, oldest first and
/// without their newlines. A last line without a newline counts. Reads backwards, a chunk at a
/// time, so only those lines are held.
fn lines_before(file: &File, end: u64, n: usize, log: &Log) -> io::Result<Vec<Vec<u8>>> {
    let mut newest_first: Vec<Vec<u8>> = Vec::new();
    if n == 0 || end == 0 {
        return Ok(newest_first);
    }
    // The last byte is the newline of the last line, unless that line is unfinished.
    let mut last = [0u8];
    file.read_exact_at(&mut last, end - 1)?;
    let mut pos = if last[0] == b'\n' { end - 1 } else { end };
    // The start of the earliest line read so far (its newline is after it).
    let mut head: Vec<u8> = Vec::new();
    while pos > 0 && newest_first.len() < n {
        let take = chunk_before(pos);
        pos -= take as u64;
        let mut data = vec![0; take];
        file.read_exact_at(&mut data, pos)?;
        data.extend_from_slice(&head);
        // Every piece after a newline is a whole line; the first may have begun earlier.
        let mut pieces = data.rsplit(|&b| b == b'\n');
        let first = pieces.next_back().unwrap_or_default().to_vec();
        for line in pieces {
            if let Some(text) = log.keep(line) {
                newest_first.push(text.to_vec());
                if newest_first.len() == n {
                    break;
                }
            }
        }
        head = first;
    }
    if pos == 0 && newest_first.len() < n {
        if let Some(text) = log.keep(&head) {
            newest_first.push(text.to_vec());
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::testing::{bytes, lines};
    use crate::RotatingFile;

    fn log(path: &Path, backups: u32) -> Log {
        Log::new(path, backups)
    }

    fn bytes_lines(lines: &[String]) -> Vec<Vec<u8>> {
        lines.iter().map(|l| l.clone().into_bytes()).collect()
    }

    #[test]
    fn last_lines_read_backwards_and_into_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..100);
        // About 12 lines a file: the last 30 lines span three files.
        let mut file = RotatingFile::new(&path, 120, 5);
        for line in &all {
            file.write_lines(&bytes(std::slice::from_ref(line)))
                .expect("write");
        }
        let src = log(&path, 5);
        let tail = last_lines(&src, 3).expect("read").expect("exists");
        assert_eq!(tail, bytes_lines(&all[97..]));
        let tail = last_lines(&src, 30).expect("read").expect("exists");
        assert_eq!(tail, bytes_lines(&all[70..]));
        assert_eq!(
            last_lines(&src, 0).expect("read").expect("exists"),
            Vec::<Vec<u8>>::new()
        );
        // More than every file holds: all that is kept, in order.
        let kept = last_lines(&src, 10_000).expect("read").expect("exists");
        let first = String::from_utf8_lossy(&kept[0]).into_owned();
        let from: usize = first["line ".len()..].parse().expect("a number");
        assert_eq!(kept, bytes_lines(&all[from..]));
        assert!(last_lines(&log(&dir.path().join("none.log"), 5), 3)
            .expect("read")
            .is_none());
    }

    #[test]
    fn long_lines_empty_lines_and_an_unfinished_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let long = "y".repeat(3 * CHUNK + 17);
        fs::write(&path, format!("first\n\n{long}\nlast")).expect("write");
        let src = log(&path, 0);
        let tail = last_lines(&src, 3).expect("read").expect("exists");
        assert_eq!(
            tail,
            vec![Vec::new(), long.clone().into_bytes(), b"last".to_vec()]
        );
        // For following, the unfinished line is left until it is finished.
        let tail = super::tail(&src, 10, false).expect("read").expect("exists");
        assert_eq!(
            tail.lines,
            vec![b"first".to_vec(), Vec::new(), long.into_bytes()]
        );
        assert_eq!(tail.end, fs::metadata(&path).expect("meta").len() - 4);
    }

    #[test]
    fn a_prefix_keeps_one_writers_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("supervisor.stderr");
        fs::write(&path, "is | a\nps | b\nthread panicked\nis | c\nps | d\n").expect("write");
        let src = Log::new(&path, 0).with_prefix("is | ");
        assert_eq!(src.prefix(), Some(&b"is | "[..]));
        let tail = last_lines(&src, 5).expect("read").expect("exists");
        assert_eq!(tail, vec![b"a".to_vec(), b"c".to_vec()]);
        let tail = last_lines(&src, 1).expect("read").expect("exists");
        assert_eq!(tail, vec![b"c".to_vec()]);
    }
}
