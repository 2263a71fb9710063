//! `SupervisorHandle`: the typed API over the root actor. The daemon's IPC bridge and any
//! embedding app use this one handle; nothing else talks to the actors.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[cfg(feature = "fault-injection")]
use crate::component::ComponentMessage;
use crate::events::{EventSender, TreeEvent, WeakEventSender};
use crate::process;
use crate::spec::TreeSpec;
use crate::status::TreeStatus;
use crate::supervisor::{Reload, ServerSupervisor, SupervisorArgs, SupervisorMessage};
use crate::TreeError;

/// How long a status query may take before it is an error.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Up to this many components, a memory sample is taken on the calling task: adopting orphans,
/// it reads one to three `/proc` files per process (see [`process::MemorySampler`]), cheaper than handing
/// the work to a blocking thread (often one to be started first). Beyond, on the blocking pool.
const INLINE_MEMORY_SCAN: usize = 16;
/// How long a memory sample serves `status` calls for the same processes: a burst of calls
/// shares one sample, and a figure is never older than this.
const MEMORY_SAMPLE_TTL: Duration = Duration::from_millis(200);
/// `wait_settled` looks at the tree whenever the supervisor reports a change, and at least this
/// often (a safety net: it does not depend on every change being reported).
const SETTLE_POLL_MAX: Duration = Duration::from_millis(50);

/// A cloneable handle on a running supervision tree.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMessage>,
    tree_id: Arc<str>,
    /// The memory sampler and its last sample, shared by every clone: concurrent `status` calls
    /// wait for one sample instead of each taking its own.
    memory: Arc<tokio::sync::Mutex<Memory>>,
    /// The reason of an escalation, published by the root actor before it stops.
    escalation: watch::Receiver<Option<String>>,
    /// Changes when the root actor handled something that may change the status.
    changes: watch::Receiver<u64>,
    /// The components' lifecycle events (weak: the stream ends with the tree's actors).
    events: WeakEventSender,
}

/// The memory sampler (it keeps the `/proc` files of the processes it saw for the next sample)
/// and its last sample.
#[derive(Debug, Default)]
struct Memory {
    sampler: process::MemorySampler,
    last: Option<MemorySample>,
}

/// Memory figures of a set of processes, and when they were taken.
#[derive(Debug)]
struct MemorySample {
    taken: Instant,
    roots: Vec<(String, u32)>,
    by_component: HashMap<String, u64>,
}

impl SupervisorHandle {
    /// Validates `spec` and spawns its tree (nothing starts until [`Self::start`]). The join
    /// handle completes when the root actor has stopped.
    pub async fn spawn(spec: TreeSpec) -> Result<(Self, JoinHandle<()>), TreeError> {
        Self::spawn_with(spec, None, Vec::new()).await
    }

    /// Like [`Self::spawn`], with the root actor linked under `parent` (a host app's own
    /// supervisor). If the parent kills it, every component process is killed with it.
    pub async fn spawn_linked(
        spec: TreeSpec,
        parent: ActorCell,
    ) -> Result<(Self, JoinHandle<()>), TreeError> {
        Self::spawn_with(spec, Some(parent), Vec::new()).await
    }

