//! The writer of the scheme: [`RotatingFile`], a log file rotated by size that is written whole
//! lines at a time (see the crate's documentation for the scheme).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A log file rotated by size, written whole lines at a time. Blocking: callers on an async
/// runtime write from the blocking pool.
#[derive(Debug)]
pub struct RotatingFile {
    /// The live file; backups are this path with `.1`, `.2`, … appended.
    path: PathBuf,
    /// A write that would take the file past this size rotates it first.
    max_bytes: u64,
    /// Rotated files kept.
    backups: u32,
    /// The open file, `None` until the first write and after a failed open.
    open: Option<OpenFile>,
}

/// The file a [`RotatingFile`] has open, and what identifies it on disk.
#[derive(Debug)]
struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
    /// Only regular files are rotated: a path such as `/dev/stderr` is just written to.
    regular: bool,
}

impl RotatingFile {
    /// A rotating log at `path`. Nothing is opened until the first write, which creates the
    /// file and its directory.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64, backups: u32) -> Self {
        RotatingFile {
            path: path.into(),
            max_bytes: max_bytes.max(1),
            backups,
            open: None,
        }
    }

    /// Like [`RotatingFile::new`], but opens (creates) the file now, so that an unusable path
    /// is reported at once.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, backups: u32) -> io::Result<Self> {
        let mut file = Self::new(path, max_bytes, backups);
        file.ensure_open()?;
        Ok(file)
    }

    /// Opens (creates) the file if it is not open, or if the path now names another file or
    /// nothing (it was moved or deleted). Every write does this first.
    pub fn ensure_open(&mut self) -> io::Result<()> {
        self.current_size().map(drop)
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of backup `n` (1 is the newest): the live path with `.n` appended
    /// ([`crate::backup_path`]).
    pub fn backup_path(&self, n: u32) -> PathBuf {
        crate::backup_path(&self.path, n)
    }

    /// Appends `lines` (complete lines, each ending with a newline), rotating before any line
    /// that would not fit. Lines are never split between two files.
    pub fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        self.write_pieces(lines, true)
    }

    /// Appends `record` as one unit: it is never split between two files, even if it holds
    /// several lines (a multi-line log event).
    pub fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        self.write_pieces(record, false)
    }

    fn write_pieces(&mut self, mut rest: &[u8], splittable: bool) -> io::Result<()> {
        // Set by a rotation for the piece at hand: whatever the new file holds by then (another
        // writer may have been quicker), the piece is written, so this loop always ends.
        let mut rotated = false;
        while !rest.is_empty() {
            let take = match self.current_size()? {
                None => rest.len(),
                Some(size) => {
                    let room = self.max_bytes.saturating_sub(size);
                    let fit = if splittable {
                        fitting_lines(rest, room)
                    } else if fits(rest.len(), room) {
                        rest.len()
                    } else {
                        0
                    };
                    if fit > 0 {
                        fit
                    } else if size == 0 || rotated {
                        // Longer than a whole file: it gets one of its own.
                        if splittable {
                            first_line_len(rest)
                        } else {
                            rest.len()
                        }
                    } else {
                        self.rotate()?;
                        rotated = true;
                        continue;
                    }
                }
            };
            let open = self
                .open
                .as_mut()
                .ok_or_else(|| io::Error::other("log file not open"))?;
            if let Err(e) = open.file.write_all(&rest[..take]) {
                // Reopened on the next write: the file may have been replaced meanwhile.
                self.open = None;
                return Err(self.error("writing", &e));
            }
            rest = &rest[take..];
            rotated = false;
        }
        Ok(())
    }

    /// Makes sure the file at `path` is the open one (opening it if there is none, or if the
    /// path now names another file or nothing), and returns its size on disk; `None` for a file
    /// that is not rotated (not a regular file).
    fn current_size(&mut self) -> io::Result<Option<u64>> {
        let on_disk = match fs::metadata(&self.path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.error("checking", &e)),
        };
        if let (Some(open), Some(meta)) = (&self.open, &on_disk) {
            if open.dev == meta.dev() && open.ino == meta.ino() {
                return Ok(open.regular.then_some(meta.len()));
            }
        }
        self.reopen()
    }

    /// Opens (creating) the file at `path` for appending; returns its size as
    /// [`RotatingFile::current_size`] does.
    fn reopen(&mut self) -> io::Result<Option<u64>> {
        self.open = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| self.error("creating the directory of", &e))?;
        }
        // std opens files close-on-exec, so components never inherit a log file.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error("opening", &e))?;
        let meta = file.metadata().map_err(|e| self.error("checking", &e))?;
        let regular = meta.file_type().is_file();
        self.open = Some(OpenFile {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            regular,
        });
        Ok(regular.then_some(meta.len()))
    }

    /// Shifts the backups up by one (deleting the oldest), moves the live file to backup 1 and
    /// opens a new live file.
    fn rotate(&mut self) -> io::Result<()> {
        self.open = None;
        if self.backups == 0 {
            remove_if_exists(&self.path).map_err(|e| self.error("replacing", &e))?;
        } else {
            // Backups beyond the count, left while `backups` was larger, go first.
            let mut n = self.backups.checked_add(1);
            while let Some(extra) = n {
                if fs::remove_file(self.backup_path(extra)).is_err() {
                    break;
                }
                n = extra.checked_add(1);
            }
            // Renaming onto backup N replaces (deletes) the oldest.
            for n in (1..self.backups).rev() {
                rename_if_exists(&self.backup_path(n), &self.backup_path(n + 1))
                    .map_err(|e| self.error("rotating", &e))?;
            }
            rename_if_exists(&self.path, &self.backup_path(1))
                .map_err(|e| self.error("rotating", &e))?;
        }
        self.reopen().map(|_| ())
    }

    /// `e`, saying what was being done to which file.
    fn error(&self, doing: &str, e: &io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("{doing} log file {}: {e}", self.path.display()),
        )
    }
}

