//! `ServerSupervisor`: the root of the tree.
//!
//! ```text
//!                  ServerSupervisor            (root; keeps the ordered component list)
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
//! Components start by dependency: one is sent `Start` once all of its dependencies are
//! RUNNING, so independent components start concurrently and each level waits for the one
//! before. They stop in reverse: one is sent `Stop` once none of its dependents that are also
//! stopping is still alive.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::component::{
    Command, ComponentActor, ComponentArgs, ComponentMessage, ComponentSnapshot, Inherited,
};
use crate::events::EventSender;
use crate::lifecycle::State;
use crate::logs::ComponentLog;
use crate::process;
use crate::spec::{ComponentSpec, RestartType, Strategy, TreeSpec};
use crate::status::{wall, ComponentStatus, TreeStatus};
use crate::TreeError;

/// How long the supervisor waits for a component actor to answer a command. The actor never
/// blocks, so this only matters when it is dying.
const COMMAND_TIMEOUT_MS: u64 = 2_000;

/// How long the sweep of an earlier run's leftovers may take before the tree starts anyway.
const LEFTOVER_SWEEP_DEADLINE: Duration = Duration::from_secs(5);

/// The root actor. Stateless: everything lives in [`SupervisorState`].
pub struct ServerSupervisor;

/// Messages of the root actor.
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
    ComponentChanged {
        /// The reporting actor (reports of replaced actors are ignored).
        actor: ActorId,
        /// Its snapshot.
        snapshot: ComponentSnapshot,
    },
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
    /// Fault injection for tests: deliver `message` to a component's actor.
    #[doc(hidden)]
    Inject {
        /// Component name.
        component: String,
        /// What to deliver.
        message: ComponentMessage,
    },
}

/// What a new configuration changes, by component name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reload {
    /// In the new tree only.
    pub added: Vec<String>,
    /// In the old tree only.
    pub removed: Vec<String>,
    /// In both, with a different spec.
    pub changed: Vec<String>,
    /// Changed components that were asked to run: they start again after the change.
    pub restarted: Vec<String>,
    /// Whether the strategy or the supervisor-wide budget changed.
    pub tree_changed: bool,
}

impl Reload {
    /// Whether the new tree is the running one.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.tree_changed
    }
}

/// One component as the supervisor sees it.
struct Entry {
    spec: ComponentSpec,
    /// The component's log, shared by every actor that owns the component in turn.
    log: Arc<ComponentLog>,
    actor: Option<ActorRef<ComponentMessage>>,
    snapshot: ComponentSnapshot,
    /// Asked to run (by start or restart), and not since asked to stop.
    wanted: bool,
    /// A start is due once the dependencies run.
    start_due: bool,
    /// Asked to stop; `Stop` goes out once no stopping dependent is alive.
    stopping: bool,
    stop_sent: bool,
    /// Stopped for a group restart (`one_for_all`, `rest_for_one`): starts again once every
    /// component of the group is down.
    group_pending: bool,
}

impl Entry {
    /// A component not started yet, without an actor.
    fn new(spec: ComponentSpec, now: Instant) -> Self {
        Entry {
            log: Arc::new(ComponentLog::new(&spec.log, &spec.name)),
            spec,
            actor: None,
            snapshot: ComponentSnapshot::initial(now),
            wanted: false,
            start_due: false,
            stopping: false,
            stop_sent: false,
            group_pending: false,
        }
    }
}

/// Someone waiting for a stop to complete.
enum StopWaiter {
    Stop(Vec<usize>, RpcReplyPort<Result<(), TreeError>>),
    Shutdown(RpcReplyPort<TreeStatus>),
    /// The supervisor escalated: once everything is down, it stops with this reason.
    Escalation(String),
}

/// What the root actor starts from.
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
}

