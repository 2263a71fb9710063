//! `ServerSupervisor`: the root of the tree.
//!
//! ```text
//!                  ServerSupervisor            (root; its decisions are plan.rs's Planner)
//!          ┌──────────────┼──────────────┐
//!   ComponentActor  ComponentActor  ComponentActor     (spawn_linked, one per component)
//!        │ is             │ svg            │ ps
//!   OS process group  OS process group  OS process group (each its own group, marked)
//! ```
//!
//! Who supervises whom, and what happens when each fails:
//! - A component's **process** is supervised by its `ComponentActor` (the restart rule of
//!   [`crate::lifecycle`]: at once, then exponential backoff, FATAL past the budget).
//! - A **`ComponentActor`** that panics or stops is supervised here
//!   ([`Actor::handle_supervisor_evt`]): whatever process it owned is killed by marker, and a new
//!   actor takes over the component's failure history; the failure counts against the component's
//!   budget, so an actor that keeps failing ends FATAL like a process that keeps crashing.
//! - **This actor** has no supervisor of ours. Stopping it through [`SupervisorMessage::Shutdown`]
//!   stops every component in reverse dependency order first. If it is killed or panics instead,
//!   its linked children die (ractor skips their `post_stop`) and each one's
//!   [`crate::component::ProcessGuard`] kills its current attempt's processes when its state is
//!   dropped. If it is stopped with a plain `stop()`, `post_stop` also kills every marked
//!   process of the tree.
//!
//! This actor is a shell: every decision (dependency order, group restarts, the supervisor's
//! budget and escalation, reload) is the planner's (`plan.rs`), which turns each message into
//! actions. The actor carries them out (commands to component actors, replacements, answers)
//! and feeds the component actors' answers back to the planner.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{debug, error, info, warn};

use crate::component::{
    Command, ComponentActor, ComponentArgs, ComponentMessage, ComponentReport, ComponentSnapshot,
    HeldSocket, Inherited, SocketSlot,
};
use crate::events::EventSender;
use crate::logs::ComponentLog;
pub use crate::plan::Reload;
use crate::plan::{Action, Answer, Input, Note, Planner, RequestId};
use crate::process;
use crate::spec::{ComponentSpec, TreeSpec};
use crate::status::TreeStatus;
use crate::TreeError;

/// How long the supervisor waits for a component actor to answer a command. The actor never
/// blocks, so this only matters when it is dying.
const COMMAND_TIMEOUT_MS: u64 = 2_000;

/// How long the sweep of an earlier run's leftovers may take before the tree starts anyway.
const LEFTOVER_SWEEP_DEADLINE: Duration = Duration::from_secs(5);

/// The root actor. Stateless: everything lives in [`SupervisorState`].
#[derive(Debug)]
pub struct ServerSupervisor;

/// Messages of the root actor.
#[derive(Debug)]
pub enum SupervisorMessage {
    /// Start these components (all when empty) and their dependencies; answers with the names
    /// of those that were already running.
    Start {
        /// Component names.
        components: Vec<String>,
        /// The answer.
        reply: RpcReplyPort<Result<Vec<String>, TreeError>>,
    },
    /// Stop these components (all when empty) in reverse dependency order; answers once they
    /// are all down.
    Stop {
        /// Component names.
        components: Vec<String>,
        /// The answer.
        reply: RpcReplyPort<Result<(), TreeError>>,
    },
    /// Restart one component (its dependents keep running); answers once the restart began.
    Restart {
        /// Component name.
        component: String,
        /// The answer.
        reply: RpcReplyPort<Result<(), TreeError>>,
    },
    /// The status of every component, without memory figures.
    Status(RpcReplyPort<TreeStatus>),
    /// Stop everything in order, answer with the final status, then stop this actor.
    Shutdown(RpcReplyPort<TreeStatus>),
    /// A component actor's new snapshot.
    ComponentChanged(ComponentReport),
    /// The difference between the running tree and `spec` (see [`Reload`]).
    Plan {
        /// The new tree.
        spec: Box<TreeSpec>,
        /// The answer.
        reply: RpcReplyPort<Result<Reload, TreeError>>,
    },
    /// Takes `spec` as the tree: drops the removed components, gives the changed ones a new
    /// actor with their new spec, adds the new ones (not started), keeps the others as they
    /// are. Refused while a removed or changed component is not down.
    Reconfigure {
        /// The new tree.
        spec: Box<TreeSpec>,
        /// The answer.
        reply: RpcReplyPort<Result<(), TreeError>>,
    },
    /// A datagram on the notification socket ([`process::NotifySocket`]).
    Notified(process::Notification),
    /// Fault injection for this crate's tests: deliver `message` to a component's actor.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    Inject {
        /// Component name.
        component: String,
        /// What to deliver.
        message: ComponentMessage,
    },
}

