//! Unit tests of the planner: a simulated tree on a fake clock.
//!
//! [`Sim`] plays the component actors: it answers each `Command` with the snapshot a real
//! actor would give right after it (a simplified lifecycle: `Start` makes a down component
//! STARTING, `Stop` makes a live one STOPPING or a backing-off one STOPPED, `Restart` makes it
//! STARTING again), and the tests play the processes with [`Sim::report`] (ready, exited,
//! failed, FATAL). Every action the planner asks for is recorded, so each test states exactly
//! what the supervisor sent, in which order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::spec::{ComponentSpec, Ready, RestartType, Strategy, TreeSpec};

/// The simulated tree: the planner, the component actors' snapshots, and what happened.
struct Sim {
    planner: Planner,
    now: Instant,
    actors: HashMap<String, ComponentSnapshot>,
    next_request: RequestId,
    /// Every command sent to a component actor, in order.
    commands: Vec<(String, Command)>,
    replies: Vec<(RequestId, Answer)>,
    notes: Vec<Note>,
    replaced: Vec<(String, Inherited)>,
    exit: Option<Option<String>>,
}

fn component(name: &str, deps: &[&str]) -> ComponentSpec {
    let mut b = ComponentSpec::builder(name, "sleep").arg("1000");
    for d in deps {
        b = b.depends_on(*d);
    }
    b.build().expect("a valid component")
}

/// db and cache (level 0), app on both (level 1), web on app (level 2); in configuration order
/// web first, so that start order is visibly the planner's.
fn layered() -> Vec<ComponentSpec> {
    vec![
        component("web", &["app"]),
        component("app", &["db", "cache"]),
        component("db", &[]),
        component("cache", &[]),
    ]
}

fn tree(components: Vec<ComponentSpec>, strategy: Strategy) -> TreeSpec {
    let mut t = TreeSpec::new("plan-test", components);
    t.strategy = strategy;
    t.max_restarts = 3;
    t.max_window = Duration::from_secs(60);
    t
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(ToString::to_string).collect()
}

impl Sim {
    fn new(spec: TreeSpec) -> Self {
        let now = Instant::now();
        let planner = Planner::new(&spec, now).expect("a valid tree");
        let actors = spec
            .components
            .iter()
            .map(|c| (c.name.clone(), ComponentSnapshot::initial(now)))
            .collect();
        Sim {
            planner,
            now,
            actors,
            next_request: 0,
            commands: Vec::new(),
            replies: Vec::new(),
            notes: Vec::new(),
            replaced: Vec::new(),
            exit: None,
        }
    }

