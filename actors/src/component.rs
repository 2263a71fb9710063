//! `ComponentActor`: owns one component's OS process and drives its [`Lifecycle`].
//!
//! The actor never waits: spawning, waiting for the exit, killing leftovers and probing the
//! port happen in spawned tasks that send a [`ComponentMessage::Lifecycle`] event back; delays
//! are `send_after` timers. So the actor always answers, even in a restart loop.
//!
//! It reports every change of its [`ComponentSnapshot`] to its supervisor (a
//! [`ComponentReport`] sent to whatever actor spawned it: in this crate the `ServerSupervisor`,
//! which answers `status` from those copies).
//!
//! If the actor dies (a panic, or its parent's death), the [`ProcessGuard`] in its state is
//! dropped and kills the process group and every marked descendant: a component process never
//! outlives the actor that owns it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::events::{EventKind, EventSender};
use crate::lifecycle::{
    previous_exit, Action, Budget, Event, ExitReason, Lifecycle, Outgoing, State, StopCause, Timer,
    XorShift, PREVIOUS_EXIT_ENV,
};
use crate::logs::ComponentLog;
use crate::probe;
use crate::process::{self, PassedSocket, SpawnRequest};
use crate::spec::{ComponentSpec, Ready, SocketSpec};

/// How long the leftovers of an exited process may take to die before we report the exit anyway.
const LEFTOVER_DEADLINE: Duration = Duration::from_secs(5);

/// The component actor. Stateless: everything lives in [`ComponentState`].
#[derive(Debug)]
pub struct ComponentActor;

/// What a component actor starts from.
#[derive(Debug)]
pub struct ComponentArgs {
    /// The component.
    pub spec: ComponentSpec,
    /// The tree's marker.
    pub tree_id: String,
    /// Where snapshots go.
    pub supervisor: DerivedActorRef<ComponentReport>,
    /// Set when this actor replaces one that failed.
    pub inherited: Option<Inherited>,
    /// The component's log, owned by the supervisor so that it outlives any one actor.
    pub log: Arc<ComponentLog>,
    /// Where its lifecycle events go.
    pub events: EventSender,
    /// The component's held listening socket, owned by the supervisor so that it outlives any
    /// one actor: a replacement actor, or the new actor of a component a reload changed,
    /// passes on the same socket, and connections keep waiting in its backlog meanwhile.
    pub socket: SocketSlot,
    /// The notification socket's path, given to every process in `NOTIFY_SOCKET`.
    pub notify_socket: Option<Arc<std::path::Path>>,
}

/// Where a component's held listening socket lives (see [`ComponentSpec::socket`]): empty until
/// the first spawn binds it, emptied when the component goes FATAL or EXITED.
pub type SocketSlot = Arc<std::sync::Mutex<Option<HeldSocket>>>;

/// A listening socket the supervisor holds for a component.
#[derive(Debug)]
pub struct HeldSocket {
    /// What it was bound with.
    spec: SocketSpec,
    /// The socket.
    fd: Arc<OwnedFd>,
    /// Handed to the tree rather than bound by it (systemd's socket activation): kept when the
    /// component goes FATAL, since whoever handed it keeps its own copy open, and the tree
    /// could not bind the port again.
    handed: bool,
}

impl HeldSocket {
    /// A socket handed to the tree for the component with the socket settings `spec`.
    pub fn handed(spec: SocketSpec, fd: OwnedFd) -> HeldSocket {
        HeldSocket {
            spec,
            fd: Arc::new(fd),
            handed: true,
        }
    }
}

/// What a replacement actor takes over from the one that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Inherited {
    /// The failure history.
    pub budget: Budget,
    /// How the last attempt ended.
    pub last_exit: Option<String>,
    /// Why the previous actor failed.
    pub reason: String,
    /// Whether the component should be running.
    pub wanted: bool,
    /// The last snapshot sequence number, so the supervisor keeps accepting our reports.
    pub seq: u64,
}

/// An operator command for one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run it (clears FATAL).
    Start,
    /// Stop it: stop signal to the group, SIGKILL after `stop_timeout`.
    Stop,
    /// Stop it if it runs, then start it (clears FATAL).
    Restart,
}