impl From<ComponentReport> for SupervisorMessage {
    fn from(report: ComponentReport) -> Self {
        SupervisorMessage::ComponentChanged(report)
    }
}

impl TryFrom<SupervisorMessage> for ComponentReport {
    type Error = ();

    fn try_from(message: SupervisorMessage) -> Result<Self, ()> {
        match message {
            SupervisorMessage::ComponentChanged(report) => Ok(report),
            _ => Err(()),
        }
    }
}

/// What the root actor starts from.
#[derive(Debug)]
pub struct SupervisorArgs {
    /// The tree.
    pub spec: TreeSpec,
    /// Where the reason of an escalation is published before the root actor stops.
    pub escalation: watch::Sender<Option<String>>,
    /// Counts the messages that may have changed the tree's status, so that a waiter (see
    /// [`crate::SupervisorHandle::wait_settled`]) looks again on a change instead of polling.
    pub changes: watch::Sender<u64>,
    /// Where the components publish their lifecycle events.
    pub events: EventSender,
    /// Listening sockets handed to the tree (by systemd's socket activation, say), by
    /// component: each is that component's held socket instead of one the tree binds.
    pub listeners: Vec<(String, OwnedFd)>,
}

/// What the actor holds for one component, beside the planner's view of it.
#[derive(Debug)]
struct Slot {
    /// The component's log, shared by every actor that owns the component in turn.
    log: Arc<ComponentLog>,
    /// The component's held listening socket, passed from actor to actor in the same way.
    socket: SocketSlot,
    actor: Option<ActorRef<ComponentMessage>>,
}

/// A request whose answer the planner gives later.
#[derive(Debug)]
enum Pending {
    Started(RpcReplyPort<Result<Vec<String>, TreeError>>),
    Done(RpcReplyPort<Result<(), TreeError>>),
    Shutdown(RpcReplyPort<TreeStatus>),
}

/// The state of the root actor.
#[derive(Debug)]
pub struct SupervisorState {
    planner: Planner,
    slots: HashMap<String, Slot>,
    /// Which component each live actor owns; reports of replaced actors find nothing here.
    actors: HashMap<ActorId, String>,
    pending: HashMap<RequestId, Pending>,
    next_request: RequestId,
    /// Whether the orderly end completed (so `post_stop` has nothing left to kill).
    clean_exit: bool,
    escalation_tx: watch::Sender<Option<String>>,
    changes: watch::Sender<u64>,
    events: EventSender,
    /// The notification socket's path, for the components' `NOTIFY_SOCKET`, once it is bound.
    notify_path: Option<Arc<std::path::Path>>,
    /// The task reading the notification socket; the socket (and its file) go with it.
    _notify_task: Option<AbortOnDrop>,
}

/// A task that ends with its owner.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a server sends on the notification socket when it quarantined a poison request of the
/// component at the address it gives (`host:port`): the crashes that request caused are not
/// the component's to pay for in its restart budget.
pub const POISON_NOTIFICATION: &str = "X_IMAGESERVING_POISON";
/// How many crashes one poison notification forgives: a poison request crashes its upstream at
/// most twice before it is quarantined.
const CRASHES_PER_POISON: u32 = 2;

