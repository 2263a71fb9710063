//! Reading `/proc`: a process's name, state, parent, group and owner, the children of a
//! process, and the live processes of this user (all of them, or only those below this one).
//!
//! A process may vanish between two reads: every reader here answers `None` (or skips it)
//! rather than failing.

use std::collections::BTreeSet;
use std::fs;
use std::io;

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
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.filter_map(Result::ok) {
        let Ok(list) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        out.extend(
            list.split_ascii_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

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
    fn real_uid_comes_from_the_status_file() {
        let status = "Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_real_uid(status), Some(1000));
        assert_eq!(parse_real_uid("Name:\tsh\n"), None);
    }
}