/// Messages of a component actor.
#[derive(Debug)]
pub enum ComponentMessage {
    /// An operator command; answers with the snapshot right after the transition.
    Command(Command, RpcReplyPort<ComponentSnapshot>),
    /// A lifecycle event from a timer, the exit watcher or the probe.
    Lifecycle(Event),
    /// The spawn task started the process of `generation` (becomes `Event::Spawned`).
    Spawned {
        /// The attempt's generation.
        generation: u64,
        /// Its pid (and process group).
        pid: u32,
        /// Its attempt id, carried by all its processes.
        attempt: String,
    },
    /// Process `pid` of this component said `READY=1` on the notification socket.
    Ready {
        /// The sender.
        pid: u32,
    },
    /// Another component's process reported that a poison request it quarantined crashed this
    /// component (up to `crashes` times): those failures leave the restart budget's window.
    Forgive {
        /// How many of the latest failures to forgive, at most.
        crashes: u32,
        /// Who reported it.
        by: String,
    },
    /// A reload changed the component's spec, and the change can be handed over (same held
    /// socket, same dependencies): the actor takes `spec` and restarts the component through a
    /// handover. Answers with the snapshot right after.
    Reconfigure(Box<ComponentSpec>, RpcReplyPort<ComponentSnapshot>),
    /// Fault injection for this crate's tests: the handler panics.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    InjectPanic,
}

/// A component actor's report of a new snapshot to its supervisor.
#[derive(Clone, Debug)]
pub struct ComponentReport {
    /// The reporting actor (the supervisor ignores reports of actors it replaced).
    pub actor: ActorId,
    /// Its snapshot.
    pub snapshot: ComponentSnapshot,
}

/// What the supervisor knows of a component: a copy of its lifecycle's observable state.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentSnapshot {
    /// Increases with every report; older reports are ignored.
    pub seq: u64,
    /// The state.
    pub state: State,
    /// When the state was entered.
    pub since: Instant,
    /// The current attempt.
    pub generation: u64,
    /// The main process.
    pub pid: Option<u32>,
    /// When the main process was spawned.
    pub spawned_at: Option<Instant>,
    /// How the last failed attempt ended.
    pub last_exit: Option<String>,
    /// Why it is FATAL.
    pub fatal_reason: Option<String>,
    /// When BACKOFF ends.
    pub next_retry: Option<Instant>,
    /// The failure history.
    pub budget: Budget,
    /// The processes a handover replaces, oldest first: still serving while the new one
    /// starts, then draining.
    pub outgoing: Vec<Outgoing>,
}

impl ComponentSnapshot {
    fn of(lc: &Lifecycle, seq: u64) -> Self {
        ComponentSnapshot {
            seq,
            state: lc.state(),
            since: lc.since(),
            generation: lc.generation(),
            pid: lc.pid(),
            spawned_at: lc.spawned_at(),
            last_exit: lc.last_exit().map(String::from),
            fatal_reason: lc.fatal_reason().map(String::from),
            next_retry: lc.next_retry(),
            budget: lc.budget().clone(),
            outgoing: lc.outgoing().to_vec(),
        }
    }

    /// The snapshot of a component that has not started yet.
    pub fn initial(now: Instant) -> Self {
        ComponentSnapshot {
            seq: 0,
            state: State::Stopped,
            since: now,
            generation: 0,
            pid: None,
            spawned_at: None,
            last_exit: None,
            fatal_reason: None,
            next_retry: None,
            budget: Budget::default(),
            outgoing: Vec::new(),
        }
    }
}

/// Kills the process groups and marked descendants of the attempts that may be alive when
/// dropped: the last line of defence when the actor dies without `post_stop`. Only those
/// attempts' processes: the drop may come after a replacement actor started its own. During a
/// handover two attempts are alive (or more, if handovers follow each other faster than the
/// old processes drain).
#[derive(Debug)]
pub struct ProcessGuard {
    tree_id: String,
    component: String,
    /// The attempts alive, by generation: their process group and attempt id.
    live: HashMap<u64, (u32, String)>,
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        for (_, (pgid, attempt)) in self.live.drain() {
            let _ = process::signal_group(pgid, libc::SIGKILL);
            process::kill_attempt(&self.tree_id, &self.component, &attempt);
        }
    }
}