    /// Feeds `input`, carrying out the actions as the actor would, answers included.
    fn feed(&mut self, input: Input) {
        let mut queue: VecDeque<Action> = self.planner.step(input, self.now).into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Command { component, cmd } => {
                    self.commands.push((component.clone(), cmd));
                    let snapshot = self.obey(&component, cmd);
                    let answer = Input::Answer {
                        component,
                        snapshot,
                    };
                    queue.extend(self.planner.step(answer, self.now));
                }
                Action::Replace {
                    component,
                    inherited,
                } => self.replaced.push((component, inherited)),
                Action::Reply { request, answer } => self.replies.push((request, answer)),
                Action::Note(note) => self.notes.push(note),
                Action::Exit { escalation } => {
                    assert!(self.exit.is_none(), "the tree ended twice");
                    self.exit = Some(escalation);
                }
            }
        }
    }

    /// The component actor's side of a command: its new snapshot (not yet reported).
    fn obey(&mut self, name: &str, cmd: Command) -> ComponentSnapshot {
        let now = self.now;
        let s = self.actors.get_mut(name).expect("a known component");
        let before = s.state;
        s.state = match (cmd, s.state) {
            (Command::Start, State::Stopped | State::Exited | State::Fatal) => State::Starting,
            (Command::Stop, State::Starting | State::Running) => State::Stopping,
            (Command::Stop, State::Backoff) => State::Stopped,
            (Command::Restart, _) => State::Starting,
            (_, state) => state,
        };
        if s.state != before {
            s.seq += 1;
            s.since = now;
            if s.state == State::Starting {
                s.generation += 1;
                s.pid = Some(1000 + s.generation as u32);
                s.fatal_reason = None;
            }
        }
        s.clone()
    }

    /// A process event: changes the actor's snapshot and reports it.
    fn report(&mut self, name: &str, change: impl FnOnce(&mut ComponentSnapshot)) {
        let s = self.actors.get_mut(name).expect("a known component");
        change(s);
        s.seq += 1;
        s.since = self.now;
        let snapshot = s.clone();
        self.feed(Input::Report {
            component: name.to_string(),
            snapshot,
        });
    }

    fn ready(&mut self, name: &str) {
        self.report(name, |s| s.state = State::Running);
    }

    fn ready_all(&mut self, names: &[&str]) {
        for n in names {
            self.ready(n);
        }
    }

    /// The process of a stopping component exited.
    fn down(&mut self, name: &str) {
        self.report(name, |s| {
            s.state = State::Stopped;
            s.pid = None;
        });
    }

    /// The process crashed; the component's own lifecycle backs off.
    fn crash(&mut self, name: &str) {
        self.report(name, |s| {
            s.state = State::Backoff;
            s.pid = None;
            s.budget.failures_total += 1;
            s.budget.restarts += 1;
            s.last_exit = Some("exited with status 1".into());
        });
    }

    fn fatal(&mut self, name: &str) {
        self.report(name, |s| {
            s.state = State::Fatal;
            s.pid = None;
            s.budget.failures_total += 1;
            s.fatal_reason = Some("6 failures in 1m".into());
        });
    }

    fn request(&mut self) -> RequestId {
        self.next_request += 1;
        self.next_request
    }

    fn start(&mut self, components: &[&str]) -> RequestId {
        let request = self.request();
        self.feed(Input::Start {
            request,
            components: names(components),
        });
        request
    }

    fn stop(&mut self, components: &[&str]) -> RequestId {
        let request = self.request();
        self.feed(Input::Stop {
            request,
            components: names(components),
        });
        request
    }

    fn restart(&mut self, component: &str) -> RequestId {
        let request = self.request();
        self.feed(Input::Restart {
            request,
            component: component.to_string(),
        });
        request
    }

    fn shutdown(&mut self) -> RequestId {
        let request = self.request();
        self.feed(Input::Shutdown { request });
        request
    }

    /// Starts everything and makes it RUNNING, level by level; forgets what that sent.
    fn all_running(&mut self) {
        self.start(&[]);
        for _ in 0..self.actors.len() {
            let starting: Vec<String> = self
                .actors
                .iter()
                .filter(|(_, s)| s.state == State::Starting)
                .map(|(n, _)| n.clone())
                .collect();
            for n in starting {
                self.ready(&n);
            }
        }
        assert!(
            self.actors.values().all(|s| s.state == State::Running),
            "not all running: {:?}",
            self.states()
        );
        self.clear();
    }

    /// Makes every STOPPING component's process exit, until none is left stopping.
    fn settle_stops(&mut self) {
        loop {
            let stopping: Vec<String> = self
                .actors
                .iter()
                .filter(|(_, s)| s.state == State::Stopping)
                .map(|(n, _)| n.clone())
                .collect();
            if stopping.is_empty() {
                return;
            }
            for n in stopping {
                self.down(&n);
            }
        }
    }

    fn clear(&mut self) {
        self.commands.clear();
        self.replies.clear();
        self.notes.clear();
    }

    /// The commands sent since the last call, as `"start db"`.
    fn sent(&mut self) -> Vec<String> {
        std::mem::take(&mut self.commands)
            .into_iter()
            .map(|(n, c)| format!("{} {n}", format!("{c:?}").to_lowercase()))
            .collect()
    }

    fn states(&self) -> Vec<(String, State)> {
        let mut v: Vec<_> = self
            .actors
            .iter()
            .map(|(n, s)| (n.clone(), s.state))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn status(&self) -> TreeStatus {
        self.planner.status(self.now, SystemTime::now(), |_| 0)
    }

    fn status_of(&self, name: &str) -> ComponentStatus {
        self.status()
            .components
            .into_iter()
            .find(|c| c.name == name)
            .expect("a known component")
    }

    /// Whether `request` was answered, and how.
    fn answer(&self, request: RequestId) -> Option<&Answer> {
        self.replies
            .iter()
            .find(|(r, _)| *r == request)
            .map(|(_, a)| a)
    }

    fn stopped_ok(&self, request: RequestId) -> bool {
        matches!(self.answer(request), Some(Answer::Done(Ok(()))))
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }
}