impl Actor for ServerSupervisor {
    type Msg = SupervisorMessage;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        SupervisorArgs {
            spec,
            escalation,
            changes,
            events,
            listeners,
        }: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let planner = Planner::new(&spec, Instant::now())?;
        // Before any process of this tree starts: what an earlier run left (a daemon or a host
        // application killed outright) goes, so that no component ever runs twice.
        let tree_id = spec.tree_id.clone();
        let swept = tokio::task::spawn_blocking(move || {
            process::sweep_marked(&tree_id, None, LEFTOVER_SWEEP_DEADLINE)
        })
        .await?;
        match swept {
            (0, _) => {}
            (killed, false) => warn!(killed, "killed leftover processes of an earlier run"),
            (killed, true) => {
                warn!(
                    killed,
                    "leftover processes of an earlier run survive SIGKILL"
                );
            }
        }
        let slots: HashMap<String, Slot> = planner
            .specs()
            .map(|c| (c.name.clone(), Slot::new(c)))
            .collect();
        for (name, fd) in listeners {
            let socket = planner.spec(&name).and_then(|c| c.socket.clone());
            if let (Some(slot), Some(socket)) = (slots.get(&name), socket) {
                info!(component = %name, addr = %socket.addr, "holding the listening socket it was handed");
                *slot
                    .socket
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(HeldSocket::handed(socket, fd));
            }
        }
        let (notify_path, notify_task) = match &spec.notify_socket {
            Some(path) => match process::NotifySocket::bind(path) {
                Ok(socket) => {
                    let path: Arc<std::path::Path> = socket.path().into();
                    let me = myself.clone();
                    let task = tokio::spawn(async move {
                        loop {
                            match socket.recv().await {
                                Ok(notification) => {
                                    if me
                                        .send_message(SupervisorMessage::Notified(notification))
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    warn!(error = %e, "the notification socket failed; notifications are ignored from now on");
                                    return;
                                }
                            }
                        }
                    });
                    (Some(path), Some(AbortOnDrop(task)))
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot bind the notification socket; components' notifications are ignored");
                    (None, None)
                }
            },
            None => (None, None),
        };
        let mut state = SupervisorState {
            notify_path,
            _notify_task: notify_task,
            slots,
            planner,
            actors: HashMap::new(),
            pending: HashMap::new(),
            next_request: 0,
            clean_exit: false,
            escalation_tx: escalation,
            changes,
            events,
        };
        let names: Vec<String> = state.planner.specs().map(|c| c.name.clone()).collect();
        for name in names {
            state.spawn_actor(&myself, &name, None).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Notified(notification) => {
                state.notified(&notification);
                return Ok(());
            }
            SupervisorMessage::Status(reply) => {
                let _ = reply.send(state.status());
                // A query changes nothing: no waiter needs to look again.
                return Ok(());
            }
            SupervisorMessage::Start { components, reply } => {
                let request = state.pending(Pending::Started(reply));
                state
                    .run(
                        &myself,
                        Input::Start {
                            request,
                            components,
                        },
                    )
                    .await;
            }
            SupervisorMessage::Stop { components, reply } => {
                let request = state.pending(Pending::Done(reply));
                state
                    .run(
                        &myself,
                        Input::Stop {
                            request,
                            components,
                        },
                    )
                    .await;
            }
            SupervisorMessage::Restart { component, reply } => {
                let request = state.pending(Pending::Done(reply));
                state
                    .run(&myself, Input::Restart { request, component })
                    .await;
            }
            SupervisorMessage::Shutdown(reply) => {
                let request = state.pending(Pending::Shutdown(reply));
                state.run(&myself, Input::Shutdown { request }).await;
            }
            SupervisorMessage::ComponentChanged(ComponentReport { actor, snapshot }) => {
                if let Some(component) = state.actors.get(&actor).cloned() {
                    state
                        .run(
                            &myself,
                            Input::Report {
                                component,
                                snapshot,
                            },
                        )
                        .await;
                }
            }
            SupervisorMessage::Plan { spec, reply } => {
                let _ = reply.send(state.planner.plan(&spec));
            }
            SupervisorMessage::Reconfigure { spec, reply } => {
                let answer = state.reconfigure(&myself, &spec).await;
                let _ = reply.send(answer);
            }
            #[cfg(feature = "fault-injection")]
            SupervisorMessage::Inject { component, message } => {
                if let Some(actor) = state.slots.get(&component).and_then(|s| s.actor.as_ref()) {
                    let _ = actor.send_message(message);
                }
            }
        }
        state.changed();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell, format!("component actor failed: {err}"))
            }
            SupervisionEvent::ActorTerminated(cell, _, why) => (
                cell,
                format!(
                    "component actor stopped: {}",
                    why.unwrap_or_else(|| "no reason".into())
                ),
            ),
            _ => return Ok(()),
        };
        // Events of replaced incarnations find no component and are ignored.
        let Some(component) = state.actors.remove(&cell.get_id()) else {
            return Ok(());
        };
        if let Some(slot) = state.slots.get_mut(&component) {
            slot.actor = None;
        }
        state
            .run(&myself, Input::ActorDied { component, reason })
            .await;
        state.changed();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !state.clean_exit {
            warn!("supervisor stopping without an orderly shutdown: killing every component");
            process::kill_marked(state.planner.tree_id(), None);
        }
        Ok(())
    }
}