/// The state of the root actor.
pub struct SupervisorState {
    tree_id: String,
    /// In start order.
    entries: Vec<Entry>,
    waiters: Vec<StopWaiter>,
    shutting_down: bool,
    /// Whether the orderly shutdown completed (so `post_stop` has nothing left to kill).
    clean_exit: bool,
    strategy: Strategy,
    max_restarts: u32,
    max_window: Duration,
    /// Times of the group restarts within `max_window`.
    group_restarts: VecDeque<Instant>,
    /// Every group restart so far.
    group_restarts_total: u32,
    /// Why the supervisor escalated, once it did.
    escalation: Option<String>,
    escalation_tx: watch::Sender<Option<String>>,
    changes: watch::Sender<u64>,
    events: EventSender,
}

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
        }: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        spec.validate()?;
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
                )
            }
        }
        let now = Instant::now();
        let order: Vec<ComponentSpec> = spec.start_order()?.into_iter().cloned().collect();
        let mut state = SupervisorState {
            tree_id: spec.tree_id.clone(),
            entries: order
                .into_iter()
                .map(|spec| Entry::new(spec, now))
                .collect(),
            waiters: Vec::new(),
            shutting_down: false,
            clean_exit: false,
            strategy: spec.strategy,
            max_restarts: spec.max_restarts,
            max_window: spec.max_window,
            group_restarts: VecDeque::new(),
            group_restarts_total: 0,
            escalation: None,
            escalation_tx: escalation,
            changes,
            events,
        };
        for i in 0..state.entries.len() {
            state.spawn_actor(&myself, i, None).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let changes = !matches!(message, SupervisorMessage::Status(_));
        match message {
            SupervisorMessage::Start { components, reply } => {
                let answer = state.start(&components);
                state.drive().await;
                let _ = reply.send(answer);
            }
            SupervisorMessage::Stop { components, reply } => match state.select(&components) {
                Ok(set) => {
                    state.begin_stop(&set);
                    state.waiters.push(StopWaiter::Stop(set, reply));
                    state.drive().await;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            SupervisorMessage::Restart { component, reply } => {
                let answer = state.restart(&component).await;
                state.drive().await;
                let _ = reply.send(answer);
            }
            SupervisorMessage::Status(reply) => {
                let _ = reply.send(state.status());
            }
            SupervisorMessage::Shutdown(reply) => {
                info!("shutdown requested: stopping every component in reverse dependency order");
                state.shutting_down = true;
                let all: Vec<usize> = (0..state.entries.len()).collect();
                state.begin_stop(&all);
                state.waiters.push(StopWaiter::Shutdown(reply));
                state.drive().await;
            }
            SupervisorMessage::ComponentChanged { actor, snapshot } => {
                if let Some(i) = state
                    .entries
                    .iter()
                    .position(|e| e.actor.as_ref().is_some_and(|a| a.get_id() == actor))
                {
                    let e = &mut state.entries[i];
                    if snapshot.seq > e.snapshot.seq {
                        let old = std::mem::replace(&mut e.snapshot, snapshot);
                        state.on_change(i, &old);
                    }
                }
                state.drive().await;
            }
            SupervisorMessage::Plan { spec, reply } => {
                let _ = reply.send(state.plan(&spec));
            }
            SupervisorMessage::Reconfigure { spec, reply } => {
                let answer = state.reconfigure(&myself, *spec).await;
                state.drive().await;
                let _ = reply.send(answer);
            }
            SupervisorMessage::Inject { component, message } => {
                if let Some(a) = state
                    .entries
                    .iter()
                    .find(|e| e.spec.name == component)
                    .and_then(|e| e.actor.as_ref())
                {
                    let _ = a.send_message(message);
                }
            }
        }
        state.finish_waiters(&myself);
        if changes {
            state.changed();
        }
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
        let id = cell.get_id();
        // Events of replaced incarnations find no entry and are ignored.
        let Some(i) = state
            .entries
            .iter()
            .position(|e| e.actor.as_ref().is_some_and(|a| a.get_id() == id))
        else {
            return Ok(());
        };
        let name = state.entries[i].spec.name.clone();
        error!(component = %name, %reason, "component actor died; replacing it");
        // Whatever it owned dies before a replacement can spawn anything.
        process::kill_marked(&state.tree_id, Some(&name));
        let e = &state.entries[i];
        let inherited = Inherited {
            budget: e.snapshot.budget.clone(),
            last_exit: e.snapshot.last_exit.clone(),
            reason,
            wanted: e.wanted && !e.stopping,
            seq: e.snapshot.seq,
        };
        state.entries[i].actor = None;
        if let Err(err) = state.spawn_actor(&myself, i, Some(inherited)).await {
            error!(component = %name, error = %err, "could not replace the component actor");
        }
        state.drive().await;
        state.finish_waiters(&myself);
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
            process::kill_marked(&state.tree_id, None);
        }
        Ok(())
    }
}

