//! The root supervisor's decisions, as a pure planner.
//!
//! [`Planner`] holds what the root actor knows of the tree: each component's spec, its last
//! [`ComponentSnapshot`] and what was asked of it (its [`Intent`]). [`Planner::step`] turns one
//! [`Input`] (a request, a component actor's report or answer, an actor's death) into the
//! [`Action`]s the root actor carries out: commands to component actors, a replacement actor,
//! answers, lines for the log, the end of the tree. It does no I/O and reads no clock (`now` is
//! an argument), so the unit tests below drive it with a fake clock, as [`crate::lifecycle`]'s
//! drive one component. The actor (`supervisor.rs`) is the shell: it executes the actions and
//! feeds the results back.
//!
//! The rules it carries out:
//! - **Start by dependency level.** A component asked to run gets `Start` once every one of its
//!   dependencies is RUNNING, so independent components start together and each level waits
//!   for the one before. Asking for a component asks for its dependencies too.
//! - **Stop in reverse.** A component asked to stop gets `Stop` once none of its dependents that
//!   are also stopping is alive.
//! - **Group strategies.** When a component fails (its failure count grows) under `one_for_all`
//!   every component that is wanted is stopped in reverse order, under `rest_for_one` the failed
//!   one and its dependents, direct or not; once the whole group is down it starts again in
//!   order. Temporary components are never restarted because of another's failure.
//! - **The supervisor's budget.** More than `max_restarts` group restarts within `max_window`,
//!   or a `critical` component going FATAL, is escalation: everything stops in reverse order,
//!   then the tree ends with the reason.
//! - **Reload.** [`Planner::plan`] says what a new tree changes; [`Planner::reconfigure`] takes
//!   it once the removed and changed components are down.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::component::{Command, ComponentSnapshot, Inherited};
use crate::lifecycle::State;
use crate::spec::{ComponentSpec, RestartType, Strategy, TreeSpec};
use crate::status::{wall, ComponentStatus, OutgoingStatus, TreeStatus};
use crate::TreeError;

/// Identifies a request whose answer the planner gives later (see [`Action::Reply`]).
pub(crate) type RequestId = u64;

/// What was asked of a component. One value instead of a set of flags: every variant is a
/// meaningful situation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Never asked to run.
    Idle,
    /// Asked to run: `Start` goes out once every dependency is RUNNING.
    StartDue,
    /// Asked to run, and told to.
    Up,
    /// Asked to stop. `sent`: the `Stop` went out (or was not needed: it was down).
    Stop {
        /// Whether the stop was carried out.
        sent: bool,
    },
    /// Stopped for a group restart: still wanted, it starts again once every member of the
    /// group is down.
    GroupRestart {
        /// Whether the stop was carried out.
        sent: bool,
    },
}

impl Intent {
    /// Whether the component should be running (`status` shows it).
    pub(crate) fn wanted(self) -> bool {
        matches!(
            self,
            Intent::StartDue | Intent::Up | Intent::GroupRestart { .. }
        )
    }

    /// Whether a stop is asked for (to stay down, or for a group restart).
    fn stopping(self) -> bool {
        matches!(self, Intent::Stop { .. } | Intent::GroupRestart { .. })
    }

    /// Kept as it is when the component is asked to run and already runs: a start that is
    /// still due stays due.
    fn run(self) -> Intent {
        match self {
            Intent::StartDue => Intent::StartDue,
            _ => Intent::Up,
        }
    }
}

