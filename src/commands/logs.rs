//! `logs <component> [-f] [-n N]`: the last lines of a component's log, or of the Server
//! Supervisor's, and with `-f` every line written after them.
//!
//! It reads files only, so it works whether or not a supervisor runs. Where a component's lines
//! are is the configuration's business ([`LogSpec`]): `logs/<name>.log` for both streams, plus
//! `logs/<name>.stderr.log` with `log_stderr` (two files are shown one after the other, each
//! under a `==> file <==` header, as `tail` does), or, with `log_to_supervisor`, the lines
//! prefixed `<name> | ` on the supervisor's standard error, which is `logs/supervisor.stderr`
//! for a supervisor started by `start`. `supervisor` names the daemon's own log,
//! `logs/supervisor.log`.
//!
//! * **The last lines** are read backwards from the end of the file; when it holds fewer than
//!   asked for (it was just rotated), the rest comes from the rotated files, newest first.
//! * **Following** polls every [`POLL`]. The file is read through the descriptor opened at the
//!   start, so nothing written to it is missed, whatever happens to its name. When the path
//!   names another file (device and inode), the log was rotated: the old file is read to its
//!   end, then the rotated files newer than it (found by identity among `<file>.1`,
//!   `<file>.2`, …, for several rotations between two polls), then the new file from its first
//!   byte. An old file not among them was moved away (logrotate's `dateext`) or deleted, or
//!   the log was rotated more often than its rotated files keep: then only the rotated files
//!   written after it are read, with a warning that the deleted ones' lines are missing. A file
//!   shorter than what was read of it was truncated (`copytruncate`): it is read again from its
//!   start. A log that does not exist yet is waited for and read from its start. Lines are
//!   printed whole, once each, in the order they were written.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use imageserving_actors::spec::LogSpec;

use super::load_config;
use crate::cli::LogsArgs;
use crate::exit::{self, Exit};
use crate::home::Home;

/// How often `-f` looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// How much is read at a time.
const CHUNK: usize = 64 * 1024;

/// The longest unfinished line held back while following; longer, it is printed as it is
/// (component logs cut their lines at 64 KiB, so only a foreign file gets there).
const MAX_PARTIAL: usize = 1024 * 1024;

/// The name that shows the Server Supervisor's own log.
const SUPERVISOR: &str = "supervisor";

/// One file to show.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    /// The live file.
    path: PathBuf,
    /// Rotated files its writer keeps: `<path>.1` (newest) … `<path>.<backups>`.
    backups: u32,
    /// Only the lines starting with this, which is removed: a component's lines among the
    /// supervisor's standard error.
    prefix: Option<String>,
}

impl Source {
    /// A log rotated by the supervisor (a component's, or its own).
    fn rotated(path: PathBuf, backups: u32) -> Self {
        Source {
            path,
            backups,
            prefix: None,
        }
    }

    /// Rotated file `n` (1 is the newest), named as the supervisor's rotation names it.
    fn backup_path(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// The text of `line` to print, or `None` if it is not one of ours.
    fn keep<'a>(&self, line: &'a [u8]) -> Option<&'a [u8]> {
        match &self.prefix {
            None => Some(line),
            Some(prefix) => line.strip_prefix(prefix.as_bytes()),
        }
    }
}

/// What `logs` shows: a label for messages and the files.
struct Target {
    /// The component's name, or `supervisor`.
    name: String,
    /// For messages: component `is`, the Server Supervisor.
    what: String,
    /// The Server Supervisor's own log.
    daemon: bool,
    sources: Vec<Source>,
}

pub fn run(home: &Home, args: &LogsArgs, quiet: bool) -> anyhow::Result<u8> {
    let target = target(home, &args.component)?;
    let shown = |p: &Path| shown_path(home, p);
    let result = if args.follow {
        follow(&target, args.lines, quiet, &shown)
    } else {
        print_last(&target, args.lines, quiet, &shown)
    };
    match result {
        // `logs … | head`: the reader has had enough.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(exit::OK)
        }
        other => other,
    }
}

