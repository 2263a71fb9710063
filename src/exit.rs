//! Exit codes, as an init script's (LSB) and supervisorctl's users expect them.

use std::fmt;

/// Success (also `start` when all already run, `stop` when nothing runs).
pub const OK: u8 = 0;
/// `start`/`restart`: a component could not be brought up; or another failure.
pub const FAILED: u8 = 1;
/// Usage error: unknown command, option or component.
pub const USAGE: u8 = 2;
/// `status`: the supervisor, or the requested component, is not running.
pub const NOT_RUNNING: u8 = 3;
/// The control socket exists but refuses us (another user's supervisor).
pub const NO_PERMISSION: u8 = 4;
/// The configuration is invalid.
pub const BAD_CONFIG: u8 = 6;
/// A command that needs a running supervisor found none.
pub const NEEDS_SUPERVISOR: u8 = 7;
/// The daemon found another supervisor holding this home's lock (internal to `start`).
pub const LOCKED: u8 = 75;

/// An error that ends the command with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    /// The exit code.
    pub code: u8,
    /// What to print on standard error (nothing when empty).
    pub message: String,
}

impl Exit {
    /// An error with this code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code for an error: its own when it is an [`Exit`], else [`FAILED`].
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Exit>().map_or(FAILED, |e| e.code)
}