/// What happened, for the planner to react to.
#[derive(Debug)]
pub(crate) enum Input {
    /// Start these components (all when empty) and their dependencies.
    Start {
        /// Answered at once with the names of those already running.
        request: RequestId,
        /// Component names.
        components: Vec<String>,
    },
    /// Stop these components (all when empty), dependents first.
    Stop {
        /// Answered once they are all down.
        request: RequestId,
        /// Component names.
        components: Vec<String>,
    },
    /// Restart one component; its dependents keep running.
    Restart {
        /// Answered once the restart began.
        request: RequestId,
        /// Component name.
        component: String,
    },
    /// Stop everything in order, then end the tree.
    Shutdown {
        /// Answered once everything is down.
        request: RequestId,
    },
    /// A component actor reported a new snapshot on its own (a process exited, became ready…).
    Report {
        /// Component name.
        component: String,
        /// Its snapshot.
        snapshot: ComponentSnapshot,
    },
    /// A component actor's answer to an [`Action::Command`]: its snapshot right after the
    /// command. It changes what the planner knows, but is not a failure to react to (the
    /// actor's own report of the same change carries the same sequence number and is ignored).
    Answer {
        /// Component name.
        component: String,
        /// Its snapshot.
        snapshot: ComponentSnapshot,
    },
    /// A component actor panicked or stopped.
    ActorDied {
        /// Component name.
        component: String,
        /// Why, as ractor reported it.
        reason: String,
    },
}

/// What the root actor must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send `cmd` to the component's actor and feed its answer back as [`Input::Answer`].
    Command {
        /// Component name.
        component: String,
        /// The command.
        cmd: Command,
    },
    /// The component's actor died: kill whatever it owned, then start a new actor that takes
    /// over this.
    Replace {
        /// Component name.
        component: String,
        /// What the new actor inherits.
        inherited: Inherited,
    },
    /// Answer a request.
    Reply {
        /// The request.
        request: RequestId,
        /// The answer.
        answer: Answer,
    },
    /// A line for the supervisor's log.
    Note(Note),
    /// Every component is down after a shutdown or an escalation: publish the escalation's
    /// reason, if any, and stop the root actor.
    Exit {
        /// Why the tree escalated; `None` after an ordinary shutdown.
        escalation: Option<String>,
    },
}

/// The answer to a request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// To `Start`: the components that were already running.
    Started(Result<Vec<String>, TreeError>),
    /// To `Stop` and `Restart`.
    Done(Result<(), TreeError>),
    /// To `Shutdown`: every component is down (the actor answers with the final status).
    ShutDown,
}

/// Something the planner decided that the log should show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Note {
    /// A shutdown began.
    ShutdownRequested,
    /// An operator asked to restart a component.
    RestartRequested {
        /// Component name.
        component: String,
    },
    /// A component actor died; a new one takes over.
    ActorDied {
        /// Component name.
        component: String,
        /// Why it died.
        reason: String,
    },
    /// A component failed under a group strategy: the group stops in reverse order.
    GroupRestart {
        /// The strategy.
        strategy: Strategy,
        /// The component that failed.
        failed: String,
        /// How it failed.
        reason: String,
        /// The group, the failed component included.
        group: Vec<String>,
    },
    /// The group of a group restart is down: it starts again in order.
    GroupStopped {
        /// The group.
        group: Vec<String>,
    },
    /// The tree escalates: everything stops, then the tree ends.
    Escalation {
        /// Why.
        reason: String,
    },
    /// Every component is down after a shutdown.
    AllStopped,
    /// Every component is down after an escalation.
    EscalationComplete {
        /// Why the tree escalated.
        reason: String,
    },
}

/// What a new tree changes, by component name.
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
    /// Changed RUNNING components that restart through a handover (a subset of `restarted`):
    /// they keep their held socket, their dependencies and their log, and hand over
    /// ([`ComponentSpec::hands_over`]) in the old and the new spec; their old process serves
    /// until the new one is ready, instead of being stopped first.
    pub handed_over: Vec<String>,
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

    /// The components whose old actor goes (they are stopped first): the removed ones, and the
    /// changed ones that do not hand over, in the old start order.
    pub fn stopped_first(&self) -> Vec<String> {
        let replaced = self
            .changed
            .iter()
            .filter(|c| !self.handed_over.contains(c));
        self.removed.iter().chain(replaced).cloned().collect()
    }
}