impl SupervisorState {
    /// Tells the status waiters to look again.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn spawn_actor(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        i: usize,
        inherited: Option<Inherited>,
    ) -> Result<(), ActorProcessingErr> {
        let args = ComponentArgs {
            spec: self.entries[i].spec.clone(),
            tree_id: self.tree_id.clone(),
            supervisor: myself.clone(),
            inherited,
            log: Arc::clone(&self.entries[i].log),
            events: self.events.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, ComponentActor, args, myself.get_cell()).await?;
        self.entries[i].actor = Some(actor);
        Ok(())
    }

    /// Indices of the named components (all when `names` is empty).
    fn select(&self, names: &[String]) -> Result<Vec<usize>, TreeError> {
        if names.is_empty() {
            return Ok((0..self.entries.len()).collect());
        }
        names
            .iter()
            .map(|n| self.index(n))
            .collect::<Result<Vec<_>, _>>()
    }

    fn index(&self, name: &str) -> Result<usize, TreeError> {
        self.entries
            .iter()
            .position(|e| e.spec.name == name)
            .ok_or_else(|| TreeError::UnknownComponent {
                name: name.to_string(),
                known: self.entries.iter().map(|e| e.spec.name.clone()).collect(),
            })
    }

    /// The selected components plus everything they depend on, directly or not.
    fn with_dependencies(&self, set: Vec<usize>) -> Vec<usize> {
        let mut out = set;
        let mut k = 0;
        while k < out.len() {
            for d in &self.entries[out[k]].spec.depends_on {
                if let Ok(j) = self.index(d) {
                    if !out.contains(&j) {
                        out.push(j);
                    }
                }
            }
            k += 1;
        }
        out
    }

    fn start(&mut self, names: &[String]) -> Result<Vec<String>, TreeError> {
        if self.shutting_down {
            return Err(TreeError::ShuttingDown);
        }
        let set = self.with_dependencies(self.select(names)?);
        let mut already = Vec::new();
        for i in set {
            let e = &mut self.entries[i];
            e.wanted = true;
            e.stopping = false;
            e.stop_sent = false;
            match e.snapshot.state {
                State::Running | State::Starting => already.push(e.spec.name.clone()),
                _ => e.start_due = true,
            }
        }
        Ok(already)
    }

    async fn restart(&mut self, name: &str) -> Result<(), TreeError> {
        if self.shutting_down {
            return Err(TreeError::ShuttingDown);
        }
        let i = self.index(name)?;
        let e = &mut self.entries[i];
        info!(component = %name, "restart requested");
        e.wanted = true;
        e.stopping = false;
        e.stop_sent = false;
        match e.snapshot.state {
            State::Starting | State::Running | State::Stopping | State::Backoff => {
                self.command(i, Command::Restart).await;
            }
            State::Stopped | State::Exited | State::Fatal => e.start_due = true,
        }
        Ok(())
    }

    fn begin_stop(&mut self, set: &[usize]) {
        for &i in set {
            let e = &mut self.entries[i];
            e.wanted = false;
            e.start_due = false;
            if !e.stopping {
                e.stopping = true;
                e.stop_sent = false;
            }
        }
    }

    /// Sends a command to a component actor and takes its answer as the new snapshot.
    async fn command(&mut self, i: usize, cmd: Command) {
        let Some(actor) = self.entries[i].actor.clone() else {
            return;
        };
        match ractor::call_t!(actor, ComponentMessage::Command, COMMAND_TIMEOUT_MS, cmd) {
            Ok(snapshot) => {
                let e = &mut self.entries[i];
                if snapshot.seq >= e.snapshot.seq {
                    e.snapshot = snapshot;
                }
            }
            Err(err) => {
                warn!(component = %self.entries[i].spec.name, ?cmd, error = %err, "component actor did not answer")
            }
        }
    }

    fn is_down(state: State) -> bool {
        matches!(state, State::Stopped | State::Exited | State::Fatal)
    }

    /// Sends the starts and stops that are due, respecting dependency order. Called after
    /// every message: it is idempotent.
    async fn drive(&mut self) {
        self.finish_group_stop();
        loop {
            let mut progressed = false;
            for i in 0..self.entries.len() {
                let e = &self.entries[i];
                if e.stopping && !e.stop_sent {
                    let name = &e.spec.name;
                    let dependent_alive = self.entries.iter().any(|d| {
                        d.stopping
                            && d.spec.depends_on.contains(name)
                            && !Self::is_down(d.snapshot.state)
                    });
                    if !dependent_alive {
                        self.entries[i].stop_sent = true;
                        if !Self::is_down(self.entries[i].snapshot.state) {
                            self.command(i, Command::Stop).await;
                        }
                        progressed = true;
                    }
                } else if e.wanted && e.start_due && self.waiting_for(i).is_none() {
                    self.entries[i].start_due = false;
                    self.command(i, Command::Start).await;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Once every component of a group restart is down, they all start again, in order.
    fn finish_group_stop(&mut self) {
        let pending = || self.entries.iter().filter(|e| e.group_pending);
        if pending().next().is_none() || !pending().all(|e| Self::is_down(e.snapshot.state)) {
            return;
        }
        let names: Vec<&str> = pending().map(|e| e.spec.name.as_str()).collect();
        info!(components = ?names, "group stopped; starting it again in dependency order");
        for e in self.entries.iter_mut().filter(|e| e.group_pending) {
            e.group_pending = false;
            e.stopping = false;
            e.stop_sent = false;
            e.wanted = true;
            e.start_due = true;
        }
    }

    /// Reacts to a component's new snapshot: its failures drive the group strategies, a
    /// critical component going FATAL escalates.
    fn on_change(&mut self, i: usize, old: &ComponentSnapshot) {
        let e = &self.entries[i];
        let new = &e.snapshot;
        if new.state == State::Fatal && old.state != State::Fatal && e.spec.critical {
            let reason = format!(
                "critical component `{}` is FATAL: {}",
                e.spec.name,
                new.fatal_reason.as_deref().unwrap_or("")
            );
            self.escalate(reason);
            return;
        }
        let failed = new.budget.failures_total > old.budget.failures_total;
        if !failed
            || self.strategy == Strategy::OneForOne
            || new.state == State::Fatal
            || !e.wanted
            || e.group_pending
            || self.shutting_down
        {
            return;
        }
        let set: Vec<usize> = match self.strategy {
            Strategy::OneForOne => return,
            Strategy::OneForAll => (0..self.entries.len()).collect(),
            Strategy::RestForOne => self.with_dependents(i),
        };
        // Temporary components are never restarted because of another's failure.
        let set: Vec<usize> = set
            .into_iter()
            .filter(|&j| j == i || self.entries[j].spec.policy.restart != RestartType::Temporary)
            .filter(|&j| j == i || self.entries[j].wanted)
            .collect();
        let now = Instant::now();
        self.group_restarts.push_back(now);
        while self
            .group_restarts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.max_window)
        {
            self.group_restarts.pop_front();
        }
        let name = self.entries[i].spec.name.clone();
        let why = self.entries[i]
            .snapshot
            .last_exit
            .clone()
            .unwrap_or_default();
        if self.group_restarts.len() > self.max_restarts as usize {
            let reason = format!(
                "{} group restarts in {} (max_restarts {}); last: `{name}` {why}",
                self.group_restarts.len(),
                humantime::format_duration(self.max_window),
                self.max_restarts
            );
            self.escalate(reason);
            return;
        }
        self.group_restarts_total += 1;
        let names: Vec<&str> = set
            .iter()
            .map(|&j| self.entries[j].spec.name.as_str())
            .collect();
        warn!(strategy = self.strategy.as_str(), failed = %name, reason = %why, group = ?names, "group restart: stopping the group in reverse dependency order");
        for j in set {
            let e = &mut self.entries[j];
            e.group_pending = true;
            e.stopping = true;
            e.stop_sent = false;
            e.start_due = false;
        }
    }

    /// Component `i` and every component that depends on it, directly or not.
    fn with_dependents(&self, i: usize) -> Vec<usize> {
        let mut out = vec![i];
        let mut k = 0;
        while k < out.len() {
            let name = &self.entries[out[k]].spec.name;
            for (j, e) in self.entries.iter().enumerate() {
                if e.spec.depends_on.contains(name) && !out.contains(&j) {
                    out.push(j);
                }
            }
            k += 1;
        }
        out
    }

    /// Stops everything in order, then the root actor, publishing `reason`.
    fn escalate(&mut self, reason: String) {
        if self.escalation.is_some() {
            return;
        }
        error!(%reason, "escalation: stopping every component, then the supervisor");
        self.escalation = Some(reason.clone());
        self.shutting_down = true;
        for e in &mut self.entries {
            e.group_pending = false;
        }
        let all: Vec<usize> = (0..self.entries.len()).collect();
        self.begin_stop(&all);
        self.waiters.push(StopWaiter::Escalation(reason));
    }

    /// The first dependency of component `i` that is not running yet.
    fn waiting_for(&self, i: usize) -> Option<&str> {
        self.entries[i].spec.depends_on.iter().find_map(|d| {
            let j = self.index(d).ok()?;
            (self.entries[j].snapshot.state != State::Running).then_some(d.as_str())
        })
    }

    /// A dependency (direct or not) that cannot come up without intervention.
    fn blocked_by(&self, i: usize) -> Option<String> {
        for d in &self.entries[i].spec.depends_on {
            let Ok(j) = self.index(d) else { continue };
            let dep = &self.entries[j];
            match dep.snapshot.state {
                State::Fatal | State::Exited => {
                    return Some(format!("{d} is {}", dep.snapshot.state))
                }
                State::Stopped if !dep.wanted => return Some(format!("{d} is not started")),
                State::Stopped => {
                    if let Some(b) = self.blocked_by(j) {
                        return Some(b);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// Answers the waiters whose stop is complete; once the shutdown is complete, stops the
    /// root actor.
    fn finish_waiters(&mut self, myself: &ActorRef<SupervisorMessage>) {
        let mut done_shutdown = false;
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            match w {
                StopWaiter::Stop(set, reply) => {
                    if set
                        .iter()
                        .all(|&i| Self::is_down(self.entries[i].snapshot.state))
                    {
                        let _ = reply.send(Ok(()));
                    } else {
                        self.waiters.push(StopWaiter::Stop(set, reply));
                    }
                }
                StopWaiter::Shutdown(reply) => {
                    if self.entries.iter().all(|e| Self::is_down(e.snapshot.state)) {
                        info!("every component stopped");
                        let _ = reply.send(self.status());
                        done_shutdown = true;
                    } else {
                        self.waiters.push(StopWaiter::Shutdown(reply));
                    }
                }
                StopWaiter::Escalation(reason) => {
                    if self.entries.iter().all(|e| Self::is_down(e.snapshot.state)) {
                        error!(%reason, "every component stopped after the escalation; the supervisor exits");
                        self.escalation_tx.send_replace(Some(reason));
                        done_shutdown = true;
                    } else {
                        self.waiters.push(StopWaiter::Escalation(reason));
                    }
                }
            }
        }
        if done_shutdown {
            self.clean_exit = true;
            myself.stop(Some(
                self.escalation
                    .clone()
                    .unwrap_or_else(|| "shutdown".to_string()),
            ));
        }
    }

    /// What taking `spec` would change.
    fn plan(&self, spec: &TreeSpec) -> Result<Reload, TreeError> {
        if spec.tree_id != self.tree_id {
            return Err(TreeError::Reload(format!(
                "the tree id cannot change (from {:?} to {:?})",
                self.tree_id, spec.tree_id
            )));
        }
        spec.validate()?;
        let mut plan = Reload::default();
        for e in &self.entries {
            match spec.components.iter().find(|c| c.name == e.spec.name) {
                None => plan.removed.push(e.spec.name.clone()),
                Some(new) if new.differs_from(&e.spec) => {
                    plan.changed.push(e.spec.name.clone());
                    if e.wanted {
                        plan.restarted.push(e.spec.name.clone());
                    }
                }
                Some(_) => {}
            }
        }
        for c in &spec.components {
            if !self.entries.iter().any(|e| e.spec.name == c.name) {
                plan.added.push(c.name.clone());
            }
        }
        plan.tree_changed = spec.strategy != self.strategy
            || spec.max_restarts != self.max_restarts
            || spec.max_window != self.max_window;
        Ok(plan)
    }

    /// Takes `spec` as the tree (see [`SupervisorMessage::Reconfigure`]).
    async fn reconfigure(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        spec: TreeSpec,
    ) -> Result<(), TreeError> {
        if self.shutting_down {
            return Err(TreeError::ShuttingDown);
        }
        let plan = self.plan(&spec)?;
        if !self.waiters.is_empty() {
            return Err(TreeError::Reload(
                "a stop is in progress; try again once it is done".into(),
            ));
        }
        let live: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| plan.removed.contains(&e.spec.name) || plan.changed.contains(&e.spec.name))
            .filter(|e| !Self::is_down(e.snapshot.state) || e.wanted)
            .map(|e| e.spec.name.as_str())
            .collect();
        if !live.is_empty() {
            return Err(TreeError::Reload(format!(
                "stop {} before the change",
                live.join(", ")
            )));
        }
        let order: Vec<ComponentSpec> = spec.start_order()?.into_iter().cloned().collect();
        let mut old: Vec<Entry> = std::mem::take(&mut self.entries);
        let now = Instant::now();
        let mut fresh = Vec::new();
        for new in order {
            let kept = old
                .iter()
                .position(|e| e.spec.name == new.name && !plan.changed.contains(&new.name));
            match kept {
                Some(k) => {
                    let mut e = old.swap_remove(k);
                    // Its actor keeps running with its spec; a later start sees the new block.
                    e.spec.shared_env = Arc::clone(&new.shared_env);
                    self.entries.push(e);
                }
                None => {
                    fresh.push(self.entries.len());
                    self.entries.push(Entry::new(new, now));
                }
            }
        }
        // What is left of the old tree: removed components and the old actors of changed ones,
        // all down. Their supervision events find no entry and are ignored.
        for e in old {
            info!(component = %e.spec.name, "removed by a reload");
            if let Some(actor) = e.actor {
                actor.stop(Some("reloaded".into()));
            }
        }
        self.strategy = spec.strategy;
        self.max_restarts = spec.max_restarts;
        self.max_window = spec.max_window;
        for i in fresh {
            info!(component = %self.entries[i].spec.name, "configured by a reload");
            self.spawn_actor(myself, i, None).await.map_err(|e| {
                TreeError::Reload(format!(
                    "starting the actor of {}: {e}",
                    self.entries[i].spec.name
                ))
            })?;
        }
        Ok(())
    }

    fn status(&self) -> TreeStatus {
        let now = Instant::now();
        let wall_now = SystemTime::now();
        let components = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let s = &e.snapshot;
                let waiting = e.wanted && e.start_due;
                ComponentStatus {
                    name: e.spec.name.clone(),
                    state: s.state,
                    since: wall(s.since, now, wall_now),
                    generation: s.generation,
                    pid: s.pid,
                    uptime: s.spawned_at.map(|t| now.saturating_duration_since(t)),
                    memory: None,
                    restarts: s.budget.restarts,
                    last_exit: s.last_exit.clone(),
                    fatal_reason: s.fatal_reason.clone(),
                    next_retry: s
                        .next_retry
                        .map(|t| wall_now + t.saturating_duration_since(now)),
                    wanted: e.wanted,
                    waiting_for: if waiting {
                        self.waiting_for(i).map(String::from)
                    } else {
                        None
                    },
                    blocked_by: if waiting { self.blocked_by(i) } else { None },
                    depends_on: e.spec.depends_on.clone(),
                    restart: e.spec.policy.restart,
                    critical: e.spec.critical,
                    memory_limit: e.spec.memory_limit,
                    log_dropped_bytes: e.log.dropped_bytes(),
                }
            })
            .collect();
        TreeStatus {
            components,
            strategy: self.strategy,
            group_restarts: self.group_restarts_total,
            escalation: self.escalation.clone(),
        }
    }
}
