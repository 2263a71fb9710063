//! The wire protocol of the control socket. Only this module knows its JSON shape: the
//! daemon and the CLI exchange the Rust types below and call the codec at the bottom.
//!
//! # Framing
//!
//! The CLI connects to the supervisor's Unix socket (`<home>/run/control.sock`) and both sides
//! send *frames*: one JSON object in UTF-8 on one line, terminated by `\n`. A frame holds at most
//! [`MAX_FRAME`] bytes (64 KiB) before its newline. [`read_frame`] refuses a longer one as soon
//! as the limit is crossed, without buffering more than the limit, so a peer that never sends a
//! newline cannot make the reader grow without bound.
//!
//! # Conversation
//!
//! The client sends a request frame; the daemon answers it with exactly one response frame. A
//! connection may carry several requests: the daemon reads them in sequence, answering each
//! before reading the next, until the client closes its side (EOF). The CLI sends one request per
//! connection. Requests that take time (`start`, `restart` and `reload` wait up to `wait_ms`,
//! `shutdown` stops every component) are answered only when done, so the client reads with its
//! own deadline of `wait_ms` plus a margin.
//!
//! One request turns the connection into a stream: `events` is answered by `subscribed`, then
//! by one `event` frame per lifecycle event as it happens (`missed` if the client fell more
//! than a few thousand events behind), until the client closes the connection or the
//! supervisor exits. No request is read on that connection any more.
//!
//! When something goes wrong the daemon answers `{"type":"error", ...}` (see [`ErrorKind`];
//! [`ProtocolError::kind`] maps every codec error to one). A *decoding* error (invalid JSON, an
//! unknown field, another version) concerns one complete line, so the connection stays usable.
//! A *framing* error (a line longer than [`MAX_FRAME`], EOF inside a line) leaves the stream with
//! no known frame boundary: the daemon answers it and then closes the connection.
//!
//! # Envelope and version
//!
//! Every frame is an envelope carrying the protocol version [`PROTOCOL_VERSION`] in `v`:
//!
//! ```text
//! {"v":1,"request":{"type":"ping"}}
//! {"v":1,"response":{"type":"pong","pid":4242,"version":"0.1.0","protocol":1}}
//! {"v":1,"request":{"type":"status","component":"ps"}}
//! {"v":1,"request":{"type":"start","components":[],"wait_ms":30000}}
//! {"v":1,"request":{"type":"restart","component":"is","wait_ms":30000}}
//! {"v":1,"request":{"type":"shutdown"}}
//! {"v":1,"request":{"type":"reload","wait_ms":30000}}
//! {"v":1,"request":{"type":"events"}}
//! {"v":1,"response":{"type":"subscribed"}}
//! {"v":1,"response":{"type":"event","component":"ps","event":"running","at":"...","at_unix_ms":1,"text":"ps running: pid 4242","pid":4242}}
//! {"v":1,"response":{"type":"error","kind":"unknown_component","message":"..."}}
//! ```
//!
//! `v` is checked before anything else, so a peer speaking another version gets
//! `unsupported_version` naming both versions rather than a confusing field error. Within one
//! version the shape only grows: requests are strict (an unknown field is refused, so a typo never
//! goes unnoticed) while responses may gain fields, which clients ignore. Renaming or removing a
//! field, or changing what one means, bumps the version.
//!
//! # `status --json`
//!
//! `imageserving status --json` prints one [`StatusReport`] object (the `report` of a `status`
//! response, without the envelope), and `events --json` one [`EventReport`] a line. Their shape
//! is specified, with complete examples, in `docs/status-json.md`, which a test (`tests/docs/`)
//! keeps in step with these types; it is stable under the rules above.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// The version every frame carries in `v`. Bumped on any incompatible change of the shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame, in bytes, not counting its terminating newline.
pub const MAX_FRAME: usize = 64 * 1024;

/// What the CLI asks the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", from = "StrictRequest")]
pub enum Request {
    /// Is the supervisor alive, and which version and protocol does it speak? Answered by
    /// [`Response::Pong`].
    Ping,
    /// Report the supervisor and every component, or only the one named. Answered by
    /// [`Response::Status`].
    Status {
        /// The component to report; `null` (or absent) reports all of them.
        component: Option<String>,
    },
    /// Start the named components, or every component when the list is empty. Answered by
    /// [`Response::Started`].
    Start {
        /// Components to start; empty (or absent) means all.
        components: Vec<String>,
        /// How long to wait for them to reach `RUNNING` before answering `timeout`.
        wait_ms: u64,
    },
    /// Stop one component and start it again. Answered by [`Response::Restarted`].
    Restart {
        /// The component to restart.
        component: String,
        /// How long to wait for it to reach `RUNNING` again before answering `timeout`.
        wait_ms: u64,
    },
    /// Stop every component in order, then the supervisor exits. Answered by
    /// [`Response::ShuttingDown`] once everything has stopped.
    Shutdown,
    /// Re-read the configuration and apply the difference: restart only the components whose
    /// settings changed, start added ones, stop removed ones. An invalid configuration changes
    /// nothing and is answered by an error of kind `bad_config`. Answered by
    /// [`Response::Reloaded`] once the started components run (or `wait_ms` passed).
    Reload {
        /// How long to wait for the (re)started components to reach `RUNNING`.
        wait_ms: u64,
    },
    /// Follow the lifecycle events: answered by [`Response::Subscribed`], then one
    /// [`Response::Event`] per event until the connection closes.
    Events,
}