/// What [`Planner::reconfigure`] changed, for the actor to carry out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reconfigured {
    /// Components whose actors go: the removed ones and the old actors of the changed ones.
    pub(crate) dropped: Vec<String>,
    /// Components that need a new actor: the added ones and the changed ones.
    pub(crate) fresh: Vec<String>,
    /// Changed components whose actor stays and takes the new spec through a handover.
    pub(crate) handed_over: Vec<String>,
}

/// Whether a change of `entry` to `new` can be handed over: it runs, was asked to, and the old
/// and new spec both hand over on the same address, with the same dependencies and log.
fn can_hand_over(entry: &Entry, new: &ComponentSpec) -> bool {
    let old = &entry.spec;
    entry.intent == Intent::Up
        && entry.snapshot.state == State::Running
        && old.hands_over()
        && new.hands_over()
        && old.socket.as_ref().map(|s| s.addr) == new.socket.as_ref().map(|s| s.addr)
        && old.depends_on == new.depends_on
        && old.log == new.log
}

/// One component as the planner sees it.
#[derive(Debug)]
struct Entry {
    spec: ComponentSpec,
    snapshot: ComponentSnapshot,
    intent: Intent,
}

/// Someone waiting for components to be down.
#[derive(Debug)]
enum Waiter {
    /// A `Stop` request and the indices it stops.
    Stop(RequestId, Vec<usize>),
    /// A `Shutdown` request.
    Shutdown(RequestId),
    /// The tree escalated: once everything is down, it ends with this reason.
    Escalation(String),
}

/// The root supervisor's decisions (see the module documentation).
#[derive(Debug)]
pub(crate) struct Planner {
    tree_id: String,
    /// In start order.
    entries: Vec<Entry>,
    /// Entry index by component name.
    index: HashMap<String, usize>,
    waiters: Vec<Waiter>,
    shutting_down: bool,
    strategy: Strategy,
    max_restarts: u32,
    max_window: Duration,
    /// Times of the group restarts within `max_window`.
    group_restarts: VecDeque<Instant>,
    /// Every group restart so far.
    group_restarts_total: u32,
    /// Why the tree escalated, once it did.
    escalation: Option<String>,
}

fn is_down(state: State) -> bool {
    matches!(state, State::Stopped | State::Exited | State::Fatal)
}

impl Planner {
    /// The planner of a validated tree, every component idle and STOPPED.
    pub(crate) fn new(spec: &TreeSpec, now: Instant) -> Result<Self, TreeError> {
        spec.validate()?;
        let mut planner = Planner {
            tree_id: spec.tree_id.clone(),
            entries: Vec::new(),
            index: HashMap::new(),
            waiters: Vec::new(),
            shutting_down: false,
            strategy: spec.strategy,
            max_restarts: spec.max_restarts,
            max_window: spec.max_window,
            group_restarts: VecDeque::new(),
            group_restarts_total: 0,
            escalation: None,
        };
        planner.entries = spec
            .start_order()?
            .into_iter()
            .map(|c| Entry::new(c.clone(), now))
            .collect();
        planner.reindex();
        Ok(planner)
    }

    /// The tree's marker.
    pub(crate) fn tree_id(&self) -> &str {
        &self.tree_id
    }

    /// The components' specs, in start order.
    pub(crate) fn specs(&self) -> impl Iterator<Item = &ComponentSpec> {
        self.entries.iter().map(|e| &e.spec)
    }