// ---------------------------------------------------------------------------------------------
// Start and stop order
// ---------------------------------------------------------------------------------------------

#[test]
fn starts_level_by_level_in_dependency_order() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    let order: Vec<&str> = sim.planner.specs().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["db", "cache", "app", "web"]);

    let r = sim.start(&[]);
    assert!(
        matches!(sim.answer(r), Some(Answer::Started(Ok(already))) if already.is_empty()),
        "start is answered at once"
    );
    assert_eq!(sim.sent(), ["start db", "start cache"], "level 0 together");
    assert_eq!(
        sim.status_of("app").waiting_for.as_deref(),
        Some("db"),
        "app waits for its first dependency"
    );

    sim.ready("db");
    assert!(sim.sent().is_empty(), "app also needs cache");
    assert_eq!(sim.status_of("app").waiting_for.as_deref(), Some("cache"));
    sim.ready("cache");
    assert_eq!(sim.sent(), ["start app"]);
    sim.ready("app");
    assert_eq!(sim.sent(), ["start web"]);
    sim.ready("web");
    assert!(sim.sent().is_empty());
    assert!(sim
        .status()
        .components
        .iter()
        .all(|c| c.wanted && c.is_settled()));
}

#[test]
fn starting_one_component_starts_its_dependencies_only() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.start(&["app"]);
    assert_eq!(sim.sent(), ["start db", "start cache"]);
    sim.ready_all(&["db", "cache"]);
    assert_eq!(sim.sent(), ["start app"]);
    sim.ready("app");
    assert!(sim.sent().is_empty(), "web was not asked for");
    let web = sim.status_of("web");
    assert!(!web.wanted && web.state == State::Stopped, "{web:?}");
}

#[test]
fn start_answers_which_components_already_run() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let r = sim.start(&["web"]);
    match sim.answer(r) {
        Some(Answer::Started(Ok(already))) => {
            let mut already = already.clone();
            already.sort();
            assert_eq!(already, ["app", "cache", "db", "web"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.sent().is_empty());
}

#[test]
fn stops_in_reverse_dependency_order_and_answers_when_all_are_down() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let r = sim.stop(&[]);
    assert_eq!(sim.sent(), ["stop web"], "dependents first");
    sim.down("web");
    assert_eq!(sim.sent(), ["stop app"]);
    assert!(sim.answer(r).is_none(), "not answered while some are up");
    sim.down("app");
    assert_eq!(sim.sent(), ["stop db", "stop cache"]);
    sim.down("db");
    assert!(sim.answer(r).is_none());
    sim.down("cache");
    assert!(sim.stopped_ok(r));
    assert!(sim.status().components.iter().all(|c| !c.wanted));
}

#[test]
fn stopping_a_dependency_alone_leaves_its_running_dependents_alone() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let r = sim.stop(&["db"]);
    assert_eq!(
        sim.sent(),
        ["stop db"],
        "app is not stopping, so it does not hold db up"
    );
    sim.down("db");
    assert!(sim.stopped_ok(r));
    assert_eq!(sim.status_of("app").state, State::Running);
}

#[test]
fn a_component_already_down_is_not_sent_stop_and_unblocks_its_dependencies() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.start(&["app"]);
    sim.ready_all(&["db", "cache", "app"]);
    sim.clear();
    // web never ran: stopping everything goes straight to app.
    let r = sim.stop(&[]);
    assert_eq!(sim.sent(), ["stop app"]);
    sim.settle_stops();
    assert_eq!(sim.sent(), ["stop db", "stop cache"]);
    assert!(sim.stopped_ok(r));
}