/// The files of `name` (a component, an alias, or `supervisor`), as the configuration places
/// them.
fn target(home: &Home, name: &str) -> anyhow::Result<Target> {
    if name.eq_ignore_ascii_case(SUPERVISOR) {
        // The daemon's log needs no configuration: it is where to look when that is broken.
        // (No component can be called `supervisor`: the configuration reserves the name.)
        return Ok(Target {
            name: SUPERVISOR.into(),
            what: "the Server Supervisor".into(),
            daemon: true,
            sources: vec![Source::rotated(
                home.supervisor_log(),
                crate::daemon::log::BACKUPS,
            )],
        });
    }
    let config = load_config(home)?;
    let Some(component) = config.resolve(name).and_then(|n| config.component(n)) else {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "unknown component `{name}`; configured: {} (or `{SUPERVISOR}` for the Server Supervisor's own log)",
                config.component_names().join(", ")
            ),
        )
        .into());
    };
    let what = format!("component `{}`", component.name);
    let sources = sources_of(home, &component.name, &component.log);
    if sources.is_empty() {
        return Err(Exit::new(
            exit::FAILED,
            format!(
                "{what} keeps no log: its output is discarded; give it a log file in {} to keep it",
                config.origin()
            ),
        )
        .into());
    }
    Ok(Target {
        name: component.name.clone(),
        what,
        daemon: false,
        sources,
    })
}

/// Where `log` sends the lines of component `name`.
fn sources_of(home: &Home, name: &str, log: &LogSpec) -> Vec<Source> {
    if log.to_supervisor {
        return vec![Source {
            path: home.supervisor_stderr(),
            backups: 0,
            prefix: Some(format!("{name} | ")),
        }];
    }
    let mut sources: Vec<Source> = log
        .stdout
        .iter()
        .map(|p| Source::rotated(p.clone(), log.backups))
        .collect();
    if let Some(stderr) = &log.stderr {
        if log.stdout.as_ref() != Some(stderr) {
            sources.push(Source::rotated(stderr.clone(), log.backups));
        }
    }
    sources
}