    /// The component whose live process has `pid`, if any.
    pub(crate) fn component_with_pid(&self, pid: u32) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.snapshot.pid == Some(pid))
            .map(|e| e.spec.name.as_str())
    }

    /// A component's spec.
    pub(crate) fn spec(&self, name: &str) -> Option<&ComponentSpec> {
        self.index.get(name).map(|&i| &self.entries[i].spec)
    }

    /// Reacts to `input`; returns what to do, in order.
    pub(crate) fn step(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start {
                request,
                components,
            } => {
                let answer = self.start(&components);
                out.push(Action::Reply {
                    request,
                    answer: Answer::Started(answer),
                });
            }
            Input::Stop {
                request,
                components,
            } => match self.select(&components) {
                Ok(set) => {
                    self.begin_stop(&set);
                    self.waiters.push(Waiter::Stop(request, set));
                }
                Err(e) => out.push(Action::Reply {
                    request,
                    answer: Answer::Done(Err(e)),
                }),
            },
            Input::Restart { request, component } => {
                let answer = self.restart(&component, &mut out);
                out.push(Action::Reply {
                    request,
                    answer: Answer::Done(answer),
                });
            }
            Input::Shutdown { request } => {
                out.push(Action::Note(Note::ShutdownRequested));
                self.shutting_down = true;
                let all: Vec<usize> = (0..self.entries.len()).collect();
                self.begin_stop(&all);
                self.waiters.push(Waiter::Shutdown(request));
            }
            Input::Report {
                component,
                snapshot,
            } => {
                if let Some(&i) = self.index.get(&component) {
                    let e = &mut self.entries[i];
                    if snapshot.seq > e.snapshot.seq {
                        let old = std::mem::replace(&mut e.snapshot, snapshot);
                        self.on_change(i, &old, now, &mut out);
                    }
                }
            }
            Input::Answer {
                component,
                snapshot,
            } => {
                if let Some(&i) = self.index.get(&component) {
                    let e = &mut self.entries[i];
                    if snapshot.seq >= e.snapshot.seq {
                        e.snapshot = snapshot;
                    }
                }
            }
            Input::ActorDied { component, reason } => {
                if let Some(&i) = self.index.get(&component) {
                    let e = &self.entries[i];
                    out.push(Action::Note(Note::ActorDied {
                        component: component.clone(),
                        reason: reason.clone(),
                    }));
                    let inherited = Inherited {
                        budget: e.snapshot.budget.clone(),
                        last_exit: e.snapshot.last_exit.clone(),
                        reason,
                        wanted: matches!(e.intent, Intent::StartDue | Intent::Up),
                        seq: e.snapshot.seq,
                    };
                    out.push(Action::Replace {
                        component,
                        inherited,
                    });
                }
            }
        }
        self.drive(&mut out);
        self.finish_waiters(&mut out);
        out
    }

    /// Indices of the named components (all when `names` is empty).
    fn select(&self, names: &[String]) -> Result<Vec<usize>, TreeError> {
        if names.is_empty() {
            return Ok((0..self.entries.len()).collect());
        }
        names.iter().map(|n| self.find(n)).collect()
    }

    fn find(&self, name: &str) -> Result<usize, TreeError> {
        self.index
            .get(name)
            .copied()
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
                if let Some(&j) = self.index.get(d) {
                    if !out.contains(&j) {
                        out.push(j);
                    }
                }
            }
            k += 1;
        }
        out
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

    fn start(&mut self, names: &[String]) -> Result<Vec<String>, TreeError> {
        if self.shutting_down {
            return Err(TreeError::ShuttingDown);
        }
        let set = self.with_dependencies(self.select(names)?);
        let mut already = Vec::new();
        for i in set {
            let e = &mut self.entries[i];
            match e.snapshot.state {
                State::Running | State::Starting => {
                    already.push(e.spec.name.clone());
                    e.intent = e.intent.run();
                }
                _ => e.intent = Intent::StartDue,
            }
        }
        Ok(already)
    }

    fn restart(&mut self, name: &str, out: &mut Vec<Action>) -> Result<(), TreeError> {
        if self.shutting_down {
            return Err(TreeError::ShuttingDown);
        }
        let i = self.find(name)?;
        out.push(Action::Note(Note::RestartRequested {
            component: name.to_string(),
        }));
        let e = &mut self.entries[i];
        match e.snapshot.state {
            State::Starting | State::Running | State::Stopping | State::Backoff => {
                e.intent = e.intent.run();
                out.push(Action::Command {
                    component: name.to_string(),
                    cmd: Command::Restart,
                });
            }
            State::Stopped | State::Exited | State::Fatal => e.intent = Intent::StartDue,
        }
        Ok(())
    }

    fn begin_stop(&mut self, set: &[usize]) {
        for &i in set {
            let e = &mut self.entries[i];
            e.intent = match e.intent {
                Intent::Stop { sent } | Intent::GroupRestart { sent } => Intent::Stop { sent },
                Intent::Idle | Intent::StartDue | Intent::Up => Intent::Stop { sent: false },
            };
        }
    }

    /// Whether a component that depends on component `i` and is also stopping is still alive.
    fn stopping_dependent_alive(&self, i: usize) -> bool {
        let name = &self.entries[i].spec.name;
        self.entries.iter().any(|d| {
            d.intent.stopping() && d.spec.depends_on.contains(name) && !is_down(d.snapshot.state)
        })
    }

    /// The commands that are due, in dependency order. Called after every input: it is
    /// idempotent. A command's answer comes back as [`Input::Answer`] and drives again.
    fn drive(&mut self, out: &mut Vec<Action>) {
        self.finish_group_stop(out);
        loop {
            let mut progressed = false;
            for i in 0..self.entries.len() {
                match self.entries[i].intent {
                    Intent::Stop { sent: false } | Intent::GroupRestart { sent: false } => {
                        if self.stopping_dependent_alive(i) {
                            continue;
                        }
                        let e = &mut self.entries[i];
                        e.intent = match e.intent {
                            Intent::GroupRestart { .. } => Intent::GroupRestart { sent: true },
                            _ => Intent::Stop { sent: true },
                        };
                        if !is_down(e.snapshot.state) {
                            out.push(Action::Command {
                                component: e.spec.name.clone(),
                                cmd: Command::Stop,
                            });
                        }
                        progressed = true;
                    }
                    Intent::StartDue if self.waiting_for(i).is_none() => {
                        let e = &mut self.entries[i];
                        e.intent = Intent::Up;
                        out.push(Action::Command {
                            component: e.spec.name.clone(),
                            cmd: Command::Start,
                        });
                        progressed = true;
                    }
                    _ => {}
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Once every member of a group restart is down, they are all due to start, in order.
    fn finish_group_stop(&mut self, out: &mut Vec<Action>) {
        let in_group = |e: &&Entry| matches!(e.intent, Intent::GroupRestart { .. });
        let mut group = self.entries.iter().filter(in_group).peekable();
        if group.peek().is_none() || !group.all(|e| is_down(e.snapshot.state)) {
            return;
        }
        let names = self
            .entries
            .iter()
            .filter(in_group)
            .map(|e| e.spec.name.clone())
            .collect();
        out.push(Action::Note(Note::GroupStopped { group: names }));
        for e in &mut self.entries {
            if matches!(e.intent, Intent::GroupRestart { .. }) {
                e.intent = Intent::StartDue;
            }
        }
    }

    /// Reacts to component `i`'s new snapshot: its failures drive the group strategies, a
    /// critical component going FATAL escalates.
    fn on_change(
        &mut self,
        i: usize,
        old: &ComponentSnapshot,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let e = &self.entries[i];
        let new = &e.snapshot;
        if new.state == State::Fatal && old.state != State::Fatal && e.spec.critical {
            let reason = format!(
                "critical component `{}` is FATAL: {}",
                e.spec.name,
                new.fatal_reason.as_deref().unwrap_or("")
            );
            self.escalate(reason, out);
            return;
        }
        let failed = new.budget.failures_total > old.budget.failures_total;
        if !failed
            || self.strategy == Strategy::OneForOne
            || new.state == State::Fatal
            || e.intent != Intent::Up && e.intent != Intent::StartDue
            || self.shutting_down
        {
            return;
        }
        let set = match self.strategy {
            Strategy::OneForOne => return,
            Strategy::OneForAll => (0..self.entries.len()).collect(),
            Strategy::RestForOne => self.with_dependents(i),
        };
        // Temporary components are never restarted because of another's failure, nor are
        // components nobody asked to run.
        let set: Vec<usize> = set
            .into_iter()
            .filter(|&j| {
                let other = &self.entries[j];
                j == i
                    || (other.spec.policy.restart != RestartType::Temporary
                        && other.intent.wanted())
            })
            .collect();
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
            self.escalate(reason, out);
            return;
        }
        self.group_restarts_total += 1;
        out.push(Action::Note(Note::GroupRestart {
            strategy: self.strategy,
            failed: name,
            reason: why,
            group: set
                .iter()
                .map(|&j| self.entries[j].spec.name.clone())
                .collect(),
        }));
        for j in set {
            self.entries[j].intent = Intent::GroupRestart { sent: false };
        }
    }

    /// Stops everything in order, then ends the tree with `reason`.
    fn escalate(&mut self, reason: String, out: &mut Vec<Action>) {
        if self.escalation.is_some() {
            return;
        }
        out.push(Action::Note(Note::Escalation {
            reason: reason.clone(),
        }));
        self.escalation = Some(reason.clone());
        self.shutting_down = true;
        let all: Vec<usize> = (0..self.entries.len()).collect();
        self.begin_stop(&all);
        self.waiters.push(Waiter::Escalation(reason));
    }

    /// The first dependency of component `i` that is not RUNNING yet.
    fn waiting_for(&self, i: usize) -> Option<&str> {
        self.entries[i].spec.depends_on.iter().find_map(|d| {
            let j = *self.index.get(d)?;
            (self.entries[j].snapshot.state != State::Running).then_some(d.as_str())
        })
    }

    /// A dependency (direct or not) that cannot come up without intervention.
    fn blocked_by(&self, i: usize) -> Option<String> {
        for d in &self.entries[i].spec.depends_on {
            let Some(&j) = self.index.get(d) else {
                continue;
            };
            let dep = &self.entries[j];
            match dep.snapshot.state {
                State::Fatal | State::Exited => {
                    return Some(format!("{d} is {}", dep.snapshot.state))
                }
                State::Stopped if !dep.intent.wanted() => {
                    return Some(format!("{d} is not started"))
                }
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

    /// Answers the waiters whose components are all down; once a shutdown or an escalation is
    /// complete, ends the tree.
    fn finish_waiters(&mut self, out: &mut Vec<Action>) {
        let all_down = self.entries.iter().all(|e| is_down(e.snapshot.state));
        let mut exit = false;
        for w in std::mem::take(&mut self.waiters) {
            match w {
                Waiter::Stop(request, set)
                    if set.iter().all(|&i| is_down(self.entries[i].snapshot.state)) =>
                {
                    out.push(Action::Reply {
                        request,
                        answer: Answer::Done(Ok(())),
                    });
                }
                Waiter::Shutdown(request) if all_down => {
                    out.push(Action::Note(Note::AllStopped));
                    out.push(Action::Reply {
                        request,
                        answer: Answer::ShutDown,
                    });
                    exit = true;
                }
                Waiter::Escalation(reason) if all_down => {
                    out.push(Action::Note(Note::EscalationComplete { reason }));
                    exit = true;
                }
                w => self.waiters.push(w),
            }
        }
        if exit {
            out.push(Action::Exit {
                escalation: self.escalation.clone(),
            });
        }
    }

    /// What taking `spec` would change.
    pub(crate) fn plan(&self, spec: &TreeSpec) -> Result<Reload, TreeError> {
        if spec.tree_id != self.tree_id {
            return Err(TreeError::Reload(format!(
                "the tree id cannot change (from {:?} to {:?})",
                self.tree_id, spec.tree_id
            )));
        }
        spec.validate()?;
        let mut plan = Reload::default();
        let new: HashMap<&str, &ComponentSpec> = spec
            .components
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        for e in &self.entries {
            match new.get(e.spec.name.as_str()) {
                None => plan.removed.push(e.spec.name.clone()),
                Some(c) if c.differs_from(&e.spec) => {
                    plan.changed.push(e.spec.name.clone());
                    if e.intent.wanted() {
                        plan.restarted.push(e.spec.name.clone());
                    }
                    if can_hand_over(e, c) {
                        plan.handed_over.push(e.spec.name.clone());
                    }
                }
                Some(_) => {}
            }
        }
        for c in &spec.components {
            if !self.index.contains_key(&c.name) {
                plan.added.push(c.name.clone());
            }
        }
        plan.tree_changed = spec.strategy != self.strategy
            || spec.max_restarts != self.max_restarts
            || spec.max_window != self.max_window;
        Ok(plan)
    }

    /// Takes `spec` as the tree: drops the removed components, gives the changed ones a fresh
    /// entry (they need a new actor with their new spec), adds the new ones (not started),
    /// keeps the others as they are (a change of the address block every component shares is
    /// not a change: they see the new block at their next start). Refused while a stop is in
    /// progress or a removed or changed component is not down.
    pub(crate) fn reconfigure(
        &mut self,
        spec: &TreeSpec,
        now: Instant,
    ) -> Result<Reconfigured, TreeError> {
        if self.shutting_down {
            return Err(TreeError::ShuttingDown);
        }
        let plan = self.plan(spec)?;
        if !self.waiters.is_empty() {
            return Err(TreeError::Reload(
                "a stop is in progress; try again once it is done".into(),
            ));
        }
        let stopped_first = plan.stopped_first();
        let goes = |e: &Entry| stopped_first.contains(&e.spec.name);
        let live: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| goes(e) && (!is_down(e.snapshot.state) || e.intent.wanted()))
            .map(|e| e.spec.name.as_str())
            .collect();
        if !live.is_empty() {
            return Err(TreeError::Reload(format!(
                "stop {} before the change",
                live.join(", ")
            )));
        }
        let order: Vec<ComponentSpec> = spec.start_order()?.into_iter().cloned().collect();
        let mut old: HashMap<String, Entry> = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|e| (e.spec.name.clone(), e))
            .collect();
        let mut done = Reconfigured::default();
        for new in order {
            let handed_over = plan.handed_over.contains(&new.name);
            let kept = !plan.changed.contains(&new.name) || handed_over;
            match old.remove(&new.name).filter(|_| kept) {
                Some(mut e) if handed_over => {
                    e.spec = new.clone();
                    done.handed_over.push(new.name.clone());
                    self.entries.push(e);
                }
                Some(mut e) => {
                    e.spec.shared_env = std::sync::Arc::clone(&new.shared_env);
                    self.entries.push(e);
                }
                None => {
                    done.fresh.push(new.name.clone());
                    self.entries.push(Entry::new(new, now));
                }
            }
        }
        // What is left of the old tree: removed components, and the old entries of changed
        // ones that do not hand over.
        done.dropped = stopped_first;
        self.strategy = spec.strategy;
        self.max_restarts = spec.max_restarts;
        self.max_window = spec.max_window;
        self.reindex();
        Ok(done)
    }

    fn reindex(&mut self) {
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.spec.name.clone(), i))
            .collect();
    }

    /// The status of every component, without memory figures; `dropped_bytes` tells how much
    /// of a component's output its log dropped.
    pub(crate) fn status(
        &self,
        now: Instant,
        wall_now: SystemTime,
        dropped_bytes: impl Fn(&str) -> u64,
    ) -> TreeStatus {
        let components = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let s = &e.snapshot;
                let waiting = e.intent == Intent::StartDue;
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
                    wanted: e.intent.wanted(),
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
                    log_dropped_bytes: dropped_bytes(&e.spec.name),
                    outgoing: s
                        .outgoing
                        .iter()
                        .map(|o| OutgoingStatus {
                            pid: o.pid,
                            uptime: now.saturating_duration_since(o.spawned_at),
                            draining_for: o
                                .draining_since
                                .map(|t| now.saturating_duration_since(t)),
                        })
                        .collect(),
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

impl Entry {
    fn new(spec: ComponentSpec, now: Instant) -> Self {
        Entry {
            spec,
            snapshot: ComponentSnapshot::initial(now),
            intent: Intent::Idle,
        }
    }
}

#[cfg(test)]
mod tests;
