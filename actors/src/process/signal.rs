//! Signalling without hitting a stranger: a component's process group (never groups 0 and 1,
//! never the daemon's own), or one process pinned by a pidfd, so that a pid reused in between
//! is never hit.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpgrp, Pid};

/// Sends `signal` to the process group `pgid`. A group that no longer exists is not an error.
///
/// Refuses groups 0 and 1 and the daemon's own group. Safe while the caller holds the leader's
/// unreaped [`Spawned::child`](super::Spawned::child) or the group has members: until then the
/// number cannot be reused.
pub fn signal_group(pgid: u32, signal: i32) -> io::Result<()> {
    let group = checked_pgid(pgid)?;
    // SAFETY: killpg only takes integers and has no memory-safety preconditions.
    if unsafe { libc::killpg(group, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(io::Error::new(
        err.kind(),
        format!("sending signal {signal} to process group {pgid}: {err}"),
    ))
}

/// `pgid` as a group this process may signal: not 0 or 1, not the daemon's own.
pub(super) fn checked_pgid(pgid: u32) -> io::Result<libc::pid_t> {
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}: {why}"),
        ))
    };
    match libc::pid_t::try_from(pgid) {
        Ok(group) if group > 1 && group == getpgrp().as_raw() => refuse("it is the daemon's own"),
        Ok(group) if group > 1 => Ok(group),
        _ => refuse("not a component's group"),
    }
}

/// SIGKILLs `pid` if `check(pid)` holds after the process was pinned with a pidfd: if the pid
/// was reused before the pidfd was opened, the check sees the new process; if it is reused
/// after, the pidfd still names the old one, and the signal fails.
pub(super) fn kill_checked(pid: u32, check: impl Fn(u32) -> bool) -> bool {
    match pidfd_open(pid) {
        Ok(pidfd) => check(pid) && pidfd_kill(&pidfd).is_ok(),
        // Kernels before 5.3: the check is as close to the kill as it gets.
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            check(pid)
                && i32::try_from(pid)
                    .is_ok_and(|raw| kill(Pid::from_raw(raw), Signal::SIGKILL).is_ok())
        }
        // Gone already (ESRCH), or otherwise out of reach.
        Err(_) => false,
    }
}

fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::spawn;
    use crate::process::testing::{request, unique_tree, wait_exit, Reaper};

    #[tokio::test]
    async fn signal_group_accepts_a_dead_group_and_refuses_dangerous_ones() {
        let tree = unique_tree("dead");
        let _reaper = Reaper(tree.clone());
        let mut spawned = spawn(request(&tree, "exit 0", None)).await.expect("spawn");
        assert!(wait_exit(&mut spawned).await.success());
        signal_group(spawned.pid, libc::SIGTERM).expect("a dead group is fine");

        for pgid in [0, 1, u32::MAX] {
            assert!(signal_group(pgid, 0).is_err(), "{pgid}");
        }
        let own = u32::try_from(getpgrp().as_raw()).expect("pgid");
        assert!(signal_group(own, 0).is_err());
    }
}
