//! [`Log`]: a rotated log as its readers see it, and what the readers ([`crate::tail`],
//! [`crate::follow`]) share: how files are told apart, how much is read at a time, and how a
//! read error names its file.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How much the readers read at a time.
pub(crate) const CHUNK: usize = 64 * 1024;

/// A log to read: its live file, the rotated files its writer keeps beside it, and which of its
/// lines to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// The live file.
    path: PathBuf,
    /// Rotated files its writer keeps: `<path>.1` (newest) … `<path>.<backups>`.
    backups: u32,
    /// Only the lines starting with this, which is removed: one writer's lines in a file that
    /// several write to.
    prefix: Option<Vec<u8>>,
}

impl Log {
    /// The log whose live file is `path` and whose writer keeps `backups` rotated files (0: a
    /// file that is never rotated, or replaced when it is); every line is read.
    pub fn new(path: impl Into<PathBuf>, backups: u32) -> Self {
        Log {
            path: path.into(),
            backups,
            prefix: None,
        }
    }

    /// Only the lines that start with `prefix` are read, and without it: one writer's lines in
    /// a file several writers share (`web | ` before each line of component `web`).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The live file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of rotated files its writer keeps.
    pub fn backups(&self) -> u32 {
        self.backups
    }

    /// The prefix that selects the lines read, if there is one.
    pub fn prefix(&self) -> Option<&[u8]> {
        self.prefix.as_deref()
    }

    /// Rotated file `n` (1 is the newest), named as the writer names it
    /// ([`crate::backup_path`]).
    pub fn backup_path(&self, n: u32) -> PathBuf {
        crate::backup_path(&self.path, n)
    }

    /// The text of `line` to read, or `None` if it is not one of the lines read.
    pub(crate) fn keep<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        match &self.prefix {
            None => Some(line),
            Some(prefix) => line.strip_prefix(prefix.as_slice()),
        }
    }
}

/// What identifies a file on disk, whatever its name: device and inode.
pub(crate) type FileId = (u64, u64);

/// The identity of the file `meta` describes.
pub(crate) fn identity(meta: &fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// `path` opened for reading, or `None` if it does not exist.
pub(crate) fn open_if_exists(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// `e`, saying which file was being read.
pub(crate) fn read_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
}