    /// Like [`Self::spawn`], with listening sockets handed to the tree, by component name (the
    /// sockets systemd passes a socket-activated daemon, say): each becomes that component's
    /// held socket instead of one the tree binds, and is kept while the tree lives. The
    /// component must hold its socket (`ComponentSpec::socket`) on the same port; otherwise the
    /// spawn fails and says why.
    pub async fn spawn_with_listeners(
        spec: TreeSpec,
        listeners: Vec<(String, OwnedFd)>,
    ) -> Result<(Self, JoinHandle<()>), TreeError> {
        for (name, fd) in &listeners {
            let component = spec
                .components
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| TreeError::UnknownComponent {
                    name: name.clone(),
                    known: spec.components.iter().map(|c| c.name.clone()).collect(),
                })?;
            let handed = process::listening_address(fd)
                .map_err(|e| TreeError::Spawn(format!("the socket handed for {name}: {e}")))?;
            let Some(socket) = &component.socket else {
                return Err(TreeError::Spawn(format!(
                    "a listening socket was handed for {name}, which does not hold its socket \
                     (hold_socket, and a port)"
                )));
            };
            if socket.addr.port() != handed.port() {
                return Err(TreeError::Spawn(format!(
                    "the socket handed for {name} listens on {handed}, but {name}'s port is {}",
                    socket.addr.port()
                )));
            }
        }
        Self::spawn_with(spec, None, listeners).await
    }

    async fn spawn_with(
        spec: TreeSpec,
        parent: Option<ActorCell>,
        listeners: Vec<(String, OwnedFd)>,
    ) -> Result<(Self, JoinHandle<()>), TreeError> {
        spec.validate()?;
        let tree_id: Arc<str> = spec.tree_id.as_str().into();
        let (tx, rx) = watch::channel(None);
        let (changes_tx, changes) = watch::channel(0);
        let events = EventSender::new();
        let weak_events = events.downgrade();
        let args = SupervisorArgs {
            spec,
            escalation: tx,
            changes: changes_tx,
            events,
            listeners,
        };
        let spawned = match parent {
            None => Actor::spawn(None, ServerSupervisor, args).await,
            Some(parent) => Actor::spawn_linked(None, ServerSupervisor, args, parent).await,
        };
        let (actor, join) = spawned.map_err(|e| TreeError::Spawn(e.to_string()))?;
        Ok((
            SupervisorHandle::new(actor, tree_id, rx, changes, weak_events),
            join,
        ))
    }

    fn new(
        actor: ActorRef<SupervisorMessage>,
        tree_id: Arc<str>,
        escalation: watch::Receiver<Option<String>>,
        changes: watch::Receiver<u64>,
        events: WeakEventSender,
    ) -> Self {
        SupervisorHandle {
            actor,
            tree_id,
            memory: Arc::default(),
            escalation,
            changes,
            events,
        }
    }

    /// Every lifecycle event of every component from now on (see [`crate::events`] and the crate
    /// documentation's example): spawned,
    /// running, exited, backoff, fatal, stopping, stopped, completed, unhealthy, memory limit.
    /// The stream ends (`RecvError::Closed`) once the tree's actors are gone; a subscriber more than
    /// [`crate::events::EVENT_BUFFER`] events behind gets `RecvError::Lagged` with the count.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TreeEvent> {
        self.events.subscribe()
    }

    /// Why the tree escalated (a critical component went FATAL, or the supervisor-wide budget
    /// of group restarts was exceeded), once it has stopped every component. `None` while it
    /// runs, and after an ordinary shutdown.
    pub fn escalation(&self) -> Option<String> {
        self.escalation.borrow().clone()
    }

    /// The root actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMessage> {
        &self.actor
    }

    /// The tree's marker.
    pub fn tree_id(&self) -> &str {
        &self.tree_id
    }

    /// Starts the named components (all when empty) with their dependencies, and returns at
    /// once with the names of those that were already running.
    pub async fn start(&self, components: &[String]) -> Result<Vec<String>, TreeError> {
        let components = components.to_vec();
        ractor::call!(self.actor, |reply| SupervisorMessage::Start {
            components,
            reply
        })
        .map_err(TreeError::from_call)?
    }

    /// Waits until each named component (all when empty) is settled — RUNNING, FATAL, or not
    /// starting because a dependency failed — or `timeout` passes; returns the status then,
    /// without memory figures (a sample of a just-started process says little, and costs a
    /// scan of `/proc`: [`Self::status`] has them). It wakes on each change the root actor
    /// reports, so it answers as soon as the last component settles.
    pub async fn wait_settled(
        &self,
        components: &[String],
        timeout: Duration,
    ) -> Result<TreeStatus, TreeError> {
        let until = Instant::now() + timeout;
        let mut changes = self.changes.clone();
        loop {
            // Marked seen before the look, so a change made after it wakes the wait below.
            changes.borrow_and_update();
            let status = self.status_without_memory().await?;
            let settled = status
                .components
                .iter()
                .filter(|c| components.is_empty() || components.contains(&c.name))
                .all(super::status::ComponentStatus::is_settled);
            let now = Instant::now();
            if settled || now >= until {
                return Ok(status);
            }
            let pause = (until - now).min(SETTLE_POLL_MAX);
            // An error means the root actor is gone: the next look reports it.
            let _ = tokio::time::timeout(pause, changes.changed()).await;
        }
    }

    /// Applies a new configuration of the same tree (same tree id) and returns what changed:
    /// the removed and changed components are stopped (dependents first) and their actors
    /// dropped; changed and added ones get actors with their new specs; changed ones that were
    /// asked to run start again, and added ones start when the tree runs (any component is
    /// asked to run); unchanged components are left alone, their processes untouched. An
    /// invalid `spec` changes nothing. Returns once the starts are requested: follow with
    /// [`Self::wait_settled`] to wait for them.
    ///
    /// A component whose only change is the address block every component shares (another
    /// component was added, say) is not restarted; it sees the new block at its next start.
    ///
    /// ```
    /// use imageserving_actors::spec::{ComponentSpec, TreeSpec};
    /// use imageserving_actors::SupervisorHandle;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let id = format!("doc-reload-{}", std::process::id());
    /// let sleeper = |name: &str, secs: &str| ComponentSpec::builder(name, "sleep").arg(secs).build();
    /// let tree = TreeSpec::builder(id.clone()).component(sleeper("a", "1000")?).build()?;
    /// let (handle, done) = SupervisorHandle::spawn(tree).await?;
    /// handle.start(&[]).await?;
    ///
    /// // `a` runs a new command, `b` is new: `a` restarts, `b` starts.
    /// let new = TreeSpec::builder(id)
    ///     .component(sleeper("a", "2000")?)
    ///     .component(sleeper("b", "1000")?)
    ///     .build()?;
    /// let plan = handle.reload(new).await?;
    /// assert_eq!((plan.changed, plan.added), (vec!["a".to_string()], vec!["b".to_string()]));
    ///
    /// handle.shutdown().await?;
    /// done.await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reload(&self, spec: TreeSpec) -> Result<Reload, TreeError> {
        let spec = Box::new(spec);
        let plan = ractor::call!(self.actor, |reply| SupervisorMessage::Plan {
            spec: spec.clone(),
            reply
        })
        .map_err(TreeError::from_call)??;
        if plan.is_empty() {
            return Ok(plan);
        }
        let running = self
            .status_without_memory()
            .await?
            .components
            .iter()
            .any(|c| c.wanted);
        // A component that hands over keeps serving while its new process starts.
        let down = plan.stopped_first();
        if !down.is_empty() {
            self.stop(&down).await?;
        }
        ractor::call!(self.actor, |reply| SupervisorMessage::Reconfigure {
            spec,
            reply
        })
        .map_err(TreeError::from_call)??;
        let mut start: Vec<String> = plan
            .restarted
            .iter()
            .filter(|c| !plan.handed_over.contains(c))
            .cloned()
            .collect();
        if running {
            start.extend(plan.added.iter().cloned());
        }
        if !start.is_empty() {
            self.start(&start).await?;
        }
        Ok(plan)
    }

    /// Stops the named components (all when empty) in reverse dependency order; returns once
    /// their processes are gone.
    pub async fn stop(&self, components: &[String]) -> Result<(), TreeError> {
        let components = components.to_vec();
        ractor::call!(self.actor, |reply| SupervisorMessage::Stop {
            components,
            reply
        })
        .map_err(TreeError::from_call)?
    }

    /// Restarts one component (its dependents keep running) and returns once the restart
    /// began; follow with [`Self::wait_settled`] to wait for the outcome.
    pub async fn restart(&self, component: &str) -> Result<(), TreeError> {
        let component = component.to_string();
        ractor::call!(self.actor, |reply| SupervisorMessage::Restart {
            component,
            reply
        })
        .map_err(TreeError::from_call)?
    }

    /// Restarts every component: stops them all in reverse dependency order, then starts them
    /// all in dependency order; returns once the starts are requested (follow with
    /// [`Self::wait_settled`]). For one component, [`Self::restart`] leaves the others running.
    pub async fn restart_all(&self) -> Result<(), TreeError> {
        self.stop(&[]).await?;
        self.start(&[]).await.map(drop)
    }

    /// The status of every component, with the resident memory of each process tree.
    pub async fn status(&self) -> Result<TreeStatus, TreeError> {
        Ok(self.with_memory(self.status_without_memory().await?).await)
    }

    async fn status_without_memory(&self) -> Result<TreeStatus, TreeError> {
        ractor::call_t!(
            self.actor,
            SupervisorMessage::Status,
            STATUS_TIMEOUT.as_millis() as u64
        )
        .map_err(TreeError::from_call)
    }

    /// Stops every component in reverse dependency order, then the root actor; returns the
    /// final status once the actor is gone.
    pub async fn shutdown(&self) -> Result<TreeStatus, TreeError> {
        ractor::call!(self.actor, SupervisorMessage::Shutdown).map_err(TreeError::from_call)
    }

    /// Fault injection for this crate's tests: makes a component's actor panic.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn inject_actor_panic(&self, component: &str) {
        let _ = self.actor.send_message(SupervisorMessage::Inject {
            component: component.to_string(),
            message: ComponentMessage::InjectPanic,
        });
    }

    /// Fault injection for tests: delivers a lifecycle event (e.g. a stale `Exited`) to a
    /// component's actor as if a timer or task had sent it.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn inject_event(&self, component: &str, event: crate::lifecycle::Event) {
        let _ = self.actor.send_message(SupervisorMessage::Inject {
            component: component.to_string(),
            message: ComponentMessage::Lifecycle(event),
        });
    }
}