/// The sockets a spawn passes: the component's held socket, bound by its first spawn (again
/// when its address changed); or none, once the port the program will bind itself is checked
/// to be free (another program's port would pass the readiness probe with that program's
/// answers).
fn sockets_for_spawn(
    component: &str,
    socket: Option<&SocketSpec>,
    port: Option<std::net::SocketAddr>,
    held: &std::sync::Mutex<Option<HeldSocket>>,
) -> std::io::Result<Vec<PassedSocket>> {
    let mut held = held
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(socket) = socket else {
        // A reload turned `hold_socket` off: the program binds the port itself.
        if held.take().is_some() {
            info!(
                component,
                "released its listening socket: the program binds its own"
            );
        }
        if let Some(addr) = port {
            process::check_port_free(addr)?;
        }
        return Ok(Vec::new());
    };
    if let Some(old) = held.as_ref() {
        if old.spec.addr != socket.addr {
            // Closed before the new one binds: the new address may overlap the old one.
            info!(component, old = %old.spec.addr, new = %socket.addr, "its address changed: releasing the old socket");
            *held = None;
        } else if old.spec.backlog != socket.backlog {
            process::set_backlog(&old.fd, socket.backlog)?;
            info!(
                component,
                backlog = socket.backlog,
                "the backlog of its held socket changed"
            );
            if let Some(old) = held.as_mut() {
                old.spec.backlog = socket.backlog;
            }
        }
    }
    let fd = match &*held {
        Some(old) => Arc::clone(&old.fd),
        None => {
            let fd = Arc::new(process::bind_listener(socket.addr, socket.backlog)?);
            info!(component, addr = %socket.addr, backlog = socket.backlog, "holding its listening socket");
            *held = Some(HeldSocket {
                spec: socket.clone(),
                fd: Arc::clone(&fd),
                handed: false,
            });
            fd
        }
    };
    Ok(vec![PassedSocket {
        name: component.to_owned(),
        fd,
    }])
}

/// A task that ends with its owner: dropped with the actor's state, even when the actor
/// panicked, so no watcher outlives the actor that started it.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The state of a component actor.
#[derive(Debug)]
pub struct ComponentState {
    spec: ComponentSpec,
    lc: Lifecycle,
    /// By timer and generation: a generation only for [`Timer::Drain`], of which each outgoing
    /// process has its own; the others are one per component.
    timers: HashMap<(Timer, u64), JoinHandle<()>>,
    /// The readiness probe of the starting generation.
    probe: Option<AbortOnDrop>,
    /// The liveness watcher of the running generation.
    health: Option<(u64, AbortOnDrop)>,
    /// The memory watcher of the live generation.
    memory: Option<(u64, AbortOnDrop)>,
    guard: ProcessGuard,
    jitter: XorShift,
    /// Whether the next spawn must first sweep leftovers (the first spawn of each actor).
    sweep_first: bool,
    reported: ComponentSnapshot,
    supervisor: DerivedActorRef<ComponentReport>,
    /// The component's log, made once per actor and shared by all its attempts: the output
    /// pumps write into it, and the actor its start, stop and restart markers (`log.marker`).
    log: Arc<ComponentLog>,
    events: EventSender,
    /// The listening socket held for the component (see [`ComponentSpec::socket`]), shared
    /// with the supervisor, which keeps it across actors.
    socket: SocketSlot,
    /// Why the supervisor is stopping the live process, when it is.
    stop_cause: Option<StopCause>,
    /// How the last process ended, for the next one ([`PREVIOUS_EXIT_ENV`]).
    previous_exit: Option<String>,
    /// The notification socket's path, for `NOTIFY_SOCKET`.
    notify_socket: Option<Arc<std::path::Path>>,
    /// A process that said `READY=1` before its spawn was reported here (it can be that quick).
    early_ready: Option<u32>,
}