#[test]
fn unknown_components_are_refused_with_the_configured_names() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    let r = sim.stop(&["nope"]);
    match sim.answer(r) {
        Some(Answer::Done(Err(TreeError::UnknownComponent { name, known }))) => {
            assert_eq!(name, "nope");
            assert_eq!(known, &["db", "cache", "app", "web"]);
        }
        other => panic!("{other:?}"),
    }
    let r = sim.start(&["nope"]);
    assert!(matches!(
        sim.answer(r),
        Some(Answer::Started(Err(TreeError::UnknownComponent { .. })))
    ));
    assert!(sim.sent().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Dependencies that fail
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fatal_dependency_blocks_its_dependents_which_count_as_settled() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.start(&[]);
    sim.ready("cache");
    sim.fatal("db");
    assert_eq!(
        sim.sent(),
        ["start db", "start cache"],
        "app is never started"
    );
    let app = sim.status_of("app");
    assert_eq!(app.blocked_by.as_deref(), Some("db is FATAL"));
    assert!(app.is_settled(), "start does not wait for it");
    let web = sim.status_of("web");
    assert_eq!(
        web.blocked_by.as_deref(),
        Some("db is FATAL"),
        "blocked through app"
    );
    // Starting db again (an operator's start clears FATAL) lets the rest follow.
    sim.start(&["db"]);
    assert_eq!(sim.sent(), ["start db"]);
    sim.ready("db");
    assert_eq!(sim.sent(), ["start app"]);
}

#[test]
fn a_dependency_not_asked_to_run_is_named_as_not_started() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.start(&["app"]);
    sim.stop(&["cache"]);
    sim.settle_stops();
    sim.ready("db");
    assert_eq!(
        sim.status_of("app").blocked_by.as_deref(),
        Some("cache is not started")
    );
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

#[test]
fn one_for_one_leaves_a_failure_to_the_component() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    sim.crash("app");
    assert!(sim.sent().is_empty());
    assert!(!sim
        .notes
        .iter()
        .any(|n| matches!(n, Note::GroupRestart { .. })));
    assert_eq!(sim.status().group_restarts, 0);
}

#[test]
fn one_for_all_stops_every_component_in_reverse_then_starts_all_in_order() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    sim.crash("cache");
    assert_eq!(
        sim.notes,
        [Note::GroupRestart {
            strategy: Strategy::OneForAll,
            failed: "cache".into(),
            reason: "exited with status 1".into(),
            group: names(&["db", "cache", "app", "web"]),
        }]
    );
    assert_eq!(sim.sent(), ["stop web"], "dependents first");
    assert!(sim.status().components.iter().all(|c| c.wanted));
    sim.down("web");
    assert_eq!(sim.sent(), ["stop app"]);
    sim.down("app");
    // cache is backing off: its stop makes it STOPPED at once.
    assert_eq!(sim.sent(), ["stop db", "stop cache"]);
    sim.down("db");
    assert_eq!(
        sim.sent(),
        ["start db", "start cache"],
        "the group starts again in order"
    );
    assert!(sim.notes.contains(&Note::GroupStopped {
        group: names(&["db", "cache", "app", "web"])
    }));
    sim.ready_all(&["db", "cache"]);
    assert_eq!(sim.sent(), ["start app"]);
    sim.ready("app");
    assert_eq!(sim.sent(), ["start web"]);
    assert_eq!(sim.status().group_restarts, 1);
}

#[test]
fn rest_for_one_restarts_the_failed_component_and_its_dependents_only() {
    let mut sim = Sim::new(tree(layered(), Strategy::RestForOne));
    sim.all_running();
    sim.crash("db");
    match &sim.notes[..] {
        [Note::GroupRestart { group, .. }] => assert_eq!(group, &names(&["db", "app", "web"])),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.sent(), ["stop web"]);
    sim.settle_stops();
    assert_eq!(sim.sent(), ["stop app", "stop db", "start db"]);
    assert_eq!(
        sim.status_of("cache").state,
        State::Running,
        "cache is left alone"
    );
    sim.ready("db");
    assert_eq!(sim.sent(), ["start app"]);
}