impl Slot {
    fn new(spec: &ComponentSpec) -> Self {
        Slot {
            log: Arc::new(ComponentLog::new(&spec.log, &spec.name)),
            socket: SocketSlot::default(),
            actor: None,
        }
    }
}

impl SupervisorState {
    /// Acts on a notification from a component's process; ignores one from any other process.
    fn notified(&self, notification: &process::Notification) {
        let ready = notification
            .fields
            .iter()
            .any(|(key, value)| key == "READY" && value == "1");
        if ready {
            // A process that just started may say it before its spawn is reported: found by
            // its marker then. Its actor checks that it is the live process.
            let component = self
                .planner
                .component_with_pid(notification.pid)
                .map(str::to_owned)
                .or_else(|| process::component_of(self.planner.tree_id(), notification.pid));
            if let Some(actor) = component
                .and_then(|name| self.slots.get(&name))
                .and_then(|slot| slot.actor.as_ref())
            {
                let _ = actor.send_message(ComponentMessage::Ready {
                    pid: notification.pid,
                });
            }
        }
        let Some(sender) = self.planner.component_with_pid(notification.pid) else {
            debug!(
                pid = notification.pid,
                "a notification from a process that is no component's; ignored"
            );
            return;
        };
        for (key, value) in &notification.fields {
            if key != POISON_NOTIFICATION {
                continue;
            }
            let Ok(addr) = value.parse::<std::net::SocketAddr>() else {
                warn!(component = sender, %value, "a poison notification without a host:port; ignored");
                continue;
            };
            let target = self.planner.specs().find(|c| {
                c.name != sender && c.probe.is_some_and(|probe| probe.port() == addr.port())
            });
            let Some(target) = target else {
                warn!(component = sender, %addr, "a poison notification for no component; ignored");
                continue;
            };
            if let Some(actor) = self.slots.get(&target.name).and_then(|s| s.actor.as_ref()) {
                let _ = actor.send_message(ComponentMessage::Forgive {
                    crashes: CRASHES_PER_POISON,
                    by: sender.to_owned(),
                });
            }
        }
    }

    /// Tells the status waiters to look again.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keeps a reply port until the planner answers its request.
    fn pending(&mut self, reply: Pending) -> RequestId {
        self.next_request += 1;
        self.pending.insert(self.next_request, reply);
        self.next_request
    }

    fn status(&self) -> TreeStatus {
        self.planner
            .status(Instant::now(), SystemTime::now(), |name| {
                self.slots.get(name).map_or(0, |s| s.log.dropped_bytes())
            })
    }