impl Actor for ComponentActor {
    type Msg = ComponentMessage;
    type State = ComponentState;
    type Arguments = ComponentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ComponentArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = Instant::now();
        let has_probe =
            args.spec.probe.is_some() || matches!(args.spec.ready, Ready::File(_) | Ready::Notify);
        let mut lc = Lifecycle::new(args.spec.policy.clone(), has_probe, now);
        lc.set_handover(args.spec.hands_over());
        let mut seq = 0;
        let replacing = args.inherited.is_some();
        if let Some(inh) = args.inherited {
            lc.inherit(inh.budget, inh.last_exit);
            seq = inh.seq;
            // Handled as the first message, with the actor fully started.
            myself.send_message(ComponentMessage::Lifecycle(Event::ActorReplaced {
                reason: inh.reason,
                wanted: inh.wanted,
            }))?;
        }
        Ok(ComponentState {
            log: args.log,
            guard: ProcessGuard {
                tree_id: args.tree_id,
                component: args.spec.name.clone(),
                live: HashMap::new(),
            },
            reported: ComponentSnapshot::of(&lc, seq),
            spec: args.spec,
            lc,
            timers: HashMap::new(),
            probe: None,
            health: None,
            memory: None,
            jitter: XorShift::from_entropy(),
            // The tree swept every marked process before its first actor started; a
            // replacement actor sweeps its component's, which its predecessor may have left.
            sweep_first: replacing,
            supervisor: args.supervisor,
            events: args.events,
            socket: args.socket,
            stop_cause: None,
            previous_exit: None,
            notify_socket: args.notify_socket,
            early_ready: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ComponentMessage::Command(cmd, reply) => {
                let event = match cmd {
                    Command::Start => Event::Start,
                    Command::Stop => Event::Stop,
                    Command::Restart => Event::Restart,
                };
                state.apply(&myself, event);
                let _ = reply.send(state.reported.clone());
            }
            ComponentMessage::Lifecycle(event) => state.apply(&myself, event),
            ComponentMessage::Spawned {
                generation,
                pid,
                attempt,
            } => {
                if generation == state.lc.generation() && state.lc.pid().is_none() {
                    state.guard.live.insert(generation, (pid, attempt));
                }
                state.apply(&myself, Event::Spawned { generation, pid });
                if state.early_ready.take() == Some(pid) {
                    state.ready(&myself, pid);
                }
            }
            ComponentMessage::Ready { pid } => {
                if state.lc.pid() == Some(pid) {
                    state.ready(&myself, pid);
                } else if state.lc.pid().is_none() && state.lc.state() == State::Starting {
                    state.early_ready = Some(pid);
                }
            }
            ComponentMessage::Reconfigure(spec, reply) => {
                state.reconfigure(&myself, *spec);
                let _ = reply.send(state.reported.clone());
            }
            ComponentMessage::Forgive { crashes, by } => {
                let forgiven = state.lc.forgive(crashes);
                if forgiven > 0 {
                    let note = format!(
                        "{forgiven} crash(es) caused by a poison request that {by} quarantined: \
                         not counted against the restart budget"
                    );
                    state.log.marker(&note);
                    warn!(component = %state.spec.name, forgiven, reported_by = %by, "{note}");
                }
            }
            #[cfg(feature = "fault-injection")]
            ComponentMessage::InjectPanic => panic!("injected panic in component actor"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, t) in state.timers.drain() {
            t.abort();
        }
        state.probe = None;
        state.health = None;
        state.memory = None;
        Ok(())
    }
}

impl ComponentState {
    /// Steps the lifecycle, carries out its actions, and reports a changed snapshot.
    fn apply(&mut self, myself: &ActorRef<ComponentMessage>, event: Event) {
        let mut exit = None;
        if let Event::Exited { generation, reason } = &event {
            let pid = self.guard.live.remove(generation).map(|(pid, _)| pid);
            if let Some(drain) = self.timers.remove(&timer_key(Timer::Drain, *generation)) {
                drain.abort();
            }
            if *generation == self.lc.generation() {
                self.previous_exit = Some(previous_exit(*reason, self.stop_cause.take()));
            }
            if pid.is_some() {
                exit = Some((pid, *reason));
            }
        }
        if let Event::Unhealthy { generation, reason } = &event {
            let acts = matches!(self.lc.state(), State::Starting | State::Running);
            if *generation == self.lc.generation() && acts {
                self.stop_cause = Some(StopCause::Fault);
                self.log.marker(&format!("stopping to restart: {reason}"));
                warn!(component = %self.spec.name, %reason, "restarting an unhealthy component");
            }
        }
        let before = self.lc.state();
        let asked = matches!(event, Event::Stop | Event::Restart);
        let actions = self.lc.step(event, Instant::now(), &mut self.jitter);
        if asked && before != State::Stopping && self.lc.state() == State::Stopping {
            // The live process is being stopped (a handover stops none).
            self.stop_cause.get_or_insert(StopCause::Asked);
        }
        for action in actions {
            self.execute(myself, action);
        }
        self.release_socket_when_down();
        self.watch(myself);
        self.report(myself, before, exit);
    }

    /// Takes the spec a reload changed, and restarts the component with it: through a
    /// handover when the component runs and can hand over, as any restart otherwise.
    fn reconfigure(&mut self, myself: &ActorRef<ComponentMessage>, spec: ComponentSpec) {
        info!(component = %spec.name, "configured by a reload: restarting it with the new settings");
        let has_probe =
            spec.probe.is_some() || matches!(spec.ready, Ready::File(_) | Ready::Notify);
        self.lc
            .reconfigure(spec.policy.clone(), has_probe, spec.hands_over());
        self.spec = spec;
        // The watchers of the running process follow the old settings until it is replaced.
        self.log.marker("configuration changed by a reload");
        self.apply(myself, Event::Restart);
    }

    /// The live process `pid` said `READY=1`: its readiness check passed, if that is its check.
    fn ready(&mut self, myself: &ActorRef<ComponentMessage>, pid: u32) {
        if self.spec.ready != Ready::Notify || self.lc.pid() != Some(pid) {
            return;
        }
        let generation = self.lc.generation();
        self.apply(myself, Event::ProbePassed { generation });
    }