#[test]
fn group_restarts_leave_temporary_and_unwanted_components_alone() {
    let mut components = layered();
    components.push(component("batch", &[]));
    components[4].policy.restart = RestartType::Temporary;
    components.push(component("idle", &[]));
    let mut sim = Sim::new(tree(components, Strategy::OneForAll));
    sim.start(&["web", "batch"]);
    sim.ready_all(&["db", "cache", "batch"]);
    sim.ready("app");
    sim.ready("web");
    sim.clear();
    sim.crash("db");
    match &sim.notes[..] {
        [Note::GroupRestart { group, .. }] => {
            assert_eq!(group, &names(&["db", "cache", "app", "web"]));
        }
        other => panic!("{other:?}"),
    }
    sim.settle_stops();
    assert_eq!(sim.status_of("batch").state, State::Running);
    assert!(!sim.status_of("idle").wanted);
    assert!(!sim
        .sent()
        .iter()
        .any(|c| c.ends_with("batch") || c.ends_with("idle")));
}

#[test]
fn a_failure_during_a_group_restart_does_not_start_another() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    sim.crash("db");
    sim.crash("web");
    let groups = sim
        .notes
        .iter()
        .filter(|n| matches!(n, Note::GroupRestart { .. }))
        .count();
    assert_eq!(groups, 1);
    assert_eq!(sim.status().group_restarts, 1);
}

#[test]
fn a_fatal_component_under_a_group_strategy_is_not_restarted_by_the_group() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    sim.fatal("web");
    assert!(sim.sent().is_empty());
    assert_eq!(sim.status().group_restarts, 0);
}

#[test]
fn restart_and_stop_during_a_group_restart_take_the_component_out_of_the_group() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    sim.crash("db");
    // An operator stops web while the group is stopping: it must stay down after the group
    // comes back.
    sim.stop(&["web"]);
    sim.settle_stops();
    let sent = sim.sent();
    assert!(sent.contains(&"start db".to_string()), "{sent:?}");
    sim.ready_all(&["db", "cache"]);
    sim.ready("app");
    assert!(sim.sent().iter().all(|c| c != "start web"));
    assert!(!sim.status_of("web").wanted);

    // And a restart of a member leaves the group, which then starts without waiting for it.
    sim.crash("db");
    sim.clear();
    sim.restart("app");
    // app no longer holds its dependencies' stops up.
    assert_eq!(sim.sent(), ["restart app", "stop db", "stop cache"]);
    sim.settle_stops();
    assert_eq!(sim.sent(), ["start db", "start cache"]);
}

// ---------------------------------------------------------------------------------------------
// The supervisor's budget and escalation
// ---------------------------------------------------------------------------------------------

/// Fails db under one_for_all and lets the group restart complete.
fn group_failure(sim: &mut Sim) {
    sim.crash("db");
    sim.settle_stops();
    sim.ready_all(&["db", "cache"]);
    sim.ready("app");
    sim.ready("web");
}

#[test]
fn group_restarts_within_the_window_past_the_budget_escalate() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    for _ in 0..3 {
        group_failure(&mut sim);
        sim.advance(Duration::from_secs(10));
    }
    assert_eq!(sim.status().group_restarts, 3);
    assert!(sim.exit.is_none());
    sim.clear();
    sim.crash("db");
    let reason = match &sim.notes[..] {
        [Note::Escalation { reason }] => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        reason.starts_with("4 group restarts in 1m (max_restarts 3); last: `db` exited"),
        "{reason}"
    );
    assert_eq!(sim.status().escalation.as_deref(), Some(reason.as_str()));
    // Everything stops in reverse order, then the tree ends with the reason.
    assert_eq!(sim.sent(), ["stop web"]);
    assert!(sim.exit.is_none());
    sim.settle_stops();
    assert_eq!(sim.sent(), ["stop app", "stop db", "stop cache"]);
    assert_eq!(sim.exit, Some(Some(reason.clone())));
    assert!(sim.notes.contains(&Note::EscalationComplete { reason }));
    // Nothing starts again, whatever is asked.
    let r = sim.start(&[]);
    assert!(matches!(
        sim.answer(r),
        Some(Answer::Started(Err(TreeError::ShuttingDown)))
    ));
}