/// The shape [`Request`] is read through. serde lets unit variants of an internally tagged enum
/// carry any extra field, so `{"type":"ping","force":true}` would pass as a ping: here every
/// variant is a struct variant, which `deny_unknown_fields` does check. The round-trip tests keep
/// the two enums in step.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum StrictRequest {
    Ping {},
    Status {
        #[serde(default)]
        component: Option<String>,
    },
    Start {
        #[serde(default)]
        components: Vec<String>,
        wait_ms: u64,
    },
    Restart {
        component: String,
        wait_ms: u64,
    },
    Shutdown {},
    Reload {
        wait_ms: u64,
    },
    Events {},
}

impl From<StrictRequest> for Request {
    fn from(strict: StrictRequest) -> Self {
        match strict {
            StrictRequest::Ping {} => Request::Ping,
            StrictRequest::Status { component } => Request::Status { component },
            StrictRequest::Start {
                components,
                wait_ms,
            } => Request::Start {
                components,
                wait_ms,
            },
            StrictRequest::Restart { component, wait_ms } => {
                Request::Restart { component, wait_ms }
            }
            StrictRequest::Shutdown {} => Request::Shutdown,
            StrictRequest::Reload { wait_ms } => Request::Reload { wait_ms },
            StrictRequest::Events {} => Request::Events,
        }
    }
}

/// What the supervisor answers, one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The answer to [`Request::Ping`].
    Pong {
        /// The supervisor's process id.
        pid: u32,
        /// The supervisor's crate version.
        version: String,
        /// The protocol version it speaks, [`PROTOCOL_VERSION`] on its side.
        protocol: u32,
    },
    /// The answer to [`Request::Status`]; the report's fields sit beside `"type"`.
    Status(StatusReport),
    /// The answer to [`Request::Start`], sent once the components are running. Its report
    /// carries no memory figures (`memory_bytes` is `null`): [`Request::Status`] has them.
    Started {
        /// Components that were already running before the request, so nothing was done for them.
        already_running: Vec<String>,
        /// The state after starting.
        report: StatusReport,
    },
    /// The answer to [`Request::Restart`], sent once the component runs again; like
    /// [`Response::Started`], without memory figures.
    Restarted {
        /// The state after restarting.
        report: StatusReport,
        /// Set when the restart was a handover whose new process failed to start: the old
        /// process kept serving (it is the one `report` shows), and this says why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handover_failed: Option<String>,
    },
    /// The answer to [`Request::Shutdown`], sent after every component has stopped, just before
    /// the supervisor exits.
    ShuttingDown {
        /// The final state: every component stopped.
        report: StatusReport,
    },
    /// The answer to [`Request::Reload`]: what changed, and the state after.
    Reloaded {
        /// Components the new configuration adds (started when the others run).
        added: Vec<String>,
        /// Components it removes (stopped).
        removed: Vec<String>,
        /// Components whose settings changed.
        changed: Vec<String>,
        /// Changed components that were running: restarted with their new settings.
        restarted: Vec<String>,
        /// Restarted components whose handover failed: the new process did not start, the
        /// old one (with the old settings) kept serving. Their `last_exit` says why.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        handover_failed: Vec<String>,
        /// The state after the change, without memory figures.
        report: StatusReport,
    },
    /// The answer to [`Request::Events`]: events follow.
    Subscribed,
    /// One lifecycle event (see `docs/status-json.md` for the fields).
    Event(EventReport),
    /// The client fell behind and `count` events were dropped for it.
    Missed {
        /// How many.
        count: u64,
    },
    /// The request failed; `kind` says how, `message` says why in words for a human.
    Error {
        /// The class of failure, for the CLI to pick an exit code.
        kind: ErrorKind,
        /// What went wrong, naming what was being done.
        message: String,
    },
}

impl Response {
    /// The error response for a request that could not be read or decoded.
    pub fn from_error(err: &ProtocolError) -> Self {
        Response::Error {
            kind: err.kind(),
            message: err.to_string(),
        }
    }
}