    /// Closes the held socket of a component that nothing will restart (FATAL, EXITED), so that
    /// its clients are refused at once instead of waiting in a backlog nobody accepts from; its
    /// next start binds it again. A STOPPED component keeps it: it is waiting for a dependency
    /// or being restarted with a group.
    fn release_socket_when_down(&mut self) {
        if !matches!(self.lc.state(), State::Fatal | State::Exited) {
            return;
        }
        let mut held = self
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.as_ref().is_some_and(|socket| !socket.handed) && held.take().is_some() {
            info!(component = %self.spec.name, state = self.lc.state().as_str(), "released its listening socket: connections are refused until it starts again");
        }
    }

    fn execute(&mut self, myself: &ActorRef<ComponentMessage>, action: Action) {
        match action {
            Action::Spawn { generation } => self.spawn(myself, generation),
            // Its process says READY=1 itself (`ComponentMessage::Ready`).
            Action::StartProbe { .. } if self.spec.ready == Ready::Notify => {}
            Action::StartProbe { generation } => {
                let (ready, addr) = (self.spec.ready.clone(), self.spec.probe);
                let deadline = self.spec.policy.start_timeout;
                let myself = myself.clone();
                let task = tokio::spawn(async move {
                    if probe::until_ready(&ready, addr, deadline).await {
                        let _ =
                            myself.send_message(ComponentMessage::Lifecycle(Event::ProbePassed {
                                generation,
                            }));
                    }
                });
                self.probe = Some(AbortOnDrop(task));
            }
            Action::CancelProbe => self.probe = None,
            Action::Signal { pgid, signal } => {
                info!(component = %self.spec.name, pgid, signal = %crate::lifecycle::signal_name(signal), "signalling process group");
                if let Err(e) = process::signal_group(pgid, signal) {
                    warn!(component = %self.spec.name, pgid, error = %e, "could not signal process group");
                }
                if signal != libc::SIGKILL {
                    // As systemd does: a stopped process (SIGSTOP, a debugger's SIGTSTP) would
                    // keep its stop signal pending until SIGKILL; SIGCONT lets it stop cleanly.
                    let _ = process::signal_group(pgid, libc::SIGCONT);
                }
            }
            Action::Arm {
                timer,
                generation,
                after,
            } => {
                let key = timer_key(timer, generation);
                if after.is_zero() {
                    // Now, not at the timer wheel's next tick (up to a millisecond later):
                    // `start_secs = 0` makes a component RUNNING as soon as it is spawned.
                    if let Some(old) = self.timers.remove(&key) {
                        old.abort();
                    }
                    let _ = myself.send_message(ComponentMessage::Lifecycle(Event::Timer {
                        timer,
                        generation,
                    }));
                    return;
                }
                let handle = myself.send_after(after, move || {
                    ComponentMessage::Lifecycle(Event::Timer { timer, generation })
                });
                // The timer's result only says whether the actor still exists.
                let handle = tokio::spawn(async move {
                    let _ = handle.await;
                });
                if let Some(old) = self.timers.insert(key, handle) {
                    old.abort();
                }
            }
            Action::Disarm(timer) => {
                if let Some(t) = self.timers.remove(&timer_key(timer, 0)) {
                    t.abort();
                }
            }
        }
    }

    /// Keeps the liveness watcher running exactly while the component is RUNNING, and the
    /// memory watcher exactly while a process is alive (each for the current generation).
    fn watch(&mut self, myself: &ActorRef<ComponentMessage>) {
        let generation = self.lc.generation();
        let running = self.lc.state() == State::Running;
        if self
            .health
            .as_ref()
            .is_some_and(|(g, _)| !running || *g != generation)
        {
            self.health = None;
        }
        if let (true, None, Some(health)) = (running, &self.health, &self.spec.health) {
            let (health, addr, me) = (health.clone(), self.spec.probe, myself.clone());
            let (events, name) = (self.events.clone(), self.spec.name.clone());
            let task = tokio::spawn(async move {
                let reason = probe::until_unhealthy(&health, addr).await;
                events.send(
                    &name,
                    EventKind::Unhealthy {
                        reason: reason.clone(),
                    },
                );
                let _ = me.send_message(ComponentMessage::Lifecycle(Event::Unhealthy {
                    generation,
                    reason,
                }));
            });
            self.health = Some((generation, AbortOnDrop(task)));
        }
        let pid = self.lc.pid().filter(|_| self.lc.state().is_live());
        if self
            .memory
            .as_ref()
            .is_some_and(|(g, _)| pid.is_none() || *g != generation)
        {
            self.memory = None;
        }
        if let (Some(pid), None, Some(limit)) = (pid, &self.memory, self.spec.memory_limit) {
            let watcher = probe::until_over_memory(
                self.guard.tree_id.clone(),
                self.spec.name.clone(),
                pid,
                limit,
                self.spec.memory_check_interval,
            );
            let me = myself.clone();
            let (events, name) = (self.events.clone(), self.spec.name.clone());
            let task = tokio::spawn(async move {
                let over = watcher.await;
                events.send(
                    &name,
                    EventKind::MemoryLimit {
                        used: over.used,
                        limit: over.limit,
                    },
                );
                let _ = me.send_message(ComponentMessage::Lifecycle(Event::Unhealthy {
                    generation,
                    reason: over.to_string(),
                }));
            });
            self.memory = Some((generation, AbortOnDrop(task)));
        }
    }

