//! Who may talk to the daemon over the control socket.
//!
//! Two walls keep other users out. The first is the file system: the socket lives in the
//! home's `run/` directory, mode 0700, and is itself mode 0600, so a process of another uid
//! already fails at `connect`. The second is this module: on every accepted connection the
//! daemon asks the kernel who the peer is (`SO_PEERCRED`, through tokio's
//! [`UnixStream::peer_cred`](tokio::net::UnixStream::peer_cred)) and serves it only if
//! [`authorize`] agrees. The second wall matters when the first is weakened, e.g. a home whose
//! permissions were loosened by hand or a root-owned daemon whose socket directory was made
//! group-readable.
//!
//! The policy: the daemon's own user is served, and so is root (which can do anything to the
//! daemon anyway). Everyone else is denied, root's daemon included: a root supervisor obeys only
//! root.

/// A refused peer. The message names both uids so that the log says who tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing control connection from uid {peer_uid}: this supervisor runs as uid {daemon_uid} \
     and obeys only that user and root"
)]
pub struct Denied {
    /// The uid of the connecting process.
    pub peer_uid: u32,
    /// The uid the daemon runs as.
    pub daemon_uid: u32,
}

/// Decides whether a peer of `peer_uid` may control a daemon running as `daemon_uid`: the same
/// user or root is served, anyone else is denied.
pub fn authorize(peer_uid: u32, daemon_uid: u32) -> Result<(), Denied> {
    if peer_uid == daemon_uid || peer_uid == 0 {
        Ok(())
    } else {
        Err(Denied {
            peer_uid,
            daemon_uid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_user_is_served() {
        assert_eq!(authorize(1000, 1000), Ok(()));
    }

    #[test]
    fn root_peer_is_served() {
        assert_eq!(authorize(0, 1000), Ok(()));
        assert_eq!(authorize(0, 0), Ok(()));
    }

    #[test]
    fn foreign_peer_is_denied_naming_both_uids() {
        let denied = authorize(1001, 1000).unwrap_err();
        assert_eq!(
            denied,
            Denied {
                peer_uid: 1001,
                daemon_uid: 1000
            }
        );
        let message = denied.to_string();
        assert!(message.contains("uid 1001"), "{message}");
        assert!(message.contains("uid 1000"), "{message}");
    }

    #[test]
    fn root_daemon_denies_ordinary_users() {
        assert!(authorize(1000, 0).is_err());
    }
}