#[test]
fn group_restarts_spread_wider_than_the_window_never_escalate() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    for _ in 0..10 {
        group_failure(&mut sim);
        sim.advance(Duration::from_secs(21));
    }
    assert_eq!(sim.status().group_restarts, 10);
    assert!(sim.status().escalation.is_none());
    assert!(sim.exit.is_none());
}

#[test]
fn a_critical_component_going_fatal_escalates() {
    let mut components = layered();
    components[2].critical = true; // db
    let mut sim = Sim::new(tree(components, Strategy::OneForOne));
    sim.all_running();
    sim.crash("web");
    assert!(sim.exit.is_none() && sim.status().escalation.is_none());
    sim.fatal("db");
    let reason = "critical component `db` is FATAL: 6 failures in 1m".to_string();
    assert_eq!(
        sim.notes.last(),
        Some(&Note::Escalation {
            reason: reason.clone()
        })
    );
    sim.settle_stops();
    sim.settle_stops();
    sim.settle_stops();
    assert_eq!(sim.exit, Some(Some(reason)));
}

// ---------------------------------------------------------------------------------------------
// Restart, restart-all, shutdown, replaced actors
// ---------------------------------------------------------------------------------------------

#[test]
fn restart_of_one_component_leaves_the_others_alone() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let r = sim.restart("app");
    assert!(matches!(sim.answer(r), Some(Answer::Done(Ok(())))));
    assert_eq!(sim.sent(), ["restart app"]);
    assert!(sim.notes.contains(&Note::RestartRequested {
        component: "app".into()
    }));
    // A component that is down is started instead, once its dependencies run.
    sim.stop(&["web"]);
    sim.settle_stops();
    sim.clear();
    sim.restart("web");
    assert!(sim.sent().is_empty(), "app is STARTING");
    sim.ready("app");
    assert_eq!(sim.sent(), ["start web"]);
}

#[test]
fn restart_all_stops_in_reverse_then_starts_in_order() {
    // SupervisorHandle::restart_all is a stop of everything, then a start of everything.
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let stop = sim.stop(&[]);
    sim.settle_stops();
    assert!(sim.stopped_ok(stop));
    assert_eq!(
        sim.sent(),
        ["stop web", "stop app", "stop db", "stop cache"]
    );
    sim.start(&[]);
    assert_eq!(sim.sent(), ["start db", "start cache"]);
    sim.ready_all(&["db", "cache"]);
    sim.ready("app");
    sim.ready("web");
    assert_eq!(sim.sent(), ["start app", "start web"]);
}

#[test]
fn shutdown_stops_in_order_answers_then_ends_the_tree() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let r = sim.shutdown();
    assert_eq!(sim.notes, [Note::ShutdownRequested]);
    let r2 = sim.restart("db");
    assert!(matches!(
        sim.answer(r2),
        Some(Answer::Done(Err(TreeError::ShuttingDown)))
    ));
    sim.settle_stops();
    sim.settle_stops();
    sim.settle_stops();
    assert!(matches!(sim.answer(r), Some(Answer::ShutDown)));
    assert_eq!(sim.exit, Some(None), "an ordinary end has no escalation");
    assert!(sim.notes.contains(&Note::AllStopped));
}

#[test]
fn a_dead_actor_is_replaced_with_its_history_and_intent() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    sim.crash("app");
    sim.feed(Input::ActorDied {
        component: "app".into(),
        reason: "component actor failed: boom".into(),
    });
    let (name, inherited) = sim.replaced.pop().expect("a replacement");
    assert_eq!(name, "app");
    assert!(inherited.wanted);
    assert_eq!(inherited.budget.failures_total, 1);
    assert_eq!(inherited.last_exit.as_deref(), Some("exited with status 1"));
    assert_eq!(inherited.seq, sim.actors["app"].seq);

    // A component asked to stop is replaced, but not to run.
    sim.stop(&["web"]);
    sim.feed(Input::ActorDied {
        component: "web".into(),
        reason: "component actor stopped: no reason".into(),
    });
    let (_, inherited) = sim.replaced.pop().expect("a replacement");
    assert!(!inherited.wanted);
}