    /// Spawns the process in a task: the actor learns the pid from `Spawned`, and the exit
    /// (after the leftovers are killed) from `Exited`.
    fn spawn(&mut self, myself: &ActorRef<ComponentMessage>, generation: u64) {
        let mut env = self.spec.env.clone();
        let previous = match self.lc.serving_outgoing() {
            // A handover: its predecessor is asked to stop, once this one is ready.
            Some(old) => Some(format!("stopped: handed over from pid {}", old.pid)),
            None => self.previous_exit.clone(),
        };
        if let Some(previous) = previous {
            env.push((PREVIOUS_EXIT_ENV.to_owned(), previous));
        }
        if let Some(path) = &self.notify_socket {
            env.push((
                process::NOTIFY_SOCKET_ENV.to_owned(),
                path.display().to_string(),
            ));
        }
        let req = SpawnRequest {
            command: self.spec.command.clone(),
            env,
            shared_env: Arc::clone(&self.spec.shared_env),
            cwd: self.spec.cwd.clone(),
            tree_id: self.guard.tree_id.clone(),
            component: self.spec.name.clone(),
            log: Arc::clone(&self.log),
            sockets: Vec::new(),
        };
        let sweep_first = std::mem::replace(&mut self.sweep_first, false);
        let myself = myself.clone();
        let (socket, port) = (self.spec.socket.clone(), self.spec.probe);
        let held = Arc::clone(&self.socket);
        tokio::spawn(async move {
            let mut req = req;
            if sweep_first {
                // An actor that replaced a failed one, or a fresh daemon: never two processes.
                sweep(&req.tree_id, &req.component).await;
            }
            // After the sweep: a leftover of ours may have held the port.
            match sockets_for_spawn(&req.component, socket.as_ref(), port, &held) {
                Ok(sockets) => req.sockets = sockets,
                Err(e) => {
                    let _ = myself.send_message(ComponentMessage::Lifecycle(Event::SpawnFailed {
                        generation,
                        error: e.to_string(),
                    }));
                    return;
                }
            }
            let (tree_id, component) = (req.tree_id.clone(), req.component.clone());
            match process::spawn(req).await {
                Ok(spawned) => {
                    let pid = spawned.pid;
                    let attempt = spawned.attempt;
                    let sent = myself.send_message(ComponentMessage::Spawned {
                        generation,
                        pid,
                        attempt: attempt.clone(),
                    });
                    if sent.is_err() {
                        // The actor is gone: nobody owns this process.
                        let _ = process::signal_group(pid, libc::SIGKILL);
                    }
                    let mut child = spawned.child;
                    let drained = spawned.drained;
                    let waited = child.wait().await;
                    let reason = match waited {
                        Ok(status) => ExitReason::from_status(status),
                        Err(e) => {
                            warn!(%component, pid, error = %e, "waiting for the process failed");
                            let _ = process::signal_group(pid, libc::SIGKILL);
                            ExitReason::Code(-1)
                        }
                    };
                    if let Err(e) = process::kill_leftovers(
                        pid,
                        &tree_id,
                        &component,
                        &attempt,
                        LEFTOVER_DEADLINE,
                    )
                    .await
                    {
                        warn!(%component, pid, error = %e, "leftover processes");
                    }
                    // Its last lines reach the log before the supervisor's exit marker does.
                    drained.wait(Duration::from_secs(1)).await;
                    let _ = myself.send_message(ComponentMessage::Lifecycle(Event::Exited {
                        generation,
                        reason,
                    }));
                }
                Err(e) => {
                    let _ = myself.send_message(ComponentMessage::Lifecycle(Event::SpawnFailed {
                        generation,
                        error: e.to_string(),
                    }));
                }
            }
        });
    }