    /// Feeds `input` to the planner and carries out its actions, feeding the component actors'
    /// answers back, until nothing is left to do.
    async fn run(&mut self, myself: &ActorRef<SupervisorMessage>, input: Input) {
        let mut actions: VecDeque<Action> = self.planner.step(input, Instant::now()).into();
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Command { component, cmd } => {
                    if let Some(snapshot) = self.command(&component, cmd).await {
                        let answer = Input::Answer {
                            component,
                            snapshot,
                        };
                        actions.extend(self.planner.step(answer, Instant::now()));
                    }
                }
                Action::Replace {
                    component,
                    inherited,
                } => {
                    // Whatever the dead actor owned dies before its replacement can spawn.
                    process::kill_marked(self.planner.tree_id(), Some(&component));
                    if let Err(err) = self.spawn_actor(myself, &component, Some(inherited)).await {
                        error!(%component, error = %err, "could not replace the component actor");
                    }
                }
                Action::Reply { request, answer } => self.reply(request, answer),
                Action::Note(note) => log(&note),
                Action::Exit { escalation } => {
                    if let Some(reason) = &escalation {
                        self.escalation_tx.send_replace(Some(reason.clone()));
                    }
                    self.clean_exit = true;
                    myself.stop(Some(escalation.unwrap_or_else(|| "shutdown".to_string())));
                }
            }
        }
    }

    fn reply(&mut self, request: RequestId, answer: Answer) {
        let Some(pending) = self.pending.remove(&request) else {
            return;
        };
        // A caller that gave up waiting has dropped its port: nothing to tell it.
        match (pending, answer) {
            (Pending::Started(port), Answer::Started(result)) => {
                let _ = port.send(result);
            }
            (Pending::Done(port), Answer::Done(result)) => {
                let _ = port.send(result);
            }
            (Pending::Shutdown(port), Answer::ShutDown) => {
                let _ = port.send(self.status());
            }
            (_, answer) => {
                error!(
                    ?answer,
                    "an answer of the wrong kind; the request stays unanswered"
                );
            }
        }
    }

    /// Sends a command to a component actor; returns its snapshot right after the command.
    async fn command(&mut self, component: &str, cmd: Command) -> Option<ComponentSnapshot> {
        let actor = self.slots.get(component)?.actor.clone()?;
        match ractor::call_t!(actor, ComponentMessage::Command, COMMAND_TIMEOUT_MS, cmd) {
            Ok(snapshot) => Some(snapshot),
            Err(err) => {
                warn!(%component, ?cmd, error = %err, "component actor did not answer");
                None
            }
        }
    }

    async fn spawn_actor(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        component: &str,
        inherited: Option<Inherited>,
    ) -> Result<(), ActorProcessingErr> {
        let (Some(spec), Some(slot)) = (self.planner.spec(component), self.slots.get(component))
        else {
            return Err(format!("no component `{component}`").into());
        };
        let args = ComponentArgs {
            spec: spec.clone(),
            tree_id: self.planner.tree_id().to_string(),
            supervisor: myself.get_derived(),
            inherited,
            log: Arc::clone(&slot.log),
            events: self.events.clone(),
            socket: Arc::clone(&slot.socket),
            notify_socket: self.notify_path.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, ComponentActor, args, myself.get_cell()).await?;
        self.actors.insert(actor.get_id(), component.to_string());
        if let Some(slot) = self.slots.get_mut(component) {
            slot.actor = Some(actor);
        }
        Ok(())
    }

    /// Takes `spec` as the tree (see [`SupervisorMessage::Reconfigure`]).
    async fn reconfigure(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        spec: &TreeSpec,
    ) -> Result<(), TreeError> {
        let done = self.planner.reconfigure(spec, Instant::now())?;
        // The old actors are all down; their supervision events find no component and are
        // ignored.
        // The held sockets of changed components go to their new actors: connections keep
        // waiting in the backlog across the change (a changed address is bound anew at the
        // first spawn).
        let mut sockets = HashMap::new();
        for name in &done.dropped {
            info!(component = %name, "removed by a reload");
            if let Some(slot) = self.slots.remove(name) {
                sockets.insert(name.clone(), slot.socket);
                if let Some(actor) = slot.actor {
                    self.actors.remove(&actor.get_id());
                    actor.stop(Some("reloaded".into()));
                }
            }
        }
        for name in &done.fresh {
            info!(component = %name, "configured by a reload");
            if let Some(spec) = self.planner.spec(name) {
                let mut slot = Slot::new(spec);
                if let Some(socket) = sockets.remove(name) {
                    slot.socket = socket;
                }
                self.slots.insert(name.clone(), slot);
            }
            self.spawn_actor(myself, name, None)
                .await
                .map_err(|e| TreeError::Reload(format!("starting the actor of {name}: {e}")))?;
        }
        for name in &done.handed_over {
            info!(component = %name, "configured by a reload: handing over to a process with the new settings");
            let actor = self.slots.get(name).and_then(|slot| slot.actor.clone());
            if let (Some(spec), Some(actor)) = (self.planner.spec(name), actor) {
                let spec = Box::new(spec.clone());
                if let Err(e) = ractor::call_t!(
                    actor,
                    ComponentMessage::Reconfigure,
                    COMMAND_TIMEOUT_MS,
                    spec
                ) {
                    warn!(component = %name, error = %e, "component actor did not take its new settings");
                }
            }
        }
        Ok(())
    }
}

/// The supervisor's log line for one of the planner's notes.
fn log(note: &Note) {
    match note {
        Note::ShutdownRequested => {
            info!("shutdown requested: stopping every component in reverse dependency order");
        }
        Note::RestartRequested { component } => info!(%component, "restart requested"),
        Note::ActorDied { component, reason } => {
            error!(%component, %reason, "component actor died; replacing it");
        }
        Note::GroupRestart {
            strategy,
            failed,
            reason,
            group,
        } => warn!(
            strategy = strategy.as_str(),
            %failed,
            %reason,
            ?group,
            "group restart: stopping the group in reverse dependency order"
        ),
        Note::GroupStopped { group } => {
            info!(components = ?group, "group stopped; starting it again in dependency order");
        }
        Note::Escalation { reason } => {
            error!(%reason, "escalation: stopping every component, then the supervisor");
        }
        Note::AllStopped => info!("every component stopped"),
        Note::EscalationComplete { reason } => {
            error!(%reason, "every component stopped after the escalation; the supervisor exits");
        }
    }
}
