//! What a server tells the supervisor on its notification socket (`NOTIFY_SOCKET`, the format of
//! systemd's `sd_notify(3)`): that it serves (`READY=1`, for `ready = { notify = true }`), and
//! that it quarantined a poison request of its upstream (`X_IMAGESERVING_POISON`, so that the
//! crashes it caused leave the upstream's restart budget). Without the variable (not run by a
//! supervisor that listens), nothing is sent.

use tracing::warn;

/// Sends `message` to `NOTIFY_SOCKET`, if set; a failure is logged for `component`.
fn send(component: &'static str, message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound()
        .and_then(|socket| socket.send_to(message.as_bytes(), &path));
    if let Err(e) = sent {
        warn!(component, error = %e, "could not notify the supervisor");
    }
}

/// `READY=1`: the server accepts and answers requests.
pub fn ready(component: &'static str) {
    send(component, "READY=1\n");
}

/// A poison request of the upstream at `addr` (`host:port`) was quarantined.
pub fn poison(component: &'static str, addr: &str) {
    send(component, &format!("X_IMAGESERVING_POISON={addr}\n"));
}
