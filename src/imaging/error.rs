//! The errors of the image protocol, each with its HTTP status.
//!
//! Following the original, most errors are `403 Forbidden` with a short text message. Messages
//! never contain file system paths: they name the object as the client wrote it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An error answer: an HTTP status and a one-line message for the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageError {
    /// The HTTP status.
    pub status: u16,
    /// A short message, safe to show to anyone (no paths).
    pub message: String,
}

impl ImageError {
    /// Any status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ImageError {
            status,
            message: message.into(),
        }
    }

    /// 403: a modifier has a value it cannot take.
    pub fn bad_value(command: &str, value: &str, why: impl fmt::Display) -> Self {
        Self::new(
            403,
            format!("invalid value `{value}` for `{command}`: {why}"),
        )
    }

    /// 403: a modifier the server does not know or does not implement.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(403, format!("unsupported: {what}"))
    }

    /// 403: an object path that is refused (`..`, absolute, leaving the image root).
    pub fn refused_path(object: &str) -> Self {
        Self::new(403, format!("object `{object}` is not allowed"))
    }

    /// 404: no such object.
    pub fn not_found(object: &str) -> Self {
        Self::new(404, format!("object `{object}` not found"))
    }

    /// 403: a limit was hit (output size, source size, reply size).
    pub fn too_large(what: impl fmt::Display) -> Self {
        Self::new(403, format!("too large: {what}"))
    }

    /// 403: the source cannot be decoded (corrupt, truncated, unknown format).
    pub fn bad_source(object: &str, why: impl fmt::Display) -> Self {
        Self::new(403, format!("cannot decode `{object}`: {why}"))
    }

    /// 503: a back end is down or restarting; the client may retry.
    pub fn unavailable(what: impl fmt::Display) -> Self {
        Self::new(503, format!("temporarily unavailable: {what}"))
    }

    /// 503: the request took longer than its deadline.
    pub fn timeout(what: impl fmt::Display) -> Self {
        Self::new(503, format!("timed out: {what}"))
    }

    /// 500: a bug or an unexpected failure; the message stays generic.
    pub fn internal(what: impl fmt::Display) -> Self {
        Self::new(500, format!("internal error: {what}"))
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for ImageError {}

/// A value of the client's as it may appear in a message: at most 64 characters, control
/// characters escaped, so that a message stays one short line.
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (n, c) in value.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