    /// Logs a transition and sends the new snapshot to the supervisor when it changed.
    fn report(
        &mut self,
        myself: &ActorRef<ComponentMessage>,
        before: State,
        exit: Option<(Option<u32>, ExitReason)>,
    ) {
        let mut snap = ComponentSnapshot::of(&self.lc, self.reported.seq);
        if snap == self.reported {
            return;
        }
        snap.seq += 1;
        let after = snap.state;
        let name = &self.spec.name;
        let pid_changed = snap.pid.is_some() && snap.pid != self.reported.pid;
        if let Some((pid, reason)) = exit {
            self.events.send(name, EventKind::Exited { pid, reason });
            info!(component = %name, pid, "process {reason}");
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            self.log.marker(&format!("process{pid} {reason}"));
        }
        self.report_handover(&snap);
        if let (true, Some(pid)) = (pid_changed, snap.pid) {
            self.events.send(
                name,
                EventKind::Spawned {
                    pid,
                    attempt: snap.generation,
                },
            );
        }
        if pid_changed {
            info!(component = %name, pid = snap.pid, generation = snap.generation, "process spawned");
            if let Some(pid) = snap.pid {
                self.log
                    .marker(&format!("started pid {pid} (attempt {})", snap.generation));
            }
        }
        // A restart the lifecycle counts is a failure's, even from STOPPING (an unhealthy or
        // over-limit process it had to stop first); any other STOPPING -> STARTING was asked for.
        let failed = snap.budget.restarts > self.reported.budget.restarts;
        if before != after {
            self.log.marker(&marker_text(before, &snap, failed));
            if let Some(kind) = state_event(&snap) {
                self.events.send(name, kind);
            }
        }
        if before != after {
            match after {
                State::Fatal => warn!(
                    component = %name,
                    reason = snap.fatal_reason.as_deref().unwrap_or(""),
                    "{before} -> FATAL"
                ),
                State::Backoff => {
                    let wait = snap
                        .next_retry
                        .map(|t| t.saturating_duration_since(Instant::now()))
                        .unwrap_or_default();
                    info!(
                        component = %name,
                        retry_in = %crate::format::duration(wait),
                        last_exit = snap.last_exit.as_deref().unwrap_or(""),
                        "{before} -> BACKOFF"
                    );
                }
                State::Starting if failed => info!(
                    component = %name,
                    last_exit = snap.last_exit.as_deref().unwrap_or(""),
                    "{before} -> STARTING (restart after a failure)"
                ),
                _ => info!(component = %name, pid = snap.pid, "{before} -> {after}"),
            }
        }
        self.reported = snap.clone();
        let _ = self.supervisor.send_message(ComponentReport {
            actor: myself.get_id(),
            snapshot: snap,
        });
    }

