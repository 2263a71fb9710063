//! Reading `/proc`: a process's name, state, parent, group and owner, the children of a
//! process, and the live processes of this user (all of them, or only those below this one);
//! and [`ProcFiles`], a process's files kept open to be read again.
//!
//! A process may vanish between two reads: every reader here answers `None` (or skips it)
//! rather than failing.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use nix::unistd::geteuid;

/// The fields of `/proc/PID/stat` this module needs.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub(super) comm: String,
    pub(super) state: char,
    pub(super) ppid: i32,
    pub(super) pgrp: i32,
    pub(super) session: i32,
}

impl ProcStat {
    pub(super) fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `pid (comm) state ppid pgrp session ...`; `comm` may hold spaces and parentheses, so
/// the fields are read after the last `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        ppid,
        pgrp,
        session,
    })
}

pub(super) fn read_stat(pid: u32) -> Option<ProcStat> {
    let bytes = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&String::from_utf8_lossy(&bytes))
}

/// The real uid on the `Uid:` line of `/proc/PID/status`.
fn parse_real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(super) fn read_real_uid(pid: u32) -> Option<u32> {
    parse_real_uid(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `Tgid:` line of `/proc/PID/status`: the process a task belongs to (itself, unless it is
/// a thread other than the main one).
fn parse_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` names a process rather than another thread of one (`/proc/TID` opens for every
/// thread, and its `stat` shows the parent of the thread's process); `false` if it is gone.
pub(super) fn is_process(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| parse_tgid(&status))
        == Some(pid)
}

/// The last pid the kernel gave out in this pid namespace (the last field of `/proc/loadavg`),
/// to a process or a thread. Pids are given out in increasing order until they wrap around.
pub(super) fn last_pid() -> Option<u32> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    loadavg.split_ascii_whitespace().nth(4)?.parse().ok()
}

/// Every pid in `/proc` but this process's own.
pub(super) fn other_pids() -> io::Result<impl Iterator<Item = u32>> {
    let me = std::process::id();
    let entries = fs::read_dir("/proc")
        .map_err(|e| io::Error::new(e.kind(), format!("listing /proc: {e}")))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| pid != me))
}

/// A live (non-zombie) process of this user, other than the daemon itself.
pub(super) struct OwnProcess {
    pub(super) pid: u32,
    pub(super) stat: ProcStat,
}

/// Lists live processes of this user. Processes that vanish or cannot be read are skipped.
pub(super) fn own_live_processes() -> io::Result<Vec<OwnProcess>> {
    let uid = geteuid().as_raw();
    Ok(other_pids()?
        .filter_map(|pid| {
            let stat = read_stat(pid).filter(ProcStat::is_alive)?;
            (read_real_uid(pid)? == uid).then_some(OwnProcess { pid, stat })
        })
        .collect())
}

/// The children of `pid`, from every thread's `children` list.
pub(super) fn children_of(pid: u32) -> Vec<u32> {
    children_of_into(pid, &mut Vec::new())
}

/// [`children_of`], reading the lists into `buf` (which only grows).
///
/// Each list is read with reads of at least a page (see [`read_from_start`]): each read of a
/// `children` list makes the kernel find its place in the list again and render up to a page
/// (about 0.4 µs a child), so the small first reads of `read_to_string` made the daemon's list
/// of 1000 children cost 1.6 ms instead of 0.4 ms.
pub(super) fn children_of_into(pid: u32, buf: &mut Vec<u8>) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.filter_map(Result::ok) {
        let Ok(file) = File::open(task.path().join("children")) else {
            continue;
        };
        let Ok(list) = read_from_start(&file, buf, false) else {
            continue;
        };
        out.extend(
            list.split(u8::is_ascii_whitespace)
                .filter_map(|p| u32::try_from(number(p)?).ok()),
        );
    }
    out
}

/// The smallest read of a `/proc` file: the kernel renders at most a page per read.
const LIST_READ: usize = 4096;

/// Live processes of this user below this one, except `skip` and the processes below them.
pub(super) fn own_live_below(skip: BTreeSet<u32>) -> Vec<OwnProcess> {
    let uid = geteuid().as_raw();
    let mut out = Vec::new();
    let mut seen = skip;
    let mut next = children_of(std::process::id());
    while let Some(pid) = next.pop() {
        if !seen.insert(pid) {
            continue;
        }
        next.extend(children_of(pid));
        if let Some(stat) = read_stat(pid).filter(ProcStat::is_alive) {
            if read_real_uid(pid) == Some(uid) {
                out.push(OwnProcess { pid, stat });
            }
        }
    }
    out
}

/// What a memory sample needs of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Usage {
    /// Not a zombie: it still has its memory.
    pub(super) alive: bool,
    /// Its threads: with more than one, some of its children may be listed under another
    /// thread than the main one.
    pub(super) threads: u64,
    /// Resident pages (`statm`'s second field: the figure of `ps`, `top` and `VmRSS`; the `rss`
    /// of `/proc/PID/stat` is an estimate that may be short by a few hundred KiB).
    pub(super) resident_pages: u64,
}

/// Parses the size and resident pages of `/proc/PID/statm`: (whether it has memory at all,
/// resident pages). A zombie's reads all zeros.
pub(super) fn parse_statm(statm: &[u8]) -> Option<(bool, u64)> {
    let mut fields = statm
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty());
    let size = number(fields.next()?)?;
    let resident = number(fields.next()?)?;
    Some((size > 0, resident))
}

/// A decimal number of ASCII digits.
fn number(digits: &[u8]) -> Option<u64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A process's `statm`, its main thread's `children` and its `task` directory, kept open so that
/// reading them again costs one system call each instead of an open, a read and a close (on
/// this kind of machine about 6 µs a process instead of 25).
///
/// The files stay bound to the process they were opened for: once it is gone they read as gone
/// (an error), even when its pid has been given to another process. `statm` and `children`
/// each hold a page of kernel buffer while open; the directory, opened with `O_PATH`, none.
#[derive(Debug)]
pub(super) struct ProcFiles {
    statm: File,
    children: File,
    /// `/proc/PID/task`, whose link count is two plus the number of threads.
    task: File,
}

impl ProcFiles {
    /// Opens the files of `pid`; `None` if it is gone.
    pub(super) fn open(pid: u32) -> Option<Self> {
        Some(Self {
            statm: File::open(format!("/proc/{pid}/statm")).ok()?,
            children: File::open(format!("/proc/{pid}/task/{pid}/children")).ok()?,
            task: OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(format!("/proc/{pid}/task"))
                .ok()?,
        })
    }

    /// The process's threads and resident memory now; `None` once it is gone.
    pub(super) fn usage(&self, buf: &mut Vec<u8>) -> Option<Usage> {
        let (alive, resident_pages) = parse_statm(read_from_start(&self.statm, buf, true).ok()?)?;
        let threads = self.task.metadata().ok()?.nlink().saturating_sub(2);
        Some(Usage {
            alive,
            threads,
            resident_pages,
        })
    }

    /// The process's resident pages now (one read of `statm`); `None` once it is gone or a
    /// zombie.
    pub(super) fn resident_pages(&self, buf: &mut Vec<u8>) -> Option<u64> {
        let (alive, pages) = parse_statm(read_from_start(&self.statm, buf, true).ok()?)?;
        alive.then_some(pages)
    }

    /// Appends the children of the process's main thread to `out`.
    pub(super) fn main_thread_children(&self, buf: &mut Vec<u8>, out: &mut Vec<u32>) {
        if let Ok(list) = read_from_start(&self.children, buf, false) {
            out.extend(
                list.split(u8::is_ascii_whitespace)
                    .filter_map(|p| u32::try_from(number(p)?).ok()),
            );
        }
    }
}

/// Reads a `/proc` file from its start into `buf` (which only grows) with `pread`: a read at
/// offset 0 makes the kernel render the file afresh, so an open file can be read again and
/// again. A file of one record (`statm`, `stat`) is complete once a read returns less than
/// asked; a list (`children`) may come in page-sized pieces, so it is read until a read
/// returns nothing.
pub(super) fn read_from_start<'a>(
    file: &File,
    buf: &'a mut Vec<u8>,
    one_record: bool,
) -> io::Result<&'a [u8]> {
    if buf.len() < LIST_READ {
        buf.resize(LIST_READ, 0);
    }
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if one_record && filled < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..filled])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_after_the_last_parenthesis() {
        let stat = parse_stat("42 (a (b) c) Z 1 40 41 0 -1").expect("parses");
        assert_eq!(
            stat,
            ProcStat {
                comm: "a (b) c".into(),
                state: 'Z',
                ppid: 1,
                pgrp: 40,
                session: 41
            }
        );
        assert!(!stat.is_alive());
        assert!(parse_stat("42 (x) S").is_none());
    }

    #[test]
    fn real_uid_and_process_come_from_the_status_file() {
        let status = "Name:\tsh\nTgid:\t4242\nPid:\t4243\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_real_uid(status), Some(1000));
        assert_eq!(parse_real_uid("Name:\tsh\n"), None);
        assert_eq!(parse_tgid(status), Some(4242));
        assert_eq!(parse_tgid("Name:\tsh\n"), None);
    }

    #[test]
    fn statm_gives_the_resident_pages() {
        assert_eq!(parse_statm(b"730 422 394 5 0 89 0\n"), Some((true, 422)));
        assert_eq!(parse_statm(b"0 0 0 0 0 0 0\n"), Some((false, 0)));
        assert_eq!(parse_statm(b"730"), None);
    }

    #[test]
    fn kept_files_read_fresh_figures_and_go_stale_with_their_process() {
        let me = std::process::id();
        let files = ProcFiles::open(me).expect("our own files");
        let mut buf = Vec::new();
        let before = files.usage(&mut buf).expect("alive");
        assert!(before.alive && before.resident_pages > 0 && before.threads >= 1);
        // Touch 16 MiB more: the same open file shows it.
        let block = std::hint::black_box(vec![1u8; 16 << 20]);
        let after = files.usage(&mut buf).expect("alive");
        assert!(
            after.resident_pages > before.resident_pages + 2048,
            "{before:?} -> {after:?}"
        );
        drop(block);

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        let files = ProcFiles::open(pid).expect("the child's files");
        assert!(files
            .usage(&mut buf)
            .is_some_and(|u| u.alive && u.threads == 1));
        let mut children = Vec::new();
        files.main_thread_children(&mut buf, &mut children);
        assert!(children.is_empty());
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(
            files.usage(&mut buf).is_none(),
            "a reaped process reads as gone"
        );
    }

    #[test]
    fn files_are_read_whole_and_again() {
        let mut buf = Vec::new();
        let file = File::open("/proc/self/stat").expect("stat");
        let once = read_from_start(&file, &mut buf, true)
            .expect("read")
            .to_vec();
        assert!(parse_stat(&String::from_utf8_lossy(&once)).is_some());
        let again = read_from_start(&file, &mut buf, true)
            .expect("read again")
            .to_vec();
        assert!(parse_stat(&String::from_utf8_lossy(&again)).is_some());
        // Longer than the first buffer: the buffer grows, the file is read in pieces.
        let entry = format!("IMAGESERVING_TEST_PADDING={}", "x".repeat(5000));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("IMAGESERVING_TEST_PADDING", &entry[26..])
            .spawn()
            .expect("sleep");
        let file = File::open(format!("/proc/{}/environ", child.id())).expect("environ");
        // The spawn may return before the new program's environment is in place.
        let start = std::time::Instant::now();
        let mut read = Vec::new();
        while read.is_empty() && start.elapsed() < std::time::Duration::from_secs(10) {
            read = read_from_start(&file, &mut buf, false)
                .expect("read")
                .to_vec();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(read.split(|&b| b == 0).any(|e| e == entry.as_bytes()));
    }
}