impl SupervisorHandle {
    /// Fills in the memory figures: each component's process tree plus any marked process that
    /// escaped it. A sample is taken at most once per [`MEMORY_SAMPLE_TTL`] for the same
    /// processes, however many callers ask at once; between calls nothing runs.
    async fn with_memory(&self, mut status: TreeStatus) -> TreeStatus {
        let roots: Vec<(String, u32)> = status
            .components
            .iter()
            .filter_map(|c| c.pid.map(|p| (c.name.clone(), p)))
            .collect();
        if roots.is_empty() {
            return status;
        }
        let mut memory = self.memory.lock().await;
        let fresh = memory
            .last
            .as_ref()
            .is_some_and(|s| s.roots == roots && s.taken.elapsed() < MEMORY_SAMPLE_TTL);
        if !fresh {
            let tree_id = self.tree_id.to_string();
            let by_component = if roots.len() <= INLINE_MEMORY_SCAN && process::adopts_orphans() {
                memory.sampler.sample(&tree_id, &roots)
            } else {
                // Otherwise the sample reads many processes (every process of the machine, when
                // not adopting): off the runtime. A panic there loses the kept files, no more.
                let mut sampler = std::mem::take(&mut memory.sampler);
                let scan_roots = roots.clone();
                let (sampler, by_component) = tokio::task::spawn_blocking(move || {
                    let by_component = sampler.sample(&tree_id, &scan_roots);
                    (sampler, by_component)
                })
                .await
                .unwrap_or_default();
                memory.sampler = sampler;
                by_component
            };
            memory.last = Some(MemorySample {
                taken: Instant::now(),
                roots,
                by_component,
            });
        }
        if let Some(sample) = memory.last.as_ref() {
            for c in &mut status.components {
                if c.pid.is_some() {
                    c.memory = sample.by_component.get(&c.name).copied();
                }
            }
        }
        status
    }
}
