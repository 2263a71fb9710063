#![deny(missing_docs)]
//! Log files rotated by size, and reading them back across rotations: the scheme every log of
//! imageserving follows (a component's output, the Server Supervisor's own log, the access log
//! of `ps`), its writer ([`RotatingFile`]) and its readers ([`tail`], [`follow`]).
//!
//! # The scheme
//!
//! * **Files.** A log is its live file, `name.log`, and up to `backups` rotated files beside it,
//!   named by appending a number ([`backup_path`]): `name.log.1` (the newest) … `name.log.N`
//!   (the oldest).
//! * **Rotation by size.** Before a write that would take the live file past `max_bytes`, the
//!   writer shifts `name.log.1` … to `name.log.2` …, renames `name.log` to `name.log.1` and
//!   starts a new `name.log`; the file that would become number `backups + 1` is deleted
//!   (`backups = 0`: the live file is simply replaced). Backups numbered beyond `backups`, left
//!   while the count was larger, are deleted at the next rotation. The size counted is the
//!   file's size on disk, so two writers of one file (a process and its replacement, for an
//!   instant) rotate it correctly. A path that is not a regular file (`/dev/stderr`) is written
//!   to and never rotated.
//! * **Files moved or deleted behind the writer's back.** Before each write the path is checked
//!   against the open file (device and inode); if it was moved (`logrotate`) or deleted (an
//!   operator freeing disk space), a new file is opened at the path.
//! * **The line bound.** The writer only ever receives whole lines, and never splits one between
//!   two files: a batch that does not fit is split at a line boundary, and a record (one event
//!   of several lines) is written whole. A file only outgrows `max_bytes` when it holds a single
//!   line (or record) longer than that. The scheme itself does not bound a line's length: a
//!   writer that needs a bound cuts its lines before writing them (imageserving's component logs
//!   cut theirs at 64 KiB). A reader following a log emits an unfinished line once it is
//!   finished, or as it is once more than 1 MiB of it is held.
//!
//! # What a reader can rely on
//!
//! * Every line is in exactly one file, whole, and the files hold the lines in the order they
//!   were written: `name.log.N` … `name.log.1`, then `name.log`.
//! * A rotation renames `name.log.(N-1)` onto `name.log.N`, …, then `name.log` onto
//!   `name.log.1`. Each rename is atomic: during a rotation a number may be missing for an
//!   instant, and the files above it are still there. A rotation shifts every backup up by one,
//!   which keeps their order, so a reader that tells files apart by identity (device and inode),
//!   not by name, finds each once.
//! * With one writer at a time, a file is renamed (or deleted) only after its last write: once
//!   the live path names another file, the old one does not grow any more, and a reader holding
//!   it open can read it to its end.
//!
//! [`tail::last_lines`] reads the last lines of a log backwards, going into its rotated files
//! when the live one holds fewer; [`follow::Follower`] then emits every line written after
//! them, in order and once each, across rotations (several between two looks included), a file
//! moved away or truncated by `logrotate`, and a log that does not exist yet.
//!
//! ```
//! use imageserving_logfile::{tail, Log, RotatingFile};
//!
//! # fn main() -> std::io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("web.log");
//! // Rotated before a write would take it past 16 bytes; two rotated files kept.
//! let mut file = RotatingFile::new(&path, 16, 2);
//! file.write_lines(b"one\ntwo\nthree\n")?;
//! file.write_lines(b"four\n")?;
//! assert_eq!(std::fs::read_to_string(file.backup_path(1))?, "one\ntwo\nthree\n");
//!
//! let last = tail::last_lines(&Log::new(&path, 2), 2)?.expect("the log exists");
//! assert_eq!(last, [b"three".to_vec(), b"four".to_vec()]);
//! # Ok(())
//! # }
//! ```
//!
//! Unix only: files are told apart by device and inode.

use std::path::{Path, PathBuf};

pub mod follow;
mod log;
mod rotating;
pub mod tail;

pub use log::Log;
pub use rotating::RotatingFile;

/// The size past which imageserving's logs are rotated unless configured otherwise: 50 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;
/// The number of rotated files imageserving's logs keep unless configured otherwise: 10.
pub const DEFAULT_BACKUPS: u32 = 10;

/// The path of rotated file `n` of the log whose live file is `path` (1 is the newest): `path`
/// with `.n` appended.
pub fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod testing {
    //! Helpers shared by the readers' tests.

    /// `line 0000`, `line 0001`, … for the numbers in `range`.
    pub(crate) fn lines(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("line {i:04}")).collect()
    }

    /// `lines`, each ending with a newline, as they are written.
    pub(crate) fn bytes(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }
}