/// Whether `len` bytes fit in `room`.
fn fits(len: usize, room: u64) -> bool {
    u64::try_from(len).is_ok_and(|len| len <= room)
}

/// The length of the longest run of whole lines at the start of `bytes` that fits in `room`
/// (all of `bytes` if it fits, even without a final newline).
fn fitting_lines(bytes: &[u8], room: u64) -> usize {
    if fits(bytes.len(), room) {
        return bytes.len();
    }
    // `room` is below `bytes.len()` here, so it fits a usize.
    let room = usize::try_from(room).unwrap_or(0);
    bytes[..room]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| end + 1)
}

/// The length of the first line of `bytes`, its newline included.
fn first_line_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |end| end + 1)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(range: std::ops::Range<usize>) -> Vec<u8> {
        range
            .flat_map(|i| format!("line {i:05}\n").into_bytes())
            .collect()
    }

    /// The live file and its backups, oldest first.
    fn files_oldest_first(file: &RotatingFile, backups: u32) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = (1..=backups).rev().map(|n| file.backup_path(n)).collect();
        files.push(file.path().to_owned());
        files.into_iter().filter(|p| p.exists()).collect()
    }

    /// The numbers of the lines in `files`, checking each file's size and that no line is
    /// split or altered.
    fn numbers_in(files: &[PathBuf], max_bytes: u64) -> Vec<usize> {
        let mut numbers = Vec::new();
        for path in files {
            let text = fs::read_to_string(path).expect("a log file");
            assert!(text.len() as u64 <= max_bytes, "{} too big", path.display());
            assert!(text.ends_with('\n'), "{} ends mid-line", path.display());
            for line in text.lines() {
                let n = line.strip_prefix("line ").expect("a whole line");
                assert_eq!(n.len(), 5, "{line:?}");
                numbers.push(n.parse().expect("a number"));
            }
        }
        numbers
    }

    /// Writes 20 000 numbered lines in batches of 1 to 37 lines.
    fn write_numbered(file: &mut RotatingFile) {
        let (mut i, mut batch) = (0, 1);
        while i < 20_000 {
            let end = (i + batch).min(20_000);
            file.write_lines(&numbered(i..end)).expect("write");
            i = end;
            batch = batch % 37 + 1;
        }
    }

    #[test]
    fn rotation_keeps_a_contiguous_suffix_of_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("logs/web.log"), 10 * 1024, 3);
        write_numbered(&mut file);

        assert!(!file.backup_path(4).exists());
        let files = files_oldest_first(&file, 3);
        assert_eq!(files.len(), 4);
        let numbers = numbers_in(&files, 10 * 1024);
        assert_eq!(numbers.last(), Some(&19_999));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        // Three full backups of 930 lines (10 KiB / 11 bytes) and the live file.
        assert!(numbers.len() > 3 * 930, "{}", numbers.len());
    }

    #[test]
    fn with_enough_backups_every_line_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("web.log"), 10 * 1024, 100);
        write_numbered(&mut file);
        let numbers = numbers_in(&files_oldest_first(&file, 100), 10 * 1024);
        assert_eq!(numbers, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_larger_than_a_file_is_split_at_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("web.log"), 1000, 100);
        file.write_lines(&numbered(0..1000)).expect("write");
        let files = files_oldest_first(&file, 100);
        assert_eq!(files.len(), 12);
        assert_eq!(numbers_in(&files, 1000), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn backups_beyond_the_count_are_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("web.log"), 100, 2);
        // Left by an earlier run with more backups.
        for n in 1..=6 {
            fs::write(file.backup_path(n), format!("old {n}\n")).expect("write");
        }
        fs::write(file.path(), "x".repeat(96) + "\n").expect("write");
        file.write_lines(b"new\n").expect("write");

        assert_eq!(fs::read_to_string(file.path()).expect("live"), "new\n");
        assert_eq!(
            fs::read_to_string(file.backup_path(1)).expect("backup 1"),
            "x".repeat(96) + "\n"
        );
        assert_eq!(
            fs::read_to_string(file.backup_path(2)).expect("backup 2"),
            "old 1\n"
        );
        for n in 3..=7 {
            assert!(!file.backup_path(n).exists(), "backup {n} is left");
        }
    }

    #[test]
    fn without_backups_the_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("web.log"), 25, 0);
        file.write_lines(&numbered(0..5)).expect("write");
        assert_eq!(
            fs::read_to_string(file.path()).expect("live"),
            "line 00004\n"
        );
        assert!(!file.backup_path(1).exists());
    }

    #[test]
    fn a_line_longer_than_a_file_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("web.log"), 10, 5);
        let long = "y".repeat(30) + "\n";
        file.write_lines(format!("a\n{long}b\n").as_bytes())
            .expect("write");
        assert_eq!(fs::read_to_string(file.backup_path(2)).expect("2"), "a\n");
        assert_eq!(fs::read_to_string(file.backup_path(1)).expect("1"), long);
        assert_eq!(fs::read_to_string(file.path()).expect("live"), "b\n");
    }

    #[test]
    fn a_record_is_never_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("web.log"), 12, 5);
        file.write_record(b"one\n").expect("write");
        file.write_record(b"two\nthree\n").expect("write");
        assert_eq!(fs::read_to_string(file.backup_path(1)).expect("1"), "one\n");
        assert_eq!(
            fs::read_to_string(file.path()).expect("live"),
            "two\nthree\n"
        );
    }

    #[test]
    fn a_deleted_or_moved_file_is_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::open(dir.path().join("web.log"), 1000, 1).expect("open");
        assert!(file.path().exists());
        file.write_lines(b"one\n").expect("write");
        fs::remove_file(file.path()).expect("remove");
        file.write_lines(b"two\n").expect("write");
        assert_eq!(fs::read_to_string(file.path()).expect("live"), "two\n");

        let moved = dir.path().join("moved.log");
        fs::rename(file.path(), &moved).expect("rename");
        file.write_lines(b"three\n").expect("write");
        assert_eq!(fs::read_to_string(&moved).expect("moved"), "two\n");
        assert_eq!(fs::read_to_string(file.path()).expect("live"), "three\n");
    }

    #[test]
    fn an_unusable_path_fails_and_recovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("logs");
        fs::write(&blocker, "a file where the directory should be").expect("write");
        let err = RotatingFile::open(blocker.join("web.log"), 1000, 1).expect_err("must fail");
        assert!(err.to_string().contains("web.log"), "{err}");

        let mut file = RotatingFile::new(blocker.join("web.log"), 1000, 1);
        assert!(file.write_lines(b"lost\n").is_err());
        fs::remove_file(&blocker).expect("remove");
        file.write_lines(b"kept\n").expect("write");
        assert_eq!(fs::read_to_string(file.path()).expect("live"), "kept\n");
    }
}
