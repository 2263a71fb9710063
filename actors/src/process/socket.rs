//! Listening sockets the supervisor binds for its components: held across restarts, so that
//! while a component's process is replaced, connections wait in the socket's backlog instead of
//! being refused; and the check that a component's port is not already someone else's.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
};

/// A listening TCP socket on `addr` with room for `backlog` connections waiting to be accepted
/// (the kernel caps it at `net.core.somaxconn`). Close-on-exec: it reaches a component's
/// process only as a socket passed on purpose. A port held by another program is an error
/// that says so.
pub fn bind_listener(addr: SocketAddr, backlog: u32) -> io::Result<OwnedFd> {
    let fd = bound(addr)?;
    listen(&fd, backlog_of(backlog)?).map_err(|e| named(addr, e))?;
    Ok(fd)
}

/// Changes the backlog of a listening socket (`listen` again, which Linux allows); the
/// connections already waiting stay.
pub fn set_backlog(fd: &OwnedFd, backlog: u32) -> io::Result<()> {
    listen(fd, backlog_of(backlog)?).map_err(io::Error::from)
}

/// `backlog` as `listen` takes it, capped at what the system allows.
fn backlog_of(backlog: u32) -> io::Result<Backlog> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    Backlog::new(backlog)
        .or_else(|_| Backlog::new(i32::from(Backlog::MAXCONN)))
        .map_err(io::Error::from)
}

/// Whether `addr` can be listened on now: an error naming the port when another program holds
/// it. For a component that binds its port itself, checked before each start, so that the
/// readiness probe never takes the other program's answers for the component's.
pub fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    let fd = bound(addr)?;
    // Bound is not enough: another socket with SO_REUSEADDR may be bound but not listening.
    listen(&fd, Backlog::new(1).map_err(io::Error::from)?).map_err(|e| named(addr, e))
}

/// A TCP socket bound to `addr`, with `SO_REUSEADDR` (a port whose last connections are in
/// TIME_WAIT is free).
fn bound(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd =
        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
    let done = match addr {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4)),
        SocketAddr::V6(v6) => bind(fd.as_raw_fd(), &SockaddrIn6::from(v6)),
    };
    done.map_err(|e| named(addr, e))?;
    Ok(fd)
}

/// The address of a listening TCP socket handed to us (by systemd's socket activation, say),
/// made close-on-exec like the ones we bind; an error when it is not a listening TCP socket.
pub fn listening_address(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let listening = getsockopt(fd, sockopt::AcceptConn).map_err(io::Error::from)?;
    let stream = getsockopt(fd, sockopt::SockType).map_err(io::Error::from)? == SockType::Stream;
    if !listening || !stream {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening stream socket",
        ));
    }
    let local: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(io::Error::from)?;
    let addr = if let Some(v4) = local.as_sockaddr_in() {
        SocketAddr::from(*v4)
    } else if let Some(v6) = local.as_sockaddr_in6() {
        SocketAddr::from(*v6)
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a TCP socket (a Unix socket?)",
        ));
    };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    Ok(addr)
}

/// The error of binding or listening on `addr`, in words an operator acts on.
fn named(addr: SocketAddr, e: nix::Error) -> io::Error {
    let err = io::Error::from(e);
    match e {
        nix::Error::EADDRINUSE => io::Error::new(
            err.kind(),
            format!("port {} is in use by another program", addr.port()),
        ),
        nix::Error::EACCES => io::Error::new(
            err.kind(),
            format!("cannot listen on {addr}: {err} (ports below 1024 need root)"),
        ),
        _ => io::Error::new(err.kind(), format!("cannot listen on {addr}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_socket_accepts_and_a_taken_port_is_named() {
        let fd = bind_listener("127.0.0.1:0".parse().expect("address"), 64).expect("bind");
        let listener = std::net::TcpListener::from(fd);
        let addr = listener.local_addr().expect("address");
        // Connections complete in the backlog while nobody accepts.
        let _waiting = std::net::TcpStream::connect(addr).expect("connect");

        let err = bind_listener(addr, 64).expect_err("the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(
            err.to_string(),
            format!("port {} is in use by another program", addr.port())
        );
        let err = check_port_free(addr).expect_err("the port is taken");
        assert!(
            err.to_string().contains("in use by another program"),
            "{err}"
        );

        drop(listener);
        check_port_free(addr).expect("free once closed");
    }

    #[test]
    fn a_passed_listener_is_checked_and_its_address_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let fd = OwnedFd::from(listener);
        assert_eq!(listening_address(&fd).expect("a listener"), addr);
        // Bound but not listening: refused.
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let err = listening_address(&OwnedFd::from(socket)).expect_err("not a listener");
        assert!(err.to_string().contains("not a listening"), "{err}");
    }
}
