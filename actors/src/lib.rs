//! The imageserving supervision tree: a `ServerSupervisor` actor with one `ComponentActor` per
//! supervised OS process, on ractor and tokio.
//!
//! ```text
//!  SupervisorHandle ──(messages)──▶ ServerSupervisor
//!                                    ├─ ComponentActor "is"  ── process group (is)
//!                                    ├─ ComponentActor "svg" ── process group (svg)
//!                                    └─ ComponentActor "ps"  ── process group (ps)
//! ```
//!
//! - [`spec`]: what to run, validated ([`TreeSpec`], [`ComponentSpec`], [`RestartPolicy`]).
//! - [`lifecycle`]: the state machine of one component and the restart rule, pure.
//! - [`component`]: the actor that owns one process and drives its lifecycle.
//! - [`supervisor`]: the root actor: dependency order, actor supervision, ordered shutdown.
//! - [`process`]: the OS side: spawning, process groups, markers, leftovers, memory.
//! - [`probe`]: readiness, liveness and memory watchers; [`logs`]: rotated component logs.
//! - [`handle`]: [`SupervisorHandle`], the one API over the tree.
//!
//! This crate knows nothing of command lines, sockets or JSON.

pub mod component;
pub mod events;
pub mod format;
pub mod handle;
pub mod lifecycle;
pub mod logs;
pub mod probe;
pub mod process;
pub mod spec;
pub mod status;
pub mod supervisor;

pub use handle::SupervisorHandle;
pub use lifecycle::State;
pub use spec::{ComponentSpec, RestartPolicy, SpecError, TreeSpec};
pub use status::{ComponentStatus, TreeStatus};

/// Why a request to the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A component name that is not configured.
    #[error("unknown component `{name}` (configured: {})", known.join(", "))]
    UnknownComponent {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: Vec<String>,
    },
    /// The tree is shutting down and takes no new work.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// The root actor could not be spawned.
    #[error("could not spawn the supervision tree: {0}")]
    Spawn(String),
    /// The root actor did not answer (it stopped, or timed out).
    #[error("the supervisor did not answer: {0}")]
    NoAnswer(String),
}

impl TreeError {
    fn from_call<E: std::fmt::Display>(e: E) -> Self {
        TreeError::NoAnswer(e.to_string())
    }
}