    /// Logs the steps of a handover: it began, the old process was told to drain, it failed.
    fn report_handover(&self, snap: &ComponentSnapshot) {
        let name = &self.spec.name;
        let was = |pid: u32| self.reported.outgoing.iter().find(|o| o.pid == pid);
        for o in &snap.outgoing {
            match (was(o.pid), o.draining_since) {
                (None, None) => {
                    info!(component = %name, old = o.pid, "handover: a new process starts beside the old one, which keeps serving");
                    self.log.marker(&format!(
                        "handover: starting a new process; pid {} keeps serving until it is ready",
                        o.pid
                    ));
                    self.events
                        .send(name, EventKind::HandoverStarted { old: o.pid });
                }
                (Some(before), Some(_)) if before.draining_since.is_none() => {
                    let grace = if snap.state == State::Stopping {
                        self.spec.policy.stop_timeout
                    } else {
                        self.spec.policy.handover_grace
                    };
                    let grace = crate::format::duration(grace);
                    info!(component = %name, old = o.pid, %grace, "handover: the old process drains");
                    self.log.marker(&format!(
                        "pid {} told to finish its requests and exit (SIGKILL in {grace})",
                        o.pid
                    ));
                    self.events.send(name, EventKind::Draining { pid: o.pid });
                }
                _ => {}
            }
        }
        let revived = self
            .reported
            .outgoing
            .iter()
            .any(|o| snap.pid == Some(o.pid) && o.draining_since.is_none());
        if revived {
            let why = snap.last_exit.as_deref().unwrap_or("handover failed");
            warn!(component = %name, "{why}");
            self.log.marker(why);
        }
    }
}

/// Where a timer's task is kept: one per kind, except [`Timer::Drain`], one per outgoing
/// process (by its generation).
fn timer_key(timer: Timer, generation: u64) -> (Timer, u64) {
    match timer {
        Timer::Drain => (timer, generation),
        _ => (timer, 0),
    }
}

/// The event of entering `snap.state`, if it has one (STARTING has `Spawned`, published when
/// the pid is known).
fn state_event(snap: &ComponentSnapshot) -> Option<EventKind> {
    Some(match snap.state {
        State::Running => EventKind::Running { pid: snap.pid? },
        State::Backoff => EventKind::Backoff {
            delay: snap
                .next_retry
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default(),
        },
        State::Fatal => EventKind::Fatal {
            reason: snap.fatal_reason.clone().unwrap_or_default(),
        },
        State::Stopping => EventKind::Stopping,
        State::Stopped => EventKind::Stopped,
        State::Exited => EventKind::Completed,
        State::Starting => return None,
    })
}

/// The supervisor's line in a component's log for a change of state, with the reason;
/// `failed`: the change is an automatic restart after a failure.
fn marker_text(before: State, snap: &ComponentSnapshot, failed: bool) -> String {
    let last = snap.last_exit.as_deref().unwrap_or("");
    match snap.state {
        State::Starting if matches!(before, State::Stopped | State::Exited | State::Fatal) => {
            "starting".to_string()
        }
        State::Starting if before == State::Stopping && !failed => {
            "restarting (requested)".to_string()
        }
        State::Starting if before == State::Running && !snap.outgoing.is_empty() => {
            "restarting (requested): handover".to_string()
        }
        State::Starting => format!("restarting after a failure: {last}"),
        State::Running => "running".to_string(),
        State::Backoff => {
            let wait = snap
                .next_retry
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            format!(
                "restarting in {} after a failure: {last}",
                crate::format::duration(wait)
            )
        }
        State::Stopping => "stopping".to_string(),
        State::Stopped => "stopped".to_string(),
        State::Exited => format!("exited, not restarted (its restart type): {last}"),
        State::Fatal => format!(
            "FATAL, not restarted: {}",
            snap.fatal_reason.as_deref().unwrap_or(last)
        ),
    }
}

/// Kills every marked process of the component and waits until none is left.
async fn sweep(tree_id: &str, component: &str) {
    let (tree_id, name) = (tree_id.to_owned(), component.to_owned());
    let swept = tokio::task::spawn_blocking(move || {
        process::sweep_marked(&tree_id, Some(&name), LEFTOVER_DEADLINE)
    })
    .await;
    if let Ok((_, true)) = swept {
        warn!(%component, "leftover processes of an earlier run survive SIGKILL");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, TcpStream};

    use super::*;

    /// A port nothing listens on now.
    fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
    }

    #[test]
    fn a_held_socket_is_kept_across_spawns_and_rebound_only_when_its_address_changes() {
        let slot = SocketSlot::default();
        let first = SocketSpec {
            addr: free_addr(),
            backlog: 16,
        };
        let passed = |spec: &SocketSpec| {
            let sockets =
                sockets_for_spawn("web", Some(spec), Some(spec.addr), &slot).expect("the socket");
            assert_eq!(sockets.len(), 1);
            assert_eq!(sockets[0].name, "web");
            Arc::clone(&sockets[0].fd)
        };
        let bound = passed(&first);
        // A connection now waits in the backlog; it must survive what follows.
        let waiting = TcpStream::connect(first.addr).expect("the held socket accepts");
        assert!(Arc::ptr_eq(&bound, &passed(&first)), "the same socket");
        let more = SocketSpec {
            backlog: 64,
            ..first.clone()
        };
        assert!(
            Arc::ptr_eq(&bound, &passed(&more)),
            "a new backlog, the same socket"
        );
        let listener = TcpListener::from(bound.try_clone().expect("dup"));
        let (accepted, _) = listener.accept().expect("the waiting connection");
        assert_eq!(accepted.peer_addr().unwrap(), waiting.local_addr().unwrap());

        let moved = SocketSpec {
            addr: free_addr(),
            backlog: 16,
        };
        drop((listener, accepted, bound));
        let rebound = passed(&moved);
        assert!(TcpStream::connect(moved.addr).is_ok());
        let old = TcpStream::connect(first.addr).expect_err("the old address is released");
        assert_eq!(old.kind(), std::io::ErrorKind::ConnectionRefused);

        // `hold_socket` turned off: released, and the port is checked free instead.
        drop(rebound);
        assert!(sockets_for_spawn("web", None, Some(moved.addr), &slot)
            .expect("the port is free")
            .is_empty());
        assert!(slot.lock().unwrap().is_none());
    }
}
