//! The listening sockets systemd hands a socket-activated daemon (`sd_listen_fds(3)`): taken at
//! start, each given to the component it is meant for as that component's held socket.
//!
//! systemd passes them as descriptors 3, 4, … with `LISTEN_FDS` (how many), `LISTEN_PID` (the
//! process they are for: ours, or they are not ours to take) and `LISTEN_FDNAMES` (the socket
//! units' `FileDescriptorName=`, `:`-separated). A socket is meant for the component named by
//! its name, or else for the component whose held socket has its port. One meant for no
//! component is closed with a warning; one meant for a component that does not hold its socket,
//! or on another port, is an error that stops the start (see
//! `imageserving_actors::SupervisorHandle::spawn_with_listeners`). The unit files are in
//! `docs/operations.md` (*Socket activation*).

use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

use imageserving_actors::{process, TreeSpec};
use nix::fcntl::{fcntl, FcntlArg};
use tracing::{info, warn};

/// The first descriptor systemd passes.
const FIRST_FD: RawFd = 3;
/// More than this many passed descriptors is not a socket activation we understand.
const MAX_FDS: usize = 1024;

/// The sockets passed to this process by `vars` (the environment) as the protocol says, with
/// their names (empty when unnamed). None when the variables are absent or for another process.
pub(super) fn take(vars: impl Fn(&str) -> Option<String>) -> Vec<(String, OwnedFd)> {
    let pid = vars("LISTEN_PID").and_then(|pid| pid.trim().parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return Vec::new();
    }
    let Some(count) = vars("LISTEN_FDS").and_then(|n| n.trim().parse::<usize>().ok()) else {
        return Vec::new();
    };
    if count > MAX_FDS {
        warn!(count, "LISTEN_FDS is implausibly large; taking no socket");
        return Vec::new();
    }
    let names = vars("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    let mut taken = Vec::new();
    for fd in (FIRST_FD..).take(count) {
        let name = names.next().unwrap_or_default().to_owned();
        // A descriptor that is not open is not ours to wrap.
        // SAFETY: borrowed only for the one fcntl call, which fails harmlessly on a closed fd.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        if fcntl(borrowed, FcntlArg::F_GETFD).is_err() {
            warn!(fd, %name, "LISTEN_FDS names a descriptor that is not open");
            continue;
        }
        // SAFETY: the protocol hands these descriptors to this process (LISTEN_PID is ours),
        // they are open, and nothing else in the process owns them.
        taken.push((name, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    taken
}

/// Assigns the `handed` sockets to the components of `tree`: by name, or else by the port of a
/// component that holds its socket. The sockets meant for none are closed with a warning.
pub(super) fn assign(tree: &TreeSpec, handed: Vec<(String, OwnedFd)>) -> Vec<(String, OwnedFd)> {
    let mut assigned: Vec<(String, OwnedFd)> = Vec::new();
    for (name, fd) in handed {
        let by_name = tree.components.iter().find(|c| c.name == name);
        let port = process::listening_address(&fd).ok().map(|addr| addr.port());
        let by_port = || {
            tree.components.iter().find(|c| {
                c.socket
                    .as_ref()
                    .is_some_and(|socket| Some(socket.addr.port()) == port)
            })
        };
        match by_name.or_else(by_port) {
            Some(component) if !assigned.iter().any(|(n, _)| *n == component.name) => {
                info!(component = %component.name, socket = %name, ?port, "taking the listening socket systemd passed");
                assigned.push((component.name.clone(), fd));
            }
            _ => {
                warn!(socket = %name, ?port, "systemd passed a socket meant for no component; closing it");
            }
        }
    }
    assigned
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use imageserving_actors::ComponentSpec;

    use super::*;

    fn tree(components: Vec<ComponentSpec>) -> TreeSpec {
        TreeSpec::new("/tmp/activation-test", components)
    }

    fn holding(name: &str, port: u16) -> ComponentSpec {
        let addr = ([127, 0, 0, 1], port).into();
        ComponentSpec::builder(name, "true")
            .probe(addr)
            .socket(addr, 16)
            .ready(imageserving_actors::spec::Ready::Http("/healthz".into()))
            .build()
            .expect("a valid component")
    }

    fn listener() -> (u16, OwnedFd) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        (port, OwnedFd::from(listener))
    }

    #[test]
    fn sockets_for_another_process_are_not_taken() {
        let vars = |pid: &'static str| {
            move |name: &str| match name {
                "LISTEN_PID" => Some(pid.to_owned()),
                "LISTEN_FDS" => Some("1".to_owned()),
                _ => None,
            }
        };
        assert!(take(vars("1")).is_empty());
        assert!(take(vars("not a pid")).is_empty());
        assert!(take(|_| None).is_empty());
    }

    #[test]
    fn sockets_go_to_the_component_they_name_or_whose_port_they_have() {
        let (ps_port, ps) = listener();
        let (is_port, is) = listener();
        let (_, stray) = listener();
        let tree = tree(vec![holding("ps", ps_port), holding("is", is_port)]);
        let assigned = assign(
            &tree,
            vec![
                ("ps".to_owned(), ps),
                ("imageserving.socket".to_owned(), is),
                ("other.socket".to_owned(), stray),
            ],
        );
        let names: Vec<&str> = assigned.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ps", "is"]);
        assert_eq!(
            process::listening_address(&assigned[1].1).unwrap().port(),
            is_port
        );
    }
}