/// One lifecycle event on the wire: its name, when, a line for humans, and the details that
/// apply to it (absent otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReport {
    /// The component.
    pub component: String,
    /// `spawned`, `running`, `exited`, `backoff`, `fatal`, `stopping`, `stopped`, `completed`,
    /// `unhealthy` or `memory_limit`.
    pub event: String,
    /// When, RFC 3339 in UTC with milliseconds.
    pub at: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The event in words, e.g. `ps exited: pid 4242 killed by signal 9 (SIGKILL)`.
    pub text: String,
    /// The process (`spawned`, `running`, `exited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The spawn's attempt number (`spawned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u64>,
    /// The exit status (`exited` normally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed it (`exited` by a signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The delay before the next start, in milliseconds (`backoff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Why (`fatal`, `unhealthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The memory sampled and the limit, in bytes (`memory_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// See `used_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
}

/// The class of a failed request, serialized in `snake_case`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The frame was not a valid request: bad JSON, an unknown field, a partial line.
    BadRequest,
    /// The frame carried a protocol version other than [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// The frame exceeded [`MAX_FRAME`].
    TooLarge,
    /// The components did not reach the wanted state within `wait_ms`.
    Timeout,
    /// The request named a component that the configuration does not define.
    UnknownComponent,
    /// The peer's user may not control this supervisor (see `peer.rs`).
    Forbidden,
    /// The supervisor is stopping and accepts no more work.
    ShuttingDown,
    /// The configuration is invalid (or cannot be applied as it is); nothing was changed.
    BadConfig,
    /// Something failed inside the supervisor.
    Internal,
}

impl ErrorKind {
    /// The wire name, e.g. `bad_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Timeout => "timeout",
            ErrorKind::UnknownComponent => "unknown_component",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::BadConfig => "bad_config",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of the supervisor and of its components: the answer to `status`, and the body of
/// `status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The home directory of this installation, absolute.
    pub home: String,
    /// The supervisor process itself.
    pub supervisor: SupervisorStatus,
    /// The components in start order, or only the one asked for.
    pub components: Vec<ComponentStatus>,
}

/// The Server Supervisor process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    /// Its process id.
    pub pid: u32,
    /// Its crate version.
    pub version: String,
    /// When it started, RFC 3339 in UTC.
    pub started_at: String,
    /// How long it has been running, in milliseconds.
    pub uptime_ms: u64,
    /// Its resident memory in bytes, `null` when the OS would not say.
    pub memory_bytes: Option<u64>,
    /// What else restarts when a component fails: `one_for_one`, `one_for_all`, `rest_for_one`.
    #[serde(default = "default_strategy")]
    pub strategy: String,
    /// Group restarts (`one_for_all`, `rest_for_one`) so far.
    #[serde(default)]
    pub group_restarts: u32,
    /// Why the supervisor escalated (it is stopping everything and will exit 1), if it did.
    #[serde(default)]
    pub escalation: Option<String>,
}

fn default_strategy() -> String {
    "one_for_one".to_string()
}

fn default_restart() -> String {
    "permanent".to_string()
}

/// One supervised component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Its name, e.g. `ps`.
    pub name: String,
    /// Where it is in its lifecycle.
    pub state: State,
    /// When it entered `state`, RFC 3339 in UTC with milliseconds.
    pub since: String,
    /// The same instant as `since`, in milliseconds since the Unix epoch, for scripts.
    pub since_unix_ms: u64,
    /// Its process id while it has a process (`STARTING`, `RUNNING`, `STOPPING`).
    pub pid: Option<u32>,
    /// How long its current process has been running, in milliseconds.
    pub uptime_ms: Option<u64>,
    /// The resident memory of its whole process tree in bytes (threads counted once), `null`
    /// when it has no process.
    pub memory_bytes: Option<u64>,
    /// How many times the supervisor restarted it after it died, since the supervisor started.
    pub restarts: u32,
    /// A short human column: the last exit reason, the next retry, the fatal reason.
    pub info: String,
    /// How its last process ended, e.g. `exited with status 1` or `killed by SIGKILL`.
    pub last_exit: Option<String>,
    /// When the next start attempt is due (`BACKOFF` only), in milliseconds since the Unix epoch.
    pub next_retry_unix_ms: Option<u64>,
    /// Why the supervisor gave up on it (`FATAL` only).
    pub fatal_reason: Option<String>,
    /// The components it needs running first, by name.
    pub depends_on: Vec<String>,
    /// Which exits restart it: `permanent`, `transient` or `temporary`.
    #[serde(default = "default_restart")]
    pub restart: String,
    /// Whether its going FATAL stops everything (escalation).
    #[serde(default)]
    pub critical: bool,
    /// Its memory limit in bytes, `null` for none.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Bytes of its output dropped because its log could not be written (a full disk).
    #[serde(default)]
    pub log_dropped_bytes: u64,
    /// The processes a handover (`restart` of a component that hands over) replaces, oldest
    /// first: each serves until the new process is ready, then drains. Empty otherwise.
    #[serde(default)]
    pub outgoing: Vec<OutgoingProcess>,
}

