//! Lifecycle events: what just happened to which component, as it happens.
//!
//! Every component actor publishes its events on one broadcast channel per tree; anyone may
//! [`subscribe`](crate::SupervisorHandle::subscribe) (the daemon's `events` command does, and so
//! can an embedding application). Publishing never waits: a subscriber that falls more than
//! [`EVENT_BUFFER`] events behind is told how many it missed
//! ([`tokio::sync::broadcast::error::RecvError::Lagged`]) and goes on from the oldest kept.
//!
//! ```
//! use imageserving_actors::events::{EventKind, TreeEvent};
//! use imageserving_actors::lifecycle::ExitReason;
//!
//! let event = TreeEvent::now("ps", EventKind::Exited { pid: Some(42), reason: ExitReason::Signal(9) });
//! assert_eq!(event.kind.name(), "exited");
//! assert_eq!(event.kind.to_string(), "pid 42 killed by signal 9 (SIGKILL)");
//! ```

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::lifecycle::ExitReason;

/// How many events a subscriber may fall behind before it misses some.
pub const EVENT_BUFFER: usize = 4096;

/// One event of one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEvent {
    /// The component's name.
    pub component: String,
    /// When it happened (wall clock).
    pub at: SystemTime,
    /// What happened.
    pub kind: EventKind,
}

impl TreeEvent {
    /// An event of `component` happening now.
    pub fn now(component: impl Into<String>, kind: EventKind) -> Self {
        TreeEvent {
            component: component.into(),
            at: SystemTime::now(),
            kind,
        }
    }
}

impl fmt::Display for TreeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.component, self.kind.name())?;
        let details = self.kind.to_string();
        if !details.is_empty() {
            write!(f, ": {details}")?;
        }
        Ok(())
    }
}

/// What happened to a component.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A new process was started (STARTING).
    Spawned {
        /// Its pid, also its process group.
        pid: u32,
        /// Which start of this component it is (counts every spawn of the tree's life).
        attempt: u64,
    },
    /// The process counts as running: up `start_secs` and ready.
    Running {
        /// Its pid.
        pid: u32,
    },
    /// The process ended (whatever comes next: a restart, backoff, FATAL or STOPPED).
    Exited {
        /// Its pid, when it was known.
        pid: Option<u32>,
        /// Its exit code or the signal that killed it.
        reason: ExitReason,
    },
    /// Waiting before the next start after a failure.
    Backoff {
        /// How long until the next start.
        delay: Duration,
    },
    /// Too many failures: the supervisor gave up on it (until `start`, or `retry_fatal_after`).
    Fatal {
        /// Why.
        reason: String,
    },
    /// Asked to stop: its stop signal was sent (SIGKILL follows after `stop_timeout`).
    Stopping,
    /// Down, and not asked to run.
    Stopped,
    /// Ended and not restarted, as its restart type says (`transient` after a normal exit,
    /// `temporary` after any).
    Completed,
    /// Its liveness probe failed `max_failed` times in a row: it is restarted.
    Unhealthy {
        /// What the probe saw.
        reason: String,
    },
    /// Its process tree's resident memory went over `memory_limit`: it is restarted.
    MemoryLimit {
        /// The memory sampled, in bytes.
        used: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A restart began as a handover: a new process starts beside the old one, which keeps
    /// serving until the new one is ready (the new one's `spawned` follows).
    HandoverStarted {
        /// The old process.
        old: u32,
    },
    /// A process a handover replaces was told to finish its requests and exit (its successor is
    /// ready, or the component is being stopped).
    Draining {
        /// Its pid.
        pid: u32,
    },
}

impl EventKind {
    /// A short, stable name: `spawned`, `running`, `exited`, `backoff`, `fatal`, `stopping`,
    /// `stopped`, `completed`, `unhealthy`, `memory_limit`, `handover`, `draining`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Spawned { .. } => "spawned",
            EventKind::Running { .. } => "running",
            EventKind::Exited { .. } => "exited",
            EventKind::Backoff { .. } => "backoff",
            EventKind::Fatal { .. } => "fatal",
            EventKind::Stopping => "stopping",
            EventKind::Stopped => "stopped",
            EventKind::Completed => "completed",
            EventKind::Unhealthy { .. } => "unhealthy",
            EventKind::MemoryLimit { .. } => "memory_limit",
            EventKind::HandoverStarted { .. } => "handover",
            EventKind::Draining { .. } => "draining",
        }
    }
}

/// The details, without the name (empty when there are none).
impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Spawned { pid, attempt } => write!(f, "pid {pid} (attempt {attempt})"),
            EventKind::Running { pid } => write!(f, "pid {pid}"),
            EventKind::Exited {
                pid: Some(pid),
                reason,
            } => write!(f, "pid {pid} {reason}"),
            EventKind::Exited { pid: None, reason } => write!(f, "{reason}"),
            EventKind::Backoff { delay } => {
                write!(f, "next start in {}", crate::format::duration(*delay))
            }
            EventKind::Fatal { reason } | EventKind::Unhealthy { reason } => f.write_str(reason),
            EventKind::MemoryLimit { used, limit } => write!(
                f,
                "memory {} over limit {}",
                crate::format::bytes(*used),
                crate::format::bytes(*limit)
            ),
            EventKind::HandoverStarted { old } => {
                write!(f, "pid {old} keeps serving until its successor is ready")
            }
            EventKind::Draining { pid } => write!(f, "pid {pid} finishes its requests and exits"),
            EventKind::Stopping | EventKind::Stopped | EventKind::Completed => Ok(()),
        }
    }
}

/// The sending side, shared by the tree's actors. Sending never blocks; with no subscriber
/// the event is dropped. The channel (room for [`EVENT_BUFFER`] events: about 280 KiB of the
/// daemon's resident memory, measured) is only
/// made for the first subscriber: a tree nobody follows pays nothing for it.
#[derive(Clone, Debug, Default)]
pub struct EventSender(Arc<OnceLock<broadcast::Sender<TreeEvent>>>);

impl EventSender {
    /// A new sender; its channel is made on the first subscription.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `kind` for `component`, now.
    pub fn send(&self, component: &str, kind: EventKind) {
        if let Some(sender) = self.0.get() {
            // An error only means nobody listens any more.
            let _ = sender.send(TreeEvent::now(component, kind));
        }
    }

    /// A new subscription: every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TreeEvent> {
        channel(&self.0).subscribe()
    }

    /// A handle that subscribes without keeping the channel open: once every actor of the tree
    /// is gone, its subscribers see the end of the stream.
    pub fn downgrade(&self) -> WeakEventSender {
        WeakEventSender(Arc::downgrade(&self.0))
    }
}

fn channel(cell: &OnceLock<broadcast::Sender<TreeEvent>>) -> &broadcast::Sender<TreeEvent> {
    cell.get_or_init(|| broadcast::channel(EVENT_BUFFER).0)
}

/// See [`EventSender::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakEventSender(Weak<OnceLock<broadcast::Sender<TreeEvent>>>);

impl WeakEventSender {
    /// Every event from now on; a stream that has already ended when the tree is gone.
    pub fn subscribe(&self) -> broadcast::Receiver<TreeEvent> {
        match self.0.upgrade() {
            Some(cell) => channel(&cell).subscribe(),
            None => broadcast::channel(1).1,
        }
    }
}
