//! What `status` reports: the tree's view of each component, in start order.

use std::time::{Duration, Instant, SystemTime};

use crate::lifecycle::State;

/// The status of the whole tree.
#[derive(Clone, Debug)]
pub struct TreeStatus {
    /// The components, in start order.
    pub components: Vec<ComponentStatus>,
    /// What else restarts when a component fails.
    pub strategy: crate::spec::Strategy,
    /// Group restarts (`one_for_all`, `rest_for_one`) so far.
    pub group_restarts: u32,
    /// Why the supervisor escalated (it is stopping everything), if it did.
    pub escalation: Option<String>,
}

/// The status of one component.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentStatus {
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// When it entered that state.
    pub since: SystemTime,
    /// The current attempt (increases with every spawn).
    pub generation: u64,
    /// Its main process.
    pub pid: Option<u32>,
    /// How long the main process has been up.
    pub uptime: Option<Duration>,
    /// Resident memory of its whole process tree, in bytes (filled in by [`crate::SupervisorHandle::status`]).
    pub memory: Option<u64>,
    /// Automatic restarts so far.
    pub restarts: u32,
    /// How the last failed attempt ended.
    pub last_exit: Option<String>,
    /// Why it is FATAL.
    pub fatal_reason: Option<String>,
    /// When BACKOFF ends.
    pub next_retry: Option<SystemTime>,
    /// Whether it was asked to run.
    pub wanted: bool,
    /// A dependency it waits for before it starts.
    pub waiting_for: Option<String>,
    /// A dependency that failed, so it will not start until someone intervenes.
    pub blocked_by: Option<String>,
    /// Its dependencies.
    pub depends_on: Vec<String>,
    /// Which exits restart it.
    pub restart: crate::spec::RestartType,
    /// Whether its FATAL escalates.
    pub critical: bool,
    /// Its memory limit, in bytes.
    pub memory_limit: Option<u64>,
    /// Bytes of its output dropped because its log could not be written (a full disk).
    pub log_dropped_bytes: u64,
    /// The processes a handover replaces, oldest first (see [`crate::lifecycle`]).
    pub outgoing: Vec<OutgoingStatus>,
}

/// A process a handover replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingStatus {
    /// Its pid.
    pub pid: u32,
    /// How long it has been up.
    pub uptime: Duration,
    /// How long ago it was told to finish its requests and exit; none while it still serves
    /// (its successor is not ready yet).
    pub draining_for: Option<Duration>,
}

impl ComponentStatus {
    /// Whether a `start` or `restart` waiting for this component can return: it runs, gave up,
    /// is not asked to run, or cannot start because a dependency failed.
    pub fn is_settled(&self) -> bool {
        match self.state {
            State::Running | State::Fatal | State::Exited => true,
            State::Stopped => self.blocked_by.is_some() || self.waiting_for.is_none(),
            State::Starting | State::Backoff | State::Stopping => false,
        }
    }

    /// The short info column of `status`: why it is down, when it retries, how it last ended.
    pub fn info(&self, now: SystemTime) -> String {
        match self.state {
            State::Fatal => {
                let mut s = self.fatal_reason.clone().unwrap_or_default();
                if let Some(wait) = self.next_retry.and_then(|t| t.duration_since(now).ok()) {
                    s.push_str(&format!("; retry in {}", crate::format::duration(wait)));
                }
                s
            }
            State::Backoff => {
                let wait = self
                    .next_retry
                    .and_then(|t| t.duration_since(now).ok())
                    .unwrap_or_default();
                let mut s = format!("retry in {}", crate::format::duration(wait));
                if let Some(last) = &self.last_exit {
                    s.push_str("; last: ");
                    s.push_str(last);
                }
                s
            }
            State::Stopped => {
                if let Some(dep) = &self.blocked_by {
                    format!("not started: dependency {dep}")
                } else if let Some(dep) = &self.waiting_for {
                    format!("waiting for {dep}")
                } else {
                    String::new()
                }
            }
            State::Starting if !self.outgoing.is_empty() => {
                "handover: waiting until ready".to_string()
            }
            State::Starting => match &self.last_exit {
                Some(last) if self.restarts > 0 => format!("restarting; last: {last}"),
                _ => "waiting until ready".to_string(),
            },
            State::Stopping => "stopping".to_string(),
            State::Running | State::Exited => match &self.last_exit {
                Some(last) => format!("last: {last}"),
                None => String::new(),
            },
        }
    }
}

/// Converts a monotonic instant of the past into wall-clock time.
pub(crate) fn wall(t: Instant, now: Instant, wall_now: SystemTime) -> SystemTime {
    wall_now
        .checked_sub(now.saturating_duration_since(t))
        .unwrap_or(wall_now)
}
