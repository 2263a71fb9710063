//! Just enough of `/proc` for the tests: which processes carry a home's marker, whether a
//! process is alive, and how to kill and reap one without ever hitting a reused pid.
//!
//! This is written again here on purpose rather than borrowed from
//! `imageserving_actors::process`: the tests check that code's promises, so they must not
//! see the processes through its eyes.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// One process, identified by its pid *and* its start time, so that a pid the kernel has handed
/// to someone else since is never mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProcId {
    /// The process id.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: clock ticks after boot when it started.
    start_time: u64,
}

impl ProcId {
    /// The process that has `pid` right now, if any (zombies included).
    pub(crate) fn of(pid: u32) -> Option<ProcId> {
        let stat = Stat::read(pid)?;
        Some(ProcId {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this very process still runs (a zombie does not).
    pub(crate) fn is_alive(&self) -> bool {
        Stat::read(self.pid).is_some_and(|s| s.start_time == self.start_time && s.is_alive())
    }
}

/// The fields of `/proc/PID/stat` the tests need.
#[derive(Clone, Debug)]
pub(crate) struct Stat {
    /// The command name (at most 15 bytes), without its parentheses.
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, `X`, ...
    pub state: char,
    /// The parent's pid.
    pub ppid: u32,
    /// The process group id.
    pub pgrp: u32,
    /// The session id: the pid of a process that called `setsid`.
    pub session: u32,
    /// Clock ticks after boot when it started.
    pub start_time: u64,
}

impl Stat {
    /// The stat of `pid`, `None` when there is no such process.
    pub(crate) fn read(pid: u32) -> Option<Stat> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: it ends at the *last* `)`.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
        // `rest[0]` is field 3 (state), so field n is `rest[n - 3]`.
        Some(Stat {
            comm,
            state: rest.first()?.chars().next()?,
            ppid: rest.get(1)?.parse().ok()?,
            pgrp: rest.get(2)?.parse().ok()?,
            session: rest.get(3)?.parse().ok()?,
            start_time: rest.get(19)?.parse().ok()?,
        })
    }

    /// Not a zombie, not dead.
    pub(crate) fn is_alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Whether the NUL-separated environment of `pid` holds exactly the entry `marker`
/// (`NAME=value`). A zombie's environment reads empty, so it never matches.
fn carries(pid: u32, marker: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|&b| b == 0)
            .any(|entry| entry == marker.as_bytes())
    })
}

/// Live processes (other than this test process) whose environment carries `marker`.
pub(crate) fn marked(marker: &str) -> Vec<ProcId> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && carries(pid, marker))
        .filter_map(|pid| {
            let stat = Stat::read(pid).filter(Stat::is_alive)?;
            Some(ProcId {
                pid,
                start_time: stat.start_time,
            })
        })
        .collect()
}

/// Sends `signal` to `id` if it is still that process. The process is pinned with a pidfd
/// first, then checked, so a pid reused in between is never signalled.
pub(crate) fn signal(id: ProcId, signal: i32) -> bool {
    let Ok(pidfd) = pidfd_open(id.pid) else {
        return false;
    };
    if !id.is_alive() {
        return false;
    }
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    rc == 0
}

/// SIGKILLs `id` if it is still that process.
pub(crate) fn kill(id: ProcId) -> bool {
    signal(id, libc::SIGKILL)
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just created this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reaps those of `ids` that are (or are about to become) zombie children of this process:
/// a daemonized supervisor and the orphans of a killed one are reparented to us, the
/// subreaper. Processes of others, and pids that now name another process, are left alone,
/// so a `std::process::Child` of another test thread never loses its exit status to us.
pub(crate) fn reap(ids: &[ProcId], timeout: Duration) {
    let me = std::process::id();
    let until = Instant::now() + timeout;
    for id in ids {
        while let Some(stat) = Stat::read(id.pid) {
            if stat.start_time != id.start_time || stat.ppid != me {
                break;
            }
            if !stat.is_alive() {
                let Ok(pid) = i32::try_from(id.pid) else {
                    break;
                };
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                break;
            }
            // Our child, still running (it was just killed): give it a moment to die.
            if Instant::now() >= until {
                eprintln!(
                    "e2e: child {} ({}) did not die in time; leaving it",
                    id.pid, stat.comm
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