/// `path` as shown: relative to the home when it is below it.
fn shown_path(home: &Home, path: &Path) -> String {
    path.strip_prefix(home.root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Why there is nothing to read at `source` yet, and what to do.
fn missing(target: &Target, source: &Source, shown: &str) -> String {
    if source.prefix.is_some() {
        format!(
            "{} writes its output to the Server Supervisor's standard error (`log_to_supervisor = true`), \
             and {shown}, where a supervisor started by `imageserving start` sends it, does not exist yet; \
             a supervisor run in the foreground (`imageserving supervisor`) sends it wherever its standard \
             error goes (`journalctl -u <unit>`, `docker logs <container>`); set `log_to_supervisor = false` \
             to have it logged to logs/{}.log",
            target.what, target.name
        )
    } else if target.daemon {
        format!(
            "{shown} does not exist yet: no Server Supervisor was started with `imageserving start` in this \
             home (one run in the foreground logs to its standard error); `logs -f` waits for it"
        )
    } else {
        format!(
            "{shown} does not exist yet: {} has not been started in this home; `logs -f` waits for it",
            target.what
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The last lines.

/// Without `-f`: the last `n` lines of each file, under a header when there are several.
fn print_last(
    target: &Target,
    n: usize,
    quiet: bool,
    shown: &dyn Fn(&Path) -> String,
) -> anyhow::Result<u8> {
    let mut found = Vec::new();
    let mut absent = Vec::new();
    for source in &target.sources {
        let path = shown(&source.path);
        match last_lines(source, n, true)? {
            Some(tail) => found.push((source, path, tail.lines)),
            None => absent.push(missing(target, source, &path)),
        }
    }
    if found.is_empty() {
        return Err(Exit::new(exit::FAILED, absent.join("\n")).into());
    }
    if !quiet {
        for message in &absent {
            eprintln!("imageserving: {message}");
        }
    }
    let mut out = io::stdout().lock();
    let headers = target.sources.len() > 1;
    for (i, (source, path, lines)) in found.iter().enumerate() {
        if headers {
            let gap = if i == 0 { "" } else { "\n" };
            writeln!(out, "{gap}==> {path} <==")?;
        }
        for line in lines {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        if lines.is_empty() && source.prefix.is_some() && !quiet {
            eprintln!(
                "imageserving: no line of {} in {path}: a supervisor run in the foreground \
                 (`imageserving supervisor`) sends them wherever its standard error goes",
                target.what
            );
        }
    }
    out.flush()?;
    Ok(exit::OK)
}

/// The last lines of a log, and the live file they end in.
struct Tail {
    /// Oldest first, without their newlines.
    lines: Vec<Vec<u8>>,
    /// The live file.
    file: File,
    /// Where the lines read end in it: after its last newline, unless `partial` was set.
    end: u64,
}

/// The last `n` lines of `source` (going back into its rotated files when the live one holds
/// fewer), or `None` when the live file does not exist. With `partial`, an unfinished last line
/// counts as a line; without, it is left for [`Follower`] to read once it is finished.
fn last_lines(source: &Source, n: usize, partial: bool) -> anyhow::Result<Option<Tail>> {
    let file = match File::open(&source.path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(&source.path, e)),
    };
    let meta = file.metadata().map_err(|e| read_error(&source.path, e))?;
    let live = identity(&meta);
    let len = meta.len();
    let end = if partial {
        len
    } else {
        line_boundary(&file, len).map_err(|e| read_error(&source.path, e))?
    };
    let mut lines = lines_before(&file, end, n, source).map_err(|e| read_error(&source.path, e))?;
    // Fewer than asked for: the rest is in the rotated files, newest first.
    let mut seen = vec![live];
    for k in 1..=source.backups {
        if lines.len() >= n {
            break;
        }
        let path = source.backup_path(k);
        let older = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(read_error(&path, e)),
        };
        let meta = older.metadata().map_err(|e| read_error(&path, e))?;
        // Rotated since we opened the live file: the same lines again.
        if seen.contains(&identity(&meta)) {
            continue;
        }
        seen.push(identity(&meta));
        let mut before = lines_before(&older, meta.len(), n - lines.len(), source)
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

/// The last `n` lines of `file` that `source` keeps, among its first `end` bytes, oldest first
/// and without their newlines. A last line without a newline counts. Reads backwards, a chunk
/// at a time, so only those lines are held.
fn lines_before(file: &File, end: u64, n: usize, source: &Source) -> io::Result<Vec<Vec<u8>>> {
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
            if let Some(text) = source.keep(line) {
                newest_first.push(text.to_vec());
                if newest_first.len() == n {
                    break;
                }
            }
        }
        head = first;
    }
    if pos == 0 && newest_first.len() < n {
        if let Some(text) = source.keep(&head) {
            newest_first.push(text.to_vec());
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

fn read_error(path: &Path, e: io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("reading {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Following.

/// With `-f`: the last `n` lines of each file, then every new line, until interrupted.
fn follow(
    target: &Target,
    n: usize,
    quiet: bool,
    shown: &dyn Fn(&Path) -> String,
) -> anyhow::Result<u8> {
    let mut out = Printer {
        out: io::stdout().lock(),
        headers: target.sources.len() > 1,
        last: None,
    };
    let mut followers = Vec::with_capacity(target.sources.len());
    for (i, source) in target.sources.iter().enumerate() {
        let path = shown(&source.path);
        let follower = match last_lines(source, n, false)? {
            Some(tail) => {
                out.header(i, &path)?;
                for line in &tail.lines {
                    out.line(i, &path, line)?;
                }
                Follower::at(source, tail.file, tail.end)?
            }
            None => {
                if !quiet {
                    eprintln!("imageserving: {path} does not exist yet; waiting for it");
                }
                Follower::waiting(source)
            }
        };
        followers.push((path, follower));
    }
    out.flush()?;
    loop {
        for (i, (path, follower)) in followers.iter_mut().enumerate() {
            follower.poll(&mut |line| out.line(i, path, line), quiet)?;
        }
        out.flush()?;
        std::thread::sleep(POLL);
    }
}

/// Prints lines, each file's under its header when there are several.
struct Printer<W: Write> {
    out: W,
    headers: bool,
    /// The file whose lines were printed last.
    last: Option<usize>,
}

impl<W: Write> Printer<W> {
    fn header(&mut self, file: usize, path: &str) -> io::Result<()> {
        if self.headers && self.last != Some(file) {
            let gap = if self.last.is_none() { "" } else { "\n" };
            writeln!(self.out, "{gap}==> {path} <==")?;
            self.last = Some(file);
        }
        Ok(())
    }

    fn line(&mut self, file: usize, path: &str, line: &[u8]) -> io::Result<()> {
        self.header(file, path)?;
        self.out.write_all(line)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What identifies a file on disk, whatever its name: device and inode.
type FileId = (u64, u64);

fn identity(meta: &fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// A file being read, and how far.
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
    fn new(file: File, path: &Path) -> anyhow::Result<Self> {
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
        source: &Source,
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> anyhow::Result<()> {
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
                    if let Some(text) = source.keep(line) {
                        emit(text)?;
                    }
                }
                partial.drain(..=end);
            }
            if partial.len() > MAX_PARTIAL {
                flush_partial(partial, source, emit)?;
            }
        }
    }
}

/// Follows one log across rotations; see the module's documentation.
struct Follower<'a> {
    source: &'a Source,
    /// `None` until the file exists.
    reading: Option<Reading>,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// While waiting: the rotated files that were there before, which hold nothing new.
    known: Vec<FileId>,
}

impl<'a> Follower<'a> {
    /// Follows `file`, the live file of `source`, from `offset` on.
    fn at(source: &'a Source, file: File, offset: u64) -> anyhow::Result<Self> {
        let mut reading = Reading::new(file, &source.path)?;
        reading
            .file
            .seek(SeekFrom::Start(offset))
            .map_err(|e| read_error(&source.path, e))?;
        reading.offset = offset;
        Ok(Follower {
            source,
            reading: Some(reading),
            partial: Vec::new(),
            known: Vec::new(),
        })
    }

    /// Waits for `source`'s file to appear, to read it from its start (and the files it was
    /// rotated into meanwhile, if it was rotated before a poll saw it).
    fn waiting(source: &'a Source) -> Self {
        let known = (1..=source.backups)
            .filter_map(|k| fs::metadata(source.backup_path(k)).ok())
            .map(|meta| identity(&meta))
            .collect();
        Follower {
            source,
            reading: None,
            partial: Vec::new(),
            known,
        }
    }

    /// Emits every line written since the last call, in order.
    fn poll(
        &mut self,
        emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
        quiet: bool,
    ) -> anyhow::Result<()> {
        let source = self.source;
        let path = &source.path;
        let partial = &mut self.partial;
        let Some(reading) = &mut self.reading else {
            if let Some(file) = open_if_exists(path)? {
                let mut reading = Reading::new(file, path)?;
                // The log appeared and may have been rotated before this poll: the rotated
                // files that were not there when we began waiting came first. Searched from
                // `.1` up, so that a rotation during the search shifts a file to one not seen
                // yet (found twice, taken once) rather than past us.
                let mut earlier: Vec<Reading> = Vec::new();
                for k in 1..=source.backups {
                    let backup = source.backup_path(k);
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
                    file.read_new(partial, source, emit)?;
                    flush_partial(partial, source, emit)?;
                }
                reading.read_new(partial, source, emit)?;
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
                flush_partial(partial, source, emit)?;
                reading
                    .file
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| read_error(path, e))?;
                reading.offset = 0;
            }
            return reading.read_new(partial, source, emit);
        }
        // Rotated. The new file is opened first: whatever is rotated after this is found from
        // it at the next call.
        let Some(newest) = open_if_exists(path)? else {
            return reading.read_new(partial, source, emit);
        };
        let newest = Reading::new(newest, path)?;
        // The old file was renamed (or deleted) after its last write: read to its end.
        reading.read_new(partial, source, emit)?;
        flush_partial(partial, source, emit)?;
        let old_written = reading
            .file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| read_error(path, e))?;
        for mut between in rotated_between(source, reading.id, old_written, newest.id, quiet)? {
            between.read_new(partial, source, emit)?;
            flush_partial(partial, source, emit)?;
        }
        let reading = self.reading.insert(newest);
        reading.read_new(&mut self.partial, source, emit)
    }
}

/// The rotated files of `source` written after `old` and before `newest`, oldest first: those
/// found between the two among `<file>.1`, `<file>.2`, … (newest first on disk). A rotation
/// during the search shifts every file up by one, which keeps their order, so each is found
/// (a file seen twice is taken once).
///
/// `old` is not among them when it was moved away (by logrotate with `dateext`, by hand) or
/// deleted: then the rotated files are older than it, and none is returned. It is not there
/// either when the log was rotated more often than `backups` since it was read: then they were
/// all written after `old` was last written (`old_written`), and those are returned, with a
/// warning that older ones are gone.
fn rotated_between(
    source: &Source,
    old: FileId,
    old_written: SystemTime,
    newest: FileId,
    quiet: bool,
) -> anyhow::Result<Vec<Reading>> {
    let mut found: Vec<Reading> = Vec::new();
    for k in 1..=source.backups {
        let path = source.backup_path(k);
        // A missing number is a rotation under way: the files above it are still there.
        let Some(file) = open_if_exists(&path)? else {
            continue;
        };
        let file = Reading::new(file, &path)?;
        if file.id == old {
            found.reverse();
            return Ok(found);
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
    if !found.is_empty() && !quiet {
        eprintln!(
            "imageserving: {} was rotated more often than its {} rotated files keep since it was \
             last read; the lines of the files deleted in between are missing here",
            source.path.display(),
            source.backups
        );
    }
    found.reverse();
    Ok(found)
}

/// `path` opened for reading, or `None` if it does not exist.
fn open_if_exists(path: &Path) -> anyhow::Result<Option<File>> {
    match File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// Emits an unfinished line as it is: its file will not grow any more.
fn flush_partial(
    partial: &mut Vec<u8>,
    source: &Source,
    emit: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    if !partial.is_empty() {
        if let Some(text) = source.keep(partial) {
            emit(text)?;
        }
        partial.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imageserving_actors::logs::RotatingFile;

    fn source(path: &Path, backups: u32) -> Source {
        Source::rotated(path.to_path_buf(), backups)
    }

    fn lines(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("line {i:04}")).collect()
    }

    fn bytes(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    /// Polls `follower` once, returning the lines it emitted.
    fn poll(follower: &mut Follower) -> Vec<String> {
        let mut got = Vec::new();
        follower
            .poll(
                &mut |line| {
                    got.push(String::from_utf8_lossy(line).into_owned());
                    Ok(())
                },
                true,
            )
            .expect("poll");
        got
    }

    #[test]
    fn last_lines_read_backwards_and_into_rotated_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..100);
        // About 12 lines a file: the last 30 lines span three files.
        let mut log = RotatingFile::new(&path, 120, 5);
        for line in &all {
            log.write_lines(&bytes(std::slice::from_ref(line)))
                .expect("write");
        }
        let src = source(&path, 5);
        let tail = last_lines(&src, 3, true).expect("read").expect("exists");
        assert_eq!(tail.lines, bytes_lines(&all[97..]));
        let tail = last_lines(&src, 30, true).expect("read").expect("exists");
        assert_eq!(tail.lines, bytes_lines(&all[70..]));
        assert_eq!(
            last_lines(&src, 0, true)
                .expect("read")
                .expect("exists")
                .lines,
            Vec::<Vec<u8>>::new()
        );
        // More than every file holds: all that is kept, in order.
        let kept = last_lines(&src, 10_000, true)
            .expect("read")
            .expect("exists");
        let first = String::from_utf8_lossy(&kept.lines[0]).into_owned();
        let from: usize = first["line ".len()..].parse().expect("a number");
        assert_eq!(kept.lines, bytes_lines(&all[from..]));
        assert!(
            last_lines(&source(&dir.path().join("none.log"), 5), 3, true)
                .expect("read")
                .is_none()
        );
    }

    fn bytes_lines(lines: &[String]) -> Vec<Vec<u8>> {
        lines.iter().map(|l| l.clone().into_bytes()).collect()
    }

    #[test]
    fn long_lines_empty_lines_and_an_unfinished_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let long = "y".repeat(3 * CHUNK + 17);
        fs::write(&path, format!("first\n\n{long}\nlast")).expect("write");
        let src = source(&path, 0);
        let tail = last_lines(&src, 3, true).expect("read").expect("exists");
        assert_eq!(
            tail.lines,
            vec![Vec::new(), long.clone().into_bytes(), b"last".to_vec()]
        );
        // Following leaves the unfinished line until it is finished.
        let tail = last_lines(&src, 10, false).expect("read").expect("exists");
        assert_eq!(
            tail.lines,
            vec![b"first".to_vec(), Vec::new(), long.into_bytes()]
        );
        let mut follower = Follower::at(&src, tail.file, tail.end).expect("follow");
        assert!(poll(&mut follower).is_empty());
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b" line\nnext\n"))
            .expect("append");
        assert_eq!(poll(&mut follower), ["last line", "next"]);
    }

    #[test]
    fn a_prefix_keeps_one_components_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("supervisor.stderr");
        fs::write(&path, "is | a\nps | b\nthread panicked\nis | c\nps | d\n").expect("write");
        let src = Source {
            path: path.clone(),
            backups: 0,
            prefix: Some("is | ".into()),
        };
        let tail = last_lines(&src, 5, false).expect("read").expect("exists");
        assert_eq!(tail.lines, vec![b"a".to_vec(), b"c".to_vec()]);
        let mut follower = Follower::at(&src, tail.file, tail.end).expect("follow");
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"ps | e\nis | f\n"))
            .expect("append");
        assert_eq!(poll(&mut follower), ["f"]);
    }

    #[test]
    fn following_survives_many_rotations_between_two_polls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..400);
        let mut log = RotatingFile::new(&path, 100, 20);
        let src = source(&path, 20);
        // Not there yet: waited for.
        let mut follower = Follower::waiting(&src);
        assert!(poll(&mut follower).is_empty());
        let mut got = Vec::new();
        let mut written = 0;
        // Batches of 1 to 60 lines: none, one or up to seven rotations between two polls.
        for batch in [1, 5, 60, 2, 33, 17, 8, 60, 1, 1, 45, 9, 50, 40, 68] {
            for line in &all[written..written + batch] {
                log.write_lines(&bytes(std::slice::from_ref(line)))
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
        let src = source(&path, 20);
        let mut follower = Follower::waiting(&src);
        fs::rename(dir.path().join("c.log.1"), dir.path().join("c.log.2")).expect("shift");
        fs::rename(dir.path().join("c.log.2"), dir.path().join("c.log.3")).expect("shift");
        // Then, before the first poll: written, rotated twice, written again.
        let all = lines(0..40);
        let mut log = RotatingFile::new(&path, 100, 20);
        for line in &all {
            log.write_lines(&bytes(std::slice::from_ref(line)))
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
        let mut log = RotatingFile::new(&path, 100, 2);
        let src = source(&path, 2);
        let write = |log: &mut RotatingFile, from: usize, to: usize| {
            for line in &all[from..to] {
                log.write_lines(&bytes(std::slice::from_ref(line)))
                    .expect("write");
                // Modification times are coarse (a clock tick): keep the files' apart.
                std::thread::sleep(Duration::from_millis(3));
            }
        };
        write(&mut log, 0, 5);
        let mut follower = Follower::waiting(&src);
        assert_eq!(poll(&mut follower), all[..5]);
        // Five rotations: the file read and the next two are deleted, the last two kept.
        write(&mut log, 5, 55);
        let got = poll(&mut follower);
        // The rest of the file read, then the two kept files and the live one.
        assert_eq!(got[..5], all[5..10], "{got:?}");
        assert_eq!(got[5..], all[30..55], "{got:?}");
        // And on as usual.
        write(&mut log, 55, 60);
        assert_eq!(poll(&mut follower), all[55..60]);
    }

    #[test]
    fn following_a_log_moved_away_by_logrotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let all = lines(0..30);
        let mut log = RotatingFile::new(&path, 100, 2);
        // One built-in rotation: c.log.1 holds the first ten lines.
        log.write_lines(&bytes(&all[..15])).expect("write");
        let src = source(&path, 2);
        let tail = last_lines(&src, 2, false).expect("read").expect("exists");
        let mut follower = Follower::at(&src, tail.file, tail.end).expect("follow");
        log.write_lines(&bytes(&all[15..20])).expect("write");
        // logrotate with `dateext`: renamed away; the writer starts a new file at its next line.
        fs::rename(&path, dir.path().join("c.log-20260102")).expect("rename");
        log.write_lines(&bytes(&all[20..30])).expect("write");
        // The old file to its end, then the new one; nothing of c.log.1 again.
        assert_eq!(poll(&mut follower), all[15..30]);
    }

    #[test]
    fn following_a_log_replaced_without_backups_or_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let src = source(&path, 0);
        let mut log = RotatingFile::new(&path, 40, 0);
        log.write_lines(b"one\n").expect("write");
        let tail = last_lines(&src, 10, false).expect("read").expect("exists");
        assert_eq!(tail.lines, vec![b"one".to_vec()]);
        let mut follower = Follower::at(&src, tail.file, tail.end).expect("follow");
        // From the second, each write of 30 bytes replaces the file: one replacement between
        // two polls loses nothing.
        let mut got = Vec::new();
        for i in 0..5 {
            let line = format!("{i:029}");
            log.write_lines(format!("{line}\n").as_bytes())
                .expect("write");
            got.extend(poll(&mut follower));
            assert_eq!(got.last(), Some(&line));
        }
        assert_eq!(got.len(), 5);
        // Truncated in place (logrotate's copytruncate), then written again.
        fs::write(&path, "").expect("truncate");
        assert!(poll(&mut follower).is_empty());
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"after\n"))
            .expect("append");
        assert_eq!(poll(&mut follower), ["after"]);
    }
}
