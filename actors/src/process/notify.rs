//! The notification socket: a Unix datagram socket on which the components' processes tell
//! the supervisor things, in the format of systemd's `sd_notify(3)` (`KEY=VALUE` lines in one
//! datagram), its path in their `NOTIFY_SOCKET`.
//!
//! The sender is known by the kernel: every datagram carries the sending process's credentials
//! (`SO_PASSCRED`, `SCM_CREDENTIALS`), so a process cannot speak for another, and the
//! supervisor acts only on datagrams from the processes of its own components. The socket file
//! is its owner's alone (mode 0600), in the home's `run/`.
//!
//! What is understood (see `crate::supervisor`): `READY=1` from a component's main process, for
//! `ready = { notify = true }` ([`crate::spec::Ready::Notify`]); `X_IMAGESERVING_POISON=<host:port>`,
//! sent by a server that quarantined a poison request of the component at that address: the
//! crashes it caused do not count against that component's restart budget.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr, UnixCredentials,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// The variable that gives a component's processes the socket's path, as systemd names it.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The largest datagram read; longer ones are cut (nothing we understand is long).
const MAX_DATAGRAM: usize = 4096;

/// One datagram: who sent it, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The sending process, as the kernel says.
    pub pid: u32,
    /// Its `KEY=VALUE` lines, in order; lines without `=` are left out.
    pub fields: Vec<(String, String)>,
}

/// The bound socket; its file is removed when it is dropped.
#[derive(Debug)]
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Binds the socket at `path`, replacing a socket file left there by an earlier run (any
    /// other kind of file is an error). Needs a tokio runtime.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt as _;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(io::Error::from)?;
        setsockopt(&fd, sockopt::PassCred, &true).map_err(io::Error::from)?;
        let addr = UnixAddr::new(path).map_err(io::Error::from)?;
        bind(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let socket = UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(fd))?;
        Ok(NotifySocket {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Its path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram that carries its sender's credentials (the kernel adds them to every
    /// one while `SO_PASSCRED` is set; one without is skipped).
    pub async fn recv(&self) -> io::Result<Notification> {
        loop {
            self.socket.readable().await?;
            let fd = self.socket.as_raw_fd();
            let received = self.socket.try_io(Interest::READABLE, || {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                let mut cmsg = nix::cmsg_space!(UnixCredentials);
                let (pid, len) = {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC)
                        .map_err(io::Error::from)?;
                    let pid = msg.cmsgs().map_err(io::Error::from)?.find_map(|c| match c {
                        ControlMessageOwned::ScmCredentials(creds) => {
                            u32::try_from(creds.pid()).ok()
                        }
                        _ => None,
                    });
                    (pid, msg.bytes.min(MAX_DATAGRAM))
                };
                Ok((pid, parse(&buf[..len])))
            });
            match received {
                Ok((Some(pid), fields)) => return Ok(Notification { pid, fields }),
                Ok((None, _)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The `KEY=VALUE` lines of a datagram.
fn parse(datagram: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[tokio::test]
    async fn datagrams_arrive_with_the_senders_pid_and_fields() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("notify.sock");
        // A stale socket file from an earlier run is replaced.
        drop(UnixDatagram::bind(&path).expect("a stale socket"));
        let socket = NotifySocket::bind(&path).expect("bind");
        let mode = std::fs::metadata(&path)
            .expect("the file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = UnixDatagram::unbound().expect("a client");
        client
            .send_to(
                b"READY=1\nX_IMAGESERVING_POISON=127.0.0.1:27345\nnonsense",
                &path,
            )
            .expect("send");
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv())
            .await
            .expect("in time")
            .expect("a datagram");
        assert_eq!(got.pid, std::process::id());
        assert_eq!(
            got.fields,
            [
                ("READY".to_owned(), "1".to_owned()),
                (
                    "X_IMAGESERVING_POISON".to_owned(),
                    "127.0.0.1:27345".to_owned()
                )
            ]
        );
        drop(socket);
        assert!(!path.exists(), "removed with the socket");
    }

    #[test]
    fn another_kind_of_file_is_not_replaced() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("notify.sock");
        std::fs::write(&path, b"precious").expect("a file");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _enter = runtime.enter();
        let err = NotifySocket::bind(&path).expect_err("not a socket");
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
    }
}
