//! The CLI side of the control socket: blocking, no async runtime (the CLI never needs one,
//! and a short-lived command should not pay for starting it).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::Context;

use crate::home::Home;
use crate::protocol::{self, Request, Response};

/// The largest response we read. Responses carry the status of every component, so they may
/// be much larger than a request.
pub const MAX_RESPONSE: u64 = 16 * 1024 * 1024;

/// How much of an answer is read at once: the status of a thousand components is about 340 KB.
const READ_BUFFER: usize = 64 * 1024;

/// Why the supervisor could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No socket, or nobody listening on it.
    #[error("Server Supervisor is not running (home: {home})")]
    NotRunning {
        /// The home directory.
        home: String,
    },
    /// The socket belongs to someone else.
    #[error("permission denied on the control socket {path} (it belongs to another user; run as that user or root)")]
    PermissionDenied {
        /// The socket path.
        path: String,
    },
    /// Anything else.
    #[error("could not connect to the control socket {path}: {source}")]
    Other {
        /// The socket path.
        path: String,
        /// The OS error.
        source: io::Error,
    },
}

/// A connection to the supervisor.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the supervisor of `home`.
    pub fn connect(home: &Home) -> Result<Client, ConnectError> {
        let path = home.socket_path();
        match UnixStream::connect(&path) {
            Ok(stream) => Ok(Client {
                reader: BufReader::with_capacity(READ_BUFFER, stream),
            }),
            Err(e) => Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ConnectError::NotRunning {
                        home: home.root().display().to_string(),
                    }
                }
                io::ErrorKind::PermissionDenied => ConnectError::PermissionDenied {
                    path: path.display().to_string(),
                },
                _ => ConnectError::Other {
                    path: path.display().to_string(),
                    source: e,
                },
            }),
        }
    }

    /// Sends a request and reads its answer, waiting at most `timeout` for it.
    pub fn request(&mut self, request: &Request, timeout: Duration) -> anyhow::Result<Response> {
        let stream = self.reader.get_mut();
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        // The daemon may answer before reading (a refused peer) and close at once: then the
        // write fails, but its answer, which says why, is waiting to be read.
        let written = stream.write_all(&protocol::encode(request));
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_RESPONSE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow::anyhow!(
                    "the Server Supervisor did not answer within {}",
                    humantime::format_duration(timeout)
                ),
                _ => anyhow::Error::new(e).context("reading the Server Supervisor's answer"),
            })?;
        if n == 0 || line.last() != Some(&b'\n') {
            written.context("sending the request to the Server Supervisor")?;
            anyhow::bail!("the Server Supervisor closed the connection without a complete answer");
        }
        line.pop();
        Ok(protocol::decode_response(&line)?)
    }

    /// The next frame of a stream (after `events`), waiting as long as it takes; `None` when
    /// the supervisor closed the connection (it exited).
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Response>> {
        self.reader.get_mut().set_read_timeout(None)?;
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_RESPONSE + 1)
            .read_until(b'\n', &mut line)
            .context("reading from the Server Supervisor")?;
        if n == 0 {
            return Ok(None);
        }
        if line.last() != Some(&b'\n') {
            anyhow::bail!("the Server Supervisor closed the connection inside a frame");
        }
        line.pop();
        Ok(Some(protocol::decode_response(&line)?))
    }
}