#[test]
fn stale_reports_and_answers_are_ignored() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForAll));
    sim.all_running();
    let current = sim.actors["db"].clone();
    let mut stale = current.clone();
    stale.seq -= 1;
    stale.state = State::Backoff;
    stale.budget.failures_total += 1;
    sim.feed(Input::Report {
        component: "db".into(),
        snapshot: stale.clone(),
    });
    sim.feed(Input::Answer {
        component: "db".into(),
        snapshot: stale,
    });
    assert_eq!(sim.status_of("db").state, State::Running);
    assert!(sim.notes.is_empty() && sim.sent().is_empty());
    // The actor's report of a change its answer already told is not acted on twice.
    sim.feed(Input::Report {
        component: "db".into(),
        snapshot: current,
    });
    assert!(sim.notes.is_empty() && sim.sent().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------------

#[test]
fn reload_plans_added_removed_changed_and_restarted_components() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.start(&["app"]);
    let mut components = layered();
    components.retain(|c| c.name != "cache");
    components[1].depends_on = names(&["db"]); // app no longer needs cache: changed
    components[0].policy.stop_timeout = Duration::from_secs(3); // web: changed, not wanted
    components.push(component("metrics", &[]));
    let new = tree(components, Strategy::OneForOne);
    let plan = sim.planner.plan(&new).expect("a valid plan");
    assert_eq!(
        plan,
        Reload {
            added: names(&["metrics"]),
            removed: names(&["cache"]),
            changed: names(&["app", "web"]),
            restarted: names(&["app"]),
            handed_over: vec![],
            tree_changed: false,
        }
    );
    assert!(!plan.is_empty());
}

#[test]
fn reload_with_only_a_new_shared_address_block_changes_nothing() {
    let sim = Sim::new(tree(layered(), Strategy::OneForOne));
    let mut components = layered();
    let block: Arc<[(String, String)]> = Arc::from(vec![(
        "IMAGESERVING_ADDR_DB".to_string(),
        "127.0.0.1:1".to_string(),
    )]);
    for c in &mut components {
        c.shared_env = Arc::clone(&block);
    }
    let plan = sim
        .planner
        .plan(&tree(components, Strategy::OneForOne))
        .expect("a valid plan");
    assert!(plan.is_empty(), "{plan:?}");
}

#[test]
fn reload_of_the_tree_settings_and_of_the_tree_id() {
    let sim = Sim::new(tree(layered(), Strategy::OneForOne));
    let plan = sim
        .planner
        .plan(&tree(layered(), Strategy::RestForOne))
        .expect("a valid plan");
    assert!(plan.tree_changed && !plan.is_empty());
    let mut other = tree(layered(), Strategy::OneForOne);
    other.tree_id = "another".into();
    assert!(matches!(
        sim.planner.plan(&other),
        Err(TreeError::Reload(_))
    ));
    let mut cyclic = layered();
    cyclic[2].depends_on = names(&["web"]);
    assert!(matches!(
        sim.planner.plan(&tree(cyclic, Strategy::OneForOne)),
        Err(TreeError::Spec(_))
    ));
}

#[test]
fn reconfigure_waits_for_what_goes_then_takes_the_new_tree() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    let mut components = layered();
    components.retain(|c| c.name != "cache");
    components[1].depends_on = names(&["db"]);
    components.push(component("metrics", &["db"]));
    let new = tree(components, Strategy::RestForOne);

    let refused = sim.planner.reconfigure(&new, sim.now);
    match refused {
        Err(TreeError::Reload(why)) => assert_eq!(why, "stop cache, app before the change"),
        other => panic!("{other:?}"),
    }
    // What the handle does: stop the removed and changed components first.
    sim.stop(&["cache", "app"]);
    sim.settle_stops();
    let done = sim.planner.reconfigure(&new, sim.now).expect("taken");
    assert_eq!(done.dropped, names(&["cache", "app"]));
    assert_eq!(done.fresh, names(&["app", "metrics"]));
    let order: Vec<&str> = sim.planner.specs().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["db", "app", "metrics", "web"]);
    assert_eq!(sim.status().strategy, Strategy::RestForOne);
    // The kept components keep their state; the fresh ones start from scratch.
    assert_eq!(sim.status_of("db").state, State::Running);
    assert_eq!(sim.status_of("web").state, State::Running);
    let app = sim.status_of("app");
    assert!(!app.wanted && app.state == State::Stopped && app.generation == 0);
    assert_eq!(app.depends_on, names(&["db"]));
}

