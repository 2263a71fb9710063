#![deny(missing_docs)]
//! The imageserving supervision tree: a `ServerSupervisor` actor with one `ComponentActor` per
//! supervised OS process, on ractor and tokio. The `imageserving` daemon is one user of this
//! crate; any Rust application can embed the same tree through the same handle.
//!
//! ```text
//!  host app / daemon bridge
//!        │ SupervisorHandle (async calls; subscribe() to events)
//!        ▼
//!  ServerSupervisor ─────────────── root actor: dependency order, restart strategy,
//!   │  (linked under the host's        ordered stop, escalation
//!   │   actor, if it asks)
//!   ├─ ComponentActor "db"  ── process group of `db`   (pgid = pid; markers in the env)
//!   ├─ ComponentActor "app" ── process group of `app`  (depends on db: starts after, stops before)
//!   └─ ...
//! ```
//!
//! # Embedding
//!
//! ```
//! use std::time::Duration;
//! use imageserving_actors::spec::{ComponentSpec, TreeSpec};
//! use imageserving_actors::{State, SupervisorHandle};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let db = ComponentSpec::builder("db", "sleep").arg("1000").build()?;
//! let app = ComponentSpec::builder("app", "sleep").arg("1000").depends_on("db").build()?;
//! let tree = TreeSpec::builder(format!("doc-example-{}", std::process::id()))
//!     .component(db)
//!     .component(app)
//!     .build()?;
//!
//! let (handle, done) = SupervisorHandle::spawn(tree).await?;
//! let mut events = handle.subscribe();
//! handle.start(&[]).await?;
//! let status = handle.wait_settled(&[], Duration::from_secs(10)).await?;
//! assert!(status.components.iter().all(|c| c.state == State::Running));
//! println!("first event: {}", events.recv().await?); // "db spawned: pid … (attempt 1)"
//!
//! // The orderly end: app gets SIGTERM, then db; the root actor stops.
//! handle.shutdown().await?;
//! done.await?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` is a complete host (`cargo run -p imageserving-actors --example embed`).
//!
//! # How the host can end, and what happens to the processes
//!
//! - **Orderly, through the handle** ([`SupervisorHandle::shutdown`]): every component gets its
//!   stop signal in reverse dependency order, SIGKILL after its `stop_timeout`; the root actor
//!   then stops (a host that linked the tree under its actor sees `ActorTerminated`).
//! - **The tree placed under the host's actor** ([`SupervisorHandle::spawn_linked`]), and that
//!   actor **killed or panicking**: ractor kills the root actor and the component actors without
//!   running their `post_stop`; each component actor's drop guard kills its process group and
//!   every process carrying its marker. Nothing is left running, but nothing is stopped
//!   gracefully either: prefer `shutdown` when there is time.
//! - **The host process killed outright** (SIGKILL): every component process has
//!   `PR_SET_PDEATHSIG(SIGKILL)` armed and dies with it; a process a component forked that left
//!   the group is swept at the next spawn of a tree with the same id (see [`process`]).
//!
//! # The policy vocabulary
//!
//! The words are OTP's and supervisord's. Each setting named here is a field of a
//! [`ComponentSpec`], of its [`RestartPolicy`] (defaults in its `Default`) or of the
//! [`TreeSpec`] (the strategy and the tree's budget; defaults in [`TreeSpec::new`]).
//!
//! - **States** ([`State`]): STOPPED, STARTING (spawned, not yet up `start_secs` and ready),
//!   RUNNING, BACKOFF (failed, waiting before the next start), STOPPING (stop signal sent),
//!   EXITED (ended and left down by its restart type), FATAL (gave up).
//! - **Restart types** ([`spec::RestartType`]): `permanent` restarts after every exit,
//!   `transient` only after an abnormal one, `temporary` never.
//! - **A failure** is an exit that restarts the component, a start that does not become
//!   RUNNING within `start_timeout`, a failed liveness probe (`health`) or memory over
//!   `memory_limit`. The first failure after a stable period is restarted at once; the next
//!   ones after a backoff from `backoff_initial`, doubling up to `backoff_max`, with jitter.
//!   Running `stable_after` resets the count.
//! - **The restart budget**: more than `max_restarts` failures within `max_window` make the
//!   component FATAL (`retry_fatal_after` retries it slowly instead of giving up for good).
//! - **Strategies** ([`spec::Strategy`]): `one_for_one` restarts the failed component alone,
//!   `one_for_all` restarts every component, `rest_for_one` the failed one and those that depend
//!   on it. Too many group restarts within the tree's window, or a `critical` component going
//!   FATAL, is **escalation**: everything stops and the tree reports why
//!   ([`SupervisorHandle::escalation`]).
//! - **Readiness** ([`spec::Ready`]): a component is RUNNING once up `start_secs` and its port
//!   accepts (or its HTTP path answers 2xx, or its file exists); dependents start only then.
//!
//! # Modules
//!
//! - [`spec`]: what to run, validated ([`TreeSpec`], [`ComponentSpec`], [`RestartPolicy`]).
//! - [`lifecycle`]: the state machine of one component and the restart rule, pure.
//! - [`component`]: the actor that owns one process and drives its lifecycle.
//! - [`supervisor`]: the root actor, a shell around the planner (`plan.rs`, private), which
//!   makes every decision of the tree as a pure function: dependency order, group restarts, the
//!   supervisor's budget and escalation, ordered shutdown, reload.
//! - [`process`]: the OS side: spawning, process groups, markers, leftovers, memory.
//! - [`probe`]: readiness, liveness and memory watchers; [`logs`]: rotated component logs.
//! - [`events`]: lifecycle events, as they happen.
//! - [`handle`]: [`SupervisorHandle`], the one API over the tree.
//!
//! This crate knows nothing of command lines, sockets or JSON.

pub mod component;
pub mod events;
pub mod format;
pub mod handle;
pub mod lifecycle;
pub mod logs;
mod plan;
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
    /// A new configuration that cannot be taken as it is.
    #[error("cannot reload: {0}")]
    Reload(String),
    /// The root actor did not answer (it stopped, or timed out).
    #[error("the supervisor did not answer: {0}")]
    NoAnswer(String),
}

impl TreeError {
    fn from_call<E: std::fmt::Display>(e: E) -> Self {
        TreeError::NoAnswer(e.to_string())
    }
}
