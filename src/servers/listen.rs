//! Where a component server's listening socket comes from: the one it was given with the
//! systemd protocol (`LISTEN_PID`, `LISTEN_FDS`, descriptor 3), as the supervisor passes a
//! socket it holds, or else one it binds itself on the address it was told.
//!
//! A socket that is passed outlives the process: while the process restarts, connections wait
//! in the socket's backlog instead of being refused.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::Context;
use tokio::net::TcpListener;

/// The first descriptor of the protocol (`SD_LISTEN_FDS_START`).
const FIRST_PASSED_FD: i32 = 3;

/// The socket passed to this process if there is one, else a new one bound to `listen`.
pub async fn listener(listen: &str) -> anyhow::Result<TcpListener> {
    if let Some(passed) = passed_listener()? {
        return Ok(passed);
    }
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// The first socket passed to this process, if the protocol's variables are meant for it.
///
/// The variables are left in the environment (changing it while the runtime's threads run is
/// a data race with any C code reading it): a child of ours would inherit them, but they name
/// our pid, not its own, and the protocol says to ignore them then. Our servers start no child.
fn passed_listener() -> anyhow::Result<Option<TcpListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let count = passed_count(pid.as_deref(), fds.as_deref(), std::process::id())
        .map_err(anyhow::Error::msg)?;
    if count == 0 {
        return Ok(None);
    }
    if !is_listening_socket(FIRST_PASSED_FD) {
        anyhow::bail!(
            "LISTEN_FDS={count} was set for this process, but descriptor {FIRST_PASSED_FD} \
             is not a listening socket"
        );
    }
    // SAFETY: the protocol hands descriptor 3 to this process, and it was open at `exec` (it is
    // a listening socket now), so nothing in this process has taken that number since.
    let fd = unsafe { OwnedFd::from_raw_fd(FIRST_PASSED_FD) };
    let listener = std::net::TcpListener::from(fd);
    listener
        .set_nonblocking(true)
        .context("the passed socket")?;
    TcpListener::from_std(listener)
        .map(Some)
        .context("the passed socket")
}

/// How many sockets the protocol's variables pass to process `me`: none when they are absent
/// or meant for another process (`LISTEN_PID` names it); an error when `LISTEN_FDS` is not a
/// count.
fn passed_count(pid: Option<&str>, fds: Option<&str>, me: u32) -> Result<usize, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(0);
    };
    if pid.trim().parse::<u32>().ok() != Some(me) {
        return Ok(0);
    }
    fds.trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={fds:?} is not a number of sockets"))
}

/// Whether `fd` is a socket that listens (`SO_ACCEPTCONN`).
fn is_listening_socket(fd: i32) -> bool {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`; on a descriptor that is
    // not a socket (or not open) it fails and writes nothing.
    let done = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &raw mut len,
        )
    };
    done == 0 && accepting == 1
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn the_variables_count_only_for_the_process_they_name() {
        assert_eq!(passed_count(None, None, 42), Ok(0));
        assert_eq!(passed_count(Some("42"), None, 42), Ok(0));
        assert_eq!(passed_count(None, Some("1"), 42), Ok(0));
        assert_eq!(passed_count(Some("41"), Some("1"), 42), Ok(0));
        assert_eq!(passed_count(Some("42"), Some("1"), 42), Ok(1));
        assert_eq!(passed_count(Some("42"), Some("0"), 42), Ok(0));
        assert!(passed_count(Some("42"), Some("one"), 42).is_err());
    }

    #[test]
    fn only_a_listening_socket_counts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        assert!(is_listening_socket(listener.as_raw_fd()));
        let stream =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        assert!(!is_listening_socket(stream.as_raw_fd()));
        let file = std::fs::File::open("/dev/null").expect("open");
        assert!(!is_listening_socket(file.as_raw_fd()));
        assert!(!is_listening_socket(-1));
    }
}