#[test]
fn reconfigure_is_refused_while_a_stop_is_in_progress_or_after_shutdown() {
    let mut sim = Sim::new(tree(layered(), Strategy::OneForOne));
    sim.all_running();
    sim.stop(&["web"]);
    let mut components = layered();
    components.push(component("metrics", &[]));
    let new = tree(components, Strategy::OneForOne);
    assert!(matches!(
        sim.planner.reconfigure(&new, sim.now),
        Err(TreeError::Reload(why)) if why.contains("a stop is in progress")
    ));
    sim.settle_stops();
    sim.planner
        .reconfigure(&new, sim.now)
        .expect("taken once the stop is done");
    sim.shutdown();
    assert!(matches!(
        sim.planner.reconfigure(&new, sim.now),
        Err(TreeError::ShuttingDown)
    ));
}

/// A component whose restarts are handovers: a held socket on `port`, `ready = notify`.
fn handing_over(name: &str, port: u16) -> ComponentSpec {
    ComponentSpec::builder(name, "sleep")
        .arg("1000")
        .socket(SocketAddr::from(([127, 0, 0, 1], port)), 64)
        .probe(SocketAddr::from(([127, 0, 0, 1], port)))
        .ready(Ready::Notify)
        .build()
        .expect("a valid component")
}

#[test]
fn a_running_component_that_hands_over_takes_a_changed_spec_without_being_stopped() {
    let spec = |components| {
        let mut t = tree(components, Strategy::OneForOne);
        t.notify_socket = Some("/nonexistent/notify.sock".into());
        t
    };
    let mut sim = Sim::new(spec(vec![
        handing_over("web", 18080),
        handing_over("api", 18081),
        component("db", &[]),
    ]));
    sim.all_running();
    let mut web = handing_over("web", 18080);
    web.env.push(("WORKERS".into(), "8".into()));
    // A new address cannot be handed over: the old process holds the old one.
    let api = handing_over("api", 18082);
    let mut db = component("db", &[]);
    db.env.push(("X".into(), "1".into()));
    let new = spec(vec![web, api, db]);
    let plan = sim.planner.plan(&new).expect("a valid plan");
    assert_eq!(plan.changed, names(&["web", "api", "db"]));
    assert_eq!(plan.restarted, names(&["web", "api", "db"]));
    assert_eq!(plan.handed_over, names(&["web"]));

    // The handle stops what does not hand over, and only that.
    assert!(matches!(
        sim.planner.reconfigure(&new, sim.now),
        Err(TreeError::Reload(why)) if why == "stop api, db before the change"
    ));
    sim.stop(&["api", "db"]);
    sim.settle_stops();
    let done = sim.planner.reconfigure(&new, sim.now).expect("taken");
    assert_eq!(done.handed_over, names(&["web"]));
    assert_eq!(done.dropped, names(&["api", "db"]));
    assert_eq!(done.fresh, names(&["api", "db"]));
    // web keeps its state and actor, with the new spec.
    let web = sim.status_of("web");
    assert!(web.wanted && web.state == State::Running && web.generation > 0);
    let env = &sim.planner.spec("web").expect("web").env;
    assert!(env.contains(&("WORKERS".into(), "8".into())));

    // Not running: nothing to hand over.
    sim.stop(&["web"]);
    sim.settle_stops();
    let mut web = handing_over("web", 18080);
    web.env.push(("WORKERS".into(), "4".into()));
    let plan = sim
        .planner
        .plan(&spec(vec![
            web,
            handing_over("api", 18082),
            component("db", &[]),
        ]))
        .expect("a valid plan");
    assert!(plan.handed_over.is_empty(), "{plan:?}");
}