/// A process a handover replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingProcess {
    /// Its pid.
    pub pid: u32,
    /// How long it has been running, in milliseconds.
    pub uptime_ms: u64,
    /// `SERVING` until its successor is ready, then `DRAINING` (finishing its requests).
    pub state: String,
    /// How long it has been draining, in milliseconds; `null` while it serves.
    pub draining_ms: Option<u64>,
}

/// The lifecycle state of a component, serialized and displayed in `SCREAMING_SNAKE_CASE`
/// (`RUNNING`), the spelling supervisord made familiar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Not running, and not going to be started until asked.
    Stopped,
    /// Its process was spawned and is not yet considered up.
    Starting,
    /// Its process is up.
    Running,
    /// It died or failed to start; a new attempt is scheduled.
    Backoff,
    /// It was asked to stop and its process has not exited yet.
    Stopping,
    /// Its process ended and no restart is scheduled.
    Exited,
    /// The supervisor gave up on it (too many failed starts, or it cannot be spawned at all).
    Fatal,
}

impl State {
    /// The wire and display name, e.g. `RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "STOPPED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Backoff => "BACKOFF",
            State::Stopping => "STOPPING",
            State::Exited => "EXITED",
            State::Fatal => "FATAL",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` rather than `write_str` so that `{:<9}` aligns the status table.
        f.pad(self.as_str())
    }
}

/// Formats an instant the way the protocol writes timestamps: RFC 3339 in UTC with milliseconds.
pub fn rfc3339_ms(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Milliseconds since the Unix epoch, 0 for instants before it.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why a frame could not be read, written or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The socket failed while reading or writing a frame.
    #[error("control socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// More than [`MAX_FRAME`] bytes arrived without a newline.
    #[error("frame exceeds the limit of {limit} bytes without a newline")]
    TooLarge {
        /// The limit that was crossed, [`MAX_FRAME`].
        limit: usize,
    },
    /// The peer closed the connection in the middle of a line.
    #[error("connection closed in the middle of a frame after {received} bytes without a newline")]
    Truncated {
        /// How many bytes of the unfinished line had arrived.
        received: usize,
    },
    /// The frame carried another protocol version.
    #[error("protocol version {received} is not supported: this side speaks version {supported}")]
    UnsupportedVersion {
        /// The version in the frame.
        received: u32,
        /// The version this side speaks, [`PROTOCOL_VERSION`].
        supported: u32,
    },
    /// The frame was not valid JSON, or not of the expected shape.
    #[error("invalid {what}: {source}")]
    Malformed {
        /// `request` or `response`.
        what: &'static str,
        /// serde's message, which names the offending field and position.
        source: serde_json::Error,
    },
}

impl ProtocolError {
    /// The kind the daemon answers this error with.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProtocolError::Io(_) => ErrorKind::Internal,
            ProtocolError::TooLarge { .. } => ErrorKind::TooLarge,
            ProtocolError::Truncated { .. } | ProtocolError::Malformed { .. } => {
                ErrorKind::BadRequest
            }
            ProtocolError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
        }
    }

    /// Whether the stream lost its frame boundaries, so the connection must be closed after
    /// answering. Decoding errors concern one complete line and leave the connection usable.
    pub fn is_fatal_to_connection(&self) -> bool {
        matches!(
            self,
            ProtocolError::Io(_) | ProtocolError::TooLarge { .. } | ProtocolError::Truncated { .. }
        )
    }
}

/// A message that travels in an envelope: [`Request`] or [`Response`].
pub trait Message: Serialize + DeserializeOwned {
    /// The envelope key that holds it: `request` or `response`.
    const KEY: &'static str;
}

impl Message for Request {
    const KEY: &'static str = "request";
}

impl Message for Response {
    const KEY: &'static str = "response";
}

/// The envelope of an incoming request. Strict, like the request itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEnvelope {
    #[allow(dead_code)] // checked by `VersionProbe` first; kept so that the field is allowed
    v: u32,
    request: Request,
}

/// The envelope of an incoming response. Lenient: a newer daemon may add fields.
#[derive(Deserialize)]
struct ResponseEnvelope {
    response: Response,
}

/// Reads `v` alone, ignoring the rest, so the version is judged before the shape.
#[derive(Deserialize)]
struct VersionProbe {
    v: u32,
}

/// Reads one frame: the bytes of one line, without its newline.
///
/// Returns `Ok(None)` on a clean EOF before any byte of a new frame. Never holds more than
/// [`MAX_FRAME`] bytes of a frame: a longer line fails with [`ProtocolError::TooLarge`] as soon as
/// the limit is crossed, leaving the rest unread. EOF in the middle of a line fails with
/// [`ProtocolError::Truncated`].
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut frame = Vec::new();
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return if frame.is_empty() {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated {
                    received: frame.len(),
                })
            };
        }
        let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], true),
            None => (available, false),
        };
        if frame.len() + chunk.len() > MAX_FRAME {
            return Err(ProtocolError::TooLarge { limit: MAX_FRAME });
        }
        frame.extend_from_slice(chunk);
        let consumed = chunk.len() + usize::from(newline);
        r.consume(consumed);
        if newline {
            return Ok(Some(frame));
        }
    }
}

/// Decodes a request frame, checking its version first.
pub fn decode_request(frame: &[u8]) -> Result<Request, ProtocolError> {
    check_version(frame, "request")?;
    serde_json::from_slice::<RequestEnvelope>(frame)
        .map(|envelope| envelope.request)
        .map_err(|source| ProtocolError::Malformed {
            what: "request",
            source,
        })
}

/// Decodes a response frame, checking its version first.
pub fn decode_response(frame: &[u8]) -> Result<Response, ProtocolError> {
    if let Some(status) = decode_status_as_written(frame) {
        return Ok(Response::Status(status));
    }
    check_version(frame, "response")?;
    serde_json::from_slice::<ResponseEnvelope>(frame)
        .map(|envelope| envelope.response)
        .map_err(|source| ProtocolError::Malformed {
            what: "response",
            source,
        })
}

/// A status answer as [`encode`] writes it: `v` first, then serde's tag `type` first in the
/// response, then the report's fields, then the two closing braces.
const STATUS_OPENING: &str = "{\"v\":1,\"response\":{\"type\":\"status\",";
const _: () = assert!(PROTOCOL_VERSION == 1, "STATUS_OPENING spells the version");

/// The status report of a frame laid out as [`encode`] writes it, read straight into
/// [`StatusReport`]; `None` for any other frame, which then takes the general path.
///
/// Why: `Response` is internally tagged, so serde reads a whole response into a generic tree
/// before it knows the variant, and [`check_version`] reads the frame once more for `v`. For
/// the status of 1000 components that was 69 % of the CLI's instructions for one `status`
/// (docs/performance.md). Here the version and the variant are judged from the opening bytes,
/// and the report is parsed once. A frame that only looks like one (another field after the
/// response, say) fails the report's parse and takes the general path, which judges it.
fn decode_status_as_written(frame: &[u8]) -> Option<StatusReport> {
    let fields = frame
        .strip_prefix(STATUS_OPENING.as_bytes())?
        .strip_suffix(b"}")?;
    let mut object = Vec::with_capacity(fields.len() + 1);
    object.push(b'{');
    object.extend_from_slice(fields);
    serde_json::from_slice(&object).ok()
}

fn check_version(frame: &[u8], what: &'static str) -> Result<(), ProtocolError> {
    let probe: VersionProbe = serde_json::from_slice(frame)
        .map_err(|source| ProtocolError::Malformed { what, source })?;
    if probe.v == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(ProtocolError::UnsupportedVersion {
            received: probe.v,
            supported: PROTOCOL_VERSION,
        })
    }
}

/// Encodes a message as one frame: its envelope followed by `\n`, ready for [`write_frame`].
pub fn encode<T: Message>(msg: &T) -> Vec<u8> {
    // The envelope is written by hand so that `v` always comes first on the wire.
    let mut out = format!("{{\"v\":{PROTOCOL_VERSION},\"{}\":", T::KEY).into_bytes();
    // Serializing these types cannot fail: every map key is a string and no `Serialize` impl
    // is hand-written, so the only errors serde_json reports cannot occur.
    serde_json::to_writer(&mut out, msg).expect("protocol messages always serialize to JSON");
    out.extend_from_slice(b"}\n");
    out
}

/// Writes an encoded frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), ProtocolError> {
    w.write_all(bytes).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, BufReader};

    fn sample_component() -> ComponentStatus {
        ComponentStatus {
            name: "ps".into(),
            state: State::Backoff,
            since: "2025-11-26T21:22:58.004Z".into(),
            since_unix_ms: 1_764_192_178_004,
            pid: None,
            uptime_ms: None,
            memory_bytes: None,
            restarts: 3,
            info: "exited with status 1; retry in 4s".into(),
            last_exit: Some("exited with status 1".into()),
            next_retry_unix_ms: Some(1_764_192_182_004),
            fatal_reason: None,
            depends_on: vec!["is".into(), "svg".into()],
            restart: "permanent".into(),
            critical: false,
            memory_limit_bytes: None,
            log_dropped_bytes: 0,
            outgoing: Vec::new(),
        }
    }

    fn sample_report() -> StatusReport {
        StatusReport {
            home: "/var/lib/imageserving".into(),
            supervisor: SupervisorStatus {
                pid: 4242,
                version: "0.1.0".into(),
                started_at: "2025-11-26T20:23:00.000Z".into(),
                uptime_ms: 3_600_000,
                memory_bytes: Some(8_388_608),
                strategy: "one_for_one".into(),
                group_restarts: 0,
                escalation: None,
            },
            components: vec![
                ComponentStatus {
                    name: "is".into(),
                    state: State::Running,
                    since: "2025-11-26T20:23:05.120Z".into(),
                    since_unix_ms: 1_764_188_585_120,
                    pid: Some(4250),
                    uptime_ms: Some(3_594_880),
                    memory_bytes: Some(52_428_800),
                    restarts: 0,
                    info: String::new(),
                    last_exit: None,
                    next_retry_unix_ms: None,
                    fatal_reason: None,
                    depends_on: vec![],
                    restart: "transient".into(),
                    critical: true,
                    memory_limit_bytes: Some(536_870_912),
                    log_dropped_bytes: 0,
                    outgoing: Vec::new(),
                },
                sample_component(),
            ],
        }
    }

    fn sample_event() -> EventReport {
        EventReport {
            component: "is".into(),
            event: "exited".into(),
            at: "2025-11-26T21:22:58.004Z".into(),
            at_unix_ms: 1_764_192_178_004,
            text: "is exited: pid 7 killed by signal 9 (SIGKILL)".into(),
            pid: Some(7),
            attempt: None,
            exit_code: None,
            signal: Some(9),
            delay_ms: None,
            reason: None,
            used_bytes: None,
            limit_bytes: None,
        }
    }

    #[test]
    fn event_has_a_stable_shape_without_the_details_that_do_not_apply() {
        let json = String::from_utf8(encode(&Response::Event(sample_event()))).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"v":1,"response":{"type":"event","component":"is","event":"exited","#,
                r#""at":"2025-11-26T21:22:58.004Z","at_unix_ms":1764192178004,"#,
                r#""text":"is exited: pid 7 killed by signal 9 (SIGKILL)","pid":7,"signal":9}}"#,
                "\n"
            )
        );
    }

    async fn read_one(bytes: &[u8]) -> Result<Option<Vec<u8>>, ProtocolError> {
        let mut reader = BufReader::new(bytes);
        read_frame(&mut reader).await
    }

    #[tokio::test]
    async fn every_request_round_trips() {
        let requests = [
            Request::Ping,
            Request::Status { component: None },
            Request::Status {
                component: Some("svg".into()),
            },
            Request::Start {
                components: vec![],
                wait_ms: 30_000,
            },
            Request::Start {
                components: vec!["ps".into(), "is".into()],
                wait_ms: 1,
            },
            Request::Restart {
                component: "is".into(),
                wait_ms: 5_000,
            },
            Request::Shutdown,
            Request::Reload { wait_ms: 100 },
            Request::Events,
        ];
        for request in requests {
            let bytes = encode(&request);
            assert_eq!(bytes.last(), Some(&b'\n'));
            let frame = read_one(&bytes).await.unwrap().unwrap();
            assert_eq!(decode_request(&frame).unwrap(), request);
        }
    }

    #[tokio::test]
    async fn every_response_round_trips() {
        let mut responses = vec![
            Response::Pong {
                pid: 1,
                version: "0.1.0".into(),
                protocol: PROTOCOL_VERSION,
            },
            Response::Status(sample_report()),
            Response::Started {
                already_running: vec!["is".into()],
                report: sample_report(),
            },
            Response::Restarted {
                report: sample_report(),
                handover_failed: None,
            },
            Response::Restarted {
                report: sample_report(),
                handover_failed: Some("the new process exited with status 1".into()),
            },
            Response::ShuttingDown {
                report: sample_report(),
            },
            Response::Reloaded {
                added: vec!["new".into()],
                removed: vec![],
                changed: vec!["is".into()],
                restarted: vec!["is".into()],
                handover_failed: vec!["is".into()],
                report: sample_report(),
            },
            Response::Subscribed,
            Response::Missed { count: 3 },
            Response::Event(sample_event()),
        ];
        for kind in [
            ErrorKind::BadRequest,
            ErrorKind::UnsupportedVersion,
            ErrorKind::TooLarge,
            ErrorKind::Timeout,
            ErrorKind::UnknownComponent,
            ErrorKind::Forbidden,
            ErrorKind::ShuttingDown,
            ErrorKind::BadConfig,
            ErrorKind::Internal,
        ] {
            responses.push(Response::Error {
                kind,
                message: format!("failed: {kind}"),
            });
        }
        for response in responses {
            let bytes = encode(&response);
            let frame = read_one(&bytes).await.unwrap().unwrap();
            assert_eq!(decode_response(&frame).unwrap(), response);
        }
    }

    #[test]
    fn status_request_has_a_stable_shape() {
        let request = Request::Status {
            component: Some("ps".into()),
        };
        assert_eq!(
            encode(&request),
            b"{\"v\":1,\"request\":{\"type\":\"status\",\"component\":\"ps\"}}\n"
        );
        assert_eq!(
            encode(&Request::Status { component: None }),
            b"{\"v\":1,\"request\":{\"type\":\"status\",\"component\":null}}\n"
        );
    }

    #[test]
    fn component_status_has_a_stable_shape() {
        let json = serde_json::to_string(&sample_component()).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"name":"ps","state":"BACKOFF","since":"2025-11-26T21:22:58.004Z","#,
                r#""since_unix_ms":1764192178004,"pid":null,"uptime_ms":null,"memory_bytes":null,"#,
                r#""restarts":3,"info":"exited with status 1; retry in 4s","#,
                r#""last_exit":"exited with status 1","next_retry_unix_ms":1764192182004,"#,
                r#""fatal_reason":null,"depends_on":["is","svg"],"restart":"permanent","#,
                r#""critical":false,"memory_limit_bytes":null,"log_dropped_bytes":0,"outgoing":[]}"#
            )
        );
    }

    #[test]
    fn status_response_puts_the_report_beside_the_type() {
        let json = String::from_utf8(encode(&Response::Status(sample_report()))).unwrap();
        assert!(
            json.starts_with(
                r#"{"v":1,"response":{"type":"status","home":"/var/lib/imageserving","#
            ),
            "{json}"
        );
    }

    #[test]
    fn states_serialize_and_display_in_screaming_snake_case() {
        for (state, name) in [
            (State::Stopped, "STOPPED"),
            (State::Starting, "STARTING"),
            (State::Running, "RUNNING"),
            (State::Backoff, "BACKOFF"),
            (State::Stopping, "STOPPING"),
            (State::Exited, "EXITED"),
            (State::Fatal, "FATAL"),
        ] {
            assert_eq!(state.to_string(), name);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert_eq!(format!("{:<9}|", State::Running), "RUNNING  |");
    }

    #[test]
    fn optional_request_fields_may_be_omitted() {
        assert_eq!(
            decode_request(br#"{"v":1,"request":{"type":"status"}}"#).unwrap(),
            Request::Status { component: None }
        );
        assert_eq!(
            decode_request(br#"{"v":1,"request":{"type":"start","wait_ms":10}}"#).unwrap(),
            Request::Start {
                components: vec![],
                wait_ms: 10
            }
        );
    }

    #[tokio::test]
    async fn reads_frames_in_sequence_then_none_at_eof() {
        let mut input = encode(&Request::Ping);
        input.extend_from_slice(&encode(&Request::Shutdown));
        let mut reader = BufReader::new(&input[..]);
        let first = read_frame(&mut reader).await.unwrap().unwrap();
        let second = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(decode_request(&first).unwrap(), Request::Ping);
        assert_eq!(decode_request(&second).unwrap(), Request::Shutdown);
        assert!(read_frame(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_of_exactly_the_limit_is_accepted() {
        let mut input = vec![b' '; MAX_FRAME];
        input.push(b'\n');
        // A small buffer makes the limit check run across many partial reads.
        let mut reader = BufReader::with_capacity(1000, &input[..]);
        let frame = read_frame(&mut reader).await.unwrap().unwrap();
        assert_eq!(frame.len(), MAX_FRAME);

        let mut input = vec![b' '; MAX_FRAME + 1];
        input.push(b'\n');
        let mut reader = BufReader::with_capacity(1000, &input[..]);
        let err = read_frame(&mut reader).await.unwrap_err();
        assert!(matches!(err, ProtocolError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_without_reading_it_all() {
        const SENT: usize = 1024 * 1024;
        let (mut writer, reader) = tokio::io::duplex(4096);
        let sender = tokio::spawn(async move {
            let junk = vec![b'a'; SENT];
            let result = tokio::io::AsyncWriteExt::write_all(&mut writer, &junk).await;
            (result, writer)
        });
        let mut reader = BufReader::new(reader);
        let err = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut reader))
            .await
            .expect("read_frame must give up at the limit, not wait for the rest")
            .unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { limit: MAX_FRAME }),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::TooLarge);
        assert!(err.is_fatal_to_connection());
        // The sender is still blocked on the unread remainder: the reader stopped at the limit.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!sender.is_finished());
        drop(reader);
        let (result, _writer) = tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .unwrap()
            .unwrap();
        assert!(
            result.is_err(),
            "the write must fail once the reader is gone"
        );
    }

    #[test]
    fn another_version_is_refused_naming_both() {
        let err = decode_request(br#"{"v":2,"request":{"type":"teleport"}}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
        assert!(!err.is_fatal_to_connection());
        let message = err.to_string();
        assert!(message.contains("version 2"), "{message}");
        assert!(message.contains("version 1"), "{message}");

        let err = decode_response(br#"{"v":0,"response":{"type":"pong"}}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedVersion);
    }

    #[test]
    fn missing_version_is_a_bad_request() {
        let err = decode_request(br#"{"request":{"type":"ping"}}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.to_string().contains("`v`"), "{err}");
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for garbage in [
            &b"\xff\xfe\x00garbage"[..],
            b"",
            b"GET / HTTP/1.1",
            b"[1,2,3]",
            br#"{"v":1,"request":{"type":"launch_missiles"}}"#,
            br#"{"v":1,"request":{"type":"restart"}}"#,
        ] {
            let err = decode_request(garbage).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
            assert!(err.to_string().starts_with("invalid request: "), "{err}");
        }
    }

    #[test]
    fn unknown_fields_in_requests_are_refused() {
        let err =
            decode_request(br#"{"v":1,"request":{"type":"status","componnet":"ps"}}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.to_string().contains("componnet"), "{err}");

        let err = decode_request(br#"{"v":1,"request":{"type":"ping","extra":1}}"#).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");

        let err =
            decode_request(br#"{"v":1,"request":{"type":"ping"},"priority":"high"}"#).unwrap_err();
        assert!(err.to_string().contains("priority"), "{err}");
    }

    #[test]
    fn unknown_fields_in_responses_are_ignored() {
        let response = decode_response(
            br#"{"v":1,"trace":"x","response":{"type":"pong","pid":7,"version":"9.9.9","protocol":1,"features":[]}}"#,
        )
        .unwrap();
        assert_eq!(
            response,
            Response::Pong {
                pid: 7,
                version: "9.9.9".into(),
                protocol: 1
            }
        );
    }

    /// `encode`'s frame without its newline, as `read_frame` returns it.
    fn frame_of(response: &Response) -> Vec<u8> {
        let mut frame = encode(response);
        assert_eq!(frame.pop(), Some(b'\n'));
        frame
    }

    #[test]
    fn a_status_as_written_is_read_straight_into_the_report() {
        let report = sample_report();
        let frame = frame_of(&Response::Status(report.clone()));
        assert_eq!(decode_status_as_written(&frame), Some(report.clone()));
        assert_eq!(
            decode_response(&frame).unwrap(),
            Response::Status(report.clone())
        );
    }

    #[test]
    fn a_status_laid_out_otherwise_takes_the_general_path_with_the_same_answer() {
        let report = sample_report();
        let fields = serde_json::to_string(&report).unwrap();
        let fields = fields.strip_prefix('{').unwrap().strip_suffix('}').unwrap();
        for frame in [
            // the tag last
            format!(r#"{{"v":1,"response":{{{fields},"type":"status"}}}}"#),
            // a field of a newer daemon after the response, or beside `v`
            format!(r#"{{"v":1,"response":{{"type":"status",{fields}}},"trace":{{"id":1}}}}"#),
            format!(r#"{{"v":1,"trace":"x","response":{{"type":"status",{fields}}}}}"#),
            // a field of a newer daemon inside the report
            format!(r#"{{"v":1,"response":{{"type":"status",{fields},"load":[1,2]}}}}"#),
            // spaces
            format!(r#"{{ "v": 1, "response": {{ "type": "status", {fields} }} }}"#),
        ] {
            assert_eq!(
                decode_response(frame.as_bytes()).unwrap(),
                Response::Status(report.clone()),
                "{frame}"
            );
        }
    }

    #[test]
    fn a_frame_that_only_opens_like_a_status_is_judged_by_the_general_path() {
        for frame in [
            &br#"{"v":1,"response":{"type":"status","home":"/h"}"#[..],
            br#"{"v":1,"response":{"type":"status",}}"#,
            br#"{"v":1,"response":{"type":"status","home":"/h"}}}"#,
            br#"{"v":1,"response":{"type":"status","home":"/h"}},"v":2}"#,
        ] {
            let err = decode_response(frame).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
        }
    }

    #[tokio::test]
    async fn a_partial_line_at_eof_is_an_error() {
        let err = read_one(br#"{"v":1,"request":{"type":"ping"}}"#)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProtocolError::Truncated { received: 33 }),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.is_fatal_to_connection());
        assert!(read_one(b"").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn write_frame_writes_what_encode_made() {
        let (mut client, server) = tokio::io::duplex(1024);
        let bytes = encode(&Request::Ping);
        write_frame(&mut client, &bytes).await.unwrap();
        drop(client);
        let mut received = Vec::new();
        BufReader::new(server)
            .read_to_end(&mut received)
            .await
            .unwrap();
        assert_eq!(received, b"{\"v\":1,\"request\":{\"type\":\"ping\"}}\n");
    }

    #[test]
    fn errors_become_error_responses() {
        let err = ProtocolError::TooLarge { limit: MAX_FRAME };
        assert_eq!(
            Response::from_error(&err),
            Response::Error {
                kind: ErrorKind::TooLarge,
                message: "frame exceeds the limit of 65536 bytes without a newline".into(),
            }
        );
    }

    #[test]
    fn timestamps_use_utc_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_188_585_120);
        assert_eq!(rfc3339_ms(t), "2025-11-26T20:23:05.120Z");
        assert_eq!(unix_ms(t), 1_764_188_585_120);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
